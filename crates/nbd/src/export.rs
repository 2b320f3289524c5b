//! An export: an open image served under a name, and the set of exports of one server.
//!
//! Every connection to an export shares one open image, so a flush on any connection covers
//! the writes completed on all of them (which is what lets the server advertise multi-conn),
//! and the image's exclusive lock is taken once for the whole server. The lock is cooperative:
//! when another process asks for it (`migration execute`, `snap create`, `resize`), the image
//! hands it over between requests and takes it back on the next write.

use std::sync::Arc;

use rbdx_image::Image;

use crate::proto::tflag;

/// An image served under a name.
#[derive(Debug)]
pub struct Export {
    name: String,
    image: Image,
    read_only: bool,
}

impl Export {
    /// Serves `image` as `name`; snapshots and read-only images are always served read-only.
    pub fn new(name: impl Into<String>, image: Image, read_only: bool) -> Self {
        let read_only = read_only || image.is_read_only();
        Export {
            name: name.into(),
            image,
            read_only,
        }
    }

    /// Returns the export name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the served image.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// Returns true if writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Re-reads the image header, so that a new connection sees a size changed by another
    /// process (`rbdx resize`).
    pub async fn refresh(&self) -> rbdx_image::Result<()> {
        if self.image.snapshot().is_none() {
            self.image.refresh().await?;
        }
        Ok(())
    }

    /// Returns the export size in bytes, as a new connection sees it.
    pub fn size(&self) -> u64 {
        self.image.size()
    }

    /// Returns the advertised preferred block size: the object size, because a write that
    /// covers a whole object replaces it, while a partial one costs a copy of the rest or a
    /// logged change in the store. Clients such as `qemu-img convert` size and align their
    /// requests by it.
    pub fn preferred_block_size(&self) -> u32 {
        let object = self.image.layout().object_size();
        object.clamp(4096, u64::from(crate::proto::MAX_REQUEST)) as u32
    }

    /// Returns a one-line description: the export name, its size, and whether it is writable.
    pub fn description(&self) -> String {
        format!(
            "rbdx image {}, {} bytes{}",
            self.name,
            self.size(),
            if self.read_only { ", read-only" } else { "" }
        )
    }

    /// Returns the transmission flags advertised for this export.
    pub fn transmission_flags(&self) -> u16 {
        let mut flags = tflag::HAS_FLAGS | tflag::SEND_FLUSH | tflag::SEND_DF;
        flags |= tflag::CAN_MULTI_CONN;
        if self.read_only {
            flags |= tflag::READ_ONLY;
        } else {
            flags |= tflag::SEND_FUA
                | tflag::SEND_TRIM
                | tflag::SEND_WRITE_ZEROES
                | tflag::SEND_FAST_ZERO;
        }
        flags
    }
}

/// The exports of one server, looked up by name.
#[derive(Debug, Clone)]
pub struct Exports {
    list: Arc<Vec<Arc<Export>>>,
}

impl Exports {
    /// Collects `exports`; names must be distinct.
    pub fn new(exports: Vec<Export>) -> Result<Self, crate::Error> {
        let mut seen = std::collections::HashSet::new();
        for e in &exports {
            if !seen.insert(e.name.clone()) {
                return Err(crate::Error::DuplicateExport(e.name.clone()));
            }
        }
        Ok(Exports {
            list: Arc::new(exports.into_iter().map(Arc::new).collect()),
        })
    }

    /// Returns the export called `name`; the empty name (a client's default) selects the
    /// export when there is exactly one.
    pub fn find(&self, name: &str) -> Option<Arc<Export>> {
        if name.is_empty() && self.list.len() == 1 {
            return self.list.first().cloned();
        }
        self.list.iter().find(|e| e.name == name).cloned()
    }

    /// Returns every export, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Export>> {
        self.list.iter()
    }
}
