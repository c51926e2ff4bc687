//! Byte-level building blocks shared by every encoding (spec/03-encodings.md).

use alloc::vec::Vec;

use crate::error::{DecodeError, Error, Result};

/// The first byte of every top-level encoding names what follows and its
/// version. A decoder refuses any value it does not know.
pub mod format {
    /// A ratchet message, version 1 (fixed layout).
    pub const RATCHET_MESSAGE: u8 = 0x01;
    /// A pre-key message, version 1 (protobuf `PreKeyMessage`).
    pub const PREKEY_MESSAGE: u8 = 0x02;
    /// A prekey bundle, version 1 (protobuf `PreKeyBundle`).
    pub const PREKEY_BUNDLE: u8 = 0x03;
    /// A session state, version 1 (protobuf `SessionState`).
    pub const SESSION_STATE: u8 = 0x04;
    /// A signed prekey pair's secrets, version 1 (fixed layout).
    pub const SIGNED_PREKEY_SECRET: u8 = 0x05;
    /// A one-time prekey pair's secret, version 1 (fixed layout).
    pub const ONE_TIME_PREKEY_SECRET: u8 = 0x06;
    /// A device identity's secrets, version 1 (fixed layout).
    pub const IDENTITY_SECRET: u8 = 0x07;
    /// A group message under a sender key, version 1 (fixed layout, spec/13).
    pub const SENDER_KEY_MESSAGE: u8 = 0x08;
    /// A sender-key distribution, version 1 (protobuf `SenderKeyDistribution`).
    pub const SENDER_KEY_DISTRIBUTION: u8 = 0x09;
    /// A sender chain at rest, version 1 (protobuf `SenderChainState`).
    pub const SENDER_CHAIN_STATE: u8 = 0x0a;
    /// A signed group membership change, version 1 (protobuf `SignedGroupChange`, spec/14).
    pub const GROUP_CHANGE: u8 = 0x0b;
    /// A group as one device holds it, version 1 (protobuf `GroupStateRecord`).
    pub const GROUP_STATE: u8 = 0x0c;
    /// The roster handed to a device added to a group, version 1 (protobuf `GroupWelcome`).
    pub const GROUP_WELCOME: u8 = 0x0d;
    /// A role's schedule signed by an administrator, version 1 (protobuf
    /// `SignedRoleSchedule`, spec/15).
    pub const ROLE_SCHEDULE: u8 = 0x0e;
    /// An administrator's signing key, version 1: the format byte, then the
    /// 32-byte Ed25519 seed.
    pub const ADMIN_KEY_SECRET: u8 = 0x0f;
}

/// Splits off the format byte and checks it.
pub(crate) fn expect_format(bytes: &[u8], expected: u8) -> Result<&[u8]> {
    match bytes.split_first() {
        None => Err(DecodeError::Truncated.into()),
        Some((&found, rest)) if found == expected => Ok(rest),
        Some((&found, _)) => Err(Error::UnsupportedFormat { found }),
    }
}

/// A field that must be exactly `N` bytes long.
pub(crate) fn fixed<const N: usize>(field: &'static str, bytes: &[u8]) -> Result<[u8; N]> {
    bytes.try_into().map_err(|_| {
        DecodeError::WrongLength {
            field,
            expected: N,
            found: bytes.len(),
        }
        .into()
    })
}

/// Appends `value` as an unsigned LEB128 varint (1 to 5 bytes).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a canonical unsigned LEB128 varint of at most 32 bits: the shortest
/// encoding only, so that every header has exactly one byte form.
pub(crate) fn take_varint(input: &[u8]) -> Result<(u32, &[u8])> {
    let mut value: u32 = 0;
    for (i, &byte) in input.iter().enumerate().take(5) {
        let bits = u32::from(byte & 0x7f);
        if i == 4 && bits > 0x0f {
            return Err(DecodeError::NonCanonicalVarint.into());
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(DecodeError::NonCanonicalVarint.into());
            }
            return Ok((value, &input[i + 1..]));
        }
    }
    if input.len() >= 5 {
        Err(DecodeError::NonCanonicalVarint.into())
    } else {
        Err(DecodeError::Truncated.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_edges() {
        for (value, bytes) in [
            (0u32, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (u32::MAX, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, bytes);
            assert_eq!(take_varint(bytes).unwrap(), (value, &[][..]));
        }
    }

    #[test]
    fn varint_rejects_non_canonical_and_oversized() {
        let bad = DecodeError::NonCanonicalVarint.into();
        assert_eq!(take_varint(&[0x80, 0x00]), Err(bad));
        assert_eq!(take_varint(&[0xff, 0xff, 0xff, 0xff, 0x10]), Err(bad));
        assert_eq!(take_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), Err(bad));
        assert_eq!(take_varint(&[0x80]), Err(DecodeError::Truncated.into()));
        assert_eq!(take_varint(&[]), Err(DecodeError::Truncated.into()));
    }

    proptest! {
        #[test]
        fn varint_round_trips(value: u32, tail: Vec<u8>) {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let encoded_len = out.len();
            out.extend_from_slice(&tail);
            let (decoded, rest) = take_varint(&out).unwrap();
            prop_assert_eq!(decoded, value);
            prop_assert_eq!(rest.len(), out.len() - encoded_len);
        }
    }
}
