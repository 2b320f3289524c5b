//! The S3 gateway the tests run against: Ceph RGW, started by `tests/ceph/micro-cluster.sh rgw`
//! (which `cargo xtask ci` runs) and named by `RBDX_TEST_S3_URL`, `RBDX_TEST_S3_ACCESS_KEY` and
//! `RBDX_TEST_S3_SECRET_KEY`. Objects are uploaded with curl's own SigV4 signing, so the tests'
//! setup does not depend on rbdx's signer.

use std::path::Path;
use std::process::Command;

/// An S3 endpoint and a user's keys.
pub struct Gateway {
    pub url: String,
    pub access: String,
    pub secret: String,
}

impl Gateway {
    /// Returns the gateway, or `None` after saying why the test is skipped (under `CI=true` it
    /// fails instead).
    pub fn from_env() -> Option<Gateway> {
        let hint = "no S3 gateway to test against (tests/ceph/micro-cluster.sh rgw DIR writes \
                    DIR/rgw.env)";
        let url = rbdx_objstore::testkit::external("RBDX_TEST_S3_URL", hint)?;
        Some(Gateway {
            url,
            access: std::env::var("RBDX_TEST_S3_ACCESS_KEY").expect("RBDX_TEST_S3_ACCESS_KEY"),
            secret: std::env::var("RBDX_TEST_S3_SECRET_KEY").expect("RBDX_TEST_S3_SECRET_KEY"),
        })
    }

    /// Sends a signed request with curl; `upload` is a file to PUT as the body.
    pub fn curl(&self, method: &str, path: &str, upload: Option<&Path>) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sSf", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .arg(format!("{}:{}", self.access, self.secret))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-X", method]);
        if let Some(file) = upload {
            cmd.arg("-T").arg(file);
        }
        let out = cmd.arg(format!("{}{path}", self.url)).output().unwrap();
        assert!(
            out.status.success(),
            "curl {method} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates a bucket named after `tag` and this process, and returns its name.
    pub fn bucket(&self, tag: &str) -> String {
        let bucket = format!("rbdx-{tag}-{}", std::process::id());
        self.curl("PUT", &format!("/{bucket}"), None);
        bucket
    }

    /// Returns the stream spec of object `key` of `bucket`, signed with `secret`.
    pub fn stream(&self, bucket: &str, key: &str, secret: &str) -> serde_json::Value {
        serde_json::json!({"type": "s3", "url": format!("{}/{bucket}/{key}", self.url),
            "access_key": self.access, "secret_key": secret})
    }
}
