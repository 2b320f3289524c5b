//! The `http` stream: `{"type": "http", "url": "http(s)://…"}`, with the rbdx extension key
//! `rbdx_ca_file` (a PEM file of CA certificates to trust, e.g. for a self-signed server).
//!
//! - The size comes from `HEAD` (`Content-Length`), or from a `GET` of byte 0 when `HEAD`
//!   gives none; a server that does not honour ranges (answers a ranged `GET` with the whole
//!   body) is refused with a clear error.
//! - Reads are ranged `GET`s over a keep-alive connection pool, several in flight;
//!   redirects are followed.
//! - The first response's `ETag` (or `Last-Modified`) is pinned and sent as `If-Match` (or
//!   `If-Unmodified-Since`); a source that changes meanwhile makes reads fail with `Changed`
//!   instead of mixing two versions.
//! - Timeouts, resets and 5xx answers are retried with exponential backoff; 4xx answers are
//!   not.

#![warn(missing_docs, missing_debug_implementations)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_source::spec::redact_url;
use rbdx_source::{
    BufferPool, Error, ErrorKind, OpenContext, PooledBuf, Result, SpecReader, Stream,
    StreamFactory, StreamRegistration, check_range,
};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode};
use serde_json::{Map, Value};

/// Attempts per request (the first try and the retries).
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(30);

/// Opens `http` streams.
#[derive(Debug)]
pub struct HttpStreamFactory;

rbdx_source::inventory::submit! { StreamRegistration(&HttpStreamFactory) }

/// Adds authentication to each request (e.g. S3's signatures) just before it is sent.
pub trait Authorizer: Send + Sync + std::fmt::Debug {
    /// Adds the headers that authenticate a `method` request for `url` carrying `headers`.
    fn authorize(&self, method: &str, url: &reqwest::Url, headers: &mut HeaderMap) -> Result<()>;
}

/// An object on an HTTP(S) server.
#[derive(Debug)]
pub struct HttpStream {
    client: Client,
    url: String,
    parsed: reqwest::Url,
    size: u64,
    /// The validator pinned at open: (header to send, value).
    pin: Option<(header::HeaderName, HeaderValue)>,
    ca_file: Option<String>,
    auth: Option<Arc<dyn Authorizer>>,
}

/// Builds a request with `headers`, authorized if the stream has an authorizer.
fn build(
    client: &Client,
    method: reqwest::Method,
    url: &reqwest::Url,
    mut headers: HeaderMap,
    auth: Option<&Arc<dyn Authorizer>>,
) -> Result<reqwest::RequestBuilder> {
    if let Some(auth) = auth {
        auth.authorize(method.as_str(), url, &mut headers)?;
    }
    Ok(client.request(method, url.clone()).headers(headers))
}

fn range_headers(range: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(range) {
        h.insert(header::RANGE, v);
    }
    h
}

/// Builds a client, trusting the CA certificates in `ca_file` in addition to the system's.
pub fn client(ca_file: Option<&str>) -> Result<Client> {
    // The ring provider; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(16);
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| Error::io(format!("cannot read CA file {path}"), e))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            Error::invalid(format!("CA file {path} holds no PEM certificates: {e}"))
        })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot set up the HTTP client: {e}")))
}

/// Describes a transport error in one line, with its causes.
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn status_error(url: &str, status: StatusCode) -> Error {
    let kind = match status {
        StatusCode::NOT_FOUND | StatusCode::GONE => ErrorKind::NotFound,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::PermissionDenied,
        StatusCode::PRECONDITION_FAILED => ErrorKind::Changed,
        _ => ErrorKind::Io,
    };
    let what = if kind == ErrorKind::Changed {
        format!("{} changed while it was being read", redact_url(url))
    } else {
        format!("{}: HTTP {status}", redact_url(url))
    };
    Error::new(kind, what)
}

/// Sends the request `make` builds, retrying transport errors and 5xx answers (a request is
/// built, and signed, anew for every attempt).
async fn send(
    url: &str,
    make: impl Fn() -> Result<reqwest::RequestBuilder>,
) -> Result<reqwest::Response> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let last = attempt == ATTEMPTS;
        match make()?.send().await {
            Ok(resp) if resp.status().is_server_error() && !last => {
                tracing::debug!("{}: HTTP {}, retrying", redact_url(url), resp.status());
            }
            Ok(resp) => return Ok(resp),
            Err(e)
                if !last && (e.is_timeout() || e.is_connect() || e.is_request() || e.is_body()) =>
            {
                tracing::debug!("{}: {}, retrying", redact_url(url), chain(&e));
            }
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("{}: {}", redact_url(url), chain(&e)),
                ));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

fn pin_of(headers: &HeaderMap) -> Option<(header::HeaderName, HeaderValue)> {
    if let Some(etag) = headers.get(header::ETAG) {
        return Some((header::IF_MATCH, etag.clone()));
    }
    headers
        .get(header::LAST_MODIFIED)
        .map(|lm| (header::IF_UNMODIFIED_SINCE, lm.clone()))
}

/// Parses `Content-Range: bytes a-b/total` and returns the total.
fn content_range_total(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    v.rsplit('/').next()?.trim().parse().ok()
}

impl HttpStream {
    /// Opens `url`: finds its size and pins its version.
    pub async fn open(url: &str, ca_file: Option<String>) -> Result<HttpStream> {
        HttpStream::open_with(url, ca_file, None).await
    }

