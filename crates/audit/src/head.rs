//! Tree heads and their Ed25519 signatures (spec/09-audit-log.md, "Signed
//! tree heads").
//!
//! ```text
//! signing input  = "Ward v1 tree head\0" || u64be(tree_size) || u64be(timestamp_ms) || root
//! signed head    = 0x01 || u64be(tree_size) || u64be(timestamp_ms) || root || signature
//!                  1 + 8 + 8 + 32 + 64 = 113 bytes
//! ```

use core::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::codec::Reader;
use crate::error::{AuditError, DecodeError};
use crate::merkle::{HASH_LEN, Hash};

/// The domain-separation label of a tree head signature: 18 bytes.
pub const TREE_HEAD_LABEL: &[u8; 18] = b"Ward v1 tree head\0";

/// The version byte of an encoded [`SignedTreeHead`].
pub const SIGNED_TREE_HEAD_VERSION: u8 = 0x01;

/// Length of the signing input of a tree head.
pub const TREE_HEAD_SIGNING_INPUT_LEN: usize = TREE_HEAD_LABEL.len() + 8 + 8 + HASH_LEN;

/// What the relay's key signs: the log had `tree_size` entries with root
/// `root` at `timestamp_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TreeHead {
    /// The number of entries covered.
    pub tree_size: u64,
    /// When the head was issued, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// `MTH` of the first `tree_size` entries.
    pub root: Hash,
}

impl TreeHead {
    /// `"Ward v1 tree head\0" || u64be(tree_size) || u64be(timestamp_ms) || root`
    /// (AUD-9).
    pub fn signing_input(&self) -> [u8; TREE_HEAD_SIGNING_INPUT_LEN] {
        let mut out = [0u8; TREE_HEAD_SIGNING_INPUT_LEN];
        let (label, rest) = out.split_at_mut(TREE_HEAD_LABEL.len());
        label.copy_from_slice(TREE_HEAD_LABEL);
        let (size, rest) = rest.split_at_mut(8);
        size.copy_from_slice(&self.tree_size.to_be_bytes());
        let (time, root) = rest.split_at_mut(8);
        time.copy_from_slice(&self.timestamp_ms.to_be_bytes());
        root.copy_from_slice(&self.root);
        out
    }

    /// Signs the head with the relay's key (Ed25519, RFC 8032).
    pub fn sign(&self, key: &SigningKey) -> SignedTreeHead {
        SignedTreeHead {
            head: *self,
            signature: key.sign(&self.signing_input()).to_bytes(),
        }
    }
}

impl fmt::Display for TreeHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "size={} t={} root=", self.tree_size, self.timestamp_ms)?;
        self.root.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A tree head with the relay's signature over its
/// [`signing_input`](TreeHead::signing_input).
///
/// Holding one proves nothing until [`verify`](Self::verify) succeeds.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignedTreeHead {
    /// The signed statement.
    pub head: TreeHead,
    /// The Ed25519 signature.
    pub signature: [u8; 64],
}

impl SignedTreeHead {
    /// Length of the encoding.
    pub const ENCODED_LEN: usize = 1 + 8 + 8 + HASH_LEN + 64;

    /// `0x01 || u64be(tree_size) || u64be(timestamp_ms) || root || signature`.
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0] = SIGNED_TREE_HEAD_VERSION;
        out[1..9].copy_from_slice(&self.head.tree_size.to_be_bytes());
        out[9..17].copy_from_slice(&self.head.timestamp_ms.to_be_bytes());
        out[17..49].copy_from_slice(&self.head.root);
        out[49..].copy_from_slice(&self.signature);
        out
    }

    /// Decodes exactly [`ENCODED_LEN`](Self::ENCODED_LEN) bytes. Does not
    /// verify the signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        Self::read(&mut r).and_then(|head| r.finish().map(|()| head))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != SIGNED_TREE_HEAD_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        Ok(Self {
            head: TreeHead {
                tree_size: r.u64()?,
                timestamp_ms: r.u64()?,
                root: r.array()?,
            },
            signature: r.array()?,
        })
    }

    /// Verifies the signature under `key` with strict Ed25519 verification
    /// (RFC 8032 with canonical `S` and no small-order keys or `R`), and
    /// returns the head it vouches for (AUD-9).
    pub fn verify(&self, key: &VerifyingKey) -> Result<&TreeHead, AuditError> {
        key.verify_strict(
            &self.head.signing_input(),
            &Signature::from_bytes(&self.signature),
        )
        .map(|()| &self.head)
        .map_err(|_| AuditError::BadSignature)
    }
}

impl fmt::Debug for SignedTreeHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { head, signature } = self;
        f.debug_struct("SignedTreeHead")
            .field("head", head)
            .field("signature", &format_args!("{}", hex::encode(signature)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[0x42; 32])
    }

    fn head() -> TreeHead {
        TreeHead {
            tree_size: 0x0102,
            timestamp_ms: 0x0304,
            root: [0xaa; 32],
        }
    }

    #[test]
    fn signing_input_layout_is_exact() {
        let input = head().signing_input();
        assert_eq!(
            hex::encode(input),
            format!(
                "{}{}{}{}",
                hex::encode(b"Ward v1 tree head\0"),
                "0000000000000102",
                "0000000000000304",
                "aa".repeat(32)
            )
        );
        assert_eq!(input.len(), 66);
    }

    #[test]
    fn sign_verify_encode_decode() {
        let signed = head().sign(&key());
        let vk = key().verifying_key();
        assert_eq!(signed.verify(&vk), Ok(&head()));
        let bytes = signed.encode();
        assert_eq!(SignedTreeHead::decode(&bytes), Ok(signed));
        assert_eq!(
            SignedTreeHead::decode(&bytes[..112]),
            Err(DecodeError::Truncated)
        );
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(
            SignedTreeHead::decode(&long),
            Err(DecodeError::TrailingBytes)
        );
        let mut v2 = bytes;
        v2[0] = 2;
        assert_eq!(
            SignedTreeHead::decode(&v2),
            Err(DecodeError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn every_flipped_bit_fails_verification() {
        let vk = key().verifying_key();
        let bytes = head().sign(&key()).encode();
        for i in 1..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes;
                b[i] ^= 1 << bit;
                let decoded = SignedTreeHead::decode(&b).unwrap();
                assert_eq!(
                    decoded.verify(&vk),
                    Err(AuditError::BadSignature),
                    "byte {i} bit {bit}"
                );
            }
        }
        let other = SigningKey::from_bytes(&[0x43; 32]).verifying_key();
        assert!(head().sign(&key()).verify(&other).is_err());
    }
}
