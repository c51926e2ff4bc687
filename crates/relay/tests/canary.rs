//! The relay never sees plaintext: a canary sent through it appears nowhere
//! in its data directory, its logs or its audit export, and neither does
//! the ciphertext that carried it (logs hold metadata only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Device, TestRelay};
use ward_relay::storage::Storage;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn plaintext_appears_nowhere_on_the_relay() {
    let logs = Captured::default();
    let writer = logs.clone();
    // Everything the relay and its libraries log, at every level.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let mut relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    relay.add_user("b");
    let mut a = Device::enroll(&relay, "a").await;
    let mut b = Device::enroll(&relay, "b").await;
    let canary = b"CANARY-7f3a9c-patient-MRN-0042-hyperkalaemia";
    a.send_text(&["b"], canary).await.unwrap();
    // A second one left queued, so the database holds it at rest.
    let queued = a.send_text(&["b"], canary).await.unwrap();
    let got = b.receive().await;
    assert_eq!(got.plaintext, canary);
    let pending = loop {
        let push = b
            .deliveries
            .as_mut()
            .unwrap()
            .next()
            .await
            .unwrap()
            .unwrap();
        if let Some(ward_client::wire::push::Body::Delivery(d)) = push.body {
            break d;
        }
    };
    assert_eq!(pending.message_id, queued);
    relay.stop().await;

    let key = ward_audit::VerifyingKey::from(&relay.audit_key);
    let export = relay.storage.export_audit(&key).unwrap().encode();
    let logs = logs.0.lock().unwrap().clone();
    assert!(!logs.is_empty(), "the relay logged");
    assert!(
        contains(&logs, b"authenticated") || contains(&logs, b"enrolled"),
        "the capture holds the relay's own events"
    );
    // The stored ciphertext is in the database (the message is queued)...
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        files.push((path.clone(), std::fs::read(&path).unwrap()));
    }
    let at_rest = files
        .iter()
        .any(|(_, bytes)| contains(bytes, &pending.ciphertext[20..52]));
    assert!(at_rest, "the test looks where the queue is stored");
    // ...but no plaintext anywhere, and no ciphertext in logs or audit.
    for (path, bytes) in &files {
        assert!(!contains(bytes, canary), "canary in {}", path.display());
    }
    assert!(!contains(&logs, canary), "canary in the logs");
    assert!(!contains(&export, canary), "canary in the audit export");
    let fragment = &pending.ciphertext[20..52];
    assert!(!contains(&logs, fragment), "ciphertext in the logs");
    assert!(
        !contains(&export, fragment),
        "ciphertext in the audit export"
    );
    let hex_fragment: String = fragment.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        !contains(&logs, hex_fragment.as_bytes()),
        "ciphertext hex in the logs"
    );
}
