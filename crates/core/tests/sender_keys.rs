//! Sender keys (spec/13-sender-keys.md): one sender, its chain read by members.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::rng;
use proptest::prelude::*;
use ward_core::limits::{MAX_SENDER_SKIP, MAX_SENDER_SKIPPED_KEYS};
use ward_core::{
    DecodeError, Error, ReceivedChain, RotationPolicy, SenderChain, SenderKeyDistribution,
    SenderKeyMessage,
};

const GROUP: [u8; 16] = [0x4a; 16];

/// A sender and one member who got the chain at iteration 0.
fn sender_and_member(seed: u64) -> (SenderChain, ReceivedChain) {
    let sender = SenderChain::generate(&mut rng(seed), GROUP, 1_700_000_000);
    let distribution = SenderKeyDistribution::decode(&sender.distribution().encode()).unwrap();
    (sender, ReceivedChain::from_distribution(&distribution))
}

fn open(member: &mut ReceivedChain, wire: &[u8]) -> Result<Vec<u8>, Error> {
    member.decrypt(&SenderKeyMessage::decode(wire)?)
}

#[test]
fn members_read_in_order_and_out_of_order() {
    let (mut sender, mut member) = sender_and_member(1);
    let wires: Vec<Vec<u8>> = (0..6u8).map(|i| sender.encrypt(&[i; 3]).unwrap()).collect();
    assert_eq!(open(&mut member, &wires[0]).unwrap(), [0; 3]);
    assert_eq!(open(&mut member, &wires[4]).unwrap(), [4; 3]);
    assert_eq!(member.skipped_len(), 3);
    for i in [2usize, 1, 3, 5] {
        assert_eq!(open(&mut member, &wires[i]).unwrap(), [i as u8; 3]);
    }
    assert_eq!(member.skipped_len(), 0);
    assert_eq!(member.iteration(), 6);
}

#[test]
fn duplicates_and_replays_are_refused_without_change() {
    let (mut sender, mut member) = sender_and_member(2);
    let first = sender.encrypt(b"first").unwrap();
    let second = sender.encrypt(b"second").unwrap();
    open(&mut member, &second).unwrap();
    open(&mut member, &first).unwrap();
    let before = member.to_bytes();
    for wire in [&first, &second] {
        assert_eq!(open(&mut member, wire), Err(Error::DuplicateOrExpired));
    }
    assert_eq!(member.to_bytes(), before);
}

#[test]
fn a_forward_jump_is_bounded() {
    let (mut sender, mut member) = sender_and_member(3);
    let mut wires = Vec::new();
    for _ in 0..=MAX_SENDER_SKIP + 1 {
        wires.push(sender.encrypt(b"x").unwrap());
    }
    let before = member.to_bytes();
    let too_far = &wires[MAX_SENDER_SKIP as usize + 1];
    assert_eq!(open(&mut member, too_far), Err(Error::TooFarAhead));
    assert_eq!(member.to_bytes(), before);
    open(&mut member, &wires[MAX_SENDER_SKIP as usize]).unwrap();
    assert_eq!(member.skipped_len(), MAX_SENDER_SKIP as usize);
    open(&mut member, too_far).unwrap();
}

#[test]
fn the_oldest_skipped_keys_are_evicted() {
    let (mut sender, mut member) = sender_and_member(4);
    let extra = 5;
    let wires: Vec<Vec<u8>> = (0..MAX_SENDER_SKIPPED_KEYS + extra + 2)
        .map(|_| sender.encrypt(b"y").unwrap())
        .collect();
    // Two jumps, `extra` skipped keys then the bound's worth: the first
    // `extra` go.
    open(&mut member, &wires[extra]).unwrap();
    open(&mut member, &wires[MAX_SENDER_SKIPPED_KEYS + extra + 1]).unwrap();
    assert_eq!(member.skipped_len(), MAX_SENDER_SKIPPED_KEYS);
    for wire in &wires[..extra] {
        assert_eq!(open(&mut member, wire), Err(Error::DuplicateOrExpired));
    }
    open(&mut member, &wires[extra + 1]).unwrap();
}

