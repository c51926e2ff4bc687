//! Load generator for care-team fan-out (issue 12, BENCHMARKS.md "Group
//! fan-out"): one sender and `USERS` × `DEVICES` recipient devices on a
//! local relay. Each round sends one 1 KiB message to all of them, as a
//! group message (one sender-key ciphertext, uploaded once) and, for
//! comparison in the same run, as a pairwise send to the same users (one
//! ciphertext per device). It reports, per kind, the time from the call
//! to the last device's event (p50, p99 over the rounds) and the bytes the
//! sender put on the wire per message.
//!
//! `cargo run --release -p ward-examples --bin group-fanout [rounds]`
//! (default 40 rounds; bounded in count, and each wait in time).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use ward_audit::UserId;
use ward_client::{Event, Message, Messenger, MessengerOptions, StorageKey};
use ward_relay::config::RelayConfig;
use ward_relay::metrics::Metrics;
use ward_relay::storage::{Role, Storage};

type Error = Box<dyn std::error::Error>;

const USERS: usize = 10;
const DEVICES: usize = 5;
const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn options() -> MessengerOptions {
    MessengerOptions {
        auto_lock_after: None,
        // Receipts would add 50 sends per message to the relay's work and
        // to the sender's incoming traffic; the figure is the fan-out.
        send_delivery_receipts: false,
        ..MessengerOptions::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(Ok(40), |a| a.parse())
        .map_err(|_| "rounds: a number")?;
    let data_dir = std::env::temp_dir().join(format!("ward-fanout-{}", std::process::id()));
    let config = RelayConfig {
        data_dir: data_dir.clone(),
        bind: "127.0.0.1:0".parse()?,
        ..RelayConfig::default()
    };
    let ward_relay::server::Launched {
        relay,
        storage,
        fingerprint,
    } = ward_relay::server::launch(&config, Arc::new(Metrics::new()))?;
    let addr = relay.local_addr()?;
    let stores = data_dir.join("devices");
    std::fs::create_dir_all(&stores)?;
    let mut enrolled = 0u8;
    let mut enroll = async |user: &str| -> Result<Messenger, Error> {
        enrolled += 1;
        let (token, hash) = ward_relay::keys::new_enrollment_token();
        let id = UserId::new(user)?;
        storage.issue_enrollment_token(&hash, &id, None, now_ms(), now_ms() + 3_600_000)?;
        let path = stores.join(format!("{enrolled}.ward"));
        let key = StorageKey::new([enrolled; 32]);
        Ok(Messenger::enroll(&path, &key, addr, fingerprint, &token, options()).await?)
    };
    let users: Vec<String> = (0..USERS).map(|u| format!("member{u}")).collect();
    for user in users.iter().chain([&"sender".to_owned()]) {
        storage.create_user(
            &UserId::new(user)?,
            &Role::new("clinician")?,
            None,
            now_ms(),
        )?;
    }
    let mut sender = enroll("sender").await?;
    // Each receiving device reports (its index, the message text) as it
    // gets a message, from a task of its own.
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, String)>();
    let mut receivers = Vec::new();
    for (u, user) in users.iter().enumerate() {
        for d in 0..DEVICES {
            let mut device = enroll(user).await?;
            let tx = tx.clone();
            let index = u * DEVICES + d;
            receivers.push(tokio::spawn(async move {
                while let Ok(event) = device.next_event().await {
                    let report = match event {
                        Event::Message(m) => m.message.text,
                        Event::GroupChanged { .. } => "joined".to_owned(),
                        _ => continue,
                    };
                    if tx.send((index, report)).is_err() {
                        break;
                    }
                }
            }));
        }
    }
    let devices = USERS * DEVICES;
    println!("{devices} receiving devices of {USERS} users enrolled");
    let wait_all = async |rx: &mut mpsc::UnboundedReceiver<(usize, String)>, what: &str| {
        let mut seen = vec![false; devices];
        let mut left = devices;
        while left > 0 {
            let (index, text) = tokio::time::timeout(WAIT, rx.recv())
                .await
                .map_err(|_| format!("not every device got {what}"))?
                .ok_or("the receivers stopped")?;
            if text == what && !seen[index] {
                seen[index] = true;
                left -= 1;
            }
        }
        Ok::<_, Error>(())
    };
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let group = sender.create_group("fan-out", &refs).await?;
    wait_all(&mut rx, "joined").await?;
    // The first group message carries the chain pairwise: not measured.
    let warm = "warm-up".to_owned();
    sender
        .send_to_group(&group, Message::text(warm.clone()))
        .await?;
    wait_all(&mut rx, &warm).await?;
    sender.send(&refs, Message::text(warm.clone())).await?;
    wait_all(&mut rx, &warm).await?;

    let body = "x".repeat(1024);
    let mut group_times = Vec::with_capacity(rounds);
    let mut pairwise_times = Vec::with_capacity(rounds);
    let (mut group_bytes, mut pairwise_bytes) = (0u64, 0u64);
    for round in 0..rounds {
        for as_group in [true, false] {
            let text = format!("{round}-{as_group}-{body}");
            let before = sender.bytes_sent().ok_or("the sender is offline")?;
            let started = Instant::now();
            if as_group {
                sender
                    .send_to_group(&group, Message::text(text.clone()))
                    .await?;
            } else {
                sender.send(&refs, Message::text(text.clone())).await?;
            }
            let uploaded = sender.bytes_sent().ok_or("the sender is offline")? - before;
            wait_all(&mut rx, &text).await?;
            let took = started.elapsed();
            if as_group {
                group_times.push(took);
                group_bytes += uploaded;
            } else {
                pairwise_times.push(took);
                pairwise_bytes += uploaded;
            }
        }
    }
    for (name, times, bytes) in [
        ("group (sender key)", &mut group_times, group_bytes),
        ("pairwise (per device)", &mut pairwise_times, pairwise_bytes),
    ] {
        times.sort();
        println!(
            "{name:<22} send() to the last of {devices} devices: p50 {:>7.2} ms  p99 {:>7.2} ms;  \
             uploaded per 1 KiB message: {} bytes",
            percentile(times, 0.5).as_secs_f64() * 1e3,
            percentile(times, 0.99).as_secs_f64() * 1e3,
            bytes / rounds.max(1) as u64,
        );
    }
    for r in receivers {
        r.abort();
    }
    sender.close().await;
    relay.shutdown().await?;
    drop(storage);
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}
