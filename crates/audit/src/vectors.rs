//! Known-answer data for spec/vectors/audit.json.

// A generator that hits an impossible state (a literal outside its alphabet,
// a refused append) must stop loudly rather than write a vector.
#![allow(clippy::expect_used)]

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

use crate::entry::{
    AuditEntry, Detail, DeviceId, ErrorCode, EventKind, MessageId, Outcome, UserId,
};
use crate::error::DecodeError;
use crate::export::{Export, verify_export};
use crate::head::SignedTreeHead;
use crate::log::MerkleLog;
use crate::merkle::{Hash, leaf_hash};

/// The seed of the relay key in the vectors: the bytes `0x00, 0x01, ..., 0x1f`.
pub const VECTOR_KEY_SEED: [u8; 32] = {
    let mut seed = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        seed[i] = i as u8;
        i += 1;
    }
    seed
};

/// The first timestamp in the vectors (2026-09-21T21:46:40Z).
const T0: u64 = 1_790_027_200_000;

fn text<T>(make: fn(&str) -> Result<T, DecodeError>, s: &'static str) -> Option<T> {
    Some(make(s).expect("vector literals are in their alphabets"))
}

/// The Ed25519 identity seed of Alice's phone in the vector log: 32 bytes
/// `0xa1`. Its device id is the hex of the public key ([`vector_device_id`]).
pub const ALICE_PHONE_SEED: [u8; 32] = [0xa1; 32];

/// The Ed25519 identity seed of Bob's tablet in the vector log: 32 bytes
/// `0xb2`.
pub const BOB_TABLET_SEED: [u8; 32] = [0xb2; 32];

/// The id of the one-time prekey Alice's phone is handed from Bob's tablet
/// (entry 3, detail `one_time=42`).
pub const VECTOR_ONE_TIME_PREKEY_ID: u32 = 42;

/// The message id of the vector log's one message.
pub const VECTOR_MESSAGE_ID: MessageId = MessageId([
    0x9b, 0x1f, 0x3c, 0x55, 0x02, 0x6e, 0x4a, 0x81, 0xb7, 0x10, 0xd2, 0x4e, 0x6f, 0x00, 0x3a, 0xc9,
]);

/// The length of that message's ciphertext, the `size` of its entries.
pub const VECTOR_CIPHERTEXT_LEN: u64 = 1234;

/// How the relay names a device in an entry (spec/08, "Names"): its
/// Ed25519 public key as 64 lowercase hex digits, here of the key with
/// this seed.
pub fn vector_device_id(seed: &[u8; 32]) -> DeviceId {
    let key = SigningKey::from_bytes(seed).verifying_key();
    DeviceId::new(&hex::encode(key.as_bytes())).expect("64 hex digits are a device id")
}

/// The eight entries of the vector log, in order.
///
/// Each is an entry the relay writes (spec/08, "Audit"), field for field
/// but for `sequence` and `timestamp_ms`; `crates/relay/tests/audit_vectors.rs`
/// has the relay write them. The log is a sample, not a whole history:
/// Bob's user and device were created before it.
///
/// 0. The administrator `admin@clinic.example` issues an enrollment token
///    for `alice@clinic.example` (role `nurse`).
/// 1. Alice's phone enrolls with it.
/// 2. It authenticates, on a later connection.
/// 3. It claims the bundle of Bob's tablet, with one-time prekey 42.
/// 4. It sends Bob's tablet a message of 1234 bytes of ciphertext.
/// 5. An attempt to authenticate as Bob's tablet fails its signature.
/// 6. The relay pushes the message to Bob's tablet.
/// 7. Bob's tablet acknowledges it.
pub fn vector_entries() -> Vec<AuditEntry> {
    let alice = || text(UserId::new, "alice@clinic.example");
    let bob = || text(UserId::new, "bob@clinic.example");
    let phone = || Some(vector_device_id(&ALICE_PHONE_SEED));
    let tablet = || Some(vector_device_id(&BOB_TABLET_SEED));
    let msg = Some(VECTOR_MESSAGE_ID);
    let size = Some(VECTOR_CIPHERTEXT_LEN);
    let base = |sequence: u64, dt: u64, kind| AuditEntry::new(sequence, T0 + dt, kind);
    let one_time = format!("one_time={VECTOR_ONE_TIME_PREKEY_ID}");
    vec![
        AuditEntry {
            actor_user: text(UserId::new, "admin@clinic.example"),
            target_user: alice(),
            detail: text(Detail::new, "enrollment_token role=nurse"),
            ..base(0, 0, EventKind::AdminAction)
        },
        AuditEntry {
            actor_user: alice(),
            actor_device: phone(),
            ..base(1, 60_000, EventKind::Enrollment)
        },
        AuditEntry {
            actor_user: alice(),
            actor_device: phone(),
            ..base(2, 60_250, EventKind::AuthSuccess)
        },
        AuditEntry {
            actor_user: alice(),
            actor_device: phone(),
            target_user: bob(),
            target_device: tablet(),
            detail: Some(Detail::new(&one_time).expect("one_time=<id> is a detail")),
            ..base(3, 61_000, EventKind::PreKeyFetch)
        },
        AuditEntry {
            actor_user: alice(),
            actor_device: phone(),
            target_user: bob(),
            target_device: tablet(),
            message_id: msg,
            size,
            ..base(4, 61_500, EventKind::Send)
        },
        AuditEntry {
            actor_user: bob(),
            actor_device: tablet(),
            outcome: Outcome::Error(
                ErrorCode::new("auth_failed").expect("auth_failed is an error code"),
            ),
            detail: text(Detail::new, "bad_signature"),
            ..base(5, 62_000, EventKind::AuthFailure)
        },
        AuditEntry {
            actor_user: alice(),
            actor_device: phone(),
            target_user: bob(),
            target_device: tablet(),
            message_id: msg,
            size,
            ..base(6, 90_000, EventKind::Delivery)
        },
        AuditEntry {
            actor_user: bob(),
            actor_device: tablet(),
            target_user: alice(),
            target_device: phone(),
            message_id: msg,
            size,
            ..base(7, 95_000, EventKind::Acknowledgment)
        },
    ]
}

