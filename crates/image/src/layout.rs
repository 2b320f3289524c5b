//! Where image bytes live: object size and striping, mapped exactly as RBD maps them.
//!
//! Bytes are cut into stripe units of `stripe_unit` bytes, dealt round-robin to `stripe_count`
//! objects (an object set); when every object of the set holds `object_size` bytes, the next
//! set begins. With the defaults (`stripe_unit == object_size`, `stripe_count == 1`) byte `b`
//! simply lives in object `b / object_size` at offset `b % object_size`.

use crate::error::{Error, Result};

/// The smallest object order (4 KiB objects).
pub const MIN_ORDER: u8 = 12;
/// The largest object order (32 MiB objects).
pub const MAX_ORDER: u8 = 25;
/// The default object order (4 MiB objects).
pub const DEFAULT_ORDER: u8 = 22;

/// The object size and striping of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    order: u8,
    stripe_unit: u64,
    stripe_count: u64,
}

/// A piece of an image extent that lies in one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectExtent {
    /// The object number.
    pub objectno: u64,
    /// The first byte within the object.
    pub offset: u64,
    /// The number of bytes.
    pub length: u64,
    /// Where these bytes start within the image extent that was mapped.
    pub buffer_offset: u64,
}

impl Layout {
    /// Returns a layout, checking it as RBD does: order 12..=25, the stripe unit divides the
    /// object size, the stripe count is at least 1.
    pub fn new(order: u8, stripe_unit: u64, stripe_count: u64) -> Result<Layout> {
        if !(MIN_ORDER..=MAX_ORDER).contains(&order) {
            return Err(Error::invalid(format!(
                "object size must be between 4 KiB and 32 MiB (order {MIN_ORDER} to {MAX_ORDER}), \
                 not order {order}"
            )));
        }
        let object_size = 1u64 << order;
        if stripe_unit == 0 || !object_size.is_multiple_of(stripe_unit) {
            return Err(Error::invalid(format!(
                "stripe unit {stripe_unit} must divide the object size {object_size}"
            )));
        }
        if stripe_count == 0 {
            return Err(Error::invalid("stripe count must be at least 1"));
        }
        Ok(Layout {
            order,
            stripe_unit,
            stripe_count,
        })
    }

    /// Returns the default layout for `order`: no fancy striping.
    pub fn simple(order: u8) -> Result<Layout> {
        Layout::new(order, 1u64 << order.min(63), 1)
    }

    /// Returns the object order (log2 of the object size).
    pub fn order(&self) -> u8 {
        self.order
    }

    /// Returns the object size in bytes.
    pub fn object_size(&self) -> u64 {
        1u64 << self.order
    }

    /// Returns the stripe unit in bytes.
    pub fn stripe_unit(&self) -> u64 {
        self.stripe_unit
    }

    /// Returns the stripe count.
    pub fn stripe_count(&self) -> u64 {
        self.stripe_count
    }

    /// Returns true unless this is the default striping (one object at a time).
    pub fn is_fancy(&self) -> bool {
        self.stripe_count != 1 || self.stripe_unit != self.object_size()
    }

    /// Returns the number of objects an image of `size` bytes spans.
    pub fn num_objects(&self, size: u64) -> u64 {
        let period = self.object_size() * self.stripe_count;
        let full = size / period;
        let rest = size % period;
        let partial = if rest == 0 {
            0
        } else {
            // The last object set is partly used: every object that got at least one
            // stripe unit of it exists, up to the stripe count.
            rest.div_ceil(self.stripe_unit).min(self.stripe_count)
        };
        full * self.stripe_count + partial
    }

    /// Maps the image extent `[offset, offset + length)` to object extents, in image order,
    /// merging consecutive pieces that continue each other in the same object.
    pub fn map(&self, offset: u64, length: u64) -> Vec<ObjectExtent> {
        let mut out: Vec<ObjectExtent> = Vec::new();
        let su = self.stripe_unit;
        let sc = self.stripe_count;
        let stripes_per_object = self.object_size() / su;
        let mut pos = offset;
        let end = offset.saturating_add(length);
        while pos < end {
            let blockno = pos / su;
            let stripeno = blockno / sc;
            let stripepos = blockno % sc;
            let objectsetno = stripeno / stripes_per_object;
            let objectno = objectsetno * sc + stripepos;
            let block_start = (stripeno % stripes_per_object) * su;
            let block_off = pos % su;
            let len = (su - block_off).min(end - pos);
            let piece = ObjectExtent {
                objectno,
                offset: block_start + block_off,
                length: len,
                buffer_offset: pos - offset,
            };
            match out.last_mut() {
                Some(last)
                    if last.objectno == objectno
                        && last.offset + last.length == piece.offset
                        && last.buffer_offset + last.length == piece.buffer_offset =>
                {
                    last.length += len;
                }
                _ => out.push(piece),
            }
            pos += len;
        }
        out
    }

