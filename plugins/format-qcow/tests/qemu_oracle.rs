//! The qcow reader against `qemu-img` as the oracle: fixtures of every supported variant are
//! made at test time with `qemu-img` and `qemu-io`, and every byte read through rbdx (head and
//! each snapshot) must equal `qemu-img convert -O raw` of the same image.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rbdx_format_qcow::QcowFormatFactory;
use rbdx_source::testkit::{Subject, after_change, conformance};
use rbdx_source::{ErrorKind, ExtentKind, Format, OpenContext, Registry, SourceSpec};

fn have_qemu() -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "qemu-img is required under CI=true (apt-get install qemu-utils)"
        );
        eprintln!("skipped: qemu-img is not installed (apt-get install qemu-utils)");
    }
    ok
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_io(image: &Path, commands: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    args.push(image.to_str().unwrap());
    run("qemu-io", &args);
}

fn ctx() -> OpenContext {
    let mut registry = Registry::new();
    registry.register_stream(Arc::new(rbdx_stream_file::FileStreamFactory));
    registry.register_format(Arc::new(QcowFormatFactory));
    registry.register_format(Arc::new(rbdx_format_raw::RawFormatFactory));
    OpenContext::new(Arc::new(registry))
}

async fn open_with(path: &Path, extra: serde_json::Value) -> rbdx_source::Result<Box<dyn Format>> {
    let mut spec =
        serde_json::json!({"type": "qcow", "stream": {"type": "file", "file_path": path}});
    if let serde_json::Value::Object(extra) = extra {
        spec.as_object_mut().unwrap().extend(extra);
    }
    let ctx = ctx();
    ctx.registry()
        .open(&SourceSpec::from_value(spec).unwrap(), &ctx)
        .await
}

async fn open(path: &Path) -> Box<dyn Format> {
    open_with(path, serde_json::Value::Null).await.unwrap()
}

/// `qemu-img convert -O raw` of the image (at a snapshot if given).
fn oracle(dir: &Path, image: &Path, snapshot: Option<&str>) -> Vec<u8> {
    let out = dir.join(format!("oracle-{}.raw", snapshot.unwrap_or("head")));
    let _ = std::fs::remove_file(&out);
    let mut args = vec!["convert", "-O", "raw"];
    let snap_arg;
    if let Some(s) = snapshot {
        snap_arg = format!("snapshot.name={s}");
        args.push("-l");
        args.push(&snap_arg);
    }
    args.push(image.to_str().unwrap());
    args.push(out.to_str().unwrap());
    run("qemu-img", &args);
    std::fs::read(&out).unwrap()
}

async fn assert_same(format: &dyn Format, snap: Option<usize>, expected: &[u8], what: &str) {
    assert_eq!(
        format.view_size(snap),
        expected.len() as u64,
        "{what}: size"
    );
    let chunk = 1 << 20;
    let mut offset = 0;
    while offset < expected.len() {
        let n = chunk.min(expected.len() - offset);
        let got = format.read(snap, offset as u64, n as u64).await.unwrap();
        assert!(
            got == expected[offset..offset + n],
            "{what}: bytes differ in {offset}~{n}"
        );
        offset += n;
    }
    // Zero extents must really be zeros; data extents cover everything else.
    let extents = format
        .extents(snap, 0, expected.len() as u64)
        .await
        .unwrap();
    let covered: u64 = extents.iter().map(|e| e.length).sum();
    assert_eq!(
        covered,
        expected.len() as u64,
        "{what}: extents cover the image"
    );
    for e in extents.iter().filter(|e| e.kind == ExtentKind::Zero) {
        let slice = &expected[e.offset as usize..e.end() as usize];
        assert!(
            slice.iter().all(|&b| b == 0),
            "{what}: zero extent {e:?} holds data"
        );
    }
}

/// A 4 MiB raw base with patterns, compressible, and a hole.
fn base(dir: &Path) -> PathBuf {
    let path = dir.join("base.raw");
    let mut data = vec![0u8; 4 << 20];
    for (i, b) in data[..(1 << 20)].iter_mut().enumerate() {
        *b = (i / 4096) as u8;
    }
    for (i, b) in data[(3 << 20)..].iter_mut().enumerate() {
        *b = (i % 7) as u8 + 1;
    }
    std::fs::write(&path, &data).unwrap();
    path
}

