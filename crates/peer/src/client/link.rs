//! One connection from a client to a gateway: connect, TLS with the pinned certificate, the
//! handshake, then a reader task that routes answers and events, and a keepalive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rbdx_objstore::{Error, ErrorKind, Notification, Subject, WatchEvent};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::client::RemoteConfig;
use crate::conn::{ConnError, FrameReader, Outgoing, outgoing, outgoing_rope, write_loop};
use crate::frame::{Frame, FrameType, VERSION};
use crate::handshake::{self, Challenge, EXPORTER_LABEL, Hello, Resume, Side, Welcome};
use crate::message::{Event, Reply, decode_fatal, decode_response};
use crate::tls::{self, Pinned, SERVER_NAME};

/// How often a client pings an idle connection.
const PING_EVERY: Duration = Duration::from_secs(5);
/// How long a connection may be silent (pings unanswered) before it counts as dead.
const SILENCE: Duration = Duration::from_secs(20);

/// What became of a request on a link.
#[derive(Debug)]
pub enum Answer {
    /// The gateway answered.
    Reply(Result<Reply, Error>),
    /// The connection ended before the answer came.
    Lost(Error),
}

/// The client's watches by the gateway's cookie, shared by its links.
pub type Watches = Arc<Mutex<WatchTable>>;

/// Where events of each watch go.
#[derive(Debug, Default)]
pub struct WatchTable {
    /// Changes whenever the session changes (every watch is dropped then).
    pub generation: u64,
    sinks: HashMap<u64, mpsc::UnboundedSender<WatchEvent>>,
    /// Events that came before the answer to their `watch` was handled.
    early: Vec<(u64, WatchEvent)>,
}

/// How many early events are kept at most.
const EARLY_KEPT: usize = 256;

impl WatchTable {
    /// Adds a watch and hands it the events that came before it.
    pub fn add(&mut self, cookie: u64, sink: mpsc::UnboundedSender<WatchEvent>) {
        let early = std::mem::take(&mut self.early);
        for (c, ev) in early {
            if c == cookie {
                let _ = sink.send(ev);
            } else {
                self.early.push((c, ev));
            }
        }
        self.sinks.insert(cookie, sink);
    }

    /// Removes a watch.
    pub fn remove(&mut self, cookie: u64) -> Option<mpsc::UnboundedSender<WatchEvent>> {
        self.sinks.remove(&cookie)
    }

    /// Removes every watch (the session changed).
    pub fn drain(&mut self) -> Vec<mpsc::UnboundedSender<WatchEvent>> {
        self.early.clear();
        self.generation += 1;
        self.sinks.drain().map(|(_, s)| s).collect()
    }

