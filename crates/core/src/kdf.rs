//! Key derivation (spec/04-handshake.md and spec/05-double-ratchet.md).
//!
//! Notation follows the spec: `KDF_RK(rk, dh) -> (rk', ck)`,
//! `KDF_CK(ck) -> (mk, ck')`, `EXPAND_MK(mk) -> (key, nonce)`.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Start of the handshake KDF's `info`; the identities, the signed prekey and
/// the base key follow (spec/04-handshake.md).
pub(crate) const LABEL_HANDSHAKE: &[u8] = b"Ward v1 handshake";
/// HKDF `info` of the root KDF.
pub(crate) const LABEL_RATCHET: &[u8] = b"Ward v1 ratchet";
/// HKDF `info` expanding a message key into an AEAD key and nonce.
pub(crate) const LABEL_MESSAGE_KEYS: &[u8] = b"Ward v1 message keys";
/// HMAC input deriving a message key from a chain key.
const CHAIN_MESSAGE_KEY: u8 = 0x01;
/// HMAC input deriving the next chain key.
const CHAIN_NEXT_KEY: u8 = 0x02;
/// HKDF `info` expanding a sender-key message key (spec/13-sender-keys.md).
pub(crate) const LABEL_SENDER_MESSAGE_KEYS: &[u8] = b"Ward v1 sender message keys";
/// HMAC input deriving a sender-key message key: distinct from the pairwise
/// constants, so one chain key can never yield the same key in both.
const SENDER_MESSAGE_KEY: u8 = 0x03;
/// HMAC input deriving the next sender chain key.
const SENDER_NEXT_KEY: u8 = 0x04;

/// `RK`: the root of the Double Ratchet.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct RootKey(pub(crate) [u8; 32]);

/// `CK`: a sending or receiving chain key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct ChainKey(pub(crate) [u8; 32]);

/// `MK`: the key of one message.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct MessageKey(pub(crate) [u8; 32]);

/// ChaCha20-Poly1305 key and nonce of one message.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct AeadKeys {
    pub(crate) key: [u8; 32],
    pub(crate) nonce: [u8; 12],
}

/// The handshake KDF: `HKDF-SHA256(salt = 0^32, ikm, info) -> RK || CK`.
pub(crate) fn handshake(ikm: &[u8], info: &[u8]) -> (RootKey, ChainKey) {
    let mut okm = [0u8; 64];
    expand_64(Some(&[0u8; 32]), ikm, info, &mut okm);
    split(&mut okm)
}

impl RootKey {
    /// `KDF_RK(rk, dh) = HKDF-SHA256(salt = rk, ikm = dh, info = "Ward v1 ratchet")`.
    pub(crate) fn ratchet(&self, dh_output: &[u8; 32]) -> (RootKey, ChainKey) {
        let mut okm = [0u8; 64];
        expand_64(Some(&self.0), dh_output, LABEL_RATCHET, &mut okm);
        split(&mut okm)
    }
}

impl ChainKey {
    /// `KDF_CK(ck) = (HMAC(ck, 0x01), HMAC(ck, 0x02))`.
    pub(crate) fn step(&self) -> (MessageKey, ChainKey) {
        self.step_with(CHAIN_MESSAGE_KEY, CHAIN_NEXT_KEY)
    }

    /// `SENDER_CK(ck) = (HMAC(ck, 0x03), HMAC(ck, 0x04))`, the sender-key chain.
    pub(crate) fn sender_step(&self) -> (MessageKey, ChainKey) {
        self.step_with(SENDER_MESSAGE_KEY, SENDER_NEXT_KEY)
    }

    fn step_with(&self, message_input: u8, next_input: u8) -> (MessageKey, ChainKey) {
        // Keying HMAC costs two compressions; key it once and clone the state.
        let keyed = keyed_hmac(&self.0);
        let mut mac = keyed.clone();
        mac.update(&[message_input]);
        let message_key = MessageKey(mac.finalize().into_bytes().into());
        let mut mac = keyed;
        mac.update(&[next_input]);
        let next = ChainKey(mac.finalize().into_bytes().into());
        (message_key, next)
    }
}

impl MessageKey {
    /// `EXPAND_MK(mk) = HKDF-Expand(prk = mk, info = "Ward v1 message keys", 44)`.
    ///
    /// `mk` is an HMAC output, already a uniformly random pseudo-random key, so
    /// the extract step is skipped (RFC 5869, section 3.3).
    pub(crate) fn expand(&self) -> AeadKeys {
        self.expand_with(LABEL_MESSAGE_KEYS)
    }

