//! spec/vectors/sender_keys.json: the sender-key KDFs, one chain from its
//! random draws, a member reading it out of order, with a duplicate, a
//! forgery and a message for another chain, a member added late, and the
//! encodings a decoder refuses (spec/13-sender-keys.md).

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde_json::{Value, json};
use ward_core::{ReceivedChain, SenderChain, SenderKeyDistribution, SenderKeyMessage, hazmat};

use crate::rng::RecordingRng;
use crate::{h, outcome};

const GROUP: [u8; 16] = *b"4 West care team";
const CREATED_AT: u64 = 1_767_225_600;

fn receive(member: &mut ReceivedChain, label: Option<&str>, wire: &[u8]) -> Value {
    let result = SenderKeyMessage::decode(wire).and_then(|m| member.decrypt(&m));
    let mut event = json!({"event": "receive"});
    match label {
        Some(label) => event["message"] = json!(label),
        None => event["wire"] = json!(h(wire)),
    }
    event["expect"] = outcome(result);
    event
}

/// The sender-key vectors.
pub(crate) fn sender_keys() -> Value {
    let mut rng = ChaCha20Rng::seed_from_u64(0x736b);
    let mut chain_key = [0u8; 32];
    rng.fill_bytes(&mut chain_key);
    let mut steps = Vec::new();
    for iteration in 0..4 {
        let (mk, next) = hazmat::sender_kdf_ck(&chain_key);
        let (key, nonce) = hazmat::expand_smk(&mk);
        steps.push(json!({
            "iteration": iteration, "chain_key": h(chain_key), "message_key": h(*mk),
            "next_chain_key": h(*next), "aead_key": h(*key), "aead_nonce": h(nonce),
        }));
        chain_key = *next;
    }

    let mut recording = RecordingRng::new(0x5e4d);
    let mut sender = SenderChain::generate(&mut recording, GROUP, CREATED_AT);
    let random = recording.take_draws();
    let start_state = sender.to_bytes();
    let distribution = sender.distribution().encode();
    let mut member = ReceivedChain::from_distribution(
        &SenderKeyDistribution::decode(&distribution).expect("own distribution decodes"),
    );

    let mut events = Vec::new();
    let mut wires = Vec::new();
    for i in 0..5u8 {
        let label = format!("m{i}");
        let plaintext = format!("group message {i}").into_bytes();
        let wire = sender.encrypt(&plaintext).expect("encrypts");
        events.push(
            json!({"event": "send", "label": label, "plaintext": h(&plaintext), "wire": h(&wire)}),
        );
        wires.push((label, wire));
    }
    for i in [0usize, 3, 1, 3] {
        events.push(receive(&mut member, Some(&wires[i].0), &wires[i].1));
    }
    // One flipped ciphertext bit: the signature fails before the tag is
    // looked at.
    let mut flipped = wires[2].1.clone();
    let at = flipped.len() - 64 - 16 - 1;
    flipped[at] ^= 0x01;
    events.push(receive(&mut member, None, &flipped));
    // A member knows the chain key, so it can make m2's AEAD valid for a
    // text of its own; it cannot make the chain's signature.
    let initial_chain_key: [u8; 32] = hex::decode(&random[1])
        .expect("hex")
        .try_into()
        .expect("the second draw is the chain key");
    events.push(receive(
        &mut member,
        None,
        &member_forgery(&initial_chain_key, &wires[2].1),
    ));
    let mut other_chain = wires[2].1.clone();
    other_chain[17] ^= 0xff;
    events.push(receive(&mut member, None, &other_chain));
    for i in [2usize, 4] {
        events.push(receive(&mut member, Some(&wires[i].0), &wires[i].1));
    }
    let member_state = member.to_bytes();

    // A member added after m0..m4 were sent reads from m5 on only.
    let late_distribution = sender.distribution().encode();
    let mut late = ReceivedChain::from_distribution(
        &SenderKeyDistribution::decode(&late_distribution).expect("own distribution decodes"),
    );
    let plaintext = b"after the new member joined".to_vec();
    let wire = sender.encrypt(&plaintext).expect("encrypts");
    let late_events = vec![
        json!({"event": "send", "label": "m5", "plaintext": h(&plaintext), "wire": h(&wire)}),
        receive(&mut late, Some(&wires[0].0), &wires[0].1),
        receive(&mut late, Some("m5"), &wire),
    ];

    json!({
        "description": "Sender keys (spec/13-sender-keys.md): SENDER_CK and EXPAND_SMK, a chain from its draws, a member reading out of order with a duplicate, a forgery and a message for another chain, a member added late, refused encodings",
        "kdf_chain": steps,
        "chain": {
            "group_id": h(GROUP),
            "created_at": CREATED_AT,
            "random": random,
            "state": h(&*start_state),
            "distribution": h(&*distribution),
        },
        "events": events,
        "member_state": h(&*member_state),
        "late_member": {
            "distribution": h(&*late_distribution),
            "events": late_events,
        },
        "refused": refused(&wires[0].1, &distribution, &start_state, &member_state),
    })
}

