//! The SQLite storage on a temporary data directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use ward_audit::{AuditEntry, EventKind, Export, MessageId, SigningKey, UserId, verify_export};
use ward_core::IdentityKeyPair;
use ward_relay::storage::{
    DATABASE_FILE, Delivery, Device, DeviceKey, DeviceSet, EnqueueReceipt, OneTimePreKey, Role,
    SqliteStorage, Storage, StorageConfig, StorageError,
};

const T0: u64 = 1_790_000_000_000;
const HOUR: u64 = 3_600_000;

fn open(dir: &Path) -> SqliteStorage {
    SqliteStorage::open(dir, StorageConfig::default()).unwrap()
}

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

fn admin() -> UserId {
    user("admin@clinic.example")
}

fn relay_key() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

/// A fresh token hash each call (the tests stand in for SHA-256 of a token).
fn token() -> [u8; 32] {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    [NEXT.fetch_add(1, Ordering::Relaxed); 32]
}

fn new_identity() -> ward_core::DeviceIdentity {
    IdentityKeyPair::generate(&mut ward_core::os_rng())
        .public()
        .clone()
}

/// Creates the user if needed and enrolls a fresh device for it.
fn enroll(s: &SqliteStorage, id: &str, now: u64) -> DeviceKey {
    let u = user(id);
    if s.get_user(&u).is_err() {
        s.create_user(&u, &Role::new("nurse").unwrap(), Some(&admin()), now)
            .unwrap();
    }
    let t = token();
    s.issue_enrollment_token(&t, &u, Some(&admin()), now, now + HOUR)
        .unwrap();
    s.redeem_enrollment_token(&t, &new_identity(), now)
        .unwrap()
        .key
}

fn audit_size(s: &SqliteStorage) -> u64 {
    s.audit_state().unwrap().size
}

fn entries(s: &SqliteStorage) -> Vec<AuditEntry> {
    s.export_audit(&relay_key().verifying_key())
        .unwrap()
        .entries
}

/// Issues a head, exports, and verifies the export as an auditor would.
fn verified_export(s: &SqliteStorage, now: u64) -> Vec<u8> {
    let key = relay_key();
    s.issue_tree_head(&key, now).unwrap();
    let export = s.export_audit(&key.verifying_key()).unwrap();
    let bytes = export.encode();
    let verified = verify_export(&bytes, Some(key.verifying_key().to_bytes())).unwrap();
    assert_eq!(verified.root(), s.audit_state().unwrap().root);
    let mut streamed = Vec::new();
    s.write_audit_export(&key.verifying_key(), &mut streamed)
        .unwrap();
    assert_eq!(streamed, bytes, "streaming and in-memory exports agree");
    bytes
}

fn mid(n: u8) -> MessageId {
    MessageId([n; 16])
}

#[test]
fn enrollment_valid_expired_reused_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let alice = user("alice@clinic.example");
    let nurse = Role::new("nurse").unwrap();
    s.create_user(&alice, &nurse, Some(&admin()), T0).unwrap();
    assert!(matches!(
        s.create_user(&alice, &nurse, None, T0),
        Err(StorageError::AlreadyExists { what: "user" })
    ));
    assert!(matches!(
        s.issue_enrollment_token(&token(), &user("nobody"), None, T0, T0 + HOUR),
        Err(StorageError::NotFound { what: "user" })
    ));

    // Valid.
    let good = token();
    s.issue_enrollment_token(&good, &alice, Some(&admin()), T0, T0 + HOUR)
        .unwrap();
    let id = new_identity();
    let device = s.redeem_enrollment_token(&good, &id, T0 + 1).unwrap();
    assert_eq!(device.key.0, *id.signing_key());
    assert_eq!(device.user, alice);
    assert_eq!(device.identity, id.to_bytes());
    assert_eq!(s.get_device(&device.key).unwrap(), device);
    assert_eq!(s.list_devices(&alice).unwrap(), vec![device.clone()]);

    // Reused.
    assert!(matches!(
        s.redeem_enrollment_token(&good, &new_identity(), T0 + 2),
        Err(StorageError::TokenUsed)
    ));
    // Expired (expiry is exclusive).
    let late = token();
    s.issue_enrollment_token(&late, &alice, None, T0, T0 + 10)
        .unwrap();
    assert!(matches!(
        s.redeem_enrollment_token(&late, &new_identity(), T0 + 10),
        Err(StorageError::TokenExpired)
    ));
    // Unknown.
    assert!(matches!(
        s.redeem_enrollment_token(&[0xee; 32], &new_identity(), T0),
        Err(StorageError::TokenInvalid)
    ));
    // A device key enrolled before leaves the token unused.
    let again = token();
    s.issue_enrollment_token(&again, &alice, None, T0, T0 + HOUR)
        .unwrap();
    assert!(matches!(
        s.redeem_enrollment_token(&again, &id, T0 + 3),
        Err(StorageError::AlreadyExists { what: "device" })
    ));
    let second = s
        .redeem_enrollment_token(&again, &new_identity(), T0 + 4)
        .unwrap();
    assert_eq!(s.list_devices(&alice).unwrap().len(), 2);
    assert_eq!(second.user, alice);

    // Audit: create_user, 4 tokens, 2 enrollments; refusals wrote nothing.
    let kinds: Vec<EventKind> = entries(&s).iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::AdminAction,
            EventKind::AdminAction,
            EventKind::Enrollment,
            EventKind::AdminAction,
            EventKind::AdminAction,
            EventKind::Enrollment,
        ]
    );
    let enrollment = &entries(&s)[2];
    assert_eq!(enrollment.actor_user.as_ref(), Some(&alice));
    assert_eq!(enrollment.actor_device, device.key.audit_id());
    verified_export(&s, T0 + 5);
}

