//! Remote wipe over QUIC (spec/08, "Remote wipe", RLY-37): the relay side,
//! with raw protocol clients. The messenger's side is in
//! `crates/client/tests/messenger.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{Device, TestRelay, now_ms};
use ward_audit::{AuditEntry, EventKind};
use ward_client::ClientError;
use ward_client::wire::{self, ErrorCode, request::Body as Req, response::Body as Resp};
use ward_relay::storage::{DeviceKey, Storage};

fn audit(relay: &TestRelay) -> Vec<AuditEntry> {
    let key = ward_audit::VerifyingKey::from(&relay.audit_key);
    relay.storage.export_audit(&key).unwrap().entries
}

fn details(relay: &TestRelay, kind: EventKind, device: [u8; 32]) -> Vec<String> {
    let target = DeviceKey(device).audit_id();
    audit(relay)
        .into_iter()
        .filter(|e| e.kind == kind && e.target_device == target)
        .map(|e| e.detail.map(|d| d.as_str().to_owned()).unwrap_or_default())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn next_push(device: &mut Device) -> wire::Push {
    tokio::time::timeout(
        Duration::from_secs(5),
        device.deliveries.as_mut().unwrap().next(),
    )
    .await
    .expect("a push within 5 s")
    .unwrap()
    .expect("the delivery stream is open")
}

fn is_wipe(push: &wire::Push) -> bool {
    matches!(push.body, Some(wire::push::Body::Wipe(_)))
}

fn refused(e: ClientError) -> ErrorCode {
    e.code().expect("a refusal")
}

#[tokio::test]
async fn a_wipe_for_an_unknown_or_revoked_device_is_a_clear_admin_error() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    let device = Device::enroll(&relay, "a").await;
    let storage: &dyn Storage = &*relay.storage;
    let before = audit(&relay).len();

    let unknown = ward_relay::admin::wipe_device(storage, &"00".repeat(32), now_ms()).unwrap_err();
    assert_eq!(unknown.to_string(), "device not found");
    let malformed = ward_relay::admin::wipe_device(storage, "abcd", now_ms()).unwrap_err();
    assert!(
        matches!(malformed, ward_relay::admin::AdminError::InvalidDeviceKey),
        "{malformed}"
    );

    let key = hex(&device.key());
    let done = ward_relay::admin::wipe_device(storage, &key, now_ms()).unwrap();
    assert!(
        done.to_string().starts_with("wipe pending for device "),
        "{done}"
    );
    let twice = ward_relay::admin::wipe_device(storage, &key, now_ms()).unwrap_err();
    assert_eq!(twice.to_string(), "pending wipe already exists");

    relay
        .storage
        .revoke_device(&DeviceKey(device.key()), None, now_ms())
        .unwrap();
    // Revocation withdraws the instruction.
    assert!(
        !relay
            .storage
            .wipe_pending(&DeviceKey(device.key()))
            .unwrap()
    );
    let revoked = ward_relay::admin::wipe_device(storage, &key, now_ms()).unwrap_err();
    assert!(revoked.to_string().contains("is revoked"), "{revoked}");
    // Only the accepted instruction and the revocation were audited.
    let entries = audit(&relay);
    let kinds: Vec<_> = entries[before..].iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::AdminAction, EventKind::Revocation]);
}

