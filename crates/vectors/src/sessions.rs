//! `sessions.json`: the handshake digest that binds a session's later pre-key
//! messages to the first (spec/04 HS-15, spec/06 SESSION-DECRYPT), and the
//! `0x04` session state serialization field by field (spec/06 SES-1).
//!
//! The field values are read back from ward-core's state bytes with the
//! protobuf schema, and every value the generator knows on its own is checked
//! against them: identities, base key, digest (recomputed with SHA-256),
//! pending pre-key, ratchet keys (from the wire headers), indices, and each
//! skipped message key, which must open its message with the primitives.

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use ml_kem::array::Array;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use ward_core::{IdentityKeyPair, PreKeyBundle, PreKeyMessage, Session, hazmat};
use ward_proto::Message;
use ward_proto::core_v1 as pb;

use crate::rng::RecordingRng;
use crate::{Parties, h, outcome, parties};

/// `"Ward v1 pre-key handshake\0"`, as spec/04 HS-15 writes it.
pub const DIGEST_LABEL: &[u8] = b"Ward v1 pre-key handshake\0";

/// The exact input of `HANDSHAKE_DIGEST` (spec/04 HS-15), built from the spec.
pub fn digest_input(
    identity: &[u8; 128],
    signed_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
    base_key: &[u8],
    kem_ciphertext: &[u8],
) -> Vec<u8> {
    assert_eq!((base_key.len(), kem_ciphertext.len()), (32, 1088));
    let mut input = DIGEST_LABEL.to_vec();
    input.extend_from_slice(identity);
    input.extend_from_slice(&signed_prekey_id.to_be_bytes());
    match one_time_prekey_id {
        None => input.push(0x00),
        Some(id) => {
            input.push(0x01);
            input.extend_from_slice(&id.to_be_bytes());
        }
    }
    input.extend_from_slice(base_key);
    input.extend_from_slice(kem_ciphertext);
    input
}

/// SHA-256 of [`digest_input`].
pub fn digest(input: &[u8]) -> [u8; 32] {
    Sha256::digest(input).into()
}

/// Decodes `0x04 || SessionState` with the schema (no ward-core involved).
pub fn state(bytes: &[u8]) -> pb::SessionState {
    assert_eq!(bytes[0], ward_core::format::SESSION_STATE);
    pb::SessionState::decode(&bytes[1..]).unwrap()
}

/// Decodes `0x02 || PreKeyMessage` with the schema.
fn envelope(bytes: &[u8]) -> pb::PreKeyMessage {
    assert_eq!(bytes[0], ward_core::format::PREKEY_MESSAGE);
    pb::PreKeyMessage::decode(&bytes[1..]).unwrap()
}

fn encode_envelope(message: &pb::PreKeyMessage) -> Vec<u8> {
    let mut out = vec![ward_core::format::PREKEY_MESSAGE];
    message.encode_raw(&mut out);
    out
}

/// The handshake digest of an envelope, from the spec.
fn envelope_digest(message: &pb::PreKeyMessage) -> [u8; 32] {
    let id = message.identity.as_ref().unwrap();
    let mut fixed = [0u8; 128];
    fixed[..32].copy_from_slice(&id.signing_key);
    fixed[32..64].copy_from_slice(&id.dh_key);
    fixed[64..].copy_from_slice(&id.dh_key_signature);
    digest(&digest_input(
        &fixed,
        message.signed_prekey_id,
        message.one_time_prekey_id,
        &message.base_key,
        &message.kem_ciphertext,
    ))
}

fn identity_json(id: &pb::DeviceIdentity) -> Value {
    json!({
        "signing_key": h(&id.signing_key),
        "dh_key": h(&id.dh_key),
        "dh_key_signature": h(&id.dh_key_signature),
    })
}

fn chain_json(chain: &pb::ChainState) -> Value {
    json!({
        "ratchet_key": h(&chain.ratchet_key),
        "chain_key": h(&chain.chain_key),
        "index": chain.index,
    })
}

