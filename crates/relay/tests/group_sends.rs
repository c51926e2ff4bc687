//! Group sends (spec/08, "`Send` → `SendReceipt`", the group rule; RLY-22,
//! RLY-43): one shared ciphertext for many devices, checked before
//! anything is stored, queued for each named device, stored once, and
//! deleted with its last copy whichever way that copy goes. Over QUIC on
//! 127.0.0.1 through the relay of `common`, with opaque ciphertexts; what
//! is stored is read from the relay's database itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{
    Bare, TestRelay, ack, audit, code_of, enroll_bare, eventually, fetch, now_ms, queue_len,
    refused, stale_lists, test_limits,
};
use ward_audit::{AuditEntry, EventKind, MessageId};
use ward_client::wire::{self, ErrorCode, request::Body as Req, response::Body as Resp};
use ward_client::{ClientError, RelayConnection};
use ward_relay::server::Limits;
use ward_relay::storage::{Delivery, DeviceKey, DeviceSet, SharedDelivery, Storage, StorageError};

// ----- helpers -----

/// A `Send` of `shared` to `devices`, with `envelopes` of their own.
fn group_request(
    id: [u8; 16],
    users: &[&str],
    envelopes: &[([u8; 32], &[u8])],
    shared: &[u8],
    devices: &[[u8; 32]],
    ttl_ms: u64,
) -> Req {
    Req::Send(wire::Send {
        message_id: id.to_vec(),
        user_ids: users.iter().map(|u| (*u).to_owned()).collect(),
        envelopes: envelopes
            .iter()
            .map(|(key, ciphertext)| wire::Envelope {
                device_key: key.to_vec(),
                ciphertext: ciphertext.to_vec(),
            })
            .collect(),
        ttl_ms,
        shared_ciphertext: shared.to_vec(),
        shared_devices: devices.iter().map(|k| k.to_vec()).collect(),
        ..Default::default()
    })
}

/// A send of `envelopes` alone with `device_subset` as given.
fn subset_request(id: [u8; 16], users: &[&str], envelopes: &[[u8; 32]], subset: bool) -> Req {
    let with_own: Vec<([u8; 32], &[u8])> = envelopes.iter().map(|k| (*k, &b"own"[..])).collect();
    let Req::Send(send) = group_request(id, users, &with_own, b"", &[], 0) else {
        unreachable!()
    };
    Req::Send(wire::Send {
        device_subset: subset,
        ..send
    })
}

/// A group send without envelopes.
async fn send_group(
    c: &RelayConnection,
    id: [u8; 16],
    users: &[&str],
    shared: &[u8],
    devices: &[[u8; 32]],
) -> Result<wire::SendReceipt, ClientError> {
    receipt(c, group_request(id, users, &[], shared, devices, 0)).await
}

async fn receipt(c: &RelayConnection, send: Req) -> Result<wire::SendReceipt, ClientError> {
    match c.request(send).await? {
        Resp::Sent(receipt) => Ok(receipt),
        other => panic!("not a receipt: {other:?}"),
    }
}

/// What the database holds of shared ciphertexts: payload rows and their
/// bytes, and the bytes the copies referring to them hold themselves
/// (none: the ciphertext is stored once). Checks that no payload is left
/// without a copy referring to it.
#[derive(Debug, PartialEq, Eq)]
struct Stored {
    payloads: u64,
    bytes: u64,
    copy_bytes: u64,
}

