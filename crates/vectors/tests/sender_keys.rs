//! spec/vectors/sender_keys.json replayed from the file alone: the KDF chain
//! and every sent message are recomputed from spec/13 with the primitives
//! directly (HMAC, HKDF, ChaCha20-Poly1305, Ed25519), and ward-core's chains
//! are driven from the recorded draws.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::path::PathBuf;

use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::AeadInOut;
use ed25519_dalek::{Signature, VerifyingKey};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use ward_core::{ReceivedChain, SenderChain, SenderKeyDistribution, SenderKeyMessage};
use ward_vectors::rng::ReplayRng;

fn load() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors/sender_keys.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

/// `SENDER_CK` with HMAC directly.
fn sender_ck(ck: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mac = |input: u8| {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(ck).unwrap();
        mac.update(&[input]);
        mac.finalize().into_bytes().to_vec()
    };
    (mac(0x03), mac(0x04))
}

/// `EXPAND_SMK` with HKDF directly.
fn expand_smk(mk: &[u8]) -> ([u8; 32], [u8; 12]) {
    let mut okm = [0u8; 44];
    Hkdf::<Sha256>::from_prk(mk)
        .unwrap()
        .expand(b"Ward v1 sender message keys", &mut okm)
        .unwrap();
    (okm[..32].try_into().unwrap(), okm[32..].try_into().unwrap())
}

#[test]
fn the_kdf_chain_follows_spec_13() {
    let v = load();
    for step in v["kdf_chain"].as_array().unwrap() {
        let (mk, next) = sender_ck(&bytes(&step["chain_key"]));
        assert_eq!(mk, bytes(&step["message_key"]));
        assert_eq!(next, bytes(&step["next_chain_key"]));
        let (key, nonce) = expand_smk(&mk);
        assert_eq!(key.to_vec(), bytes(&step["aead_key"]));
        assert_eq!(nonce.to_vec(), bytes(&step["aead_nonce"]));
    }
}

/// Checks a sent message against spec/13 from the draws alone: its layout,
/// AEAD under the chain's `iteration`-th key, and signature.
fn check_wire(draws: &[Vec<u8>], group_id: &[u8], iteration: u32, plaintext: &[u8], wire: &[u8]) {
    let (chain_id, mut ck, seed) = (&draws[0], draws[1].clone(), &draws[2]);
    for _ in 0..iteration {
        ck = sender_ck(&ck).1;
    }
    let (key, nonce) = expand_smk(&sender_ck(&ck).0);
    let mut header = vec![0x08];
    header.extend_from_slice(group_id);
    header.extend_from_slice(chain_id);
    let mut n = iteration;
    while n >= 0x80 {
        header.push((n as u8) | 0x80);
        n >>= 7;
    }
    header.push(n as u8);
    let mut body = plaintext.to_vec();
    let tag = ChaCha20Poly1305::new(&key.into())
        .encrypt_inout_detached(&nonce.into(), &header, body.as_mut_slice().into())
        .unwrap();
    let mut signed = header;
    signed.extend_from_slice(&body);
    signed.extend_from_slice(&tag);
    assert_eq!(
        &wire[..signed.len()],
        &signed[..],
        "message {iteration} up to its signature"
    );
    let signing = ed25519_dalek::SigningKey::from_bytes(seed.as_slice().try_into().unwrap());
    let verifying: VerifyingKey = signing.verifying_key();
    let signature = Signature::from_slice(&wire[signed.len()..]).unwrap();
    verifying.verify_strict(&signed, &signature).unwrap();
}

