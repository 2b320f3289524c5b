//! The s3 stream against a real, signature-checking S3 server on 127.0.0.1: moto's server
//! (`moto_server`, with authentication switched on after the three calls that create a user
//! and its key). Without `moto_server` the test says it was skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rbdx_source::{ErrorKind, OpenContext, Registry};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SETUP: &str = r#"
import boto3, json, sys
url = sys.argv[1]
iam = boto3.client('iam', endpoint_url=url, region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x')
iam.create_user(UserName='rbdx')
iam.put_user_policy(UserName='rbdx', PolicyName='all', PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
k = iam.create_access_key(UserName='rbdx')['AccessKey']
s3 = boto3.client('s3', endpoint_url=url, region_name='us-east-1',
                  aws_access_key_id=k['AccessKeyId'], aws_secret_access_key=k['SecretAccessKey'])
s3.create_bucket(Bucket='images')
s3.put_object(Bucket='images', Key='dir/disk 1.raw', Body=bytes((i * 7) % 251 for i in range(1 << 20)))
print(k['AccessKeyId'], k['SecretAccessKey'])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_ranged_reads_against_a_signature_checking_server() {
    if Command::new("moto_server").arg("--help").output().is_err() {
        eprintln!("skipped: moto_server is not installed (pip install 'moto[server]')");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _moto = Moto(
        Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut keys = None;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let out = Command::new("python3")
                .args(["-c", SETUP, &url])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            keys = Some(String::from_utf8(out.stdout).unwrap());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let keys = keys.expect("moto_server did not start");
    let (access, secret) = keys.trim().split_once(' ').unwrap();
    let mut registry = Registry::new();
    registry.register_stream(Arc::new(rbdx_stream_s3::S3StreamFactory));
    let ctx = OpenContext::new(Arc::new(registry));
    let spec = |secret: &str| {
        serde_json::json!({"type": "s3", "url": format!("{url}/images/dir/disk%201.raw"),
                           "access_key": access, "secret_key": secret})
        .as_object()
        .unwrap()
        .clone()
    };
    let stream = ctx
        .registry()
        .open_stream(&spec(secret), &ctx)
        .await
        .unwrap();
    assert_eq!(stream.size().await.unwrap(), 1 << 20);
    let got = stream.read(1000, 5000).await.unwrap();
    let expected: Vec<u8> = (1000..6000).map(|i| ((i * 7) % 251) as u8).collect();
    assert_eq!(got.as_ref(), expected.as_slice());
    assert!(!stream.describe().contains(secret));

    let e = ctx
        .registry()
        .open_stream(&spec("wrong"), &ctx)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let mut missing = spec(secret);
    missing.remove("secret_key");
    let e = ctx
        .registry()
        .open_stream(&missing, &ctx)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing the 'secret_key'"), "{e}");
}
