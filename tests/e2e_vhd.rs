//! The `vhd` format plugin (`plugins/format-vhd`), built as a shared library and loaded from
//! the plugin directory: what it reads equals `qemu-img convert -O raw` for fixed and dynamic
//! disks of both sizing rules, holes stay holes, damaged images fail with a clear error,
//! import-only migration works from it, a qcow2 image with a VHD backing file reads through
//! it, and without the plugin `vhd` is an unknown format.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Rbdx;

/// Builds the plugin into its own target directory; returns a directory holding only it.
fn plugin_dir() -> (tempfile::TempDir, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target/vhd-plugin-e2e");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "-q", "-p", "rbdx-format-vhd", "--target-dir"])
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success(), "building the vhd plugin failed");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        target.join("debug/librbdx_format_vhd.so"),
        dir.path().join("librbdx_format_vhd.so"),
    )
    .unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    (dir, path)
}

fn tool(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn spec(format: &str, file: &Path) -> String {
    serde_json::json!({
        "type": format,
        "stream": {"type": "file", "file_path": file.to_str().unwrap()},
    })
    .to_string()
}

/// Makes a VHD of `subformat` with scattered writes (holes inside blocks, blocks never
/// written) and returns it with qemu's raw conversion of it.
fn make_vhd(dir: &Path, subformat: &str, force_size: &str) -> (PathBuf, Vec<u8>) {
    let vhd = dir.join(format!("{subformat}-{force_size}.vhd"));
    let v = vhd.to_str().unwrap();
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            &format!("subformat={subformat},force_size={force_size}"),
            v,
            "21M",
        ],
    );
    let mut args = vec!["-f".to_owned(), "vpc".to_owned()];
    for (i, (at, len)) in [
        (0u64, 65536u64),
        (3 << 20, 100_000),
        (9 << 20, 4096),
        (20 << 20, 512),
    ]
    .iter()
    .enumerate()
    {
        args.push("-c".into());
        args.push(format!("write -P {} {at} {len}", 0x11 * (i + 1)));
    }
    args.push(v.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tool("qemu-io", &args);
    let raw = dir.join(format!("{subformat}-{force_size}.raw"));
    tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "vpc",
            "-O",
            "raw",
            v,
            raw.to_str().unwrap(),
        ],
    );
    (vhd, std::fs::read(&raw).unwrap())
}

#[test]
fn vhd_images_read_as_qemu_reads_them_once_the_plugin_is_loaded() {
    let rbdx = Rbdx::new();
    let (_plugins, plugins) = plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    for subformat in ["fixed", "dynamic"] {
        for force_size in ["on", "off"] {
            let (vhd, expected) = make_vhd(dir.path(), subformat, force_size);
            let spec = spec("vhd", &vhd);
            let what = format!("{subformat}, force_size={force_size}");
            rbdx.run(&["source", "probe", "--source-spec", &spec])
                .fails(38, "unknown or unsupported format type 'vhd'");
            let probe = rbdx
                .run(&[
                    "--plugin-dir",
                    &plugins,
                    "source",
                    "probe",
                    "--source-spec",
                    &spec,
                    "--format",
                    "json",
                ])
                .ok()
                .json();
            assert_eq!(probe["format"], "vhd");
            assert_eq!(probe["size"], expected.len() as u64, "{what}");
            if subformat == "dynamic" {
                // Four 2 MiB blocks written (the last one ends with the disk); the rest
                // are holes.
                let last = expected.len() as u64 - (20 << 20);
                assert_eq!(probe["allocated"], 3 * (2 << 20) + last, "{what}");
            }
            let out = dir.path().join(format!("{subformat}-{force_size}.out"));
            rbdx.run(&[
                "--plugin-dir",
                &plugins,
                "source",
                "export",
                "--no-progress",
                "--source-spec",
                &spec,
                out.to_str().unwrap(),
            ])
            .ok();
            assert!(std::fs::read(&out).unwrap() == expected, "{what} differs");
        }
    }
}

