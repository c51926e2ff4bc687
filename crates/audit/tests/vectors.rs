//! `vectors()` is deterministic and replays from its own JSON alone, with the
//! verifiers and the RFC 9162 reference root (a second path through the
//! tree); a few values are pinned so a format change cannot go unnoticed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::Value;
use ward_audit::merkle::root_from_leaf_hashes;
use ward_audit::vectors::decode_error_name;
use ward_audit::{
    AuditEntry, Hash, Outcome, SignedTreeHead, SigningKey, TreeHead, VerifyingKey, leaf_hash,
    vectors, verify_consistency, verify_export, verify_inclusion,
};

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn hash(v: &Value) -> Hash {
    bytes(v).try_into().unwrap()
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array().unwrap().iter().map(hash).collect()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

#[test]
fn vectors_are_deterministic() {
    assert_eq!(vectors(), vectors());
}

#[test]
fn vectors_replay_from_the_json_alone() {
    let v = vectors();

    // Entries: the encoding decodes to the listed fields and hashes to the
    // listed leaf hash.
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 8);
    let mut leaves = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let encoded = bytes(&e["encoded"]);
        let decoded = AuditEntry::decode(&encoded).unwrap();
        assert_eq!(decoded.sequence, i as u64);
        assert_eq!(decoded.sequence, u(&e["sequence"]));
        assert_eq!(decoded.timestamp_ms, u(&e["timestamp_ms"]));
        assert_eq!(decoded.kind.name(), e["kind"].as_str().unwrap());
        assert_eq!(u64::from(decoded.kind.code()), u(&e["kind_code"]));
        assert_eq!(
            decoded.actor_user.as_ref().map(|x| x.as_str()),
            e["actor_user"].as_str()
        );
        assert_eq!(
            decoded.actor_device.as_ref().map(|x| x.as_str()),
            e["actor_device"].as_str()
        );
        assert_eq!(
            decoded.target_user.as_ref().map(|x| x.as_str()),
            e["target_user"].as_str()
        );
        assert_eq!(
            decoded.target_device.as_ref().map(|x| x.as_str()),
            e["target_device"].as_str()
        );
        match &decoded.outcome {
            Outcome::Ok => {
                assert_eq!(e["outcome"], "ok");
                assert!(e["error_code"].is_null());
            }
            Outcome::Error(code) => {
                assert_eq!(e["outcome"], "error");
                assert_eq!(e["error_code"].as_str(), Some(code.as_str()));
            }
        }
        assert_eq!(
            decoded.detail.as_ref().map(|x| x.as_str()),
            e["detail"].as_str()
        );
        assert_eq!(decoded.size, e["size"].as_u64());
        assert_eq!(
            decoded.message_id.map(|m| hex::encode(m.0)),
            e["message_id"].as_str().map(String::from)
        );
        assert!(!decoded.to_string().is_empty());
        let leaf = leaf_hash(&encoded);
        assert_eq!(leaf, hash(&e["leaf_hash"]));
        leaves.push(leaf);
    }
    assert_eq!(entries[5]["outcome"], "error");
    assert_eq!(entries[5]["error_code"], "auth_failed");
    assert_eq!(entries[5]["detail"], "bad_signature");

    // Roots of sizes 0..=8 by the recursive definition.
    let roots = v["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 9);
    for r in roots {
        let n = u(&r["tree_size"]) as usize;
        assert_eq!(
            root_from_leaf_hashes(&leaves[..n]),
            hash(&r["root"]),
            "size {n}"
        );
    }

    for p in v["inclusion_proofs"].as_array().unwrap() {
        let (i, n) = (u(&p["leaf_index"]), u(&p["tree_size"]));
        assert_eq!(hash(&p["leaf_hash"]), leaves[i as usize]);
        assert_eq!(
            hash(&p["root"]),
            root_from_leaf_hashes(&leaves[..n as usize])
        );
        verify_inclusion(
            &leaves[i as usize],
            i,
            n,
            &hashes(&p["path"]),
            &hash(&p["root"]),
        )
        .unwrap();
    }
    for p in v["consistency_proofs"].as_array().unwrap() {
        let (m, n) = (u(&p["first_size"]), u(&p["second_size"]));
        assert_eq!(
            hash(&p["first_root"]),
            root_from_leaf_hashes(&leaves[..m as usize])
        );
        assert_eq!(
            hash(&p["second_root"]),
            root_from_leaf_hashes(&leaves[..n as usize])
        );
        verify_consistency(
            m,
            n,
            &hash(&p["first_root"]),
            &hash(&p["second_root"]),
            &hashes(&p["path"]),
        )
        .unwrap();
    }

    // The relay key from its seed; each head's signing input, signature and
    // encoding.
    let seed: [u8; 32] = bytes(&v["relay_key"]["seed"]).try_into().unwrap();
    let key = SigningKey::from_bytes(&seed);
    let public: [u8; 32] = bytes(&v["relay_key"]["public_key"]).try_into().unwrap();
    assert_eq!(key.verifying_key().to_bytes(), public);
    let vk = VerifyingKey::from_bytes(&public).unwrap();
    for th in v["tree_heads"].as_array().unwrap() {
        let head = TreeHead {
            tree_size: u(&th["tree_size"]),
            timestamp_ms: u(&th["timestamp_ms"]),
            root: hash(&th["root"]),
        };
        assert_eq!(head.signing_input().to_vec(), bytes(&th["signing_input"]));
        assert_eq!(
            head.root,
            root_from_leaf_hashes(&leaves[..head.tree_size as usize])
        );
        let signed = SignedTreeHead::decode(&bytes(&th["encoded"])).unwrap();
        assert_eq!(signed.head, head);
        assert_eq!(signed.signature.to_vec(), bytes(&th["signature"]));
        assert_eq!(signed.verify(&vk), Ok(&head));
        // Ed25519 is deterministic: signing again gives the same bytes.
        assert_eq!(head.sign(&key), signed);
    }

    // The export verifies under the listed key.
    assert_eq!(v["export"]["expect"], "valid");
    let verified = verify_export(&bytes(&v["export"]["bytes"]), Some(public)).unwrap();
    assert_eq!(verified.size(), 8);
    assert_eq!(verified.root(), root_from_leaf_hashes(&leaves));

    // Invalid encodings fail with the listed error.
    let invalid = v["invalid_entries"].as_array().unwrap();
    assert!(invalid.len() >= 10);
    for case in invalid {
        let err = AuditEntry::decode(&bytes(&case["encoded"])).unwrap_err();
        assert_eq!(
            decode_error_name(&err),
            case["error"].as_str().unwrap(),
            "{}",
            case["what"]
        );
    }
}

