//! Which objects may have changed between two points, from the object maps.
//!
//! A snapshot's map says, for each object, whether it existed then and whether it was written
//! since the snapshot before (exists) or not (exists-clean); the head's map says the same
//! about the head and the newest snapshot. So between `from` and `to`, an object changed if it
//! exists at exactly one of them, or if the map of any snapshot after `from`, or of `to`
//! itself, marks it written. Objects absent at both points never changed.

use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_image::{Error, Image, ObjectMap, ObjectState, Result, SnapInfo, StoredMap};
use rbdx_objstore::{ErrorKind as StoreKind, ReadOp, SnapId};

use crate::Method;
use crate::within::Ranges;

/// What is known about one object after classification or refinement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The whole object changed; it exists at the newer point or not.
    Whole {
        /// True if the object exists at the newer point (data), false if it is gone (zero).
        exists_at_to: bool,
    },
    /// These ranges changed.
    Ranges(Ranges),
}

/// The two points of a diff and the maps between them.
#[derive(Debug)]
pub struct Views {
    /// The older snapshot, or `None` for creation.
    pub from: Option<SnapInfo>,
    /// The newer snapshot, or `None` for the head.
    pub to: Option<SnapInfo>,
    /// The size at `from` (0 from creation).
    pub from_size: u64,
    /// The size at `to`.
    pub to_size: u64,
    /// The map at `from` (if there is a `from`).
    from_map: Option<ObjectMap>,
    /// The maps of every snapshot after `from` up to `to`, and `to`'s own, oldest first; empty
    /// if any map needed is missing or invalid.
    later_maps: Vec<StoredMap>,
    /// True if every map needed is present and valid.
    maps_valid: bool,
}

impl Views {
    /// Resolves `from` on `image` (open at the newer point) and loads the maps needed.
    pub async fn load(image: &Image, from: Option<&str>) -> Result<Views> {
        let to = image.snapshot().cloned();
        // A user snapshot, or a mirror snapshot by its (unique) name.
        let from = from
            .map(|name| {
                image.snapshot_named(name).or_else(|e| {
                    image
                        .header()
                        .snapshots
                        .into_values()
                        .find(|s| s.name == name && s.namespace.mirror().is_some())
                        .ok_or(e)
                })
            })
            .transpose()?;
        if let (Some(f), Some(t)) = (&from, &to)
            && f.id > t.id
        {
            return Err(Error::invalid(format!(
                "snapshot {} is newer than snapshot {}; diff from the older one",
                f.name, t.name
            )));
        }
        let header = image.header();
        let to_size = image.size();
        let from_size = from.as_ref().map_or(0, |f| f.size);
        let mut later: Vec<Option<u64>> = header
            .snapshots
            .keys()
            .copied()
            .filter(|&id| from.as_ref().is_none_or(|f| id > f.id))
            .filter(|&id| to.as_ref().is_none_or(|t| id < t.id))
            .map(Some)
            .collect();
        later.push(to.as_ref().map(|t| t.id));
        if from.is_none() {
            // From creation only existence at `to` matters.
            later = vec![to.as_ref().map(|t| t.id)];
        }
        let mut maps_valid = true;
        let from_map = match &from {
            Some(f) => match image.stored_object_map(Some(f.id)).await? {
                Some(m) => Some(m.map),
                None => {
                    maps_valid = false;
                    None
                }
            },
            None => None,
        };
        let mut later_maps = Vec::new();
        for snap in later {
            match image.stored_object_map(snap).await? {
                Some(m) if maps_valid => later_maps.push(m),
                _ => maps_valid = false,
            }
        }
        if !maps_valid {
            later_maps.clear();
        }
        Ok(Views {
            from,
            to,
            from_size,
            to_size,
            from_map,
            later_maps,
            maps_valid,
        })
    }

    /// Returns how objects are classified.
    pub fn method(&self) -> Method {
        if !self.maps_valid {
            Method::Store
        } else if self.later_maps.iter().all(|m| m.fast_diff) {
            Method::FastDiff
        } else {
            Method::ObjectMap
        }
    }

    /// Returns the map at `to`, if valid.
    fn to_map(&self) -> Option<&ObjectMap> {
        self.later_maps.last().map(|m| &m.map)
    }
}

fn state(map: Option<&ObjectMap>, objectno: u64) -> ObjectState {
    match map {
        Some(m) if objectno < m.len() => m.get(objectno),
        _ => ObjectState::Nonexistent,
    }
}

/// Returns the objects below `count` that may have changed, each as a whole-object change.
/// Without valid maps every object is a candidate (the store decides).
pub fn classify(views: &Views, count: u64) -> Vec<(u64, Change)> {
    classify_range(views, 0..count)
}

/// Like [`classify`], for the objects of `objects` only.
pub fn classify_range(views: &Views, objects: std::ops::Range<u64>) -> Vec<(u64, Change)> {
    let method = views.method();
    if method == Method::Store {
        return objects
            .map(|o| (o, Change::Whole { exists_at_to: true }))
            .collect();
    }
    let to_map = views.to_map();
    let mut out = Vec::new();
    for objectno in objects {
        let at_from = views.from.is_some() && state(views.from_map.as_ref(), objectno).may_exist();
        let at_to = state(to_map, objectno).may_exist();
        if !at_from && !at_to {
            continue;
        }
        if at_from != at_to || views.from.is_none() {
            out.push((
                objectno,
                Change::Whole {
                    exists_at_to: at_to,
                },
            ));
            continue;
        }
        let written = method != Method::FastDiff
            || views.later_maps.iter().any(|m| {
                matches!(
                    state(Some(&m.map), objectno),
                    ObjectState::Exists | ObjectState::Pending
                )
            });
        if written {
            out.push((objectno, Change::Whole { exists_at_to: true }));
        }
    }
    out
}

/// Returns, for each object below `count`, whether the image itself holds it at the newer
/// point (from the map, or by asking the store).
pub async fn existing_at_to(image: &Image, views: &Views, count: u64) -> Result<Vec<bool>> {
    existing_range(image, views, 0..count).await
}

/// Like [`existing_at_to`], for the objects of `objects` (the result is indexed from
/// `objects.start`).
pub async fn existing_range(
    image: &Image,
    views: &Views,
    objects: std::ops::Range<u64>,
) -> Result<Vec<bool>> {
    if let Some(map) = views.to_map() {
        return Ok(objects.map(|o| state(Some(map), o).may_exist()).collect());
    }
    let store = image.store().clone();
    let io = image.data_io_ctx().clone();
    let prefix = image.header().object_prefix;
    let at = views.to.as_ref().map(|t| SnapId(t.id));
    futures::stream::iter(objects)
        .map(|objectno| {
            let store = store.clone();
            let io = io.clone();
            let oid = rbdx_image::names::data_object(&prefix, objectno);
            async move {
                match store.read_op(&io, &oid, &ReadOp::new().stat(), at).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == StoreKind::NotFound => Ok(false),
                    Err(e) => Err(Error::store(format!("cannot stat {oid}"), e)),
                }
            }
        })
        .buffered(crate::CONCURRENCY)
        .try_collect()
        .await
}
