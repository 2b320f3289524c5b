//! Applying journaled events to an image through its own operations (so they are journaled
//! again when that image journals): what `journal import` does, and what mirroring does on
//! the other site. What an event changes is the image layer's one mapping
//! ([`Image::apply_event`]), which crash replay uses too.
//!
//! Data events are applied in order as they come. A maintenance operation is held until its
//! op-finish event arrives, in the same batch or a later one, and applied then if the result
//! is 0 (it happened); one that failed is dropped. Operations whose effect is already there
//! (a snapshot that exists) count as applied.

use std::collections::BTreeMap;

use rbdx_image::journaling::Event;
use rbdx_image::{Image, Result};

/// Applies a stream of journaled events to an image, one batch at a time, holding each
/// maintenance operation until its outcome arrives.
#[derive(Debug, Default)]
pub struct Applier {
    /// Operations waiting for their op-finish event, by entry id.
    held: BTreeMap<u64, Event>,
    applied: u64,
}

impl Applier {
    /// Returns an applier with nothing held.
    pub fn new() -> Applier {
        Applier::default()
    }

    /// Applies `events` (entry id, event), oldest first, to `image`; returns how many events
    /// changed it in this batch.
    pub async fn apply(&mut self, image: &Image, events: &[(u64, Event)]) -> Result<u64> {
        let before = self.applied;
        for (tid, event) in events {
            match event {
                Event::OpFinish { op_tid, result } => {
                    if let Some(op) = self.held.remove(op_tid)
                        && image.apply_event(&op, Some(*result)).await?
                    {
                        self.applied += 1;
                    }
                }
                e if e.is_data() || matches!(e, Event::DemotePromote) => {
                    if image.apply_event(e, None).await? {
                        self.applied += 1;
                    }
                }
                op => {
                    self.held.insert(*tid, op.clone());
                }
            }
        }
        Ok(self.applied - before)
    }

    /// Returns the entry ids of the operations still waiting for their outcome.
    pub fn held(&self) -> Vec<u64> {
        self.held.keys().copied().collect()
    }
}

/// Applies `events` (entry id, event), oldest first, to `image` as one batch; returns how
/// many it applied. Operations whose outcome is not among them are left out.
pub async fn apply_events(image: &Image, events: &[(u64, Event)]) -> Result<u64> {
    Applier::new().apply(image, events).await
}

/// Applies one event to `image`, an operation as if it succeeded.
pub async fn apply_event(image: &Image, event: &Event) -> Result<()> {
    image.apply_event(event, Some(0)).await.map(|_| ())
}