/// Every field of a state, by its name in `ward_core.proto`, in field order.
pub fn fields(s: &pb::SessionState) -> Value {
    json!({
        "local_identity": identity_json(s.local_identity.as_ref().unwrap()),
        "remote_identity": identity_json(s.remote_identity.as_ref().unwrap()),
        "base_key": h(&s.base_key),
        "initiator": s.initiator,
        "root_key": h(&s.root_key),
        "local_ratchet_secret": h(&s.local_ratchet_secret),
        "sending_chain": s.sending_chain.as_ref().map(chain_json),
        "previous_sending_count": s.previous_sending_count,
        "remote_ratchet_key": h(&s.remote_ratchet_key),
        "receiving_chain": s.receiving_chain.as_ref().map(chain_json),
        "skipped_keys": s.skipped_keys.iter().map(|k| json!({
            "ratchet_key": h(&k.ratchet_key),
            "index": k.index,
            "message_key": h(&k.message_key),
        })).collect::<Vec<_>>(),
        "pending_prekey": s.pending_prekey.as_ref().map(|p| json!({
            "signed_prekey_id": p.signed_prekey_id,
            "one_time_prekey_id": p.one_time_prekey_id,
            "kem_ciphertext": h(&p.kem_ciphertext),
        })),
        "previous_remote_ratchet_keys": s.previous_remote_ratchet_keys.iter().map(h).collect::<Vec<_>>(),
        "handshake_digest": h(&s.handshake_digest),
    })
}

/// The ratchet message inside `wire` (itself, or a pre-key message's).
fn inner(wire: &[u8]) -> Vec<u8> {
    match wire[0] {
        0x02 => envelope(wire).message,
        _ => wire.to_vec(),
    }
}

/// Opens a ratchet message with a message key and the primitives alone.
fn open_with(message_key: &[u8], sender: &[u8], receiver: &[u8], wire: &[u8]) -> Vec<u8> {
    let inner = inner(wire);
    let header = hazmat::parse_ratchet_message(&inner).unwrap();
    let (key, nonce) = hazmat::expand_mk(&message_key.try_into().unwrap());
    let mut ad = sender.to_vec();
    ad.extend_from_slice(receiver);
    ad.extend_from_slice(&inner[..header.header_len]);
    let (ciphertext, tag) =
        inner[header.header_len..].split_at(inner.len() - header.header_len - 16);
    let mut body = ciphertext.to_vec();
    ChaCha20Poly1305::new(&Array(*key))
        .decrypt_inout_detached(
            &Array(nonce),
            &ad,
            body.as_mut_slice().into(),
            &Array::try_from(tag).unwrap(),
        )
        .expect("the skipped key opens its message");
    body
}

fn header_key(wire: &[u8]) -> Vec<u8> {
    hazmat::parse_ratchet_message(&inner(wire))
        .unwrap()
        .ratchet_key
        .to_vec()
}

/// One later pre-key message given to a restored state.
fn later(name: &str, state: &[u8], message: Vec<u8>, note: &str) -> Value {
    let mut session = Session::from_bytes(state).unwrap();
    let result = session.decrypt(&message);
    let after = session.to_bytes();
    let envelope_digest = PreKeyMessage::decode(&message)
        .ok()
        .map(|_| h(envelope_digest(&envelope(&message))));
    let mut case = json!({
        "name": name,
        "note": note,
        "state": h(state),
        "message": h(&message),
        "message_handshake_digest": envelope_digest,
    });
    match &result {
        Ok(_) => case["state_after"] = json!(h(&*after)),
        Err(_) => assert_eq!(*after, *state, "{name}: a failure changed the state"),
    }
    case["expect"] = outcome(result);
    case
}

