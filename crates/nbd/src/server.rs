//! The listening side: accepts connections on TCP or a unix socket, runs each one's
//! handshake and transmission as a task, and shuts down cleanly.
//!
//! A failing connection (bad magic, an oversized write, a client that vanishes) is logged and
//! closed; every other connection goes on. On stop, the server stops accepting, lets every
//! connection finish the requests it has in flight, flushes every export and closes the
//! images, which releases their exclusive locks and watches.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Error;
use crate::export::Exports;

/// Where the server listens.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A unix socket, removed again when the server stops.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds a TCP address such as `127.0.0.1:10809` (port 0 picks a free port).
    pub async fn bind_tcp(addr: &str) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Bind(addr.to_owned(), e))?;
        Ok(Listener::Tcp(listener))
    }

    /// Binds a unix socket at `path`, which must not exist yet.
    pub fn bind_unix(path: &Path) -> Result<Self, Error> {
        let listener =
            UnixListener::bind(path).map_err(|e| Error::Bind(path.display().to_string(), e))?;
        Ok(Listener::Unix(listener, path.to_owned()))
    }

    /// Returns the address clients connect to: `HOST:PORT` or the socket path.
    pub fn address(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".to_owned()),
            Listener::Unix(_, path) => path.display().to_string(),
        }
    }

    /// Returns the NBD URI of export `name` on this listener.
    pub fn uri(&self, name: &str) -> String {
        match self {
            Listener::Tcp(_) => format!("nbd://{}/{name}", self.address()),
            Listener::Unix(_, path) => format!("nbd+unix:///{name}?socket={}", path.display()),
        }
    }
}

/// An NBD server for a fixed set of exports.
#[derive(Debug)]
pub struct Server {
    exports: Exports,
    connections: AtomicU64,
}

impl Server {
    /// Creates a server for `exports`.
    pub fn new(exports: Exports) -> Self {
        Server {
            exports,
            connections: AtomicU64::new(0),
        }
    }

    /// Returns the exports.
    pub fn exports(&self) -> &Exports {
        &self.exports
    }

    /// Accepts and serves connections until `stop` completes, then lets the connections
    /// finish their requests in flight and flushes every export.
    pub async fn serve(
        &self,
        listener: Listener,
        stop: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                _ = &mut stop => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                a = accept(&listener) => a,
            };
            let (conn, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("nbd: accepting a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let n = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
            let peer = format!("connection {n} from {peer}");
            tracing::info!("nbd: {peer}");
            let exports = self.exports.clone();
            let stop = stop_rx.clone();
            tasks.spawn(async move {
                let result = match conn {
                    Conn::Tcp(s) => {
                        let _ = s.set_nodelay(true);
                        let (r, w) = s.into_split();
                        connection(r, w, &exports, stop, &peer).await
                    }
                    Conn::Unix(s) => {
                        let (r, w) = s.into_split();
                        connection(r, w, &exports, stop, &peer).await
                    }
                };
                match result {
                    Ok(()) => tracing::info!("nbd: {peer} closed"),
                    Err(e) => tracing::warn!("nbd: {peer}: {e}; connection closed"),
                }
            });
        }
        let _ = stop_tx.send(true);
        listener_cleanup(listener);
        // Connections still in the handshake have nothing in flight: give the others time
        // to answer what they have, then drop what is left.
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(std::time::Duration::from_secs(30), drain)
            .await
            .is_err()
        {
            tracing::warn!("nbd: connections still busy after 30 s; closing them");
            tasks.shutdown().await;
        }
        self.flush().await
    }

    /// Flushes every writable export.
    pub async fn flush(&self) -> Result<(), Error> {
        for export in self.exports.iter().filter(|e| !e.read_only()) {
            export.image().flush().await?;
        }
        Ok(())
    }

    /// Closes every image (releasing exclusive locks and watches).
    pub async fn close(self) -> Result<(), Error> {
        let mut first = None;
        for export in self.exports.iter() {
            if let Err(e) = export.image().clone().close().await {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<(Conn, String)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            Ok((Conn::Tcp(s), addr.to_string()))
        }
        Listener::Unix(l, path) => {
            let (s, _) = l.accept().await?;
            Ok((Conn::Unix(s), path.display().to_string()))
        }
    }
}

/// Removes a unix socket's path once the server no longer listens on it.
fn listener_cleanup(listener: Listener) {
    if let Listener::Unix(l, path) = listener {
        drop(l);
        let _ = std::fs::remove_file(path);
    }
}

async fn connection<R, W>(
    mut r: R,
    mut w: W,
    exports: &Exports,
    stop: watch::Receiver<bool>,
    peer: &str,
) -> Result<(), Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let handshake = crate::handshake::negotiate(&mut r, &mut w, exports);
    let session = match tokio::time::timeout(std::time::Duration::from_secs(60), handshake).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(Error::Protocol(
                "no export chosen within 60 s of connecting".to_owned(),
            ));
        }
    };
    let Some(session) = session else {
        return Ok(());
    };
    tracing::info!("nbd: {peer} uses export {}", session.export.name());
    crate::transmission::serve(session, r, w, stop, peer).await
}
