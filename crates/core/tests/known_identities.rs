//! `PreKeyMessage::decode_known` and `PreKeyBundle::decode_known`: decoding
//! with identities the caller already verified skips only the re-verification
//! of an identical identity, and otherwise returns exactly what `decode`
//! returns, message or error, for every input.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Device, rng};
use proptest::prelude::*;
use ward_core::{DeviceIdentity, Error, PreKeyBundle, PreKeyMessage, Session};

/// Alice's first message to Bob, the bundle it was made from, and both devices.
fn first_message(seed: u64) -> (Device, Device, Vec<u8>, Vec<u8>) {
    let mut rng = rng(seed);
    let alice = Device::new(&mut rng);
    let bob = Device::new(&mut rng);
    let bundle_bytes = bob.bundle(true);
    let bundle = PreKeyBundle::decode(&bundle_bytes).unwrap();
    let mut session = Session::initiate(&mut rng, &alice.identity, &bundle).unwrap();
    let first = session.encrypt(&mut rng, b"hello Bob").unwrap();
    (alice, bob, bundle_bytes, first)
}

fn same_message(
    a: &Result<PreKeyMessage, Error>,
    b: &Result<PreKeyMessage, Error>,
) -> Result<(), TestCaseError> {
    match (a, b) {
        (Ok(a), Ok(b)) => {
            prop_assert!(a.identity().ct_eq(b.identity()));
            prop_assert_eq!(a.encode(), b.encode());
        }
        (Err(a), Err(b)) => prop_assert_eq!(a, b),
        (a, b) => prop_assert!(
            false,
            "decode {:?}, decode_known {:?}",
            a.is_ok(),
            b.is_ok()
        ),
    }
    Ok(())
}

fn same_bundle(
    a: &Result<PreKeyBundle, Error>,
    b: &Result<PreKeyBundle, Error>,
) -> Result<(), TestCaseError> {
    match (a, b) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a.encode(), b.encode()),
        (Err(a), Err(b)) => prop_assert_eq!(a, b),
        (a, b) => prop_assert!(
            false,
            "decode {:?}, decode_known {:?}",
            a.is_ok(),
            b.is_ok()
        ),
    }
    Ok(())
}

#[test]
fn a_known_sender_opens_the_same_session() {
    let (alice, bob, _, first) = first_message(1);
    let known = [alice.identity.public().clone()];
    let message = PreKeyMessage::decode_known(&first, &known).unwrap();
    assert!(message.identity().ct_eq(alice.identity.public()));
    assert_eq!(
        message.encode(),
        PreKeyMessage::decode(&first).unwrap().encode()
    );
    let one_time = bob
        .one_time
        .iter()
        .find(|k| Some(k.id()) == message.one_time_prekey_id());
    let (_, text) = Session::accept(&bob.identity, &bob.signed, one_time, &message).unwrap();
    assert_eq!(text, b"hello Bob");
}

#[test]
fn a_known_device_gives_the_same_bundle() {
    let (_, bob, bundle_bytes, _) = first_message(2);
    let known = [bob.identity.public().clone()];
    let bundle = PreKeyBundle::decode_known(&bundle_bytes, &known).unwrap();
    assert_eq!(bundle.encode(), bundle_bytes);
    assert!(bundle.identity().ct_eq(bob.identity.public()));
}

#[test]
fn an_identity_that_is_not_the_known_one_is_verified_in_full() {
    let (alice, _, _, first) = first_message(3);
    let carol = Device::new(&mut rng(4));
    let known = [carol.identity.public().clone()];
    // A different but valid identity decodes, as with `decode`: the caller
    // compares it with the sender it expects, as before.
    let message = PreKeyMessage::decode_known(&first, &known).unwrap();
    assert!(message.identity().ct_eq(alice.identity.public()));

    // Alice's identity with a flipped signature bit: not equal to the known
    // Alice, so verified, and refused as `decode` refuses it.
    let identity = alice.identity.public().to_bytes();
    let at = find(&first, &identity[64..]) + 10;
    let mut forged = first.clone();
    forged[at] ^= 0x01;
    let known = [alice.identity.public().clone()];
    assert_eq!(
        PreKeyMessage::decode(&forged).err(),
        Some(Error::BadSignature)
    );
    assert_eq!(
        PreKeyMessage::decode_known(&forged, &known).err(),
        Some(Error::BadSignature)
    );
    // Alice's key with Carol's X25519 key and Alice's signature: refused.
    let at = find(&first, &identity[32..64]);
    let mut swapped = first.clone();
    swapped[at..at + 32].copy_from_slice(carol.identity.public().dh_key());
    assert_eq!(
        PreKeyMessage::decode_known(&swapped, &known).err(),
        Some(Error::BadSignature)
    );
}