fn img(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[tokio::test]
async fn every_variant_reads_like_qemu_img() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = base(d);
    let b = base.to_str().unwrap();
    let variants: Vec<(&str, Vec<&str>)> = vec![
        ("v3.qcow2", vec!["-o", "compat=1.1"]),
        ("v2.qcow2", vec!["-o", "compat=0.10"]),
        ("zlib.qcow2", vec!["-c"]),
        ("zstd.qcow2", vec!["-c", "-o", "compression_type=zstd"]),
        (
            "extl2.qcow2",
            vec!["-o", "extended_l2=on,cluster_size=128k"],
        ),
        ("small-clusters.qcow2", vec!["-o", "cluster_size=512"]),
        ("big-clusters.qcow2", vec!["-o", "cluster_size=2M"]),
    ];
    for (name, opts) in variants {
        let path = img(d, name);
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        args.extend(opts);
        args.push(b);
        args.push(path.to_str().unwrap());
        run("qemu-img", &args);
        // Zero and partial writes on top (zero clusters, subclusters, a new cluster).
        qemu_io(
            &path,
            &[
                "write -z 64k 64k",
                "write -z -u 8k 16k",
                "write -P 0xab 2050k 5k",
                "write -z 3m 4k",
            ],
        );
        let format = open(&path).await;
        let expected = oracle(d, &path, None);
        assert_same(format.as_ref(), None, &expected, name).await;
        // The conformance kit every driver runs.
        let format: Arc<dyn Format> = Arc::from(format);
        conformance(&Subject::Format(format, None), &expected).await;
    }
    let v1 = img(d, "v1.qcow");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow",
            b,
            v1.to_str().unwrap(),
        ],
    );
    let format = open(&v1).await;
    assert_same(format.as_ref(), None, &oracle(d, &v1, None), "qcow v1").await;
}

#[tokio::test]
async fn internal_snapshots_become_image_snapshots_in_order() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = img(d, "snaps.qcow2");
    run(
        "qemu-img",
        &["create", "-f", "qcow2", path.to_str().unwrap(), "8M"],
    );
    qemu_io(&path, &["write -P 0x11 0 1M"]);
    run(
        "qemu-img",
        &["snapshot", "-c", "first", path.to_str().unwrap()],
    );
    qemu_io(&path, &["write -P 0x22 512k 1M", "write -z 0 64k"]);
    run(
        "qemu-img",
        &["snapshot", "-c", "second", path.to_str().unwrap()],
    );
    qemu_io(&path, &["write -P 0x33 4M 1M"]);
    let format = open(&path).await;
    let names: Vec<&str> = format.snapshots().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["first", "second"]);
    let shared: Arc<dyn Format> = Arc::from(open(&path).await);
    conformance(
        &Subject::Format(shared.clone(), Some(0)),
        &oracle(d, &path, Some("first")),
    )
    .await;
    assert_same(format.as_ref(), None, &oracle(d, &path, None), "head").await;
    assert_same(
        format.as_ref(),
        Some(0),
        &oracle(d, &path, Some("first")),
        "first",
    )
    .await;
    assert_same(
        format.as_ref(),
        Some(1),
        &oracle(d, &path, Some("second")),
        "second",
    )
    .await;
    // The image is rewritten in place under the open reader: each read is of one version or fails.
    let old = oracle(d, &path, None);
    let copy = img(d, "rewritten.qcow2");
    std::fs::copy(&path, &copy).unwrap();
    qemu_io(&copy, &["write -P 0x44 0 6M"]);
    let new = oracle(d, &copy, None);
    after_change(
        &Subject::Format(shared, None),
        || std::fs::write(&path, std::fs::read(&copy).unwrap()).unwrap(),
        &old,
        &new,
    )
    .await;
}

