//! The `lock` object class (advisory locks), called through `rados_exec` so that tags,
//! descriptions, leases and renewals all reach it; the C API exposes only part of it.
//!
//! Requests and replies use Ceph's encoding: little-endian integers, strings as `u32` length
//! and bytes, and versioned structures framed as `u8 version, u8 compat, u32 length, body`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rbdx_objstore::{ClientId, ClientInfo, LockKind, LockOptions};

/// `ClsLockType` values.
const EXCLUSIVE: u8 = 1;
const SHARED: u8 = 2;
/// `LOCK_FLAG_MAY_RENEW`.
const MAY_RENEW: u8 = 1;
/// `CEPH_ENTITY_TYPE_CLIENT`.
const ENTITY_CLIENT: u8 = 8;

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn utime(&mut self, d: Duration) -> &mut Self {
        self.u32(d.as_secs() as u32).u32(d.subsec_nanos())
    }
    /// Frames the body written by `body` as a version-1 structure.
    fn versioned(&mut self, body: impl FnOnce(&mut Enc)) -> &mut Self {
        let mut inner = Enc::default();
        body(&mut inner);
        self.u8(1).u8(1).u32(inner.0.len() as u32);
        self.0.extend_from_slice(&inner.0);
        self
    }
}

/// Encodes `cls_lock_lock_op`.
pub(crate) fn lock_op(opts: &LockOptions) -> Vec<u8> {
    let mut e = Enc::default();
    e.versioned(|e| {
        let kind = match opts.kind {
            LockKind::Exclusive => EXCLUSIVE,
            LockKind::Shared => SHARED,
        };
        e.str(&opts.name)
            .u8(kind)
            .str(&opts.cookie)
            .str(&opts.tag)
            .str(&opts.description);
        e.utime(opts.duration.unwrap_or(Duration::ZERO));
        e.u8(if opts.renew { MAY_RENEW } else { 0 });
    });
    e.0
}

/// Encodes `cls_lock_unlock_op`.
pub(crate) fn unlock_op(name: &str, cookie: &str) -> Vec<u8> {
    let mut e = Enc::default();
    e.versioned(|e| {
        e.str(name).str(cookie);
    });
    e.0
}

/// Encodes `cls_lock_break_op`.
pub(crate) fn break_op(name: &str, client: ClientId, cookie: &str) -> Vec<u8> {
    let mut e = Enc::default();
    e.versioned(|e| {
        e.str(name)
            .u8(ENTITY_CLIENT)
            .i64(client.0 as i64)
            .str(cookie);
    });
    e.0
}

/// Encodes `cls_lock_get_info_op`.
pub(crate) fn get_info_op(name: &str) -> Vec<u8> {
    let mut e = Enc::default();
    e.versioned(|e| {
        e.str(name);
    });
    e.0
}

/// Why a reply could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

struct Dec<'a> {
    b: &'a [u8],
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.b.len() < n {
            return Err(Malformed);
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u16_be(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Result<i64, Malformed> {
        let b = self.take(8)?;
        Ok(i64::from_le_bytes(b.try_into().map_err(|_| Malformed)?))
    }
    fn str(&mut self) -> Result<String, Malformed> {
        let n = self.u32()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    /// Enters a versioned structure and returns a decoder over its body.
    fn versioned(&mut self) -> Result<Dec<'a>, Malformed> {
        let _version = self.u8()?;
        let _compat = self.u8()?;
        let len = self.u32()? as usize;
        Ok(Dec { b: self.take(len)? })
    }
    /// Decodes an `entity_addr_t` into `ip:port/nonce` (or what can be told of it).
    fn addr(&mut self) -> Result<String, Malformed> {
        match self.u8()? {
            0 => {
                self.take(3)?;
                let nonce = self.u32()?;
                let mut ss = Dec { b: self.take(128)? };
                Ok(sockaddr(&mut ss, nonce, "").unwrap_or_else(|_| format!("-/{nonce}")))
            }
            1 => {
                let mut body = self.versioned()?;
                let kind = body.u32()?;
                let nonce = body.u32()?;
                let len = body.u32()? as usize;
                let mut sa = Dec { b: body.take(len)? };
                let prefix = match kind {
                    1 => "v1:",
                    2 => "v2:",
                    _ => "",
                };
                Ok(sockaddr(&mut sa, nonce, prefix).unwrap_or_else(|_| format!("-/{nonce}")))
            }
            _ => Err(Malformed),
        }
    }
}

fn sockaddr(sa: &mut Dec<'_>, nonce: u32, prefix: &str) -> Result<String, Malformed> {
    let family = sa.u16_be()?;
    let port = sa.u16_be()?;
    match family as i32 {
        libc::AF_INET => {
            let ip = sa.take(4)?;
            Ok(format!(
                "{prefix}{}.{}.{}.{}:{port}/{nonce}",
                ip[0], ip[1], ip[2], ip[3]
            ))
        }
        libc::AF_INET6 => {
            sa.take(4)?;
            let ip: [u8; 16] = sa.take(16)?.try_into().map_err(|_| Malformed)?;
            Ok(format!(
                "{prefix}[{}]:{port}/{nonce}",
                std::net::Ipv6Addr::from(ip)
            ))
        }
        _ => Ok(format!("{prefix}-/{nonce}")),
    }
}

/// One holder, as `get_info` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) client: ClientInfo,
    pub(crate) cookie: String,
    pub(crate) description: String,
    pub(crate) expiration: Option<SystemTime>,
}

