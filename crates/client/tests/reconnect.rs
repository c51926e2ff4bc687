//! The messenger connects again by itself (`next_event`'s documentation):
//! a relay that restarts, or is down for a while, under a sending and a
//! receiving device; a device opened while the relay is down; a
//! connection that breaks under a send. Nothing is lost or repeated, and
//! the app is told the connection's state.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::relay::*;
use ward_client::{ClientError, ConnectionState, Event, Message, MessengerOptions};

const QUIET: Duration = Duration::from_millis(600);

/// Short timeouts and backoff, so that the tests do not wait long for a
/// relay that is down.
fn impatient() -> MessengerOptions {
    MessengerOptions {
        connect_timeout: Duration::from_millis(500),
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(400),
        ..options()
    }
}

fn is_down(event: &Event) -> bool {
    matches!(
        event,
        Event::Connection(ConnectionState::Disconnected { .. })
    )
}

fn is_up(event: &Event) -> bool {
    matches!(event, Event::Connection(ConnectionState::Connected))
}

#[tokio::test]
async fn a_relay_that_restarts_and_stays_down_a_while_loses_and_repeats_nothing() {
    bounded(async {
        let (mut relay, mut alice, bob) = alice_and_bob(impatient(), impatient()).await;

        // Bob listens the whole time, as an app does, and passes on the
        // ids of the messages he gets.
        let (ids, mut got) = tokio::sync::mpsc::unbounded_channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let listening = tokio::spawn(async move {
            let mut bob = bob;
            let mut events = Vec::new();
            loop {
                tokio::select! {
                    event = bob.next_event() => {
                        let event = event.unwrap();
                        if let Event::Message(m) = &event {
                            ids.send(m.message_id).unwrap();
                        }
                        events.push(event);
                    }
                    _ = &mut stopped => break,
                }
            }
            (bob, events)
        });

        let mut sent = Vec::new();
        for i in 0..5 {
            sent.push(
                alice
                    .send(&["bob"], Message::text(format!("before {i}")))
                    .await
                    .unwrap(),
            );
        }
        // A restart: the relay closes every connection and comes back.
        relay.restart().await;
        for i in 0..5 {
            sent.push(
                alice
                    .send(&["bob"], Message::text(format!("after {i}")))
                    .await
                    .unwrap(),
            );
        }
        // Down for a while: sends are kept and go out when it is back.
        relay.stop().await;
        let mut pending = Vec::new();
        for i in 0..3 {
            match alice
                .send(&["bob"], Message::text(format!("while down {i}")))
                .await
            {
                Err(ClientError::Pending { message_id, .. }) => pending.push(message_id),
                other => panic!("a send while the relay is down: {other:?}"),
            }
        }
        assert_eq!(alice.store().unwrap().pending_outgoing().unwrap().len(), 3);
        tokio::time::sleep(Duration::from_millis(300)).await;
        relay.resume().await;

        // Alice's own loop reconnects and sends the outbox, in order.
        let mut alice_events = Vec::new();
        while alice_events
            .iter()
            .filter(|e| matches!(e, Event::Sent { .. }))
            .count()
            < pending.len()
        {
            alice_events.push(next_event(&mut alice).await);
        }
        let reported_sent: Vec<_> = alice_events
            .iter()
            .filter_map(|e| match e {
                Event::Sent { message_id } => Some(*message_id),
                _ => None,
            })
            .collect();
        assert_eq!(reported_sent, pending);
        assert!(alice_events.iter().any(is_down), "{alice_events:?}");
        assert!(alice_events.iter().any(is_up), "{alice_events:?}");
        assert!(
            alice
                .store()
                .unwrap()
                .pending_outgoing()
                .unwrap()
                .is_empty()
        );
        sent.extend(&pending);

        // Bob got everything once, in order, and saw the outages.
        let mut received = Vec::new();
        while received.len() < sent.len() {
            let id = tokio::time::timeout(EVENT_TIMEOUT, got.recv())
                .await
                .unwrap();
            received.push(id.unwrap());
        }
        tokio::time::sleep(QUIET).await;
        stop.send(()).unwrap();
        let (bob, events) = listening.await.unwrap();
        while let Ok(late) = got.try_recv() {
            received.push(late);
        }
        assert_eq!(received, sent, "every message once, in order");
        // Down, up, down, up ...: one report per outage, and it ends up.
        let states: Vec<bool> = events
            .iter()
            .filter_map(|e| match e {
                Event::Connection(state) => Some(*state == ConnectionState::Connected),
                _ => None,
            })
            .collect();
        assert!(!states.is_empty(), "{events:?}");
        for (i, up) in states.iter().enumerate() {
            assert_eq!(*up, i % 2 == 1, "{events:?}");
        }
        assert_eq!(states.last(), Some(&true));
        assert!(bob.store().unwrap().unacknowledged().unwrap().is_empty());
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_device_opened_while_the_relay_is_down_works_offline_and_connects_later() {
    bounded(async {
        let (mut relay, mut alice, bob) = alice_and_bob(impatient(), impatient()).await;
        bob.close().await;
        let early = alice.send(&["bob"], Message::text("early")).await.unwrap();
        relay.stop().await;

        // Opens within the connect timeout, offline, with the store there.
        let mut bob = reopen(&relay, "bob", impatient()).await;
        assert!(matches!(
            bob.connection_state(),
            ConnectionState::Disconnected { .. }
        ));
        assert!(bob.store().unwrap().received().unwrap().is_empty());
        let queued = match bob.send(&["alice"], Message::text("offline")).await {
            Err(ClientError::Pending { message_id, reason }) => {
                assert!(
                    matches!(*reason, ClientError::Offline | ClientError::Connect(_)),
                    "{reason:?}"
                );
                message_id
            }
            other => panic!("{other:?}"),
        };
        assert!(is_down(&next_event(&mut bob).await));

        relay.resume().await;
        let mut events = Vec::new();
        while !events
            .iter()
            .any(|e| matches!(e, Event::Sent { message_id } if *message_id == queued))
        {
            events.push(next_event(&mut bob).await);
        }
        assert!(events.iter().any(is_up), "{events:?}");
        events.extend(events_until_quiet(&mut bob, QUIET).await);
        assert_eq!(message_ids(&events), vec![early], "{events:?}");
        assert_eq!(bob.connection_state(), ConnectionState::Connected);
        let got = next_message(&mut alice).await;
        assert_eq!(
            (got.message_id, got.message.text.as_str()),
            (queued, "offline")
        );
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_connection_that_breaks_under_a_send_is_made_again_at_once() {
    bounded(async {
        let (mut relay, mut alice, mut bob) = alice_and_bob(impatient(), impatient()).await;
        alice.break_connection();
        let id = alice
            .send(&["bob"], Message::text("through"))
            .await
            .unwrap();
        assert_eq!(alice.connection_state(), ConnectionState::Connected);
        assert_eq!(next_message(&mut bob).await.message_id, id);
        // The app hears of the outage, and of its end.
        let events = events_until_quiet(&mut alice, QUIET).await;
        let (down, up) = (
            events.iter().position(is_down),
            events.iter().position(is_up),
        );
        assert!(
            matches!((down, up), (Some(d), Some(u)) if d < u),
            "{events:?}"
        );

        // The same for a receiving device: its wait goes on.
        bob.break_connection();
        let second = alice.send(&["bob"], Message::text("again")).await.unwrap();
        assert_eq!(next_message(&mut bob).await.message_id, second);
        alice.close().await;
        bob.close().await;
        relay.stop().await;
    })
    .await;
}
