//! Serves rbdx images over NBD, the block protocol that QEMU, libnbd (`nbdinfo`, `nbdcopy`)
//! and the Linux kernel speak.
//!
//! - [`proto`]: the wire format.
//! - [`Export`] / [`Exports`]: images served under names (one open image per export, shared by
//!   every connection to it).
//! - [`Server`] / [`Listener`]: accepts connections on TCP or a unix socket, negotiates the
//!   fixed newstyle handshake (`NBD_OPT_GO`, `INFO`, `LIST`, `ABORT`, structured replies and
//!   the `base:allocation` meta context), and serves `READ`, `WRITE` (with `FUA`), `FLUSH`,
//!   `TRIM`, `WRITE_ZEROES` (with `NO_HOLE` and `FAST_ZERO`), `BLOCK_STATUS` and `DISC`, many
//!   requests in flight per connection.
//!
//! An image under migration is served like any other: its reads fall through to the source
//! and its first writes copy objects up, in the image layer.
//!
//! ```no_run
//! use rbdx_image::{Images, OpenOptions};
//! use rbdx_nbd::{Export, Exports, Listener, Server};
//!
//! # async fn serve(images: Images) -> Result<(), Box<dyn std::error::Error>> {
//! let image = images.open("vm1", OpenOptions::default()).await?;
//! let server = Server::new(Exports::new(vec![Export::new("rbd/vm1", image, false)])?);
//! let listener = Listener::bind_tcp("127.0.0.1:10809").await?;
//! server.serve(listener, std::future::pending()).await?;
//! server.close().await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs, missing_debug_implementations)]

mod export;
mod handshake;
pub mod proto;
mod server;
mod transmission;

pub use export::{Export, Exports};
pub use server::{Listener, Server};

/// What went wrong in the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading from or writing to a client failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The listening address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(String, #[source] std::io::Error),
    /// The client broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A message could not be parsed.
    #[error("protocol error: {0}")]
    Malformed(#[from] proto::ProtoError),
    /// Two exports have the same name.
    #[error("export {0} is given twice")]
    DuplicateExport(String),
    /// An image operation failed outside a request (flush or close at shutdown).
    #[error(transparent)]
    Image(#[from] rbdx_image::Error),
}
