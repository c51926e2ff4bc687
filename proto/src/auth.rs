//! The relay's authentication transcripts (spec/08, "Authentication"):
//! what a device signs, byte for byte. Shared by the relay and the client
//! so that there is one definition.
//!
//! Each transcript holds the connection's TLS exporter value and a fresh
//! relay nonce, so a signature recorded on one connection proves nothing
//! on another, and a nonce is good for one attempt.

use alloc::vec::Vec;

use sha2::{Digest, Sha256};

/// The TLS exporter label (RFC 8446, section 7.5); the context is empty.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-ward/1 authentication";
/// Bytes of exporter output in a transcript.
pub const EXPORTER_LEN: usize = 32;
/// Bytes of a relay challenge nonce.
pub const NONCE_LEN: usize = 32;

/// Prefix of the authentication transcript.
pub const AUTHENTICATION_CONTEXT: &[u8] = b"Ward v1 relay authentication\0";
/// Prefix of the enrollment transcript.
pub const ENROLLMENT_CONTEXT: &[u8] = b"Ward v1 relay enrollment\0";

/// What a device signs to authenticate an existing enrollment:
/// context || exporter || nonce || device key.
pub fn authentication_transcript(
    exporter: &[u8; EXPORTER_LEN],
    nonce: &[u8; NONCE_LEN],
    device_key: &[u8; 32],
) -> Vec<u8> {
    [AUTHENTICATION_CONTEXT, exporter, nonce, device_key].concat()
}

/// What a device signs to enroll with a token:
/// context || exporter || nonce || SHA-256(token) || identity.
pub fn enrollment_transcript(
    exporter: &[u8; EXPORTER_LEN],
    nonce: &[u8; NONCE_LEN],
    token: &str,
    identity: &[u8],
) -> Vec<u8> {
    let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    [ENROLLMENT_CONTEXT, exporter, nonce, &token_hash, identity].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_have_the_specified_layout() {
        let t = authentication_transcript(&[1; 32], &[2; 32], &[3; 32]);
        assert_eq!(t.len(), 29 + 96);
        assert_eq!(&t[..29], b"Ward v1 relay authentication\0");
        assert_eq!(t[29..61], [1; 32]);
        assert_eq!(t[61..93], [2; 32]);
        assert_eq!(t[93..], [3; 32]);

        let e = enrollment_transcript(&[1; 32], &[2; 32], "tok", &[9; 128]);
        assert_eq!(e.len(), 25 + 32 + 32 + 32 + 128);
        assert_eq!(&e[..25], b"Ward v1 relay enrollment\0");
        let hash: [u8; 32] = Sha256::digest(b"tok").into();
        assert_eq!(e[89..121], hash);
        assert_eq!(e[121..], [9; 128]);
    }
}
