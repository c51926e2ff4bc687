//! The export and its verifier: an honest export verifies; every byte flip,
//! truncation, removed, inserted, reordered or modified entry and forged head
//! is detected, each with its own error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use ward_audit::{
    AuditEntry, AuditError, DecodeError, DeviceId, ErrorCode, EventKind, Export, ExportWriter,
    MerkleLog, MessageId, Outcome, SignedTreeHead, SigningKey, TreeHead, UserId, verify_export,
};

fn key() -> SigningKey {
    SigningKey::from_bytes(&[0x11; 32])
}

fn relay_key() -> [u8; 32] {
    key().verifying_key().to_bytes()
}

fn entry(i: u64) -> AuditEntry {
    let mut e = AuditEntry::new(i, 10_000 + 10 * i, EventKind::ALL[i as usize % 10]);
    e.actor_user = Some(UserId::new("alice@clinic.example").unwrap());
    e.actor_device = Some(DeviceId::new("phone-1").unwrap());
    if i % 2 == 1 {
        e.target_user = Some(UserId::new("bob@clinic.example").unwrap());
        e.message_id = Some(MessageId([i as u8; 16]));
        e.size = Some(100 * i);
    }
    if i == 3 {
        e.outcome = Outcome::Error(ErrorCode::new("stale_device_list").unwrap());
    }
    e
}

/// Six entries; heads at sizes 2, 4 and 6, as a relay would issue them.
fn honest() -> Export {
    let mut log = MerkleLog::in_memory();
    let mut entries = Vec::new();
    let mut heads = Vec::new();
    for i in 0..6 {
        let e = entry(i);
        log.append(&e).unwrap();
        entries.push(e);
        if i % 2 == 1 {
            heads.push(log.issue_head(10_000 + 10 * i + 5, &key()).unwrap());
        }
    }
    Export {
        relay_key: relay_key(),
        entries,
        heads,
    }
}

fn verify(export: &Export) -> Result<ward_audit::VerifiedLog, AuditError> {
    verify_export(&export.encode(), Some(relay_key()))
}

/// Re-signs every head over the export's (modified) entries, as a relay
/// rewriting its history would; the heads keep their sizes and times.
fn resign(export: &mut Export) {
    let leaves: Vec<_> = export.entries.iter().map(AuditEntry::leaf_hash).collect();
    for head in &mut export.heads {
        let size = head.head.tree_size as usize;
        let root = ward_audit::merkle::root_from_leaf_hashes(&leaves[..size.min(leaves.len())]);
        *head = TreeHead { root, ..head.head }.sign(&key());
    }
}

#[test]
fn an_honest_export_verifies() {
    let export = honest();
    let verified = verify(&export).unwrap();
    assert_eq!(verified.size(), 6);
    assert_eq!(verified.entries(), &export.entries[..]);
    assert_eq!(verified.heads(), &export.heads[..]);
    assert_eq!(verified.latest_head().tree_size, 6);
    assert_eq!(verified.root(), verified.latest_head().root);
    assert_eq!(verified.relay_key(), relay_key());
    // Without an expected key, the export's own key is used.
    assert!(verify_export(&export.encode(), None).is_ok());
    // The proofs it hands out verify against the heads.
    let proof = verified.inclusion_proof(3, 4).unwrap();
    proof
        .verify(&verified.leaf_hash(3).unwrap(), &export.heads[1].head.root)
        .unwrap();
    let proof = verified.consistency_proof(2, 6).unwrap();
    proof
        .verify(&export.heads[0].head.root, &export.heads[2].head.root)
        .unwrap();
}

#[test]
fn encode_decode_round_trip() {
    let export = honest();
    let bytes = export.encode();
    assert_eq!(Export::decode(&bytes), Ok(export.clone()));
    assert_eq!(Export::decode(&bytes).unwrap().encode(), bytes);
    assert_eq!(&bytes[..11], b"Ward audit\0");
    assert_eq!(bytes[11], 0x01);
}

#[test]
fn the_streaming_writer_writes_the_same_bytes() {
    let export = honest();
    let mut w = ExportWriter::new(Vec::new(), &export.relay_key, 6).unwrap();
    for e in &export.entries {
        w.entry(e).unwrap();
    }
    assert!(w.entry(&entry(6)).is_err(), "more than announced");
    assert_eq!(w.finish(&export.heads).unwrap(), export.encode());
    let mut short = ExportWriter::new(Vec::new(), &export.relay_key, 2).unwrap();
    short.entry(&export.entries[0]).unwrap();
    assert!(short.finish(&export.heads).is_err(), "fewer than announced");
}