/// A decoded `cls_lock_get_info_reply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Info {
    pub(crate) kind: Option<LockKind>,
    pub(crate) tag: String,
    pub(crate) holders: Vec<Holder>,
}

/// Decodes a `get_info` reply.
pub(crate) fn decode_info(bytes: &[u8]) -> Result<Info, Malformed> {
    let mut top = Dec { b: bytes };
    let mut d = top.versioned()?;
    let count = d.u32()?;
    let mut holders = Vec::new();
    for _ in 0..count {
        let mut id = d.versioned()?;
        let _kind = id.u8()?;
        let num = id.i64()?;
        let cookie = id.str()?;
        let mut info = d.versioned()?;
        let (sec, nsec) = (info.u32()?, info.u32()?);
        let addr = info.addr()?;
        let description = info.str()?;
        let expiration =
            (sec != 0 || nsec != 0).then(|| UNIX_EPOCH + Duration::new(u64::from(sec), nsec));
        holders.push(Holder {
            client: ClientInfo {
                id: ClientId(num as u64),
                addr,
            },
            cookie,
            description,
            expiration,
        });
    }
    let kind = match d.u8()? {
        EXCLUSIVE | 3 => Some(LockKind::Exclusive),
        SHARED => Some(LockKind::Shared),
        _ => None,
    };
    let tag = d.str()?;
    Ok(Info {
        kind: if holders.is_empty() { None } else { kind },
        tag,
        holders,
    })
}

/// Decodes a `list_locks` reply.
pub(crate) fn decode_list(bytes: &[u8]) -> Result<Vec<String>, Malformed> {
    let mut top = Dec { b: bytes };
    let mut d = top.versioned()?;
    let count = d.u32()?;
    (0..count).map(|_| d.str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_op_is_framed_as_version_one() {
        let opts = LockOptions::new("L", LockKind::Shared, "c")
            .with_tag("t")
            .with_renew(true);
        let bytes = lock_op(&opts);
        assert_eq!(&bytes[..2], &[1, 1]);
        let len = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
        assert_eq!(len, bytes.len() - 6);
        assert_eq!(bytes[6..10], 1u32.to_le_bytes());
        assert_eq!(bytes[10], b'L');
        assert_eq!(bytes[11], SHARED);
        assert_eq!(*bytes.last().unwrap(), MAY_RENEW);
    }

    /// A `get_info` reply with one exclusive holder, as the lock class encodes it.
    fn sample_info() -> Vec<u8> {
        let mut e = Enc::default();
        e.versioned(|e| {
            e.u32(1);
            e.versioned(|e| {
                e.u8(ENTITY_CLIENT).i64(4242).str("cookie");
            });
            e.versioned(|e| {
                e.utime(Duration::from_secs(100));
                e.u8(1).versioned(|e| {
                    e.u32(2).u32(77).u32(16);
                    e.0.extend_from_slice(&(libc::AF_INET as u16).to_be_bytes());
                    e.0.extend_from_slice(&6800u16.to_be_bytes());
                    e.0.extend_from_slice(&[127, 0, 0, 1]);
                    e.0.extend_from_slice(&[0; 8]);
                });
                e.str("held by a");
            });
            e.u8(EXCLUSIVE).str("");
        });
        e.0
    }

    #[test]
    fn info_reply_decodes_holders() {
        let bytes = sample_info();
        let info = decode_info(&bytes).unwrap();
        assert_eq!(info.kind, Some(LockKind::Exclusive));
        assert_eq!(
            info.holders[0].client,
            ClientInfo {
                id: ClientId(4242),
                addr: "v2:127.0.0.1:6800/77".into()
            }
        );
        assert_eq!(info.holders[0].description, "held by a");
        assert!(info.holders[0].expiration.is_some());
    }

    #[test]
    fn truncated_or_corrupted_replies_are_refused_without_panicking() {
        let bytes = sample_info();
        for len in 0..bytes.len() {
            assert_eq!(decode_info(&bytes[..len]), Err(Malformed), "cut at {len}");
        }
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let _ = decode_info(&bad);
                let _ = decode_list(&bad);
            }
        }
    }
}
