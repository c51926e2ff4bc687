//! Care-team groups through a real relay (spec/14, "Carrying groups"):
//! one ciphertext per group message, changes and chains pairwise, a
//! removed device reading nothing after its removal, a lost chain asked
//! for and the message sent again, a new device joining its user's groups.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::relay::{TestRelay, bounded, options};
use ward_client::{Event, IncomingMessage, Message, Messenger};

/// A care team's devices, by name.
struct Team {
    relay: TestRelay,
    devices: Vec<(String, Messenger)>,
}

impl Team {
    /// `users`: each user with how many devices it has. Devices are named
    /// `user/n`.
    async fn enroll(users: &[(&str, usize)]) -> Self {
        let relay = TestRelay::start();
        let mut devices = Vec::new();
        for (user, count) in users {
            relay.add_user(user);
            for n in 0..*count {
                let name = format!("{user}-{n}");
                devices.push((name.clone(), relay.enroll(user, &name, options()).await));
            }
        }
        Self { relay, devices }
    }

    fn device(&mut self, name: &str) -> &mut Messenger {
        &mut self
            .devices
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no device {name}"))
            .1
    }

    /// Lets every device take what reached it, round after round, until two
    /// rounds in a row bring nobody an event (some traffic, a chain request
    /// say, makes no event, but its answer does a round later); returns
    /// each device's events.
    async fn settle(&mut self) -> Vec<(String, Vec<Event>)> {
        self.settle_until(|_| false).await
    }

    /// [`Team::settle`], or sooner once `done` holds of the events so far:
    /// for traffic that makes no event for a while (a chain request and
    /// its answer are two rounds without one, longer on a loaded machine).
    async fn settle_until(
        &mut self,
        done: impl Fn(&[(String, Vec<Event>)]) -> bool,
    ) -> Vec<(String, Vec<Event>)> {
        let mut all: Vec<(String, Vec<Event>)> = self
            .devices
            .iter()
            .map(|(n, _)| (n.clone(), Vec::new()))
            .collect();
        let mut quiet_rounds = 0;
        for _ in 0..100 {
            let mut any = false;
            for (i, (_, device)) in self.devices.iter_mut().enumerate() {
                let events =
                    common::relay::events_until_quiet(device, Duration::from_millis(100)).await;
                any |= !events.is_empty();
                all[i].1.extend(events);
            }
            quiet_rounds = if any { 0 } else { quiet_rounds + 1 };
            if quiet_rounds == 2 || done(&all) {
                return all;
            }
        }
        panic!("the team never settled");
    }
}

/// Whether every device but the first (the sender) has `n` messages of
/// the group among its events.
fn all_but_sender_have(group: [u8; 16], n: usize) -> impl Fn(&[(String, Vec<Event>)]) -> bool {
    move |all| all[1..].iter().all(|(_, e)| texts(e, &group).len() >= n)
}

fn group_messages(events: &[Event], group_id: &[u8; 16]) -> Vec<IncomingMessage> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) if m.message.group_id == Some(*group_id) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn texts(events: &[Event], group_id: &[u8; 16]) -> Vec<String> {
    group_messages(events, group_id)
        .into_iter()
        .map(|m| m.message.text)
        .collect()
}