    /// Maps an object byte back to its image offset.
    pub fn image_offset(&self, objectno: u64, object_offset: u64) -> u64 {
        let su = self.stripe_unit;
        let sc = self.stripe_count;
        let stripes_per_object = self.object_size() / su;
        let objectsetno = objectno / sc;
        let stripepos = objectno % sc;
        let stripe_in_object = object_offset / su;
        let stripeno = objectsetno * stripes_per_object + stripe_in_object;
        let blockno = stripeno * sc + stripepos;
        blockno * su + object_offset % su
    }

    /// Returns the stripe units of object `objectno` that start below image offset `limit`,
    /// cut at it: (object offset, image offset, length).
    pub fn object_pieces_below(&self, objectno: u64, limit: u64) -> Vec<(u64, u64, u64)> {
        (0..self.object_size())
            .step_by(self.stripe_unit as usize)
            .filter_map(|o| {
                let image_off = self.image_offset(objectno, o);
                (image_off < limit).then(|| (o, image_off, self.stripe_unit.min(limit - image_off)))
            })
            .collect()
    }

    /// Returns how many leading bytes of object `objectno` lie below image offset `size`
    /// (the object's length in an image of that size).
    pub fn object_len_within(&self, objectno: u64, size: u64) -> u64 {
        let su = self.stripe_unit;
        let mut len = 0;
        let mut off = 0;
        // Stripe units of an object are laid out in image order, so the first one at or
        // past `size` ends the object's used part.
        while off < self.object_size() {
            let start = self.image_offset(objectno, off);
            if start >= size {
                break;
            }
            len = off + (size - start).min(su);
            off += su;
        }
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_layout_maps_by_object_size() {
        let l = Layout::simple(22).unwrap();
        let ext = l.map((4 << 20) - 10, 20);
        assert_eq!(ext.len(), 2);
        assert_eq!(
            (ext[0].objectno, ext[0].offset, ext[0].length),
            (0, (4 << 20) - 10, 10)
        );
        assert_eq!(
            (ext[1].objectno, ext[1].offset, ext[1].buffer_offset),
            (1, 0, 10)
        );
        assert_eq!(l.num_objects(10 << 20), 3);
    }

    #[test]
    fn fancy_striping_deals_units_round_robin() {
        // 4 KiB objects, 1 KiB stripe unit, 3 objects per set.
        let l = Layout::new(12, 1024, 3).unwrap();
        let ext = l.map(0, 5 * 1024);
        let got: Vec<(u64, u64)> = ext.iter().map(|e| (e.objectno, e.offset)).collect();
        assert_eq!(got, vec![(0, 0), (1, 0), (2, 0), (0, 1024), (1, 1024)]);
        // The second object set starts after 3 objects x 4 KiB.
        let ext = l.map(12 * 1024, 1);
        assert_eq!((ext[0].objectno, ext[0].offset), (3, 0));
        assert_eq!(l.num_objects(12 * 1024 + 1), 4);
        assert_eq!(l.num_objects(1024 + 1), 2);
    }

    #[test]
    fn image_offset_inverts_map() {
        let l = Layout::new(13, 2048, 4).unwrap();
        for off in (0..200_000u64).step_by(777) {
            let e = l.map(off, 1)[0];
            assert_eq!(l.image_offset(e.objectno, e.offset), off);
        }
    }

    #[test]
    fn object_len_within_counts_used_bytes() {
        let l = Layout::new(12, 1024, 2).unwrap();
        // Image of 3 KiB: object 0 holds units 0 and 2, object 1 holds unit 1.
        assert_eq!(l.object_len_within(0, 3 * 1024), 2048);
        assert_eq!(l.object_len_within(1, 3 * 1024), 1024);
        assert_eq!(l.object_len_within(1, 2 * 1024 + 5), 1024);
        assert_eq!(l.object_len_within(2, 3 * 1024), 0);
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert!(Layout::new(11, 2048, 1).is_err());
        assert!(Layout::new(26, 1 << 26, 1).is_err());
        assert!(Layout::new(22, 3000, 1).is_err());
        assert!(Layout::new(22, 4096, 0).is_err());
    }
}