#[tokio::test]
async fn no_request_can_trigger_or_fake_a_wipe() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    let mut device = Device::enroll(&relay, "a").await;

    // Anonymous: refused before anything else.
    let anonymous = relay.connect().await;
    let e = anonymous
        .request(Req::WipeDone(wire::WipeDone {}))
        .await
        .unwrap_err();
    assert_eq!(refused(e), ErrorCode::Unauthenticated);

    // Without a pending wipe, a device's WipeDone changes nothing: no
    // revocation, no audit entry.
    let before = audit(&relay).len();
    let e = device
        .connection
        .request(Req::WipeDone(wire::WipeDone {}))
        .await
        .unwrap_err();
    assert_eq!(refused(e), ErrorCode::NotFound);
    assert_eq!(audit(&relay).len(), before);
    assert!(
        relay
            .storage
            .get_device(&DeviceKey(device.key()))
            .unwrap()
            .is_active()
    );
    assert!(
        !relay
            .storage
            .wipe_pending(&DeviceKey(device.key()))
            .unwrap()
    );

    // Another device's instruction is not this device's: b acknowledging
    // does not complete a's wipe.
    relay.add_user("b");
    let other = Device::enroll(&relay, "b").await;
    relay
        .storage
        .request_wipe(&DeviceKey(device.key()), None, now_ms())
        .unwrap();
    let e = other
        .connection
        .request(Req::WipeDone(wire::WipeDone {}))
        .await
        .unwrap_err();
    assert_eq!(refused(e), ErrorCode::NotFound);
    assert!(
        relay
            .storage
            .wipe_pending(&DeviceKey(device.key()))
            .unwrap()
    );
    assert!(is_wipe(&next_push(&mut device).await));
}

#[tokio::test]
async fn a_device_with_a_pending_wipe_gets_no_messages_and_its_acknowledgment_revokes_it() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    relay.add_user("b");
    let mut a = Device::enroll(&relay, "a").await;
    let mut b = Device::enroll(&relay, "b").await;
    a.send_text(&["b"], b"before").await.unwrap();
    assert_eq!(b.receive().await.plaintext, b"before");

    relay
        .storage
        .request_wipe(&DeviceKey(b.key()), None, now_ms())
        .unwrap();
    // Pushed at once (within the poll interval).
    assert!(is_wipe(&next_push(&mut b).await));

    // A message sent now is stored (b is still active) but neither pushed
    // nor fetched.
    a.send_text(&["b"], b"after").await.unwrap();
    assert_eq!(relay.storage.queue_len(&DeviceKey(b.key())).unwrap(), 1);
    let quiet = tokio::time::timeout(
        Duration::from_millis(500),
        b.deliveries.as_mut().unwrap().next(),
    )
    .await;
    assert!(quiet.is_err(), "pushed after the wipe: {quiet:?}");
    match b
        .connection
        .request(Req::Fetch(wire::Fetch {
            after_seq: 0,
            limit: 0,
        }))
        .await
        .unwrap()
    {
        Resp::Messages(m) => assert!(m.messages.is_empty()),
        other => panic!("not messages: {other:?}"),
    }

    // A new connection of b gets the wipe first, and only the wipe.
    b.reconnect(&relay).await;
    assert!(is_wipe(&next_push(&mut b).await));

    let answer = b
        .connection
        .request(Req::WipeDone(wire::WipeDone {}))
        .await
        .unwrap();
    assert!(matches!(answer, Resp::WipeAcknowledged(_)));
    let closed = tokio::time::timeout(Duration::from_secs(5), b.connection.quic().closed())
        .await
        .expect("closed within the poll interval");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                ward_relay::server::close_code::REVOKED.into()
            );
        }
        other => panic!("closed otherwise: {other}"),
    }
    let stored = relay.storage.get_device(&DeviceKey(b.key())).unwrap();
    assert!(!stored.is_active());
    assert!(!relay.storage.wipe_pending(&DeviceKey(b.key())).unwrap());
    assert_eq!(
        details(&relay, EventKind::AdminAction, b.key()),
        ["wipe", "wipe_done"]
    );
    let revocation: Vec<_> = audit(&relay)
        .into_iter()
        .filter(|e| e.kind == EventKind::Revocation)
        .collect();
    assert_eq!(revocation.len(), 1);
    assert_eq!(revocation[0].actor_device, DeviceKey(b.key()).audit_id());
    assert_eq!(
        details(&relay, EventKind::Expiry, b.key()),
        ["device_revoked"]
    );
    // b cannot come back.
    let again = relay
        .connect()
        .await
        .authenticate(&b.identity)
        .await
        .unwrap_err();
    assert_eq!(refused(again), ErrorCode::Revoked);
}
