//! Whole conversations between two in-memory devices.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{Device, Pair, rng};
use ward_core::{DecodeError, Error, MessageKind, PreKeyBundle, PreKeyMessage, Session, limits};

#[test]
fn a_conversation_with_and_without_a_one_time_prekey() {
    for with_one_time in [true, false] {
        let mut p = Pair::new(1, with_one_time);
        for round in 0..5u8 {
            let m = p.b_to_a(&[round; 40]);
            assert_eq!(MessageKind::of(&m), Ok(MessageKind::Ratchet));
            assert_eq!(p.alice.decrypt(&m).unwrap(), [round; 40]);
            let m = p.a_to_b(&[round + 100; 7]);
            assert_eq!(MessageKind::of(&m), Ok(MessageKind::Ratchet));
            assert_eq!(p.bob.decrypt(&m).unwrap(), [round + 100; 7]);
        }
        assert_eq!(p.alice.base_key(), p.bob.base_key());
        assert_eq!(p.alice.remote_identity(), p.bob.local_identity());
    }
}

#[test]
fn the_initiator_wraps_until_it_hears_back_and_any_wrapped_message_opens_the_session() {
    let mut rng = rng(2);
    let alice = Device::new(&mut rng);
    let mut bob = Device::new(&mut rng);
    let bundle = PreKeyBundle::decode(&bob.bundle(true)).unwrap();
    let mut to_bob = Session::initiate(&mut rng, &alice.identity, &bundle).unwrap();
    let m: Vec<Vec<u8>> = (0..3u8)
        .map(|i| to_bob.encrypt(&mut rng, &[i]).unwrap())
        .collect();
    assert!(
        m.iter()
            .all(|m| MessageKind::of(m) == Ok(MessageKind::PreKey))
    );

    // The third arrives first and opens Bob's side; the others follow.
    let (mut to_alice, text) = bob.accept(&m[2]).unwrap();
    assert_eq!(text, [2]);
    assert_eq!(bob.one_time.len(), 3, "the one-time prekey is consumed");
    assert_eq!(to_alice.decrypt(&m[0]).unwrap(), [0]);
    assert_eq!(to_alice.decrypt(&m[1]).unwrap(), [1]);
    assert_eq!(to_alice.decrypt(&m[1]), Err(Error::DuplicateOrExpired));

    let reply = to_alice.encrypt(&mut rng, b"ok").unwrap();
    assert_eq!(to_bob.decrypt(&reply).unwrap(), b"ok");
    let next = to_bob.encrypt(&mut rng, b"plain now").unwrap();
    assert_eq!(MessageKind::of(&next), Ok(MessageKind::Ratchet));
    assert_eq!(to_alice.decrypt(&next).unwrap(), b"plain now");

    // A replayed first message cannot open a second session: its one-time
    // prekey is gone.
    assert_eq!(bob.accept(&m[0]).err(), Some(Error::PreKeyMismatch));
}

#[test]
fn out_of_order_within_and_across_ratchet_steps() {
    let mut p = Pair::new(3, true);
    let early: Vec<_> = (0..10u8).map(|i| (i, p.a_to_b(&[i]))).collect();
    // Bob reads the last one, replies, Alice steps her ratchet and sends more.
    assert_eq!(p.bob.decrypt(&early[9].1).unwrap(), [9]);
    assert_eq!(p.bob.skipped_key_count(), 9);
    let reply = p.b_to_a(b"r");
    assert_eq!(p.alice.decrypt(&reply).unwrap(), b"r");
    let late = p.a_to_b(b"late");
    assert_eq!(p.bob.decrypt(&late).unwrap(), b"late");
    // The earlier chain's messages still open, in any order, exactly once.
    for &(i, ref m) in early[..9].iter().rev() {
        assert_eq!(p.bob.decrypt(m).unwrap(), [i]);
        assert_eq!(p.bob.decrypt(m), Err(Error::DuplicateOrExpired));
    }
    assert_eq!(p.bob.skipped_key_count(), 0);
}

#[test]
fn messages_of_a_chain_left_behind_are_kept_via_the_previous_counter() {
    let mut p = Pair::new(4, true);
    let reply = p.b_to_a(b"r0");
    p.alice.decrypt(&reply).unwrap();
    // Alice sends three on one chain; Bob sees only the first.
    let a: Vec<_> = (0..3u8).map(|i| p.a_to_b(&[i])).collect();
    assert_eq!(p.bob.decrypt(&a[0]).unwrap(), [0]);
    let b = p.b_to_a(b"r1");
    p.alice.decrypt(&b).unwrap();
    // Alice's next message carries a new ratchet key and previous_counter 3.
    let next = p.a_to_b(b"new chain");
    assert_eq!(p.bob.decrypt(&next).unwrap(), b"new chain");
    assert_eq!(p.bob.skipped_key_count(), 2);
    assert_eq!(p.bob.decrypt(&a[2]).unwrap(), [2]);
    assert_eq!(p.bob.decrypt(&a[1]).unwrap(), [1]);
}