#[test]
fn a_member_added_later_reads_nothing_sent_before() {
    let mut sender = SenderChain::generate(&mut rng(5), GROUP, 0);
    let early: Vec<Vec<u8>> = (0..3).map(|_| sender.encrypt(b"before").unwrap()).collect();
    let mut late = ReceivedChain::from_distribution(&sender.distribution());
    assert_eq!(late.iteration(), 3);
    for wire in &early {
        assert_eq!(open(&mut late, wire), Err(Error::DuplicateOrExpired));
    }
    let after = sender.encrypt(b"after").unwrap();
    assert_eq!(open(&mut late, &after).unwrap(), b"after");
}

#[test]
fn every_bit_of_a_message_is_authenticated() {
    let (mut sender, mut member) = sender_and_member(6);
    let wire = sender.encrypt(b"ward 4 west").unwrap();
    let before = member.to_bytes();
    for byte in 0..wire.len() {
        for bit in 0..8 {
            let mut bad = wire.clone();
            bad[byte] ^= 1 << bit;
            assert!(open(&mut member, &bad).is_err(), "byte {byte} bit {bit}");
        }
    }
    assert_eq!(member.to_bytes(), before);
    for len in 0..wire.len() {
        assert!(
            open(&mut member, &wire[..len]).is_err(),
            "truncated to {len}"
        );
    }
    open(&mut member, &wire).unwrap();
}

#[test]
fn a_member_with_the_chain_key_cannot_forge() {
    // A member knows the chain key but not the signing seed: re-signing
    // with a key of its own does not pass.
    let (mut sender, mut member) = sender_and_member(7);
    let mut impostor = SenderChain::generate(&mut rng(70), GROUP, 0);
    let forged = impostor.encrypt(b"forged").unwrap();
    let mut retargeted = forged.clone();
    retargeted[17..33].copy_from_slice(sender.chain_id());
    assert_eq!(open(&mut member, &forged), Err(Error::WrongChain));
    assert_eq!(open(&mut member, &retargeted), Err(Error::DecryptionFailed));
    let genuine = sender.encrypt(b"genuine").unwrap();
    assert_eq!(open(&mut member, &genuine).unwrap(), b"genuine");
}

#[test]
fn chains_survive_serialization_mid_conversation() {
    let (mut sender, mut member) = sender_and_member(8);
    let wires: Vec<Vec<u8>> = (0..4).map(|_| sender.encrypt(b"z").unwrap()).collect();
    open(&mut member, &wires[3]).unwrap();
    let mut sender = SenderChain::from_bytes(&sender.to_bytes()).unwrap();
    let mut member = ReceivedChain::from_bytes(&member.to_bytes()).unwrap();
    assert_eq!(member.skipped_len(), 3);
    open(&mut member, &wires[1]).unwrap();
    let next = sender.encrypt(b"after restore").unwrap();
    assert_eq!(open(&mut member, &next).unwrap(), b"after restore");
    assert_eq!(sender.iteration(), 5);
    assert_eq!(sender.created_at(), 1_700_000_000);
}

#[test]
fn states_of_the_wrong_kind_or_shape_are_refused() {
    let (sender, member) = sender_and_member(9);
    let own = sender.to_bytes();
    let theirs = member.to_bytes();
    assert!(matches!(
        ReceivedChain::from_bytes(&own),
        Err(Error::Decode(DecodeError::WrongLength {
            field: "signing_seed",
            ..
        }))
    ));
    assert_eq!(
        SenderChain::from_bytes(&theirs).unwrap_err(),
        Error::Decode(DecodeError::MissingField("signing_seed"))
    );
    let mut wrong_format = own.to_vec();
    wrong_format[0] = 0x04;
    assert_eq!(
        SenderChain::from_bytes(&wrong_format).unwrap_err(),
        Error::UnsupportedFormat { found: 0x04 }
    );
    assert_eq!(
        ReceivedChain::from_bytes(&[]).unwrap_err(),
        Error::Decode(DecodeError::Truncated)
    );
    assert_eq!(
        ReceivedChain::from_bytes(&[0x0a, 0xff]).unwrap_err(),
        Error::Decode(DecodeError::Protobuf)
    );
}

