//! Every event reaches the app once (spec/11, `events`; `next_event`'s
//! documentation): across a cancelled wait, an acknowledgment the relay
//! never answers, a shutdown, a reopen and a process that dies at each
//! point, no message is lost and none is reported twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::relay::*;
use ward_client::{Event, Message, MessengerOptions};

fn no_receipts() -> MessengerOptions {
    MessengerOptions {
        send_delivery_receipts: false,
        ..options()
    }
}

const QUIET: Duration = Duration::from_millis(400);

/// What independent testing found (issue 11): the relay stalls so the
/// acknowledgment cannot complete, the wait is cancelled, the next call
/// reports the message, the app shuts the device down and reopens it. The
/// reopened device must not report the message again.
#[tokio::test]
async fn a_message_shown_after_a_cut_acknowledgment_is_not_reported_again_after_reopening() {
    bounded(async {
        let (mut relay, mut alice, mut bob) = alice_and_bob(no_receipts(), no_receipts()).await;

        let id = alice.send(&["bob"], Message::text("K+ 6.1")).await.unwrap();
        bob.stall_before_next_ack();
        let cut = tokio::time::timeout(Duration::from_secs(1), bob.next_event()).await;
        assert!(cut.is_err(), "the stalled wait returned: {cut:?}");
        assert_eq!(bob.store().unwrap().unacknowledged().unwrap().len(), 1);

        let got = next_message(&mut bob).await;
        assert_eq!(got.message_id, id);
        bob.close().await;

        let mut bob = reopen(&relay, "bob", no_receipts()).await;
        let after = events_until_quiet(&mut bob, QUIET).await;
        assert_eq!(message_ids(&after), Vec::<[u8; 16]>::new(), "{after:?}");
        assert!(bob.store().unwrap().unacknowledged().unwrap().is_empty());
        assert_eq!(bob.store().unwrap().received().unwrap().len(), 1);

        let later = alice.send(&["bob"], Message::text("repeat")).await.unwrap();
        assert_eq!(next_message(&mut bob).await.message_id, later);
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

/// A process that dies at each point of receiving: before the
/// acknowledgment (the message is stored, the relay not told), after the
/// event was returned and before the app asked for the next (the one
/// point where an event is reported again: the app may not have shown
/// it), and after the next call confirmed it (never again).
#[tokio::test]
async fn a_process_killed_at_each_point_of_receiving_loses_nothing_and_repeats_only_the_unconfirmed()
 {
    bounded(async {
        let (mut relay, mut alice, mut bob) = alice_and_bob(no_receipts(), no_receipts()).await;
        let id = alice.send(&["bob"], Message::text("one")).await.unwrap();

        // Killed between the commit and the Ack.
        bob.stall_before_next_ack();
        let cut = tokio::time::timeout(Duration::from_millis(500), bob.next_event()).await;
        assert!(cut.is_err());
        drop(bob);

        // Reported; killed before the app asked for more.
        let mut bob = reopen(&relay, "bob", no_receipts()).await;
        assert_eq!(next_message(&mut bob).await.message_id, id);
        drop(bob);

        // Reported again, since it was never confirmed; now confirmed by
        // the next call, then killed.
        let mut bob = reopen(&relay, "bob", no_receipts()).await;
        assert_eq!(next_message(&mut bob).await.message_id, id);
        let quiet = tokio::time::timeout(QUIET, bob.next_event()).await;
        assert!(quiet.is_err(), "{quiet:?}");
        drop(bob);

        let mut bob = reopen(&relay, "bob", no_receipts()).await;
        let after = events_until_quiet(&mut bob, QUIET).await;
        assert!(message_ids(&after).is_empty(), "{after:?}");
        assert!(bob.store().unwrap().unacknowledged().unwrap().is_empty());
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

/// Waits cut short at every few milliseconds, while messages arrive,
/// with a reopen half-way: each message is reported exactly once.
#[tokio::test]
async fn waits_cancelled_at_arbitrary_points_report_every_message_once() {
    bounded(async {
        let (mut relay, mut alice, mut bob) = alice_and_bob(options(), options()).await;
        let mut sent = Vec::new();
        for i in 0..12 {
            sent.push(
                alice
                    .send(&["bob"], Message::text(format!("n{i}")))
                    .await
                    .unwrap(),
            );
        }
        let mut reported = Vec::new();
        let mut cut = 0u64;
        let mut reopened = false;
        while reported.len() < sent.len() {
            cut = (cut + 3) % 17;
            match tokio::time::timeout(Duration::from_millis(cut), bob.next_event()).await {
                Ok(Ok(Event::Message(m))) => reported.push(m.message_id),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => {}
            }
            if reported.len() == sent.len() / 2 && !reopened {
                reopened = true;
                bob.close().await;
                bob = reopen(&relay, "bob", options()).await;
            }
        }
        let rest = events_until_quiet(&mut bob, QUIET).await;
        reported.extend(message_ids(&rest));
        assert_eq!(reported, sent, "every message once, in order");
        // The delivery receipts went out once per message, too.
        let mut receipted = Vec::new();
        for event in events_until_quiet(&mut alice, QUIET).await {
            if let Event::Receipt { message_ids, .. } = event {
                receipted.extend(message_ids);
            }
        }
        receipted.sort();
        let mut expected = sent.clone();
        expected.sort();
        assert_eq!(receipted, expected);
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

/// The bindings give back an event their caller never received.
#[tokio::test]
async fn an_event_given_back_is_reported_again_and_locking_confirms_it() {
    bounded(async {
        let (mut relay, mut alice, mut bob) = alice_and_bob(no_receipts(), no_receipts()).await;
        let first = alice.send(&["bob"], Message::text("first")).await.unwrap();
        assert_eq!(next_message(&mut bob).await.message_id, first);
        bob.redeliver_last_event();
        assert_eq!(next_message(&mut bob).await.message_id, first);

        // Locking confirms what was returned: after a reopen it is gone.
        bob.lock();
        bob.unlock(&key_of("bob")).unwrap();
        bob.close().await;
        let mut bob = reopen(&relay, "bob", no_receipts()).await;
        let after = events_until_quiet(&mut bob, QUIET).await;
        assert!(message_ids(&after).is_empty(), "{after:?}");
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

/// A new device of a contact is an event of the store's queue, like a
/// message: reported once, before the message that revealed it, across a
/// crash.
#[tokio::test]
async fn a_new_device_event_survives_a_crash_and_is_reported_once() {
    bounded(async {
        let (mut relay, mut alice, mut bob) = alice_and_bob(no_receipts(), no_receipts()).await;
        let hello = alice.send(&["bob"], Message::text("hello")).await.unwrap();
        assert_eq!(next_message(&mut bob).await.message_id, hello);

        let mut tablet = relay.enroll("alice", "alice-tablet", no_receipts()).await;
        let id = tablet.send(&["bob"], Message::text("from the tablet")).await.unwrap();
        bob.stall_before_next_ack();
        let cut = tokio::time::timeout(Duration::from_millis(500), bob.next_event()).await;
        assert!(cut.is_err());
        drop(bob);

        let mut bob = reopen(&relay, "bob", no_receipts()).await;
        let events = events_until_quiet(&mut bob, QUIET).await;
        let new_device = events
            .iter()
            .position(|e| matches!(e, Event::NewDevice { user, device_key } if user == "alice" && device_key == tablet.device_key()))
            .expect("a NewDevice event");
        let message = events
            .iter()
            .position(|e| matches!(e, Event::Message(m) if m.message_id == id))
            .expect("the message");
        assert!(new_device < message, "{events:?}");
        assert_eq!(events.len(), 2, "{events:?}");
        bob.close().await;
        let mut bob = reopen(&relay, "bob", no_receipts()).await;
        let after = events_until_quiet(&mut bob, QUIET).await;
        assert!(after.is_empty(), "{after:?}");
        for m in [alice, bob, tablet] {
            m.close().await;
        }
        relay.stop().await;
    })
    .await;
}