/// Every way of damaging a message fails with a typed error and leaves the
/// session byte for byte as it was.
#[test]
fn damaged_messages_fail_cleanly_and_change_nothing() {
    let mut p = Pair::new(5, true);
    // After a reply Alice sends plain ratchet messages, every byte of which
    // is authenticated (pre-key wrappers are covered in the test below).
    let reply = p.b_to_a(b"r");
    p.alice.decrypt(&reply).unwrap();
    let good = p.a_to_b(&[0x42; 200]);
    assert_eq!(MessageKind::of(&good), Ok(MessageKind::Ratchet));
    let before = p.bob.to_bytes();

    let check = |bob: &mut Session, bytes: &[u8], expect: Option<Error>| {
        let got = bob.decrypt(bytes);
        assert!(got.is_err(), "damaged message decrypted");
        if let Some(expect) = expect {
            assert_eq!(got.err(), Some(expect));
        }
        assert_eq!(*bob.to_bytes(), *before, "state changed");
    };

    for len in 0..good.len() {
        check(&mut p.bob, &good[..len], None);
    }
    for bit in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        check(&mut p.bob, &bad, None);
    }
    // A flipped bit in the ciphertext or tag is an authentication failure.
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    check(&mut p.bob, &bad, Some(Error::DecryptionFailed));
    check(&mut p.bob, &[], Some(Error::Decode(DecodeError::Truncated)));
    check(
        &mut p.bob,
        &[0x55, 1, 2],
        Some(Error::UnsupportedFormat { found: 0x55 }),
    );

    // A message from a different session between other devices.
    let mut other = Pair::new(6, true);
    let foreign = other.a_to_b(b"not for you");
    check(&mut p.bob, &foreign, None);

    assert_eq!(p.bob.decrypt(&good).unwrap(), [0x42; 200]);
    assert_eq!(p.bob.decrypt(&good), Err(Error::DuplicateOrExpired));
}

#[test]
fn replays_from_older_chains_are_duplicates() {
    let mut p = Pair::new(7, true);
    let old = p.a_to_b(b"old");
    assert_eq!(p.bob.decrypt(&old).unwrap(), b"old");
    for _ in 0..3 {
        let m = p.b_to_a(b"b");
        p.alice.decrypt(&m).unwrap();
        let m = p.a_to_b(b"a");
        p.bob.decrypt(&m).unwrap();
    }
    let before = p.bob.to_bytes();
    assert_eq!(p.bob.decrypt(&old), Err(Error::DuplicateOrExpired));
    assert_eq!(*p.bob.to_bytes(), *before);
}

#[test]
fn a_jump_past_the_skip_bound_is_refused() {
    let mut p = Pair::new(8, true);
    let mut last = Vec::new();
    for _ in 0..=limits::MAX_SKIP + 1 {
        last = p.a_to_b(b"x");
    }
    let before = p.bob.to_bytes();
    assert_eq!(p.bob.decrypt(&last), Err(Error::TooFarAhead));
    assert_eq!(*p.bob.to_bytes(), *before);
}

#[test]
fn skipped_keys_are_bounded_per_chain_oldest_evicted() {
    let mut p = Pair::new(9, true);
    // Three jumps of MAX_SKIP/2 in one chain: the oldest keys are evicted.
    let step = limits::MAX_SKIP / 2;
    let mut first_skipped = None;
    for jump in 0..3 {
        let mut last = Vec::new();
        for i in 0..=step {
            let m = p.a_to_b(b"x");
            if jump == 0 && i == 0 {
                first_skipped = Some(m.clone());
            }
            last = m;
        }
        p.bob.decrypt(&last).unwrap();
    }
    assert_eq!(p.bob.skipped_key_count(), limits::MAX_SKIPPED_PER_CHAIN);
    assert_eq!(
        p.bob.decrypt(&first_skipped.unwrap()),
        Err(Error::DuplicateOrExpired)
    );
}

