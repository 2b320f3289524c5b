//! `rbdx diff`: the extents that changed between a snapshot (or creation) and an image or a
//! later snapshot, in `rbd diff`'s plain, JSON and XML forms.

use rbdx_image::Cluster;
use rbdx_snapdiff::{DiffOptions, Method};
use serde::Serialize;

use crate::args::ImageArg;
use crate::commands::open::open_view;
use crate::error::CliResult;
use crate::output::{Printer, print_table};

#[derive(Serialize)]
struct ExtentOut {
    offset: u64,
    length: u64,
    exists: &'static str,
}

/// Runs `diff`.
pub async fn run(
    cluster: &Cluster,
    arg: &ImageArg,
    from_snap: Option<String>,
    whole_object: bool,
    printer: Printer,
) -> CliResult {
    let (spec, image) = open_view(cluster, arg).await?;
    let options = DiffOptions::default()
        .with_from_snap(from_snap)
        .with_whole_object(whole_object);
    let result = rbdx_snapdiff::diff(&image, &options).await;
    image.close().await?;
    let diff = result?;
    if diff.method != Method::FastDiff {
        warn_slow(&spec.image);
    }
    let out: Vec<ExtentOut> = diff
        .extents
        .iter()
        .map(|e| ExtentOut {
            offset: e.offset,
            length: e.length,
            exists: if e.data { "true" } else { "false" },
        })
        .collect();
    printer.print("diff", &out, |rows| {
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|e| {
                let kind = if e.exists == "true" { "data" } else { "zero" };
                vec![e.offset.to_string(), e.length.to_string(), kind.to_owned()]
            })
            .collect();
        print_table(&["Offset", "Length", "Type"], &rows);
    });
    Ok(())
}

/// Says that the answer needed the store rather than the fast-diff maps, as `rbd` does.
pub fn warn_slow(image: &str) {
    eprintln!("rbdx: warning: fast-diff map is not enabled for {image}. operation may be slow.");
}
