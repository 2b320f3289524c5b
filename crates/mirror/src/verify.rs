//! `mirror image verify`: checks that the two copies of a mirrored image hold the same bytes,
//! at the last mirror snapshot both have (or a named snapshot, or the heads), by comparing
//! per-chunk digests that each site's store computes where the data lies; only digests cross
//! between the sites. `--repair` re-copies the differing chunks into the non-primary copy.

use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use rbdx_image::names::{data_object, data_prefix};
use rbdx_image::{Error, ErrorKind, Header, OpenOptions, Result};
use rbdx_objstore::digest::{chunk_digests, zero_digests};
use rbdx_objstore::{ReadOp, SnapContext, SnapId, WriteOp};
use serde::Serialize;

use crate::daemon::site::Side;

/// Bytes per digest: the granularity of what verify reports and repair copies.
pub const CHUNK: u64 = rbdx_objstore::digest::DEFAULT_CHUNK;

/// Objects compared at once.
const CONCURRENCY: usize = 32;

/// A range of one object whose bytes differ between the copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The object's number.
    pub object_no: u64,
    /// The first differing byte, in the object.
    pub offset: u64,
    /// Bytes from there (whole chunks, cut at the object's end).
    pub length: u64,
}

/// What a verify found.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// The image's name.
    pub image: String,
    /// The snapshot compared (its name at the primary), or `None` for the heads.
    pub snapshot: Option<String>,
    /// Objects compared.
    pub objects_checked: u64,
    /// Ranges that differ.
    pub mismatches: Vec<Mismatch>,
    /// Ranges re-copied into the non-primary copy by a repair.
    pub repaired: u64,
    /// Bytes of digests and data read from the peer.
    pub bytes_from_peer: u64,
}

/// One copy at the point compared.
#[derive(Debug)]
struct Point<'a> {
    side: &'a Side,
    name: String,
    id: String,
    header: Header,
    /// The snapshot read, or `None` for the head.
    snap: Option<u64>,
}

impl Point<'_> {
    fn size(&self) -> u64 {
        match self.snap {
            Some(s) => self.header.snapshots.get(&s).map_or(0, |s| s.size),
            None => self.header.size,
        }
    }

    fn parent_overlap(&self) -> u64 {
        let parent = match self.snap {
            Some(s) => self
                .header
                .snapshots
                .get(&s)
                .and_then(|s| s.parent.as_ref()),
            None => self.header.parent.as_ref(),
        };
        parent.map_or(0, |p| p.overlap)
    }

    fn oid(&self, object_no: u64) -> String {
        data_object(&data_prefix(&self.id), object_no)
    }

    /// Bytes of object `object_no` inside the image at this point.
    fn object_len(&self, object_no: u64) -> u64 {
        self.header.layout.object_len_within(object_no, self.size())
    }

    /// True if the object's bytes come from the parent where the object is absent.
    fn parent_covers(&self, object_no: u64) -> bool {
        let first = self.header.layout.image_offset(object_no, 0);
        first < self.parent_overlap()
    }

    /// The digests of object `object_no`, counting the bytes read.
    async fn digests(&self, object_no: u64, wire: &AtomicU64) -> Result<Vec<u64>> {
        let len = self.object_len(object_no);
        let op = ReadOp::new().checksum(0, len, CHUNK);
        match self
            .side
            .store()
            .read_op(
                &self.side.io,
                &self.oid(object_no),
                &op,
                self.snap.map(SnapId),
            )
            .await
        {
            Ok(mut r) => {
                let d = r.take_checksums(0).unwrap_or_default();
                wire.fetch_add(8 * d.len() as u64 + 16, Ordering::Relaxed);
                Ok(d)
            }
            Err(e) if e.kind() == rbdx_objstore::ErrorKind::NotFound => {
                if self.parent_covers(object_no) {
                    let data = self.read_through(object_no, 0, len).await?;
                    wire.fetch_add(len, Ordering::Relaxed);
                    Ok(chunk_digests(&data, len, CHUNK))
                } else {
                    Ok(zero_digests(len, CHUNK))
                }
            }
            Err(e) => Err(Error::store(self.oid(object_no), e)),
        }
    }

    /// Reads bytes of an object as the image shows them (through its parent).
    async fn read_through(&self, object_no: u64, offset: u64, length: u64) -> Result<Vec<u8>> {
        let image = self
            .side
            .images()
            .open(&self.name, OpenOptions::default().with_snap_id(self.snap))
            .await?;
        let mut out = vec![0u8; length as usize];
        let read = async {
            for (obj_off, image_off, piece) in self
                .header
                .layout
                .object_pieces_below(object_no, self.size())
            {
                let (lo, hi) = (obj_off.max(offset), (obj_off + piece).min(offset + length));
                if lo >= hi {
                    continue;
                }
                let data = image.read(image_off + (lo - obj_off), hi - lo).await?;
                out[(lo - offset) as usize..(hi - offset) as usize].copy_from_slice(&data);
            }
            Ok::<_, Error>(())
        }
        .await;
        let closed = image.close().await;
        read?;
        closed?;
        Ok(out)
    }

    /// Reads bytes of an object at this point (zeros where it holds none).
    async fn read(&self, object_no: u64, offset: u64, length: u64) -> Result<Vec<u8>> {
        let op = ReadOp::new().read(offset, Some(length));
        match self
            .side
            .store()
            .read_op(
                &self.side.io,
                &self.oid(object_no),
                &op,
                self.snap.map(SnapId),
            )
            .await
        {
            Ok(mut r) => {
                let mut data = r.take_data(0).unwrap_or_default().to_vec();
                data.resize(length as usize, 0);
                Ok(data)
            }
            Err(e) if e.kind() == rbdx_objstore::ErrorKind::NotFound => {
                if self.parent_covers(object_no) {
                    self.read_through(object_no, offset, length).await
                } else {
                    Ok(vec![0; length as usize])
                }
            }
            Err(e) => Err(Error::store(self.oid(object_no), e)),
        }
    }
}