    /// Opens `url` with requests authorized by `auth`.
    pub async fn open_with(
        url: &str,
        ca_file: Option<String>,
        auth: Option<Arc<dyn Authorizer>>,
    ) -> Result<HttpStream> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::invalid(format!(
                "http stream url '{}' must start with http:// or https://",
                redact_url(url)
            )));
        }
        let client = client(ca_file.as_deref())?;
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::invalid(format!("invalid url '{}': {e}", redact_url(url))))?;
        let auth_ref = auth.as_ref();
        let head = send(url, || {
            build(
                &client,
                reqwest::Method::HEAD,
                &parsed,
                HeaderMap::new(),
                auth_ref,
            )
        })
        .await?;
        if !head.status().is_success() && head.status() != StatusCode::METHOD_NOT_ALLOWED {
            return Err(status_error(url, head.status()));
        }
        let pin = pin_of(head.headers());
        let head_len = head
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // A ranged GET of the first byte proves range support (and gives the size when HEAD
        // did not).
        let probe = send(url, || {
            build(
                &client,
                reqwest::Method::GET,
                &parsed,
                range_headers("bytes=0-0"),
                auth_ref,
            )
        })
        .await?;
        let size = match probe.status() {
            StatusCode::PARTIAL_CONTENT => content_range_total(probe.headers())
                .or(head_len)
                .ok_or_else(|| Error::invalid(format!("{} gives no size", redact_url(url))))?,
            StatusCode::RANGE_NOT_SATISFIABLE => content_range_total(probe.headers()).unwrap_or(0),
            StatusCode::OK => {
                return Err(Error::unsupported(format!(
                    "{} does not support range requests (it answered a ranged GET with the whole object)",
                    redact_url(url)
                )));
            }
            other => return Err(status_error(url, other)),
        };
        let pin = pin.or_else(|| pin_of(probe.headers()));
        Ok(HttpStream {
            client,
            url: url.to_owned(),
            parsed,
            size,
            pin,
            ca_file,
            auth,
        })
    }
}

#[async_trait]
impl StreamFactory for HttpStreamFactory {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn open(&self, spec: &Map<String, Value>, _ctx: &OpenContext) -> Result<Box<dyn Stream>> {
        let mut r = SpecReader::new(spec, "http stream");
        let url = r.str("url")?;
        let ca_file = r.opt_str("rbdx_ca_file")?;
        r.finish()?;
        Ok(Box::new(HttpStream::open(&url, ca_file).await?))
    }
}

/// Copies a response body into a pooled buffer of `length` bytes; returns the buffer and how
/// many bytes the body had (more than `length` are counted, not kept).
async fn read_body(
    mut resp: reqwest::Response,
    length: usize,
) -> reqwest::Result<(PooledBuf, usize)> {
    let mut buf = BufferPool::global().take(length);
    let mut got = 0;
    while let Some(chunk) = resp.chunk().await? {
        let end = got + chunk.len();
        if end <= length {
            buf[got..end].copy_from_slice(&chunk);
        }
        got = end;
    }
    Ok((buf, got))
}

#[async_trait]
impl Stream for HttpStream {
    fn describe(&self) -> String {
        redact_url(&self.url)
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.size)
    }

    async fn read(&self, offset: u64, length: u64) -> Result<Bytes> {
        check_range(self, offset, length, self.size)?;
        if length == 0 {
            return Ok(Bytes::new());
        }
        let range = format!("bytes={}-{}", offset, offset + length - 1);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let resp = send(&self.url, || {
                let mut headers = range_headers(&range);
                if let Some((name, value)) = &self.pin {
                    headers.insert(name.clone(), value.clone());
                }
                build(
                    &self.client,
                    reqwest::Method::GET,
                    &self.parsed,
                    headers,
                    self.auth.as_ref(),
                )
            })
            .await?;
            let status = resp.status();
            if status != StatusCode::PARTIAL_CONTENT {
                return Err(if status == StatusCode::OK {
                    Error::unsupported(format!(
                        "{} stopped honouring range requests",
                        redact_url(&self.url)
                    ))
                } else {
                    status_error(&self.url, status)
                });
            }
            if let (Some((name, pinned)), Some(now)) = (&self.pin, resp.headers().get(header::ETAG))
                && *name == header::IF_MATCH
                && now != pinned
            {
                return Err(status_error(&self.url, StatusCode::PRECONDITION_FAILED));
            }
            // A connection dropped in the middle of the body is retried like a reset.
            match read_body(resp, length as usize).await {
                Ok((body, got)) if got == length as usize => return Ok(body.freeze()),
                Ok((_, got)) if attempt >= ATTEMPTS => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!(
                            "{}: got {got} bytes of {range}, expected {length}",
                            redact_url(&self.url),
                        ),
                    ));
                }
                Err(e) if attempt >= ATTEMPTS => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("{}: {}", redact_url(&self.url), chain(&e)),
                    ));
                }
                _ => tracing::debug!(
                    "{}: short body for {range}, retrying",
                    redact_url(&self.url)
                ),
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    fn relative(&self, name: &str) -> Result<Map<String, Value>> {
        let base = reqwest::Url::parse(&self.url)
            .map_err(|e| Error::invalid(format!("{}: {e}", redact_url(&self.url))))?;
        let joined = base.join(name).map_err(|e| {
            Error::invalid(format!(
                "cannot resolve '{name}' against {}: {e}",
                redact_url(&self.url)
            ))
        })?;
        let mut spec = Map::new();
        spec.insert("type".into(), Value::String("http".into()));
        spec.insert("url".into(), Value::String(joined.to_string()));
        if let Some(ca) = &self.ca_file {
            spec.insert("rbdx_ca_file".into(), Value::String(ca.clone()));
        }
        Ok(spec)
    }
}