    fn send(&mut self, cookie: u64, ev: WatchEvent) {
        match self.sinks.get(&cookie) {
            Some(sink) => {
                let _ = sink.send(ev);
            }
            None => {
                if self.early.len() >= EARLY_KEPT {
                    self.early.remove(0);
                }
                self.early.push((cookie, ev));
            }
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn err(kind: ErrorKind, detail: String) -> Error {
    Error::new(kind, Subject::Store).with_detail(detail)
}

/// An established, authenticated connection.
#[derive(Debug)]
pub struct Link {
    tx: mpsc::Sender<Outgoing>,
    pending: Pending,
    /// The gateway's welcome: session, identity and limits.
    pub welcome: Welcome,
    compress: bool,
    reader: JoinHandle<()>,
    pinger: JoinHandle<()>,
    dead: Arc<Mutex<Option<String>>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
        self.pinger.abort();
    }
}

impl Link {
    /// Returns true once the connection has ended.
    pub fn is_dead(&self) -> bool {
        lock(&self.dead).is_some() || self.reader.is_finished()
    }

    /// Returns the session to ask for when reconnecting.
    pub fn resume(&self) -> Resume {
        Resume {
            session: self.welcome.session,
            token: self.welcome.token,
        }
    }

    /// Sends request `id` and waits for its answer.
    pub async fn call(&self, id: u64, payload: Vec<Bytes>) -> Answer {
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        if let Some(why) = lock(&self.dead).clone() {
            lock(&self.pending).remove(&id);
            return Answer::Lost(err(ErrorKind::Io, why));
        }
        let out = match outgoing_rope(FrameType::Request, id, payload, self.compress) {
            Ok(o) => o,
            Err(e) => {
                lock(&self.pending).remove(&id);
                return Answer::Reply(Err(err(ErrorKind::InvalidArgument, e.0)));
            }
        };
        if self.tx.send(out).await.is_err() {
            lock(&self.pending).remove(&id);
            return Answer::Lost(err(
                ErrorKind::Io,
                "the connection to the gateway closed".into(),
            ));
        }
        rx.await.unwrap_or_else(|_| {
            Answer::Lost(err(
                ErrorKind::Io,
                "the connection to the gateway closed".into(),
            ))
        })
    }

    /// Ends the session at the gateway at once (rather than after its grace period).
    pub fn bye(&self) {
        let frame = Frame::new(FrameType::Bye, 0, Bytes::new());
        if let Ok(mut out) = outgoing(&frame, false) {
            out.last = true;
            let _ = self.tx.try_send(out);
        }
    }
}

/// The reading side of an authenticated connection.
pub type TlsReader = FrameReader<ReadHalf<TlsStream<TcpStream>>>;
/// The writing side of an authenticated connection.
pub type TlsWriter = WriteHalf<TlsStream<TcpStream>>;

/// Connects to the gateway of `cfg` (TCP, TLS with the pinned certificate) and authenticates,
/// resuming `resume` if the gateway still has it. Returns both sides of the connection, ready
/// for frames, and the gateway's welcome. The `remote` backend builds its links on this; tests
/// use it to send frames no well-behaved client would.
pub async fn open(
    cfg: &RemoteConfig,
    resume: Option<Resume>,
) -> Result<(TlsReader, TlsWriter, Welcome), Error> {
    let endpoint = &cfg.endpoint;
    let tcp = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(endpoint)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(err(
                ErrorKind::ConnectionRefused,
                format!("no gateway is listening at {endpoint}"),
            ));
        }
        Ok(Err(e)) => {
            return Err(err(
                ErrorKind::Io,
                format!("cannot reach the gateway at {endpoint}: {e}"),
            ));
        }
        Err(_) => {
            return Err(err(
                ErrorKind::TimedOut,
                format!(
                    "cannot reach the gateway at {endpoint} within {:?}",
                    cfg.connect_timeout
                ),
            ));
        }
    };
    let _ = tcp.set_nodelay(true);
    let pinned = Arc::new(Pinned::new(cfg.fingerprint.clone()));
    let connector = TlsConnector::from(tls::client_config(pinned.clone())?);
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)
        .map_err(|e| err(ErrorKind::InvalidArgument, e.to_string()))?;
    let tls = match tokio::time::timeout(cfg.connect_timeout, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            return Err(match pinned.refused() {
                Some(seen) => err(
                    ErrorKind::PermissionDenied,
                    format!(
                        "the gateway at {endpoint} presents certificate {seen}, not the configured \
                         fingerprint {}",
                        cfg.fingerprint
                    ),
                ),
                None => err(
                    ErrorKind::Protocol,
                    format!("{endpoint} is not an rbdx gateway (TLS handshake failed: {e})"),
                ),
            });
        }
        Err(_) => {
            return Err(err(
                ErrorKind::Protocol,
                format!("{endpoint} did not complete a TLS handshake: not an rbdx gateway?"),
            ));
        }
    };
    let mut exporter = [0u8; 32];
    tls.get_ref()
        .1
        .export_keying_material(&mut exporter, EXPORTER_LABEL, None)
        .map_err(|e| err(ErrorKind::Protocol, format!("TLS exporter: {e}")))?;
    let (read, mut write) = tokio::io::split(tls);
    let mut reader = FrameReader::new(read);
    let handshake = async {
        let nonce = handshake::random::<32>();
        let hello = Hello {
            min_version: VERSION,
            max_version: VERSION,
            key_name: cfg.name.clone(),
            nonce,
            resume,
            compress: cfg.compress,
        };
        write_frame(
            &mut write,
            Frame::new(FrameType::Hello, 0, hello.encode()),
            endpoint,
        )
        .await?;
        let challenge = expect(&mut reader, FrameType::Challenge, endpoint).await?;
        let challenge = Challenge::decode(challenge.payload).map_err(|e| {
            err(
                ErrorKind::Protocol,
                format!("bad challenge from {endpoint}: {e}"),
            )
        })?;
        let proof = |side| {
            handshake::proof(
                &cfg.secret,
                side,
                &exporter,
                &cfg.name,
                &nonce,
                &challenge.nonce,
            )
        };
        let auth = Frame::new(FrameType::Auth, 0, proof(Side::Client).to_vec());
        write_frame(&mut write, auth, endpoint).await?;
        let welcome = expect(&mut reader, FrameType::Welcome, endpoint).await?;
        let welcome = Welcome::decode(welcome.payload).map_err(|e| {
            err(
                ErrorKind::Protocol,
                format!("bad welcome from {endpoint}: {e}"),
            )
        })?;
        if !handshake::proofs_equal(&proof(Side::Server), &welcome.proof) {
            return Err(err(
                ErrorKind::PermissionDenied,
                format!(
                    "the gateway at {endpoint} could not prove it holds key {}",
                    cfg.name
                ),
            ));
        }
        Ok(welcome)
    };
    let welcome = match tokio::time::timeout(cfg.connect_timeout, handshake).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(err(
                ErrorKind::TimedOut,
                format!("the gateway at {endpoint} did not finish the handshake"),
            ));
        }
    };
    reader.open(welcome.compress);
    Ok((reader, write, welcome))
}

