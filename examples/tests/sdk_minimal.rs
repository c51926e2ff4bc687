//! The README's SDK example runs: `sdk-minimal` enrolls at a relay on
//! 127.0.0.1, sends to a device driven here, and prints the receipt and the
//! answer it gets back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ward_audit::UserId;
use ward_client::{Event, Message, Messenger, MessengerOptions, StorageKey};
use ward_relay::config::RelayConfig;
use ward_relay::metrics::Metrics;
use ward_relay::storage::{Role, Storage};

const TIMEOUT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn the_minimal_sdk_example_sends_and_prints_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let config = RelayConfig {
        data_dir: dir.path().join("relay"),
        bind: "127.0.0.1:0".parse().unwrap(),
        ..RelayConfig::default()
    };
    let launched = ward_relay::server::launch(&config, Arc::new(Metrics::new())).unwrap();
    let addr = launched.relay.local_addr().unwrap();
    let storage = launched.storage;
    let token = |user: &str| {
        let (token, hash) = ward_relay::keys::new_enrollment_token();
        let user = UserId::new(user).unwrap();
        storage
            .issue_enrollment_token(&hash, &user, None, now_ms(), now_ms() + 3_600_000)
            .unwrap();
        token
    };
    for user in ["alice", "bob"] {
        let role = Role::new("clinician").unwrap();
        storage
            .create_user(&UserId::new(user).unwrap(), &role, None, now_ms())
            .unwrap();
    }
    let mut bob = Messenger::enroll(
        dir.path().join("bob.ward"),
        &StorageKey::new([2; 32]),
        addr,
        launched.fingerprint,
        &token("bob"),
        MessengerOptions::default(),
    )
    .await
    .unwrap();

    let mut example = Command::new(env!("CARGO_BIN_EXE_sdk-minimal"))
        .args([
            addr.to_string(),
            hex::encode(launched.fingerprint),
            token("alice"),
            dir.path().join("alice.ward").display().to_string(),
            "bob".to_owned(),
            "Bed 4: potassium 6.1".to_owned(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    let got = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Event::Message(m) = bob.next_event().await.unwrap() {
                return m;
            }
        }
    })
    .await
    .expect("the example's message did not arrive");
    assert_eq!(
        (got.sender_user.as_str(), got.message.text.as_str()),
        ("alice", "Bed 4: potassium 6.1")
    );
    bob.send(&["alice"], Message::text("On my way"))
        .await
        .unwrap();

    let started = Instant::now();
    let status = loop {
        if let Some(status) = example.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            example.kill().unwrap();
            panic!("the example did not end");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = example.wait_with_output().unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(status.success(), "{status}: {printed}");
    assert!(printed.contains("bob: Delivered"), "{printed}");
    assert!(printed.ends_with("bob: On my way\n"), "{printed}");
    bob.close().await;
    launched.relay.shutdown().await.unwrap();
}