#[test]
fn every_flipped_byte_is_detected() {
    let bytes = honest().encode();
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            assert!(
                verify_export(&b, None).is_err(),
                "byte {i} ^ {mask:#04x} went undetected"
            );
            assert!(verify_export(&b, Some(relay_key())).is_err());
        }
    }
}

#[test]
fn every_truncation_and_extension_is_detected() {
    let bytes = honest().encode();
    for len in 0..bytes.len() {
        assert!(verify_export(&bytes[..len], None).is_err(), "length {len}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(
        verify_export(&long, None).map(|_| ()),
        Err(AuditError::Decode(DecodeError::TrailingBytes))
    );
}

#[test]
fn a_removed_entry_is_detected() {
    // From the middle.
    let mut export = honest();
    export.entries.remove(2);
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::SequenceMismatch { index: 2, found: 3 })
    );
    // From the end: the last head covers more than is left.
    let mut export = honest();
    export.entries.pop();
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::HeadBeyondLog {
            head: 2,
            tree_size: 6,
            entries: 5
        })
    );
}

#[test]
fn removal_with_renumbering_breaks_the_roots() {
    // Entry 4 removed, entry 5 renumbered, a new entry 5 appended: sequence
    // numbers and timestamps are plausible, the last head's root is not.
    let mut export = honest();
    export.entries.remove(4);
    export.entries[4].sequence = 4;
    export
        .entries
        .push(AuditEntry::new(5, 10_055, EventKind::Send));
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::RootMismatch { head: 2 })
    );
    // Renumbering moves later entries under earlier heads: caught by their
    // timestamps first.
    let mut export = honest();
    export.entries.remove(1);
    for (i, e) in export.entries.iter_mut().enumerate() {
        e.sequence = i as u64;
    }
    export
        .entries
        .push(AuditEntry::new(5, 10_055, EventKind::Send));
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::HeadTimestamp { head: 0 })
    );
}

#[test]
fn inserted_and_reordered_entries_are_detected() {
    let mut export = honest();
    export.entries.insert(3, entry(3));
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::SequenceMismatch { index: 4, found: 3 })
    );
    let mut export = honest();
    export.entries.swap(1, 2);
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::SequenceMismatch { index: 1, found: 2 })
    );
    // Appended after the last head, with the right sequence number.
    let mut export = honest();
    export
        .entries
        .push(AuditEntry::new(6, 10_100, EventKind::Send));
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::UnsignedEntries {
            signed: 6,
            entries: 7
        })
    );
}

#[test]
fn a_modified_entry_is_detected_by_the_first_head_covering_it() {
    for (i, first_head) in [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2)] {
        let mut export = honest();
        export.entries[i].actor_user = Some(UserId::new("mallory@clinic.example").unwrap());
        assert_eq!(
            verify(&export).map(|_| ()),
            Err(AuditError::RootMismatch { head: first_head }),
            "entry {i}"
        );
    }
}

#[test]
fn timestamps_must_not_go_back() {
    let mut export = honest();
    export.entries[3].timestamp_ms = export.entries[2].timestamp_ms - 1;
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::TimestampRegressed { index: 3 })
    );
    // A head dated before its last entry.
    let mut export = honest();
    export.heads[1] = TreeHead {
        timestamp_ms: export.entries[3].timestamp_ms - 1,
        ..export.heads[1].head
    }
    .sign(&key());
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::HeadTimestamp { head: 1 })
    );
    // An entry dated before a head that does not contain it (backdated).
    let mut export = honest();
    export.entries[4].timestamp_ms = export.heads[1].head.timestamp_ms - 1;
    export.entries[3].timestamp_ms = export.entries[4].timestamp_ms;
    resign(&mut export);
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::HeadTimestamp { head: 1 })
    );
}

#[test]
fn forged_heads_are_detected() {
    // Signed by another key.
    let mut export = honest();
    let mallory = SigningKey::from_bytes(&[0x66; 32]);
    export.heads[1] = export.heads[1].head.sign(&mallory);
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::HeadSignature { head: 1 })
    );
    // The whole export re-keyed by an attacker: refused by the expected key.
    let mut export = honest();
    export.relay_key = mallory.verifying_key().to_bytes();
    for h in &mut export.heads {
        *h = h.head.sign(&mallory);
    }
    assert!(verify_export(&export.encode(), None).is_ok());
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::RelayKeyMismatch)
    );
    // Altered after signing.
    let mut export = honest();
    export.heads[0].head.root[0] ^= 1;
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::HeadSignature { head: 0 })
    );
    // Correctly signed, wrong root (the relay lying).
    let mut export = honest();
    export.heads[2] = TreeHead {
        root: [0; 32],
        ..export.heads[2].head
    }
    .sign(&key());
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::RootMismatch { head: 2 })
    );
}