fn h(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(bytes)
}

fn hashes(list: &[Hash]) -> Value {
    Value::from(list.iter().map(h).collect::<Vec<_>>())
}

fn entry_json(entry: &AuditEntry) -> Value {
    let bytes = entry.encode();
    let (outcome, error_code) = match &entry.outcome {
        Outcome::Ok => ("ok", None),
        Outcome::Error(code) => ("error", Some(code.as_str())),
    };
    json!({
        "sequence": entry.sequence,
        "timestamp_ms": entry.timestamp_ms,
        "kind": entry.kind.name(),
        "kind_code": entry.kind.code(),
        "actor_user": entry.actor_user.as_ref().map(UserId::as_str),
        "actor_device": entry.actor_device.as_ref().map(DeviceId::as_str),
        "target_user": entry.target_user.as_ref().map(UserId::as_str),
        "target_device": entry.target_device.as_ref().map(DeviceId::as_str),
        "message_id": entry.message_id.map(|m| h(m.0)),
        "size": entry.size,
        "outcome": outcome,
        "error_code": error_code,
        "detail": entry.detail.as_ref().map(Detail::as_str),
        "encoded": h(&bytes),
        "leaf_hash": h(leaf_hash(&bytes)),
    })
}

/// The name of a decoding error in the vectors and the spec.
pub fn decode_error_name(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::Truncated => "Truncated",
        DecodeError::TrailingBytes => "TrailingBytes",
        DecodeError::UnsupportedVersion(_) => "UnsupportedVersion",
        DecodeError::BadMagic => "BadMagic",
        DecodeError::UnknownEventKind(_) => "UnknownEventKind",
        DecodeError::ReservedBits(_) => "ReservedBits",
        DecodeError::UnknownOutcome(_) => "UnknownOutcome",
        DecodeError::FieldLength { .. } => "FieldLength",
        DecodeError::FieldCharacter { .. } => "FieldCharacter",
    }
}

/// Encodings every decoder must refuse, derived from `valid` (entry 0 of the
/// vectors, which has an actor, a target and a detail).
fn invalid_entries(valid: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = valid.to_vec();
        f(&mut b);
        b
    };
    let minimal = AuditEntry::new(0, T0, EventKind::Send).encode();
    let minimal_with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = minimal.clone();
        f(&mut b);
        b
    };
    vec![
        ("version 0x02", with(&|b| b[0] = 0x02)),
        ("one trailing zero byte", with(&|b| b.push(0))),
        (
            "last byte missing",
            with(&|b| {
                b.pop();
            }),
        ),
        ("event kind 0", with(&|b| b[17] = 0)),
        ("event kind 11", with(&|b| b[17] = 11)),
        ("reserved presence bit 7 set", with(&|b| b[18] |= 0x80)),
        ("outcome byte 0x02", with(&|b| b[19] = 0x02)),
        (
            "actor user present with length 0",
            minimal_with(&|b| {
                b[18] = 0x01;
                b.push(0);
            }),
        ),
        (
            "detail of 65 bytes",
            minimal_with(&|b| {
                b[18] = 0x40;
                b.push(65);
                b.extend_from_slice(&[b'a'; 65]);
            }),
        ),
        (
            "user id with a space",
            minimal_with(&|b| {
                b[18] = 0x01;
                b.extend_from_slice(b"\x03a b");
            }),
        ),
        (
            "error code after an ok outcome",
            minimal_with(&|b| b.extend_from_slice(b"\x01x")),
        ),
    ]
}