    /// `EXPAND_SMK(mk) = HKDF-Expand(prk = mk, info = "Ward v1 sender message keys", 44)`.
    pub(crate) fn expand_sender(&self) -> AeadKeys {
        self.expand_with(LABEL_SENDER_MESSAGE_KEYS)
    }

    fn expand_with(&self, info: &[u8]) -> AeadKeys {
        let mut okm = [0u8; 44];
        if let Ok(hkdf) = Hkdf::<Sha256>::from_prk(&self.0) {
            // 44 bytes is far below HKDF's 255 * 32 limit: cannot fail.
            let _ = hkdf.expand(info, &mut okm);
        }
        let mut keys = AeadKeys {
            key: [0; 32],
            nonce: [0; 12],
        };
        keys.key.copy_from_slice(&okm[..32]);
        keys.nonce.copy_from_slice(&okm[32..]);
        okm.zeroize();
        keys
    }
}

/// HMAC-SHA256 keyed with a 32-byte key. HMAC zero-pads short keys to the
/// block size (RFC 2104), so padding here gives the same MAC, infallibly.
fn keyed_hmac(key: &[u8; 32]) -> Hmac<Sha256> {
    let mut block = hmac::digest::Key::<Hmac<Sha256>>::default();
    block[..32].copy_from_slice(key);
    let mac = <Hmac<Sha256> as KeyInit>::new(&block);
    block.as_mut_slice().zeroize();
    mac
}

fn expand_64(salt: Option<&[u8]>, ikm: &[u8], info: &[u8], okm: &mut [u8; 64]) {
    let hkdf = Hkdf::<Sha256>::new(salt, ikm);
    // 64 bytes is far below HKDF's limit: cannot fail.
    let _ = hkdf.expand(info, okm);
}

fn split(okm: &mut [u8; 64]) -> (RootKey, ChainKey) {
    let mut root = [0u8; 32];
    let mut chain = [0u8; 32];
    root.copy_from_slice(&okm[..32]);
    chain.copy_from_slice(&okm[32..]);
    okm.zeroize();
    (RootKey(root), ChainKey(chain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_step_matches_plain_hmac() {
        let ck = ChainKey([7; 32]);
        let (mk, next) = ck.step();
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[7; 32]).unwrap();
        mac.update(&[1]);
        assert_eq!(mk.0[..], mac.finalize().into_bytes()[..]);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[7; 32]).unwrap();
        mac.update(&[2]);
        assert_eq!(next.0[..], mac.finalize().into_bytes()[..]);
        assert_ne!(mk.0, next.0);
    }

    #[test]
    fn sender_chain_uses_its_own_constants() {
        let ck = ChainKey([7; 32]);
        let (mk, next) = ck.sender_step();
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[7; 32]).unwrap();
        mac.update(&[3]);
        assert_eq!(mk.0[..], mac.finalize().into_bytes()[..]);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[7; 32]).unwrap();
        mac.update(&[4]);
        assert_eq!(next.0[..], mac.finalize().into_bytes()[..]);
        assert_ne!(mk.0, ck.step().0.0);
        let keys = mk.expand_sender();
        let mut okm = [0u8; 44];
        Hkdf::<Sha256>::from_prk(&mk.0)
            .unwrap()
            .expand(b"Ward v1 sender message keys", &mut okm)
            .unwrap();
        assert_eq!(keys.key[..], okm[..32]);
        assert_eq!(keys.nonce[..], okm[32..]);
    }

    #[test]
    fn message_key_expansion_is_hkdf_expand() {
        let keys = MessageKey([9; 32]).expand();
        let mut okm = [0u8; 44];
        Hkdf::<Sha256>::from_prk(&[9; 32])
            .unwrap()
            .expand(b"Ward v1 message keys", &mut okm)
            .unwrap();
        assert_eq!(keys.key[..], okm[..32]);
        assert_eq!(keys.nonce[..], okm[32..]);
    }

    #[test]
    fn root_ratchet_depends_on_both_inputs() {
        let rk = RootKey([1; 32]);
        let (a, ca) = rk.ratchet(&[2; 32]);
        let (b, cb) = rk.ratchet(&[3; 32]);
        let (c, _) = RootKey([4; 32]).ratchet(&[2; 32]);
        assert_ne!(a.0, b.0);
        assert_ne!(ca.0, cb.0);
        assert_ne!(a.0, c.0);
        assert_ne!(a.0, ca.0);
    }
}