#[test]
fn heads_must_be_in_order_and_present() {
    let mut export = honest();
    export.heads.swap(0, 1);
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::HeadsOutOfOrder { head: 1 })
    );
    let mut export = honest();
    let dup = export.heads[0];
    export.heads.insert(1, dup);
    assert_eq!(
        verify(&export).map(|_| ()),
        Err(AuditError::HeadsOutOfOrder { head: 1 })
    );
    let mut export = honest();
    export.heads.clear();
    assert_eq!(verify(&export).map(|_| ()), Err(AuditError::NoTreeHead));
    // Only the latest head is enough.
    let mut export = honest();
    export.heads.drain(..2);
    assert!(verify(&export).is_ok());
    // A re-signed head at the same size, later, is fine.
    let mut export = honest();
    let again = TreeHead {
        timestamp_ms: export.heads[2].head.timestamp_ms + 1,
        ..export.heads[2].head
    }
    .sign(&key());
    export.heads.push(again);
    assert!(verify(&export).is_ok());
}

#[test]
fn a_rewritten_history_is_caught_by_a_kept_head() {
    let original = honest();
    let kept: SignedTreeHead = original.heads[1];
    // The relay rewrites entry 1 and re-signs every head: the export alone
    // verifies ...
    let mut rewritten = original.clone();
    rewritten.entries[1].outcome = Outcome::Error(ErrorCode::new("denied").unwrap());
    resign(&mut rewritten);
    let verified = verify(&rewritten).unwrap();
    // ... but an auditor who kept an earlier head sees two histories.
    assert_eq!(
        verified.check_head(&kept),
        Err(AuditError::Equivocation { tree_size: 4 })
    );
    // Against the honest log the kept head checks out.
    assert_eq!(verify(&original).unwrap().check_head(&kept), Ok(()));
    // A head beyond the log, or badly signed, is refused as such.
    let small = verify(&Export {
        entries: original.entries[..4].to_vec(),
        heads: original.heads[..2].to_vec(),
        ..original.clone()
    })
    .unwrap();
    assert_eq!(
        small.check_head(&original.heads[2]),
        Err(AuditError::OutOfRange {
            requested: 6,
            size: 4
        })
    );
    let mut bad = kept;
    bad.signature[0] ^= 1;
    assert_eq!(small.check_head(&bad), Err(AuditError::BadSignature));
}

#[test]
fn framing_errors_are_specific() {
    let bytes = honest().encode();
    let mut b = bytes.clone();
    b[0] = b'X';
    assert_eq!(
        verify_export(&b, None).map(|_| ()),
        Err(AuditError::Decode(DecodeError::BadMagic))
    );
    let mut b = bytes.clone();
    b[11] = 2;
    assert_eq!(
        verify_export(&b, None).map(|_| ()),
        Err(AuditError::Decode(DecodeError::UnsupportedVersion(2)))
    );
    // An entry count far beyond the bytes: refused before allocating.
    let mut b = bytes.clone();
    b[44..52].copy_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(
        verify_export(&b, None).map(|_| ()),
        Err(AuditError::Decode(DecodeError::Truncated))
    );
    // An entry frame longer than any entry.
    let mut b = bytes.clone();
    b[52..54].copy_from_slice(&403u16.to_be_bytes());
    assert_eq!(
        verify_export(&b, None).map(|_| ()),
        Err(AuditError::Entry {
            index: 0,
            error: DecodeError::FieldLength {
                field: "entry",
                len: 403
            }
        })
    );
    // An entry that does not decode.
    let mut b = bytes.clone();
    b[54] = 0x02;
    assert_eq!(
        verify_export(&b, None).map(|_| ()),
        Err(AuditError::Entry {
            index: 0,
            error: DecodeError::UnsupportedVersion(2)
        })
    );
    // A small-order relay key.
    let mut export = honest();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    export.relay_key = identity;
    assert_eq!(
        verify_export(&export.encode(), None).map(|_| ()),
        Err(AuditError::InvalidRelayKey)
    );
}

