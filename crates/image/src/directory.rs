//! The pool directory (`rbd_directory`) and the per-image id objects (`rbd_id.<name>`).
//!
//! The directory's omap maps `name_<name>` to the image id and `id_<id>` back to the name;
//! `rbd_id.<name>` holds the id as its data. Both are updated with version-checked batches, so
//! two clients creating the same name cannot both succeed.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rbdx_objstore::{ErrorKind as StoreKind, IoCtx, ObjectStore, ReadOp, SnapContext, WriteOp};

use crate::error::{Error, ErrorKind, Result, StoreContext};
use crate::names;

/// Returns true if `e` says an object is absent (rather than its pool or namespace).
pub(crate) fn is_missing_object(e: &rbdx_objstore::Error) -> bool {
    e.kind() == StoreKind::NotFound && matches!(e.subject(), rbdx_objstore::Subject::Object { .. })
}

/// Returns the directory entries (name -> id) of a pool namespace, sorted by name.
pub async fn list(store: &Arc<dyn ObjectStore>, io: &IoCtx) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let op = ReadOp::new().omap_get_vals(after.as_deref(), "name_", 0);
        let mut res = match store.read_op(io, names::DIRECTORY, &op, None).await {
            Ok(res) => res,
            Err(e) if is_missing_object(&e) => return Ok(out),
            Err(e) => return Err(Error::store("cannot list images", e)),
        };
        let (entries, more) = res
            .take_omap_vals(0)
            .ok_or_else(|| Error::corrupt("directory listing returned no entries"))?;
        after = entries.last().map(|(k, _)| k.clone());
        for (key, value) in entries {
            let name = key.trim_start_matches("name_").to_owned();
            let id = String::from_utf8(value.to_vec())
                .map_err(|_| Error::corrupt(format!("directory entry of {name} is not UTF-8")))?;
            out.insert(name, id);
        }
        if !more {
            return Ok(out);
        }
    }
}

/// Returns the id of image `name`, from `rbd_id.<name>`.
pub async fn lookup(store: &Arc<dyn ObjectStore>, io: &IoCtx, name: &str) -> Result<String> {
    match store
        .read_op(
            io,
            &names::id_object(name),
            &ReadOp::new().read(0, None),
            None,
        )
        .await
    {
        Ok(mut res) => {
            let bytes = res.take_data(0).unwrap_or_default();
            String::from_utf8(bytes.to_vec())
                .map_err(|_| Error::corrupt(format!("id object of image {name} is not UTF-8")))
        }
        Err(e) if is_missing_object(&e) => {
            Err(Error::not_found(format!("image {name} does not exist")))
        }
        Err(e) => Err(Error::store(format!("cannot look up image {name}"), e)),
    }
}

async fn directory_update(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    build: impl Fn(&BTreeMap<String, Bytes>) -> Result<WriteOp>,
    keys: &[String],
) -> Result<()> {
    loop {
        let op = ReadOp::new().omap_get_by_keys(keys.iter().cloned());
        let (current, version) = match store.read_op(io, names::DIRECTORY, &op, None).await {
            Ok(mut res) => (res.take_map(0).unwrap_or_default(), res.version),
            Err(e) if is_missing_object(&e) => (BTreeMap::new(), 0),
            Err(e) => return Err(Error::store("cannot read the image directory", e)),
        };
        let body = build(&current)?;
        let mut batch = if version == 0 {
            WriteOp::new().create(true)
        } else {
            WriteOp::new().assert_version(version)
        };
        for step in body.steps() {
            batch = batch.push(step.clone());
        }
        match store
            .operate(io, names::DIRECTORY, &batch, &SnapContext::empty())
            .await
        {
            Ok(_) => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    StoreKind::VersionMismatch | StoreKind::AlreadyExists
                ) => {}
            Err(e) => return Err(Error::store("cannot update the image directory", e)),
        }
    }
}

