//! Encodings of the messages a session sends (spec/03-encodings.md).
//!
//! A ratchet message has a fixed layout rather than protobuf: its header is
//! authenticated as associated data, so it must have exactly one byte form,
//! and every byte of overhead is paid on every message.
//!
//! ```text
//! RatchetMessage = 0x01 || ratchet_key[32] || varint(counter)
//!                  || varint(previous_counter) || ciphertext || tag[16]
//! ```

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use sha2::{Digest, Sha256};
use ward_proto::{Message, core_v1 as pb};

use crate::encoding::{expect_format, fixed, format, put_varint, take_varint};
use crate::error::{DecodeError, Error, Result};
use crate::identity::DeviceIdentity;
use crate::limits::MAX_PLAINTEXT_LEN;
use crate::prekeys::KEM_CIPHERTEXT_LEN;

/// Length of the Poly1305 tag closing every ciphertext.
pub const TAG_LEN: usize = 16;
/// Longest possible ratchet message header (format byte, key, two 5-byte varints).
pub(crate) const MAX_HEADER_LEN: usize = 1 + 32 + 5 + 5;

/// What kind of message some bytes are, from their format byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A message within an established session.
    Ratchet,
    /// A message that can open a session ([`PreKeyMessage`]).
    PreKey,
}

impl MessageKind {
    /// Reads the format byte of an encoded message.
    pub fn of(bytes: &[u8]) -> Result<Self> {
        match bytes.first() {
            None => Err(DecodeError::Truncated.into()),
            Some(&format::RATCHET_MESSAGE) => Ok(MessageKind::Ratchet),
            Some(&format::PREKEY_MESSAGE) => Ok(MessageKind::PreKey),
            Some(&found) => Err(Error::UnsupportedFormat { found }),
        }
    }
}

/// The cleartext header of a ratchet message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) ratchet_key: [u8; 32],
    pub(crate) counter: u32,
    pub(crate) previous_counter: u32,
}

impl Header {
    /// Appends the format byte and the header; returns the header length.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.push(format::RATCHET_MESSAGE);
        out.extend_from_slice(&self.ratchet_key);
        put_varint(out, self.counter);
        put_varint(out, self.previous_counter);
        out.len() - start
    }
}

/// A decoded ratchet message, borrowing the bytes it came from.
pub(crate) struct RatchetMessage<'a> {
    pub(crate) header: Header,
    /// The header exactly as received: it is the associated data.
    pub(crate) header_bytes: &'a [u8],
    /// Ciphertext followed by the tag.
    pub(crate) sealed: &'a [u8],
}

impl<'a> RatchetMessage<'a> {
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Self> {
        let rest = expect_format(bytes, format::RATCHET_MESSAGE)?;
        if rest.len() < 32 {
            return Err(DecodeError::Truncated.into());
        }
        let (key, rest) = rest.split_at(32);
        let (counter, rest) = take_varint(rest)?;
        let (previous_counter, sealed) = take_varint(rest)?;
        if sealed.len() < TAG_LEN {
            return Err(DecodeError::Truncated.into());
        }
        if sealed.len() > MAX_PLAINTEXT_LEN + TAG_LEN {
            return Err(Error::MessageTooLarge);
        }
        Ok(Self {
            header: Header {
                ratchet_key: fixed::<32>("ratchet_key", key)?,
                counter,
                previous_counter,
            },
            header_bytes: &bytes[..bytes.len() - sealed.len()],
            sealed,
        })
    }
}

/// A message that opens a session: the initiator's handshake values around a
/// ratchet message. Decoding verifies the sender's identity signature.
#[derive(Clone)]
pub struct PreKeyMessage {
    pub(crate) identity: DeviceIdentity,
    pub(crate) signed_prekey_id: u32,
    pub(crate) one_time_prekey_id: Option<u32>,
    pub(crate) base_key: [u8; 32],
    pub(crate) kem_ciphertext: Box<[u8; KEM_CIPHERTEXT_LEN]>,
    pub(crate) message: Vec<u8>,
}