/// Runs `events`: sends through `sender` (checked against the file and
/// against [`check_wire`]), receives through `member`.
fn replay(
    events: &Value,
    sender: &mut SenderChain,
    member: &mut ReceivedChain,
    draws: &[Vec<u8>],
    group_id: &[u8],
    sent: &mut HashMap<String, Vec<u8>>,
) {
    for event in events.as_array().unwrap() {
        match event["event"].as_str().unwrap() {
            "send" => {
                let plaintext = bytes(&event["plaintext"]);
                let wire = bytes(&event["wire"]);
                check_wire(draws, group_id, sender.iteration(), &plaintext, &wire);
                assert_eq!(sender.encrypt(&plaintext).unwrap(), wire);
                sent.insert(event["label"].as_str().unwrap().to_owned(), wire);
            }
            "receive" => {
                let wire = match event["message"].as_str() {
                    Some(label) => sent[label].clone(),
                    None => bytes(&event["wire"]),
                };
                let before = member.to_bytes();
                let result = SenderKeyMessage::decode(&wire).and_then(|m| member.decrypt(&m));
                match (&event["expect"]["plaintext"], result) {
                    (Value::String(_), Ok(plaintext)) => {
                        assert_eq!(plaintext, bytes(&event["expect"]["plaintext"]));
                    }
                    (Value::Null, Err(e)) => {
                        assert_eq!(format!("{e:?}"), event["expect"]["error"].as_str().unwrap());
                        assert_eq!(
                            member.to_bytes(),
                            before,
                            "a refused message changed the chain"
                        );
                    }
                    (_, other) => panic!("{event}: got {other:?}"),
                }
            }
            other => panic!("unknown event {other}"),
        }
    }
}

#[test]
fn the_chain_and_its_members_replay_from_the_file() {
    let v = load();
    let chain = &v["chain"];
    let group_id = bytes(&chain["group_id"]);
    let draws: Vec<Vec<u8>> = chain["random"]
        .as_array()
        .unwrap()
        .iter()
        .map(bytes)
        .collect();
    assert_eq!(draws.iter().map(Vec::len).collect::<Vec<_>>(), [16, 32, 32]);
    let mut rng = ReplayRng::default();
    rng.push_hex(
        chain["random"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap()),
    );
    let mut sender = SenderChain::generate(
        &mut rng,
        group_id.as_slice().try_into().unwrap(),
        chain["created_at"].as_u64().unwrap(),
    );
    assert_eq!((rng.mismatch.as_deref(), rng.remaining()), (None, 0));
    assert_eq!(&sender.to_bytes()[..], &bytes(&chain["state"])[..]);
    assert_eq!(
        SenderChain::from_bytes(&bytes(&chain["state"]))
            .unwrap()
            .to_bytes(),
        sender.to_bytes()
    );
    let distribution = bytes(&chain["distribution"]);
    assert_eq!(&sender.distribution().encode()[..], &distribution[..]);
    let mut member =
        ReceivedChain::from_distribution(&SenderKeyDistribution::decode(&distribution).unwrap());

    let mut sent = HashMap::new();
    replay(
        &v["events"],
        &mut sender,
        &mut member,
        &draws,
        &group_id,
        &mut sent,
    );
    let member_state = bytes(&v["member_state"]);
    assert_eq!(&member.to_bytes()[..], &member_state[..]);
    assert_eq!(
        ReceivedChain::from_bytes(&member_state).unwrap().to_bytes(),
        member.to_bytes()
    );

    let late = &v["late_member"];
    let late_distribution = bytes(&late["distribution"]);
    assert_eq!(&sender.distribution().encode()[..], &late_distribution[..]);
    let mut late_member = ReceivedChain::from_distribution(
        &SenderKeyDistribution::decode(&late_distribution).unwrap(),
    );
    replay(
        &late["events"],
        &mut sender,
        &mut late_member,
        &draws,
        &group_id,
        &mut sent,
    );
}

#[test]
fn refused_encodings_fail_with_the_named_error() {
    let v = load();
    let cases = v["refused"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let input = bytes(&case["bytes"]);
        let error = match case["kind"].as_str().unwrap() {
            "message" => SenderKeyMessage::decode(&input).map(|_| ()),
            "distribution" => SenderKeyDistribution::decode(&input).map(|_| ()),
            "own_state" => SenderChain::from_bytes(&input).map(|_| ()),
            "received_state" => ReceivedChain::from_bytes(&input).map(|_| ()),
            other => panic!("unknown kind {other}"),
        }
        .expect_err(case["name"].as_str().unwrap());
        assert_eq!(
            format!("{error:?}"),
            case["error"].as_str().unwrap(),
            "{}",
            case["name"]
        );
    }
}
