//! The store's keys and sealing (spec/11-client-store.md, "Keys" and
//! "Sealed values").

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::{Result, StoreError, corrupt};

/// HKDF `info` of the sealing key.
pub(super) const LABEL_SEAL_KEY: &[u8] = b"Ward v1 store seal key\0";
/// HKDF `info` of the blind-index key.
pub(super) const LABEL_INDEX_KEY: &[u8] = b"Ward v1 store index key\0";
/// HKDF `info` of the key check.
pub(super) const LABEL_KEY_CHECK: &[u8] = b"Ward v1 store key check\0";
/// Start of every sealed value's associated data.
pub(super) const LABEL_RECORD: &[u8] = b"Ward v1 store record\0";

/// Length of the per-store HKDF salt.
pub(super) const SALT_LEN: usize = 32;
/// Length of a sealed value's nonce.
pub(super) const NONCE_LEN: usize = 12;
/// Length of a sealed value's Poly1305 tag.
pub(super) const TAG_LEN: usize = 16;
/// The largest plaintext of one sealed value (16 MiB).
pub const MAX_VALUE_LEN: usize = 16 << 20;

/// The 32-byte key an app gives the store, from the platform's key store
/// (the iOS Keychain, the Android Keystore). Zeroized on drop; its `Debug`
/// shows no bytes.
///
/// The store never uses it directly: it derives its keys from it with
/// HKDF-SHA256 and a per-store salt (spec/11, STO-3).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct StorageKey {
    bytes: [u8; 32],
}

impl StorageKey {
    /// Wraps the key's bytes. The caller's own copy of `bytes` is not
    /// touched: zeroize it if it lives on.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self { bytes }
    }
}

impl From<[u8; 32]> for StorageKey {
    fn from(bytes: [u8; 32]) -> Self {
        Self::new(bytes)
    }
}

impl core::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self { bytes: _ } = self;
        f.write_str("StorageKey(..)")
    }
}

/// The keys of an unlocked store. Both are zeroized on drop (the cipher
/// zeroizes its key copy through `chacha20poly1305/zeroize`).
pub(super) struct Keys {
    seal: ChaCha20Poly1305,
    index: Zeroizing<[u8; 32]>,
}

/// The key check stored in `meta` (STO-4), compared in constant time.
pub(super) struct KeyCheck(pub(super) [u8; 32]);

impl KeyCheck {
    pub(super) fn matches(&self, stored: &[u8; 32]) -> bool {
        self.0.ct_eq(stored).into()
    }
}

/// `prk = HKDF-Extract(salt, storage_key)`, then the three 32-byte outputs
/// of "Keys".
pub(super) fn derive(key: &StorageKey, salt: &[u8; SALT_LEN]) -> (Keys, KeyCheck) {
    let hkdf = Hkdf::<Sha256>::new(Some(salt), &key.bytes);
    let mut seal = Zeroizing::new([0u8; 32]);
    let mut index = Zeroizing::new([0u8; 32]);
    let mut check = [0u8; 32];
    // 32 bytes is far below HKDF's 255 * 32 limit: these cannot fail.
    let _ = hkdf.expand(LABEL_SEAL_KEY, seal.as_mut_slice());
    let _ = hkdf.expand(LABEL_INDEX_KEY, index.as_mut_slice());
    let _ = hkdf.expand(LABEL_KEY_CHECK, &mut check);
    let keys = Keys {
        seal: ChaCha20Poly1305::new(&(*seal).into()),
        index,
    };
    (keys, KeyCheck(check))
}

/// `random(n)` from the operating system.
pub(super) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|_| StoreError::Random)?;
    Ok(out)
}

/// `"Ward v1 store record\0" || u8(1) || u8(len(table)) || table || record_key`.
fn associated_data(table: &'static str, record_key: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(LABEL_RECORD.len() + 2 + table.len() + record_key.len());
    ad.extend_from_slice(LABEL_RECORD);
    ad.push(super::RECORD_FORMAT);
    // Table names are fixed ASCII names shorter than 32 bytes.
    ad.push(table.len() as u8);
    ad.extend_from_slice(table.as_bytes());
    ad.extend_from_slice(record_key);
    ad
}

impl Keys {
    /// `nonce || AEAD-Seal(seal_key, nonce, ad, plaintext)` with a fresh
    /// random nonce (STO-7, STO-8).
    pub(super) fn seal(
        &self,
        table: &'static str,
        record_key: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        self.seal_with_nonce(random::<NONCE_LEN>()?, table, record_key, plaintext)
    }

