//! The handshake after TLS: version negotiation and mutual proof of a named key's secret.
//!
//! ```text
//! client                                    gateway
//!   | Hello(min, max, key name, nonce_c, resume?) |
//!   |------------------------------------------->|
//!   |          Challenge(version, nonce_s)        |
//!   |<-------------------------------------------|
//!   | Auth(HMAC(secret, "client" | E | name | nonce_c | nonce_s))
//!   |------------------------------------------->|   checks the proof
//!   | Welcome(HMAC(secret, "server" | ...), session, limits)
//!   |<-------------------------------------------|   client checks the proof
//! ```
//!
//! `E` is 32 bytes of TLS exporter material (RFC 8446 §7.5) of this connection, so a proof
//! is worth nothing on any other connection; the secret itself never crosses the wire.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use rbdx_objstore::ClientInfo;
use sha2::Sha256;

use crate::codec::{DecodeResult, Reader, Writer, invalid};
use crate::wire::{get_client, put_client};

/// The length of a key's secret.
pub const SECRET_LEN: usize = 32;
/// The label of the TLS exporter material proofs are bound to.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-rbdx-peer-v1";

/// A session to resume after a lost connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The session id.
    pub session: u64,
    /// The session's token, given by the gateway in `Welcome`.
    pub token: [u8; 16],
}

/// The client's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The oldest protocol version the client speaks.
    pub min_version: u8,
    /// The newest protocol version the client speaks.
    pub max_version: u8,
    /// The key the client authenticates with.
    pub key_name: String,
    /// The client's nonce.
    pub nonce: [u8; 32],
    /// The session to resume, if any.
    pub resume: Option<Resume>,
    /// Whether the client wants zstd-compressed frames.
    pub compress: bool,
}

impl Hello {
    /// Encodes the message.
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.u8(self.min_version);
        w.u8(self.max_version);
        w.str(&self.key_name);
        w.raw(&self.nonce);
        w.option(self.resume, |w, r| {
            w.u64(r.session);
            w.raw(&r.token);
        });
        w.bool(self.compress);
        w.finish()
    }

    /// Decodes the message.
    pub fn decode(payload: Bytes) -> DecodeResult<Hello> {
        let mut r = Reader::new(payload);
        let hello = Hello {
            min_version: r.u8()?,
            max_version: r.u8()?,
            key_name: r.str()?,
            nonce: r.raw()?,
            resume: r.option(|r| {
                Ok(Resume {
                    session: r.u64()?,
                    token: r.raw()?,
                })
            })?,
            compress: r.bool()?,
        };
        r.end()?;
        if hello.min_version > hello.max_version {
            return invalid("hello offers an empty range of versions");
        }
        Ok(hello)
    }
}

/// The gateway's answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The protocol version both speak, which every later frame carries.
    pub version: u8,
    /// The gateway's nonce.
    pub nonce: [u8; 32],
}

impl Challenge {
    /// Encodes the message.
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.u8(self.version);
        w.raw(&self.nonce);
        w.finish()
    }

    /// Decodes the message.
    pub fn decode(payload: Bytes) -> DecodeResult<Challenge> {
        let mut r = Reader::new(payload);
        let c = Challenge {
            version: r.u8()?,
            nonce: r.raw()?,
        };
        r.end()?;
        Ok(c)
    }
}

/// The gateway's last handshake message: its proof, the session, and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The gateway's proof of the secret.
    pub proof: [u8; 32],
    /// The session id.
    pub session: u64,
    /// The token that resumes the session.
    pub token: [u8; 16],
    /// True if an earlier session was resumed (its watches, locks and request table kept).
    pub resumed: bool,
    /// The session's identity in the store.
    pub client: ClientInfo,
    /// The most requests the client may have in flight.
    pub max_requests: u32,
    /// The most request payload bytes the client may have in flight.
    pub window: u64,
    /// Whether frames of this connection may be compressed.
    pub compress: bool,
}

impl Welcome {
    /// Encodes the message.
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.raw(&self.proof);
        w.u64(self.session);
        w.raw(&self.token);
        w.bool(self.resumed);
        put_client(&mut w, &self.client);
        w.u32(self.max_requests);
        w.u64(self.window);
        w.bool(self.compress);
        w.finish()
    }

    /// Decodes the message.
    pub fn decode(payload: Bytes) -> DecodeResult<Welcome> {
        let mut r = Reader::new(payload);
        let w = Welcome {
            proof: r.raw()?,
            session: r.u64()?,
            token: r.raw()?,
            resumed: r.bool()?,
            client: get_client(&mut r)?,
            max_requests: r.u32()?,
            window: r.u64()?,
            compress: r.bool()?,
        };
        r.end()?;
        Ok(w)
    }
}

/// Which side a proof comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's proof (in `Auth`).
    Client,
    /// The gateway's proof (in `Welcome`).
    Server,
}

/// Computes a proof of `secret` for this connection.
pub fn proof(
    secret: &[u8],
    side: Side,
    exporter: &[u8; 32],
    key_name: &str,
    client_nonce: &[u8; 32],
    server_nonce: &[u8; 32],
) -> [u8; 32] {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(match side {
        Side::Client => b"rbdx-peer v1 client",
        Side::Server => b"rbdx-peer v1 server",
    });
    mac.update(exporter);
    mac.update(&(key_name.len() as u32).to_le_bytes());
    mac.update(key_name.as_bytes());
    mac.update(client_nonce);
    mac.update(server_nonce);
    mac.finalize().into_bytes().into()
}

/// Compares two proofs in constant time.
pub fn proofs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Returns `N` random bytes from the operating system.
pub fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    if getrandom::fill(&mut out).is_err() {
        // Without the operating system's generator nothing here can be secret; fail loudly.
        panic!("the operating system's random number generator failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_messages_round_trip() {
        let hello = Hello {
            min_version: 1,
            max_version: 1,
            key_name: "client.site-b".into(),
            nonce: [7; 32],
            resume: Some(Resume {
                session: 9,
                token: [1; 16],
            }),
            compress: true,
        };
        assert_eq!(Hello::decode(hello.encode()), Ok(hello));
        let welcome = Welcome {
            proof: [2; 32],
            session: 4,
            token: [3; 16],
            resumed: false,
            client: ClientInfo {
                id: rbdx_objstore::ClientId(5),
                addr: "x".into(),
            },
            max_requests: 64,
            window: 1 << 20,
            compress: false,
        };
        assert_eq!(Welcome::decode(welcome.encode()), Ok(welcome));
    }

    #[test]
    fn proofs_depend_on_secret_side_and_connection() {
        let e = [1; 32];
        let a = proof(b"secret", Side::Client, &e, "k", &[2; 32], &[3; 32]);
        assert!(proofs_equal(
            &a,
            &proof(b"secret", Side::Client, &e, "k", &[2; 32], &[3; 32])
        ));
        assert!(!proofs_equal(
            &a,
            &proof(b"secret", Side::Server, &e, "k", &[2; 32], &[3; 32])
        ));
        assert!(!proofs_equal(
            &a,
            &proof(b"other", Side::Client, &e, "k", &[2; 32], &[3; 32])
        ));
        assert!(!proofs_equal(
            &a,
            &proof(b"secret", Side::Client, &[9; 32], "k", &[2; 32], &[3; 32])
        ));
    }
}