#[test]
fn sessions_survive_serialization_mid_conversation() {
    let mut p = Pair::new(10, true);
    let pending: Vec<_> = (0..4u8).map(|i| p.a_to_b(&[i])).collect();
    p.bob.decrypt(&pending[3]).unwrap();
    let reply = p.b_to_a(b"r");

    let mut alice = Session::from_bytes(&p.alice.to_bytes()).unwrap();
    let mut bob = Session::from_bytes(&p.bob.to_bytes()).unwrap();
    assert_eq!(*bob.to_bytes(), *p.bob.to_bytes());
    assert_eq!(alice.decrypt(&reply).unwrap(), b"r");
    for (i, m) in pending[..3].iter().enumerate() {
        assert_eq!(bob.decrypt(m).unwrap(), [i as u8]);
    }
    let m = alice.encrypt(&mut p.rng, b"after").unwrap();
    assert_eq!(bob.decrypt(&m).unwrap(), b"after");
}

#[test]
fn unknown_session_formats_are_refused() {
    let p = Pair::new(11, true);
    let mut bytes = p.alice.to_bytes().to_vec();
    bytes[0] = 0x05;
    assert_eq!(
        Session::from_bytes(&bytes).err(),
        Some(Error::UnsupportedFormat { found: 0x05 })
    );
    bytes[0] = 0x04;
    bytes.truncate(bytes.len() / 2);
    assert!(Session::from_bytes(&bytes).is_err());
}

#[test]
fn debug_output_carries_no_key_material() {
    let p = Pair::new(12, true);
    let shown = format!("{:?}", p.alice);
    assert!(shown.starts_with("Session {"), "{shown}");
    // The only hex in it is the two public identities' short names; no run of
    // hex digits long enough to carry key material is left once they are out.
    let mut rest = shown.clone();
    for identity in [p.alice.local_identity(), p.alice.remote_identity()] {
        let name: String = identity.signing_key()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(rest.contains(&name), "{shown}");
        rest = rest.replace(&name, "");
    }
    let longest_hex_run = rest
        .split(|c: char| !c.is_ascii_hexdigit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(longest_hex_run < 8, "{shown}");
}

#[test]
fn a_pre_key_message_for_another_session_is_refused() {
    let mut rng = rng(13);
    let alice = Device::new(&mut rng);
    let mut bob = Device::new(&mut rng);
    let bundle = PreKeyBundle::decode(&bob.bundle(false)).unwrap();
    let mut s1 = Session::initiate(&mut rng, &alice.identity, &bundle).unwrap();
    let mut s2 = Session::initiate(&mut rng, &alice.identity, &bundle).unwrap();
    let m1 = s1.encrypt(&mut rng, b"one").unwrap();
    let m2 = s2.encrypt(&mut rng, b"two").unwrap();
    let (mut bob_s1, _) = bob.accept(&m1).unwrap();
    assert_eq!(bob_s1.decrypt(&m2), Err(Error::WrongSession));
    // The initiator never accepts pre-key messages on its own session.
    assert_eq!(s1.decrypt(&m1), Err(Error::WrongSession));
    // Accepting with the wrong prekeys is refused before any work is done.
    let parsed = PreKeyMessage::decode(&m2).unwrap();
    assert_eq!(
        Session::accept(&bob.identity, &bob.signed, Some(&bob.one_time[0]), &parsed).err(),
        Some(Error::PreKeyMismatch)
    );
}

#[test]
fn a_tampered_pre_key_message_opens_nothing() {
    let mut rng = rng(14);
    let alice = Device::new(&mut rng);
    let mut bob = Device::new(&mut rng);
    let bundle = PreKeyBundle::decode(&bob.bundle(true)).unwrap();
    let mut s = Session::initiate(&mut rng, &alice.identity, &bundle).unwrap();
    let m = s.encrypt(&mut rng, b"hello").unwrap();
    // Flip one bit in every byte in turn: nothing may open a session.
    for at in 0..m.len() {
        let mut bad = m.clone();
        bad[at] ^= 0x04;
        assert!(bob.accept(&bad).is_err(), "byte {at}");
    }
    assert_eq!(
        bob.one_time.len(),
        4,
        "no one-time prekey consumed by a failure"
    );
    assert!(bob.accept(&m).is_ok());
}

/// Once a session exists, a later pre-key message is bound to the first by
/// the handshake digest: altering any bit of its envelope is refused too.
#[test]
fn every_bit_of_a_later_pre_key_message_is_authenticated() {
    let mut rng = rng(15);
    let alice = Device::new(&mut rng);
    let mut bob = Device::new(&mut rng);
    let bundle = PreKeyBundle::decode(&bob.bundle(true)).unwrap();
    let mut to_bob = Session::initiate(&mut rng, &alice.identity, &bundle).unwrap();
    let first = to_bob.encrypt(&mut rng, b"one").unwrap();
    let second = to_bob.encrypt(&mut rng, b"two").unwrap();
    let (mut to_alice, _) = bob.accept(&first).unwrap();
    let before = to_alice.to_bytes();
    for bit in 0..second.len() * 8 {
        let mut bad = second.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(to_alice.decrypt(&bad).is_err(), "bit {bit} went unnoticed");
        assert_eq!(*to_alice.to_bytes(), *before);
    }
    assert_eq!(to_alice.decrypt(&second).unwrap(), b"two");
}

#[test]
fn a_one_time_prekey_of_small_order_fails_the_handshake() {
    // X25519 points of small order, canonical or not (u = 0, 1, the two
    // points of order 8, p − 1, p, p + 1): every DH with one is all zero,
    // which the handshake refuses (KEY-8, HS-4) instead of deriving keys an
    // attacker knows.
    let small_order = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];
    let mut r = rng(41);
    let bob = Device::new(&mut r);
    let alice = ward_core::IdentityKeyPair::generate(&mut r);
    for hex_key in small_order {
        let key: [u8; 32] =
            core::array::from_fn(|i| u8::from_str_radix(&hex_key[2 * i..2 * i + 2], 16).unwrap());
        let one_time = ward_core::OneTimePreKey { id: 9, key };
        let outcome = PreKeyBundle::new(
            bob.identity.public().clone(),
            bob.signed.public().clone(),
            Some(one_time),
        )
        .and_then(|bundle| Session::initiate(&mut r, &alice, &bundle));
        assert!(
            matches!(outcome, Err(Error::NonContributoryKey)),
            "{hex_key}: {:?}",
            outcome.err()
        );
    }
}