#[tokio::test]
async fn a_care_team_reads_each_message_once_and_a_removed_member_nothing_after() {
    bounded(async {
        let mut team = Team::enroll(&[("nurse.diaz", 2), ("dr.adams", 1), ("dr.baker", 1)]).await;
        let group = team
            .device("nurse.diaz-0")
            .create_group("4 West", &["dr.adams", "dr.baker"])
            .await
            .unwrap();
        let events = team.settle().await;
        for (name, events) in &events[1..] {
            assert!(
                events.iter().any(
                    |e| matches!(e, Event::GroupChanged { group_id, .. } if *group_id == group)
                ),
                "{name} did not hear of the group"
            );
        }
        let info = team.device("dr.baker-0").group(&group).unwrap().unwrap();
        assert_eq!(info.name, "4 West");
        assert_eq!(info.members.len(), 3);

        for text in ["bed 12 febrile", "bed 12 cultures sent"] {
            team.device("nurse.diaz-0")
                .send_to_group(&group, Message::urgent(text))
                .await
                .unwrap();
        }
        let receipts_at_sender = |all: &[(String, Vec<Event>)]| {
            all[0]
                .1
                .iter()
                .filter(|e| matches!(e, Event::Receipt { .. }))
                .count()
        };
        let members_have_both = all_but_sender_have(group, 2);
        let events = team
            .settle_until(|all| members_have_both(all) && receipts_at_sender(all) >= 2)
            .await;
        for (name, events) in &events[1..] {
            assert_eq!(
                texts(events, &group),
                ["bed 12 febrile", "bed 12 cultures sent"],
                "{name}"
            );
        }
        let from_own = group_messages(&events[1].1, &group);
        assert!(from_own.iter().all(|m| m.from_own_device));
        // Every member's device told the sender it has the message.
        let receipts = receipts_at_sender(&events);
        assert!(receipts >= 2, "delivery receipts: {receipts}");

        team.device("nurse.diaz-0")
            .remove_from_group(&group, "dr.baker")
            .await
            .unwrap();
        team.settle().await;
        let baker_view = team.device("dr.baker-0").group(&group).unwrap().unwrap();
        assert!(!baker_view.is_member);
        team.device("dr.adams-0")
            .send_to_group(&group, Message::text("baker is off the team"))
            .await
            .unwrap();
        let events = team.settle().await;
        let by_name = |n: &str| &events.iter().find(|(name, _)| name == n).unwrap().1;
        assert_eq!(
            texts(by_name("nurse.diaz-0"), &group),
            ["baker is off the team"]
        );
        assert_eq!(
            texts(by_name("nurse.diaz-1"), &group),
            ["baker is off the team"]
        );
        assert!(texts(by_name("dr.baker-0"), &group).is_empty());
        // A removed device cannot send to the group either.
        assert!(
            team.device("dr.baker-0")
                .send_to_group(&group, Message::text("still here?"))
                .await
                .is_err()
        );
    })
    .await;
}

