//! End-to-end tests of `rbdx source probe|export` through the built binary: raw sources on
//! files, snapshots, `config://` values, and the errors of bad specs.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{FileExt as _, MetadataExt as _};

use common::Rbdx;

#[test]
fn raw_sources_are_probed_and_exported_sparsely() {
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head.raw");
    let f = std::fs::File::create(&head).unwrap();
    f.set_len(32 << 20).unwrap();
    f.write_all_at(&vec![7u8; 1 << 20], 8 << 20).unwrap();
    drop(f);
    let snap = dir.path().join("snap.raw");
    std::fs::write(&snap, vec![1u8; 16 << 20]).unwrap();
    let spec = serde_json::json!({
        "type": "raw",
        "stream": {"type": "file", "file_path": head},
        "snapshots": [{"type": "raw", "name": "before", "stream": {"type": "file", "file_path": snap}}]
    })
    .to_string();
    let probe = rbdx
        .run(&[
            "source",
            "probe",
            "--source-spec",
            &spec,
            "--format",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(probe["format"], "raw");
    assert_eq!(probe["size"], 32 << 20);
    assert_eq!(probe["allocated"], 1 << 20);
    assert_eq!(probe["snapshots"][0]["name"], "before");
    assert_eq!(probe["snapshots"][0]["size"], 16 << 20);

    let spec_file = dir.path().join("spec.json");
    std::fs::write(&spec_file, &spec).unwrap();
    let out = dir.path().join("out.raw");
    rbdx.run(&[
        "source",
        "export",
        "--source-spec-path",
        spec_file.to_str().unwrap(),
        out.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&head).unwrap());
    assert!(std::fs::metadata(&out).unwrap().blocks() * 512 <= 2 << 20);
    let snap_out = dir.path().join("snap.out");
    rbdx.run_with_input(
        &[
            "source",
            "export",
            "--source-spec-path",
            "-",
            "--snap",
            "before",
            snap_out.to_str().unwrap(),
        ],
        Some(spec.as_bytes()),
    )
    .ok();
    assert_eq!(
        std::fs::read(&snap_out).unwrap(),
        std::fs::read(&snap).unwrap()
    );
    rbdx.run(&[
        "source",
        "export",
        "--source-spec",
        &spec,
        "--snap",
        "nosuch",
        "x",
    ])
    .fails(2, "no snapshot 'nosuch'");
}

#[test]
fn config_key_values_are_resolved_and_never_shown() {
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("secret-location.raw");
    std::fs::write(&head, vec![3u8; 4096]).unwrap();
    rbdx.run(&["config-key", "set", "paths/head", head.to_str().unwrap()])
        .ok();
    let spec = r#"{"type":"raw","stream":{"type":"file","file_path":"config://paths/head"}}"#;
    let probe = rbdx
        .run(&["source", "probe", "--source-spec", spec, "--format", "json"])
        .ok()
        .json();
    assert_eq!(probe["size"], 4096);
    assert_eq!(probe["spec"]["stream"]["file_path"], "config://paths/head");
    let spec = r#"{"type":"raw","stream":{"type":"file","file_path":"config://paths/none"}}"#;
    rbdx.run(&["source", "probe", "--source-spec", spec])
        .fails(2, "config://paths/none");
}

#[test]
fn bad_specs_fail_with_the_key_and_cephs_status() {
    let rbdx = Rbdx::new();
    let cases: [(&str, i32, &str); 7] = [
        ("not json", 74, "invalid source-spec JSON"),
        ("[]", 74, "not an object"),
        (r#"{"stream":{}}"#, 22, "no 'type' key"),
        (
            r#"{"type":"vmdk"}"#,
            38,
            "unknown or unsupported format type 'vmdk'",
        ),
        (
            r#"{"type":"raw","stream":{"type":"gopher"}}"#,
            38,
            "unknown or unsupported stream type 'gopher'",
        ),
        (
            r#"{"type":"raw","stream":{"type":"file"}}"#,
            22,
            "missing the 'file_path' key",
        ),
        (
            r#"{"type":"raw","stream":{"type":"file","file_path":"/nonexistent"}}"#,
            2,
            "cannot open /nonexistent",
        ),
    ];
    for (spec, code, text) in cases {
        rbdx.run(&["source", "probe", "--source-spec", spec])
            .fails(code, text);
    }
    rbdx.run(&["source", "probe"]).fails(22, "--source-spec");
}

#[test]
fn stream_plugins_load_from_the_plugin_dir() {
    let rbdx = Rbdx::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target/sample-plugin-e2e");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&root)
        .args(["build", "-q", "-p", "rbdx-sample-stream", "--target-dir"])
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success());
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        target.join("debug/librbdx_sample_stream.so"),
        plugins.path().join("sample.so"),
    )
    .unwrap();
    let spec = r#"{"type":"raw","stream":{"type":"sample-pattern","size":12288,"seed":9}}"#;
    rbdx.run(&["source", "probe", "--source-spec", spec])
        .fails(38, "unknown or unsupported stream type 'sample-pattern'");
    let dir = plugins.path().to_str().unwrap();
    let probe = rbdx
        .run(&[
            "--plugin-dir",
            dir,
            "source",
            "probe",
            "--source-spec",
            spec,
            "--format",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(probe["size"], 12288);
    let out = rbdx.path().join("pattern.raw");
    rbdx.run_with_input(
        &[
            "source",
            "export",
            "--source-spec",
            spec,
            out.to_str().unwrap(),
            "--plugin-dir",
            dir,
        ],
        None,
    )
    .ok();
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes[0], 9);
    assert_eq!(bytes[8192], 11);
}

#[test]
fn a_plugin_named_like_a_built_in_driver_is_refused_and_the_built_in_stays() {
    let rbdx = Rbdx::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target/sample-plugin-builtin-name");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "-q",
            "-p",
            "rbdx-sample-stream",
            "--features",
            "builtin-name",
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success());
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        target.join("debug/librbdx_sample_stream.so"),
        plugins.path().join("file.so"),
    )
    .unwrap();
    let disk = rbdx.path().join("disk.raw");
    std::fs::write(&disk, vec![5u8; 8192]).unwrap();
    let spec = format!(
        r#"{{"type":"raw","stream":{{"type":"file","file_path":"{}"}}}}"#,
        disk.display()
    );
    let run = rbdx
        .run(&[
            "--plugin-dir",
            plugins.path().to_str().unwrap(),
            "source",
            "probe",
            "--source-spec",
            &spec,
            "--format",
            "json",
        ])
        .ok();
    assert!(
        run.stderr
            .contains("its stream type 'file' is already provided by another driver"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["size"], 8192);
}

#[test]
fn native_sources_read_images_of_this_or_another_cluster() {
    let site_a = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::write(
        &disk,
        (0..(3u32 << 20))
            .map(|i| (i % 199) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    site_a
        .run(&["import", "--no-progress", disk.to_str().unwrap(), "vm"])
        .ok();
    site_a.run(&["snap", "create", "vm@base"]).ok();
    site_a
        .run(&[
            "bench",
            "vm",
            "--io-type",
            "write",
            "--io-total",
            "1M",
            "--format",
            "json",
        ])
        .ok();
    site_a.run(&["snap", "create", "vm@later"]).ok();

    let spec = r#"{"type":"native","pool_name":"rbd","image_name":"vm","snap_name":"later"}"#;
    let probe = site_a
        .run(&["source", "probe", "--source-spec", spec, "--format", "json"])
        .ok()
        .json();
    assert_eq!(probe["format"], "native");
    assert_eq!(probe["size"], 3 << 20);
    assert_eq!(probe["snapshots"][0]["name"], "base");
    let missing = r#"{"type":"native","pool_name":"rbd","image_name":"vm"}"#;
    site_a
        .run(&["source", "probe", "--source-spec", missing])
        .fails(22, "snap name or snap id required");

    // Site B reads site A's image through an rbdx config naming A's data directory.
    let site_b = Rbdx::new();
    let conf = dir.path().join("site-a.conf");
    std::fs::write(
        &conf,
        format!(
            "[cluster]\nbackend = \"dir\"\ndata_dir = \"{}\"\n",
            site_a.path().display()
        ),
    )
    .unwrap();
    let remote = format!(
        r#"{{"type":"native","cluster_name":"{}","pool_id":1,"image_name":"vm","snap_name":"base"}}"#,
        conf.display()
    );
    let out = dir.path().join("base.raw");
    site_b
        .run(&[
            "source",
            "export",
            "--source-spec",
            &remote,
            out.to_str().unwrap(),
            "--no-progress",
        ])
        .ok();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&disk).unwrap());
}
