//! What the SDK costs end to end, through a local relay (BENCHMARKS.md,
//! "Client SDK"): the time from `Messenger::send` on one device to the
//! message event on another, and the cost of fanning a message out to a
//! user with five devices.
//!
//! `cargo run --release -p ward-examples --bin sdk-latency [MESSAGES]`
//!
//! Everything runs in this process: the relay (its default configuration,
//! SQLite with durable commits in a temporary directory) and every device,
//! each receiving on a task of its own. Messages go one at a time: the next
//! send starts when every recipient has the previous message, so the figures
//! are latency without queueing. Delivery receipts are off, so that only
//! the measured messages travel.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use ward_audit::UserId;
use ward_client::{Event, Message, Messenger, MessengerOptions, StorageKey};
use ward_relay::config::RelayConfig;
use ward_relay::metrics::Metrics;
use ward_relay::storage::{Role, Storage};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Sends before measuring: sessions are opened and caches warm.
const WARM_UP: usize = 20;
/// The longest any one step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let messages: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 500,
    };
    let data_dir = std::env::temp_dir().join(format!("ward-sdk-latency-{}", std::process::id()));
    let result = run(&data_dir, messages).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

async fn run(data_dir: &Path, messages: usize) -> Result<(), Error> {
    let config = RelayConfig {
        data_dir: data_dir.to_owned(),
        bind: "127.0.0.1:0".parse()?,
        ..RelayConfig::default()
    };
    let launched = ward_relay::server::launch(&config, Arc::new(Metrics::new()))?;
    let (relay, storage, fingerprint) = (launched.relay, launched.storage, launched.fingerprint);
    let addr = relay.local_addr()?;
    for user in ["alice", "bob", "carol"] {
        storage.create_user(
            &UserId::new(user)?,
            &Role::new("clinician")?,
            None,
            now_ms(),
        )?;
    }
    let stores = data_dir.join("devices");
    std::fs::create_dir_all(&stores)?;
    let mut enrolled = 0u8;
    let mut enroll = async |user: &str| -> Result<Messenger, Error> {
        enrolled += 1;
        let (token, hash) = ward_relay::keys::new_enrollment_token();
        storage.issue_enrollment_token(
            &hash,
            &UserId::new(user)?,
            None,
            now_ms(),
            now_ms() + 3_600_000,
        )?;
        let options = MessengerOptions {
            auto_lock_after: None,
            send_delivery_receipts: false,
            ..MessengerOptions::default()
        };
        let path = stores.join(format!("{user}-{enrolled}.ward"));
        Ok(Messenger::enroll(
            &path,
            &StorageKey::new([enrolled; 32]),
            addr,
            fingerprint,
            &token,
            options,
        )
        .await?)
    };
    let mut alice = enroll("alice").await?;
    let bob = vec![enroll("bob").await?];
    let mut carol = Vec::new();
    for _ in 0..5 {
        carol.push(enroll("carol").await?);
    }

    let bob_rx = listen(bob);
    let one = measure(&mut alice, "bob", 1, bob_rx, messages).await?;
    let carol_rx = listen(carol);
    let five = measure(&mut alice, "carol", 5, carol_rx, messages).await?;

    println!(
        "machine: {} cores; {messages} messages each after {WARM_UP} warm-up sends",
        cores()
    );
    println!(
        "| recipient devices | send() p50 / p99 | send() to event, first device p50 / p99 | send() to event, last device p50 / p99 |"
    );
    println!("|---|---|---|---|");
    for (devices, m) in [(1, &one), (5, &five)] {
        println!(
            "| {devices} | {} / {} | {} / {} | {} / {} |",
            ms(&m.send, 50.0),
            ms(&m.send, 99.0),
            ms(&m.first, 50.0),
            ms(&m.first, 99.0),
            ms(&m.last, 50.0),
            ms(&m.last, 99.0),
        );
    }
    alice.close().await;
    relay.shutdown().await?;
    Ok(())
}

/// Received message ids and when, from every device of one user.
type Arrivals = mpsc::UnboundedReceiver<([u8; 16], Instant)>;

/// Receives on each device on a thread of its own (a `Messenger`'s futures
/// are not `Send`: an app drives each device from one thread, as the FFI
/// layer does).
fn listen(devices: Vec<Messenger>) -> Arrivals {
    let (tx, rx) = mpsc::unbounded_channel();
    for mut device in devices {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                while let Ok(event) = device.next_event().await {
                    if let Event::Message(m) = event
                        && tx.send((m.message_id, Instant::now())).is_err()
                    {
                        break;
                    }
                }
            });
        });
    }
    rx
}

struct Measured {
    send: Vec<Duration>,
    first: Vec<Duration>,
    last: Vec<Duration>,
}

async fn measure(
    sender: &mut Messenger,
    to: &str,
    devices: usize,
    mut arrivals: Arrivals,
    messages: usize,
) -> Result<Measured, Error> {
    let mut m = Measured {
        send: Vec::with_capacity(messages),
        first: Vec::with_capacity(messages),
        last: Vec::with_capacity(messages),
    };
    let text = "x".repeat(1000);
    for n in 0..WARM_UP + messages {
        let start = Instant::now();
        let id = tokio::time::timeout(
            STEP_TIMEOUT,
            sender.send(&[to], Message::text(text.as_str())),
        )
        .await??;
        let sent = start.elapsed();
        let mut seen: Vec<Instant> = Vec::with_capacity(devices);
        while seen.len() < devices {
            let (got, at) = tokio::time::timeout(STEP_TIMEOUT, arrivals.recv())
                .await?
                .ok_or("a receiving device stopped")?;
            if got != id {
                return Err("a message arrived out of turn".into());
            }
            seen.push(at);
        }
        if n >= WARM_UP {
            let times: Vec<Duration> = seen.iter().map(|at| *at - start).collect();
            m.send.push(sent);
            m.first
                .push(times.iter().copied().min().unwrap_or_default());
            m.last.push(times.iter().copied().max().unwrap_or_default());
        }
    }
    Ok(m)
}

fn ms(samples: &[Duration], percentile: f64) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return "-".to_owned();
    }
    let rank = ((percentile / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    format!(
        "{:.2} ms",
        sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e3
    )
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
