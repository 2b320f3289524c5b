//! A gateway running in a thread of the test process, and the conformance harness that
//! connects `remote` sessions to it (child processes included).

#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rbdx_objstore::ObjectStore;
use rbdx_objstore::testkit::{Capabilities, Harness, SelfExec, Spawner};
use rbdx_peer::{
    Gateway, GatewayOptions, Identity, Keys, Profile, RemoteConfig, RemoteStore, SessionSource,
};

/// The environment variable that tells child processes where the gateway is.
pub const GATEWAY_ENV: &str = "RBDX_TEST_GATEWAY";

/// How long the test gateway keeps a session whose connection dropped.
pub const GRACE: Duration = Duration::from_secs(2);

/// A gateway serving on 127.0.0.1 from its own thread and runtime.
pub struct TestGateway {
    /// `127.0.0.1:PORT`.
    pub endpoint: String,
    /// The certificate's fingerprint.
    pub fingerprint: String,
    /// An `rw` key's secret, base64.
    pub key: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestGateway {
    /// Starts a gateway in front of `source`, with an `rw` key `client.test`.
    pub fn start(source: Arc<dyn SessionSource>) -> TestGateway {
        TestGateway::start_with(source, GRACE)
    }

    /// Starts a gateway that keeps a dropped client's session for `grace`.
    pub fn start_with(source: Arc<dyn SessionSource>, grace: Duration) -> TestGateway {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let admin = source.open().await.expect("admin session");
                let key = Keys::new(admin.clone())
                    .create("test", Profile::Rw, vec![])
                    .await
                    .expect("key");
                let identity = Identity::generate().expect("certificate");
                let opts = GatewayOptions {
                    session_grace: grace,
                    ..GatewayOptions::default()
                };
                let gw = Gateway::new(source, admin, &identity, opts).expect("gateway");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let endpoint = listener.local_addr().expect("address").to_string();
                ready_tx
                    .send((endpoint, gw.fingerprint().to_owned(), key.secret))
                    .expect("ready");
                gw.serve(listener, async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("serve");
            });
        });
        let (endpoint, fingerprint, key) = ready_rx.recv().expect("gateway started");
        TestGateway {
            endpoint,
            fingerprint,
            key,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Returns the client configuration of the `rw` key.
    pub fn config(&self) -> RemoteConfig {
        RemoteConfig::new(&self.endpoint, &self.fingerprint, "client.test", &self.key)
            .expect("config")
    }

    /// Returns what child processes need to connect, as one line.
    pub fn env_line(&self) -> String {
        format!("{} {} {}", self.endpoint, self.fingerprint, self.key)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from a child process, reading [`GATEWAY_ENV`].
pub async fn connect_from_env() -> Arc<dyn ObjectStore> {
    let line = std::env::var(GATEWAY_ENV).expect("gateway location");
    let mut parts = line.split(' ');
    let (endpoint, fingerprint, key) = (
        parts.next().expect("endpoint"),
        parts.next().expect("fingerprint"),
        parts.next().expect("key"),
    );
    let cfg = RemoteConfig::new(endpoint, fingerprint, "client.test", key).expect("config");
    Arc::new(
        RemoteStore::connect(cfg)
            .await
            .expect("connecting to the gateway"),
    )
}

/// The conformance harness: `remote` sessions on a gateway in front of some store.
pub struct RemoteHarness {
    pub gateway: TestGateway,
    spawner: SelfExec,
}

impl RemoteHarness {
    /// Serves `source` and connects sessions to it; children run test `child_test`.
    pub fn new(source: Arc<dyn SessionSource>, child_test: &str) -> RemoteHarness {
        let gateway = TestGateway::start(source);
        let env = vec![(GATEWAY_ENV.to_owned(), gateway.env_line())];
        RemoteHarness {
            spawner: SelfExec::new(child_test, env),
            gateway,
        }
    }
}

#[async_trait]
impl Harness for RemoteHarness {
    async fn connect(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            RemoteStore::connect(self.gateway.config())
                .await
                .expect("connecting to the gateway"),
        )
    }

    fn spawner(&self) -> Option<&dyn Spawner> {
        Some(&self.spawner)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // A killed client's session lives on for the grace period, then the store's own
            // rules apply.
            dead_session_grace: GRACE + Duration::from_secs(3),
            ..Capabilities::default()
        }
    }
}

/// An authenticated connection without the client's machinery around it, for tests that send
/// frames a well-behaved client never would.
pub async fn raw_session(
    gw: &TestGateway,
) -> (rbdx_peer::client::TlsReader, rbdx_peer::client::TlsWriter) {
    let (reader, writer, _welcome) = rbdx_peer::client::open(&gw.config(), None)
        .await
        .expect("connecting to the gateway");
    (reader, writer)
}
