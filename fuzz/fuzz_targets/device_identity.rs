//! The decoders of public key material: `DeviceIdentity` (protobuf and the
//! fixed 128-byte form), `SignedPreKeys` under a fixed identity, and
//! `OneTimePreKey`.
//!
//! Each input is offered to every decoder: they share the protobuf layer, so
//! a seed that reaches deep into one is a useful mutation base for the
//! others.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ward_core::{DeviceIdentity, OneTimePreKey, SignedPreKeys};

/// The identity signed prekeys are verified against. Fixed (and matching the
/// seed corpus) so that the fuzzer can reach the success path by mutating the
/// seed rather than having to forge an Ed25519 signature.
fn fixed_identity() -> &'static DeviceIdentity {
    static IDENTITY: OnceLock<DeviceIdentity> = OnceLock::new();
    IDENTITY.get_or_init(|| ward_fuzz::fixed_device().identity.public().clone())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(identity) = DeviceIdentity::decode(data) {
        let again = DeviceIdentity::decode(&identity.encode()).expect("re-encoded identity");
        assert_eq!(again, identity, "protobuf round trip changed the identity");
        assert!(again.ct_eq(&identity), "ct_eq disagrees with ==");
        let fixed = DeviceIdentity::from_bytes(&identity.to_bytes()).expect("fixed form");
        assert_eq!(fixed, identity, "the two encodings disagree");
    }

    if let Ok(identity) = DeviceIdentity::from_bytes(data) {
        // The fixed form has exactly one byte form: it must come back as is.
        assert_eq!(&identity.to_bytes()[..], data, "fixed form not canonical");
        let again = DeviceIdentity::decode(&identity.encode()).expect("protobuf form");
        assert_eq!(again, identity, "the two encodings disagree");
    }

    let identity = fixed_identity();
    if let Ok(signed) = SignedPreKeys::decode(data, identity) {
        let encoded = signed.encode();
        let again = SignedPreKeys::decode(&encoded, identity).expect("re-encoded signed prekeys");
        assert_eq!(again, signed, "signed prekeys changed");
        assert_eq!(again.encode(), encoded, "encoding is not stable");
    }

    if let Ok(one_time) = OneTimePreKey::decode(data) {
        let encoded = one_time.encode();
        let again = OneTimePreKey::decode(&encoded).expect("re-encoded one-time prekey");
        assert_eq!(again, one_time, "one-time prekey changed");
        assert_eq!(again.encode(), encoded, "encoding is not stable");
    }
});
