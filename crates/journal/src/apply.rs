//! Applying journaled events to an image through its own operations (so they are journaled
//! again when that image journals): what `journal import` does, and what mirroring does on
//! the other site.
//!
//! Data events are applied as they are. An operation is applied only if the journal holds its
//! successful outcome (an op-finish event with result 0): one that failed, or whose outcome
//! is unknown, is left out. Operations whose effect is already there (a snapshot that exists)
//! count as applied.

use std::collections::HashMap;

use rbdx_image::journaling::Event;
use rbdx_image::{ErrorKind, Features, Image, Result};

/// Applies `events` (entry id, event), oldest first, to `image`; returns how many it applied.
pub async fn apply_events(image: &Image, events: &[(u64, Event)]) -> Result<u64> {
    let outcomes: HashMap<u64, i32> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::OpFinish { op_tid, result } => Some((*op_tid, *result)),
            _ => None,
        })
        .collect();
    let mut applied = 0;
    for (tid, event) in events {
        if !event.is_data() && outcomes.get(tid) != Some(&0) {
            continue;
        }
        apply_event(image, event).await?;
        applied += 1;
    }
    Ok(applied)
}

/// Applies one event to `image`.
pub async fn apply_event(image: &Image, event: &Event) -> Result<()> {
    let result = match event {
        Event::Write { offset, data } => image.write(*offset, data.clone()).await,
        Event::Discard { offset, length } => image.discard(*offset, *length).await,
        Event::WriteZeroes { offset, length } => image.write_zeroes(*offset, *length).await,
        Event::WriteSame {
            offset,
            length,
            pattern,
        } => image.write_same(*offset, *length, pattern).await,
        Event::CompareAndWrite {
            offset,
            compare,
            data,
        } => {
            image
                .compare_and_write(*offset, compare.clone(), data.clone())
                .await
        }
        Event::Flush => image.flush().await,
        Event::SnapCreate { name } => image.snap_create(name).await.map(|_| ()),
        Event::SnapRemove { name } => image.snap_remove(name).await,
        Event::SnapRename { from, to } => image.snap_rename(from, to).await,
        Event::SnapProtect { name } => image.snap_set_protection(name, true).await,
        Event::SnapUnprotect { name } => image.snap_set_protection(name, false).await,
        Event::SnapRollback { name } => image.snap_rollback(name, &|_, _| {}).await,
        Event::SnapLimit { limit } => image.snap_set_limit(*limit).await,
        Event::Resize { size } => image.resize(*size, true).await,
        Event::Flatten => image.flatten(&|_, _| {}).await,
        Event::UpdateFeatures { features, enabled } => {
            image
                .update_features(Features(*features), *enabled, &|_, _| {})
                .await
        }
        Event::MetadataSet { key, value } => image.metadata_set(key, value.clone()).await,
        Event::MetadataRemove { key } => image.metadata_remove(key).await,
        Event::DemotePromote | Event::OpFinish { .. } => Ok(()),
    };
    match result {
        // Already so: a snapshot that exists, one already gone, a compare that no longer
        // matches because the data moved on.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::AlreadyExists | ErrorKind::NotFound | ErrorKind::Mismatch
            ) && !event.is_data()
                || e.kind() == ErrorKind::Mismatch =>
        {
            Ok(())
        }
        other => other,
    }
}