fn stored(relay: &TestRelay) -> Stored {
    let db = rusqlite::Connection::open(relay.storage.path()).unwrap();
    let orphans: u64 = db
        .query_row(
            "SELECT COUNT(*) FROM payloads p \
             WHERE NOT EXISTS (SELECT 1 FROM queue q WHERE q.payload = p.id)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "a stored payload that no copy refers to");
    let (payloads, bytes) = db
        .query_row(
            "SELECT COUNT(*), ifnull(SUM(length(ciphertext)), 0) FROM payloads",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    let copy_bytes = db
        .query_row(
            "SELECT ifnull(SUM(length(ciphertext)), 0) FROM queue WHERE payload IS NOT NULL",
            [],
            |row| row.get(0),
        )
        .unwrap();
    Stored {
        payloads,
        bytes,
        copy_bytes,
    }
}

fn nothing_shared() -> Stored {
    Stored {
        payloads: 0,
        bytes: 0,
        copy_bytes: 0,
    }
}

fn one_shared(bytes: u64) -> Stored {
    Stored {
        payloads: 1,
        bytes,
        copy_bytes: 0,
    }
}

/// The audit entries of `kind` about message `id`.
fn entries(relay: &TestRelay, kind: EventKind, id: [u8; 16]) -> Vec<AuditEntry> {
    audit(relay)
        .into_iter()
        .filter(|e| e.kind == kind && e.message_id == Some(MessageId(id)))
        .collect()
}

/// How many `Send` entries the log holds (pushes append `Delivery` entries
/// at their own pace, so tests that check nothing was audited count these).
fn send_entries(relay: &TestRelay) -> usize {
    audit(relay)
        .iter()
        .filter(|e| e.kind == EventKind::Send)
        .count()
}

fn audit_id(device: &Bare) -> Option<ward_audit::DeviceId> {
    DeviceKey(device.key()).audit_id()
}

/// A group send sharing `ciphertext` with `recipients`.
fn share<'a>(recipients: &'a [DeviceKey], ciphertext: &'a [u8]) -> DeviceSet<'a> {
    DeviceSet::Subset {
        shared: Some(SharedDelivery {
            recipients,
            ciphertext,
        }),
    }
}

/// Users `a` (the sender a1, and a2), `b` (b1, b2), `c` (c1) and `d`
/// (d1), one device each on its own connection.
struct Fixture {
    relay: TestRelay,
    a1: Bare,
    a2: Bare,
    b1: Bare,
    b2: Bare,
    c1: Bare,
    d1: Bare,
    _dir: tempfile::TempDir,
}

async fn fixture(limits: Limits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_with(dir.path(), limits).await;
    for user in ["a", "b", "c", "d"] {
        relay.add_user(user);
    }
    Fixture {
        a1: enroll_bare(&relay, "a").await,
        a2: enroll_bare(&relay, "a").await,
        b1: enroll_bare(&relay, "b").await,
        b2: enroll_bare(&relay, "b").await,
        c1: enroll_bare(&relay, "c").await,
        d1: enroll_bare(&relay, "d").await,
        relay,
        _dir: dir,
    }
}

// ----- tests -----

#[tokio::test]
async fn a_group_send_reaches_each_named_device_with_one_stored_ciphertext() {
    let f = fixture(test_limits()).await;
    let shared = vec![0x5a; 1000];
    let id = [1; 16];
    let (messages, bytes) = (
        f.relay.metrics.messages_stored_total.get(),
        f.relay.metrics.message_bytes_stored_total.get(),
    );
    let named = [&f.b1, &f.b2, &f.c1, &f.a2];
    let keys = named.map(Bare::key);
    let sent = send_group(&f.a1.connection, id, &["b", "c"], &shared, &keys)
        .await
        .unwrap();
    assert!(!sent.duplicate);

    // One ciphertext stored, four copies queued; counted once in bytes.
    assert_eq!(stored(&f.relay), one_shared(1000));
    assert_eq!(f.relay.metrics.messages_stored_total.get(), messages + 4);
    assert_eq!(
        f.relay.metrics.message_bytes_stored_total.get(),
        bytes + 1000
    );
    // Each copy audited as for any send, with the shared ciphertext's size.
    let sends = entries(&f.relay, EventKind::Send, id);
    assert_eq!(
        sends
            .iter()
            .map(|e| e.target_device.clone())
            .collect::<Vec<_>>(),
        named.map(audit_id)
    );
    assert!(sends.iter().all(|e| e.size == Some(1000)
        && e.actor_device == audit_id(&f.a1)
        && e.actor_user.as_ref().map(|u| u.as_str()) == Some("a")));

    // Every named device gets the same ciphertext.
    for device in named {
        let got = fetch(&device.connection, 0, 10).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ciphertext, shared);
        assert_eq!(got[0].message_id, id);
        assert_eq!(got[0].sender_device, f.a1.key());
        assert_eq!(got[0].sender_user, "a");
        assert_eq!(got[0].expires_at_ms, sent.expires_at_ms);
    }

    // The ciphertext stays until the last copy is acknowledged.
    for device in &named[..3] {
        assert_eq!(ack(&device.connection, &[id]).await.deleted, 1);
        assert_eq!(stored(&f.relay), one_shared(1000));
    }
    assert_eq!(ack(&f.a2.connection, &[id]).await.deleted, 1);
    assert_eq!(stored(&f.relay), nothing_shared());
    let acks = entries(&f.relay, EventKind::Acknowledgment, id);
    assert_eq!(acks.len(), 4);
    assert!(acks.iter().all(|e| e.size == Some(1000)));
}

#[tokio::test]
async fn a_shared_ciphertext_goes_with_its_last_copy_at_expiry_revocation_and_wipe() {
    let f = fixture(test_limits()).await;
    let (b1, b2, c1) = (f.b1.key(), f.b2.key(), f.c1.key());

    // Expiry: the relay's sweep deletes both copies, and the ciphertext.
    let id = [2; 16];
    let short = group_request(id, &["b"], &[], b"expiring", &[b1, b2], 300);
    receipt(&f.a1.connection, short).await.unwrap();
    assert_eq!(stored(&f.relay), one_shared(8));
    assert!(
        eventually(Duration::from_secs(5), || {
            queue_len(&f.relay, b1) == 0 && queue_len(&f.relay, b2) == 0
        })
        .await,
        "the copies expire"
    );
    assert_eq!(stored(&f.relay), nothing_shared());
    let expired = entries(&f.relay, EventKind::Expiry, id);
    assert_eq!(expired.len(), 2);
    assert!(expired.iter().all(|e| e.size == Some(8)));

    // Revocation and a completed wipe delete their device's copy; the
    // ciphertext goes with the last one.
    let id = [3; 16];
    send_group(&f.a1.connection, id, &["b", "c"], b"revoked", &[b1, b2, c1])
        .await
        .unwrap();
    let s = &f.relay.storage;
    s.revoke_device(&DeviceKey(b1), None, now_ms()).unwrap();
    assert_eq!(stored(&f.relay), one_shared(7));
    s.request_wipe(&DeviceKey(c1), None, now_ms()).unwrap();
    s.complete_wipe(&DeviceKey(c1), now_ms()).unwrap();
    assert_eq!(stored(&f.relay), one_shared(7));
    s.revoke_device(&DeviceKey(b2), None, now_ms()).unwrap();
    assert_eq!(stored(&f.relay), nothing_shared());
    let deleted = entries(&f.relay, EventKind::Expiry, id);
    assert_eq!(deleted.len(), 3, "one Expiry per copy deleted");
    assert!(
        deleted.iter().all(|e| e.size == Some(7)
            && e.detail.as_ref().map(|d| d.as_str()) == Some("device_revoked"))
    );
}

#[tokio::test]
async fn a_mixed_send_delivers_each_envelope_and_the_shared_ciphertext() {
    let f = fixture(test_limits()).await;
    let id = [4; 16];
    let bytes = f.relay.metrics.message_bytes_stored_total.get();
    let own: &[u8] = b"for a2 alone";
    let mixed = group_request(
        id,
        &["b"],
        &[(f.a2.key(), own)],
        b"for b",
        &[f.b1.key(), f.b2.key()],
        0,
    );
    receipt(&f.a1.connection, mixed).await.unwrap();
    assert_eq!(stored(&f.relay), one_shared(5));
    assert_eq!(
        f.relay.metrics.message_bytes_stored_total.get(),
        bytes + 12 + 5
    );
    assert_eq!(fetch(&f.a2.connection, 0, 10).await[0].ciphertext, own);
    for device in [&f.b1, &f.b2] {
        assert_eq!(
            fetch(&device.connection, 0, 10).await[0].ciphertext,
            b"for b"
        );
    }
    let sizes: Vec<_> = entries(&f.relay, EventKind::Send, id)
        .iter()
        .map(|e| (e.target_device.clone(), e.size))
        .collect();
    assert_eq!(
        sizes,
        [
            (audit_id(&f.a2), Some(12)),
            (audit_id(&f.b1), Some(5)),
            (audit_id(&f.b2), Some(5))
        ]
    );
    // The envelope's copy is inline: acknowledging it leaves the payload.
    ack(&f.a2.connection, &[id]).await;
    assert_eq!(stored(&f.relay), one_shared(5));
}

#[tokio::test]
async fn a_group_send_may_leave_devices_out_but_names_only_current_ones() {
    let f = fixture(test_limits()).await;
    let c = &f.a1.connection;
    let (b1, b2, d1) = (f.b1.key(), f.b2.key(), f.d1.key());

    // b2, c1 and the sender's a2 are left out: the roster decides, not
    // the relay.
    send_group(c, [5; 16], &["b", "c"], b"x", &[b1])
        .await
        .unwrap();
    assert_eq!((queue_len(&f.relay, b1), queue_len(&f.relay, b2)), (1, 0));
    assert_eq!(queue_len(&f.relay, f.a2.key()), 0);

    let before = (send_entries(&f.relay), stored(&f.relay));
    let a = (
        "a".to_owned(),
        vec![f.a1.identity_bytes(), f.a2.identity_bytes()],
    );
    let b = (
        "b".to_owned(),
        vec![f.b1.identity_bytes(), f.b2.identity_bytes()],
    );
    let c_list = ("c".to_owned(), vec![f.c1.identity_bytes()]);
    // An unknown device.
    let current = stale_lists(
        send_group(c, [6; 16], &["b", "c"], b"x", &[b1, [9; 32]])
            .await
            .unwrap_err(),
    );
    assert_eq!(current, [a.clone(), b.clone(), c_list]);
    // A device of a user not addressed (d), in shared_devices or in an
    // envelope.
    let current = stale_lists(
        send_group(c, [7; 16], &["b"], b"x", &[b1, d1])
            .await
            .unwrap_err(),
    );
    assert_eq!(current, [a.clone(), b.clone()]);
    let unaddressed = group_request([8; 16], &["b"], &[(d1, b"e")], b"x", &[b1], 0);
    stale_lists(receipt(c, unaddressed).await.unwrap_err());
    // The sender itself.
    stale_lists(
        send_group(c, [9; 16], &["b"], b"x", &[b1, f.a1.key()])
            .await
            .unwrap_err(),
    );
    // A revoked device, named in shared_devices or in an envelope.
    f.relay
        .storage
        .revoke_device(&DeviceKey(b2), None, now_ms())
        .unwrap();
    let current = stale_lists(
        send_group(c, [10; 16], &["b"], b"x", &[b1, b2])
            .await
            .unwrap_err(),
    );
    assert_eq!(current, [a, ("b".to_owned(), vec![f.b1.identity_bytes()])]);
    let revoked = group_request([11; 16], &["b"], &[(b2, b"e")], b"x", &[b1], 0);
    stale_lists(receipt(c, revoked).await.unwrap_err());
    // An unknown addressed user comes first.
    assert_eq!(
        refused(
            send_group(c, [12; 16], &["b", "nobody"], b"x", &[b1])
                .await
                .unwrap_err()
        ),
        ErrorCode::NotFound
    );
    // None of the refusals stored or audited anything.
    assert_eq!((send_entries(&f.relay), stored(&f.relay)), before);
    assert_eq!(queue_len(&f.relay, b1), 1);
}

#[tokio::test]
async fn a_device_subset_send_of_envelopes_alone_is_held_to_the_group_rule() {
    let f = fixture(test_limits()).await;
    let c = &f.a1.connection;
    let (b1, b2) = (f.b1.key(), f.b2.key());
    // Without device_subset, leaving b2 (and a2) out is stale, as ever.
    stale_lists(
        receipt(c, subset_request([1; 16], &["b"], &[b1], false))
            .await
            .unwrap_err(),
    );
    // With it, the roster decides: b2 and a2 may be left out.
    receipt(c, subset_request([1; 16], &["b"], &[b1], true))
        .await
        .unwrap();
    assert_eq!((queue_len(&f.relay, b1), queue_len(&f.relay, b2)), (1, 0));
    assert_eq!(stored(&f.relay), nothing_shared(), "envelopes stay inline");
    assert_eq!(fetch(&f.b1.connection, 0, 10).await[0].ciphertext, b"own");
    // But only current devices may be named, each once.
    for stale in [[9; 32], f.d1.key(), f.a1.key()] {
        stale_lists(
            receipt(c, subset_request([2; 16], &["b"], &[b1, stale], true))
                .await
                .unwrap_err(),
        );
    }
    let twice = subset_request([2; 16], &["b"], &[b1, b2, b1], true);
    assert_eq!(code_of(c, twice).await, ErrorCode::InvalidArgument);
    assert_eq!(queue_len(&f.relay, b1), 1);
}

#[tokio::test]
async fn shared_fields_are_checked_before_anything_is_stored() {
    let f = fixture(Limits {
        max_envelopes: 4,
        ..test_limits()
    })
    .await;
    let c = &f.a1.connection;
    let (a2, b1, b2, c1) = (f.a2.key(), f.b1.key(), f.b2.key(), f.c1.key());
    let before = send_entries(&f.relay);
    let invalid = [
        // Both or neither.
        group_request([1; 16], &["b"], &[], b"x", &[], 0),
        group_request([1; 16], &["b"], &[], b"", &[b1], 0),
        // A device named twice, in shared_devices or across both lists.
        group_request([1; 16], &["b"], &[], b"x", &[b1, b2, b1], 0),
        group_request([1; 16], &["b"], &[(b1, b"e")], b"x", &[b2, b1], 0),
        // max_envelopes counts envelopes and shared devices together.
        group_request(
            [1; 16],
            &["b", "c"],
            &[(a2, b"e"), (c1, b"e")],
            b"x",
            &[b1, b2, [9; 32]],
            0,
        ),
    ];
    for request in invalid {
        assert_eq!(code_of(c, request).await, ErrorCode::InvalidArgument);
    }
    let short_key = Req::Send(wire::Send {
        message_id: vec![1; 16],
        user_ids: vec!["b".to_owned()],
        shared_ciphertext: b"x".to_vec(),
        shared_devices: vec![b1.to_vec(), vec![2; 31]],
        ..Default::default()
    });
    assert_eq!(code_of(c, short_key).await, ErrorCode::InvalidArgument);
    let max = test_limits().max_ciphertext_len as usize;
    let too_large = group_request([1; 16], &["b"], &[], &vec![7; max + 1], &[b1], 0);
    assert_eq!(code_of(c, too_large).await, ErrorCode::MessageTooLarge);
    assert_eq!(send_entries(&f.relay), before, "nothing audited");
    assert_eq!(stored(&f.relay), nothing_shared());
    assert_eq!(queue_len(&f.relay, b1), 0);

    // At the limits: four recipient devices, a shared ciphertext of
    // max_ciphertext_len.
    let full = group_request(
        [2; 16],
        &["b", "c"],
        &[(a2, b"e")],
        &vec![7; max],
        &[b1, b2, c1],
        0,
    );
    receipt(c, full).await.unwrap();
    assert_eq!(stored(&f.relay), one_shared(max as u64));
}

#[tokio::test]
async fn a_retried_group_send_is_stored_once() {
    let f = fixture(test_limits()).await;
    let c = &f.a1.connection;
    let (b1, b2) = (f.b1.key(), f.b2.key());
    let first = send_group(c, [1; 16], &["b"], b"once", &[b1, b2])
        .await
        .unwrap();
    let after = (
        send_entries(&f.relay),
        f.relay.metrics.message_bytes_stored_total.get(),
    );
    // The same send again, and one with the same id but other contents.
    let both = [b1, b2];
    let again = send_group(c, [1; 16], &["b"], b"once", &both);
    let other = group_request([1; 16], &["b"], &[(b2, b"e")], b"twice", &[b1], 0);
    for retry in [again.await.unwrap(), receipt(c, other).await.unwrap()] {
        assert!(retry.duplicate);
        assert_eq!(retry.enqueued_at_ms, first.enqueued_at_ms);
        assert_eq!(retry.expires_at_ms, first.expires_at_ms);
    }
    assert_eq!(stored(&f.relay), one_shared(4));
    assert_eq!((queue_len(&f.relay, b1), queue_len(&f.relay, b2)), (1, 1));
    assert_eq!(
        (
            send_entries(&f.relay),
            f.relay.metrics.message_bytes_stored_total.get()
        ),
        after
    );
    assert_eq!(fetch(&f.b1.connection, 0, 10).await[0].ciphertext, b"once");
}

#[tokio::test]
async fn a_full_queue_refuses_the_whole_group_send() {
    let f = fixture(Limits {
        max_queue_depth: 1,
        ..test_limits()
    })
    .await;
    let c = &f.a1.connection;
    let (b1, b2) = (f.b1.key(), f.b2.key());
    send_group(c, [1; 16], &["b"], b"first", &[b1])
        .await
        .unwrap();
    let full = send_group(c, [2; 16], &["b"], b"second", &[b2, b1])
        .await
        .unwrap_err();
    assert_eq!(refused(full), ErrorCode::QueueFull);
    assert_eq!((queue_len(&f.relay, b1), queue_len(&f.relay, b2)), (1, 0));
    assert_eq!(stored(&f.relay), one_shared(5));
}

#[tokio::test]
async fn the_storage_checks_a_group_send_itself() {
    let f = fixture(test_limits()).await;
    let s = &f.relay.storage;
    let (sender, b1, b2) = (
        DeviceKey(f.a1.key()),
        DeviceKey(f.b1.key()),
        DeviceKey(f.b2.key()),
    );
    let now = now_ms();
    let enqueue = |deliveries: &[Delivery<'_>], devices: DeviceSet<'_>| {
        let b = [ward_audit::UserId::new("b").unwrap()];
        let expires = now + 60_000;
        s.enqueue(
            &sender,
            MessageId([1; 16]),
            now,
            expires,
            &b,
            deliveries,
            devices,
        )
    };
    let to = |recipient| Delivery {
        recipient,
        ciphertext: b"e",
    };
    let large = vec![1; s.config().max_ciphertext_len + 1];
    let no_share = DeviceSet::Subset { shared: None };
    // Rule 3, which the server's checks keep requests from reaching.
    let refusals = [
        enqueue(&[], no_share),
        enqueue(&[], share(&[], b"x")),
        enqueue(&[], share(&[b1], b"")),
        enqueue(&[], share(&[b1], &large)),
        enqueue(&[to(b1)], share(&[b2, b1], b"x")),
        enqueue(&[to(b1), to(b1)], no_share),
    ];
    for refusal in refusals {
        assert!(
            matches!(refusal, Err(StorageError::InvalidInput(_))),
            "{refusal:?}"
        );
    }
    assert_eq!(stored(&f.relay), nothing_shared());
    // Rule 5: b2 and a2 may be left out, but a stranger may not be named;
    // a 1:1 send leaving b2 out is stale.
    let stranger = DeviceKey([9; 32]);
    for stale in [
        enqueue(&[], share(&[b1, stranger], b"x")),
        enqueue(&[to(stranger)], no_share),
        enqueue(&[to(b1), to(DeviceKey(f.a2.key()))], DeviceSet::Exact),
    ] {
        assert!(
            matches!(stale, Err(StorageError::StaleDevices { .. })),
            "{stale:?}"
        );
    }
    let receipt = enqueue(&[], share(&[b1], b"x")).unwrap();
    assert_eq!(receipt.copies.len(), 1);
    assert_eq!(stored(&f.relay), one_shared(1));
}
