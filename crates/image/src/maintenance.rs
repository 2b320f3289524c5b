//! Feature changes and object map repair.
//!
//! `object-map rebuild` asks the store whether each data object exists at the head and at
//! every snapshot and writes fresh maps ("exists" everywhere an object is; the fast-diff
//! "clean" distinction is not recoverable and is dropped, which only makes the next diff
//! larger). `object-map check` does the same survey and compares: a map is wrong only if it
//! calls an object nonexistent that exists, since the map promises nothing in the other
//! direction; a wrong map is flagged invalid so that nothing trusts it until a rebuild.

use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_objstore::{ErrorKind as StoreKind, ReadOp, SnapId};

use crate::error::{Error, Result};
use crate::features::Features;
use crate::header::{FLAG_FAST_DIFF_INVALID, FLAG_OBJECT_MAP_INVALID};
use crate::image::{Image, Inner, load_object_map};
use crate::io::CONCURRENCY;
use crate::journaling::Event;
use crate::objectmap::{ObjectMap, ObjectState};
use crate::snapshot::{Progress, StepCounter};

/// What `object-map check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapCheck {
    /// Objects a map calls nonexistent that exist: (snapshot id or `None` for the head,
    /// object number).
    pub missing: Vec<(Option<u64>, u64)>,
    /// Maps that could not be read or have the wrong length.
    pub unreadable: Vec<Option<u64>>,
}

impl MapCheck {
    /// Returns true if every map is usable.
    pub fn is_valid(&self) -> bool {
        self.missing.is_empty() && self.unreadable.is_empty()
    }
}