/// Finds image `name` here and its copy at the peer.
async fn copies<'a>(local: &'a Side, remote: &'a Side, name: &str) -> Result<[Point<'a>; 2]> {
    let id = local.images().lookup(name).await?;
    let header = local.images().header_by_id(&id, name).await?;
    let global_id = header
        .mirror
        .as_ref()
        .map(|m| m.global_id.clone())
        .ok_or_else(|| Error::invalid(format!("image {name} is not mirrored")))?;
    let config = remote.mirror().load().await?;
    let (rid, rname, rheader) = match config.image_by_global(&global_id) {
        Some(rid) => match remote.image(&rid).await? {
            Some((n, h)) => (rid, n, h),
            None => return Err(not_at_peer(name)),
        },
        None => return Err(not_at_peer(name)),
    };
    if rheader.layout != header.layout {
        return Err(Error::invalid(format!(
            "the copies of image {name} have different layouts; compare their exports"
        )));
    }
    let point = |side, name, id, header| Point {
        side,
        name,
        id,
        header,
        snap: None,
    };
    Ok([
        point(local, name.to_owned(), id, header),
        point(remote, rname, rid, rheader),
    ])
}

fn not_at_peer(name: &str) -> Error {
    Error::not_found(format!("image {name} has no copy at the peer (yet)"))
}

