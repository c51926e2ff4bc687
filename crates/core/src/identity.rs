//! Device identities (spec/02-keys.md, "Device identity").
//!
//! A device owns an Ed25519 signing key and an X25519 identity key. The X25519
//! key is bound to the Ed25519 key by a signature, so one verifying key names
//! the device everywhere: in the relay's directory, in safety numbers, in the
//! associated data of every message.

use alloc::vec::Vec;
use core::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use subtle::ConstantTimeEq;
use ward_proto::{Message, core_v1 as pb};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::encoding::{expect_format, fixed, format};
use crate::error::{DecodeError, Error, Result};

/// Prefix of the message the Ed25519 key signs to bind the X25519 identity key.
pub const IDENTITY_BINDING_LABEL: &[u8] = b"Ward v1 identity dh key\0";

/// Length of [`IdentityKeyPair::to_secret_bytes`]: format byte, Ed25519 seed,
/// X25519 secret.
pub const IDENTITY_SECRET_LEN: usize = 65;

/// A device's long-term secret keys. Zeroized on drop; `Debug` shows only the
/// public identity.
pub struct IdentityKeyPair {
    signing: SigningKey,
    dh: StaticSecret,
    public: DeviceIdentity,
}

/// A device's public identity, whose X25519 key is known to be signed by its
/// Ed25519 key: every way to obtain one either creates the signature or
/// verifies it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DeviceIdentity {
    signing_key: [u8; 32],
    dh_key: [u8; 32],
    signature: [u8; 64],
}

impl IdentityKeyPair {
    /// Generates a fresh identity from the caller's RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut secret = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(secret.as_mut_slice());
        Self::from_seeds(&secret)
    }

    /// Restores an identity from [`Self::to_secret_bytes`]. Ed25519 signing is
    /// deterministic, so the public identity comes out byte for byte the same.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        let body = expect_format(bytes, format::IDENTITY_SECRET)?;
        let mut seeds = Zeroizing::new(fixed::<64>("identity_secret", body)?);
        let pair = Self::from_seeds(&seeds);
        seeds.zeroize();
        Ok(pair)
    }

    /// `secret` is the Ed25519 seed followed by the X25519 secret.
    fn from_seeds(secret: &[u8; 64]) -> Self {
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&secret[..32]);
        let signing = SigningKey::from_bytes(&seed);
        seed.copy_from_slice(&secret[32..]);
        let dh = StaticSecret::from(seed);
        seed.zeroize();

        let signing_key = signing.verifying_key().to_bytes();
        let dh_key = PublicKey::from(&dh).to_bytes();
        let signature = signing.sign(&binding_message(&dh_key)).to_bytes();
        let public = DeviceIdentity {
            signing_key,
            dh_key,
            signature,
        };
        Self {
            signing,
            dh,
            public,
        }
    }

    /// Format byte, Ed25519 seed, X25519 secret: for the caller's encrypted
    /// key store.
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; IDENTITY_SECRET_LEN]> {
        let mut out = Zeroizing::new([0u8; IDENTITY_SECRET_LEN]);
        out[0] = format::IDENTITY_SECRET;
        out[1..33].copy_from_slice(self.signing.as_bytes());
        out[33..].copy_from_slice(self.dh.as_bytes());
        out
    }

    /// The public identity.
    pub fn public(&self) -> &DeviceIdentity {
        &self.public
    }

    /// Signs `message` with the Ed25519 identity key. Callers put a
    /// domain-separation label of their own at the start of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    pub(crate) fn dh_secret(&self) -> &StaticSecret {
        &self.dh
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            signing: _,
            dh: _,
            public,
        } = self;
        f.debug_struct("IdentityKeyPair")
            .field("public", public)
            .finish_non_exhaustive()
    }
}

impl DeviceIdentity {
    /// Length of [`Self::to_bytes`].
    pub const ENCODED_LEN: usize = 128;

    /// Checks and builds an identity from its three parts: the Ed25519 key
    /// must decode and not be of small order, and the signature must verify
    /// (strictly). The X25519 key is not checked here: a small-order one
    /// fails every handshake with [`Error::NonContributoryKey`].
    pub fn from_parts(signing_key: &[u8], dh_key: &[u8], signature: &[u8]) -> Result<Self> {
        Self::checked(signing_key, dh_key, signature).map(|(identity, _)| identity)
    }

    /// [`Self::from_parts`], also returning the decompressed verifying key so
    /// that a caller verifying more signatures does not decompress it again.
    fn checked(
        signing_key: &[u8],
        dh_key: &[u8],
        signature: &[u8],
    ) -> Result<(Self, VerifyingKey)> {
        let signing_key = fixed::<32>("identity.signing_key", signing_key)?;
        let dh_key = fixed::<32>("identity.dh_key", dh_key)?;
        let signature = fixed::<64>("identity.dh_key_signature", signature)?;
        let verifying = VerifyingKey::from_bytes(&signing_key)
            .map_err(|_| DecodeError::InvalidKey("identity.signing_key"))?;
        if verifying.is_weak() {
            return Err(DecodeError::InvalidKey("identity.signing_key").into());
        }
        verifying
            .verify_strict(
                &binding_message(&dh_key),
                &Signature::from_bytes(&signature),
            )
            .map_err(|_| Error::BadSignature)?;
        let identity = Self {
            signing_key,
            dh_key,
            signature,
        };
        Ok((identity, verifying))
    }