#[test]
fn revocation_removes_prekeys_and_queue() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let alice = enroll(&s, "alice", T0);
    let bob = enroll(&s, "bob", T0);
    s.put_signed_prekeys(&bob, b"signed", T0).unwrap();
    let keys: Vec<OneTimePreKey> = (0..5)
        .map(|id| OneTimePreKey {
            id,
            encoded: vec![id as u8; 8],
        })
        .collect();
    assert_eq!(s.add_one_time_prekeys(&bob, &keys).unwrap(), 5);
    for n in 0..3 {
        s.enqueue(
            &alice,
            mid(n),
            T0,
            T0 + HOUR,
            &[user("bob")],
            &[Delivery {
                recipient: bob,
                ciphertext: b"ct",
            }],
            DeviceSet::Exact,
        )
        .unwrap();
    }
    assert_eq!(s.queue_len(&bob).unwrap(), 3);

    let before = audit_size(&s);
    let revocation = s.revoke_device(&bob, Some(&admin()), T0 + 1).unwrap();
    assert_eq!(revocation.deleted_messages, 3);
    assert_eq!(revocation.deleted_one_time_prekeys, 5);
    assert_eq!(revocation.device.revoked_at, Some(T0 + 1));
    assert_eq!(audit_size(&s), before + 1 + 3, "revocation + one per copy");
    let log = entries(&s);
    assert_eq!(log[before as usize].kind, EventKind::Revocation);
    assert!(
        log[before as usize + 1..]
            .iter()
            .all(|e| e.kind == EventKind::Expiry)
    );

    assert_eq!(s.queue_len(&bob).unwrap(), 0);
    assert_eq!(s.one_time_prekey_count(&bob).unwrap(), 0);
    assert!(s.list_devices(&user("bob")).unwrap().is_empty());
    assert_eq!(s.list_all_devices(&user("bob")).unwrap().len(), 1);
    assert!(matches!(
        s.fetch(&bob, 0, 10),
        Err(StorageError::Revoked { .. })
    ));
    assert!(matches!(
        s.claim_bundle(&alice, &bob, T0 + 2),
        Err(StorageError::Revoked { .. })
    ));
    assert!(matches!(
        s.claim_bundle(&bob, &alice, T0 + 2),
        Err(StorageError::Revoked { .. })
    ));
    // A revoked recipient is no longer one of bob's devices.
    match s.enqueue(
        &alice,
        mid(9),
        T0 + 2,
        T0 + HOUR,
        &[user("bob")],
        &[Delivery {
            recipient: bob,
            ciphertext: b"x",
        }],
        DeviceSet::Exact,
    ) {
        Err(StorageError::StaleDevices { current }) => {
            assert_eq!(current.len(), 2);
            assert_eq!(current[0], (user("bob"), vec![]));
            assert_eq!(current[1].0, user("alice"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.put_signed_prekeys(&bob, b"again", T0 + 2),
        Err(StorageError::Revoked { .. })
    ));
    assert!(matches!(
        s.revoke_device(&bob, None, T0 + 2),
        Err(StorageError::Revoked { .. })
    ));
    verified_export(&s, T0 + 3);
}

#[test]
fn one_time_prekeys_are_claimed_exactly_once_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    // Two handles: two writer connections on the same database.
    let first = Arc::new(open(dir.path()));
    let second = Arc::new(open(dir.path()));
    let bob = enroll(&first, "bob", T0);
    first.put_signed_prekeys(&bob, b"signed", T0).unwrap();
    let keys: Vec<OneTimePreKey> = (1..=100)
        .map(|id: u32| OneTimePreKey {
            id,
            encoded: id.to_be_bytes().to_vec(),
        })
        .collect();
    assert_eq!(first.add_one_time_prekeys(&bob, &keys).unwrap(), 100);
    let askers: Vec<DeviceKey> = (0..8)
        .map(|i| enroll(&first, &format!("asker{i}"), T0))
        .collect();
    let before = audit_size(&first);

    let handles: Vec<_> = askers
        .iter()
        .enumerate()
        .map(|(i, asker)| {
            let s = if i % 2 == 0 { &first } else { &second }.clone();
            let asker = *asker;
            std::thread::spawn(move || {
                (0..20)
                    .map(|n| {
                        let bundle = s.claim_bundle(&asker, &bob, T0 + 1 + n).unwrap();
                        assert_eq!(bundle.signed_prekeys, b"signed");
                        bundle.one_time_prekey.map(|k| {
                            assert_eq!(k.encoded, k.id.to_be_bytes());
                            k.id
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Option<u32>> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(results.len(), 160);
    let ids: Vec<u32> = results.iter().flatten().copied().collect();
    let unique: HashSet<u32> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 100, "every key handed out, the rest got None");
    assert_eq!(unique, (1..=100).collect(), "each exactly once");
    assert_eq!(first.one_time_prekey_count(&bob).unwrap(), 0);

    // Both handles appended to one log: 160 PreKeyFetch entries, in order.
    assert_eq!(audit_size(&first), before + 160);
    let bytes = verified_export(&second, T0 + 100);
    let export = Export::decode(&bytes).unwrap();
    assert_eq!(
        export
            .entries
            .iter()
            .filter(|e| e.kind == EventKind::PreKeyFetch)
            .count(),
        160
    );
    // Each handle sees the other's appends.
    assert_eq!(
        first.audit_state().unwrap().root,
        second.audit_state().unwrap().root
    );
}

#[test]
fn one_time_prekey_duplicates_are_ignored_and_the_count_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        max_one_time_prekeys: 10,
        ..StorageConfig::default()
    };
    let s = SqliteStorage::open(dir.path(), config).unwrap();
    let bob = enroll(&s, "bob", T0);
    let key = |id: u32, b: u8| OneTimePreKey {
        id,
        encoded: vec![b; 4],
    };
    assert_eq!(
        s.add_one_time_prekeys(&bob, &[key(1, 1), key(2, 2)])
            .unwrap(),
        2
    );
    assert_eq!(
        s.add_one_time_prekeys(&bob, &[key(2, 9), key(3, 3)])
            .unwrap(),
        1
    );
    assert_eq!(s.one_time_prekey_count(&bob).unwrap(), 3);
    let too_many: Vec<_> = (10..18).map(|id| key(id, 0)).collect();
    assert!(matches!(
        s.add_one_time_prekeys(&bob, &too_many),
        Err(StorageError::TooManyPreKeys { limit: 10 })
    ));
    assert_eq!(s.one_time_prekey_count(&bob).unwrap(), 3, "none stored");
    // No signed prekeys yet: no bundle.
    let alice = enroll(&s, "alice", T0);
    assert!(matches!(
        s.claim_bundle(&alice, &bob, T0),
        Err(StorageError::NotFound {
            what: "signed prekeys"
        })
    ));
    s.put_signed_prekeys(&bob, b"v1", T0).unwrap();
    s.put_signed_prekeys(&bob, b"v2", T0 + 1).unwrap();
    let bundle = s.claim_bundle(&alice, &bob, T0 + 2).unwrap();
    assert_eq!(bundle.signed_prekeys, b"v2");
    assert_eq!(bundle.one_time_prekey, Some(key(1, 1)));
    assert_eq!(s.get_device(&bob).unwrap().identity, bundle.identity);
}

#[test]
fn enqueue_fetch_ack_expire() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let alice = enroll(&s, "alice", T0);
    let bob = enroll(&s, "bob", T0);
    let bob2 = enroll(&s, "bob", T0);
    for n in 0..5u8 {
        let receipt = s
            .enqueue(
                &alice,
                mid(n),
                T0 + u64::from(n),
                T0 + 10 + u64::from(n),
                &[user("bob")],
                &[
                    Delivery {
                        recipient: bob,
                        ciphertext: &[n; 3],
                    },
                    Delivery {
                        recipient: bob2,
                        ciphertext: &[n; 4],
                    },
                ],
                DeviceSet::Exact,
            )
            .unwrap();
        assert!(!receipt.duplicate);
        assert_eq!(receipt.copies.len(), 2);
        assert_eq!(receipt.copies[0].recipient, bob);
        assert_eq!(receipt.copies[0].seq, u64::from(n) + 1);
    }
    // In order, with a cursor.
    let all = s.fetch(&bob, 0, 100).unwrap();
    assert_eq!(
        all.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(all[2].message_id, mid(2));
    assert_eq!(all[2].sender, alice);
    assert_eq!(all[2].sender_user, user("alice"));
    assert_eq!(all[2].enqueued_at, T0 + 2);
    assert_eq!(all[2].ciphertext, [2; 3]);
    let page = s.fetch(&bob, 2, 2).unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(s.fetch(&bob2, 0, 1).unwrap()[0].ciphertext, [0; 4]);

    // Ack deletes this device's copy only.
    let acked = s.ack(&bob, mid(0), T0 + 5).unwrap();
    assert_eq!(acked.len(), 1);
    assert_eq!(
        (acked[0].seq, acked[0].sender, acked[0].size),
        (1, alice, 3)
    );
    assert!(matches!(
        s.ack(&bob, mid(0), T0 + 5),
        Err(StorageError::NotFound { what: "message" })
    ));
    // Acking a message queued for another device is NotFound.
    assert!(matches!(
        s.ack(&alice, mid(1), T0 + 5),
        Err(StorageError::NotFound { what: "message" })
    ));
    assert_eq!(s.queue_len(&bob).unwrap(), 4);
    assert_eq!(s.queue_len(&bob2).unwrap(), 5);

    // Expiry at T0 + 12 takes messages 0..=2 (expiring at T0+10..=12):
    // bob's 1 and 2 (0 was acked), bob2's 0, 1, 2.
    let expired = s.expire(T0 + 12, 100).unwrap();
    assert_eq!(expired.len(), 5);
    assert!(
        expired
            .iter()
            .all(|e| e.sender == alice && e.message_id.0[0] <= 2)
    );
    assert_eq!(s.queue_len(&bob).unwrap(), 2);
    assert_eq!(s.queue_len(&bob2).unwrap(), 2);
    // A limit bounds one call.
    assert_eq!(s.expire(T0 + 100, 3).unwrap().len(), 3);
    assert_eq!(s.expire(T0 + 100, 3).unwrap().len(), 1);
    assert!(s.expire(T0 + 100, 3).unwrap().is_empty());
    // Sequence numbers are never reused.
    s.enqueue(
        &alice,
        mid(50),
        T0 + 100,
        T0 + HOUR,
        &[user("bob")],
        &[
            Delivery {
                recipient: bob,
                ciphertext: b"new",
            },
            Delivery {
                recipient: bob2,
                ciphertext: b"new",
            },
        ],
        DeviceSet::Exact,
    )
    .unwrap();
    assert_eq!(s.fetch(&bob, 0, 10).unwrap()[0].seq, 6);

    // Bad input stores nothing.
    let send = |deliveries: &[Delivery<'_>], expires_at| {
        s.enqueue(
            &alice,
            mid(99),
            T0 + 100,
            expires_at,
            &[user("bob")],
            deliveries,
            DeviceSet::Exact,
        )
    };
    let d = Delivery {
        recipient: bob,
        ciphertext: b"x",
    };
    let d2 = Delivery {
        recipient: bob2,
        ciphertext: b"x",
    };
    let size = audit_size(&s);
    let invalid = |r| matches!(r, Err(StorageError::InvalidInput(_)));
    let stale = |r| matches!(r, Err(StorageError::StaleDevices { .. }));
    assert!(invalid(send(&[], T0 + HOUR)));
    assert!(invalid(send(&[d, d2], T0 + 100)));
    let huge = vec![0; StorageConfig::default().max_ciphertext_len + 1];
    let too_large = Delivery {
        recipient: bob2,
        ciphertext: &huge,
    };
    assert!(invalid(send(&[d, too_large], T0 + HOUR)));
    // Wrong recipient sets (see also `stale_device_lists_are_refused`).
    assert!(stale(send(&[d, d], T0 + HOUR)));
    assert!(stale(send(&[d], T0 + HOUR)));
    let unknown = Delivery {
        recipient: DeviceKey([7; 32]),
        ciphertext: b"x",
    };
    assert!(stale(send(&[d, d2, unknown], T0 + HOUR)));
    assert!(matches!(
        s.enqueue(
            &alice,
            mid(99),
            T0 + 100,
            T0 + HOUR,
            &[user("bob"), user("nobody")],
            &[d, d2],
            DeviceSet::Exact
        ),
        Err(StorageError::NotFound { what: "user" })
    ));
    assert_eq!(audit_size(&s), size, "refusals audit nothing");
    assert_eq!(s.queue_len(&bob).unwrap(), 1);
    verified_export(&s, T0 + 200);
}

#[test]
fn a_retried_message_id_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let alice = enroll(&s, "alice", T0);
    let bob = enroll(&s, "bob", T0);
    let carol = enroll(&s, "carol", T0);
    let d = [Delivery {
        recipient: bob,
        ciphertext: b"hello",
    }];
    let bob_user = [user("bob")];
    let first = s
        .enqueue(
            &alice,
            mid(1),
            T0,
            T0 + HOUR,
            &bob_user,
            &d,
            DeviceSet::Exact,
        )
        .unwrap();
    let size = audit_size(&s);
    let retry = s
        .enqueue(
            &alice,
            mid(1),
            T0 + 5,
            T0 + HOUR,
            &bob_user,
            &d,
            DeviceSet::Exact,
        )
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.enqueued_at, first.enqueued_at);
    assert_eq!(retry.copies, first.copies);
    assert_eq!(s.queue_len(&bob).unwrap(), 1);
    assert_eq!(audit_size(&s), size, "a duplicate is not a new send");
    // Still a duplicate after the copy was acknowledged (until expiry).
    s.ack(&bob, mid(1), T0 + 6).unwrap();
    let after_ack = s
        .enqueue(
            &alice,
            mid(1),
            T0 + 7,
            T0 + HOUR,
            &bob_user,
            &d,
            DeviceSet::Exact,
        )
        .unwrap();
    assert!(after_ack.duplicate);
    assert!(after_ack.copies.is_empty());
    assert_eq!(s.queue_len(&bob).unwrap(), 0);
    // Another sender may use the same id.
    let other = s
        .enqueue(
            &carol,
            mid(1),
            T0 + 8,
            T0 + HOUR,
            &bob_user,
            &d,
            DeviceSet::Exact,
        )
        .unwrap();
    assert!(!other.duplicate);
    // After expiry, the idempotency record is gone with the message.
    s.expire(T0 + HOUR, 100).unwrap();
    let late = s
        .enqueue(
            &alice,
            mid(1),
            T0 + HOUR + 1,
            T0 + 2 * HOUR,
            &bob_user,
            &d,
            DeviceSet::Exact,
        )
        .unwrap();
    assert!(!late.duplicate);
}

/// One acknowledgment of many ids: every copy of each known id deleted and
/// audited in one transaction, unknown ids (and other devices' copies)
/// reported, the queue length kept right.
#[test]
fn one_acknowledgment_of_many_ids() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let alice = enroll(&s, "alice", T0);
    let carol = enroll(&s, "carol", T0);
    let bob = enroll(&s, "bob", T0);
    let d = [Delivery {
        recipient: bob,
        ciphertext: b"hello",
    }];
    let bob_user = [user("bob")];
    for n in 1..=3 {
        s.enqueue(
            &alice,
            mid(n),
            T0,
            T0 + HOUR,
            &bob_user,
            &d,
            DeviceSet::Exact,
        )
        .unwrap();
    }
    // carol happens to use alice's id 2: bob holds two copies of it.
    s.enqueue(
        &carol,
        mid(2),
        T0,
        T0 + HOUR,
        &bob_user,
        &d,
        DeviceSet::Exact,
    )
    .unwrap();
    assert_eq!(s.queue_len(&bob).unwrap(), 4);
    let size = audit_size(&s);

    let done = s
        .acknowledge(&bob, &[mid(2), mid(9), mid(1)], T0 + 1)
        .unwrap();
    let acked: Vec<(MessageId, DeviceKey)> = done
        .acked
        .iter()
        .map(|a| (a.message_id, a.sender))
        .collect();
    assert_eq!(
        acked,
        [(mid(2), alice), (mid(2), carol), (mid(1), alice)],
        "in the order of the ids, and of seq within one"
    );
    assert_eq!(done.unknown, [mid(9)]);
    assert_eq!(s.queue_len(&bob).unwrap(), 1);
    let left: Vec<MessageId> = s
        .fetch(&bob, 0, 10)
        .unwrap()
        .iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(left, [mid(3)]);
    let new: Vec<AuditEntry> = entries(&s).split_off(usize::try_from(size).unwrap());
    assert_eq!(new.len(), 3);
    assert!(new.iter().all(|e| e.kind == EventKind::Acknowledgment));

    // Only the device's own queue: alice acknowledging bob's id 3 is unknown.
    let done = s.acknowledge(&alice, &[mid(3)], T0 + 2).unwrap();
    assert!(done.acked.is_empty());
    assert_eq!(done.unknown, [mid(3)]);
    assert_eq!(s.queue_len(&bob).unwrap(), 1);
    assert!(matches!(
        s.ack(&bob, mid(9), T0 + 3),
        Err(StorageError::NotFound { .. })
    ));
}

#[test]
fn queue_depth_limit_refuses_the_whole_send() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        max_queue_depth: 3,
        ..StorageConfig::default()
    };
    let s = SqliteStorage::open(dir.path(), config).unwrap();
    let alice = enroll(&s, "alice", T0);
    let bob = enroll(&s, "bob", T0);
    let carol = enroll(&s, "carol", T0);
    for n in 0..3 {
        s.enqueue(
            &alice,
            mid(n),
            T0,
            T0 + HOUR,
            &[user("bob")],
            &[Delivery {
                recipient: bob,
                ciphertext: b"x",
            }],
            DeviceSet::Exact,
        )
        .unwrap();
    }
    let size = audit_size(&s);
    let err = s
        .enqueue(
            &alice,
            mid(10),
            T0,
            T0 + HOUR,
            &[user("carol"), user("bob")],
            &[
                Delivery {
                    recipient: carol,
                    ciphertext: b"x",
                },
                Delivery {
                    recipient: bob,
                    ciphertext: b"x",
                },
            ],
            DeviceSet::Exact,
        )
        .unwrap_err();
    match err {
        StorageError::QueueFull { device, limit } => {
            assert_eq!((device, limit), (bob, 3));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.queue_len(&carol).unwrap(), 0, "nothing stored for carol");
    assert_eq!(audit_size(&s), size, "nothing audited");
    // The refused id was not recorded: it can be sent once there is room.
    s.ack(&bob, mid(0), T0 + 1).unwrap();
    let receipt = s
        .enqueue(
            &alice,
            mid(10),
            T0 + 2,
            T0 + HOUR,
            &[user("bob")],
            &[Delivery {
                recipient: bob,
                ciphertext: b"x",
            }],
            DeviceSet::Exact,
        )
        .unwrap();
    assert!(!receipt.duplicate);
}

#[test]
fn audit_entries_are_written_with_their_changes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert_eq!(audit_size(&s), 0);
    let alice = enroll(&s, "alice", T0); // user, token, enrollment
    assert_eq!(audit_size(&s), 3);
    let bob = enroll(&s, "bob", T0);
    let bob2 = enroll(&s, "bob", T0); // token, enrollment
    assert_eq!(audit_size(&s), 8);
    s.enqueue(
        &alice,
        mid(1),
        T0 + 1,
        T0 + 10,
        &[user("bob")],
        &[
            Delivery {
                recipient: bob,
                ciphertext: b"12345",
            },
            Delivery {
                recipient: bob2,
                ciphertext: b"123",
            },
        ],
        DeviceSet::Exact,
    )
    .unwrap();
    assert_eq!(audit_size(&s), 10, "one Send per copy");
    let send = &entries(&s)[8];
    assert_eq!(send.kind, EventKind::Send);
    assert_eq!(send.actor_user, Some(user("alice")));
    assert_eq!(send.actor_device, alice.audit_id());
    assert_eq!(send.target_user, Some(user("bob")));
    assert_eq!(send.target_device, bob.audit_id());
    assert_eq!(send.message_id, Some(mid(1)));
    assert_eq!(send.size, Some(5));
    s.ack(&bob, mid(1), T0 + 2).unwrap();
    assert_eq!(audit_size(&s), 11);
    s.expire(T0 + 10, 10).unwrap();
    assert_eq!(audit_size(&s), 12);
    // Entries with no state change, numbered and dated by the storage.
    let mut auth = AuditEntry::new(999, 0, EventKind::AuthFailure);
    auth.actor_device = bob.audit_id();
    let seqs = s.append_audit(&[auth.clone(), auth], T0 + 20).unwrap();
    assert_eq!(seqs, [12, 13]);
    // A caller's clock behind the log's is moved forward, not refused.
    s.append_audit(&[AuditEntry::new(0, 0, EventKind::AuthSuccess)], T0)
        .unwrap();
    let log = entries(&s);
    assert_eq!(log[14].timestamp_ms, T0 + 20);
    assert!(log.iter().enumerate().all(|(i, e)| e.sequence == i as u64));
    // Refused operations write nothing.
    let size = audit_size(&s);
    assert!(s.ack(&bob, mid(77), T0 + 30).is_err());
    assert!(
        s.redeem_enrollment_token(&[1; 32], &new_identity(), T0)
            .is_err()
    );
    assert_eq!(audit_size(&s), size);

    // Heads: a second head at the same size and time is the first one.
    let key = relay_key();
    let h1 = s.issue_tree_head(&key, T0 + 30).unwrap();
    let h1_again = s.issue_tree_head(&key, T0 + 30).unwrap();
    assert_eq!(h1, h1_again);
    assert_eq!(s.tree_heads().unwrap(), vec![h1]);
    s.append_audit(&[AuditEntry::new(0, 0, EventKind::Delivery)], T0 + 31)
        .unwrap();
    let h2 = s.issue_tree_head(&key, T0 + 40).unwrap();
    assert_eq!(h2.head.tree_size, h1.head.tree_size + 1);
    let bytes = verified_export(&s, T0 + 50);
    let verified = verify_export(&bytes, None).unwrap();
    assert_eq!(verified.heads().len(), 3);
    // Proofs from the storage verify against the heads.
    let proof = s
        .consistency_proof(h1.head.tree_size, h2.head.tree_size)
        .unwrap();
    ward_audit::verify_consistency(
        h1.head.tree_size,
        h2.head.tree_size,
        &h1.head.root,
        &h2.head.root,
        &proof.path,
    )
    .unwrap();
    let inclusion = s.inclusion_proof(8, h2.head.tree_size).unwrap();
    ward_audit::verify_inclusion(
        &log[8].leaf_hash(),
        8,
        h2.head.tree_size,
        &inclusion.path,
        &h2.head.root,
    )
    .unwrap();
    assert!(matches!(
        s.inclusion_proof(0, 10_000),
        Err(StorageError::InvalidInput(_))
    ));
}

