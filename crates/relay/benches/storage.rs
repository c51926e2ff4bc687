//! The relay storage's write throughput: enqueueing 1 KiB to one recipient
//! from one thread and from 64 at once (group commit lets concurrent
//! senders share a commit, hence an fsync), and a message's whole life
//! (enqueue, fetch, ack). `synchronous = FULL`: every commit is on disk.
//! The data directories are temporary directories under /tmp. Run with:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-a cargo bench -p ward-relay --bench storage
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use core::time::Duration;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use criterion::{Criterion, Throughput};
use tempfile::TempDir;
use ward_audit::{MessageId, UserId};
use ward_core::IdentityKeyPair;
use ward_relay::storage::{
    Delivery, DeviceKey, DeviceSet, Role, SqliteStorage, Storage, StorageConfig,
};

const T0: u64 = 1_790_000_000_000;
const DAY: u64 = 86_400_000;
/// Concurrent senders in the multi-threaded benchmarks.
const THREADS: usize = 64;
const PAYLOAD: [u8; 1024] = [0xab; 1024];

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .configure_from_args()
}

/// A fresh message id each call.
fn next_id() -> MessageId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    MessageId(id)
}

/// A storage with `pairs` senders `s<i>` and recipients `r<i>`, one device
/// each, in a temporary directory.
struct Fixture {
    storage: Arc<SqliteStorage>,
    senders: Vec<DeviceKey>,
    recipients: Vec<(UserId, DeviceKey)>,
    _dir: TempDir,
}

fn fixture(pairs: usize) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("ward-relay-bench")
        .tempdir_in("/tmp")
        .unwrap();
    let config = StorageConfig {
        max_queue_depth: u32::MAX,
        ..StorageConfig::default()
    };
    let storage = SqliteStorage::open(dir.path(), config).unwrap();
    let mut token = 0u32;
    let mut enroll = |name: String| {
        let user = UserId::new(&name).unwrap();
        storage
            .create_user(&user, &Role::new("nurse").unwrap(), None, T0)
            .unwrap();
        token += 1;
        let mut hash = [0u8; 32];
        hash[..4].copy_from_slice(&token.to_be_bytes());
        storage
            .issue_enrollment_token(&hash, &user, None, T0, T0 + DAY)
            .unwrap();
        let identity = IdentityKeyPair::generate(&mut ward_core::os_rng())
            .public()
            .clone();
        let key = storage
            .redeem_enrollment_token(&hash, &identity, T0)
            .unwrap()
            .key;
        (user, key)
    };
    let senders = (0..pairs).map(|i| enroll(format!("s{i}")).1).collect();
    let recipients = (0..pairs).map(|i| enroll(format!("r{i}"))).collect();
    Fixture {
        storage: Arc::new(storage),
        senders,
        recipients,
        _dir: dir,
    }
}

fn enqueue(s: &SqliteStorage, from: &DeviceKey, to: &(UserId, DeviceKey)) -> MessageId {
    let id = next_id();
    let receipt = s
        .enqueue(
            from,
            id,
            T0 + 1,
            T0 + DAY,
            core::slice::from_ref(&to.0),
            &[Delivery {
                recipient: to.1,
                ciphertext: &PAYLOAD,
            }],
            DeviceSet::Exact,
        )
        .unwrap();
    assert!(!receipt.duplicate);
    id
}

/// Enqueue, fetch and acknowledge one message.
fn round_trip(s: &SqliteStorage, from: &DeviceKey, to: &(UserId, DeviceKey)) {
    let id = enqueue(s, from, to);
    let got = s.fetch(&to.1, 0, 1).unwrap();
    assert_eq!(got[0].message_id, id);
    s.ack(&to.1, id, T0 + 2).unwrap();
}

/// Runs `work(thread)` `iters` times on each of `threads` threads at once
/// and returns the wall time from the common start to the last finish.
fn concurrently(threads: usize, iters: u64, work: impl Fn(usize) + Sync) -> Duration {
    let start = Barrier::new(threads + 1);
    let begun = std::thread::scope(|scope| {
        for thread in 0..threads {
            let (start, work) = (&start, &work);
            scope.spawn(move || {
                start.wait();
                for _ in 0..iters {
                    work(thread);
                }
            });
        }
        start.wait();
        Instant::now()
    });
    begun.elapsed()
}

fn enqueue_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("enqueue 1 KiB to one recipient");
    {
        let f = fixture(1);
        group.throughput(Throughput::Elements(1));
        group.bench_function("1 thread", |b| {
            b.iter_custom(|iters| {
                let begun = Instant::now();
                for _ in 0..iters {
                    enqueue(&f.storage, &f.senders[0], &f.recipients[0]);
                }
                begun.elapsed()
            });
        });
    }
    {
        // 64 senders, each its own user, all to the same recipient; one
        // iteration is 64 concurrent enqueues, one per thread.
        let f = fixture(THREADS);
        group.throughput(Throughput::Elements(THREADS as u64));
        group.bench_function(format!("{THREADS} threads"), |b| {
            b.iter_custom(|iters| {
                concurrently(THREADS, iters, |t| {
                    enqueue(&f.storage, &f.senders[t], &f.recipients[0]);
                })
            });
        });
    }
    group.finish();
}

fn round_trip_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("enqueue + fetch + ack 1 KiB");
    {
        let f = fixture(1);
        group.throughput(Throughput::Elements(1));
        group.bench_function("1 thread", |b| {
            b.iter_custom(|iters| {
                let begun = Instant::now();
                for _ in 0..iters {
                    round_trip(&f.storage, &f.senders[0], &f.recipients[0]);
                }
                begun.elapsed()
            });
        });
    }
    {
        // 64 sender-recipient pairs, one per thread.
        let f = fixture(THREADS);
        group.throughput(Throughput::Elements(THREADS as u64));
        group.bench_function(format!("{THREADS} threads"), |b| {
            b.iter_custom(|iters| {
                concurrently(THREADS, iters, |t| {
                    round_trip(&f.storage, &f.senders[t], &f.recipients[t]);
                })
            });
        });
    }
    group.finish();
}

fn main() {
    let mut c = config();
    enqueue_benches(&mut c);
    round_trip_benches(&mut c);
    c.final_summary();
}
