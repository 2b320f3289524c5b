//! The `native` format: an rbdx image at a snapshot, as Ceph's native source spec names it.
//!
//! ```json
//! {"type": "native", ["cluster_name": "<cluster>", ["client_name": "<client>",]]
//!  "pool_name": "<pool>" | "pool_id": <id>, ["pool_namespace": "<ns>",]
//!  "image_name": "<image>", ["image_id": "<id>",]
//!  "snap_name": "<snap>" | "snap_id": <id>}
//! ```
//!
//! The rules are Ceph's: exactly one of `pool_name`/`pool_id` and of `snap_name`/`snap_id`
//! (ids as numbers or numeric strings); `image_name` is required (`image_id` opens an image
//! that is no longer in the directory, e.g. in the trash); `client_name` needs
//! `cluster_name`; a snapshot is required, so that the source stays read-only during an
//! import. With `cluster_name`, the image is read from another configured cluster (an rbdx
//! config or an embedded store of that name), which is how images move between clusters.
//!
//! The source's head is the image at that snapshot; its snapshots are the image's snapshots up
//! to and including that one, oldest first (an import of `image1@2` gives `@1` and `@2`, as
//! Ceph does).

#![warn(missing_docs, missing_debug_implementations)]

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_image::{Cluster, Image, OpenOptions};
use rbdx_objstore::{IoCtx, PoolId};
use rbdx_source::{
    Error, ErrorKind, Extent, Format, FormatFactory, FormatRegistration, OpenContext, Result,
    SnapshotInfo, SourceSpec,
};

/// Opens `native` sources.
#[derive(Debug)]
pub struct NativeFormatFactory;

rbdx_source::inventory::submit! { FormatRegistration(&NativeFormatFactory) }

/// An rbdx image at a snapshot, with its snapshots up to and including that one.
#[derive(Debug)]
pub struct NativeFormat {
    name: String,
    head: Image,
    snapshots: Vec<SnapshotInfo>,
    snapshot_images: Vec<Image>,
}

fn from_image(e: rbdx_image::Error) -> Error {
    let kind = match e.kind() {
        rbdx_image::ErrorKind::NotFound => ErrorKind::NotFound,
        rbdx_image::ErrorKind::InvalidArgument => ErrorKind::Invalid,
        rbdx_image::ErrorKind::Unsupported => ErrorKind::Unsupported,
        _ => ErrorKind::Io,
    };
    Error::new(kind, e.to_string())
}

fn from_store(e: rbdx_objstore::Error) -> Error {
    let kind = match e.kind() {
        rbdx_objstore::ErrorKind::NotFound => ErrorKind::NotFound,
        rbdx_objstore::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Io,
    };
    Error::new(kind, e.to_string())
}

#[async_trait]
impl FormatFactory for NativeFormatFactory {
    fn name(&self) -> &'static str {
        "native"
    }

    async fn open(&self, spec: &SourceSpec, ctx: &OpenContext) -> Result<Box<dyn Format>> {
        let mut r = spec.reader();
        let cluster = r.opt_str("cluster_name")?;
        let client = r.opt_str("client_name")?;
        let pool_name = r.opt_str("pool_name")?;
        let pool_id = r.opt_u64("pool_id")?;
        let namespace = r.opt_str("pool_namespace")?.unwrap_or_default();
        let image_name = r.str("image_name")?;
        let image_id = r.opt_str("image_id")?;
        let snap_name = r.opt_str("snap_name")?;
        let snap_id = r.opt_u64("snap_id")?;
        r.finish()?;
        if client.is_some() && cluster.is_none() {
            return Err(Error::invalid(
                "cannot specify client name without cluster name",
            ));
        }
        if snap_name.is_some() && snap_id.is_some() {
            return Err(Error::invalid("cannot specify both snap_name and snap_id"));
        }
        if snap_name.is_none() && snap_id.is_none() {
            return Err(Error::invalid(
                "snap name or snap id required for import (the source must stay read-only)",
            ));
        }
        let store = ctx.cluster(cluster.as_deref(), client.as_deref()).await?;
        let pool = match (pool_name, pool_id) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid("cannot specify both pool_name and pool_id"));
            }
            (None, None) => return Err(Error::invalid("missing pool name or pool id")),
            (Some(name), None) => store.pool_lookup(&name).await.map_err(from_store)?.id,
            (None, Some(id)) => store.pool_by_id(PoolId(id)).await.map_err(from_store)?.id,
        };
        let io = IoCtx::with_namespace(pool, namespace);
        // An image that is itself the destination of an import reads through its source with
        // the same drivers this source was opened with.
        let cluster =
            Cluster::new(store).with_sources(Arc::new(rbdx_migration::Opener::new(ctx.clone())));
        let open = |opts: OpenOptions| {
            let (cluster, io, image_name, image_id) = (
                cluster.clone(),
                io.clone(),
                image_name.clone(),
                image_id.clone(),
            );
            async move {
                let opts = opts.with_read_only(true);
                match image_id {
                    Some(id) => Image::open_by_id(cluster, io, &image_name, &id, opts).await,
                    None => Image::open(cluster, io, &image_name, opts).await,
                }
                .map_err(from_image)
            }
        };
        let probe = open(OpenOptions::default()).await?;
        let header = probe.header();
        probe.close().await.map_err(from_image)?;
        let target = match (&snap_name, snap_id) {
            (Some(n), _) => header.snapshot_by_name(n).cloned(),
            (None, Some(id)) => header.snapshots.get(&id).cloned(),
            (None, None) => None,
        }
        .ok_or_else(|| {
            let which = snap_name
                .clone()
                .unwrap_or_else(|| format!("id {}", snap_id.unwrap_or_default()));
            Error::new(
                ErrorKind::NotFound,
                format!("snapshot {which} of image {image_name} does not exist"),
            )
        })?;
        let head = open(OpenOptions::default().with_snap_id(Some(target.id))).await?;
        let mut snapshots = Vec::new();
        let mut snapshot_images = Vec::new();
        for snap in header.snapshots.values().filter(|s| s.id <= target.id) {
            snapshot_images.push(open(OpenOptions::default().with_snap_id(Some(snap.id))).await?);
            snapshots.push(SnapshotInfo {
                name: snap.name.clone(),
                size: snap.size,
            });
        }
        Ok(Box::new(NativeFormat {
            name: format!("{image_name}@{}", target.name),
            head,
            snapshots,
            snapshot_images,
        }))
    }
}

