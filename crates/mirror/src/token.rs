//! Bootstrap tokens: everything a peer needs to mirror with this site, as one base64 line.
//!
//! The JSON inside follows Ceph's token (`fsid`, `client_id`, `key`) and names a gateway
//! instead of monitors: `endpoint` and its certificate `fingerprint`, plus the `site_name`.

use base64::Engine as _;
use rbdx_image::{Error, Result};
use serde::{Deserialize, Serialize};

/// A decoded bootstrap token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The issuing site's id.
    pub fsid: String,
    /// The issuing site's name.
    pub site_name: String,
    /// The key's name without `client.`.
    pub client_id: String,
    /// The key's secret (base64).
    pub key: String,
    /// The issuing site's gateway, `HOST:PORT`.
    pub endpoint: String,
    /// The fingerprint of the gateway's certificate.
    pub fingerprint: String,
}

impl Token {
    /// Encodes the token: base64 of its JSON.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    /// Decodes a token (surrounding whitespace ignored).
    pub fn decode(text: &str) -> Result<Token> {
        let text: String = text.split_whitespace().collect();
        if text.is_empty() {
            return Err(Error::invalid("the bootstrap token is empty"));
        }
        let json = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| Error::invalid(format!("the bootstrap token is not base64: {e}")))?;
        let token: Token = serde_json::from_slice(&json).map_err(|e| {
            Error::invalid(format!("the bootstrap token is not a valid token: {e}"))
        })?;
        if token.fsid.is_empty() || token.client_id.is_empty() || token.endpoint.is_empty() {
            return Err(Error::invalid(
                "the bootstrap token lacks its site id, key or endpoint",
            ));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_decodes_to_what_was_encoded() {
        let t = Token {
            fsid: "f".into(),
            site_name: "a".into(),
            client_id: "rbd-mirror-peer-1".into(),
            key: "k".into(),
            endpoint: "127.0.0.1:7000".into(),
            fingerprint: "sha256:00".into(),
        };
        assert_eq!(Token::decode(&format!(" {}\n", t.encode())).unwrap(), t);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(
            Token::decode("garbage!")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
        let not_json = base64::engine::general_purpose::STANDARD.encode(b"{}");
        assert!(Token::decode(&not_json).is_err());
        assert!(Token::decode("").is_err());
    }
}
