//! Random write batches for the crash and contention cases.

use bytes::Bytes;

use super::rng::Rng;
use crate::op::WriteOp;

/// How many objects the crash case spreads its batches over.
pub const CRASH_OBJECTS: u64 = 6;

/// Returns the name of crash-case object `index`.
pub fn crash_object(index: u64) -> String {
    format!("crash.{index}")
}

/// Returns the `(object index, batch)` sequence of the crash case for `seed`.
#[derive(Debug)]
pub struct BatchGenerator {
    rng: Rng,
}

impl BatchGenerator {
    /// Starts the sequence for `seed`.
    pub fn new(seed: u64) -> Self {
        BatchGenerator {
            rng: Rng::new(seed),
        }
    }

    /// Returns the next batch and the index of the object it targets.
    pub fn next_batch(&mut self) -> (u64, WriteOp) {
        let rng = &mut self.rng;
        let object = rng.range(0, CRASH_OBJECTS);
        let mut op = WriteOp::new();
        if rng.chance(5) {
            op = op.assert_version(u64::MAX);
        }
        if rng.chance(5) {
            op = op.assert_exists();
        }
        for _ in 0..rng.range(1, 5) {
            op = match rng.range(0, 100) {
                0..=29 => {
                    let offset = rng.range(0, 96 << 10);
                    let len = rng.range(1, 16 << 10) as usize;
                    op.write(offset, Bytes::from(rng.bytes(len)))
                }
                30..=37 => {
                    let offset = rng.range(0, 4) * (256 << 10);
                    op.write(offset, Bytes::from(rng.bytes(256 << 10)))
                }
                38..=45 => {
                    let len = rng.range(0, 48 << 10) as usize;
                    op.write_full(Bytes::from(rng.bytes(len)))
                }
                46..=53 => op.zero(rng.range(0, 96 << 10), rng.range(1, 32 << 10)),
                54..=59 => op.truncate(rng.range(0, 128 << 10)),
                60..=71 => {
                    let n = rng.range(1, 4);
                    let pairs: Vec<(String, Bytes)> = (0..n)
                        .map(|_| {
                            let key = format!("key{}", rng.range(0, 12));
                            let len = rng.range(0, 64) as usize;
                            (key, Bytes::from(rng.bytes(len)))
                        })
                        .collect();
                    op.omap_set(pairs)
                }
                72..=77 => op.omap_remove([format!("key{}", rng.range(0, 12))]),
                78..=85 => {
                    let name = format!("attr{}", rng.range(0, 4));
                    let len = rng.range(0, 32) as usize;
                    op.xattr_set(name, Bytes::from(rng.bytes(len)))
                }
                86..=89 => op.create(rng.chance(50)),
                90..=92 => op.omap_clear(),
                _ => op.remove(),
            };
        }
        (object, op)
    }
}
