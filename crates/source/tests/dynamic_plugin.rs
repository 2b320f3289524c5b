//! The sample stream plugin, built as a shared library, is loaded through the C ABI and read;
//! a build of it that claims another ABI version is refused and never registered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rbdx_source::testkit::{Subject, conformance};
use rbdx_source::{ErrorKind, MemoryStream, OpenContext, Registry};

/// Builds the sample plugin (with `features`) into its own target directory and copies the
/// library into `into`.
fn build_sample(features: &[&str], tag: &str, into: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target").join(format!("sample-plugin-{tag}"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "-q", "-p", "rbdx-sample-stream", "--target-dir"])
        .arg(&target);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "building the sample plugin failed");
    let lib = target.join("debug/librbdx_sample_stream.so");
    let dest = into.join(format!("sample-{tag}.so"));
    std::fs::copy(&lib, &dest).unwrap();
    dest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_plugin_loads_and_a_wrong_abi_build_is_refused() {
    let good_dir = tempfile::tempdir().unwrap();
    build_sample(&[], "good", good_dir.path());
    let mut registry = Registry::new();
    let loads = registry.load_dir(good_dir.path()).unwrap();
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0].result.as_deref().unwrap(), "stream sample-pattern");
    let ctx = OpenContext::new(Arc::new(registry));

    let spec: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"type":"sample-pattern","size":20000,"seed":7}"#).unwrap();
    let stream = ctx.registry().open_stream(&spec, &ctx).await.unwrap();
    assert_eq!(stream.size().await.unwrap(), 20000);
    let data = stream.read(4090, 12).await.unwrap();
    let expected: Vec<u8> = (4090u64..4102)
        .map(|i| ((7 + i / 4096) % 251) as u8)
        .collect();
    assert_eq!(data.as_ref(), expected.as_slice());
    let e = stream.read(19_990, 20).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    // The conformance kit every driver runs.
    let pattern: Vec<u8> = (0u64..20000)
        .map(|i| ((7 + i / 4096) % 251) as u8)
        .collect();
    let shared: Arc<dyn rbdx_source::Stream> =
        Arc::from(ctx.registry().open_stream(&spec, &ctx).await.unwrap());
    conformance(&Subject::Stream(shared), &pattern).await;
    // Reads run concurrently on one handle.
    let reads = (0..16u64).map(|i| stream.read(i * 1000, 1000));
    for r in futures::future::join_all(reads).await {
        r.unwrap();
    }
    drop(stream);

    let bad: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"type":"sample-pattern"}"#).unwrap();
    let e = ctx.registry().open_stream(&bad, &ctx).await.unwrap_err();
    assert!(e.to_string().contains("needs a numeric 'size'"), "{e}");

    let wrong_dir = tempfile::tempdir().unwrap();
    build_sample(&["wrong-abi"], "wrong", wrong_dir.path());
    let mut registry = Registry::new();
    let loads = registry.load_dir(wrong_dir.path()).unwrap();
    let e = loads[0].result.as_ref().unwrap_err();
    assert!(
        e.to_string()
            .contains("built for plugin ABI version 2, this rbdx speaks version 1"),
        "{e}"
    );
    assert!(registry.stream_names().is_empty());

    // A second library with a name already taken is refused, not preferred.
    let twice = tempfile::tempdir().unwrap();
    let lib = build_sample(&[], "twice", twice.path());
    std::fs::copy(&lib, twice.path().join("zz-copy.so")).unwrap();
    let mut registry = Registry::new();
    let loads = registry.load_dir(twice.path()).unwrap();
    assert_eq!(loads.len(), 2);
    assert!(loads[0].result.is_ok());
    let e = loads[1].result.as_ref().unwrap_err();
    assert!(
        e.to_string()
            .contains("its stream type 'sample-pattern' is already provided by another driver"),
        "{e}"
    );
    assert_eq!(registry.stream_names(), ["sample-pattern"]);
}

/// Builds the vhd format plugin into its own target directory and copies it into `into`.
fn build_vhd(into: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target/vhd-plugin-kit");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "-q", "-p", "rbdx-format-vhd", "--target-dir"])
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success(), "building the vhd plugin failed");
    std::fs::copy(
        target.join("debug/librbdx_format_vhd.so"),
        into.join("librbdx_format_vhd.so"),
    )
    .unwrap();
}

fn qemu(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vhd_format_plugin_passes_the_conformance_kit() {
    let dir = tempfile::tempdir().unwrap();
    build_vhd(dir.path());
    let mut registry = Registry::new();
    let loads = registry.load_dir(dir.path()).unwrap();
    assert_eq!(loads[0].result.as_deref().unwrap(), "format vhd");
    let ctx = OpenContext::new(Arc::new(registry));
    for subformat in ["fixed", "dynamic"] {
        let vhd = dir.path().join(format!("{subformat}.vhd"));
        let raw = dir.path().join(format!("{subformat}.raw"));
        let (v, r) = (vhd.to_str().unwrap(), raw.to_str().unwrap());
        let opts = format!("subformat={subformat}");
        qemu(
            "qemu-img",
            &["create", "-q", "-f", "vpc", "-o", &opts, v, "9M"],
        );
        qemu(
            "qemu-io",
            &[
                "-f",
                "vpc",
                "-c",
                "write -P 0x5a 1000k 300k",
                "-c",
                "write -P 0x6b 6M 8k",
                v,
            ],
        );
        qemu("qemu-img", &["convert", "-f", "vpc", "-O", "raw", v, r]);
        let stream = Arc::new(MemoryStream::new(subformat, std::fs::read(&vhd).unwrap()));
        // Named, and found by probing its magic (a fixed disk has none: it probes as raw).
        let named = ctx
            .registry()
            .open_on(Some("vhd"), stream.clone(), &ctx)
            .await
            .unwrap();
        let expected = std::fs::read(&raw).unwrap();
        conformance(&Subject::Format(Arc::from(named), None), &expected).await;
        let probed = ctx.registry().probe(&*stream).await.unwrap();
        assert_eq!(
            probed.map(|f| f.name()),
            (subformat == "dynamic").then_some("vhd")
        );
    }
}