    fn seal_with_nonce(
        &self,
        nonce: [u8; NONCE_LEN],
        table: &'static str,
        record_key: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        if plaintext.len() > MAX_VALUE_LEN {
            return Err(StoreError::TooLarge { what: table });
        }
        let ad = associated_data(table, record_key);
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .seal
            .encrypt_inout_detached(&nonce.into(), &ad, (&mut out[NONCE_LEN..]).into())
            .map_err(|_| StoreError::TooLarge { what: table })?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens a sealed value read from `table` under its place; a value
    /// that does not authenticate is [`StoreError::Tampered`] (STO-9).
    pub(super) fn open(
        &self,
        table: &'static str,
        record_key: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(corrupt(table, "sealed value too short"));
        }
        if sealed.len() > NONCE_LEN + MAX_VALUE_LEN + TAG_LEN {
            return Err(corrupt(table, "sealed value too long"));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| corrupt(table, "sealed value too short"))?;
        let tag: [u8; TAG_LEN] = tag
            .try_into()
            .map_err(|_| corrupt(table, "sealed value too short"))?;
        let ad = associated_data(table, record_key);
        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        self.seal
            .decrypt_inout_detached(
                &nonce.into(),
                &ad,
                plaintext.as_mut_slice().into(),
                &tag.into(),
            )
            .map_err(|_| StoreError::Tampered { table })?;
        Ok(plaintext)
    }

    /// A blind index: `HMAC(index_key, name || 0x00 || data)` (STO-10).
    pub(super) fn tag(&self, name: &str, data: &[&[u8]]) -> [u8; 32] {
        // HMAC zero-pads short keys to the block size (RFC 2104): padding
        // here gives the same MAC, infallibly.
        let mut block = hmac::digest::Key::<Hmac<Sha256>>::default();
        block[..32].copy_from_slice(self.index.as_slice());
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&block);
        block.as_mut_slice().zeroize();
        mac.update(name.as_bytes());
        mac.update(&[0]);
        for part in data {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The worked example of spec/11 ("Example"), computed independently
    /// (Python's `hmac`, `hashlib` and `cryptography`).
    #[test]
    fn the_spec_example_is_reproduced() {
        let key = StorageKey::new(core::array::from_fn(|i| i as u8));
        let salt: [u8; 32] = core::array::from_fn(|i| 0x20 + i as u8);
        let (keys, check) = derive(&key, &salt);
        assert_eq!(
            hex(&check.0),
            "70968bfe32573c695027ceb2f5ecf583b96daba460f8dea7084ae956fc4676a8"
        );
        assert_eq!(
            hex(keys.index.as_slice()),
            "1e9b9de601db4d9c093bdb023fe5311c131b803b75b61ba7f7f85995d0a31e2b"
        );
        assert_eq!(
            hex(&associated_data("one_time_prekeys", &1u32.to_be_bytes())),
            "576172642076312073746f7265207265636f72640001106f6e655f74696d655f7072656b65797300000001"
        );
        let mut plaintext = vec![0x06, 0, 0, 0, 1];
        plaintext.extend(0x40..0x60u8);
        let nonce: [u8; 12] = core::array::from_fn(|i| 0x60 + i as u8);
        let sealed = keys
            .seal_with_nonce(nonce, "one_time_prekeys", &1u32.to_be_bytes(), &plaintext)
            .unwrap();
        assert_eq!(
            hex(&sealed),
            "606162636465666768696a6b288b9847d1b167e746996c1a68c4c3527411aaa4\
             94c270cbfd5d542c8627b0297d9c5ded497ef60235686669fed4912b21b6f3709b"
        );
        let opened = keys
            .open("one_time_prekeys", &1u32.to_be_bytes(), &sealed)
            .unwrap();
        assert_eq!(opened.as_slice(), plaintext.as_slice());
        assert!(matches!(
            keys.open("one_time_prekeys", &2u32.to_be_bytes(), &sealed),
            Err(StoreError::Tampered {
                table: "one_time_prekeys"
            })
        ));
        assert!(matches!(
            keys.open("signed_prekeys", &1u32.to_be_bytes(), &sealed),
            Err(StoreError::Tampered { .. })
        ));
        assert_eq!(
            hex(&keys.tag("incoming", &[&[0x11; 32], &[0x22; 16]])),
            "6ff3c6491825f423cc1113fe0b3c0ae3ee7fe6eae18046d40aa6d3f5c3d06ba1"
        );
    }

    #[test]
    fn a_wrong_key_gives_another_check() {
        let salt = [7u8; 32];
        let (_, a) = derive(&StorageKey::new([1; 32]), &salt);
        let (_, b) = derive(&StorageKey::new([2; 32]), &salt);
        let (_, c) = derive(&StorageKey::new([1; 32]), &[8; 32]);
        assert!(a.matches(&a.0));
        assert!(!a.matches(&b.0));
        assert!(!a.matches(&c.0));
    }
}