#[test]
fn any_of_several_known_identities_is_recognised() {
    let (alice, _, _, first) = first_message(5);
    let others: Vec<DeviceIdentity> = (10..13)
        .map(|seed| Device::new(&mut rng(seed)).identity.public().clone())
        .collect();
    let mut known = others.clone();
    known.insert(1, alice.identity.public().clone());
    let message = PreKeyMessage::decode_known(&first, &known).unwrap();
    assert!(message.identity().ct_eq(alice.identity.public()));
    assert!(PreKeyMessage::decode_known(&first, &[]).is_ok());
}

/// Later pre-key messages of a session (the initiator has not heard back)
/// are decoded against the session's own peer identity; a forged identity
/// in them is still refused with the same error.
#[test]
fn later_pre_key_messages_with_a_forged_identity_are_refused() {
    let mut rng = rng(6);
    let alice = Device::new(&mut rng);
    let mut bob = Device::new(&mut rng);
    let bundle = PreKeyBundle::decode(&bob.bundle(true)).unwrap();
    let mut to_bob = Session::initiate(&mut rng, &alice.identity, &bundle).unwrap();
    let first = to_bob.encrypt(&mut rng, b"one").unwrap();
    let second = to_bob.encrypt(&mut rng, b"two").unwrap();
    let (mut to_alice, _) = bob.accept(&first).unwrap();
    let signature = &alice.identity.public().to_bytes()[64..];
    let mut forged = second.clone();
    forged[find(&second, signature) + 3] ^= 0x80;
    assert_eq!(to_alice.decrypt(&forged).err(), Some(Error::BadSignature));
    assert_eq!(to_alice.decrypt(&second).unwrap(), b"two");
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any damage to a pre-key message, anywhere: `decode_known` with the
    /// sender's identity known returns what `decode` returns.
    #[test]
    fn pre_key_messages_decode_as_decode_does(
        seed in 0u64..4,
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let (alice, _, _, first) = first_message(100 + seed);
        let mut bytes = first.clone();
        for (at, mask) in &flips {
            bytes[at.index(first.len())] ^= mask;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(first.len()));
        }
        let known = [alice.identity.public().clone()];
        same_message(&PreKeyMessage::decode(&bytes), &PreKeyMessage::decode_known(&bytes, &known))?;
    }

    /// The same for bundles, with the device's identity known.
    #[test]
    fn bundles_decode_as_decode_does(
        seed in 0u64..4,
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let (_, bob, bundle_bytes, _) = first_message(200 + seed);
        let mut bytes = bundle_bytes.clone();
        for (at, mask) in &flips {
            bytes[at.index(bundle_bytes.len())] ^= mask;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bundle_bytes.len()));
        }
        let known = [bob.identity.public().clone()];
        same_bundle(&PreKeyBundle::decode(&bytes), &PreKeyBundle::decode_known(&bytes, &known))?;
    }

    /// Damage confined to the identity's 128 bytes (the part the shortcut
    /// compares): still exactly `decode`'s result.
    #[test]
    fn damaged_identities_decode_as_decode_does(
        seed in 0u64..4,
        at in 0usize..128,
        mask in 1u8..=255,
    ) {
        let (alice, _, _, first) = first_message(300 + seed);
        let identity = alice.identity.public().to_bytes();
        let start = find(&first, &identity[..32]);
        let field = if at < 32 { start + at }
            else if at < 64 { find(&first, &identity[32..64]) + at - 32 }
            else { find(&first, &identity[64..]) + at - 64 };
        let mut bytes = first.clone();
        bytes[field] ^= mask;
        let known = [alice.identity.public().clone()];
        let plain = PreKeyMessage::decode(&bytes);
        prop_assert!(plain.is_err());
        same_message(&plain, &PreKeyMessage::decode_known(&bytes, &known))?;
    }
}
