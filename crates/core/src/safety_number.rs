//! Safety numbers: what two people compare, aloud or by QR code, to know that
//! no one sits between their devices (spec/07-safety-numbers.md).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::identity::DeviceIdentity;

/// Hash prefix of a party's fingerprint.
pub const SAFETY_NUMBER_LABEL: &[u8] = b"Ward v1 safety number\0";
/// Version byte of the QR payload.
pub const QR_VERSION: u8 = 1;
/// Digits in a safety number (30 per party).
pub const DIGITS: usize = 60;
/// Bytes in the QR payload.
pub const QR_LEN: usize = 1 + 2 * 32;

/// One side of a conversation: a stable user id the app chooses (for
/// example the directory's user id) and the identities of that user's
/// devices, in any order.
#[derive(Debug, Clone, Copy)]
pub struct Party<'a> {
    /// The user's stable identifier.
    pub user_id: &'a [u8],
    /// The user's device identities.
    pub devices: &'a [DeviceIdentity],
}

/// A safety number, the same on both sides.
#[derive(Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    digits: String,
    qr: [u8; QR_LEN],
}

impl SafetyNumber {
    /// Computes the safety number of two parties. Swapping them gives the same
    /// number, so each device computes it with itself as `local`. A user id
    /// or device list longer than 65,535 is refused, never cut short.
    pub fn new(local: Party<'_>, remote: Party<'_>) -> Result<Self> {
        let a = fingerprint(local)?;
        let b = fingerprint(remote)?;
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        let mut digits = String::with_capacity(DIGITS);
        for half in [&first, &second] {
            for chunk in half[..30].chunks_exact(5) {
                let mut word = [0u8; 8];
                word[3..].copy_from_slice(chunk);
                let value = u64::from_be_bytes(word) % 100_000;
                push_five_digits(&mut digits, value);
            }
        }
        let mut qr = [0u8; QR_LEN];
        qr[0] = QR_VERSION;
        qr[1..33].copy_from_slice(&first);
        qr[33..].copy_from_slice(&second);
        Ok(Self { digits, qr })
    }

    /// The 60 digits, to read aloud.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// The digits in twelve groups of five, as an app shows them.
    pub fn grouped(&self) -> String {
        let mut out = String::with_capacity(DIGITS + 11);
        for (i, c) in self.digits.chars().enumerate() {
            if i > 0 && i % 5 == 0 {
                out.push(' ');
            }
            out.push(c);
        }
        out
    }

    /// The payload to show as a QR code.
    pub fn qr_payload(&self) -> &[u8; QR_LEN] {
        &self.qr
    }

    /// Whether a scanned QR payload matches this safety number (constant time).
    pub fn matches_qr(&self, scanned: &[u8]) -> bool {
        scanned.len() == QR_LEN && bool::from(self.qr.ct_eq(scanned))
    }
}

impl fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafetyNumber({})", self.grouped())
    }
}

/// `SHA-512(label || u16(len(user_id)) || user_id || u16(n) || sorted signing keys)[..32]`.
fn fingerprint(party: Party<'_>) -> Result<[u8; 32]> {
    let mut keys: Vec<&[u8; 32]> = party.devices.iter().map(|d| d.signing_key()).collect();
    keys.sort_unstable();
    keys.dedup();
    let too_long = |field| Error::InputTooLong {
        field,
        max: usize::from(u16::MAX),
    };
    let id_len = u16::try_from(party.user_id.len()).map_err(|_| too_long("user_id"))?;
    let key_count = u16::try_from(keys.len()).map_err(|_| too_long("devices"))?;
    let mut hash = Sha512::new();
    hash.update(SAFETY_NUMBER_LABEL);
    hash.update(id_len.to_be_bytes());
    hash.update(party.user_id);
    hash.update(key_count.to_be_bytes());
    for key in keys {
        hash.update(key);
    }
    let digest = hash.finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest[..32]);
    Ok(out)
}

fn push_five_digits(out: &mut String, value: u64) {
    let mut divisor = 10_000;
    while divisor > 0 {
        let digit = (value / divisor) % 10;
        out.push(char::from(b'0' + digit as u8));
        divisor /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdentityKeyPair;
    use crate::test_rng;

    #[test]
    fn both_sides_see_the_same_number() {
        let alice = IdentityKeyPair::generate(&mut test_rng(1));
        let bob = IdentityKeyPair::generate(&mut test_rng(2));
        let bob_desktop = IdentityKeyPair::generate(&mut test_rng(3));
        let a_devices = [alice.public().clone()];
        let b_devices = [bob.public().clone(), bob_desktop.public().clone()];
        let b_reordered = [bob_desktop.public().clone(), bob.public().clone()];
        let on_alice = SafetyNumber::new(
            Party {
                user_id: b"alice",
                devices: &a_devices,
            },
            Party {
                user_id: b"bob",
                devices: &b_devices,
            },
        )
        .unwrap();
        let on_bob = SafetyNumber::new(
            Party {
                user_id: b"bob",
                devices: &b_reordered,
            },
            Party {
                user_id: b"alice",
                devices: &a_devices,
            },
        )
        .unwrap();
        assert_eq!(on_alice, on_bob);
        assert_eq!(on_alice.digits().len(), DIGITS);
        assert!(on_alice.digits().bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(on_alice.grouped().len(), DIGITS + 11);
        assert!(on_bob.matches_qr(on_alice.qr_payload()));
    }

    #[test]
    fn a_changed_device_changes_the_number() {
        let alice = IdentityKeyPair::generate(&mut test_rng(1));
        let bob = IdentityKeyPair::generate(&mut test_rng(2));
        let mallory = IdentityKeyPair::generate(&mut test_rng(4));
        let a = [alice.public().clone()];
        let real = SafetyNumber::new(
            Party {
                user_id: b"alice",
                devices: &a,
            },
            Party {
                user_id: b"bob",
                devices: &[bob.public().clone()],
            },
        )
        .unwrap();
        let forged = SafetyNumber::new(
            Party {
                user_id: b"alice",
                devices: &a,
            },
            Party {
                user_id: b"bob",
                devices: &[mallory.public().clone()],
            },
        )
        .unwrap();
        assert_ne!(real.digits(), forged.digits());
        assert!(!real.matches_qr(forged.qr_payload()));
        assert!(!real.matches_qr(&real.qr_payload()[..10]));
    }

    #[test]
    fn an_overlong_user_id_is_refused_not_truncated() {
        let alice = IdentityKeyPair::generate(&mut test_rng(1));
        let a = [alice.public().clone()];
        let long = alloc::vec![b'x'; 65_536];
        let got = SafetyNumber::new(
            Party {
                user_id: &long,
                devices: &a,
            },
            Party {
                user_id: b"bob",
                devices: &a,
            },
        );
        assert_eq!(
            got.err(),
            Some(Error::InputTooLong {
                field: "user_id",
                max: 65_535
            })
        );
    }
}
