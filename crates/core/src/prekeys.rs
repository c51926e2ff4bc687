//! Signed prekeys, one-time prekeys and prekey bundles (spec/02-keys.md).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use ed25519_dalek::VerifyingKey;
use rand_core::CryptoRng;
use ward_proto::{Message, core_v1 as pb};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::encoding::{expect_format, fixed, format};
use crate::error::{DecodeError, Result};
use crate::identity::{DeviceIdentity, IdentityKeyPair, verify_with};
use crate::kem::{DecapsulationKey, EncapsulationKey};

/// Prefix of the message the identity key signs over a signed prekey set.
pub const SIGNED_PREKEYS_LABEL: &[u8] = b"Ward v1 signed prekeys\0";

/// Length of an ML-KEM-768 encapsulation key.
pub const KEM_PUBLIC_KEY_LEN: usize = 1184;
/// Length of an ML-KEM-768 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;

/// A signed prekey set's secrets: an X25519 key and an ML-KEM-768 key that
/// rotate together under one id. Zeroized on drop.
pub struct SignedPreKeyPair {
    dh: StaticSecret,
    kem_seed: Zeroizing<[u8; 64]>,
    kem: DecapsulationKey,
    public: SignedPreKeys,
}

/// The public half of a signed prekey set, with the identity's signature.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedPreKeys {
    id: u32,
    created_at: u64,
    dh_key: [u8; 32],
    kem_key: Box<[u8; KEM_PUBLIC_KEY_LEN]>,
    signature: [u8; 64],
}

/// A one-time prekey's secret. Zeroized on drop; use once, then delete.
pub struct OneTimePreKeyPair {
    id: u32,
    secret: StaticSecret,
    public: [u8; 32],
}

/// The public half of a one-time prekey.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OneTimePreKey {
    /// Its id, chosen by the device.
    pub id: u32,
    /// The X25519 public key.
    pub key: [u8; 32],
}

/// Everything an initiator needs to open a session with one device. Holding
/// one means its signatures have been verified.
#[derive(Clone)]
pub struct PreKeyBundle {
    identity: DeviceIdentity,
    signed: SignedPreKeys,
    kem_key: EncapsulationKey,
    one_time: Option<OneTimePreKey>,
}

impl SignedPreKeyPair {
    /// Generates and signs a new prekey set. `created_at` is the caller's clock
    /// (seconds since the Unix epoch); the core reads no clock.
    pub fn generate<R: CryptoRng + ?Sized>(
        rng: &mut R,
        identity: &IdentityKeyPair,
        id: u32,
        created_at: u64,
    ) -> Self {
        let mut dh = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(dh.as_mut_slice());
        let mut kem_seed = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(kem_seed.as_mut_slice());
        Self::from_parts(identity, id, created_at, &dh, kem_seed)
    }

    fn from_parts(
        identity: &IdentityKeyPair,
        id: u32,
        created_at: u64,
        dh: &[u8; 32],
        kem_seed: Zeroizing<[u8; 64]>,
    ) -> Self {
        let dh = StaticSecret::from(*dh);
        let (kem, kem_key) = DecapsulationKey::from_seed(&kem_seed);
        let dh_key = PublicKey::from(&dh).to_bytes();
        let signature = identity.sign(&signed_message(id, created_at, &dh_key, &kem_key[..]));
        Self {
            dh,
            kem_seed,
            kem,
            public: SignedPreKeys {
                id,
                created_at,
                dh_key,
                kem_key,
                signature,
            },
        }
    }

    /// The public half, to upload to the relay.
    pub fn public(&self) -> &SignedPreKeys {
        &self.public
    }

    /// The id of this set.
    pub fn id(&self) -> u32 {
        self.public.id
    }

