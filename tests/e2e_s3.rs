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

#[test]
fn the_s3_stream_passes_the_conformance_kit() {
    use rbdx_source::testkit::{Subject, after_change, conformance};
    use rbdx_source::{OpenContext, Registry, StreamFactory as _};
    let Some(gw) = Gateway::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..(5u32 << 20) + 99)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 9) as u8)
        .collect();
    let new: Vec<u8> = data.iter().map(|b| b ^ 0x55).collect();
    let (old_file, new_file) = (dir.path().join("old.raw"), dir.path().join("new.raw"));
    std::fs::write(&old_file, &data).unwrap();
    std::fs::write(&new_file, &new).unwrap();
    let bucket = gw.bucket("kit");
    gw.curl("PUT", &format!("/{bucket}/disk.raw"), Some(&old_file));
    let spec = gw.stream(&bucket, "disk.raw", &gw.secret);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ctx = OpenContext::new(std::sync::Arc::new(Registry::new()));
        let stream = rbdx_stream_s3::S3StreamFactory
            .open(spec.as_object().unwrap(), &ctx)
            .await
            .unwrap();
        let subject = Subject::Stream(std::sync::Arc::from(stream));
        conformance(&subject, &data).await;
        // The object is replaced under the open stream (its ETag changes).
        after_change(
            &subject,
            || gw.curl("PUT", &format!("/{bucket}/disk.raw"), Some(&new_file)),
            &data,
            &new,
        )
        .await;
    });
}