#[test]
fn reopening_keeps_everything_and_the_same_root() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, state, heads) = {
        let s = open(dir.path());
        let alice = enroll(&s, "alice", T0);
        let bob = enroll(&s, "bob", T0);
        s.put_signed_prekeys(&bob, b"signed", T0).unwrap();
        s.add_one_time_prekeys(
            &bob,
            &[OneTimePreKey {
                id: 7,
                encoded: b"otk".to_vec(),
            }],
        )
        .unwrap();
        for n in 0..40 {
            s.enqueue(
                &alice,
                mid(n),
                T0 + u64::from(n),
                T0 + HOUR,
                &[user("bob")],
                &[Delivery {
                    recipient: bob,
                    ciphertext: &[n; 10],
                }],
                DeviceSet::Exact,
            )
            .unwrap();
        }
        s.issue_tree_head(&relay_key(), T0 + 100).unwrap();
        (
            alice,
            bob,
            s.audit_state().unwrap(),
            s.tree_heads().unwrap(),
        )
    };
    let s = open(dir.path());
    assert_eq!(s.audit_state().unwrap(), state);
    assert_eq!(s.tree_heads().unwrap(), heads);
    assert_eq!(s.list_users().unwrap().len(), 2);
    assert_eq!(s.get_device(&alice).unwrap().user, user("alice"));
    assert_eq!(s.queue_len(&bob).unwrap(), 40);
    assert_eq!(s.fetch(&bob, 39, 10).unwrap()[0].ciphertext, [39; 10]);
    assert_eq!(s.one_time_prekey_count(&bob).unwrap(), 1);
    // Nothing earlier than the last head is accepted after reopening.
    s.append_audit(&[AuditEntry::new(0, 0, EventKind::AuthSuccess)], T0)
        .unwrap();
    assert_eq!(entries(&s).last().unwrap().timestamp_ms, T0 + 100);
    // The next sequence number continues the log.
    let receipt = s
        .enqueue(
            &alice,
            mid(200),
            T0 + 200,
            T0 + HOUR,
            &[user("bob")],
            &[Delivery {
                recipient: bob,
                ciphertext: b"x",
            }],
            DeviceSet::Exact,
        )
        .unwrap();
    assert_eq!(receipt.copies[0].seq, 41);
    verified_export(&s, T0 + 300);
}