    /// Secrets for the caller's encrypted key store: format byte, id,
    /// created_at, X25519 secret, ML-KEM seed (109 bytes).
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(109));
        out.push(format::SIGNED_PREKEY_SECRET);
        out.extend_from_slice(&self.public.id.to_be_bytes());
        out.extend_from_slice(&self.public.created_at.to_be_bytes());
        out.extend_from_slice(self.dh.as_bytes());
        out.extend_from_slice(self.kem_seed.as_slice());
        out
    }

    /// Restores a set from [`Self::to_secret_bytes`]; the signature is
    /// recomputed (Ed25519 is deterministic) with `identity`, which must be
    /// the one the set was made with: the store is the caller's own.
    pub fn from_secret_bytes(identity: &IdentityKeyPair, bytes: &[u8]) -> Result<Self> {
        let body = expect_format(bytes, format::SIGNED_PREKEY_SECRET)?;
        let body = fixed::<108>("signed_prekey_secret", body)?;
        let id = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let mut created = [0u8; 8];
        created.copy_from_slice(&body[4..12]);
        let mut dh = Zeroizing::new([0u8; 32]);
        dh.copy_from_slice(&body[12..44]);
        let mut kem_seed = Zeroizing::new([0u8; 64]);
        kem_seed.copy_from_slice(&body[44..]);
        let mut body = body;
        body.zeroize();
        Ok(Self::from_parts(
            identity,
            id,
            u64::from_be_bytes(created),
            &dh,
            kem_seed,
        ))
    }

    pub(crate) fn dh_secret(&self) -> &StaticSecret {
        &self.dh
    }

    pub(crate) fn kem(&self) -> &DecapsulationKey {
        &self.kem
    }
}

impl fmt::Debug for SignedPreKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            dh: _,
            kem_seed: _,
            kem: _,
            public,
        } = self;
        f.debug_struct("SignedPreKeyPair")
            .field("public", public)
            .finish_non_exhaustive()
    }
}

impl SignedPreKeys {
    /// The id of this set.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// When it was made, by the generating device's clock.
    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    /// The X25519 public key.
    pub fn dh_key(&self) -> &[u8; 32] {
        &self.dh_key
    }

    /// Decodes the protobuf `SignedPreKeys` and verifies its signature under
    /// `identity`.
    pub fn decode(bytes: &[u8], identity: &DeviceIdentity) -> Result<Self> {
        let verifying = VerifyingKey::from_bytes(identity.signing_key())
            .map_err(|_| DecodeError::InvalidKey("identity.signing_key"))?;
        Self::from_proto(&pb::SignedPreKeys::decode(bytes)?, &verifying)
    }

    /// Encodes as protobuf `SignedPreKeys`.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    fn to_proto(&self) -> pb::SignedPreKeys {
        pb::SignedPreKeys {
            id: self.id,
            created_at: self.created_at,
            dh_key: self.dh_key.to_vec(),
            kem_key: self.kem_key.to_vec(),
            signature: self.signature.to_vec(),
        }
    }

    fn from_proto(p: &pb::SignedPreKeys, identity: &VerifyingKey) -> Result<Self> {
        let parsed = Self {
            id: p.id,
            created_at: p.created_at,
            dh_key: fixed::<32>("signed_prekeys.dh_key", &p.dh_key)?,
            kem_key: Box::new(fixed::<KEM_PUBLIC_KEY_LEN>(
                "signed_prekeys.kem_key",
                &p.kem_key,
            )?),
            signature: fixed::<64>("signed_prekeys.signature", &p.signature)?,
        };
        verify_with(
            identity,
            &signed_message(
                parsed.id,
                parsed.created_at,
                &parsed.dh_key,
                &parsed.kem_key[..],
            ),
            &parsed.signature,
        )?;
        Ok(parsed)
    }

    fn parse_kem_key(&self) -> Result<EncapsulationKey> {
        EncapsulationKey::new(&self.kem_key)
            .ok_or_else(|| DecodeError::InvalidKey("signed_prekeys.kem_key").into())
    }
}

impl fmt::Debug for SignedPreKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPreKeys")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl OneTimePreKeyPair {
    /// Generates `count` one-time prekeys with ids `first_id, first_id + 1, …`
    /// (wrapping).
    pub fn generate_batch<R: CryptoRng + ?Sized>(
        rng: &mut R,
        first_id: u32,
        count: u32,
    ) -> Vec<Self> {
        (0..count)
            .map(|i| {
                let mut secret = Zeroizing::new([0u8; 32]);
                rng.fill_bytes(secret.as_mut_slice());
                Self::from_parts(first_id.wrapping_add(i), &secret)
            })
            .collect()
    }

    fn from_parts(id: u32, secret: &[u8; 32]) -> Self {
        let secret = StaticSecret::from(*secret);
        let public = PublicKey::from(&secret).to_bytes();
        Self { id, secret, public }
    }

    /// The public half, to upload to the relay.
    pub fn public(&self) -> OneTimePreKey {
        OneTimePreKey {
            id: self.id,
            key: self.public,
        }
    }

    /// The id of this prekey.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Format byte, id, X25519 secret (37 bytes), for the caller's encrypted
    /// key store.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(37));
        out.push(format::ONE_TIME_PREKEY_SECRET);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(self.secret.as_bytes());
        out
    }

    /// Restores a prekey from [`Self::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        let body = expect_format(bytes, format::ONE_TIME_PREKEY_SECRET)?;
        let mut body = fixed::<36>("one_time_prekey_secret", body)?;
        let id = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&body[4..]);
        body.zeroize();
        Ok(Self::from_parts(id, &secret))
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl fmt::Debug for OneTimePreKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimePreKeyPair")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl OneTimePreKey {
    /// Decodes the protobuf `OneTimePreKey`.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::from_proto(&pb::OneTimePreKey::decode(bytes)?)
    }

    /// Encodes as protobuf `OneTimePreKey`.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    fn to_proto(self) -> pb::OneTimePreKey {
        pb::OneTimePreKey {
            id: self.id,
            key: self.key.to_vec(),
        }
    }

    fn from_proto(p: &pb::OneTimePreKey) -> Result<Self> {
        Ok(Self {
            id: p.id,
            key: fixed::<32>("one_time_prekey.key", &p.key)?,
        })
    }
}