impl NativeFormat {
    fn image(&self, snap: Option<usize>) -> Result<&Image> {
        match snap {
            None => Ok(&self.head),
            Some(i) => self
                .snapshot_images
                .get(i)
                .ok_or_else(|| Error::invalid(format!("no snapshot number {i}"))),
        }
    }
}

#[async_trait]
impl Format for NativeFormat {
    fn describe(&self) -> String {
        format!("rbdx image {}", self.name)
    }

    fn format_name(&self) -> &str {
        "native"
    }

    fn size(&self) -> u64 {
        self.head.size()
    }

    fn snapshots(&self) -> &[SnapshotInfo] {
        &self.snapshots
    }

    async fn read(&self, snap: Option<usize>, offset: u64, length: u64) -> Result<Bytes> {
        // Only the data of the objects is read (a source in another cluster sends no holes).
        let runs = self
            .image(snap)?
            .read_data(offset, length)
            .await
            .map_err(from_image)?;
        if let [(at, data)] = runs.as_slice()
            && *at == offset
            && data.len() as u64 == length
        {
            return Ok(data.clone());
        }
        let mut buf = vec![0u8; length as usize];
        for (at, data) in runs {
            let from = (at - offset) as usize;
            buf[from..from + data.len()].copy_from_slice(&data);
        }
        Ok(Bytes::from(buf))
    }

