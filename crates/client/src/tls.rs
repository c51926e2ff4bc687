//! The client's TLS: TLS 1.3 only, ALPN `ward/1`, and the relay's
//! certificate pinned by its SHA-256 fingerprint (spec/08, "Transport").
//!
//! Hospitals run relays with self-signed certificates on internal names,
//! so the client does not consult a CA store: it accepts exactly the
//! certificate it was configured with, and still checks that the relay
//! holds its key (the TLS 1.3 handshake signature).

use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ClientError;

pub use ward_proto::ALPN;

/// Why the relay's certificate was refused: it is not the pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the relay's certificate does not match the pinned SHA-256 fingerprint")]
pub struct PinMismatch;

#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if bool::from(seen.ct_eq(&self.fingerprint)) {
            Ok(ServerCertVerified::assertion())
        } else {
            // Sent as a certificate_unknown alert; the error says why.
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Never reached: the configuration offers TLS 1.3 only (QUIC
        // requires it).
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A QUIC client configuration that trusts exactly the relay certificate
/// whose SHA-256 is `fingerprint`, offering ALPN `alpn` (normally
/// [`ALPN`]; tests offer others, and an empty `alpn` offers none).
pub fn pinned_client_config(
    fingerprint: [u8; 32],
    alpn: &[u8],
) -> Result<quinn::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Connect(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
            fingerprint,
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = if alpn.is_empty() {
        Vec::new()
    } else {
        vec![alpn.to_vec()]
    };
    let quic = QuicClientConfig::try_from(tls).map_err(|e| ClientError::Connect(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}
