//! `vectors()` is deterministic and replays from its own JSON alone, with the
//! verifiers and the RFC 9162 reference root (a second path through the
//! tree); a few values are pinned so a format change cannot go unnoticed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::Value;
use ward_audit::merkle::root_from_leaf_hashes;
use ward_audit::vectors::decode_error_name;
use ward_audit::{
    AuditEntry, Hash, SignedTreeHead, SigningKey, TreeHead, VerifyingKey, leaf_hash, vectors,
    verify_consistency, verify_export, verify_inclusion,
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
            decoded.target_device.as_ref().map(|x| x.as_str()),
            e["target_device"].as_str()
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
    assert_eq!(entries[5]["error_code"], "bad_signature");

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
const PINNED_ROOT_8: &str = "32b471a7e1cf1b36b9ff5a1ca50cffab57bf7ae0c52ed0223d770dbad23fc04c";
const PINNED_SIGNATURE_8: &str = "5a3baa0a1612096bbeb96e81f0f5bce3d2264c5fd3c0ade00f7aee705f018f1662682e031fc1b5c5e021979752368a7a3688968ca9c72dc3b8526a063fb31905";
const PINNED_PUBLIC_KEY: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
