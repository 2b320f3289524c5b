//! The `s3` stream through the CLI against a real S3 gateway that checks signatures: Ceph RGW,
//! started by `tests/ceph/micro-cluster.sh rgw` (which `cargo xtask ci` runs), named by
//! `RBDX_TEST_S3_URL`, `RBDX_TEST_S3_ACCESS_KEY` and `RBDX_TEST_S3_SECRET_KEY`. The object is
//! uploaded with curl's own SigV4 signing, so the test's setup does not depend on our signer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Rbdx;
use common::s3::Gateway;

#[test]
fn s3_sources_are_read_with_signed_ranged_requests() {
    let Some(gw) = Gateway::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 9 MiB and a bit: several ranged reads, the last one short.
    let data: Vec<u8> = (0..(9u32 << 20) + 4321)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let file = dir.path().join("disk.raw");
    std::fs::write(&file, &data).unwrap();
    let bucket = format!("rbdx-{}", std::process::id());
    gw.curl("PUT", &format!("/{bucket}"), None);
    gw.curl("PUT", &format!("/{bucket}/dir/disk%201.raw"), Some(&file));

    let rbdx = Rbdx::new();
    rbdx.run(&["config-key", "set", "s3/secret", &gw.secret])
        .ok();
    let url = format!("{}/{bucket}/dir/disk%201.raw", gw.url);
    let spec = |secret: &str| {
        serde_json::json!({"type": "raw", "stream": {"type": "s3", "url": url,
            "access_key": gw.access, "secret_key": secret}})
        .to_string()
    };

    let out = dir.path().join("out.raw");
    rbdx.run(&[
        "source",
        "export",
        "--no-progress",
        "--source-spec",
        &spec("config://s3/secret"),
        out.to_str().unwrap(),
    ])
    .ok();
    assert!(
        std::fs::read(&out).unwrap() == data,
        "exported bytes differ"
    );

    let probe = rbdx.run(&[
        "source",
        "probe",
        "--format",
        "json",
        "--source-spec",
        &spec(&gw.secret),
    ]);
    let probe = probe.ok();
    assert!(!probe.stdout.contains(&gw.secret), "{}", probe.stdout);
    let json = probe.json();
    assert_eq!(json["size"], data.len() as u64);
    assert_eq!(json["spec"]["stream"]["secret_key"], "<redacted>");

    rbdx.run(&["source", "probe", "--source-spec", &spec("wrong")])
        .fails(13, "403");
    let missing = serde_json::json!({"type": "raw",
        "stream": {"type": "s3", "url": url, "access_key": gw.access}})
    .to_string();
    rbdx.run(&["source", "probe", "--source-spec", &missing])
        .fails(22, "missing the 'secret_key'");
}