#[tokio::test]
async fn a_lost_chain_is_asked_for_and_the_message_arrives_late() {
    bounded(async {
        let mut team = Team::enroll(&[("nurse.diaz", 1), ("dr.adams", 2)]).await;
        let group = team
            .device("nurse.diaz-0")
            .create_group("Rapid response", &["dr.adams"])
            .await
            .unwrap();
        team.settle().await;
        let nurse = team.device("nurse.diaz-0");
        nurse.withhold_next_distribution();
        nurse
            .send_to_group(&group, Message::urgent("code blue bed 4"))
            .await
            .unwrap();
        // Adams's devices ask for the chain; the nurse answers with it and
        // the message again; then the chain reads what follows.
        let events = team.settle_until(all_but_sender_have(group, 1)).await;
        for (name, events) in &events[1..] {
            assert_eq!(texts(events, &group), ["code blue bed 4"], "{name}");
        }
        team.device("nurse.diaz-0")
            .send_to_group(&group, Message::text("stood down"))
            .await
            .unwrap();
        let events = team.settle_until(all_but_sender_have(group, 1)).await;
        for (name, events) in &events[1..] {
            assert_eq!(texts(events, &group), ["stood down"], "{name}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_new_device_joins_its_users_groups_and_reads_only_what_follows() {
    bounded(async {
        let mut team = Team::enroll(&[("nurse.diaz", 1), ("dr.adams", 1)]).await;
        let group = team
            .device("nurse.diaz-0")
            .create_group("4 West", &["dr.adams"])
            .await
            .unwrap();
        team.settle().await;
        team.device("dr.adams-0")
            .send_to_group(&group, Message::text("before the new phone"))
            .await
            .unwrap();
        team.settle().await;

        let phone = team.relay.enroll("dr.adams", "dr.adams-1", options()).await;
        team.devices.push(("dr.adams-1".into(), phone));
        // Adams's first device adds the new one as it sends.
        team.device("dr.adams-0")
            .send_to_group(&group, Message::text("after the new phone"))
            .await
            .unwrap();
        let events = team.settle().await;
        let by_name = |n: &str| &events.iter().find(|(name, _)| name == n).unwrap().1;
        assert_eq!(
            texts(by_name("dr.adams-1"), &group),
            ["after the new phone"]
        );
        assert_eq!(
            texts(by_name("nurse.diaz-0"), &group),
            ["after the new phone"]
        );
        let roster = team.device("nurse.diaz-0").group(&group).unwrap().unwrap();
        let adams = roster
            .members
            .iter()
            .find(|m| m.user_id == "dr.adams")
            .unwrap();
        assert_eq!(adams.devices.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_twenty_device_team_is_uploaded_one_ciphertext_per_message() {
    bounded(async {
        // Eight users, twenty devices: a ward's day shift.
        let mut team = Team::enroll(&[
            ("charge.nurse", 3),
            ("nurse.a", 3),
            ("nurse.b", 3),
            ("nurse.c", 3),
            ("dr.adams", 2),
            ("dr.baker", 2),
            ("pharmacist", 2),
            ("clerk", 2),
        ])
        .await;
        assert_eq!(team.devices.len(), 20);
        let others: Vec<&str> = vec![
            "nurse.a",
            "nurse.b",
            "nurse.c",
            "dr.adams",
            "dr.baker",
            "pharmacist",
            "clerk",
        ];
        let group = team
            .device("charge.nurse-0")
            .create_group("4 West day shift", &others)
            .await
            .unwrap();
        team.settle().await;
        let text = "x".repeat(1024);
        // The first message carries the chain to each device pairwise.
        team.device("charge.nurse-0")
            .send_to_group(&group, Message::text(text.clone()))
            .await
            .unwrap();
        team.settle().await;
        let metrics = std::sync::Arc::clone(&team.relay.metrics);
        let stored = || metrics.message_bytes_stored_total.get();
        let before = stored();
        team.device("charge.nurse-0")
            .send_to_group(&group, Message::text(text.clone()))
            .await
            .unwrap();
        let one_message = stored() - before;
        // One padded 1 KiB message under a sender key, stored once for 19
        // devices: not nineteen copies.
        assert!(
            (1024..2 * 1024).contains(&one_message),
            "bytes stored for one message to 19 devices: {one_message}"
        );
        let events = team.settle_until(all_but_sender_have(group, 1)).await;
        for (name, events) in &events[1..] {
            assert_eq!(texts(events, &group).len(), 1, "{name}");
        }
    })
    .await;
}

#[tokio::test]
async fn two_admins_adding_at_once_both_get_their_member_in() {
    bounded(async {
        let mut team = Team::enroll(&[
            ("nurse.diaz", 2),
            ("dr.adams", 1),
            ("dr.baker", 1),
            ("dr.chen", 1),
        ])
        .await;
        let group = team
            .device("nurse.diaz-0")
            .create_group("4 West", &["dr.adams"])
            .await
            .unwrap();
        team.settle().await;
        // Both of the nurse's devices change epoch 1 before either hears of
        // the other's change: the two changes compete (spec/14), and the
        // device whose change lost makes it again on the winner.
        team.device("nurse.diaz-0")
            .add_to_group(&group, &["dr.baker"])
            .await
            .unwrap();
        team.device("nurse.diaz-1")
            .add_to_group(&group, &["dr.chen"])
            .await
            .unwrap();
        team.settle().await;
        for (name, device) in &mut team.devices {
            let roster = device.group(&group).unwrap().unwrap();
            let users: Vec<&str> = roster.members.iter().map(|m| m.user_id.as_str()).collect();
            assert_eq!(
                users,
                ["dr.adams", "dr.baker", "dr.chen", "nurse.diaz"],
                "{name}"
            );
            assert_eq!(roster.epoch, 3, "{name}");
        }
        team.device("dr.chen-0")
            .send_to_group(&group, Message::text("chen here"))
            .await
            .unwrap();
        let events = team.settle().await;
        for (name, events) in &events {
            if name != "dr.chen-0" {
                assert_eq!(texts(events, &group), ["chen here"], "{name}");
            }
        }
    })
    .await;
}