    /// Decodes the fixed 128-byte form: signing key, X25519 key, signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != Self::ENCODED_LEN {
            return Err(DecodeError::WrongLength {
                field: "identity",
                expected: Self::ENCODED_LEN,
                found: bytes.len(),
            }
            .into());
        }
        Self::from_parts(&bytes[..32], &bytes[32..64], &bytes[64..])
    }

    /// The fixed 128-byte form.
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..32].copy_from_slice(&self.signing_key);
        out[32..64].copy_from_slice(&self.dh_key);
        out[64..].copy_from_slice(&self.signature);
        out
    }

    /// Decodes the protobuf `DeviceIdentity`, verifying it.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::from_proto(&pb::DeviceIdentity::decode(bytes)?)
    }

    /// Encodes as protobuf `DeviceIdentity`.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// The Ed25519 verifying key: the device's name.
    pub fn signing_key(&self) -> &[u8; 32] {
        &self.signing_key
    }

    /// The X25519 identity key.
    pub fn dh_key(&self) -> &[u8; 32] {
        &self.dh_key
    }

    /// Verifies an Ed25519 signature by this device over `message` (strict
    /// verification: no malleable or small-order encodings).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        let verifying = VerifyingKey::from_bytes(&self.signing_key)
            .map_err(|_| DecodeError::InvalidKey("identity.signing_key"))?;
        verify_with(&verifying, message, signature)
    }

    /// Whether two identities are the same, in constant time.
    pub fn ct_eq(&self, other: &Self) -> bool {
        bool::from(self.ct_eq_choice(other))
    }

    pub(crate) fn to_proto(&self) -> pb::DeviceIdentity {
        pb::DeviceIdentity {
            signing_key: self.signing_key.to_vec(),
            dh_key: self.dh_key.to_vec(),
            dh_key_signature: self.signature.to_vec(),
        }
    }

    pub(crate) fn from_proto(p: &pb::DeviceIdentity) -> Result<Self> {
        Self::from_parts(&p.signing_key, &p.dh_key, &p.dh_key_signature)
    }

    /// [`Self::from_proto`] with the verifying key, for further signatures.
    pub(crate) fn from_proto_with_key(p: &pb::DeviceIdentity) -> Result<(Self, VerifyingKey)> {
        Self::checked(&p.signing_key, &p.dh_key, &p.dh_key_signature)
    }

    /// [`Self::from_proto`] for a caller that already holds verified
    /// identities: one equal to an identity of `known` in all 128 bytes
    /// (compared in constant time) is that identity, so its binding
    /// signature is not verified again. Any other is checked in full. The
    /// result is exactly [`Self::from_proto`]'s for every input: the same
    /// identity, or the same error.
    pub(crate) fn from_proto_known(
        p: &pb::DeviceIdentity,
        known: &[DeviceIdentity],
    ) -> Result<Self> {
        match Self::find_known(p, known)? {
            Some(identity) => Ok(identity),
            None => Self::from_proto(p),
        }
    }

    /// [`Self::from_proto_with_key`] with [`Self::from_proto_known`]'s
    /// shortcut; the key is decompressed either way.
    pub(crate) fn from_proto_known_with_key(
        p: &pb::DeviceIdentity,
        known: &[DeviceIdentity],
    ) -> Result<(Self, VerifyingKey)> {
        match Self::find_known(p, known)? {
            Some(identity) => {
                // Cannot fail: the known identity's key decompressed when it
                // was verified.
                let verifying = VerifyingKey::from_bytes(&identity.signing_key)
                    .map_err(|_| DecodeError::InvalidKey("identity.signing_key"))?;
                Ok((identity, verifying))
            }
            None => Self::from_proto_with_key(p),
        }
    }

    /// The fields' lengths are checked first and in the same order as
    /// [`Self::checked`] does, so a malformed identity fails the same way;
    /// then the identity of `known` equal to it, if any.
    fn find_known(p: &pb::DeviceIdentity, known: &[DeviceIdentity]) -> Result<Option<Self>> {
        let candidate = Self {
            signing_key: fixed::<32>("identity.signing_key", &p.signing_key)?,
            dh_key: fixed::<32>("identity.dh_key", &p.dh_key)?,
            signature: fixed::<64>("identity.dh_key_signature", &p.dh_key_signature)?,
        };
        let mut found = subtle::Choice::from(0);
        for identity in known {
            found |= candidate.ct_eq_choice(identity);
        }
        Ok(bool::from(found).then_some(candidate))
    }

    fn ct_eq_choice(&self, other: &Self) -> subtle::Choice {
        self.signing_key.ct_eq(&other.signing_key)
            & self.dh_key.ct_eq(&other.dh_key)
            & self.signature.ct_eq(&other.signature)
    }

    /// Rebuilds an identity from the caller's own encrypted session store
    /// without re-verifying it: it was verified when the session was made.
    pub(crate) fn from_trusted_proto(p: &pb::DeviceIdentity) -> Result<Self> {
        Ok(Self {
            signing_key: fixed::<32>("identity.signing_key", &p.signing_key)?,
            dh_key: fixed::<32>("identity.dh_key", &p.dh_key)?,
            signature: fixed::<64>("identity.dh_key_signature", &p.dh_key_signature)?,
        })
    }
}