    async fn extents(&self, snap: Option<usize>, offset: u64, length: u64) -> Result<Vec<Extent>> {
        let runs = self
            .image(snap)?
            .allocation(offset, length)
            .await
            .map_err(from_image)?;
        Ok(runs
            .into_iter()
            .map(|r| {
                if r.data {
                    Extent::data(r.offset, r.length)
                } else {
                    Extent::zero(r.offset, r.length)
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use rbdx_image::{CreateOptions, Images};
    use rbdx_objstore::{MemoryStore, ObjectStore};
    use rbdx_source::{Clusters, Registry};

    #[derive(Debug)]
    struct One(Arc<dyn ObjectStore>);

    #[async_trait]
    impl Clusters for One {
        async fn store(
            &self,
            name: Option<&str>,
            _client: Option<&str>,
        ) -> Result<Arc<dyn ObjectStore>> {
            match name {
                None => Ok(self.0.clone()),
                Some(n) => Err(Error::new(ErrorKind::NotFound, format!("no cluster {n}"))),
            }
        }
    }

    async fn setup() -> OpenContext {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let pool = store.pool_create("rbd").await.unwrap();
        let images = Images::new(store.clone(), IoCtx::new(pool));
        images
            .create("src", &CreateOptions::new(12 << 20))
            .await
            .unwrap();
        let image = images.open("src", OpenOptions::default()).await.unwrap();
        image.write(0, Bytes::from_static(b"one")).await.unwrap();
        image.snap_create("s1").await.unwrap();
        image.write(0, Bytes::from_static(b"two")).await.unwrap();
        image.snap_create("s2").await.unwrap();
        image.write(0, Bytes::from_static(b"three")).await.unwrap();
        image.close().await.unwrap();
        let mut registry = Registry::new();
        registry.register_format(Arc::new(NativeFormatFactory));
        OpenContext::new(Arc::new(registry)).with_clusters(Arc::new(One(store)))
    }

    async fn open(ctx: &OpenContext, spec: serde_json::Value) -> Result<Box<dyn Format>> {
        ctx.registry()
            .open(&SourceSpec::from_value(spec).unwrap(), ctx)
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_native_format_passes_the_conformance_kit() {
        use rbdx_source::testkit::{Subject, conformance};
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let pool = store.pool_create("rbd").await.unwrap();
        let images = Images::new(store.clone(), IoCtx::new(pool));
        let mut registry = Registry::new();
        registry.register_format(Arc::new(NativeFormatFactory));
        let ctx = OpenContext::new(Arc::new(registry)).with_clusters(Arc::new(One(store)));
        let size = (9 << 20) + 3000;
        let layout = CreateOptions::new(size)
            .with_order(20)
            .with_striping(65536, 3);
        images.create("striped", &layout).await.unwrap();
        let image = images
            .open("striped", OpenOptions::default())
            .await
            .unwrap();
        let mut first = vec![0u8; size as usize];
        for (i, at) in [
            0usize,
            100_000,
            1 << 20,
            (5 << 20) + 17,
            size as usize - 900,
        ]
        .into_iter()
        .enumerate()
        {
            let data: Vec<u8> = (0..900).map(|j| ((i * 7 + j) % 250) as u8 + 1).collect();
            image
                .write(at as u64, Bytes::from(data.clone()))
                .await
                .unwrap();
            first[at..at + 900].copy_from_slice(&data);
        }
        image.snap_create("a").await.unwrap();
        image
            .write(0, Bytes::from(vec![0xEEu8; 70_000]))
            .await
            .unwrap();
        image.snap_create("b").await.unwrap();
        image.close().await.unwrap();
        let mut head = first.clone();
        head[..70_000].fill(0xEE);
        let f: Arc<dyn Format> = Arc::from(
            open(
                &ctx,
                serde_json::json!({"type":"native","pool_name":"rbd","image_name":"striped","snap_name":"b"}),
            )
            .await
            .unwrap(),
        );
        conformance(&Subject::Format(f.clone(), None), &head).await;
        conformance(&Subject::Format(f, Some(0)), &first).await;
    }

    #[tokio::test]
    async fn the_head_is_the_snapshot_and_snapshots_up_to_it_follow() {
        let ctx = setup().await;
        let f = open(&ctx, serde_json::json!({"type":"native","pool_name":"rbd","image_name":"src","snap_name":"s2"}))
            .await
            .unwrap();
        assert_eq!(f.read(None, 0, 3).await.unwrap(), "two");
        let names: Vec<&str> = f.snapshots().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["s1", "s2"]);
        assert_eq!(f.read(Some(0), 0, 3).await.unwrap(), "one");
        assert_eq!(f.read(Some(1), 0, 3).await.unwrap(), "two");
        // Only the first 4 MiB object holds data; the rest are holes, from the object map.
        let expected = vec![Extent::data(0, 4 << 20), Extent::zero(4 << 20, 8 << 20)];
        assert_eq!(f.extents(None, 0, 12 << 20).await.unwrap(), expected);
        assert_eq!(f.extents(Some(0), 0, 12 << 20).await.unwrap(), expected);
        let by_id = open(
            &ctx,
            serde_json::json!({"type":"native","pool_id":"1","image_name":"src","snap_id":1}),
        )
        .await
        .unwrap();
        assert_eq!(by_id.snapshots().len(), 1);
        assert_eq!(by_id.read(None, 0, 3).await.unwrap(), "one");
    }

    #[tokio::test]
    async fn cephs_spec_rules_are_enforced() {
        let ctx = setup().await;
        let cases = [
            (
                serde_json::json!({"type":"native","pool_name":"rbd","image_name":"src"}),
                "snap name or snap id required",
            ),
            (
                serde_json::json!({"type":"native","pool_name":"rbd","image_name":"src","snap_name":"nosuch"}),
                "snapshot nosuch",
            ),
            (
                serde_json::json!({"type":"native","pool_name":"rbd","image_name":"src","snap_name":123456}),
                "must be a string",
            ),
            (
                serde_json::json!({"type":"native","pool_name":"rbd","image_name":"src","snap_id":"foobar"}),
                "snap_id",
            ),
            (
                serde_json::json!({"type":"native","pool_name":"rbd","image_name":"src","snap_id":"999"}),
                "snapshot id 999",
            ),
            (
                serde_json::json!({"type":"native","pool_name":"rbd","pool_id":1,"image_name":"src","snap_id":1}),
                "both pool_name and pool_id",
            ),
            (
                serde_json::json!({"type":"native","image_name":"src","snap_id":1}),
                "missing pool name or pool id",
            ),
            (
                serde_json::json!({"type":"native","pool_name":"rbd","snap_id":1}),
                "image_name",
            ),
            (
                serde_json::json!({"type":"native","client_name":"admin","pool_name":"rbd","image_name":"src","snap_id":1}),
                "client name without cluster name",
            ),
            (
                serde_json::json!({"type":"native","cluster_name":"other","pool_name":"rbd","image_name":"src","snap_id":1}),
                "no cluster other",
            ),
        ];
        for (spec, text) in cases {
            let e = open(&ctx, spec).await.unwrap_err();
            assert!(e.to_string().contains(text), "{e} lacks {text}");
        }
    }
}
