//! The audit log's costs: appending an entry, and proofs and roots in a log of
//! 1,000,000 entries in memory. Run with:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-audit cargo bench -p ward-audit --bench audit
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use core::hint::black_box;
use core::time::Duration;

use criterion::Criterion;
use ward_audit::{
    AuditEntry, DeviceId, EventKind, Export, MerkleLog, MessageId, SigningKey, UserId,
    verify_export, verify_inclusion,
};

const BIG: u64 = 1_000_000;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

/// A typical `Send` entry (about 90 bytes encoded).
fn entry(sequence: u64) -> AuditEntry {
    AuditEntry {
        actor_user: Some(UserId::new("alice@clinic.example").unwrap()),
        actor_device: Some(DeviceId::new("phone-1").unwrap()),
        target_user: Some(UserId::new("bob@clinic.example").unwrap()),
        target_device: Some(DeviceId::new("tablet-2").unwrap()),
        message_id: Some(MessageId(
            sequence.to_be_bytes().repeat(2).try_into().unwrap(),
        )),
        size: Some(1234),
        ..AuditEntry::new(sequence, 1_790_000_000_000 + sequence, EventKind::Send)
    }
}

fn big_log() -> MerkleLog {
    let mut log = MerkleLog::in_memory();
    let template = entry(0);
    for i in 0..BIG {
        let mut e = template.clone();
        e.sequence = i;
        e.timestamp_ms += i;
        log.append(&e).unwrap();
    }
    log
}

/// A deterministic spread of indices over the whole log.
fn indices() -> impl FnMut() -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % BIG
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    let mut log = MerkleLog::in_memory();
    let mut e = entry(0);
    group.bench_function("entry (encode, hash, store, frontier)", |b| {
        b.iter(|| {
            e.sequence = log.size();
            e.timestamp_ms = 1_790_000_000_000 + e.sequence;
            black_box(log.append(&e).unwrap());
        });
    });
    group.finish();
}

fn proofs(c: &mut Criterion) {
    let started = std::time::Instant::now();
    let log = big_log();
    eprintln!("built a {BIG}-entry log in {:?}", started.elapsed());
    let root = log.root();
    let mut group = c.benchmark_group("log of 1,000,000");

    let mut next = indices();
    group.bench_function("inclusion_proof at full size", |b| {
        b.iter(|| black_box(log.inclusion_proof(next(), BIG).unwrap()));
    });
    let mut next = indices();
    group.bench_function("inclusion_proof at an earlier size", |b| {
        b.iter(|| {
            let size = next().max(1);
            black_box(log.inclusion_proof(size / 2, size).unwrap())
        });
    });
    let mut next = indices();
    group.bench_function("consistency_proof to full size", |b| {
        b.iter(|| black_box(log.consistency_proof(next().max(1), BIG).unwrap()));
    });
    let mut next = indices();
    group.bench_function("root_at an earlier size", |b| {
        b.iter(|| black_box(log.root_at(next()).unwrap()));
    });
    group.bench_function("root", |b| b.iter(|| black_box(log.root())));

    let proof = log.inclusion_proof(123_456, BIG).unwrap();
    let leaf = log.leaf_hash(123_456).unwrap();
    group.bench_function("verify_inclusion (20 hashes)", |b| {
        b.iter(|| verify_inclusion(&leaf, 123_456, BIG, black_box(&proof.path), &root).unwrap());
    });
    group.finish();
}

fn export(c: &mut Criterion) {
    const N: u64 = 10_000;
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut log = MerkleLog::in_memory();
    let mut entries = Vec::new();
    let mut heads = Vec::new();
    for i in 0..N {
        let e = entry(i);
        log.append(&e).unwrap();
        entries.push(e);
        if (i + 1) % 1000 == 0 {
            heads.push(log.issue_head(1_790_000_000_000 + i, &key).unwrap());
        }
    }
    let bytes = Export {
        relay_key: key.verifying_key().to_bytes(),
        entries,
        heads,
    }
    .encode();
    let mut group = c.benchmark_group("export");
    group.sample_size(10);
    group.bench_function("verify_export, 10,000 entries and 10 heads", |b| {
        b.iter(|| black_box(verify_export(&bytes, None).unwrap()));
    });
    group.finish();
}

fn main() {
    let mut c = config();
    append(&mut c);
    proofs(&mut c);
    export(&mut c);
    c.final_summary();
}