/// Picks the snapshot to compare at both copies: `snap` by name, the newest complete copy of
/// a primary mirror snapshot, or the heads (journal mode); returns its name at the primary.
fn choose(points: &mut [Point<'_>; 2], snap: Option<&str>) -> Result<Option<String>> {
    if let Some(name) = snap {
        for p in points.iter_mut() {
            let s = p
                .header
                .snapshot_by_name(name)
                .ok_or_else(|| Error::not_found(format!("snapshot {name} is not at both sites")))?;
            p.snap = Some(s.id);
        }
        return Ok(Some(name.to_owned()));
    }
    let primary = points
        .iter()
        .position(|p| p.header.mirror.as_ref().is_some_and(|m| m.primary));
    let mode = points[0].header.mirror.as_ref().map(|m| m.mode);
    if mode == Some(rbdx_image::mirroring::MirrorMode::Journal) {
        return Ok(None);
    }
    // The copy of the other's snapshot: at the non-primary (or either, when neither is).
    let order: Vec<usize> = match primary {
        Some(p) => vec![1 - p],
        None => vec![0, 1],
    };
    for copy in order {
        let found =
            points[copy]
                .header
                .snapshots
                .values()
                .rev()
                .find_map(|s| match s.namespace.mirror() {
                    Some(m) if !m.state.is_primary() && m.complete => {
                        m.primary_snap_id.map(|p| (s.id, p))
                    }
                    _ => None,
                });
        if let Some((copy_snap, primary_snap)) = found {
            let other = 1 - copy;
            let shown = points[other]
                .header
                .snapshots
                .get(&primary_snap)
                .map(|s| s.name.clone())
                .ok_or_else(|| {
                    Error::not_found(
                        "the primary no longer has the mirror snapshot the copy was made from",
                    )
                })?;
            points[copy].snap = Some(copy_snap);
            points[other].snap = Some(primary_snap);
            return Ok(Some(shown));
        }
    }
    Err(Error::busy(
        "no mirror snapshot is complete at both sites yet; wait for the first copy",
    ))
}

/// Compares image `name` here with its copy at the peer; with `repair`, re-copies the
/// differing ranges into the copy here, which must be the non-primary one.
pub async fn verify_image(
    local: &Side,
    remote: &Side,
    name: &str,
    snap: Option<&str>,
    repair: bool,
) -> Result<Verified> {
    let mut points = copies(local, remote, name).await?;
    let snapshot = choose(&mut points, snap)?;
    if repair && points[0].header.mirror.as_ref().is_none_or(|m| m.primary) {
        return Err(Error::invalid(format!(
            "image {name} is primary here; run the repair at the site of the non-primary copy"
        )));
    }
    let [here, there] = &points;
    let wire = AtomicU64::new(0);
    let count = here
        .header
        .layout
        .num_objects(here.size().max(there.size()));
    let mut mismatches: Vec<Mismatch> = futures::stream::iter(0..count)
        .map(|n| compare(here, there, n, &wire))
        .buffered(CONCURRENCY)
        .try_concat()
        .await?;
    let mut repaired = 0;
    if repair && !mismatches.is_empty() {
        for m in &mismatches {
            repair_range(here, there, m, &wire).await?;
            repaired += 1;
        }
        let objects: std::collections::BTreeSet<u64> =
            mismatches.iter().map(|m| m.object_no).collect();
        let mut left = Vec::new();
        for n in objects {
            left.extend(compare(here, there, n, &wire).await?);
        }
        if !left.is_empty() {
            return Err(Error::new(
                ErrorKind::Mismatch,
                format!(
                    "{} range(s) of image {name} still differ after the repair",
                    left.len()
                ),
            ));
        }
        mismatches.clear();
    }
    Ok(Verified {
        image: name.to_owned(),
        snapshot,
        objects_checked: count,
        mismatches,
        repaired,
        bytes_from_peer: wire.load(Ordering::Relaxed),
    })
}

/// Compares object `n` of both copies; returns the differing ranges (adjacent chunks merged).
async fn compare(
    here: &Point<'_>,
    there: &Point<'_>,
    n: u64,
    wire: &AtomicU64,
) -> Result<Vec<Mismatch>> {
    let local_bytes = AtomicU64::new(0);
    let (a, b) = futures::try_join!(here.digests(n, &local_bytes), there.digests(n, wire))?;
    let len = here.object_len(n).max(there.object_len(n));
    let mut out: Vec<Mismatch> = Vec::new();
    for i in 0..len.div_ceil(CHUNK) {
        if a.get(i as usize) == b.get(i as usize) {
            continue;
        }
        let offset = i * CHUNK;
        let length = CHUNK.min(len - offset);
        match out.last_mut() {
            Some(last) if last.offset + last.length == offset => last.length += length,
            _ => out.push(Mismatch {
                object_no: n,
                offset,
                length,
            }),
        }
    }
    Ok(out)
}

/// Re-copies one range from the primary into the copy here, without a copy-on-write: the
/// object must not have changed since the snapshot compared, so that the snapshot and the
/// head share the bytes written.
async fn repair_range(
    here: &Point<'_>,
    there: &Point<'_>,
    m: &Mismatch,
    wire: &AtomicU64,
) -> Result<()> {
    let oid = here.oid(m.object_no);
    let store = here.side.store();
    if let Some(snap) = here.snap {
        let changed = match store.list_snaps(&here.side.io, &oid).await {
            Ok(snaps) => snaps
                .clones
                .iter()
                .any(|c| c.snaps.iter().any(|s| s.0 >= snap)),
            Err(e) if e.kind() == rbdx_objstore::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::store(&oid, e)),
        };
        if changed {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "object {} changed here after the snapshot compared; repair cannot reach \
                     the snapshot's bytes (use `mirror image resync`)",
                    m.object_no
                ),
            ));
        }
    }
    let data = there.read(m.object_no, m.offset, m.length).await?;
    wire.fetch_add(m.length, Ordering::Relaxed);
    let snapc = match here.snap {
        Some(_) => SnapContext::empty(),
        None => SnapContext::from_snaps(here.header.snapshots.keys().map(|id| SnapId(*id))),
    };
    store
        .operate(
            &here.side.io,
            &oid,
            &WriteOp::new().write(m.offset, bytes::Bytes::from(data)),
            &snapc,
        )
        .await
        .map_err(|e| Error::store(&oid, e))?;
    Ok(())
}

/// Returns the exit status of a verify: 0 when the copies are equal, 1 when they differ.
pub fn exit_status(results: &[Verified]) -> i32 {
    i32::from(results.iter().any(|v| !v.mismatches.is_empty()))
}

/// Returns the error kind for an image that cannot be verified in a pool-wide verify (it is
/// reported and the others go on).
pub fn skippable(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Busy)
}