/// What spec/08, "Audit", says an entry of each kind holds, as a check of
/// one entry: `Err` names the first rule it breaks.
fn follows_spec_08_audit_rules(e: &AuditEntry) -> Result<(), String> {
    use ward_audit::EventKind::*;
    // Which of actor_user, actor_device, target_user, target_device,
    // message_id, size are present.
    let present = [
        e.actor_user.is_some(),
        e.actor_device.is_some(),
        e.target_user.is_some(),
        e.target_device.is_some(),
        e.message_id.is_some(),
        e.size.is_some(),
    ];
    let fields = |want: [bool; 6]| {
        if present == want {
            Ok(())
        } else {
            Err(format!(
                "fields present {present:?} (actor user, actor device, target user, target device, message id, size), spec/08 says {want:?}"
            ))
        }
    };
    // Devices are named by their key as 64 lowercase hex digits ("Names").
    for device in [&e.actor_device, &e.target_device].into_iter().flatten() {
        let d = device.as_str();
        if d.len() != 64 || !d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!("device id {d:?} is not 64 lowercase hex digits"));
        }
    }
    let detail = e.detail.as_ref().map(|d| d.as_str());
    let code = match &e.outcome {
        Outcome::Ok => None,
        Outcome::Error(code) => Some(code.as_str()),
    };
    if e.kind != AuthFailure && code.is_some() {
        return Err(format!("{:?} with an error outcome", e.kind));
    }
    let detail_is = |allowed: &[Option<&str>]| {
        if allowed.contains(&detail) {
            Ok(())
        } else {
            Err(format!("{:?} with detail {detail:?}", e.kind))
        }
    };
    let (actor_user, actor_device) = (present[0], present[1]);
    match e.kind {
        AuthSuccess | Enrollment => {
            fields([true, true, false, false, false, false])?;
            detail_is(&[None])
        }
        AuthFailure => {
            // Actor device if a key was given (or the identity decoded),
            // actor user only if that device is known.
            fields([actor_user, actor_device, false, false, false, false])?;
            if actor_user && !actor_device {
                return Err("AuthFailure with an actor user and no actor device".into());
            }
            // The reason, and the code the refusal carries (Authenticate's
            // and Enroll's checks).
            let want = match detail {
                Some("no_challenge" | "bad_key" | "unknown_device" | "bad_signature") => {
                    "auth_failed"
                }
                Some("revoked") => "revoked",
                Some(
                    "bad_identity" | "token_invalid" | "token_used" | "token_expired"
                    | "device_known",
                ) => "enrollment_refused",
                other => return Err(format!("AuthFailure with detail {other:?}")),
            };
            if code != Some(want) {
                return Err(format!(
                    "AuthFailure {detail:?} with outcome {code:?}, spec/08 says error:{want}"
                ));
            }
            Ok(())
        }
        PreKeyFetch => {
            fields([true, true, true, true, false, false])?;
            match detail.and_then(|d| d.strip_prefix("one_time=")) {
                Some("none") => Ok(()),
                Some(id) if id.parse::<u32>().is_ok_and(|n| n.to_string() == id) => Ok(()),
                _ => Err(format!("PreKeyFetch with detail {detail:?}")),
            }
        }
        Send | Acknowledgment => {
            fields([true, true, true, true, true, true])?;
            detail_is(&[None])
        }
        Delivery => {
            fields([true, true, true, true, true, true])?;
            detail_is(&[None, Some("fetched")])
        }
        Expiry => {
            fields([false, false, true, true, true, true])?;
            detail_is(&[None, Some("device_revoked")])
        }
        Revocation => {
            fields([actor_user, actor_device, true, true, false, false])?;
            match detail.and_then(|d| d.strip_prefix("messages=")) {
                Some(rest) if rest.contains(", one_time_prekeys=") => Ok(()),
                _ => Err(format!("Revocation with detail {detail:?}")),
            }
        }
        AdminAction => match detail {
            Some(d)
                if d.starts_with("create_user role=")
                    || d.starts_with("enrollment_token role=") =>
            {
                fields([actor_user, false, true, false, false, false])
            }
            Some("wipe") => fields([actor_user, false, true, true, false, false]),
            Some("wipe_done") => {
                fields([true, true, true, true, false, false])?;
                if e.actor_user == e.target_user && e.actor_device == e.target_device {
                    Ok(())
                } else {
                    Err("wipe_done whose actor is not its target".into())
                }
            }
            other => Err(format!("AdminAction with detail {other:?}")),
        },
        other => Err(format!("kind {other:?} not in spec/08")),
    }
}