impl Inner {
    /// Asks the store which objects exist at `snap` (or the head), for `count` objects.
    async fn survey(
        &self,
        snap: Option<u64>,
        count: u64,
        progress: &(dyn Fn() + Sync),
    ) -> Result<ObjectMap> {
        let found: Vec<u64> = futures::stream::iter(0..count)
            .map(|objectno| async move {
                let oid = self.data_oid(objectno);
                let at = snap.map(SnapId);
                let result = self
                    .store
                    .read_op(&self.data_io, &oid, &ReadOp::new().stat(), at)
                    .await;
                progress();
                match result {
                    Ok(_) => Ok(Some(objectno)),
                    Err(e) if e.kind() == StoreKind::NotFound => Ok(None),
                    Err(e) => Err(Error::store(format!("cannot stat {oid}"), e)),
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await?;
        let mut map = ObjectMap::new(count);
        for objectno in found {
            map.set(objectno, ObjectState::Exists);
        }
        Ok(map)
    }

    /// The points to survey: every snapshot, then the head, with their object counts.
    fn points(&self) -> Vec<(Option<u64>, u64)> {
        let header = self.header();
        header
            .views()
            .into_iter()
            .map(|(snap, size)| (snap.map(|s| s.id), header.layout.num_objects(size)))
            .collect()
    }
}

impl Image {
    fn require_object_map(&self) -> Result<()> {
        if !self.inner.header().features.contains(Features::OBJECT_MAP) {
            return Err(Error::invalid(format!(
                "image {} does not have the object-map feature",
                self.inner.name
            )));
        }
        Ok(())
    }

    /// Rebuilds the object maps of the head and every snapshot and clears their invalid
    /// flags.
    pub async fn object_map_rebuild(&self, progress: Progress<'_>) -> Result<()> {
        let inner = &self.inner;
        inner.check_writable()?;
        let _gate = inner.quiesce().await;
        crate::lock::ensure_lock(inner).await?;
        inner.refresh().await?;
        self.require_object_map()?;
        let points = inner.points();
        let total: u64 = points.iter().map(|(_, n)| n).sum();
        let counter = StepCounter::new(total);
        let tick = || counter.step(progress);
        for (snap, count) in points {
            let map = inner.survey(snap, count, &tick).await?;
            inner.store_object_map(snap, &map).await?;
            if snap.is_none() {
                *inner.map.lock().await = Some(map);
            }
        }
        let invalid = FLAG_OBJECT_MAP_INVALID | FLAG_FAST_DIFF_INVALID;
        inner
            .update_header(|h| {
                h.flags &= !invalid;
                for s in h.snapshots.values_mut() {
                    s.flags &= !invalid;
                }
                Ok(())
            })
            .await?;
        progress(total, total);
        Ok(())
    }

    /// Compares the stored object maps with the store; flags wrong maps invalid.
    pub async fn object_map_check(&self, progress: Progress<'_>) -> Result<MapCheck> {
        let inner = &self.inner;
        inner.refresh().await?;
        self.require_object_map()?;
        let points = inner.points();
        let total: u64 = points.iter().map(|(_, n)| n).sum();
        let counter = StepCounter::new(total);
        let tick = || counter.step(progress);
        let mut check = MapCheck {
            missing: Vec::new(),
            unreadable: Vec::new(),
        };
        for (snap, count) in points {
            let actual = inner.survey(snap, count, &tick).await?;
            match load_object_map(&inner.store, &inner.io, &inner.id, snap).await? {
                Some(stored) if stored.len() == count => {
                    for i in 0..count {
                        if actual.get(i).may_exist() && !stored.get(i).may_exist() {
                            check.missing.push((snap, i));
                        }
                    }
                }
                _ => check.unreadable.push(snap),
            }
        }
        if !check.is_valid() {
            let bad: Vec<Option<u64>> = check
                .missing
                .iter()
                .map(|(s, _)| *s)
                .chain(check.unreadable.iter().copied())
                .collect();
            let flags = FLAG_OBJECT_MAP_INVALID | FLAG_FAST_DIFF_INVALID;
            inner
                .update_header(|h| {
                    for s in &bad {
                        match s {
                            None => h.flags |= flags,
                            Some(id) => {
                                if let Some(snap) = h.snapshots.get_mut(id) {
                                    snap.flags |= flags;
                                }
                            }
                        }
                    }
                    Ok(())
                })
                .await?;
        }
        progress(total, total);
        Ok(check)
    }

    /// Enables (`enable == true`) or disables features that may change after creation:
    /// exclusive-lock, object-map, fast-diff, journaling (and disabling deep-flatten).
    pub async fn update_features(
        &self,
        features: Features,
        enable: bool,
        progress: Progress<'_>,
    ) -> Result<()> {
        let layout = crate::journaling::JournalLayout::default();
        if features.contains(Features::JOURNALING) {
            if !enable
                && self
                    .inner
                    .header()
                    .mirror
                    .as_ref()
                    .is_some_and(|m| m.mode == crate::mirroring::MirrorMode::Journal)
            {
                return Err(Error::invalid(format!(
                    "image {} is mirrored in journal mode; disable its mirroring before \
                     journaling",
                    self.inner.name
                )));
            }
            // The journal itself is what changes: nothing to journal it in.
            return self
                .update_features_now(features, enable, &layout, progress)
                .await;
        }
        let event = Event::UpdateFeatures {
            features: features.0,
            enabled: enable,
        };
        let op = self.update_features_now(features, enable, &layout, progress);
        self.inner.log_op(event, op).await
    }

    /// Empties the journal as `rbd journal reset` does: journaling is turned off (under the
    /// exclusive lock, so what the journal holds past the image is applied first and a
    /// writer elsewhere hands the lock over) and on again, laid out as before. Every client
    /// but the image's is dropped. Refused for an image mirrored in journal mode.
    pub async fn reset_journal(&self) -> Result<()> {
        if !self.inner.header().features.contains(Features::JOURNALING) {
            return Err(Error::not_found(format!(
                "image {} has no journal (the journaling feature is off)",
                self.inner.name
            )));
        }
        let inner = &self.inner;
        let layout = inner
            .cluster
            .require_journals()?
            .layout(inner.store.clone(), inner.io.clone(), &inner.id)
            .await?;
        let quiet: Progress<'_> = &|_, _| {};
        self.update_features(Features::JOURNALING, false, quiet)
            .await?;
        self.update_features_now(Features::JOURNALING, true, &layout, quiet)
            .await
    }

    async fn update_features_now(
        &self,
        features: Features,
        enable: bool,
        layout: &crate::journaling::JournalLayout,
        progress: Progress<'_>,
    ) -> Result<()> {
        let inner = &self.inner;
        inner.check_writable()?;
        inner.refresh().await?;
        let current = inner.header().features;
        let mutable = if enable {
            Features::USER_MUTABLE
        } else {
            Features::USER_MUTABLE.with(Features::DEEP_FLATTEN)
        };
        let how = if enable {
            "enabled after the image is created"
        } else {
            "disabled after the image is created"
        };
        features.check_allowed(mutable, how)?;
        let target = if enable {
            if current.contains(features) {
                return Err(Error::invalid(
                    "one or more requested features are already enabled",
                ));
            }
            current.with(features)
        } else {
            if features.without(current) != Features(0) {
                return Err(Error::invalid(
                    "one or more requested features are already disabled",
                ));
            }
            current.without(features)
        };
        target.validate()?;
        let adds_map =
            target.contains(Features::OBJECT_MAP) && !current.contains(Features::OBJECT_MAP);
        let drops_map =
            current.contains(Features::OBJECT_MAP) && !target.contains(Features::OBJECT_MAP);
        let adds_journal =
            target.contains(Features::JOURNALING) && !current.contains(Features::JOURNALING);
        let drops_journal =
            current.contains(Features::JOURNALING) && !target.contains(Features::JOURNALING);
        {
            let _gate = inner.quiesce().await;
            if current.contains(Features::EXCLUSIVE_LOCK) {
                // Taking the lock replays a journal up to date before it can go.
                crate::lock::ensure_lock(inner).await?;
            }
            if adds_journal {
                inner
                    .cluster
                    .require_journals()?
                    .create(inner.store.clone(), inner.io.clone(), &inner.id, layout)
                    .await?;
            }
            let updated = inner
                .update_header(|h| {
                    h.features = target;
                    if adds_map {
                        // Nothing trusts the new map until it is built.
                        h.flags |= FLAG_OBJECT_MAP_INVALID | FLAG_FAST_DIFF_INVALID;
                        for s in h.snapshots.values_mut() {
                            s.flags |= FLAG_OBJECT_MAP_INVALID | FLAG_FAST_DIFF_INVALID;
                        }
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = updated {
                if adds_journal {
                    let _ = inner
                        .cluster
                        .require_journals()?
                        .remove(inner.store.clone(), inner.io.clone(), &inner.id)
                        .await;
                }
                return Err(e);
            }
            if adds_journal && inner.lock.owned() {
                inner.open_journal().await?;
            }
            if drops_journal {
                inner.close_journal().await;
                inner
                    .cluster
                    .require_journals()?
                    .remove(inner.store.clone(), inner.io.clone(), &inner.id)
                    .await?;
            }
            if drops_map {
                *inner.map.lock().await = None;
                let mut ids: Vec<Option<u64>> = inner
                    .header()
                    .snapshots
                    .keys()
                    .map(|&id| Some(id))
                    .collect();
                ids.push(None);
                for id in ids {
                    let oid = crate::names::object_map_object(&inner.id, id);
                    inner
                        .remove_object(&inner.io, &oid, &rbdx_objstore::SnapContext::empty())
                        .await?;
                }
            }
            if !target.contains(Features::EXCLUSIVE_LOCK)
                && current.contains(Features::EXCLUSIVE_LOCK)
            {
                crate::lock::release_held(inner).await?;
            }
        }
        if adds_map {
            self.object_map_rebuild(progress).await?;
        }
        Ok(())
    }
}
