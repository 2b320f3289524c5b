//! TLS 1.3 for the peer protocol: the gateway's certificate (made once and kept, or given),
//! its fingerprint, and the client's check of it.
//!
//! Clients do not use certificate authorities: a client config names the SHA-256 fingerprint
//! of the gateway's certificate (`sha256:` and 64 hex digits) and any other certificate is
//! refused. Both sides use rustls with the `ring` provider and TLS 1.3 only.

use std::sync::{Arc, Mutex};

use rbdx_objstore::{Error, ErrorKind, Result, Subject};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

/// The server name clients ask for; the certificate is checked by fingerprint, not by name.
pub const SERVER_NAME: &str = "rbdx-gateway";

/// The `ring` provider with TLS 1.3's AES-128-GCM first: the fastest suite on CPUs with AES
/// instructions, and as strong as the others for this use. rustls 0.23.48 deprecates the
/// `ring` provider for lacking post-quantum key exchange, which only the `aws-lc-rs` provider
/// (a C build this project avoids) offers; both ends of this protocol are rbdx, so moving is a
/// switch of provider on both sides, recorded in `docs/design/peer-protocol.md`.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

fn tls_error(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, Subject::Store).with_detail(detail)
}

/// A certificate and its private key, in PEM.
#[derive(Clone)]
pub struct Identity {
    /// The certificate chain, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint().ok())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Makes a new self-signed certificate for the gateway.
    pub fn generate() -> Result<Identity> {
        let made = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .map_err(|e| tls_error(format!("cannot make a certificate: {e}")))?;
        Ok(Identity {
            cert_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
        })
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| tls_error(format!("the certificate is not PEM: {e}")))?;
        if chain.is_empty() {
            return Err(tls_error("the certificate file holds no certificate"));
        }
        Ok(chain)
    }

    /// Returns the fingerprint of the leaf certificate: `sha256:` and 64 hex digits.
    pub fn fingerprint(&self) -> Result<String> {
        Ok(fingerprint_of(&self.chain()?[0]))
    }

    /// Returns the server TLS configuration serving this identity.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| tls_error(format!("the private key is not PEM: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_error(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain()?, key)
            .map_err(|e| tls_error(format!("certificate and key do not go together: {e}")))?;
        Ok(Arc::new(config))
    }
}

/// Returns the fingerprint of a DER certificate.
pub fn fingerprint_of(cert: &[u8]) -> String {
    let digest = Sha256::digest(cert);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Checks and normalises a configured fingerprint (`sha256:` and 64 hex digits, any case,
/// colons between bytes allowed).
pub fn parse_fingerprint(text: &str) -> Result<String> {
    let hex: String = text
        .trim()
        .strip_prefix("sha256:")
        .or_else(|| text.trim().strip_prefix("SHA256:"))
        .unwrap_or("")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(tls_error(format!(
            "fingerprint \"{text}\" is not sha256: followed by 64 hex digits"
        )));
    }
    Ok(format!("sha256:{hex}"))
}

/// Accepts exactly the certificate whose fingerprint is pinned, and records the one it saw.
#[derive(Debug)]
pub struct Pinned {
    fingerprint: String,
    algorithms: WebPkiSupportedAlgorithms,
    seen: Mutex<Option<String>>,
}

impl Pinned {
    /// Pins `fingerprint` (as [`parse_fingerprint`] returns it).
    pub fn new(fingerprint: String) -> Pinned {
        Pinned {
            fingerprint,
            algorithms: provider().signature_verification_algorithms,
            seen: Mutex::new(None),
        }
    }

    /// Returns the fingerprint of a refused certificate, if the last handshake saw one.
    pub fn refused(&self) -> Option<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint_of(end_entity);
        if got == self.fingerprint {
            return Ok(ServerCertVerified::assertion());
        }
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(got);
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Returns a client TLS configuration that accepts only the pinned certificate.
pub fn client_config(pinned: Arc<Pinned>) -> Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(pinned)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalised_and_checked() {
        let fp = format!("SHA256:{}", "AB:".repeat(31) + "AB");
        assert_eq!(
            parse_fingerprint(&fp).ok(),
            Some(format!("sha256:{}", "ab".repeat(32)))
        );
        assert!(parse_fingerprint("sha256:1234").is_err());
        assert!(parse_fingerprint(&"ab".repeat(32)).is_err());
    }

    #[test]
    fn a_generated_identity_serves_and_keeps_its_fingerprint() {
        let id = Identity::generate().unwrap_or_else(|e| panic!("{e}"));
        let fp = id.fingerprint().unwrap_or_else(|e| panic!("{e}"));
        assert!(fp.starts_with("sha256:") && fp.len() == 71, "{fp}");
        assert!(id.server_config().is_ok());
        assert_eq!(id.clone().fingerprint().ok(), Some(fp));
    }
}