#[test]
fn ciphertext_never_reaches_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let alice = enroll(&s, "alice", T0);
    let bob = enroll(&s, "bob", T0);
    let canary = b"CANARY-ciphertext-7f3a9c1e-must-not-leak";
    s.enqueue(
        &alice,
        mid(1),
        T0,
        T0 + 10,
        &[user("bob")],
        &[Delivery {
            recipient: bob,
            ciphertext: canary,
        }],
        DeviceSet::Exact,
    )
    .unwrap();
    s.enqueue(
        &alice,
        mid(2),
        T0,
        T0 + 10,
        &[user("bob")],
        &[Delivery {
            recipient: bob,
            ciphertext: canary,
        }],
        DeviceSet::Exact,
    )
    .unwrap();
    s.put_signed_prekeys(&bob, canary, T0).unwrap();
    assert_eq!(s.fetch(&bob, 0, 10).unwrap()[0].ciphertext, canary);
    s.ack(&bob, mid(1), T0 + 1).unwrap();
    s.expire(T0 + 10, 10).unwrap();
    let bytes = verified_export(&s, T0 + 20);
    let contains = |haystack: &[u8]| haystack.windows(canary.len()).any(|w| w == canary);
    assert!(!contains(&bytes), "canary in the export");
    for entry in entries(&s) {
        assert!(!contains(&entry.encode()));
        assert!(!contains(entry.to_string().as_bytes()));
    }
    // Messages were ciphertext in the queue table: gone once acknowledged or
    // expired; the prekey bytes are still stored, as they should be.
    assert!(s.fetch(&bob, 0, 10).unwrap().is_empty());
    let _ = std::fs::metadata(dir.path().join(DATABASE_FILE)).unwrap();
}