#[tokio::test]
async fn backing_chains_resolve_next_to_the_image() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    base(d);
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            img(d, "mid.qcow2").to_str().unwrap(),
        ],
    );
    qemu_io(&img(d, "mid.qcow2"), &["write -P 0x5a 1M 2M"]);
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            img(d, "top.qcow2").to_str().unwrap(),
            "6M",
        ],
    );
    qemu_io(
        &img(d, "top.qcow2"),
        &["write -P 0x77 2M 64k", "write -z 3m 512k"],
    );
    // Subclusters over a backing file: zero bits hide the backing data, unallocated ones show it.
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on,cluster_size=64k",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            img(d, "sub.qcow2").to_str().unwrap(),
        ],
    );
    qemu_io(
        &img(d, "sub.qcow2"),
        &[
            "write -z 1M 8k",
            "write -P 0x66 1056k 4k",
            "write -z -u 1100k 4k",
        ],
    );
    for name in ["mid.qcow2", "top.qcow2", "sub.qcow2"] {
        let path = img(d, name);
        let format = open(&path).await;
        let expected = oracle(d, &path, None);
        assert_same(format.as_ref(), None, &expected, name).await;
        // The conformance kit every driver runs.
        let format: Arc<dyn Format> = Arc::from(format);
        conformance(&Subject::Format(format, None), &expected).await;
    }
}

#[tokio::test]
async fn backing_files_outside_the_directory_need_the_allow_key() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base_dir = d.join("_base");
    std::fs::create_dir(&base_dir).unwrap();
    let inst = d.join("instance");
    std::fs::create_dir(&inst).unwrap();
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            base_dir.join("golden.qcow2").to_str().unwrap(),
            "2M",
        ],
    );
    qemu_io(&base_dir.join("golden.qcow2"), &["write -P 0x42 0 1M"]);
    let disk = inst.join("disk");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "../_base/golden.qcow2",
            "-F",
            "qcow2",
            disk.to_str().unwrap(),
        ],
    );
    let e = open_with(&disk, serde_json::Value::Null).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(
        e.to_string().contains("../_base/golden.qcow2")
            && e.to_string().contains("rbdx_allow_backing"),
        "{e}"
    );
    let allowed = serde_json::json!({"rbdx_allow_backing": [base_dir]});
    let format = open_with(&disk, allowed).await.unwrap();
    assert_same(
        format.as_ref(),
        None,
        &oracle(d, &disk, None),
        "allowed chain",
    )
    .await;
    let elsewhere = serde_json::json!({"rbdx_allow_backing": [d.join("other")]});
    assert!(open_with(&disk, elsewhere).await.is_err());
}