/// Writes one handshake frame.
async fn write_frame(write: &mut TlsWriter, frame: Frame, endpoint: &str) -> Result<(), Error> {
    let bytes =
        crate::frame::encode(&frame, false).map_err(|e| err(ErrorKind::InvalidArgument, e.0))?;
    write.write_all(&bytes).await.map_err(|e| {
        err(
            ErrorKind::Protocol,
            format!("{endpoint} closed the connection during the handshake: {e}"),
        )
    })
}

/// Connects to the gateway of `cfg`, resuming `resume` if the gateway still has it.
pub async fn connect(
    cfg: &RemoteConfig,
    resume: Option<Resume>,
    watches: Watches,
) -> Result<Link, Error> {
    let endpoint = &cfg.endpoint;
    let (reader, write, welcome) = open(cfg, resume).await?;
    let (tx, rx) = mpsc::channel::<Outgoing>(1024);
    tokio::spawn(write_loop(write, rx, cfg.bandwidth_limit));
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let dead = Arc::new(Mutex::new(None));
    let compress = welcome.compress;
    let reader = tokio::spawn(read_loop(
        reader,
        pending.clone(),
        watches,
        tx.clone(),
        dead.clone(),
        compress,
        endpoint.clone(),
    ));
    let pinger = tokio::spawn({
        let tx = tx.clone();
        async move {
            let mut n = 0u64;
            loop {
                tokio::time::sleep(PING_EVERY).await;
                n += 1;
                if tx.send(ping(n)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(Link {
        tx,
        pending,
        welcome,
        compress,
        reader,
        pinger,
        dead,
    })
}

fn ping(n: u64) -> Outgoing {
    match outgoing(&Frame::new(FrameType::Ping, n, Bytes::new()), false) {
        Ok(o) => o,
        Err(_) => Outgoing {
            chunks: Vec::new(),
            permits: Vec::new(),
            last: false,
        },
    }
}

/// Reads the next handshake frame, which must be `want`; an `Error` frame is the gateway's
/// refusal.
async fn expect<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    want: FrameType,
    endpoint: &str,
) -> Result<Frame, Error> {
    match reader.next().await {
        Ok(f) if f.kind == want => Ok(f),
        Ok(f) if f.kind == FrameType::Error => Err(decode_fatal(f.payload).unwrap_or_else(|e| {
            err(
                ErrorKind::Protocol,
                format!("unreadable error from {endpoint}: {e}"),
            )
        })),
        Ok(f) => Err(err(
            ErrorKind::Protocol,
            format!("{endpoint} sent {:?} during the handshake", f.kind),
        )),
        Err(ConnError::Closed) => Err(err(
            ErrorKind::Protocol,
            format!("{endpoint} closed the connection during the handshake"),
        )),
        Err(e) => Err(err(ErrorKind::Protocol, format!("{endpoint}: {e}"))),
    }
}

async fn read_loop<R: tokio::io::AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    pending: Pending,
    watches: Watches,
    tx: mpsc::Sender<Outgoing>,
    dead: Arc<Mutex<Option<String>>>,
    compress: bool,
    endpoint: String,
) {
    let why = loop {
        let frame = match tokio::time::timeout(SILENCE, reader.next()).await {
            Ok(Ok(f)) => f,
            Ok(Err(ConnError::Closed)) => {
                break format!("the gateway at {endpoint} closed the connection");
            }
            Ok(Err(e)) => break format!("connection to the gateway at {endpoint}: {e}"),
            Err(_) => break format!("the gateway at {endpoint} stopped answering"),
        };
        match frame.kind {
            FrameType::Response => {
                let answer = match decode_response(frame.payload) {
                    Ok(r) => Answer::Reply(r),
                    Err(e) => break format!("bad response from {endpoint}: {e}"),
                };
                if let Some(waiter) = lock(&pending).remove(&frame.id) {
                    let _ = waiter.send(answer);
                }
            }
            FrameType::Event => match Event::decode(frame.payload) {
                Ok(ev) => deliver(&watches, frame.id, ev, &tx, compress),
                Err(e) => break format!("bad event from {endpoint}: {e}"),
            },
            FrameType::Pong | FrameType::Ping => {}
            FrameType::Error => {
                break match decode_fatal(frame.payload) {
                    Ok(e) => format!("the gateway at {endpoint} closed the connection: {e}"),
                    Err(e) => format!("unreadable error from {endpoint}: {e}"),
                };
            }
            other => break format!("unexpected {other:?} frame from {endpoint}"),
        }
    };
    tracing::debug!("{why}");
    *lock(&dead) = Some(why.clone());
    let waiters: Vec<oneshot::Sender<Answer>> = lock(&pending).drain().map(|(_, w)| w).collect();
    for w in waiters {
        let _ = w.send(Answer::Lost(err(ErrorKind::Io, why.clone())));
    }
}

/// Hands an event to the watch it belongs to.
fn deliver(watches: &Watches, cookie: u64, ev: Event, tx: &mpsc::Sender<Outgoing>, compress: bool) {
    match ev {
        Event::Notify {
            notify_id,
            notifier,
            payload,
            ack_id,
        } => {
            let (reply_tx, reply_rx) = oneshot::channel();
            let n = Notification::new(notify_id, notifier, payload, reply_tx);
            lock(watches).send(cookie, WatchEvent::Notify(n));
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(reply) = reply_rx.await
                    && let Ok(out) =
                        outgoing(&Frame::new(FrameType::NotifyAck, ack_id, reply), compress)
                {
                    let _ = tx.send(out).await;
                }
            });
        }
        Event::Lost(e) => {
            let mut table = lock(watches);
            match table.remove(cookie) {
                Some(sink) => {
                    let _ = sink.send(WatchEvent::Disconnected(e));
                }
                None => table.send(cookie, WatchEvent::Disconnected(e)),
            }
        }
    }
}
