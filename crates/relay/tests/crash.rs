//! A relay killed with SIGKILL while a client sends (in envelopes and as
//! group sends): after a restart every acknowledged message is delivered,
//! exactly once after de-duplication by id, no shared payload is left
//! behind, and the audit log verifies. And a relay killed and started again on
//! its address resets its previous run's connections at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{ANY_PORT, BIN, RelayProcess, admin, cli_token};
use ward_client::RelayConnection;
use ward_client::wire::{self, request::Body as Req, response::Body as Resp};

async fn connect(addr: SocketAddr, fingerprint: [u8; 32]) -> RelayConnection {
    for _ in 0..50 {
        if let Ok(c) = RelayConnection::connect(addr, "localhost", fingerprint).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("relay did not come up")
}

fn message_id(n: u32) -> Vec<u8> {
    let mut id = vec![0xab; 16];
    id[12..].copy_from_slice(&n.to_be_bytes());
    id
}

/// Sends message `n` to `to`: every third one as a group send (its
/// ciphertext stored once, as a shared payload), the others in an envelope.
async fn send(c: &RelayConnection, to: &[u8; 32], n: u32) -> bool {
    let ciphertext = n.to_be_bytes().repeat(64);
    let (envelopes, shared_ciphertext, shared_devices) = if n.is_multiple_of(3) {
        (vec![], ciphertext, vec![to.to_vec()])
    } else {
        let envelope = wire::Envelope {
            device_key: to.to_vec(),
            ciphertext,
        };
        (vec![envelope], vec![], vec![])
    };
    let result = c
        .request(Req::Send(wire::Send {
            message_id: message_id(n),
            user_ids: vec!["b".to_owned()],
            envelopes,
            ttl_ms: 0,
            shared_ciphertext,
            shared_devices,
            ..Default::default()
        }))
        .await;
    matches!(result, Ok(Resp::Sent(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    admin(data, &["user", "add", "a", "--role", "nurse"]);
    admin(data, &["user", "add", "b", "--role", "nurse"]);
    let (token_a, token_b) = (cli_token(data, "a"), cli_token(data, "b"));

    let mut rng = ward_core::os_rng();
    let a = ward_core::IdentityKeyPair::generate(&mut rng);
    let b = ward_core::IdentityKeyPair::generate(&mut rng);
    let b_key = *b.public().signing_key();

    let relay = RelayProcess::spawn(data, ANY_PORT);
    let (addr, fingerprint) = (relay.addr, relay.fingerprint);
    let ca = connect(addr, fingerprint).await;
    ca.enroll(&token_a, &a).await.unwrap();
    let cb = connect(addr, fingerprint).await;
    cb.enroll(&token_b, &b).await.unwrap();
    cb.close().await;

    // a sends one message after another; the relay is killed under it.
    const TOTAL: u32 = 400;
    let sender = tokio::spawn(async move {
        let mut acknowledged = BTreeSet::new();
        let mut next = 0;
        while next < TOTAL {
            let batch: Vec<u32> = (next..(next + 8).min(TOTAL)).collect();
            next += batch.len() as u32;
            let sends = batch.iter().map(|&n| {
                let ca = &ca;
                async move { (n, send(ca, &b_key, n).await) }
            });
            let mut any = false;
            for f in sends.collect::<Vec<_>>() {
                let (n, ok) = f.await;
                if ok {
                    acknowledged.insert(n);
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        (acknowledged, next)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.kill();
    // Restart on the same address: the sends in flight on the old
    // connection fail at once with a stateless reset (spec/08), not at the
    // idle timeout.
    let relay = RelayProcess::spawn(data, addr);
    let (acknowledged, attempted) = sender.await.unwrap();
    assert!(
        !acknowledged.is_empty(),
        "some sends landed before the kill"
    );

    // a retries everything it was not told was stored (same ids).
    let ca = connect(addr, fingerprint).await;
    ca.authenticate(&a).await.unwrap();
    for n in 0..attempted.max(1) {
        if !acknowledged.contains(&n) {
            assert!(send(&ca, &b_key, n).await, "retry of {n}");
        }
    }

    let cb = connect(addr, fingerprint).await;
    cb.authenticate(&b).await.unwrap();
    let mut deliveries = cb.deliveries().await.unwrap();
    let mut seen = HashSet::new();
    let mut received = 0;
    while seen.len() < attempted as usize {
        let push = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
            .await
            .expect("every message delivered")
            .unwrap()
            .unwrap();
        let Some(wire::push::Body::Delivery(d)) = push.body else {
            continue;
        };
        received += 1;
        let n = u32::from_be_bytes(d.ciphertext[..4].try_into().unwrap());
        assert_eq!(d.message_id, message_id(n));
        assert!(seen.insert(n), "message {n} stored twice");
        let acked = cb
            .request(Req::Ack(wire::Ack {
                message_ids: vec![d.message_id],
            }))
            .await
            .unwrap();
        assert!(matches!(acked, Resp::Acked(a) if a.deleted == 1));
    }
    assert_eq!(received, attempted as usize);
    for n in &acknowledged {
        assert!(seen.contains(n), "acknowledged message {n} lost");
    }
    ca.close().await;
    cb.close().await;
    relay.kill();

    // Every shared payload went with its copy: none left behind by the
    // crash or the acknowledgments.
    let db = rusqlite::Connection::open(data.join(ward_relay::storage::DATABASE_FILE)).unwrap();
    let payloads: u64 = db
        .query_row("SELECT COUNT(*) FROM payloads", [], |row| row.get(0))
        .unwrap();
    assert_eq!(payloads, 0);
    drop(db);

    // The audit log, written through the crash, verifies.
    let export = data.join("audit.export");
    let out = Command::new(BIN)
        .args(["audit", "export", "--data-dir"])
        .arg(data)
        .arg("--out")
        .arg(&export)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(data)
        .arg(&export)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// spec/08, "Stateless resets": a relay killed (it closes nothing) and
/// started again on the same address and data directory answers a
/// connection of its previous run with a stateless reset that the client
/// recognises, so the client's next request fails with
/// `ConnectionError::Reset` at once instead of at its idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_resets_the_connections_of_its_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    admin(data, &["user", "add", "a", "--role", "nurse"]);
    let token = cli_token(data, "a");
    let identity = ward_core::IdentityKeyPair::generate(&mut ward_core::os_rng());

    let first = RelayProcess::spawn(data, ANY_PORT);
    let addr = first.addr;
    let connection = first.connect().await;
    connection.enroll(&token, &identity).await.unwrap();
    let key_file = data.join(ward_relay::keys::RESET_KEY_FILE);
    let key = std::fs::read(&key_file).unwrap();
    first.kill();

    let second = RelayProcess::spawn(data, addr);
    assert_eq!(second.addr, addr);
    assert_eq!(std::fs::read(&key_file).unwrap(), key, "the key is reused");
    let get_devices = || {
        Req::GetDevices(wire::GetDevices {
            user_ids: vec!["a".to_owned()],
        })
    };
    let failed = connection.request(get_devices()).await;
    assert!(
        matches!(
            failed,
            Err(ward_client::ClientError::Stream(_) | ward_client::ClientError::Connection(_))
        ),
        "{failed:?}"
    );
    let reason = connection.quic().closed().await;
    assert!(
        matches!(reason, quinn::ConnectionError::Reset),
        "the connection ended by {reason:?}, not by a stateless reset"
    );

    // The device connects again to the new run and carries on.
    let again = second.connect().await;
    again.authenticate(&identity).await.unwrap();
    assert!(matches!(
        again.request(get_devices()).await,
        Ok(Resp::Devices(_))
    ));
    again.close().await;
}
