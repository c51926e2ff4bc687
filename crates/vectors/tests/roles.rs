//! spec/vectors/roles.json replayed from the file alone: the signature is
//! checked with Ed25519 directly and the body re-encoded from the listed
//! fields; holders, gaps and overlaps are recomputed by counting.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use ed25519_dalek::{Signature, SigningKey};
use serde_json::Value;
use ward_core::{AdminKey, RoleSchedule};
use ward_proto::Message;
use ward_proto::core_v1::{RoleAssignment, RoleSchedule as Body, SignedRoleSchedule};

fn load() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors/roles.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn the_signed_schedule_follows_spec_15() {
    let v = load();
    let secret = bytes(&v["admin_key_secret"]);
    assert_eq!((secret.len(), secret[0]), (33, 0x0f));
    let signing = SigningKey::from_bytes(secret[1..].try_into().unwrap());
    assert_eq!(
        signing.verifying_key().to_bytes().to_vec(),
        bytes(&v["admin_public_key"])
    );
    let s = &v["schedule"];
    let body = Body {
        role_id: s["role_id"].as_str().unwrap().into(),
        display_name: s["display_name"].as_str().unwrap().into(),
        department: s["department"].as_str().unwrap().into(),
        version: s["version"].as_u64().unwrap(),
        issued_at: s["issued_at"].as_u64().unwrap(),
        assignments: s["assignments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| RoleAssignment {
                user_id: a["user_id"].as_str().unwrap().into(),
                starts_at: a["starts_at"].as_u64().unwrap(),
                ends_at: a["ends_at"].as_u64().unwrap(),
            })
            .collect(),
    }
    .encode_to_vec();
    let signed = bytes(&v["signed"]);
    assert_eq!(signed[0], 0x0e);
    let outer = SignedRoleSchedule::decode(&signed[1..]).unwrap();
    assert_eq!(outer.schedule, body);
    let mut input = b"Ward v1 role schedule\0".to_vec();
    input.extend_from_slice(&body);
    signing
        .verifying_key()
        .verify_strict(&input, &Signature::from_slice(&outer.signature).unwrap())
        .unwrap();

    let admin = AdminKey::from_secret_bytes(&secret).unwrap();
    let schedule = RoleSchedule::decode_verified(&signed, &[admin.public_key()]).unwrap();
    assert_eq!(
        admin.sign(&schedule).unwrap(),
        signed,
        "signing is deterministic"
    );
    let count = |t: u64| {
        schedule
            .assignments
            .iter()
            .filter(|a| a.starts_at <= t && t < a.ends_at)
            .count()
    };
    for case in v["holders"].as_array().unwrap() {
        let at = case["at"].as_u64().unwrap();
        let listed: Vec<&str> = case["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap())
            .collect();
        assert_eq!(schedule.holders_at(at), listed);
        assert_eq!(listed.len(), count(at));
    }
    let (from, to) = (
        v["window"]["from"].as_u64().unwrap(),
        v["window"]["to"].as_u64().unwrap(),
    );
    for (field, wanted) in [("gaps", 0usize..1), ("overlaps", 2..usize::MAX)] {
        let listed: Vec<(u64, u64)> = v[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["from"].as_u64().unwrap(), i["to"].as_u64().unwrap()))
            .collect();
        // Boundaries are on the hour: count at each hour of the window.
        for t in (from..to).step_by(3600) {
            let inside = listed.iter().any(|&(a, b)| a <= t && t < b);
            assert_eq!(inside, wanted.contains(&count(t)), "{field} at {t}");
        }
    }
    for case in v["refused"].as_array().unwrap() {
        let error = RoleSchedule::decode_verified(&bytes(&case["bytes"]), &[admin.public_key()])
            .unwrap_err();
        assert_eq!(
            format!("{error:?}"),
            case["error"].as_str().unwrap(),
            "{}",
            case["name"]
        );
    }
}