fn refused(message: &[u8], distribution: &[u8], own: &[u8], received: &[u8]) -> Vec<Value> {
    let mut cases = Vec::new();
    let mut case = |kind: &str, name: &str, bytes: Vec<u8>| {
        let error = match kind {
            "message" => SenderKeyMessage::decode(&bytes).map(|_| ()),
            "distribution" => SenderKeyDistribution::decode(&bytes).map(|_| ()),
            "own_state" => SenderChain::from_bytes(&bytes).map(|_| ()),
            _ => ReceivedChain::from_bytes(&bytes).map(|_| ()),
        }
        .expect_err("a refused case is refused");
        cases.push(
            json!({"kind": kind, "name": name, "bytes": h(&bytes), "error": format!("{error:?}")}),
        );
    };
    case("message", "empty", Vec::new());
    case("message", "shorter than 114 bytes", message[..113].to_vec());
    let mut wrong_format = message.to_vec();
    wrong_format[0] = 0x01;
    case("message", "a ratchet message's format byte", wrong_format);
    let mut long_varint = message[..33].to_vec();
    long_varint.extend_from_slice(&[0x80, 0x00]);
    long_varint.extend_from_slice(&message[34..]);
    case("message", "non-canonical iteration varint", long_varint);
    let mut open_varint = message[..33].to_vec();
    open_varint.extend_from_slice(&[0xff; 81]);
    case(
        "message",
        "iteration varint longer than 5 bytes",
        open_varint,
    );

    let mut small_order = distribution.to_vec();
    let key_at = small_order.len() - 32;
    small_order[key_at..].copy_from_slice(&identity_point());
    case("distribution", "small-order signing key", small_order);
    let mut not_a_point = distribution.to_vec();
    not_a_point[key_at..].copy_from_slice(&off_curve());
    case(
        "distribution",
        "signing key that does not decompress",
        not_a_point,
    );
    case("distribution", "the format byte only", vec![0x09]);
    case("distribution", "unparsable protobuf", vec![0x09, 0xff]);
    case("own_state", "a received chain", received.to_vec());
    case("received_state", "an own chain", own.to_vec());
    cases
}

/// Iteration 2 of the chain with `plaintext` of the forger's choosing,
/// AEAD-valid under the chain's key, signed with a key not the chain's.
fn member_forgery(chain_key: &[u8; 32], genuine: &[u8]) -> Vec<u8> {
    use chacha20poly1305::aead::AeadInOut;
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
    use ed25519_dalek::{Signer, SigningKey};

    let mut key = *chain_key;
    for _ in 0..2 {
        key = *hazmat::sender_kdf_ck(&key).1;
    }
    let (mk, _) = hazmat::sender_kdf_ck(&key);
    let (aead_key, nonce) = hazmat::expand_smk(&mk);
    let header = &genuine[..34];
    let mut out = header.to_vec();
    let mut body = b"forged by a member".to_vec();
    let tag = ChaCha20Poly1305::new(&(*aead_key).into())
        .encrypt_inout_detached(&nonce.into(), header, body.as_mut_slice().into())
        .expect("seals");
    out.extend_from_slice(&body);
    out.extend_from_slice(&tag);
    let signature = SigningKey::from_bytes(&[0x66; 32]).sign(&out);
    out.extend_from_slice(&signature.to_bytes());
    out
}

/// The first 32-byte string, counting up from y = 2, that is not an
/// Edwards point: `VerifyingKey::from_bytes` refuses it.
fn off_curve() -> [u8; 32] {
    (2u8..=255)
        .map(|y| {
            let mut bytes = [0u8; 32];
            bytes[0] = y;
            bytes
        })
        .find(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).is_err())
        .expect("some small y is off the curve")
}

/// The Edwards identity point, of order 1.
fn identity_point() -> [u8; 32] {
    let mut point = [0u8; 32];
    point[0] = 1;
    point
}
