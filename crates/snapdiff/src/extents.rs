//! Object ranges back to image extents: through the layout (a stripe unit at a time when the
//! image is striped), clipped to the image size, sorted and merged.

use rbdx_image::Layout;
use rbdx_objstore::ExtentSet;

use crate::objects::Change;

/// A changed extent of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Image offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// True: read it from the newer point; false: it reads as zeros there.
    pub data: bool,
}

impl Extent {
    /// Returns the offset just past the extent.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// Adds object range `[offset, offset + length)` of `objectno` to `set` in image offsets.
fn add_object_range(layout: &Layout, objectno: u64, offset: u64, length: u64, set: &mut ExtentSet) {
    let su = layout.stripe_unit();
    let mut at = offset;
    let end = offset + length;
    while at < end {
        let piece = (su - at % su).min(end - at);
        set.insert(layout.image_offset(objectno, at), piece);
        at += piece;
    }
}

/// Builds sorted, merged extents from data and zero sets (data wins where both claim a byte),
/// clipped to `size`.
fn build(mut data: ExtentSet, mut zero: ExtentSet, size: u64) -> Vec<Extent> {
    data.truncate(size);
    zero.truncate(size);
    for e in data.extents() {
        zero.subtract(e.offset, e.length);
    }
    let mut out: Vec<Extent> = data
        .extents()
        .into_iter()
        .map(|e| Extent {
            offset: e.offset,
            length: e.length,
            data: true,
        })
        .chain(zero.extents().into_iter().map(|e| Extent {
            offset: e.offset,
            length: e.length,
            data: false,
        }))
        .collect();
    out.sort_by_key(|e| e.offset);
    out
}

/// Turns per-object changes into image extents within `size`.
pub fn from_objects(layout: &Layout, changes: &[(u64, Change)], size: u64) -> Vec<Extent> {
    let mut data = ExtentSet::new();
    let mut zero = ExtentSet::new();
    let object_size = layout.object_size();
    for (objectno, change) in changes {
        match change {
            Change::Whole { exists_at_to: true } => {
                add_object_range(layout, *objectno, 0, object_size, &mut data)
            }
            Change::Whole {
                exists_at_to: false,
            } => add_object_range(layout, *objectno, 0, object_size, &mut zero),
            Change::Ranges(r) => {
                for e in r.data.extents() {
                    add_object_range(layout, *objectno, e.offset, e.length, &mut data);
                }
                for e in r.zero.extents() {
                    add_object_range(layout, *objectno, e.offset, e.length, &mut zero);
                }
            }
        }
    }
    build(data, zero, size)
}

/// Sorts and merges extents (data wins over zero).
pub fn merge(extents: Vec<Extent>) -> Vec<Extent> {
    let mut data = ExtentSet::new();
    let mut zero = ExtentSet::new();
    let mut end = 0;
    for e in extents {
        end = end.max(e.end());
        if e.data {
            data.insert(e.offset, e.length);
        } else {
            zero.insert(e.offset, e.length);
        }
    }
    build(data, zero, end)
}

/// Returns the parts of `extents` below `limit` that lie in objects the image does not hold
/// itself (`own[objectno]` false).
pub fn outside_objects(
    layout: &Layout,
    extents: Vec<Extent>,
    limit: u64,
    own: &[bool],
) -> Vec<Extent> {
    outside_objects_from(layout, extents, limit, own, 0)
}

/// Like [`outside_objects`], with `own[i]` telling about object `first + i` (objects outside
/// `own` count as not held).
pub fn outside_objects_from(
    layout: &Layout,
    extents: Vec<Extent>,
    limit: u64,
    own: &[bool],
    first: u64,
) -> Vec<Extent> {
    let mut out = Vec::new();
    for e in extents {
        if e.offset >= limit {
            continue;
        }
        let length = e.length.min(limit - e.offset);
        for piece in layout.map(e.offset, length) {
            let held = piece
                .objectno
                .checked_sub(first)
                .and_then(|i| own.get(i as usize))
                .copied()
                .unwrap_or(false);
            if held {
                continue;
            }
            out.push(Extent {
                offset: e.offset + piece.buffer_offset,
                length: piece.length,
                data: e.data,
            });
        }
    }
    merge(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::within::Ranges;

    #[test]
    fn object_ranges_map_back_through_striping_and_merge() {
        // 64 KiB objects, 16 KiB stripe units over 2 objects.
        let layout = Layout::new(16, 16 << 10, 2).unwrap();
        let mut r = Ranges {
            exists_at_to: true,
            ..Ranges::default()
        };
        r.data.insert(0, 32 << 10);
        let out = from_objects(&layout, &[(0, Change::Ranges(r))], 1 << 20);
        assert_eq!(
            out,
            vec![
                Extent {
                    offset: 0,
                    length: 16 << 10,
                    data: true
                },
                Extent {
                    offset: 32 << 10,
                    length: 16 << 10,
                    data: true
                },
            ]
        );
    }

    #[test]
    fn data_wins_over_zero_and_results_are_clipped_to_the_size() {
        let merged = merge(vec![
            Extent {
                offset: 0,
                length: 100,
                data: false,
            },
            Extent {
                offset: 50,
                length: 100,
                data: true,
            },
        ]);
        assert_eq!(
            merged,
            vec![
                Extent {
                    offset: 0,
                    length: 50,
                    data: false
                },
                Extent {
                    offset: 50,
                    length: 100,
                    data: true
                },
            ]
        );
        let layout = Layout::simple(16).unwrap();
        let out = from_objects(
            &layout,
            &[(1, Change::Whole { exists_at_to: true })],
            100_000,
        );
        assert_eq!(
            out,
            vec![Extent {
                offset: 65536,
                length: 100_000 - 65536,
                data: true
            }]
        );
    }

    #[test]
    fn parent_extents_are_kept_only_where_the_child_has_no_object() {
        let layout = Layout::simple(16).unwrap();
        let parent = vec![Extent {
            offset: 0,
            length: 3 * 65536,
            data: true,
        }];
        let out = outside_objects(&layout, parent, 2 * 65536 + 10, &[false, true, false]);
        assert_eq!(
            out,
            vec![
                Extent {
                    offset: 0,
                    length: 65536,
                    data: true
                },
                Extent {
                    offset: 2 * 65536,
                    length: 10,
                    data: true
                },
            ]
        );
    }
}