/// Returns the id the directory maps `name` to, if any (whether or not `rbd_id.<name>` exists).
pub async fn entry(store: &Arc<dyn ObjectStore>, io: &IoCtx, name: &str) -> Result<Option<String>> {
    let key = format!("name_{name}");
    let op = ReadOp::new().omap_get_by_keys([key.clone()]);
    let mut res = match store.read_op(io, names::DIRECTORY, &op, None).await {
        Ok(res) => res,
        Err(e) if is_missing_object(&e) => return Ok(None),
        Err(e) => return Err(Error::store("cannot read the image directory", e)),
    };
    let map = res.take_map(0).unwrap_or_default();
    Ok(map
        .get(&key)
        .map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// Adds `name -> id`; fails with `AlreadyExists` if the name is taken by another id. Adding
/// the same pair again finishes an add cut short (the entry without its id object).
pub async fn add(store: &Arc<dyn ObjectStore>, io: &IoCtx, name: &str, id: &str) -> Result<()> {
    let name_key = format!("name_{name}");
    let id_key = format!("id_{id}");
    let taken = || {
        Error::new(
            ErrorKind::AlreadyExists,
            format!("image {name} already exists"),
        )
    };
    directory_update(
        store,
        io,
        |current| match current.get(&name_key) {
            Some(existing) if existing.as_ref() == id.as_bytes() => {
                Ok(WriteOp::new().assert_exists())
            }
            Some(_) => Err(taken()),
            None => Ok(WriteOp::new().omap_set([
                (name_key.clone(), Bytes::from(id.to_owned())),
                (id_key.clone(), Bytes::from(name.to_owned())),
            ])),
        },
        &[format!("name_{name}")],
    )
    .await?;
    let op = WriteOp::new()
        .create(true)
        .write_full(Bytes::from(id.to_owned()));
    match store
        .operate(io, &names::id_object(name), &op, &SnapContext::empty())
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.kind() == StoreKind::AlreadyExists
                && lookup(store, io, name).await.is_ok_and(|found| found == id) =>
        {
            Ok(())
        }
        Err(e) => {
            // Undo the directory entry so that the name is free again.
            let _ = remove(store, io, name, id).await;
            if e.kind() == StoreKind::AlreadyExists {
                Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("image {name} already exists"),
                ))
            } else {
                Err(Error::store(
                    format!("cannot create the id object of {name}"),
                    e,
                ))
            }
        }
    }
}

/// Removes `name -> id` from the directory and removes `rbd_id.<name>`.
pub async fn remove(store: &Arc<dyn ObjectStore>, io: &IoCtx, name: &str, id: &str) -> Result<()> {
    match store
        .operate(
            io,
            &names::id_object(name),
            &WriteOp::new().remove(),
            &SnapContext::empty(),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if e.kind() == StoreKind::NotFound => {}
        Err(e) => {
            return Err(Error::store(
                format!("cannot remove the id object of {name}"),
                e,
            ));
        }
    }
    let keys = [format!("name_{name}"), format!("id_{id}")];
    directory_update(
        store,
        io,
        |_| Ok(WriteOp::new().omap_remove(keys.iter().cloned())),
        &keys,
    )
    .await
}

/// Renames an image in the directory and moves its id object.
pub async fn rename(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    old: &str,
    new: &str,
    id: &str,
) -> Result<()> {
    let new_key = format!("name_{new}");
    let old_key = format!("name_{old}");
    let op = WriteOp::new()
        .create(true)
        .write_full(Bytes::from(id.to_owned()));
    store
        .operate(io, &names::id_object(new), &op, &SnapContext::empty())
        .await
        .map_err(|e| {
            if e.kind() == StoreKind::AlreadyExists {
                Error::new(
                    ErrorKind::AlreadyExists,
                    format!("image {new} already exists"),
                )
            } else {
                Error::store(format!("cannot create the id object of {new}"), e)
            }
        })?;
    let result = directory_update(
        store,
        io,
        |current| {
            if current.contains_key(&new_key) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("image {new} already exists"),
                ));
            }
            Ok(WriteOp::new().omap_remove([old_key.clone()]).omap_set([
                (new_key.clone(), Bytes::from(id.to_owned())),
                (format!("id_{id}"), Bytes::from(new.to_owned())),
            ]))
        },
        std::slice::from_ref(&new_key),
    )
    .await;
    if let Err(e) = result {
        let _ = store
            .operate(
                io,
                &names::id_object(new),
                &WriteOp::new().remove(),
                &SnapContext::empty(),
            )
            .await;
        return Err(e);
    }
    store
        .operate(
            io,
            &names::id_object(old),
            &WriteOp::new().remove(),
            &SnapContext::empty(),
        )
        .await
        .ctx(|| format!("cannot remove the id object of {old}"))?;
    Ok(())
}