/// Deterministic test vectors for spec/vectors/audit.json: the eight entries
/// with their encodings and leaf hashes, the roots of the trees of sizes
/// 0..=8, inclusion and consistency proofs, a signed tree head from a fixed
/// key, a whole export, and encodings a decoder must refuse.
pub fn vectors() -> Value {
    let entries = vector_entries();
    let key = SigningKey::from_bytes(&VECTOR_KEY_SEED);
    let mut log = MerkleLog::in_memory();
    let mut heads: Vec<SignedTreeHead> = Vec::new();
    for entry in &entries {
        log.append(entry).expect("vector entries are in order");
        if log.size() == 3 {
            heads.push(
                log.issue_head(T0 + 60_500, &key)
                    .expect("head after entry 2"),
            );
        }
    }
    heads.push(log.issue_head(T0 + 120_000, &key).expect("last head"));

    let roots: Vec<Value> = (0..=log.size())
        .map(|n| {
            json!({
                "tree_size": n,
                "root": h(log.root_at(n).expect("in range")),
            })
        })
        .collect();
    let inclusion: Vec<Value> = [(5u64, 8u64), (2, 7), (0, 1), (7, 8)]
        .into_iter()
        .map(|(index, size)| {
            json!({
                "leaf_index": index,
                "tree_size": size,
                "leaf_hash": h(log.leaf_hash(index).expect("in range")),
                "root": h(log.root_at(size).expect("in range")),
                "path": hashes(&log.inclusion_proof(index, size).expect("in range").path),
            })
        })
        .collect();
    let consistency: Vec<Value> = [(3u64, 8u64), (4, 7), (6, 8), (1, 2), (0, 5), (8, 8)]
        .into_iter()
        .map(|(first, second)| {
            json!({
                "first_size": first,
                "second_size": second,
                "first_root": h(log.root_at(first).expect("in range")),
                "second_root": h(log.root_at(second).expect("in range")),
                "path": hashes(&log.consistency_proof(first, second).expect("in range").path),
            })
        })
        .collect();
    let head_json = |signed: &SignedTreeHead| {
        json!({
            "tree_size": signed.head.tree_size,
            "timestamp_ms": signed.head.timestamp_ms,
            "root": h(signed.head.root),
            "signing_input": h(signed.head.signing_input()),
            "signature": h(signed.signature),
            "encoded": h(signed.encode()),
        })
    };
    let relay_key = key.verifying_key().to_bytes();
    let export = Export {
        relay_key,
        entries: entries.clone(),
        heads: heads.clone(),
    }
    .encode();
    verify_export(&export, Some(relay_key)).expect("the vector export verifies");
    let valid = entries
        .first()
        .map(AuditEntry::encode)
        .expect("eight entries");
    let invalid: Vec<Value> = invalid_entries(&valid)
        .into_iter()
        .map(|(what, bytes)| {
            let error = AuditEntry::decode(&bytes).expect_err("an invalid vector was accepted");
            let error = decode_error_name(&error);
            json!({"what": what, "encoded": h(&bytes), "error": error})
        })
        .collect();

    json!({
        "description": "Ward audit log (spec/09-audit-log.md): entry encoding, RFC 9162 tree hashes and proofs, signed tree heads, export. All byte strings are lowercase hex. The entries are ones the relay writes (spec/08, Audit); devices are named by their Ed25519 public keys in hex, from the seeds a1a1..a1 (alice@clinic.example's phone) and b2b2..b2 (bob@clinic.example's tablet).",
        "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
        "roots": roots,
        "inclusion_proofs": inclusion,
        "consistency_proofs": consistency,
        "relay_key": {
            "seed": h(VECTOR_KEY_SEED),
            "public_key": h(relay_key),
        },
        "tree_heads": heads.iter().map(head_json).collect::<Vec<_>>(),
        "export": {
            "bytes": h(&export),
            "expect": "valid",
        },
        "invalid_entries": invalid,
    })
}
