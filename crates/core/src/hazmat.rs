//! The key derivation functions on raw bytes, for test vectors and for
//! people re-implementing the protocol. Apps never need these: sessions
//! use them internally (spec/04-handshake.md, spec/05-double-ratchet.md).

use zeroize::Zeroizing;

use crate::kdf::{self, ChainKey, MessageKey, RootKey};

/// `HKDF-SHA256(salt = 0^32, ikm, info) -> (RK, CK)`, the handshake KDF.
pub fn handshake_kdf(ikm: &[u8], info: &[u8]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let (root, chain) = kdf::handshake(ikm, info);
    (Zeroizing::new(root.0), Zeroizing::new(chain.0))
}

/// `KDF_RK(rk, dh) -> (RK', CK)`.
pub fn kdf_rk(
    root_key: &[u8; 32],
    dh_output: &[u8; 32],
) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let (root, chain) = RootKey(*root_key).ratchet(dh_output);
    (Zeroizing::new(root.0), Zeroizing::new(chain.0))
}

/// `KDF_CK(ck) -> (MK, CK')`.
pub fn kdf_ck(chain_key: &[u8; 32]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let (message, next) = ChainKey(*chain_key).step();
    (Zeroizing::new(message.0), Zeroizing::new(next.0))
}

/// `EXPAND_MK(mk) -> (key, nonce)`.
pub fn expand_mk(message_key: &[u8; 32]) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
    let keys = MessageKey(*message_key).expand();
    (Zeroizing::new(keys.key), keys.nonce)
}

/// `SENDER_CK(ck) -> (MK, CK')`, the sender-key chain (spec/13).
pub fn sender_kdf_ck(chain_key: &[u8; 32]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let (message, next) = ChainKey(*chain_key).sender_step();
    (Zeroizing::new(message.0), Zeroizing::new(next.0))
}

/// `EXPAND_SMK(mk) -> (key, nonce)`, a sender-key message key's AEAD key and nonce.
pub fn expand_smk(message_key: &[u8; 32]) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
    let keys = MessageKey(*message_key).expand_sender();
    (Zeroizing::new(keys.key), keys.nonce)
}

/// The cleartext header of an encoded ratchet message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatchetHeader {
    /// The sender's ratchet public key.
    pub ratchet_key: [u8; 32],
    /// The message's index in its chain.
    pub counter: u32,
    /// How many messages the sender's previous chain carried.
    pub previous_counter: u32,
    /// Bytes from the format byte to the end of the header.
    pub header_len: usize,
}

/// Parses a ratchet message as a receiver does before any key is derived.
pub fn parse_ratchet_message(bytes: &[u8]) -> crate::Result<RatchetHeader> {
    let m = crate::message::RatchetMessage::decode(bytes)?;
    Ok(RatchetHeader {
        ratchet_key: m.header.ratchet_key,
        counter: m.header.counter,
        previous_counter: m.header.previous_counter,
        header_len: m.header_bytes.len(),
    })
}