#[test]
fn import_only_migration_from_a_vhd_fills_the_image_in_the_background() {
    let rbdx = Rbdx::new();
    let (_plugins, plugins) = plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    let (vhd, expected) = make_vhd(dir.path(), "dynamic", "on");
    let spec = spec("vhd", &vhd);
    let with = |args: &[&str]| {
        let mut all = vec!["--plugin-dir", plugins.as_str()];
        all.extend_from_slice(args);
        rbdx.run(&all).ok()
    };
    with(&[
        "migration",
        "prepare",
        "--import-only",
        "--source-spec",
        &spec,
        "vm",
    ]);
    // Usable at once: reads go through to the VHD.
    let early = dir.path().join("early.raw");
    with(&["export", "--no-progress", "vm", early.to_str().unwrap()]);
    assert!(std::fs::read(&early).unwrap() == expected);
    with(&["migration", "execute", "--no-progress", "vm"]);
    with(&["migration", "commit", "vm"]);
    let done = dir.path().join("done.raw");
    rbdx.run(&["export", "--no-progress", "vm", done.to_str().unwrap()])
        .ok();
    assert!(std::fs::read(&done).unwrap() == expected);
    // Holes stayed holes: only the three 4 MiB objects the writes fall in exist (of six).
    let du = rbdx.run(&["du", "vm", "--format", "json"]).ok().json();
    let used = du["images"][0]["used_size"].as_u64().unwrap();
    assert!(used <= 12 << 20, "{du}");
}

#[test]
fn a_qcow2_image_on_a_vhd_backing_file_reads_through_the_plugin() {
    let rbdx = Rbdx::new();
    let (_plugins, plugins) = plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    let (vhd, _) = make_vhd(dir.path(), "dynamic", "off");
    let top = dir.path().join("top.qcow2");
    let t = top.to_str().unwrap();
    // A backing file named relative to the image, as rbdx follows without being told.
    let status = Command::new("qemu-img")
        .current_dir(dir.path())
        .args(["create", "-q", "-f", "qcow2", "-b"])
        .arg(vhd.file_name().unwrap())
        .args(["-F", "vpc", "top.qcow2"])
        .status()
        .unwrap();
    assert!(status.success());
    tool("qemu-io", &["-c", "write -P 0x77 1M 8k", t]);
    let expected_raw = dir.path().join("top.raw");
    tool(
        "qemu-img",
        &["convert", "-O", "raw", t, expected_raw.to_str().unwrap()],
    );
    let expected = std::fs::read(&expected_raw).unwrap();
    let export = |name: &str| {
        let out = dir.path().join(name);
        rbdx.run(&[
            "--plugin-dir",
            &plugins,
            "source",
            "export",
            "--no-progress",
            "--source-spec",
            &spec("qcow", &top),
            out.to_str().unwrap(),
        ])
        .ok();
        std::fs::read(&out).unwrap()
    };
    assert!(export("named.out") == expected, "backing format named vpc");
    // Without the backing format recorded, the backing file is probed by its magic.
    let mut bytes = std::fs::read(&top).unwrap();
    let magic = 0xE279_2ACAu32.to_be_bytes();
    let at = bytes[..65536]
        .windows(4)
        .position(|w| w == magic)
        .expect("a backing format extension");
    bytes[at..at + 4].copy_from_slice(&0x0BAD_0BADu32.to_be_bytes());
    std::fs::write(&top, bytes).unwrap();
    assert!(export("probed.out") == expected, "backing file probed");
}

#[test]
fn damaged_vhd_images_are_refused_with_what_is_wrong() {
    let rbdx = Rbdx::new();
    let (_plugins, plugins) = plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    let probe = |file: &Path| {
        rbdx.run(&[
            "--plugin-dir",
            &plugins,
            "source",
            "probe",
            "--source-spec",
            &spec("vhd", file),
        ])
    };
    // A footer whose checksum does not match (a fixed disk's footer is at the end).
    let (fixed, _) = make_vhd(dir.path(), "fixed", "on");
    let mut bytes = std::fs::read(&fixed).unwrap();
    let n = bytes.len();
    bytes[n - 512 + 48] ^= 0x40;
    std::fs::write(&fixed, &bytes).unwrap();
    probe(&fixed).fails(22, "corrupt VHD footer: its checksum");
    // A BAT entry pointing past the end of the file.
    let (dynamic, _) = make_vhd(dir.path(), "dynamic", "on");
    let mut bytes = std::fs::read(&dynamic).unwrap();
    let header = u64::from_be_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let bat = u64::from_be_bytes(bytes[header + 16..header + 24].try_into().unwrap()) as usize;
    bytes[bat + 4..bat + 8].copy_from_slice(&0x00FF_0000u32.to_be_bytes());
    std::fs::write(&dynamic, &bytes).unwrap();
    probe(&dynamic).fails(22, "corrupt VHD BAT: block 1");
    // Not a VHD at all.
    let plain = dir.path().join("plain.bin");
    std::fs::write(&plain, vec![0u8; 1 << 20]).unwrap();
    probe(&plain).fails(22, "not a VHD");
}