impl PreKeyMessage {
    /// Decodes `0x02 || protobuf PreKeyMessage` and verifies the identity in it.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_known(bytes, &[])
    }

    /// [`Self::decode`] for a responder that already holds verified
    /// identities of the sender (every [`DeviceIdentity`] was verified when
    /// it was made; say, from its own store or the sender's device list):
    /// if the message's identity equals one of `known` in all 128 bytes,
    /// compared in constant time, its Ed25519 binding signature is not
    /// verified again. Any other identity is verified in full. So this
    /// returns exactly what [`Self::decode`] returns for the same bytes, the
    /// same message or the same error, only sooner for a known sender.
    pub fn decode_known(bytes: &[u8], known: &[DeviceIdentity]) -> Result<Self> {
        let body = expect_format(bytes, format::PREKEY_MESSAGE)?;
        let p = pb::PreKeyMessage::decode(body)?;
        let identity = DeviceIdentity::from_proto_known(
            p.identity
                .as_ref()
                .ok_or(DecodeError::MissingField("prekey_message.identity"))?,
            known,
        )?;
        // The inner message must itself be well formed before anything is
        // computed from the handshake values.
        RatchetMessage::decode(&p.message)?;
        Ok(Self {
            identity,
            signed_prekey_id: p.signed_prekey_id,
            one_time_prekey_id: p.one_time_prekey_id,
            base_key: fixed::<32>("prekey_message.base_key", &p.base_key)?,
            kem_ciphertext: Box::new(fixed::<KEM_CIPHERTEXT_LEN>(
                "prekey_message.kem_ciphertext",
                &p.kem_ciphertext,
            )?),
            message: p.message,
        })
    }

    /// Encodes as `0x02 || protobuf PreKeyMessage`.
    pub fn encode(&self) -> Vec<u8> {
        let p = pb::PreKeyMessage {
            identity: Some(self.identity.to_proto()),
            signed_prekey_id: self.signed_prekey_id,
            one_time_prekey_id: self.one_time_prekey_id,
            base_key: self.base_key.to_vec(),
            kem_ciphertext: self.kem_ciphertext.to_vec(),
            message: self.message.clone(),
        };
        let mut out = Vec::with_capacity(1 + p.encoded_len());
        out.push(format::PREKEY_MESSAGE);
        p.encode_raw(&mut out);
        out
    }

    /// The sender's identity (verified).
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    /// Which signed prekey set of the recipient it used.
    pub fn signed_prekey_id(&self) -> u32 {
        self.signed_prekey_id
    }

    /// Which one-time prekey of the recipient it used, if any.
    pub fn one_time_prekey_id(&self) -> Option<u32> {
        self.one_time_prekey_id
    }

    /// The initiator's base key, which names the session it opens.
    pub fn base_key(&self) -> &[u8; 32] {
        &self.base_key
    }

    /// What every pre-key message of one session carries identically.
    pub(crate) fn handshake_digest(&self) -> [u8; 32] {
        handshake_digest(
            &self.identity,
            self.signed_prekey_id,
            self.one_time_prekey_id,
            &self.base_key,
            &self.kem_ciphertext,
        )
    }
}

/// Prefix of the digest that binds a session's pre-key messages together.
pub const HANDSHAKE_DIGEST_LABEL: &[u8] = b"Ward v1 pre-key handshake\0";

/// `SHA-256(label || identity (128) || u32be(signed_prekey_id) ||
/// one_time (0x00, or 0x01 || u32be(id)) || base_key || kem_ciphertext)`.
///
/// A session keeps the digest of the handshake that made it; a later
/// pre-key message must match it exactly, so no field of the envelope can be
/// altered even though only the inner message is encrypted.
pub(crate) fn handshake_digest(
    identity: &DeviceIdentity,
    signed_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
    base_key: &[u8; 32],
    kem_ciphertext: &[u8; KEM_CIPHERTEXT_LEN],
) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(HANDSHAKE_DIGEST_LABEL);
    hash.update(identity.to_bytes());
    hash.update(signed_prekey_id.to_be_bytes());
    match one_time_prekey_id {
        None => hash.update([0x00]),
        Some(id) => {
            hash.update([0x01]);
            hash.update(id.to_be_bytes());
        }
    }
    hash.update(base_key);
    hash.update(kem_ciphertext);
    hash.finalize().into()
}

impl fmt::Debug for PreKeyMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreKeyMessage")
            .field("identity", &self.identity)
            .field("signed_prekey_id", &self.signed_prekey_id)
            .field("one_time_prekey_id", &self.one_time_prekey_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        let header = Header {
            ratchet_key: [5; 32],
            counter: 300,
            previous_counter: 2,
        };
        let len = header.encode_into(&mut out);
        assert_eq!(len, 1 + 32 + 2 + 1);
        out.extend_from_slice(&[0xaa; 20]);
        out
    }

    #[test]
    fn header_round_trips() {
        let bytes = sample();
        let m = RatchetMessage::decode(&bytes).unwrap();
        assert_eq!(m.header.counter, 300);
        assert_eq!(m.header.previous_counter, 2);
        assert_eq!(m.header.ratchet_key, [5; 32]);
        assert_eq!(m.header_bytes.len(), 36);
        assert_eq!(m.sealed.len(), 20);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample();
        // Up to header + tag - 1 bytes, nothing decodes.
        for len in 0..36 + TAG_LEN {
            assert!(RatchetMessage::decode(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn an_oversized_ciphertext_is_refused_before_any_work() {
        let mut bytes = sample();
        bytes.resize(36 + MAX_PLAINTEXT_LEN + TAG_LEN, 0);
        assert!(RatchetMessage::decode(&bytes).is_ok());
        bytes.push(0);
        assert_eq!(
            RatchetMessage::decode(&bytes).err(),
            Some(Error::MessageTooLarge)
        );
    }

    #[test]
    fn kinds_are_read_from_the_format_byte() {
        assert_eq!(MessageKind::of(&[1]), Ok(MessageKind::Ratchet));
        assert_eq!(MessageKind::of(&[2]), Ok(MessageKind::PreKey));
        assert_eq!(
            MessageKind::of(&[9]),
            Err(Error::UnsupportedFormat { found: 9 })
        );
        assert_eq!(MessageKind::of(&[]), Err(DecodeError::Truncated.into()));
    }
}
