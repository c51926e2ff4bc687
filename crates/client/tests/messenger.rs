//! `Messenger` end to end, against a real relay on 127.0.0.1: persistent
//! devices over the sealed store, fan-out to several devices, restarts,
//! de-duplication after a crash, identity events, receipts, locking and
//! wiping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::relay::*;
use ward_client::{
    ClientError, Event, Message, Messenger, MessengerOptions, Priority, ReceiptKind, StoreError,
};
use ward_relay::server::Limits;
use ward_relay::storage::{DeviceKey, Storage};

fn files_of(path: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", path.display())))
        .filter(|p| p.exists())
        .collect()
}

#[tokio::test]
async fn a_message_reaches_every_device_and_the_senders_other_device_sees_it_as_its_own() {
    bounded(async {
        let mut relay = TestRelay::start();
        relay.add_user("alice");
        relay.add_user("bob");
        let mut phone = relay.enroll("alice", "alice-phone", options()).await;
        let mut desktop = relay.enroll("alice", "alice-desktop", options()).await;
        let mut bob = relay.enroll("bob", "bob-phone", options()).await;

        let id = phone
            .send(&["bob"], Message::urgent("Bed 4: potassium 6.1"))
            .await
            .unwrap();

        let got = next_message(&mut bob).await;
        assert_eq!(got.message_id, id);
        assert_eq!(got.sender_user, "alice");
        assert_eq!(&got.sender_device, phone.device_key());
        assert_eq!(got.message.text, "Bed 4: potassium 6.1");
        assert_eq!(got.message.priority, Priority::Urgent);
        assert!(!got.from_own_device);
        assert!(got.sent_at_ms > 0 && got.received_at_ms >= got.sent_at_ms - 60_000);

        let copy = next_message(&mut desktop).await;
        assert_eq!(copy.message_id, id);
        assert!(copy.from_own_device);
        assert_eq!(copy.message.text, "Bed 4: potassium 6.1");

        // Bob answers; both of Alice's devices get it, and Bob's answer is
        // not reported back to Bob's only device.
        let reply = bob
            .send(&["alice"], Message::text("On my way"))
            .await
            .unwrap();
        for device in [&mut phone, &mut desktop] {
            let got = next_message(device).await;
            assert_eq!(got.message_id, reply);
            assert_eq!(got.message.text, "On my way");
            assert!(!got.from_own_device);
        }
        // Each device stored what it received.
        assert_eq!(bob.store().unwrap().received().unwrap().len(), 1);
        assert!(bob.store().unwrap().pending_outgoing().unwrap().is_empty());
        for m in [phone, desktop, bob] {
            m.close().await;
        }
        relay.stop().await;
    })
    .await;
}

