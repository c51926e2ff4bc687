//! The audit log's decoders (spec/09) on arbitrary bytes: `AuditEntry`,
//! `SignedTreeHead`, the export framing (`Export::decode`) and the
//! auditor's `verify_export`.
//!
//! An auditor runs the verifier on a file the relay produced: the relay is
//! the party the verifier must not trust, so every byte is hostile. Nothing
//! may panic, and:
//!
//! - an entry, a signed head or an export that decodes is the canonical
//!   encoding of its value: re-encoding gives back exactly the input
//!   (AUD-2, AUD-6, AUD-12), and leaf hashes are over those bytes (AUD-5);
//! - an export that verifies agrees with itself: its size, root and latest
//!   head match, and every head it holds passes `check_head`.
//!
//! Each input is also offered behind the export magic and version, so the
//! fuzzer reaches the verifier's later steps without first guessing them.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ward_audit::export::{EXPORT_MAGIC, EXPORT_VERSION};
use ward_audit::{
    AuditEntry, Export, MAX_ENTRY_LEN, SignedTreeHead, SigningKey, leaf_hash, verify_export,
};

/// The relay key of the seed corpus (that of spec/vectors/audit.json), so
/// that mutated seeds take the expected-key path to its end.
fn seed_relay_key() -> [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    *KEY.get_or_init(|| {
        SigningKey::from_bytes(&ward_audit::vectors::VECTOR_KEY_SEED)
            .verifying_key()
            .to_bytes()
    })
}

fn entry(data: &[u8]) {
    let Ok(entry) = AuditEntry::decode(data) else {
        return;
    };
    let encoded = entry.encode();
    assert_eq!(encoded, data, "an accepted entry is not canonical");
    assert!(encoded.len() <= MAX_ENTRY_LEN, "entry longer than MAX_ENTRY_LEN");
    assert_eq!(entry.leaf_hash(), leaf_hash(data), "leaf hash not over the bytes");
    assert_eq!(
        AuditEntry::decode(&encoded).as_ref(),
        Ok(&entry),
        "round trip changed the entry"
    );
}

fn head(data: &[u8]) {
    let Ok(head) = SignedTreeHead::decode(data) else {
        return;
    };
    assert_eq!(&head.encode()[..], data, "an accepted head is not canonical");
}

fn export(data: &[u8]) {
    if let Ok(export) = Export::decode(data) {
        assert_eq!(export.encode(), data, "an accepted export is not canonical");
    }
    for expected in [None, Some(seed_relay_key())] {
        let Ok(verified) = verify_export(data, expected) else {
            continue;
        };
        let decoded = Export::decode(data).expect("a verified export decodes");
        assert_eq!(verified.size(), decoded.entries.len() as u64, "size");
        assert_eq!(verified.entries(), &decoded.entries[..], "entries");
        assert_eq!(verified.heads(), &decoded.heads[..], "heads");
        assert_eq!(verified.relay_key(), decoded.relay_key, "relay key");
        let latest = verified.latest_head();
        assert_eq!(latest.tree_size, verified.size(), "latest head does not cover the log");
        assert_eq!(latest.root, verified.root(), "latest head root");
        for head in verified.heads() {
            verified
                .check_head(head)
                .expect("a head of a verified export checks against it");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    entry(data);
    head(data);
    export(data);

    let mut prefixed = Vec::with_capacity(EXPORT_MAGIC.len() + 1 + data.len());
    prefixed.extend_from_slice(EXPORT_MAGIC);
    prefixed.push(EXPORT_VERSION);
    prefixed.extend_from_slice(data);
    export(&prefixed);
});