#[test]
fn distributions_with_bad_fields_are_refused() {
    let good = SenderChain::generate(&mut rng(10), GROUP, 0)
        .distribution()
        .encode();
    let decoded = SenderKeyDistribution::decode(&good).unwrap();
    assert_eq!(decoded.group_id(), &GROUP);
    assert_eq!(decoded.iteration(), 0);
    // The signing key is the last field (5, 32 bytes): replace it.
    let key_at = good.len() - 32;
    let mut small_order = good.to_vec();
    small_order[key_at..].copy_from_slice(&identity_point());
    assert_eq!(
        SenderKeyDistribution::decode(&small_order).unwrap_err(),
        Error::Decode(DecodeError::InvalidKey("signing_key"))
    );
    let mut short = good[..good.len() - 1].to_vec();
    short[key_at - 1] = 31;
    assert!(matches!(
        SenderKeyDistribution::decode(&short),
        Err(Error::Decode(DecodeError::WrongLength {
            field: "signing_key",
            ..
        }))
    ));
    assert_eq!(
        SenderKeyDistribution::decode(&[0x08]).unwrap_err(),
        Error::UnsupportedFormat { found: 0x08 }
    );
}

/// The Edwards identity point: small order.
fn identity_point() -> [u8; 32] {
    let mut point = [0u8; 32];
    point[0] = 1;
    point
}

#[test]
fn rotation_follows_the_policy() {
    let policy = RotationPolicy {
        max_messages: 2,
        max_age_secs: 100,
    };
    let mut chain = SenderChain::generate(&mut rng(11), GROUP, 1_000);
    assert!(!chain.is_due_for_rotation(&policy, 1_099));
    assert!(chain.is_due_for_rotation(&policy, 1_100));
    assert!(!chain.is_due_for_rotation(&policy, 0), "a clock set back");
    chain.encrypt(b"1").unwrap();
    chain.encrypt(b"2").unwrap();
    assert!(chain.is_due_for_rotation(&policy, 1_000));
    assert_eq!(RotationPolicy::default().max_messages * 2, MAX_SENDER_SKIP);
}

#[test]
fn debug_output_carries_no_key_material() {
    let (mut sender, mut member) = sender_and_member(12);
    let wire = sender.encrypt(b"x").unwrap();
    open(&mut member, &sender.encrypt(b"y").unwrap()).unwrap();
    let distribution = sender.distribution();
    for shown in [
        format!("{sender:?}"),
        format!("{member:?}"),
        format!("{distribution:?}"),
    ] {
        let longest_run = shown
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest_run < 4, "{shown}");
        assert!(shown.len() < 80, "{shown}");
    }
    assert!(open(&mut member, &wire).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any delivery order with losses and duplicates: every message delivered
    /// opens exactly once, a second copy never does, and a failed attempt
    /// changes nothing.
    #[test]
    fn random_deliveries_open_each_message_once(
        count in 1usize..40,
        schedule in proptest::collection::vec((0usize..40, any::<bool>()), 0..80),
    ) {
        let (mut sender, mut member) = sender_and_member(13);
        let wires: Vec<Vec<u8>> = (0..count)
            .map(|i| sender.encrypt(&(i as u32).to_be_bytes()).unwrap())
            .collect();
        let mut opened = vec![false; count];
        for (pick, corrupt) in schedule {
            let i = pick % count;
            let mut wire = wires[i].clone();
            if corrupt {
                let at = pick % wire.len();
                wire[at] ^= 0x20;
                let before = member.to_bytes();
                prop_assert!(open(&mut member, &wire).is_err());
                prop_assert_eq!(member.to_bytes(), before);
                continue;
            }
            match open(&mut member, &wire) {
                Ok(plaintext) => {
                    prop_assert!(!opened[i], "message {} opened twice", i);
                    prop_assert_eq!(plaintext, (i as u32).to_be_bytes().to_vec());
                    opened[i] = true;
                }
                Err(e) => {
                    prop_assert_eq!(e, Error::DuplicateOrExpired);
                    prop_assert!(opened[i], "message {} refused unopened", i);
                }
            }
        }
    }
}