/// One delivery of `ciphertext` to each device.
fn to_each<'a>(devices: &[DeviceKey], ciphertext: &'a [u8]) -> Vec<Delivery<'a>> {
    devices
        .iter()
        .map(|&recipient| Delivery {
            recipient,
            ciphertext,
        })
        .collect()
}

fn keys(devices: &[Device]) -> Vec<DeviceKey> {
    devices.iter().map(|d| d.key).collect()
}

fn sorted(mut keys: Vec<DeviceKey>) -> Vec<DeviceKey> {
    keys.sort_unstable();
    keys
}

#[test]
fn stale_device_lists_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let a1 = enroll(&s, "alice", T0);
    let a2 = enroll(&s, "alice", T0);
    let b1 = enroll(&s, "bob", T0);
    let b2 = enroll(&s, "bob", T0);
    let c1 = enroll(&s, "carol", T0);
    let bob = [user("bob")];
    let send = |id: u8, addressed: &[UserId], to: &[DeviceKey]| {
        s.enqueue(
            &a1,
            mid(id),
            T0 + 1,
            T0 + HOUR,
            addressed,
            &to_each(to, b"ct"),
            DeviceSet::Exact,
        )
    };
    // Devices enrolled at the same time are listed in key order.
    let stale = |result: Result<EnqueueReceipt, StorageError>| match result {
        Err(StorageError::StaleDevices { current }) => current
            .into_iter()
            .map(|(u, devices)| (u, sorted(keys(&devices))))
            .collect::<Vec<_>>(),
        other => panic!("expected StaleDevices, got {other:?}"),
    };

    // Bob's devices and the sender's other device: exact.
    let first = send(1, &bob, &[b1, b2, a2]).unwrap();
    assert_eq!(first.copies.len(), 3);
    let size = audit_size(&s);
    let current = vec![
        (user("bob"), sorted(vec![b1, b2])),
        (user("alice"), sorted(vec![a1, a2])),
    ];
    // Missing the sender's other device, or a recipient's.
    assert_eq!(stale(send(2, &bob, &[b1, b2])), current);
    assert_eq!(stale(send(2, &bob, &[b1, a2])), current);
    // Extra: a user not addressed, the sender itself, an unknown device.
    assert_eq!(stale(send(2, &bob, &[b1, b2, a2, c1])), current);
    assert_eq!(stale(send(2, &bob, &[b1, b2, a2, a1])), current);
    assert_eq!(
        stale(send(2, &bob, &[b1, b2, a2, DeviceKey([9; 32])])),
        current
    );
    // Duplicate: as many deliveries as devices, one of them twice.
    assert_eq!(stale(send(2, &bob, &[b1, b1, a2])), current);
    assert_eq!(stale(send(2, &bob, &[b1, b2, b2, a2])), current);
    // Unknown addressed user; empty delivery list.
    assert!(matches!(
        send(2, &[user("bob"), user("nobody")], &[b1, b2, a2]),
        Err(StorageError::NotFound { what: "user" })
    ));
    assert!(matches!(
        send(2, &bob, &[]),
        Err(StorageError::InvalidInput(_))
    ));
    assert_eq!(audit_size(&s), size, "refusals audit nothing");
    assert_eq!(s.queue_len(&b1).unwrap(), 1, "and store nothing");
    assert_eq!(s.queue_len(&a2).unwrap(), 1);

    // A retry is recognised before the device list is checked.
    let retry = send(1, &bob, &[c1]).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.copies, first.copies);

    // Several addressed users, the sender's own among them, each listed
    // once in the order given.
    let group = [user("carol"), user("alice"), user("bob"), user("carol")];
    assert_eq!(
        stale(send(3, &group, &[b1, b2, a2])),
        vec![
            (user("carol"), vec![c1]),
            (user("alice"), sorted(vec![a1, a2])),
            (user("bob"), sorted(vec![b1, b2])),
        ]
    );
    send(3, &group, &[c1, b2, a2, b1]).unwrap();
    // Only to the sender's other devices (addressed to nobody else).
    send(4, &[], &[a2]).unwrap();
    assert_eq!(
        stale(send(5, &[], &[a2, a1])),
        vec![(user("alice"), sorted(vec![a1, a2]))]
    );

    // A new device makes the old list stale; a revoked one leaves it.
    let b3 = enroll(&s, "bob", T0 + 2);
    assert_eq!(
        stale(send(6, &bob, &[b1, b2, a2]))[0],
        (user("bob"), sorted(vec![b1, b2, b3]))
    );
    s.revoke_device(&b2, None, T0 + 3).unwrap();
    assert_eq!(
        stale(send(6, &bob, &[b1, b2, b3, a2]))[0],
        (user("bob"), sorted(vec![b1, b3]))
    );
    send(6, &bob, &[b1, b3, a2]).unwrap();
    // A sender alone, to a user with no active device left: nothing to
    // send to, and any delivery is stale.
    let lone = enroll(&s, "dave", T0);
    s.revoke_device(&c1, None, T0 + 4).unwrap();
    assert!(matches!(
        s.enqueue(
            &lone,
            mid(7),
            T0 + 5,
            T0 + HOUR,
            &[user("carol")],
            &[],
            DeviceSet::Exact
        ),
        Err(StorageError::InvalidInput(_))
    ));
    assert_eq!(
        stale(s.enqueue(
            &lone,
            mid(7),
            T0 + 5,
            T0 + HOUR,
            &[user("carol")],
            &to_each(&[c1], b"x"),
            DeviceSet::Exact
        )),
        vec![(user("carol"), vec![]), (user("dave"), vec![lone])]
    );

    // The recipient learns who sent.
    let got = s.fetch(&a2, 0, 10).unwrap();
    assert!(
        got.iter()
            .all(|m| m.sender == a1 && m.sender_user == user("alice"))
    );
    assert_eq!(got.len(), 4);
    verified_export(&s, T0 + 10);
}