#[tokio::test]
async fn odd_sizes_and_huge_sparse_images_read_correctly() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let odd = img(d, "odd.qcow2");
    run(
        "qemu-img",
        &["create", "-f", "qcow2", odd.to_str().unwrap(), "1000448"],
    );
    qemu_io(&odd, &["write -P 0x9 995328 5120"]);
    let format = open(&odd).await;
    assert_same(format.as_ref(), None, &oracle(d, &odd, None), "odd size").await;

    let huge = img(d, "huge.qcow2");
    run(
        "qemu-img",
        &["create", "-f", "qcow2", huge.to_str().unwrap(), "16G"],
    );
    qemu_io(&huge, &["write -P 0x61 7G 512k", "write -P 0x62 15G 512k"]);
    let format = open(&huge).await;
    assert_eq!(format.size(), 16 << 30);
    let extents = format.extents(None, 0, 16 << 30).await.unwrap();
    let data: Vec<_> = extents
        .iter()
        .filter(|e| e.kind == ExtentKind::Data)
        .collect();
    assert_eq!(
        data.iter().map(|e| e.length).sum::<u64>(),
        1 << 20,
        "{extents:?}"
    );
    assert!(
        format
            .read(None, 7 << 30, 512 << 10)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 0x61)
    );
    assert!(
        format
            .read(None, (15 << 30) + 4096, 4096)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 0x62)
    );
    assert!(
        format
            .read(None, 1 << 30, 1 << 20)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[tokio::test]
async fn corrupt_and_hostile_images_fail_cleanly() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = img(d, "good.qcow2");
    run(
        "qemu-img",
        &["create", "-f", "qcow2", good.to_str().unwrap(), "4M"],
    );
    qemu_io(&good, &["write -P 0x1 0 1M"]);
    let bytes = std::fs::read(&good).unwrap();

    let truncated = img(d, "truncated.qcow2");
    std::fs::write(&truncated, &bytes[..40]).unwrap();
    let e = open_with(&truncated, serde_json::Value::Null)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");

    let l1_past = img(d, "l1.qcow2");
    std::fs::write(&l1_past, &bytes).unwrap();
    patch(&l1_past, 40, &(1u64 << 40).to_be_bytes());
    let e = open_with(&l1_past, serde_json::Value::Null)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("L1 table"), "{e}");

    let huge = img(d, "huge-size.qcow2");
    std::fs::write(&huge, &bytes).unwrap();
    patch(&huge, 24, &(1u64 << 60).to_be_bytes());
    let e = open_with(&huge, serde_json::Value::Null).await.unwrap_err();
    assert!(
        e.to_string().contains("too small") || e.to_string().contains("too large"),
        "{e}"
    );

    // The L1 entry points at an L2 table past the end of the file.
    let l2_past = img(d, "l2.qcow2");
    std::fs::write(&l2_past, &bytes).unwrap();
    let l1_offset = u64::from_be_bytes(bytes[40..48].try_into().unwrap());
    patch(
        &l2_past,
        l1_offset,
        &((1u64 << 40) | (1 << 63)).to_be_bytes(),
    );
    let format = open(&l2_past).await;
    let e = format.read(None, 0, 4096).await.unwrap_err();
    assert!(e.to_string().contains("L2 table"), "{e}");

    // An L2 table that points at itself (a loop) is just data: no hang, no panic.
    let looped = img(d, "loop.qcow2");
    std::fs::write(&looped, &bytes).unwrap();
    let l1_entry = u64::from_be_bytes(
        bytes[l1_offset as usize..l1_offset as usize + 8]
            .try_into()
            .unwrap(),
    );
    let l2 = l1_entry & 0x00ff_ffff_ffff_fe00;
    patch(&looped, l2, &(l2 | (1 << 63)).to_be_bytes());
    let format = open(&looped).await;
    let _ = format.read(None, 0, 1 << 20).await.unwrap();

    // An L2 entry points at a data cluster wholly past the end of the file: an error.
    let data_past = img(d, "data-past.qcow2");
    std::fs::write(&data_past, &bytes).unwrap();
    patch(&data_past, l2, &((1u64 << 40) | (1 << 63)).to_be_bytes());
    let format = open(&data_past).await;
    let e = format.read(None, 0, 4096).await.unwrap_err();
    assert!(e.to_string().contains("data cluster"), "{e}");

    // A data cluster that starts 512 bytes before the end of the file is cut short: the file's
    // last 512 bytes, then zeros, wherever in the cluster the read starts (found by fuzzing).
    let data_short = img(d, "data-short.qcow2");
    std::fs::write(&data_short, &bytes).unwrap();
    let tail = bytes.len() as u64 - 512;
    patch(&data_short, l2, &(tail | (1 << 63)).to_be_bytes());
    let format = open(&data_short).await;
    let got = format.read(None, 0, 65536).await.unwrap();
    assert_eq!(&got[..512], &bytes[tail as usize..]);
    assert!(got[512..].iter().all(|&b| b == 0));
    let got = format.read(None, 4096, 4096).await.unwrap();
    assert!(got.iter().all(|&b| b == 0));

    let v4 = img(d, "v4.qcow2");
    std::fs::write(&v4, &bytes).unwrap();
    patch(&v4, 4, &4u32.to_be_bytes());
    assert_eq!(
        open_with(&v4, serde_json::Value::Null)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Unsupported
    );

    let enc = img(d, "enc.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "--object",
            "secret,id=s0,data=pw",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=s0",
            enc.to_str().unwrap(),
            "1M",
        ],
    );
    let e = open_with(&enc, serde_json::Value::Null).await.unwrap_err();
    assert!(e.to_string().contains("encrypted"), "{e}");
}