/// `Messenger`'s futures are `Send`: an app can hand them to a
/// multi-threaded runtime as tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messengers_run_as_spawned_tasks_on_a_multi_threaded_runtime() {
    bounded(async {
        let (mut relay, mut alice, mut bob) = alice_and_bob(options(), options()).await;
        let receiving = tokio::spawn(async move {
            let got = next_message(&mut bob).await;
            (bob, got)
        });
        let sending = tokio::spawn(async move {
            let id = alice
                .send(&["bob"], Message::text("from a task"))
                .await
                .unwrap();
            (alice, id)
        });
        let (alice, id) = sending.await.unwrap();
        let (bob, got) = receiving.await.unwrap();
        assert_eq!(
            (got.message_id, got.message.text.as_str()),
            (id, "from a task")
        );
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_offline_device_gets_its_messages_when_reopened() {
    bounded(async {
        let (mut relay, mut alice, bob) = alice_and_bob(options(), options()).await;
        bob.close().await;

        let first = alice.send(&["bob"], Message::text("one")).await.unwrap();
        let second = alice.send(&["bob"], Message::text("two")).await.unwrap();

        let mut bob = Messenger::open(relay.store_path("bob"), &key_of("bob"), options())
            .await
            .unwrap();
        let got = next_message(&mut bob).await;
        assert_eq!((got.message_id, got.message.text.as_str()), (first, "one"));
        let got = next_message(&mut bob).await;
        assert_eq!((got.message_id, got.message.text.as_str()), (second, "two"));

        // The session survived the restart in both directions.
        let answer = bob.send(&["alice"], Message::text("three")).await.unwrap();
        assert_eq!(next_message(&mut alice).await.message_id, answer);
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_message_stored_before_a_crash_is_reported_once_after_reopening() {
    bounded(async {
        let mut relay = TestRelay::start();
        relay.add_user("alice");
        relay.add_user("bob");
        let no_receipts = MessengerOptions {
            send_delivery_receipts: false,
            ..options()
        };
        let mut alice = relay.enroll("alice", "alice", options()).await;
        let mut bob = relay.enroll("bob", "bob", no_receipts.clone()).await;

        let id = alice
            .send(&["bob"], Message::text("labs back"))
            .await
            .unwrap();
        bob.stall_before_next_ack();
        let cut = tokio::time::timeout(Duration::from_millis(500), bob.next_event()).await;
        assert!(cut.is_err(), "the stalled wait returned: {cut:?}");
        // Stored, not acknowledged; the process "dies" (no close).
        assert_eq!(bob.store().unwrap().unacknowledged().unwrap().len(), 1);
        drop(bob);

        let mut bob = Messenger::open(relay.store_path("bob"), &key_of("bob"), no_receipts)
            .await
            .unwrap();
        let got = next_message(&mut bob).await;
        assert_eq!(got.message_id, id);
        assert_eq!(got.message.text, "labs back");
        // The relay pushes it again (or already had our new Ack): either
        // way it is not reported a second time.
        assert_quiet(&mut bob).await;
        let later = alice
            .send(&["bob"], Message::text("and later"))
            .await
            .unwrap();
        let got = next_message(&mut bob).await;
        assert_eq!(got.message_id, later);
        assert_eq!(bob.store().unwrap().received().unwrap().len(), 2);
        assert!(bob.store().unwrap().unacknowledged().unwrap().is_empty());
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_wait_dropped_while_acknowledging_loses_nothing() {
    bounded(async {
        let (mut relay, mut alice, mut bob) = alice_and_bob(options(), options()).await;

        let first = alice.send(&["bob"], Message::text("first")).await.unwrap();
        // The wait is dropped after the message was stored, before the Ack
        // (what an app's timeout, or the FFI's interruption, can do).
        bob.stall_before_next_ack();
        let cut = tokio::time::timeout(Duration::from_millis(500), bob.next_event()).await;
        assert!(cut.is_err(), "the stalled wait returned: {cut:?}");
        assert_eq!(bob.store().unwrap().unacknowledged().unwrap().len(), 1);

        // The next call reports it, and the one after acknowledges it and
        // sends its delivery receipt before waiting.
        let got = next_message(&mut bob).await;
        assert_eq!(
            (got.message_id, got.message.text.as_str()),
            (first, "first")
        );
        let second = alice.send(&["bob"], Message::text("second")).await.unwrap();
        assert_eq!(next_message(&mut bob).await.message_id, second);
        assert!(bob.store().unwrap().unacknowledged().unwrap().is_empty());
        let mut receipted = Vec::new();
        while receipted.len() < 2 {
            let (from, kind, ids) = next_receipt(&mut alice).await;
            assert_eq!((from.as_str(), kind), ("bob", ReceiptKind::Delivered));
            receipted.extend(ids);
        }
        receipted.sort();
        let mut expected = vec![first, second];
        expected.sort();
        assert_eq!(receipted, expected);

        // Nothing is delivered again after reopening.
        bob.close().await;
        let mut bob = Messenger::open(relay.store_path("bob"), &key_of("bob"), options())
            .await
            .unwrap();
        assert_quiet(&mut bob).await;
        assert!(bob.store().unwrap().pending_outgoing().unwrap().is_empty());
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_new_device_of_a_contact_is_reported_and_changes_the_safety_number() {
    bounded(async {
        let mut relay = TestRelay::start();
        relay.add_user("alice");
        relay.add_user("bob");
        let mut alice = relay.enroll("alice", "alice", options()).await;
        let mut bob = relay.enroll("bob", "bob-phone", options()).await;
        alice.send(&["bob"], Message::text("hello")).await.unwrap();
        next_message(&mut bob).await;
        let before = alice.safety_number("bob").unwrap();
        // Bob's side agrees once it knows the same devices.
        assert_eq!(bob.safety_number("alice").unwrap(), before);

        let bob_desktop = relay.enroll("bob", "bob-desktop", options()).await;
        alice.send(&["bob"], Message::text("again")).await.unwrap();
        loop {
            match next_event(&mut alice).await {
                Event::NewDevice { user, device_key } => {
                    assert_eq!(user, "bob");
                    assert_eq!(&device_key, bob_desktop.device_key());
                    break;
                }
                Event::Receipt { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let after = alice.safety_number("bob").unwrap();
        assert_ne!(before, after);
        assert!(matches!(
            alice.safety_number("carol"),
            Err(ClientError::UnknownContact)
        ));
        for m in [alice, bob, bob_desktop] {
            m.close().await;
        }
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn receipts_travel_end_to_end() {
    bounded(async {
        let (mut relay, mut alice, mut bob) = alice_and_bob(options(), options()).await;
        let id = alice
            .send(&["bob"], Message::text("please confirm"))
            .await
            .unwrap();
        assert_eq!(next_message(&mut bob).await.message_id, id);
        // DELIVERED went out automatically when Bob stored it.
        assert_eq!(
            next_receipt(&mut alice).await,
            ("bob".to_owned(), ReceiptKind::Delivered, vec![id])
        );
        bob.send_receipt("alice", ReceiptKind::Read, &[id])
            .await
            .unwrap();
        assert_eq!(
            next_receipt(&mut alice).await,
            ("bob".to_owned(), ReceiptKind::Read, vec![id])
        );
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_locked_messenger_refuses_everything_until_unlocked_and_locks_itself_when_idle() {
    bounded(async {
        let (mut relay, mut alice, mut bob) = alice_and_bob(options(), options()).await;

        alice.lock();
        assert!(alice.is_locked());
        assert!(matches!(
            alice.send(&["bob"], Message::text("x")).await,
            Err(ClientError::Locked)
        ));
        assert!(matches!(alice.next_event().await, Err(ClientError::Locked)));
        assert!(matches!(
            alice.safety_number("bob"),
            Err(ClientError::Locked)
        ));
        assert!(format!("{alice:?}").contains("locked: true"));
        assert!(matches!(
            alice.unlock(&key_of("mallory")),
            Err(ClientError::Store(StoreError::WrongKey))
        ));
        assert!(alice.is_locked());
        alice.unlock(&key_of("alice")).unwrap();
        alice
            .send(&["bob"], Message::text("unlocked"))
            .await
            .unwrap();
        assert_eq!(next_message(&mut bob).await.message.text, "unlocked");
        alice.close().await;

        // Auto-lock: checked on each call, and by a timer while waiting.
        let short = MessengerOptions {
            auto_lock_after: Some(Duration::from_millis(200)),
            ..options()
        };
        let mut alice = Messenger::open(relay.store_path("alice"), &key_of("alice"), short)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        // (Bob's receipt for "unlocked" may come first.)
        let waited = loop {
            match tokio::time::timeout(EVENT_TIMEOUT, alice.next_event())
                .await
                .unwrap()
            {
                Ok(Event::Receipt { .. }) => {}
                other => break other,
            }
        };
        assert!(matches!(waited, Err(ClientError::Locked)), "{waited:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(alice.is_locked());
        alice.unlock(&key_of("alice")).unwrap();
        alice.touch().unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(matches!(
            alice.send(&["bob"], Message::text("late")).await,
            Err(ClientError::Locked)
        ));
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_wrong_storage_key_or_a_missing_store_is_refused() {
    bounded(async {
        let mut relay = TestRelay::start();
        relay.add_user("alice");
        let alice = relay.enroll("alice", "alice", options()).await;
        alice.close().await;
        let wrong = Messenger::open(relay.store_path("alice"), &key_of("eve"), options()).await;
        assert!(matches!(
            wrong,
            Err(ClientError::Store(StoreError::WrongKey))
        ));
        let missing = Messenger::open(relay.store_path("nobody"), &key_of("x"), options()).await;
        assert!(matches!(missing, Err(ClientError::NotEnrolled)));
        assert!(!relay.store_path("nobody").exists());
        // A store holds one device.
        let again = Messenger::enroll(
            relay.store_path("alice"),
            &key_of("alice"),
            relay.addr,
            relay.fingerprint,
            &relay.token("alice"),
            options(),
        )
        .await;
        assert!(matches!(again, Err(ClientError::AlreadyEnrolled)));
        // The right key still opens it.
        let alice = Messenger::open(relay.store_path("alice"), &key_of("alice"), options())
            .await
            .unwrap();
        assert_eq!(alice.user(), "alice");
        alice.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn wipe_closes_the_device_and_removes_its_files() {
    bounded(async {
        let mut relay = TestRelay::start();
        relay.add_user("alice");
        let alice = relay.enroll("alice", "alice", options()).await;
        let path = relay.store_path("alice");
        assert!(!files_of(&path).is_empty());
        alice.wipe().await.unwrap();
        assert_eq!(files_of(&path), Vec::<PathBuf>::new());
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sends_wait_out_rate_limits() {
    bounded(async {
        let mut relay = TestRelay::start_with(Limits {
            request_burst: 8,
            requests_per_second: 20,
            ..Limits::default()
        });
        relay.add_user("alice");
        relay.add_user("bob");
        let mut alice = relay.enroll("alice", "alice", options()).await;
        let mut bob = relay.enroll("bob", "bob", options()).await;
        // Each send takes two or three requests: more than the burst.
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                alice
                    .send(&["bob"], Message::text(format!("n{i}")))
                    .await
                    .unwrap(),
            );
        }
        for id in ids {
            assert_eq!(next_message(&mut bob).await.message_id, id);
        }
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_message_refused_by_the_relay_stays_in_the_outbox_and_is_sent_on_the_next_open() {
    bounded(async {
        // A tiny burst, refilled slowly: the sender runs out within a few
        // sends, and gives up at once (no waiting out the limit).
        let mut relay = TestRelay::start_with(Limits {
            request_burst: 10,
            requests_per_second: 1,
            ..Limits::default()
        });
        relay.add_user("alice");
        relay.add_user("bob");
        let impatient = MessengerOptions {
            max_rate_limit_wait: Duration::ZERO,
            send_delivery_receipts: false,
            ..options()
        };
        let mut alice = relay.enroll("alice", "alice", impatient.clone()).await;
        // Bob waits out the limit on his acks, as apps do by default.
        let no_receipts = MessengerOptions {
            send_delivery_receipts: false,
            ..options()
        };
        let mut bob = relay.enroll("bob", "bob", no_receipts).await;

        let mut sent = Vec::new();
        let refused = loop {
            assert!(sent.len() < 20, "the relay never refused a send");
            match alice
                .send(&["bob"], Message::text(format!("n{}", sent.len())))
                .await
            {
                Ok(id) => sent.push(id),
                Err(e) => break e,
            }
        };
        // Kept for later, and the app is told which message it is.
        let ClientError::Pending {
            message_id: pending_id,
            reason,
        } = refused
        else {
            panic!("{refused:?}");
        };
        assert_eq!(
            reason.code(),
            Some(ward_client::wire::ErrorCode::RateLimited)
        );
        let pending = alice.store().unwrap().pending_outgoing().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].message_id, pending_id);
        assert!(!sent.contains(&pending_id));
        // The app is killed now: no close, no flush.
        drop(alice);

        // Reopening resends it with its id (a new connection, a new burst).
        let alice = Messenger::open(relay.store_path("alice"), &key_of("alice"), impatient)
            .await
            .unwrap();
        assert!(
            alice
                .store()
                .unwrap()
                .pending_outgoing()
                .unwrap()
                .is_empty()
        );
        for id in &sent {
            assert_eq!(&next_message(&mut bob).await.message_id, id);
        }
        let got = next_message(&mut bob).await;
        assert_eq!(got.message_id, pending_id);
        assert_eq!(got.message.text, format!("n{}", sent.len()));
        assert_quiet(&mut bob).await;
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_message_the_relay_refuses_for_good_is_not_kept_for_resending() {
    bounded(async {
        let mut relay = TestRelay::start();
        relay.add_user("alice");
        let mut alice = relay.enroll("alice", "alice", options()).await;
        let refused = alice
            .send(&["nobody"], Message::text("hello?"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                ClientError::Refused {
                    code: ward_client::wire::ErrorCode::NotFound,
                    ..
                }
            ),
            "{refused:?}"
        );
        assert!(alice.store().unwrap().outbox().unwrap().is_empty());
        alice.flush_outbox().await.unwrap();
        alice.close().await;
        // Nothing to resend, nothing to fail on the next open.
        let alice = Messenger::open(relay.store_path("alice"), &key_of("alice"), options())
            .await
            .unwrap();
        alice.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn content_that_does_not_decode_is_reported_unreadable_acknowledged_and_kept_apart() {
    bounded(async {
        let (mut relay, mut alice, mut bob) = alice_and_bob(options(), options()).await;

        let garbled = alice
            .send_raw_plaintext(&["bob"], b"\xff\x00 not ward.content.v1")
            .await
            .unwrap();
        match next_event(&mut bob).await {
            Event::Unreadable {
                from_user,
                from_device,
                message_id,
                ..
            } => {
                assert_eq!(from_user, "alice");
                assert_eq!(&from_device, alice.device_key());
                assert_eq!(message_id, garbled);
            }
            other => panic!("expected Unreadable, got {other:?}"),
        }
        // Acknowledged like any delivery (the relay does not push it again),
        // no delivery receipt for it, and the session goes on.
        let fine = alice
            .send(&["bob"], Message::text("this one reads"))
            .await
            .unwrap();
        let got = next_message(&mut bob).await;
        assert_eq!(
            (got.message_id, got.message.text.as_str()),
            (fine, "this one reads")
        );
        let (from, kind, ids) = next_receipt(&mut alice).await;
        assert_eq!(
            (from.as_str(), kind, ids),
            ("bob", ReceiptKind::Delivered, vec![fine])
        );
        assert!(bob.store().unwrap().unacknowledged().unwrap().is_empty());
        bob.close().await;
        let mut bob = Messenger::open(relay.store_path("bob"), &key_of("bob"), options())
            .await
            .unwrap();
        assert_quiet(&mut bob).await;
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn one_time_prekeys_are_replenished_when_the_relay_says_they_run_low() {
    bounded(async {
        let mut relay = TestRelay::start_with(Limits {
            prekeys_low_threshold: 3,
            ..Limits::default()
        });
        relay.add_user("bob");
        let bob_options = MessengerOptions {
            one_time_batch: 4,
            send_delivery_receipts: false,
            ..options()
        };
        let mut bob = relay.enroll("bob", "bob", bob_options).await;
        let bob_key = DeviceKey(*bob.device_key());
        let on_relay = |relay: &TestRelay| relay.storage.one_time_prekey_count(&bob_key).unwrap();
        assert_eq!(on_relay(&relay), 4);

        // Each new contact claims one; the second claim leaves 2 (< 3), and
        // the relay tells Bob, whose messenger uploads another batch.
        let mut senders = Vec::new();
        for user in ["carol", "dave", "erin"] {
            relay.add_user(user);
            let mut sender = relay.enroll(user, user, options()).await;
            let id = sender.send(&["bob"], Message::text(user)).await.unwrap();
            assert_eq!(next_message(&mut bob).await.message_id, id);
            senders.push(sender);
        }
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        while on_relay(&relay) < 4 {
            assert!(tokio::time::Instant::now() < deadline, "no replenishment");
            // The notice is a push: Bob's messenger handles it while waiting.
            let _ = tokio::time::timeout(Duration::from_millis(100), bob.next_event()).await;
        }
        assert_eq!(on_relay(&relay), 1 + 4);
        assert_eq!(bob.store().unwrap().one_time_prekey_count().unwrap(), 1 + 4);

        // A later contact still opens its session with a one-time prekey.
        relay.add_user("frank");
        let mut frank = relay.enroll("frank", "frank", options()).await;
        let id = frank.send(&["bob"], Message::text("frank")).await.unwrap();
        assert_eq!(next_message(&mut bob).await.message_id, id);
        assert_eq!(on_relay(&relay), 4);
        for m in senders.into_iter().chain([frank, bob]) {
            m.close().await;
        }
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_prekey_set_the_relay_substituted_is_refused_and_nothing_is_sent() {
    bounded(async {
        let mut relay = TestRelay::start();
        for user in ["alice", "bob", "mallory"] {
            relay.add_user(user);
        }
        let mut bob = relay.enroll("bob", "bob", options()).await;
        let mallory = relay.enroll("mallory", "mallory", options()).await;
        // A compromised relay serves, under Bob's device, a prekey set that
        // is validly signed, by another identity.
        let (bob_key, mallory_key) = (
            DeviceKey(*bob.device_key()),
            DeviceKey(*mallory.device_key()),
        );
        let forged = relay
            .storage
            .claim_bundle(&mallory_key, &mallory_key, now_ms())
            .unwrap()
            .signed_prekeys;
        relay
            .storage
            .put_signed_prekeys(&bob_key, &forged, now_ms())
            .unwrap();

        let mut alice = relay.enroll("alice", "alice", options()).await;
        let refused = alice
            .send(&["bob"], Message::text("for Bob only"))
            .await
            .unwrap_err();
        assert!(matches!(refused, ClientError::Protocol(_)), "{refused:?}");
        assert!(
            alice
                .store()
                .unwrap()
                .session(&bob_key.0)
                .unwrap()
                .is_none()
        );
        assert_eq!(relay.storage.queue_len(&bob_key).unwrap(), 0);
        assert_quiet(&mut bob).await;
        for m in [alice, bob, mallory] {
            m.close().await;
        }
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_signed_prekey_rotates_and_new_contacts_use_the_new_one() {
    bounded(async {
        let mut relay = TestRelay::start();
        relay.add_user("alice");
        relay.add_user("bob");
        let rotating = |grace: Duration| MessengerOptions {
            signed_prekey_rotation: Duration::from_secs(1),
            signed_prekey_grace: grace,
            send_delivery_receipts: false,
            ..options()
        };
        let mut bob = relay
            .enroll("bob", "bob", rotating(Duration::from_secs(3600)))
            .await;
        let first = bob.store().unwrap().signed_prekeys().unwrap();
        assert_eq!(first.len(), 1);
        // A session opened on the first set.
        let mut alice_phone = relay.enroll("alice", "alice-phone", options()).await;
        let before = alice_phone
            .send(&["bob"], Message::text("before"))
            .await
            .unwrap();
        assert_eq!(next_message(&mut bob).await.message_id, before);
        bob.close().await;

        // Due (created_at has a one-second resolution): reopening rotates,
        // and the superseded set is kept for its grace period.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let bob = Messenger::open(
            relay.store_path("bob"),
            &key_of("bob"),
            rotating(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        let held = bob.store().unwrap().signed_prekeys().unwrap();
        assert_eq!(held.len(), 2, "{held:?}");
        assert_eq!(held[1].id, first[0].id);
        assert!(held[0].id != first[0].id && held[0].created_at > first[0].created_at);
        bob.close().await;

        // Without a grace period, the next rotation deletes the old sets.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let mut bob = Messenger::open(
            relay.store_path("bob"),
            &key_of("bob"),
            rotating(Duration::ZERO),
        )
        .await
        .unwrap();
        let current = bob.store().unwrap().signed_prekeys().unwrap();
        assert_eq!(current.len(), 1, "{current:?}");
        assert!(current[0].created_at > held[0].created_at);

        // A new contact gets the current set from the relay: Bob, who
        // holds no other, accepts its session. The old session goes on.
        let mut alice_desktop = relay.enroll("alice", "alice-desktop", options()).await;
        let after = alice_desktop
            .send(&["bob"], Message::text("after"))
            .await
            .unwrap();
        let got = next_message(&mut bob).await;
        assert_eq!(
            (got.message_id, got.message.text.as_str()),
            (after, "after")
        );
        assert_eq!(&got.sender_device, alice_desktop.device_key());
        let again = alice_phone
            .send(&["bob"], Message::text("still here"))
            .await
            .unwrap();
        assert_eq!(next_message(&mut bob).await.message_id, again);
        for m in [alice_phone, alice_desktop, bob] {
            m.close().await;
        }
        relay.stop().await;
    })
    .await;
}

// ----- remote wipe (spec/08, "Remote wipe", RLY-37) -----

/// The audit entries of `kind` naming `device` as target, with their details.
fn audit_details(relay: &TestRelay, kind: ward_audit::EventKind, device: &[u8; 32]) -> Vec<String> {
    let key = ward_relay::keys::load_or_create_audit_key(&relay.dir.path().join("relay")).unwrap();
    let key = ward_audit::VerifyingKey::from(&key);
    let target = ward_relay::storage::DeviceKey(*device).audit_id();
    relay
        .storage
        .export_audit(&key)
        .unwrap()
        .entries
        .into_iter()
        .filter(|e| e.kind == kind && e.target_device == target)
        .map(|e| e.detail.map(|d| d.as_str().to_owned()).unwrap_or_default())
        .collect()
}

/// Waits (up to 5 s) until the relay has revoked `device`.
async fn wait_revoked(relay: &TestRelay, device: &[u8; 32]) {
    let key = ward_relay::storage::DeviceKey(*device);
    for _ in 0..100 {
        if !relay.storage.get_device(&key).unwrap().is_active() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the device was not revoked");
}

async fn assert_wiped_and_unusable(m: &mut Messenger, relay: &TestRelay, name: &str) {
    assert!(m.is_wiped());
    assert_eq!(files_of(&relay.store_path(name)), Vec::<PathBuf>::new());
    assert!(matches!(
        m.next_event().await,
        Err(ClientError::NotEnrolled)
    ));
    assert!(matches!(
        m.send(&["alice"], Message::text("x")).await,
        Err(ClientError::NotEnrolled)
    ));
    assert!(matches!(m.touch(), Err(ClientError::NotEnrolled)));
    assert!(matches!(
        m.flush_outbox().await,
        Err(ClientError::NotEnrolled)
    ));
    assert!(matches!(
        m.safety_number("alice"),
        Err(ClientError::NotEnrolled)
    ));
    assert!(matches!(
        m.unlock(&key_of(name)),
        Err(ClientError::NotEnrolled)
    ));
    // A wiped store cannot be reopened: its files are gone.
    let reopened = Messenger::open(relay.store_path(name), &key_of(name), options()).await;
    assert!(matches!(reopened, Err(ClientError::NotEnrolled)));
}

#[tokio::test]
async fn a_remote_wipe_reaches_an_online_device_at_once_erases_it_and_revokes_it() {
    bounded(async {
        let (mut relay, mut alice, mut bob) = alice_and_bob(options(), options()).await;
        let id = alice.send(&["bob"], Message::text("before")).await.unwrap();
        assert_eq!(next_message(&mut bob).await.message_id, id);
        let device = *bob.device_key();
        assert!(!files_of(&relay.store_path("bob")).is_empty());

        // The administrator's instruction, as `ward-relay admin device wipe`
        // records it (the command line is another process: the relay polls).
        ward_relay::admin::wipe_device(&*relay.storage, &hex(&device), now_ms()).unwrap();
        assert!(
            relay
                .storage
                .wipe_pending(&ward_relay::storage::DeviceKey(device))
                .unwrap()
        );
        assert!(matches!(next_event(&mut bob).await, Event::Wiped));
        assert_wiped_and_unusable(&mut bob, &relay, "bob").await;

        wait_revoked(&relay, &device).await;
        assert!(
            !relay
                .storage
                .wipe_pending(&ward_relay::storage::DeviceKey(device))
                .unwrap()
        );
        assert_eq!(
            audit_details(&relay, ward_audit::EventKind::AdminAction, &device),
            ["wipe", "wipe_done"]
        );
        assert_eq!(
            audit_details(&relay, ward_audit::EventKind::Revocation, &device).len(),
            1
        );
        alice.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_offline_device_gets_the_wipe_before_its_queued_messages_on_its_next_connection() {
    bounded(async {
        let (mut relay, mut alice, bob) = alice_and_bob(options(), options()).await;
        let device = *bob.device_key();
        bob.close().await;

        // Queued while bob is offline, before and after the instruction.
        alice.send(&["bob"], Message::text("one")).await.unwrap();
        ward_relay::admin::wipe_device(&*relay.storage, &hex(&device), now_ms()).unwrap();
        alice.send(&["bob"], Message::text("two")).await.unwrap();
        assert_eq!(
            relay
                .storage
                .queue_len(&ward_relay::storage::DeviceKey(device))
                .unwrap(),
            2
        );
        // Nothing is delivered once the wipe is pending, not even by Fetch.
        assert!(
            relay
                .storage
                .fetch(&ward_relay::storage::DeviceKey(device), 0, 100)
                .unwrap()
                .is_empty()
        );

        let mut bob = Messenger::open(relay.store_path("bob"), &key_of("bob"), options())
            .await
            .unwrap();
        // The first event is the wipe: no queued message came before it.
        assert!(matches!(next_event(&mut bob).await, Event::Wiped));
        assert_wiped_and_unusable(&mut bob, &relay, "bob").await;
        wait_revoked(&relay, &device).await;
        // Revocation deleted the queued copies, unread.
        assert_eq!(
            audit_details(&relay, ward_audit::EventKind::Delivery, &device),
            Vec::<String>::new()
        );
        assert_eq!(
            audit_details(&relay, ward_audit::EventKind::Expiry, &device),
            ["device_revoked", "device_revoked"]
        );
        alice.close().await;
        relay.stop().await;
    })
    .await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_send_the_relay_could_not_take_goes_out_by_itself_while_connected() {
    bounded(async {
        let mut relay = TestRelay::start_with(Limits {
            request_burst: 10,
            requests_per_second: 2,
            ..Limits::default()
        });
        relay.add_user("alice");
        relay.add_user("bob");
        let impatient = MessengerOptions {
            max_rate_limit_wait: Duration::ZERO,
            send_delivery_receipts: false,
            // Time for the bucket to refill the two requests a send takes.
            outbox_retry: Duration::from_millis(1500),
            ..options()
        };
        let mut alice = relay.enroll("alice", "alice", impatient).await;
        let mut bob = relay.enroll("bob", "bob", options()).await;
        let mut sent = Vec::new();
        let pending = loop {
            assert!(sent.len() < 20, "the relay never refused a send");
            match alice.send(&["bob"], Message::text("n")).await {
                Ok(id) => sent.push(id),
                Err(ClientError::Pending { message_id, .. }) => break message_id,
                Err(e) => panic!("{e}"),
            }
        };
        // No reopen, no flush: Alice's wait for events sends it when the
        // limit allows, and says so.
        loop {
            if let Event::Sent { message_id } = next_event(&mut alice).await {
                assert_eq!(message_id, pending);
                break;
            }
        }
        assert!(
            alice
                .store()
                .unwrap()
                .pending_outgoing()
                .unwrap()
                .is_empty()
        );
        sent.push(pending);
        for id in sent {
            assert_eq!(next_message(&mut bob).await.message_id, id);
        }
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}