#[test]
fn revoked_since_lists_revocations_from_any_handle() {
    let dir = tempfile::tempdir().unwrap();
    let server = open(dir.path());
    let a = enroll(&server, "alice", T0);
    let b = enroll(&server, "bob", T0);
    let c = enroll(&server, "carol", T0);
    assert!(server.revoked_since(0).unwrap().is_empty());
    {
        // The admin command line: another handle (another process in
        // production) on the same data directory.
        let admin_cli = open(dir.path());
        admin_cli
            .revoke_device(&b, Some(&admin()), T0 + 20)
            .unwrap();
        admin_cli
            .revoke_device(&a, Some(&admin()), T0 + 10)
            .unwrap();
    }
    assert_eq!(
        server.revoked_since(0).unwrap(),
        vec![(a, T0 + 10), (b, T0 + 20)]
    );
    assert_eq!(
        server.revoked_since(T0 + 10).unwrap(),
        vec![(a, T0 + 10), (b, T0 + 20)]
    );
    assert_eq!(server.revoked_since(T0 + 11).unwrap(), vec![(b, T0 + 20)]);
    assert!(server.revoked_since(T0 + 21).unwrap().is_empty());
    assert!(matches!(
        server.revoked_since(u64::MAX),
        Err(StorageError::InvalidInput(_))
    ));
    assert!(server.get_device(&c).unwrap().is_active());
    // The server's tree caught up with the other handle's entries.
    verified_export(&server, T0 + 30);
}

