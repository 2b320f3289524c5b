//! Space usage per snapshot and head (`rbdx du`): what each point added since the one before,
//! at object granularity, as `rbd du` reports it.

use rbdx_image::{Image, Result, SnapInfo};

use crate::{DiffOptions, Method};

/// The usage of one snapshot or of the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The snapshot, or `None` for the head.
    pub snapshot: Option<SnapInfo>,
    /// The size at that point.
    pub provisioned: u64,
    /// Bytes of the objects written between the previous snapshot (or creation) and this
    /// point, clipped to the size; a clone's parent does not count.
    pub used: u64,
}

/// Returns the usage of every snapshot (oldest first) and of the head (last) of `image` (open
/// at its head), and the weakest method any of them needed.
pub async fn usage(image: &Image) -> Result<(Vec<Usage>, Method)> {
    image.refresh().await?;
    let header = image.header();
    let mut out = Vec::new();
    let mut method = Method::FastDiff;
    let mut previous: Option<String> = None;
    for (snap, size) in header.views() {
        let options = DiffOptions::default()
            .with_from_snap(previous.clone())
            .with_whole_object(true)
            .with_include_parent(false);
        let diff = match &snap {
            None => crate::diff(image, &options).await,
            Some(s) => {
                let view = crate::open_snapshot(image, s.id).await?;
                let diff = crate::diff(&view, &options).await;
                view.close().await?;
                diff
            }
        }?;
        method = weakest(method, diff.method);
        out.push(Usage {
            provisioned: size,
            used: diff
                .extents
                .iter()
                .filter(|e| e.data)
                .map(|e| e.length)
                .sum(),
            snapshot: snap.clone(),
        });
        previous = snap.map(|s| s.name);
    }
    Ok((out, method))
}

fn weakest(a: Method, b: Method) -> Method {
    let rank = |m| match m {
        Method::FastDiff => 0,
        Method::ObjectMap => 1,
        Method::Store => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}