#[test]
fn protobuf_decoders_skip_unknown_fields_and_refuse_unparsable_input() {
    let mut r = rng(42);
    let bob = Device::new(&mut r);
    let bundle = bob.bundle(true);
    // An unknown field (number 15, varint 1) appended: skipped (ENC-8),
    // the bundle decodes to the same value.
    let mut extended = bundle.clone();
    extended.extend_from_slice(&[15 << 3, 1]);
    assert_eq!(PreKeyBundle::decode(&extended).unwrap().encode(), bundle);
    // A length-delimited field whose length runs past the end: refused.
    let mut cut = bundle[..1].to_vec();
    cut.extend_from_slice(&[(1 << 3) | 2, 0x7f, 0x00]);
    assert!(matches!(
        PreKeyBundle::decode(&cut),
        Err(Error::Decode(DecodeError::Protobuf))
    ));
}

#[test]
fn the_last_counter_of_a_chain_is_never_used() {
    use ward_proto::Message as _;
    let mut p = Pair::new(43, true);
    let _ = p.b_to_a(b"bob's chain is open");
    // A session whose sending chain is at 2^32 - 2 (4 billion messages in).
    let bytes = p.bob.to_bytes();
    let mut state = ward_proto::core_v1::SessionState::decode(&bytes[1..]).unwrap();
    state.sending_chain.as_mut().unwrap().index = u32::MAX - 1;
    let mut worn = bytes[..1].to_vec();
    worn.extend_from_slice(&state.encode_to_vec());
    let mut bob = Session::from_bytes(&worn).unwrap();
    bob.encrypt(&mut p.rng, b"counter 2^32 - 2").unwrap();
    // 2^32 - 1 is not used (DR-18): refused, and the state is unchanged.
    let before = bob.to_bytes();
    assert!(matches!(
        bob.encrypt(&mut p.rng, b"one more"),
        Err(Error::ChainExhausted)
    ));
    assert_eq!(bob.to_bytes(), before);
}

#[test]
fn skipped_keys_are_bounded_per_session_oldest_evicted() {
    let mut p = Pair::new(44, true);
    // Three of Alice's chains, each delivered only by its last message:
    // about 3,000 skipped keys, above the per-session bound (DR-16).
    let mut first_skipped = None;
    let mut kept = Vec::new();
    for chain in 0..3 {
        let mut sent = Vec::new();
        for _ in 0..limits::MAX_SKIP {
            sent.push(p.a_to_b(b"x"));
        }
        p.bob.decrypt(sent.last().unwrap()).unwrap();
        if chain == 0 {
            first_skipped = Some(sent[0].clone());
        }
        kept = sent;
        // Bob answers, so Alice's next messages start a new chain.
        let reply = p.b_to_a(b"next");
        p.alice.decrypt(&reply).unwrap();
    }
    assert_eq!(p.bob.skipped_key_count(), limits::MAX_SKIPPED_PER_SESSION);
    assert_eq!(
        p.bob.decrypt(&first_skipped.unwrap()),
        Err(Error::DuplicateOrExpired)
    );
    // The newest chain's skipped keys are kept.
    assert_eq!(p.bob.decrypt(&kept[0]).unwrap(), b"x");
}