/// Every entry of the vectors is one the relay writes, by the rules of
/// spec/08, "Audit" (`crates/relay/tests/audit_vectors.rs` has the relay
/// write them); the rules themselves refuse what the vectors once held.
#[test]
fn vector_entries_follow_spec_08_audit_rules() {
    use ward_audit::vectors::vector_entries;
    use ward_audit::{Detail, DeviceId, ErrorCode, EventKind};
    let entries = vector_entries();
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(follows_spec_08_audit_rules(entry), Ok(()), "entry {i}");
    }
    // What the vectors held before they followed spec/08.
    let broken = |f: &dyn Fn(&mut AuditEntry)| {
        let mut e = entries.clone();
        e.iter_mut().for_each(f);
        e
    };
    let refused = |entries: Vec<AuditEntry>| {
        entries
            .iter()
            .any(|e| follows_spec_08_audit_rules(e).is_err())
    };
    assert!(refused(broken(&|e| {
        if e.actor_device.is_some() {
            e.actor_device = DeviceId::new("phone-1").ok();
        }
    })));
    assert!(refused(broken(&|e| {
        if e.kind == EventKind::AuthFailure {
            e.outcome = Outcome::Error(ErrorCode::new("bad_signature").unwrap());
            e.detail = None;
        }
    })));
    assert!(refused(broken(&|e| {
        if e.kind == EventKind::Delivery {
            e.actor_user = None;
            e.actor_device = None;
        }
    })));
    assert!(refused(broken(&|e| {
        if e.kind == EventKind::Acknowledgment {
            e.target_user = None;
            e.target_device = None;
        }
    })));
    assert!(refused(broken(&|e| {
        if e.kind == EventKind::PreKeyFetch {
            e.detail = None;
        }
    })));
    assert!(refused(broken(&|e| {
        if e.kind == EventKind::PreKeyFetch {
            e.detail = Detail::new("one_time=042").ok();
        }
    })));
}

/// Pinned values: a change here is a change of the wire format or hashing
/// and must come with a spec change. They were reproduced by a separate
/// Python implementation written from spec/09-audit-log.md (entry encoding,
/// RFC 9162 hashing, Ed25519 from the seed via `cryptography`, the export).
#[test]
fn pinned_values() {
    let v = vectors();
    let e0 = v["entries"][0]["encoded"].as_str().unwrap();
    assert_eq!(e0, PINNED_ENTRY_0);
    assert_eq!(v["roots"][8]["root"].as_str().unwrap(), PINNED_ROOT_8);
    assert_eq!(
        v["relay_key"]["public_key"].as_str().unwrap(),
        PINNED_PUBLIC_KEY
    );
    assert_eq!(
        v["tree_heads"][1]["signature"].as_str().unwrap(),
        PINNED_SIGNATURE_8
    );
}

const PINNED_ENTRY_0: &str = "010000000000000000000001a0c5ef76000a45001461646d696e40636c696e69632e6578616d706c6514616c69636540636c696e69632e6578616d706c651b656e726f6c6c6d656e745f746f6b656e20726f6c653d6e75727365";
const PINNED_ROOT_8: &str = "50f7c2b9431c469c6d30f77e960ede0016bc8cfcedb7c6926f9058815d199219";
const PINNED_SIGNATURE_8: &str = "85d75fbbe24a537b060d03b93237073c88e93d576667d4e2da9e3dc4329ba55131b943d3d72f880d393ca571b60f6b98f14bd3723550f74dbc33990839eb6e0b";
const PINNED_PUBLIC_KEY: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