/// Many threads enqueueing at once (their calls share commits): every send
/// is stored exactly once and audited once, and the log verifies.
#[test]
fn concurrent_enqueues_are_each_stored_and_audited_once() {
    const THREADS: usize = 8;
    const SENDS: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path()));
    let bob = enroll(&s, "bob", T0);
    let senders: Vec<DeviceKey> = (0..THREADS)
        .map(|i| enroll(&s, &format!("sender{i}"), T0))
        .collect();
    let before = audit_size(&s);
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = senders
        .iter()
        .map(|&sender| {
            let (s, start) = (Arc::clone(&s), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for n in 0..SENDS {
                    let mut id = [0u8; 16];
                    id[..4].copy_from_slice(&n.to_be_bytes());
                    let receipt = s
                        .enqueue(
                            &sender,
                            MessageId(id),
                            T0 + 1 + u64::from(n),
                            T0 + HOUR,
                            &[user("bob")],
                            &to_each(&[bob], &id),
                            DeviceSet::Exact,
                        )
                        .unwrap();
                    assert!(!receipt.duplicate);
                    assert_eq!(receipt.copies.len(), 1);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let total = THREADS * SENDS as usize;
    assert_eq!(s.queue_len(&bob).unwrap(), total as u64);
    let queued = s.fetch(&bob, 0, 100_000).unwrap();
    assert_eq!(queued.len(), total);
    assert!(
        queued
            .iter()
            .enumerate()
            .all(|(i, m)| m.seq == i as u64 + 1),
        "sequence numbers dense and in order"
    );
    let unique: HashSet<(DeviceKey, MessageId)> =
        queued.iter().map(|m| (m.sender, m.message_id)).collect();
    assert_eq!(unique.len(), total, "each send exactly once");
    assert!(queued.iter().all(|m| m.ciphertext == m.message_id.0));
    assert_eq!(audit_size(&s), before + total as u64);
    let bytes = verified_export(&s, T0 + HOUR);
    let export = Export::decode(&bytes).unwrap();
    let sends: HashSet<(Option<ward_audit::DeviceId>, Option<MessageId>)> = export
        .entries
        .iter()
        .filter(|e| e.kind == EventKind::Send)
        .map(|e| (e.actor_device.clone(), e.message_id))
        .collect();
    assert_eq!(sends.len(), total, "one Send entry per send");
}

/// Holds the database's write lock from a raw connection (as another
/// process would), so that requests pile up behind the writer.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(dir: &Path) -> Self {
        let conn = rusqlite::Connection::open(dir.join(DATABASE_FILE)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        Self(conn)
    }

    fn release(self) {
        self.0.execute_batch("ROLLBACK").unwrap();
    }
}

/// Good and refused requests in one batch: only the good ones are stored
/// and audited, and the writer's tree is the one the tables hold.
#[test]
fn a_batch_mixing_refused_and_good_requests_keeps_only_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        max_queue_depth: 20,
        ..StorageConfig::default()
    };
    let s = Arc::new(SqliteStorage::open(dir.path(), config.clone()).unwrap());
    let alice = enroll(&s, "alice", T0);
    let bob = enroll(&s, "bob", T0);
    let full = enroll(&s, "full", T0);
    let gone = enroll(&s, "gone", T0);
    for n in 0..20 {
        s.enqueue(
            &alice,
            mid(100 + n),
            T0,
            T0 + HOUR,
            &[user("full")],
            &to_each(&[full], b"x"),
            DeviceSet::Exact,
        )
        .unwrap();
    }
    s.enqueue(
        &alice,
        mid(200),
        T0,
        T0 + HOUR,
        &[user("bob")],
        &to_each(&[bob], b"x"),
        DeviceSet::Exact,
    )
    .unwrap();
    s.revoke_device(&gone, None, T0).unwrap();
    let before = s.audit_state().unwrap();

    // A first request takes the writer and waits for the lock; the next
    // ones queue behind it and make up one batch once the lock is free.
    let lock = WriteLock::take(dir.path());
    let plug = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            s.append_audit(&[AuditEntry::new(0, 0, EventKind::AuthSuccess)], T0 + 1)
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Expect {
        Stored,
        QueueFull,
        Revoked,
        Duplicate,
        Stale,
    }
    let requests: Vec<(DeviceKey, u8, DeviceKey, Expect)> = (0..40u8)
        .map(|i| match i % 5 {
            0 | 2 => (alice, i, bob, Expect::Stored),
            1 => (alice, i, full, Expect::QueueFull),
            3 => (gone, i, bob, Expect::Revoked),
            _ => (alice, 200, bob, Expect::Duplicate),
        })
        .chain([(alice, 250, full, Expect::Stale)])
        .collect();
    let handles: Vec<_> = requests
        .iter()
        .map(|&(from, id, to, expect)| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let addressed = if to == full { "full" } else { "bob" };
                let recipients = if expect == Expect::Stale {
                    vec![to, bob]
                } else {
                    vec![to]
                };
                let result = s.enqueue(
                    &from,
                    mid(id),
                    T0 + 2,
                    T0 + HOUR,
                    &[user(addressed)],
                    &to_each(&recipients, &[id; 100]),
                    DeviceSet::Exact,
                );
                let got = match result {
                    Ok(r) if r.duplicate => Expect::Duplicate,
                    Ok(_) => Expect::Stored,
                    Err(StorageError::QueueFull { .. }) => Expect::QueueFull,
                    Err(StorageError::Revoked { .. }) => Expect::Revoked,
                    Err(StorageError::StaleDevices { .. }) => Expect::Stale,
                    Err(e) => panic!("{e:?}"),
                };
                assert_eq!(got, expect, "message {id}");
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    lock.release();
    for handle in handles {
        handle.join().unwrap();
    }
    plug.join().unwrap();

    let stored: Vec<u8> = requests
        .iter()
        .filter(|r| r.3 == Expect::Stored)
        .map(|r| r.1)
        .collect();
    assert_eq!(stored.len(), 16);
    let after = s.audit_state().unwrap();
    assert_eq!(
        after.size,
        before.size + 1 + 16,
        "the plug and one Send each"
    );
    let log = entries(&s);
    let mut sent: Vec<u8> = log[before.size as usize..]
        .iter()
        .filter(|e| e.kind == EventKind::Send)
        .map(|e| e.message_id.unwrap().0[0])
        .collect();
    sent.sort_unstable();
    assert_eq!(sent, stored);
    assert_eq!(s.queue_len(&full).unwrap(), 20);
    let mut queued: Vec<u8> = s
        .fetch(&bob, 0, 100)
        .unwrap()
        .iter()
        .map(|m| m.message_id.0[0])
        .collect();
    queued.sort_unstable();
    let mut expected = stored.clone();
    expected.push(200);
    expected.sort_unstable();
    assert_eq!(queued, expected);
    verified_export(&s, T0 + 10);
    let state = s.audit_state().unwrap();

    // The tree the writer kept is the tree rebuilt from the tables.
    drop(s);
    let reopened = SqliteStorage::open(dir.path(), config).unwrap();
    assert_eq!(reopened.audit_state().unwrap(), state);
}

/// A batch that cannot start (another process holds the write lock past the
/// busy timeout) fails every request in it; nothing is stored, and the
/// storage works again once the lock is free.
#[test]
fn a_failed_batch_fails_each_request_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        busy_timeout: Duration::from_millis(100),
        ..StorageConfig::default()
    };
    let s = Arc::new(SqliteStorage::open(dir.path(), config).unwrap());
    let alice = enroll(&s, "alice", T0);
    let bob = enroll(&s, "bob", T0);
    let before = s.audit_state().unwrap();
    let lock = WriteLock::take(dir.path());
    let handles: Vec<_> = (0..4u8)
        .map(|n| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                s.enqueue(
                    &alice,
                    mid(n),
                    T0 + 1,
                    T0 + HOUR,
                    &[user("bob")],
                    &to_each(&[bob], b"x"),
                    DeviceSet::Exact,
                )
            })
        })
        .collect();
    for handle in handles {
        assert!(matches!(
            handle.join().unwrap(),
            Err(StorageError::Backend(_))
        ));
    }
    lock.release();
    assert_eq!(s.audit_state().unwrap(), before);
    assert_eq!(s.queue_len(&bob).unwrap(), 0);
    // Not recorded as sent: the same ids go through now.
    for n in 0..4u8 {
        let receipt = s
            .enqueue(
                &alice,
                mid(n),
                T0 + 2,
                T0 + HOUR,
                &[user("bob")],
                &to_each(&[bob], b"x"),
                DeviceSet::Exact,
            )
            .unwrap();
        assert!(!receipt.duplicate);
    }
    verified_export(&s, T0 + 3);
}