impl fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            signing_key,
            dh_key: _,
            signature: _,
        } = self;
        write!(f, "DeviceIdentity(")?;
        for byte in &signing_key[..8] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Strict Ed25519 verification with an already decompressed key.
pub(crate) fn verify_with(
    verifying: &VerifyingKey,
    message: &[u8],
    signature: &[u8],
) -> Result<()> {
    let signature = fixed::<64>("signature", signature)?;
    verifying
        .verify_strict(message, &Signature::from_bytes(&signature))
        .map_err(|_| Error::BadSignature)
}

fn binding_message(dh_key: &[u8; 32]) -> [u8; IDENTITY_BINDING_LABEL.len() + 32] {
    let mut message = [0u8; IDENTITY_BINDING_LABEL.len() + 32];
    message[..IDENTITY_BINDING_LABEL.len()].copy_from_slice(IDENTITY_BINDING_LABEL);
    message[IDENTITY_BINDING_LABEL.len()..].copy_from_slice(dh_key);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng;

    #[test]
    fn secret_bytes_round_trip_to_the_same_identity() {
        let id = IdentityKeyPair::generate(&mut test_rng(1));
        let again = IdentityKeyPair::from_secret_bytes(&id.to_secret_bytes()[..]).unwrap();
        assert_eq!(id.public(), again.public());
        assert_eq!(
            DeviceIdentity::from_bytes(&id.public().to_bytes()).unwrap(),
            *id.public()
        );
        assert_eq!(
            DeviceIdentity::decode(&id.public().encode()).unwrap(),
            *id.public()
        );
    }

    #[test]
    fn a_swapped_dh_key_is_refused() {
        let a = IdentityKeyPair::generate(&mut test_rng(1));
        let b = IdentityKeyPair::generate(&mut test_rng(2));
        let mut forged = a.public().to_bytes();
        forged[32..64].copy_from_slice(b.public().dh_key());
        assert_eq!(
            DeviceIdentity::from_bytes(&forged),
            Err(Error::BadSignature)
        );
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let id = IdentityKeyPair::generate(&mut test_rng(3));
        let good = id.public().to_bytes();
        for bit in 0..good.len() * 8 {
            let mut bad = good;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(DeviceIdentity::from_bytes(&bad).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn small_order_signing_key_is_refused() {
        // The identity point encodes to 0x01 followed by zeroes: small order.
        let mut bytes = [0u8; 128];
        bytes[0] = 1;
        assert_eq!(
            DeviceIdentity::from_bytes(&bytes),
            Err(Error::Decode(DecodeError::InvalidKey(
                "identity.signing_key"
            )))
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let id = IdentityKeyPair::generate(&mut test_rng(4));
        let shown = alloc::format!("{id:?}");
        let secret = id.to_secret_bytes();
        let hex: alloc::string::String = secret[..4]
            .iter()
            .map(|b| alloc::format!("{b:02x}"))
            .collect();
        assert!(!shown.contains(&hex), "{shown}");
        assert!(shown.starts_with("IdentityKeyPair { public: DeviceIdentity("));
    }

    #[test]
    fn signatures_verify_only_for_their_message() {
        let id = IdentityKeyPair::generate(&mut test_rng(5));
        let sig = id.sign(b"challenge");
        assert_eq!(id.public().verify(b"challenge", &sig), Ok(()));
        assert_eq!(
            id.public().verify(b"challengf", &sig),
            Err(Error::BadSignature)
        );
    }
}

#[cfg(test)]
mod secret_format_tests {
    use super::*;
    use crate::test_rng;

    #[test]
    fn identity_secrets_carry_their_format_byte() {
        let id = IdentityKeyPair::generate(&mut test_rng(6));
        let mut bytes = *id.to_secret_bytes();
        assert_eq!(bytes[0], format::IDENTITY_SECRET);
        bytes[0] = format::SIGNED_PREKEY_SECRET;
        assert_eq!(
            IdentityKeyPair::from_secret_bytes(&bytes).err(),
            Some(Error::UnsupportedFormat {
                found: format::SIGNED_PREKEY_SECRET
            })
        );
        assert!(IdentityKeyPair::from_secret_bytes(&bytes[..64]).is_err());
    }
}