/// A file shorter than the 11-byte magic is `Truncated`, whatever its
/// bytes: the magic is compared only once all of it is there (spec/09,
/// AUD-20).
#[test]
fn a_file_shorter_than_the_magic_is_truncated() {
    let magic = ward_audit::export::EXPORT_MAGIC;
    for len in 0..magic.len() {
        for bytes in [magic[..len].to_vec(), vec![b'X'; len]] {
            assert_eq!(
                verify_export(&bytes, Some(relay_key())).map(|_| ()),
                Err(AuditError::Decode(DecodeError::Truncated)),
                "{bytes:02x?}"
            );
        }
    }
    // The whole magic and nothing else: the version byte is missing.
    assert_eq!(
        verify_export(magic, None).map(|_| ()),
        Err(AuditError::Decode(DecodeError::Truncated))
    );
    // Eleven bytes that are not the magic.
    assert_eq!(
        verify_export(b"Ward audit!", None).map(|_| ()),
        Err(AuditError::Decode(DecodeError::BadMagic))
    );
}

/// In an export, the bytes after `head_count` are checked for length
/// (`113 * head_count`) first, then each head's version byte in order,
/// `UnsupportedVersion` naming the byte; all of it before the relay key
/// and the entries are looked at (spec/09, AUD-21).
#[test]
fn a_bad_head_version_byte_is_refused_after_the_heads_length() {
    let bytes = honest().encode();
    let heads = honest().heads.len();
    assert_eq!(heads, 3);
    let head_at = |j: usize| bytes.len() - (heads - j) * SignedTreeHead::ENCODED_LEN;
    let outcome = |b: &[u8]| verify_export(b, Some(relay_key())).map(|_| ());
    let unsupported = |v| Err(AuditError::Decode(DecodeError::UnsupportedVersion(v)));

    // Each head's version byte.
    for j in 0..heads {
        let mut b = bytes.clone();
        assert_eq!(b[head_at(j)], 0x01);
        b[head_at(j)] = 0x02;
        assert_eq!(outcome(&b), unsupported(0x02), "head {j}");
    }
    // Two bad heads: the first is reported.
    let mut b = bytes.clone();
    b[head_at(1)] = 0x03;
    b[head_at(2)] = 0x02;
    assert_eq!(outcome(&b), unsupported(0x03));
    // A bad version with a byte missing or added: the length decides.
    let mut b = bytes.clone();
    b[head_at(0)] = 0x02;
    let mut short = b.clone();
    short.pop();
    assert_eq!(
        outcome(&short),
        Err(AuditError::Decode(DecodeError::Truncated))
    );
    let mut long = b.clone();
    long.push(0);
    assert_eq!(
        outcome(&long),
        Err(AuditError::Decode(DecodeError::TrailingBytes))
    );
    // Framing (step 1) before the relay key (step 2) and the entries
    // (step 3).
    assert_eq!(
        verify_export(&b, Some([7; 32])).map(|_| ()),
        unsupported(0x02)
    );
    let mut broken_entry = b.clone();
    broken_entry[11 + 1 + 32 + 8 + 2] = 0x02;
    assert_eq!(outcome(&broken_entry), unsupported(0x02));
}

/// A signed head on its own (`SignedTreeHead::decode`, as
/// `check-consistency` reads one) is read front to back: its version byte
/// before its length (spec/09, AUD-21).
#[test]
fn a_standalone_signed_head_checks_its_version_before_its_length() {
    let encoded = honest().heads[0].encode();
    assert_eq!(SignedTreeHead::decode(&[]), Err(DecodeError::Truncated));
    let mut bad = encoded.to_vec();
    bad[0] = 0x02;
    for len in [1, 2, 112, 113] {
        assert_eq!(
            SignedTreeHead::decode(&bad[..len]),
            Err(DecodeError::UnsupportedVersion(0x02)),
            "{len} bytes"
        );
    }
    bad.push(0);
    assert_eq!(
        SignedTreeHead::decode(&bad),
        Err(DecodeError::UnsupportedVersion(0x02))
    );
    assert_eq!(
        SignedTreeHead::decode(&encoded[..112]),
        Err(DecodeError::Truncated)
    );
    let mut long = encoded.to_vec();
    long.push(0);
    assert_eq!(
        SignedTreeHead::decode(&long),
        Err(DecodeError::TrailingBytes)
    );
}

#[test]
fn an_empty_log_with_its_head_verifies() {
    let mut log = MerkleLog::in_memory();
    let head = log.issue_head(1, &key()).unwrap();
    assert_eq!(head.head.root, ward_audit::EMPTY_ROOT);
    let export = Export {
        relay_key: relay_key(),
        entries: vec![],
        heads: vec![head],
    };
    let verified = verify(&export).unwrap();
    assert_eq!(verified.size(), 0);
}
