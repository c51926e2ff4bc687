//! ML-KEM-768 (FIPS 203), through libcrux-ml-kem.
//!
//! libcrux-ml-kem is formally verified (hax and F*, for panic freedom,
//! correctness against the FIPS 203 specification and secret independence)
//! and chooses at run time between its AVX2 code and a portable one, which
//! is also what builds for `no_std` targets. Ward passes it the randomness
//! FIPS 203 names explicitly, drawn from the caller's RNG exactly as before:
//! 64 bytes `d || z` for a key pair (kept as the signed prekey set's seed),
//! 32 bytes `m` for an encapsulation. So keys, ciphertexts and shared
//! secrets are byte for byte those of FIPS 203 and of `spec/vectors/`.

use alloc::boxed::Box;

use libcrux_ml_kem::mlkem768::{self, MlKem768Ciphertext, MlKem768PrivateKey, MlKem768PublicKey};
use rand_core::CryptoRng;
use zeroize::{Zeroize, Zeroizing};

use crate::prekeys::{KEM_CIPHERTEXT_LEN, KEM_PUBLIC_KEY_LEN};

/// An ML-KEM-768 decapsulation key in the FIPS 203 expanded form, made
/// from a 64-byte seed. Zeroized on drop.
pub(crate) struct DecapsulationKey(Box<MlKem768PrivateKey>);

/// A checked ML-KEM-768 encapsulation key (FIPS 203 section 7.2).
#[derive(Clone)]
pub(crate) struct EncapsulationKey(Box<MlKem768PublicKey>);

impl DecapsulationKey {
    /// `ML-KEM.KeyGen_internal(d, z)` with `seed = d || z`; returns the key
    /// and its encapsulation key.
    pub(crate) fn from_seed(seed: &[u8; 64]) -> (Self, Box<[u8; KEM_PUBLIC_KEY_LEN]>) {
        // libcrux takes the seed and returns the key pair by value: the
        // copies those moves leave are outside Ward's reach (as they were
        // with the ml-kem crate); the key Ward keeps is wiped on drop.
        let (private, public) = mlkem768::generate_key_pair(*seed).into_parts();
        let mut encapsulation = Box::new([0u8; KEM_PUBLIC_KEY_LEN]);
        encapsulation.copy_from_slice(public.as_slice());
        (Self(Box::new(private)), encapsulation)
    }

    /// `ML-KEM.Decaps`: the shared secret, or the implicit-rejection value
    /// for a ciphertext that does not decrypt.
    pub(crate) fn decapsulate(&self, ciphertext: &[u8; KEM_CIPHERTEXT_LEN]) -> Zeroizing<[u8; 32]> {
        let ciphertext = MlKem768Ciphertext::from(ciphertext);
        Zeroizing::new(mlkem768::decapsulate(&self.0, &ciphertext))
    }
}

impl Drop for DecapsulationKey {
    fn drop(&mut self) {
        self.0[0..].zeroize();
    }
}

impl EncapsulationKey {
    /// Checks an encapsulation key as FIPS 203 section 7.2 requires (every
    /// coefficient below q); `None` if it fails.
    pub(crate) fn new(bytes: &[u8; KEM_PUBLIC_KEY_LEN]) -> Option<Self> {
        let key = Box::new(MlKem768PublicKey::from(bytes));
        mlkem768::validate_public_key(&key).then_some(Self(key))
    }

    /// `ML-KEM.Encaps` with 32 bytes `m` drawn from `rng`: the ciphertext
    /// and the shared secret.
    pub(crate) fn encapsulate<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> (Box<[u8; KEM_CIPHERTEXT_LEN]>, Zeroizing<[u8; 32]>) {
        let mut m = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(m.as_mut_slice());
        let (ciphertext, shared) = mlkem768::encapsulate(&self.0, *m);
        let shared = Zeroizing::new(shared);
        let mut out = Box::new([0u8; KEM_CIPHERTEXT_LEN]);
        out.copy_from_slice(ciphertext.as_slice());
        (out, shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ml_kem::array::Array;
    use ml_kem::{Decapsulate, KeyExport, MlKem768};
    use proptest::prelude::*;

    /// The same operations by the ml-kem crate (RustCrypto), which ward-core
    /// used before: the two implementations must agree byte for byte.
    fn reference_keys(seed: &[u8; 64]) -> ml_kem::DecapsulationKey<MlKem768> {
        ml_kem::DecapsulationKey::<MlKem768>::from_seed(Array(*seed))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn agrees_with_the_ml_kem_crate(seed in any::<[u8; 64]>(), m in any::<[u8; 32]>(), flip in any::<(u16, u8)>()) {
            let reference = reference_keys(&seed);
            let (key, encapsulation) = DecapsulationKey::from_seed(&seed);
            let reference_ek = reference.encapsulation_key();
            prop_assert_eq!(&encapsulation[..], &reference_ek.to_bytes()[..]);

            let ek = EncapsulationKey::new(&encapsulation).unwrap();
            let mut rng = FixedRng(m);
            let (ciphertext, shared) = ek.encapsulate(&mut rng);
            let (reference_ct, reference_shared) = reference_ek.encapsulate_deterministic(&Array(m));
            prop_assert_eq!(&ciphertext[..], &reference_ct[..]);
            prop_assert_eq!(&shared[..], &reference_shared[..]);
            prop_assert_eq!(&key.decapsulate(&ciphertext)[..], &shared[..]);

            // A ciphertext altered anywhere: both reject it implicitly, to
            // the same value.
            let mut altered = ciphertext.clone();
            let bit = 1u8 << (flip.1 % 8);
            altered[usize::from(flip.0) % KEM_CIPHERTEXT_LEN] ^= bit;
            let rejected = key.decapsulate(&altered);
            prop_assert_ne!(&rejected[..], &shared[..]);
            prop_assert_eq!(&rejected[..], &reference.decapsulate(&Array(*altered))[..]);
        }

        #[test]
        fn encapsulation_key_check_agrees_with_the_ml_kem_crate(seed in any::<[u8; 64]>(), at in 0usize..768, high in 0u16..16) {
            // Set one 12-bit coefficient of t-hat to 3329 + high (above q)
            // or leave it; both implementations must judge alike.
            let (_, mut encapsulation) = DecapsulationKey::from_seed(&seed);
            let coefficient = 3329 + high;
            let pair = at / 2 * 3;
            if at % 2 == 0 {
                encapsulation[pair] = coefficient as u8;
                encapsulation[pair + 1] = (encapsulation[pair + 1] & 0xf0) | (coefficient >> 8) as u8;
            } else {
                encapsulation[pair + 1] = (encapsulation[pair + 1] & 0x0f) | ((coefficient & 0x0f) << 4) as u8;
                encapsulation[pair + 2] = (coefficient >> 4) as u8;
            }
            let reference = ml_kem::EncapsulationKey::<MlKem768>::new(&Array(*encapsulation)).is_ok();
            prop_assert!(!reference);
            prop_assert_eq!(EncapsulationKey::new(&encapsulation).is_some(), reference);
        }
    }

    /// An RNG that hands out one fixed 32-byte block, to encapsulate with a
    /// chosen `m`.
    struct FixedRng([u8; 32]);

    impl rand_core::TryRng for FixedRng {
        type Error = core::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            unreachable!("only fill_bytes is used")
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            unreachable!("only fill_bytes is used")
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
            assert_eq!(dst.len(), 32);
            dst.copy_from_slice(&self.0);
            Ok(())
        }
    }

    impl rand_core::TryCryptoRng for FixedRng {}
}
