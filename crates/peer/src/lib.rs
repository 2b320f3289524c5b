//! The rbdx peer protocol: how one site serves its store to another through one TCP port.
//!
//! - [`frame`]: the versioned, CRC-checked frames on the wire (inside TLS 1.3 from the
//!   first byte), [`codec`] and [`wire`] for the fields inside them, [`message`] for the
//!   requests, answers and events.
//! - [`handshake`]: version negotiation and the mutual proof of a named key's secret.
//! - [`tls`]: the gateway's certificate and the client's fingerprint pinning.
//! - [`keys`] and [`caps`]: the gateway's keys and what each profile may do.
//! - [`server`]: the gateway; [`client`]: the `remote` object-store backend.
//!
//! `docs/design/peer-protocol.md` describes the protocol for implementers.

#![warn(missing_docs, missing_debug_implementations)]

pub mod caps;
pub mod client;
pub mod codec;
pub mod conn;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod keys;
pub mod message;
pub mod served;
pub mod server;
pub mod tls;
pub mod wire;

pub use client::{RemoteBackend, RemoteConfig, RemoteStore};
pub use keys::{KeyRecord, Keys, Profile};
pub use server::{BackendSource, Gateway, GatewayOptions, SessionSource, stored_identity};
pub use tls::Identity;
