//! spec/vectors/groups.json replayed from the file alone: signatures,
//! heads and ranks are recomputed from spec/14 with SHA-256 and Ed25519
//! directly; ward-core's groups are driven by the same events and must
//! produce the same bytes and outcomes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use ward_core::sender_key::RotationPolicy;
use ward_core::{GroupChange, GroupState, IdentityKeyPair, SenderKeyDistribution};
use ward_proto::Message;
use ward_proto::core_v1::{GroupChange as ChangeBody, SignedGroupChange};
use ward_vectors::rng::ReplayRng;

const NOW: u64 = 1_767_225_600;

fn load() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors/groups.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

/// Checks a signed change by spec/14 alone; returns its body and its rank.
fn check_change(signed: &[u8]) -> (Vec<u8>, [u8; 32]) {
    assert_eq!(signed[0], 0x0b);
    let outer = SignedGroupChange::decode(&signed[1..]).unwrap();
    let body = ChangeBody::decode(outer.change.as_slice()).unwrap();
    let author = VerifyingKey::from_bytes(body.author.as_slice().try_into().unwrap()).unwrap();
    let mut input = b"Ward v1 group change\0".to_vec();
    input.extend_from_slice(&outer.change);
    author
        .verify_strict(&input, &Signature::from_slice(&outer.signature).unwrap())
        .unwrap();
    let rank = Sha256::digest(&outer.change).into();
    (outer.change.clone(), rank)
}

fn next_head(parent: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"Ward v1 group head\0");
    hash.update(parent);
    hash.update(body);
    hash.finalize().into()
}

#[test]
fn the_group_replays_from_the_file() {
    let v = load();
    let devices: Vec<(String, IdentityKeyPair)> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let identity =
                IdentityKeyPair::from_secret_bytes(&bytes(&d["identity_secret"])).unwrap();
            assert_eq!(
                identity.public().signing_key().to_vec(),
                bytes(&d["signing_key"])
            );
            (d["user_id"].as_str().unwrap().to_owned(), identity)
        })
        .collect();
    let index = |name: &str| {
        ["alice", "bob", "carol"]
            .iter()
            .position(|n| *n == name)
            .unwrap()
    };
    let mut groups: Vec<Option<GroupState>> = vec![None, None, None];
    let mut head = [0u8; 32];
    let mut messages = std::collections::HashMap::new();
    for event in v["events"].as_array().unwrap() {
        match event["event"].as_str().unwrap() {
            "change" => {
                let signed = bytes(&event["signed"]);
                let (body, _) = check_change(&signed);
                head = next_head(&head, &body);
                assert_eq!(
                    head.to_vec(),
                    bytes(&event["head_after"]),
                    "{}",
                    event["label"]
                );
                let change = GroupChange::decode(&signed).unwrap();
                for (i, (user, identity)) in devices.iter().enumerate() {
                    match &mut groups[i] {
                        None => {
                            groups[i] = Some(GroupState::join(identity, user, &change).unwrap())
                        }
                        Some(group) => {
                            group.apply(&change).unwrap();
                        }
                    }
                    assert_eq!(groups[i].as_ref().unwrap().head(), &head);
                }
            }
            "send" => {
                let by = index(event["by"].as_str().unwrap());
                let mut rng = ReplayRng::default();
                rng.push_hex(
                    event["random"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_str().unwrap()),
                );
                let out = groups[by]
                    .as_mut()
                    .unwrap()
                    .encrypt(
                        &mut rng,
                        NOW,
                        &RotationPolicy::default(),
                        &bytes(&event["plaintext"]),
                    )
                    .unwrap();
                assert_eq!((rng.mismatch.as_deref(), rng.remaining()), (None, 0));
                assert_eq!(out.message, bytes(&event["message"]));
                let hexes = |keys: &[[u8; 32]]| keys.iter().map(hex::encode).collect::<Vec<_>>();
                let listed = |field: &str| -> Vec<String> {
                    event[field]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|k| k.as_str().unwrap().to_owned())
                        .collect()
                };
                assert_eq!(hexes(&out.recipients), listed("recipients"));
                assert_eq!(hexes(&out.distribute_to), listed("distribute_to"));
                let distribution = out.distribution.as_ref().map(|d| hex::encode(&*d.encode()));
                assert_eq!(distribution.as_deref(), event["distribution"].as_str());
                let sender = *devices[by].1.public().signing_key();
                for key in &out.distribute_to {
                    let i = devices
                        .iter()
                        .position(|(_, id)| id.public().signing_key() == key)
                        .unwrap();
                    let d =
                        SenderKeyDistribution::decode(&out.distribution.as_ref().unwrap().encode())
                            .unwrap();
                    groups[i]
                        .as_mut()
                        .unwrap()
                        .accept_distribution(&sender, &d)
                        .unwrap();
                }
                messages.insert(event["label"].as_str().unwrap().to_owned(), out.message);
            }
            "receive" => {
                let by = index(event["by"].as_str().unwrap());
                let message = &messages[event["message"].as_str().unwrap()];
                let result = groups[by].as_mut().unwrap().decrypt(message);
                match (result, &event["expect"]["error"]) {
                    (Ok(opened), Value::Null) => {
                        assert_eq!(opened.plaintext, bytes(&event["expect"]["plaintext"]));
                        assert_eq!(
                            opened.user_id,
                            event["expect"]["from_user"].as_str().unwrap()
                        );
                        assert_eq!(
                            opened.device.to_vec(),
                            bytes(&event["expect"]["from_device"])
                        );
                    }
                    (Err(e), Value::String(expected)) => assert_eq!(&format!("{e:?}"), expected),
                    (other, _) => panic!("{event}: got {other:?}"),
                }
            }
            other => panic!("unknown event {other}"),
        }
    }

    let competing = &v["competing"];
    let (_, rank_a) = check_change(&bytes(&competing["a"]));
    let (_, rank_b) = check_change(&bytes(&competing["b"]));
    assert_eq!(rank_a.to_vec(), bytes(&competing["rank_a"]));
    assert_eq!(rank_b.to_vec(), bytes(&competing["rank_b"]));
    let winner = if rank_a < rank_b { "a" } else { "b" };
    assert_eq!(winner, competing["winner"].as_str().unwrap());
    let loser = if winner == "a" { "b" } else { "a" };
    // Bob meets the loser first, Alice the winner: both end at one head.
    let bob = groups[1].as_mut().unwrap();
    bob.apply(&GroupChange::decode(&bytes(&competing[loser])).unwrap())
        .unwrap();
    bob.apply(&GroupChange::decode(&bytes(&competing[winner])).unwrap())
        .unwrap();
    let alice = groups[0].as_mut().unwrap();
    alice
        .apply(&GroupChange::decode(&bytes(&competing[winner])).unwrap())
        .unwrap();
    for group in groups.iter().take(2) {
        let group = group.as_ref().unwrap();
        assert_eq!(group.head().to_vec(), bytes(&competing["head_after"]));
        assert_eq!(group.name(), competing["name_after"].as_str().unwrap());
    }
}