impl fmt::Debug for OneTimePreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimePreKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl PreKeyBundle {
    /// Assembles a bundle, verifying that `signed` is signed by `identity`.
    pub fn new(
        identity: DeviceIdentity,
        signed: SignedPreKeys,
        one_time: Option<OneTimePreKey>,
    ) -> Result<Self> {
        let verifying = VerifyingKey::from_bytes(identity.signing_key())
            .map_err(|_| DecodeError::InvalidKey("identity.signing_key"))?;
        let signed = SignedPreKeys::from_proto(&signed.to_proto(), &verifying)?;
        let kem_key = signed.parse_kem_key()?;
        Ok(Self {
            identity,
            signed,
            kem_key,
            one_time,
        })
    }

    /// Decodes a bundle and verifies both of its signatures and its ML-KEM
    /// key. X25519 keys are checked when used (non-contributory results fail).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_known(bytes, &[])
    }

    /// [`Self::decode`] for an initiator that already holds verified
    /// identities of the device (from its own store, or an earlier bundle):
    /// if the bundle's identity equals one of `known` in all 128 bytes,
    /// compared in constant time, its Ed25519 binding signature is not
    /// verified again. Any other identity is verified in full, and the
    /// signed prekeys' signature and the ML-KEM key are always checked. So
    /// this returns exactly what [`Self::decode`] returns for the same
    /// bytes, only sooner for a known device.
    pub fn decode_known(bytes: &[u8], known: &[DeviceIdentity]) -> Result<Self> {
        let body = expect_format(bytes, format::PREKEY_BUNDLE)?;
        let p = pb::PreKeyBundle::decode(body)?;
        let (identity, verifying) = DeviceIdentity::from_proto_known_with_key(
            p.identity
                .as_ref()
                .ok_or(DecodeError::MissingField("bundle.identity"))?,
            known,
        )?;
        let signed = SignedPreKeys::from_proto(
            p.signed_prekeys
                .as_ref()
                .ok_or(DecodeError::MissingField("bundle.signed_prekeys"))?,
            &verifying,
        )?;
        let kem_key = signed.parse_kem_key()?;
        let one_time = p
            .one_time_prekey
            .as_ref()
            .map(OneTimePreKey::from_proto)
            .transpose()?;
        Ok(Self {
            identity,
            signed,
            kem_key,
            one_time,
        })
    }

    /// Format byte followed by protobuf `PreKeyBundle`.
    pub fn encode(&self) -> Vec<u8> {
        let p = pb::PreKeyBundle {
            identity: Some(self.identity.to_proto()),
            signed_prekeys: Some(self.signed.to_proto()),
            one_time_prekey: self.one_time.map(OneTimePreKey::to_proto),
        };
        let mut out = Vec::with_capacity(1 + p.encoded_len());
        out.push(format::PREKEY_BUNDLE);
        p.encode_raw(&mut out);
        out
    }

    /// The device this bundle opens a session with.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    /// Its signed prekeys.
    pub fn signed_prekeys(&self) -> &SignedPreKeys {
        &self.signed
    }

    /// Its one-time prekey, if the relay had one left.
    pub fn one_time_prekey(&self) -> Option<&OneTimePreKey> {
        self.one_time.as_ref()
    }

    pub(crate) fn kem_key(&self) -> &EncapsulationKey {
        &self.kem_key
    }
}

impl fmt::Debug for PreKeyBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreKeyBundle")
            .field("identity", &self.identity)
            .field("signed_prekeys", &self.signed)
            .field("one_time_prekey", &self.one_time)
            .finish_non_exhaustive()
    }
}