/// Dropping the storage joins its writer thread after the requests already
/// sent; a storage moved to and dropped on another thread is fine too.
#[test]
fn dropping_the_storage_stops_its_writer() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let alice = enroll(&s, "alice", T0);
    let bob = enroll(&s, "bob", T0);
    std::thread::spawn(move || {
        s.enqueue(
            &alice,
            mid(1),
            T0,
            T0 + HOUR,
            &[user("bob")],
            &to_each(&[bob], b"x"),
            DeviceSet::Exact,
        )
        .unwrap();
        drop(s);
    })
    .join()
    .unwrap();
    let s = open(dir.path());
    assert_eq!(s.queue_len(&bob).unwrap(), 1);
}

#[cfg(unix)]
mod crash {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;

    const CHILD_ENV: &str = "WARD_RELAY_CRASH_CHILD_DIR";

    /// Run by the parent test in a child process: enqueues until killed,
    /// printing each message id after `enqueue` returned (that is, after
    /// the relay would have acknowledged the send).
    #[test]
    fn crash_child_writer() {
        let Some(dir) = std::env::var_os(CHILD_ENV) else {
            return; // Only meaningful as the child of the crash test.
        };
        let s = open(Path::new(&dir));
        let alice = s.list_all_devices(&user("alice")).unwrap()[0].key;
        let bob = s.list_all_devices(&user("bob")).unwrap()[0].key;
        for n in 0u32.. {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&n.to_be_bytes());
            s.enqueue(
                &alice,
                MessageId(id),
                T0 + 10 + u64::from(n),
                T0 + HOUR,
                &[user("bob")],
                &[Delivery {
                    recipient: bob,
                    ciphertext: &[0xab; 1024],
                }],
                DeviceSet::Exact,
            )
            .unwrap();
            println!("ACKED {n}");
        }
    }

    /// A writer killed with SIGKILL mid-stream: after reopening, every
    /// acknowledged message is there exactly once and the audit log (one
    /// Send per stored message) verifies.
    #[test]
    fn acknowledged_messages_survive_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob) = {
            let s = open(dir.path());
            (enroll(&s, "alice", T0), enroll(&s, "bob", T0))
        };
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash::crash_child_writer", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("ACKED ") {
                acked.push(n.parse::<u32>().unwrap());
                if acked.len() == 50 {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        assert_eq!(acked.len(), 50, "the child wrote");

        let s = open(dir.path());
        let queued = s.fetch(&bob, 0, 100_000).unwrap();
        let ids: Vec<u32> = queued
            .iter()
            .map(|m| u32::from_be_bytes(m.message_id.0[..4].try_into().unwrap()))
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] + 1 == w[1]),
            "no gaps or repeats"
        );
        for n in &acked {
            assert!(ids.contains(n), "acknowledged message {n} lost");
        }
        assert!(queued.iter().all(|m| m.sender == alice));
        let sends = entries(&s)
            .iter()
            .filter(|e| e.kind == EventKind::Send)
            .count();
        assert_eq!(sends, queued.len(), "one Send entry per stored message");
        verified_export(&s, T0 + HOUR);
    }
}
