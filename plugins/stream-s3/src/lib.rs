//! The `s3` stream: an object of any S3-compatible server (Ceph RGW, MinIO, AWS), read with
//! SigV4-signed ranged `GET`s.
//!
//! ```json
//! {"type": "s3", "url": "http(s)://host[:port]/bucket/key",
//!  "access_key": "<key or config://…>", "secret_key": "<key or config://…>"}
//! ```
//!
//! URLs are path-style, as Ceph's. rbdx extension keys: `rbdx_region` (the signing region,
//! default `us-east-1`) and `rbdx_ca_file` (CAs to trust). Everything else — size, retries,
//! version pinning, the refusal of servers without range support — is the `http` stream's.
//! Keys never appear in messages; give them as `config://` references to keep them out of
//! specs too.

#![warn(missing_docs, missing_debug_implementations)]

pub mod sigv4;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rbdx_source::{
    Error, OpenContext, Result, SpecReader, Stream, StreamFactory, StreamRegistration,
};
use rbdx_stream_http::{Authorizer, HttpStream};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Map, Value};

/// Opens `s3` streams.
#[derive(Debug)]
pub struct S3StreamFactory;

rbdx_source::inventory::submit! { StreamRegistration(&S3StreamFactory) }

/// Signs requests with an access key pair.
struct SigV4 {
    access: String,
    secret: String,
    region: String,
}

impl std::fmt::Debug for SigV4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigV4(access key <redacted>, region {})", self.region)
    }
}

impl Authorizer for SigV4 {
    fn authorize(&self, method: &str, url: &reqwest::Url, headers: &mut HeaderMap) -> Result<()> {
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(Error::invalid("s3 url has no host")),
        };
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let amz_date = sigv4::amz_date(secs);
        let range = headers
            .get(reqwest::header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let path = sigv4::encode_path(&percent_decode(url.path()));
        let auth = sigv4::authorization(
            &sigv4::Request {
                method,
                host: &host,
                path: &path,
                range: range.as_deref(),
                amz_date: &amz_date,
            },
            &self.access,
            &self.secret,
            &self.region,
        );
        let value = |s: &str| {
            HeaderValue::from_str(s)
                .map_err(|_| Error::invalid("s3 signature is not a valid header"))
        };
        headers.insert("x-amz-date", value(&amz_date)?);
        headers.insert("x-amz-content-sha256", value(sigv4::EMPTY_SHA256)?);
        headers.insert(reqwest::header::AUTHORIZATION, value(&auth)?);
        Ok(())
    }
}

/// Undoes the percent-encoding a URL parser applied, so the path is encoded exactly once.
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[async_trait]
impl StreamFactory for S3StreamFactory {
    fn name(&self) -> &'static str {
        "s3"
    }

    async fn open(&self, spec: &Map<String, Value>, _ctx: &OpenContext) -> Result<Box<dyn Stream>> {
        let mut r = SpecReader::new(spec, "s3 stream");
        let url = r.str("url")?;
        let access = r.str("access_key")?;
        let secret = r.str("secret_key")?;
        let region = r
            .opt_str("rbdx_region")?
            .unwrap_or_else(|| "us-east-1".into());
        let ca_file = r.opt_str("rbdx_ca_file")?;
        r.finish()?;
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| Error::invalid(format!("invalid s3 url '{url}': {e}")))?;
        if parsed
            .path_segments()
            .is_none_or(|s| s.filter(|p| !p.is_empty()).count() < 2)
        {
            return Err(Error::invalid(format!(
                "s3 url '{url}' must be path-style: http(s)://host/bucket/key"
            )));
        }
        let auth = Arc::new(SigV4 {
            access,
            secret,
            region,
        });
        let http = HttpStream::open_with(&url, ca_file, Some(auth.clone())).await?;
        Ok(Box::new(S3Stream { http, auth }))
    }
}

/// An S3 object: the http stream with signed requests, whose relative names (backing files)
/// are S3 objects signed with the same keys.
#[derive(Debug)]
struct S3Stream {
    http: HttpStream,
    auth: Arc<SigV4>,
}

#[async_trait]
impl Stream for S3Stream {
    fn describe(&self) -> String {
        self.http.describe()
    }

    async fn size(&self) -> Result<u64> {
        self.http.size().await
    }

    async fn read(&self, offset: u64, length: u64) -> Result<bytes::Bytes> {
        self.http.read(offset, length).await
    }

    async fn extents(&self, offset: u64, length: u64) -> Result<Vec<rbdx_source::Extent>> {
        self.http.extents(offset, length).await
    }

    fn relative(&self, name: &str) -> Result<Map<String, Value>> {
        let mut spec = self.http.relative(name)?;
        spec.insert("type".into(), Value::String("s3".into()));
        spec.insert("access_key".into(), Value::String(self.auth.access.clone()));
        spec.insert("secret_key".into(), Value::String(self.auth.secret.clone()));
        spec.insert(
            "rbdx_region".into(),
            Value::String(self.auth.region.clone()),
        );
        Ok(spec)
    }
}