/// `label || id (u32 BE) || created_at (u64 BE) || dh_key || kem_key`.
fn signed_message(id: u32, created_at: u64, dh_key: &[u8; 32], kem_key: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNED_PREKEYS_LABEL.len() + 12 + 32 + kem_key.len());
    message.extend_from_slice(SIGNED_PREKEYS_LABEL);
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&created_at.to_be_bytes());
    message.extend_from_slice(dh_key);
    message.extend_from_slice(kem_key);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::test_rng;

    fn setup() -> (IdentityKeyPair, SignedPreKeyPair, Vec<OneTimePreKeyPair>) {
        let mut rng = test_rng(10);
        let identity = IdentityKeyPair::generate(&mut rng);
        let signed = SignedPreKeyPair::generate(&mut rng, &identity, 7, 1_700_000_000);
        let one_time = OneTimePreKeyPair::generate_batch(&mut rng, 100, 3);
        (identity, signed, one_time)
    }

    #[test]
    fn bundle_round_trips_and_verifies() {
        let (identity, signed, one_time) = setup();
        let bundle = PreKeyBundle::new(
            identity.public().clone(),
            signed.public().clone(),
            Some(one_time[1].public()),
        )
        .unwrap();
        let decoded = PreKeyBundle::decode(&bundle.encode()).unwrap();
        assert_eq!(decoded.identity(), identity.public());
        assert_eq!(decoded.signed_prekeys(), signed.public());
        assert_eq!(decoded.one_time_prekey(), Some(&one_time[1].public()));
        assert_eq!(
            one_time.iter().map(|k| k.id()).collect::<Vec<_>>(),
            [100, 101, 102]
        );
    }

    #[test]
    fn a_bundle_signed_by_another_identity_is_refused() {
        let (_, signed, _) = setup();
        let other = IdentityKeyPair::generate(&mut test_rng(11));
        assert_eq!(
            PreKeyBundle::new(other.public().clone(), signed.public().clone(), None).err(),
            Some(Error::BadSignature)
        );
    }

    #[test]
    fn a_bundle_with_a_flipped_prekey_bit_is_refused() {
        let (identity, signed, _) = setup();
        let bundle = PreKeyBundle::new(identity.public().clone(), signed.public().clone(), None)
            .unwrap()
            .encode();
        // Flip one bit inside the signed X25519 prekey and inside the KEM key.
        for needle in [&signed.public().dh_key[..], &signed.public().kem_key[..64]] {
            let at = bundle
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap();
            let mut bad = bundle.clone();
            bad[at + 3] ^= 0x10;
            assert_eq!(PreKeyBundle::decode(&bad).err(), Some(Error::BadSignature));
        }
    }

    #[test]
    fn a_bundle_of_unknown_format_is_refused() {
        let (identity, signed, _) = setup();
        let mut bytes = PreKeyBundle::new(identity.public().clone(), signed.public().clone(), None)
            .unwrap()
            .encode();
        bytes[0] = 0x7f;
        assert_eq!(
            PreKeyBundle::decode(&bytes).err(),
            Some(Error::UnsupportedFormat { found: 0x7f })
        );
        assert_eq!(
            PreKeyBundle::decode(&[]).err(),
            Some(Error::Decode(DecodeError::Truncated))
        );
    }

    #[test]
    fn secrets_round_trip() {
        let (identity, signed, one_time) = setup();
        let again =
            SignedPreKeyPair::from_secret_bytes(&identity, &signed.to_secret_bytes()).unwrap();
        assert_eq!(again.public(), signed.public());
        let otk = OneTimePreKeyPair::from_secret_bytes(&one_time[0].to_secret_bytes()).unwrap();
        assert_eq!(otk.public(), one_time[0].public());
        assert!(
            SignedPreKeyPair::from_secret_bytes(&identity, &[format::SIGNED_PREKEY_SECRET])
                .is_err()
        );
    }

    #[test]
    fn uploaded_parts_decode_under_their_identity() {
        let (identity, signed, one_time) = setup();
        let decoded = SignedPreKeys::decode(&signed.public().encode(), identity.public()).unwrap();
        assert_eq!(&decoded, signed.public());
        assert_eq!(
            OneTimePreKey::decode(&one_time[2].public().encode()).unwrap(),
            one_time[2].public()
        );
        let shown = alloc::format!("{signed:?}");
        assert!(shown.contains("id: 7"), "{shown}");
    }
}
