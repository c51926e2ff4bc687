//! Checking a device's signature over its transcript (the transcripts
//! themselves are `ward_proto::auth`).

use ed25519_dalek::{Signature, VerifyingKey};

/// Checks an Ed25519 signature strictly (no small-order keys, canonical
/// `S`).
pub(crate) fn verify(key: &[u8; 32], transcript: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(transcript, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_refuses_garbage() {
        assert!(!verify(&[0; 32], b"x", &[0; 64]));
        assert!(!verify(&[1; 32], b"x", &[0; 3]));
    }
}