/// The whole `sessions.json`.
pub fn sessions() -> Value {
    let mut rng = RecordingRng::new(0x7365_7373);
    let Parties {
        alice,
        bob,
        signed,
        one_time,
        bundle_bytes,
    } = parties(&mut rng, 3, 7);
    let carol = IdentityKeyPair::generate(&mut rng);
    rng.take_draws();
    let bundle = PreKeyBundle::decode(&bundle_bytes).unwrap();
    let mut to_bob = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let initiate_draws = rng.take_draws();
    let text = |label: &str| format!("{label}: sessions.json").into_bytes();
    let a: Vec<Vec<u8>> = (0..3)
        .map(|i| to_bob.encrypt(&mut rng, &text(&format!("a{i}"))).unwrap())
        .collect();
    assert!(rng.take_draws().is_empty());
    let alice_after_sends = to_bob.to_bytes();
    let (mut to_alice, _) = Session::accept(
        &bob,
        &signed,
        Some(&one_time),
        &PreKeyMessage::decode(&a[0]).unwrap(),
    )
    .unwrap();
    let bob_after_accept = to_alice.to_bytes();

    // The digest, from the spec, equals the one both states keep.
    let first = envelope(&a[0]);
    let handshake_digest = envelope_digest(&first);
    for s in [&alice_after_sends, &bob_after_accept] {
        assert_eq!(state(s).handshake_digest, handshake_digest);
    }

    // Later pre-key messages: a[2], altered one field at a time.
    let altered = |change: &dyn Fn(&mut pb::PreKeyMessage)| {
        let mut m = envelope(&a[2]);
        change(&mut m);
        encode_envelope(&m)
    };
    let flip_tag = |m: &mut pb::PreKeyMessage| *m.message.last_mut().unwrap() ^= 0x01;
    let mut bad_signature = envelope(&a[2]);
    bad_signature.identity.as_mut().unwrap().dh_key_signature[0] ^= 0x01;
    let carol_identity = pb::DeviceIdentity::decode(&*carol.public().encode()).unwrap();
    let bob_state = &bob_after_accept[..];
    let mut cases = vec![
        later(
            "a1 as sent",
            bob_state,
            a[1].clone(),
            "same handshake digest: the inner message opens (case 1 of 05)",
        ),
        later(
            "a2, one bit of kem_ciphertext flipped",
            bob_state,
            altered(&|m| m.kem_ciphertext[0] ^= 0x01),
            "bit 0 of kem_ciphertext byte 0; the inner message is untouched and would open",
        ),
        later(
            "a2, one_time_prekey_id 7 changed to 8",
            bob_state,
            altered(&|m| m.one_time_prekey_id = Some(8)),
            "the inner message is untouched and would open",
        ),
        later(
            "a2, one_time_prekey_id removed",
            bob_state,
            altered(&|m| m.one_time_prekey_id = None),
            "field 3 absent: the digest has 0x00 where it had 0x01 || u32be(7)",
        ),
        later(
            "a2, signed_prekey_id 3 changed to 4",
            bob_state,
            altered(&|m| m.signed_prekey_id = 4),
            "the inner message is untouched and would open",
        ),
        later(
            "a2, one bit of base_key flipped",
            bob_state,
            altered(&|m| m.base_key[31] ^= 0x40),
            "bit 6 of base_key byte 31",
        ),
        later(
            "a2, identity replaced by another valid identity",
            bob_state,
            altered(&|m| m.identity = Some(carol_identity.clone())),
            "Carol's identity verifies on its own; the digest differs",
        ),
        later(
            "a2, envelope as sent, last tag bit of the inner message flipped",
            bob_state,
            altered(&flip_tag),
            "same digest: the inner message is decrypted and fails",
        ),
        later(
            "a2, kem_ciphertext and inner tag both altered",
            bob_state,
            altered(&|m| {
                m.kem_ciphertext[0] ^= 0x01;
                flip_tag(m);
            }),
            "the digest is compared before the inner message is decrypted: WrongSession, not DecryptionFailed",
        ),
        later(
            "a2, identity signature broken",
            bob_state,
            encode_envelope(&bad_signature),
            "decoding the pre-key message verifies the identity before any digest is computed",
        ),
        later(
            "a1 given to the initiator's own state",
            &alice_after_sends,
            a[1].clone(),
            "the initiator refuses every pre-key message, its own digest notwithstanding",
        ),
    ];
    let mut after_a1 = Session::from_bytes(bob_state).unwrap();
    after_a1.decrypt(&a[1]).unwrap();
    cases.push(later(
        "a1 again, after it was accepted",
        &after_a1.to_bytes(),
        a[1].clone(),
        "same digest; the inner message's key was used (case 3 of 05)",
    ));
    cases.push(later(
        "a2 as sent, after a1",
        &after_a1.to_bytes(),
        a[2].clone(),
        "same digest: opens",
    ));

    // A state with every field but the pending pre-key: Bob hears a0, sends
    // b0, Alice hears it and steps, sends a3 a4 a5, Bob hears a5 (skipping
    // a1 a2 of the old chain and a3 a4 of the new) and sends b1.
    let b0 = to_alice.encrypt(&mut rng, &text("b0")).unwrap();
    rng.take_draws();
    to_bob.decrypt(&b0).unwrap();
    let later_a: Vec<Vec<u8>> = (3..7)
        .map(|i| to_bob.encrypt(&mut rng, &text(&format!("a{i}"))).unwrap())
        .collect();
    rng.take_draws();
    to_alice.decrypt(&later_a[2]).unwrap();
    let b1 = to_alice.encrypt(&mut rng, &text("b1")).unwrap();
    let b1_draws = rng.take_draws();
    let bob_mid = to_alice.to_bytes();

    // Check the generator's own knowledge against the states' fields.
    let s = state(&alice_after_sends);
    let alice_pb = pb::DeviceIdentity::decode(&*alice.public().encode()).unwrap();
    let bob_pb = pb::DeviceIdentity::decode(&*bob.public().encode()).unwrap();
    assert!(s.initiator && s.local_identity == Some(alice_pb.clone()));
    assert_eq!(
        s.local_ratchet_secret,
        hex::decode(&initiate_draws[0]).unwrap()
    );
    assert_eq!(s.base_key, first.base_key);
    let sending = s.sending_chain.as_ref().unwrap();
    assert_eq!((&sending.ratchet_key, sending.index), (&first.base_key, 3));
    let pending = s.pending_prekey.as_ref().unwrap();
    assert_eq!(pending.kem_ciphertext, first.kem_ciphertext);
    assert_eq!(
        (pending.signed_prekey_id, pending.one_time_prekey_id),
        (3, Some(7))
    );
    let s = state(&bob_after_accept);
    assert!(!s.initiator && s.local_identity == Some(bob_pb.clone()));
    assert!(s.sending_chain.is_none() && s.local_ratchet_secret.is_empty());
    assert_eq!(s.receiving_chain.as_ref().unwrap().index, 1);
    let s = state(&bob_mid);
    assert_eq!(s.remote_identity, Some(alice_pb));
    assert_eq!(s.local_ratchet_secret, hex::decode(&b1_draws[0]).unwrap());
    assert_eq!(
        s.sending_chain.as_ref().unwrap().ratchet_key,
        header_key(&b1)
    );
    assert_eq!(
        (
            s.previous_sending_count,
            s.sending_chain.as_ref().unwrap().index
        ),
        (1, 1)
    );
    let new_chain = header_key(&later_a[0]);
    assert_eq!(s.remote_ratchet_key, new_chain);
    assert_eq!(s.receiving_chain.as_ref().unwrap().index, 3);
    assert_eq!(s.previous_remote_ratchet_keys, vec![first.base_key.clone()]);
    let skipped_wires = [&a[1], &a[2], &later_a[0], &later_a[1]];
    assert_eq!(s.skipped_keys.len(), 4);
    for (k, (wire, label)) in s
        .skipped_keys
        .iter()
        .zip(skipped_wires.iter().zip(["a1", "a2", "a3", "a4"]))
    {
        let header = hazmat::parse_ratchet_message(&inner(wire)).unwrap();
        assert_eq!(
            (k.ratchet_key.clone(), k.index),
            (header.ratchet_key.to_vec(), header.counter)
        );
        let opened = open_with(
            &k.message_key,
            alice.public().signing_key(),
            bob.public().signing_key(),
            wire,
        );
        assert_eq!(opened, text(label));
    }
    for bytes in [&alice_after_sends, &bob_after_accept, &bob_mid] {
        assert_eq!(*Session::from_bytes(bytes).unwrap().to_bytes(), **bytes);
        assert_eq!(state(bytes).handshake_digest, handshake_digest);
    }

    let message = |label: &str, wire: &[u8]| json!({"message": label, "wire": h(wire), "plaintext": h(text(label))});
    let states = vec![
        json!({
            "name": "alice_after_initiate_and_three_sends",
            "description": "Alice right after INITIATE and encrypting a0, a1, a2: fields 1-7, 12, 14 (previous_sending_count 0 and the empty remote_ratchet_key omitted)",
            "state": h(&*alice_after_sends),
            "fields": fields(&state(&alice_after_sends)),
            "opens": [message("b0", &b0)],
        }),
        json!({
            "name": "bob_after_accept",
            "description": "Bob right after ACCEPT of a0: fields 1-3, 5, 9, 10, 14",
            "state": h(&*bob_after_accept),
            "fields": fields(&state(&bob_after_accept)),
            "opens": [message("a1", &a[1]), message("a2", &a[2])],
        }),
        json!({
            "name": "bob_mid_conversation",
            "description": "Bob after receiving a5 (a1, a2 and a3, a4 skipped) and sending b1: every field but 4 (initiator false) and 12 (pending_prekey)",
            "state": h(&*bob_mid),
            "fields": fields(&state(&bob_mid)),
            "opens": [message("a1", &a[1]), message("a2", &a[2]), message("a3", &later_a[0]), message("a4", &later_a[1]), message("a6", &later_a[3])],
        }),
    ];
    json!({
        "description": "Later pre-key messages given to a session (spec/04 HS-15, spec/06 SESSION-DECRYPT): the digest every pre-key message of a session must match, in constant time, after decoding and before decryption; and session states (format 0x04, spec/06 SES-1) with each field decoded",
        "alice_identity": h(alice.public().to_bytes()),
        "bob_identity": h(bob.public().to_bytes()),
        "handshake_digest_input": h(digest_input(&alice.public().to_bytes(), 3, Some(7), &first.base_key, &first.kem_ciphertext)),
        "handshake_digest": h(handshake_digest),
        "later_prekey_messages": cases,
        "states": states,
    })
}

/// Checks ward-core's state against a digest computed from the spec.
pub fn assert_state_digest(state_bytes: &[u8], expected: &[u8; 32]) {
    assert_eq!(state(state_bytes).handshake_digest, expected.to_vec());
}
