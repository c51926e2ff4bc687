//! Groups (spec/14-groups.md): rosters changed by signed changes, sender
//! chains rotated on removal, and competing changes resolved alike everywhere.
#![allow(missing_docs, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::rng;
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use ward_core::limits::MAX_GROUP_HISTORY;
use ward_core::sender_key::RotationPolicy;
use ward_core::{
    Applied, DeviceKey, Error, GroupAction, GroupChange, GroupState, IdentityKeyPair, Member,
    SenderKeyDistribution,
};

const GROUP: [u8; 16] = [0x47; 16];
const NOW: u64 = 1_767_225_600;

/// One device of a team member.
struct Device {
    user: String,
    identity: IdentityKeyPair,
    group: Option<GroupState>,
}

impl Device {
    fn key(&self) -> DeviceKey {
        *self.identity.public().signing_key()
    }

    fn group(&mut self) -> &mut GroupState {
        self.group.as_mut().unwrap()
    }
}

/// A care team: device 0 created the group; every device applies every change.
struct Team {
    rng: ChaCha20Rng,
    devices: Vec<Device>,
}

impl Team {
    /// `users[i]` devices for user `i`; every one is in the group.
    fn new(seed: u64, users: &[usize]) -> Self {
        let mut rng = rng(seed);
        let mut devices = Vec::new();
        for (u, &count) in users.iter().enumerate() {
            for _ in 0..count {
                devices.push(Device {
                    user: format!("user{u}@clinic.example"),
                    identity: IdentityKeyPair::generate(&mut rng),
                    group: None,
                });
            }
        }
        let mut members = BTreeMap::new();
        for d in &devices {
            members
                .entry(d.user.clone())
                .or_insert_with(|| Member {
                    devices: BTreeSet::new(),
                    admin: false,
                })
                .devices
                .insert(d.key());
        }
        let (state, creation) = GroupState::create(
            &devices[0].identity,
            &devices[0].user,
            GROUP,
            "4 West",
            members,
            NOW,
        )
        .unwrap();
        let creation = GroupChange::decode(creation.to_bytes()).unwrap();
        devices[0].group = Some(state);
        for d in &mut devices[1..] {
            d.group = Some(GroupState::join(&d.identity, &d.user, &creation).unwrap());
        }
        Self { rng, devices }
    }

    /// Device `by` proposes `action` without anyone applying it.
    fn propose(&self, by: usize, action: GroupAction) -> GroupChange {
        let device = &self.devices[by];
        device
            .group
            .as_ref()
            .unwrap()
            .propose(&device.identity, action, NOW)
            .unwrap()
    }

    fn head(&self, i: usize) -> [u8; 32] {
        *self.devices[i].group.as_ref().unwrap().head()
    }

    fn index_of(&self, key: &DeviceKey) -> usize {
        self.devices.iter().position(|d| d.key() == *key).unwrap()
    }

    /// Device `by` proposes `action`; every member device applies it.
    fn change(&mut self, by: usize, action: GroupAction) -> GroupChange {
        let change = self.devices[by]
            .group
            .as_ref()
            .unwrap()
            .propose(&self.devices[by].identity, action, NOW)
            .unwrap();
        let wire = change.to_bytes().to_vec();
        for d in &mut self.devices {
            if let Some(group) = d.group.as_mut().filter(|g| g.is_member()) {
                group.apply(&GroupChange::decode(&wire).unwrap()).unwrap();
            }
        }
        change
    }

    /// Device `from` sends `text`; distributions go to whoever needs them.
    /// Returns the group message.
    fn send(&mut self, from: usize, text: &[u8]) -> Vec<u8> {
        let sender = self.devices[from].key();
        let out = self.devices[from]
            .group
            .as_mut()
            .unwrap()
            .encrypt(&mut self.rng, NOW, &RotationPolicy::default(), text)
            .unwrap();
        if let Some(distribution) = &out.distribution {
            let wire = distribution.encode();
            for key in &out.distribute_to {
                let i = self.index_of(key);
                let distribution = SenderKeyDistribution::decode(&wire).unwrap();
                self.devices[i]
                    .group()
                    .accept_distribution(&sender, &distribution)
                    .unwrap();
            }
        }
        out.message
    }

    fn heads(&self) -> BTreeSet<[u8; 32]> {
        self.devices
            .iter()
            .filter_map(|d| d.group.as_ref())
            .filter(|g| g.is_member())
            .map(|g| *g.head())
            .collect()
    }
}

#[test]
fn every_member_reads_a_message_encrypted_once() {
    let mut team = Team::new(1, &[2, 1, 3]);
    let message = team.send(0, b"bed 4 needs review");
    for i in 1..team.devices.len() {
        let opened = team.devices[i].group().decrypt(&message).unwrap();
        assert_eq!(opened.plaintext, b"bed 4 needs review");
        assert_eq!(opened.user_id, "user0@clinic.example");
        assert_eq!(opened.device, team.devices[0].key());
    }
    // The sender holds no received chain of its own.
    assert_eq!(
        team.devices[0].group().decrypt(&message).unwrap_err(),
        Error::MissingChain
    );
    assert_eq!(team.heads().len(), 1);
}

#[test]
fn a_removed_device_reads_nothing_sent_after_its_removal() {
    let mut team = Team::new(2, &[1, 2, 1]);
    let before = team.send(0, b"before");
    let removed = team.devices[2].key();
    // The removed device keeps its whole state, as a stolen phone would.
    let mut stolen = GroupState::from_bytes(&team.devices[2].group().to_bytes()).unwrap();
    team.change(
        1,
        GroupAction::Remove {
            user_id: "user1@clinic.example".into(),
            devices: [removed].into(),
        },
    );
    assert!(!team.devices[2].group().is_member());
    let after = team.send(0, b"after");
    assert_eq!(stolen.decrypt(&before).unwrap().plaintext, b"before");
    assert_eq!(stolen.decrypt(&after).unwrap_err(), Error::MissingChain);
    for i in [1usize, 3] {
        team.devices[i].group().decrypt(&before).unwrap();
        assert_eq!(
            team.devices[i].group().decrypt(&after).unwrap().plaintext,
            b"after"
        );
    }
}

#[test]
fn a_device_added_later_reads_nothing_sent_before() {
    let mut team = Team::new(3, &[1, 1]);
    let early = team.send(0, b"early");
    let identity = IdentityKeyPair::generate(&mut team.rng);
    let user = "user1@clinic.example".to_owned();
    team.change(
        1,
        GroupAction::Add {
            user_id: user.clone(),
            devices: [*identity.public().signing_key()].into(),
            admin: false,
        },
    );
    // The user's other device welcomes the new one over their pairwise session.
    let welcome = team.devices[1].group().welcome();
    let from = team.devices[1].key();
    let group = GroupState::from_welcome(&identity, &user, &from, &welcome).unwrap();
    assert_eq!(group.head(), team.devices[0].group().head());
    team.devices.push(Device {
        user,
        identity,
        group: Some(group),
    });
    let late = team.send(0, b"late");
    let newcomer = team.devices.len() - 1;
    assert_eq!(
        team.devices[newcomer].group().decrypt(&early).unwrap_err(),
        Error::DuplicateOrExpired
    );
    assert_eq!(
        team.devices[newcomer]
            .group()
            .decrypt(&late)
            .unwrap()
            .plaintext,
        b"late"
    );
    assert_eq!(
        team.devices[1].group().decrypt(&early).unwrap().plaintext,
        b"early"
    );
    assert_eq!(
        team.devices[1].group().decrypt(&late).unwrap().plaintext,
        b"late"
    );
}

#[test]
fn competing_changes_resolve_the_same_way_in_any_order() {
    let mut team = Team::new(4, &[1, 1, 1, 1]);
    let epoch = team.devices[0].group().epoch();
    let a = team.propose(0, GroupAction::Rename("A".into()));
    let b = team.propose(
        0,
        GroupAction::Remove {
            user_id: "user3@clinic.example".into(),
            devices: BTreeSet::new(),
        },
    );
    let (first, second) = (a.to_bytes().to_vec(), b.to_bytes().to_vec());
    // Device 1 sees a then b, device 2 b then a.
    let mut results = Vec::new();
    for (i, order) in [(1usize, [&first, &second]), (2, [&second, &first])] {
        let group = team.devices[i].group();
        let one = group
            .apply(&GroupChange::decode(order[0]).unwrap())
            .unwrap();
        let two = group.apply(&GroupChange::decode(order[1]).unwrap());
        results.push((one, two));
    }
    let heads: BTreeSet<[u8; 32]> = [1usize, 2]
        .iter()
        .map(|&i| *team.devices[i].group().head())
        .collect();
    assert_eq!(heads.len(), 1, "both devices reach the same head");
    assert_eq!(team.devices[1].group().epoch(), epoch + 1);
    // Exactly one device rolled back: the one that met the winner second.
    let rolled_back = results
        .iter()
        .filter(|(_, two)| matches!(two, Ok(Applied::Moved { superseded, .. }) if superseded.len() == 1))
        .count();
    let refused = results
        .iter()
        .filter(|(_, two)| two == &Err(Error::ChangeSuperseded))
        .count();
    assert_eq!((rolled_back, refused), (1, 1));
}

#[test]
fn changes_are_checked_against_the_roster() {
    let mut team = Team::new(5, &[1, 1]);
    let outsider = IdentityKeyPair::generate(&mut team.rng);
    let member = &team.devices[1];
    // Only admins add other users.
    assert_eq!(
        member
            .group
            .as_ref()
            .unwrap()
            .propose(
                &member.identity,
                GroupAction::Add {
                    user_id: "eve@clinic.example".into(),
                    devices: [*outsider.public().signing_key()].into(),
                    admin: true,
                },
                NOW,
            )
            .unwrap_err(),
        Error::NotAuthorized
    );
    // A device outside the group cannot sign a change of it.
    let forged_group = GroupState::from_bytes(&team.devices[1].group().to_bytes()).unwrap();
    assert_eq!(
        forged_group
            .propose(&outsider, GroupAction::Rename("x".into()), NOW)
            .unwrap_err(),
        Error::NotAuthorized
    );
    // A flipped bit breaks the signature.
    let change = team.propose(0, GroupAction::Rename("B".into()));
    let mut bytes = change.to_bytes().to_vec();
    let last = bytes.len() - 70;
    bytes[last] ^= 1;
    assert!(GroupChange::decode(&bytes).is_err());
    // The last admin cannot demote themselves while others remain.
    let group = team.devices[0].group.as_ref().unwrap();
    assert_eq!(
        group
            .propose(
                &team.devices[0].identity,
                GroupAction::SetAdmin {
                    user_id: "user0@clinic.example".into(),
                    admin: false,
                },
                NOW,
            )
            .unwrap_err(),
        Error::InvalidChange("the last admin cannot leave admins-less members")
    );
}

#[test]
fn a_change_from_the_future_waits_for_its_parent() {
    let mut team = Team::new(6, &[1, 1, 1]);
    let first = team.propose(0, GroupAction::Rename("one".into()));
    team.devices[0].group().apply(&first).unwrap();
    let second = team.propose(0, GroupAction::Rename("two".into()));
    let late = team.devices[1].group();
    assert_eq!(late.apply(&second), Err(Error::UnknownParent));
    late.apply(&first).unwrap();
    late.apply(&second).unwrap();
    assert_eq!(late.apply(&second), Ok(Applied::AlreadyApplied));
    assert_eq!(late.name(), "two");
    team.devices[0].group().apply(&second).unwrap();
    assert_eq!(team.head(0), team.head(1));
}

#[test]
fn a_competing_change_older_than_the_history_is_refused() {
    let mut team = Team::new(11, &[1, 1]);
    let stale = team.propose(0, GroupAction::Rename("stale".into()));
    let mut applied = Vec::new();
    for n in 0..=MAX_GROUP_HISTORY {
        applied.push(team.change(0, GroupAction::Rename(format!("name {n}"))));
    }
    let before = team.devices[1].group().to_bytes();
    // Whichever ranks lower, the fork is older than the 16 kept rosters.
    assert_eq!(
        team.devices[1].group().apply(&stale),
        Err(Error::ChangeSuperseded)
    );
    assert_eq!(team.devices[1].group().to_bytes(), before);
    // The newest ones are still known.
    let last = applied.last().unwrap();
    assert_eq!(
        team.devices[1].group().apply(last),
        Ok(Applied::AlreadyApplied)
    );
}

#[test]
fn a_failed_send_changes_nothing() {
    let mut team = Team::new(12, &[1, 1]);
    let before = team.devices[0].group().to_bytes();
    let too_large = vec![0u8; ward_core::limits::MAX_PLAINTEXT_LEN + 1];
    let result =
        team.devices[0]
            .group()
            .encrypt(&mut team.rng, NOW, &RotationPolicy::default(), &too_large);
    assert_eq!(result.unwrap_err(), Error::MessageTooLarge);
    assert_eq!(team.devices[0].group().to_bytes(), before);
}

#[test]
fn a_lost_distribution_is_asked_for_again() {
    let mut team = Team::new(7, &[1, 1]);
    let out = team.devices[0]
        .group()
        .encrypt(&mut team.rng, NOW, &RotationPolicy::default(), b"lost")
        .unwrap();
    // The distribution never arrives; the message does.
    assert_eq!(
        team.devices[1].group().decrypt(&out.message).unwrap_err(),
        Error::MissingChain
    );
    let asker = team.devices[1].key();
    let again = team.devices[0].group().distribution_for(&asker).unwrap();
    let sender = team.devices[0].key();
    team.devices[1]
        .group()
        .accept_distribution(&sender, &again)
        .unwrap();
    // It reads from the sender's next message on: the sender sends the
    // lost one again from its outbox.
    let resent = team.send(0, b"lost");
    assert_eq!(
        team.devices[1].group().decrypt(&resent).unwrap().plaintext,
        b"lost"
    );
}

#[test]
fn groups_survive_serialization() {
    let mut team = Team::new(8, &[2, 1]);
    let message = team.send(0, b"x");
    team.change(0, GroupAction::Rename("renamed".into()));
    for d in &mut team.devices {
        let bytes = d.group().to_bytes();
        let restored = GroupState::from_bytes(&bytes).unwrap();
        assert_eq!(restored.to_bytes(), bytes);
        d.group = Some(restored);
    }
    assert_eq!(
        team.devices[2].group().decrypt(&message).unwrap().plaintext,
        b"x"
    );
    assert_eq!(team.devices[2].group().name(), "renamed");
    let shown = format!("{:?}", team.devices[0].group());
    assert!(!shown.contains("renamed"), "{shown}");
    let wire = team.send(0, b"K+ 6.1");
    let opened = team.devices[1].group().decrypt(&wire).unwrap();
    let shown = format!("{opened:?}");
    assert!(
        !shown.contains("75, 43") && !shown.contains("K+"),
        "{shown}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random interleavings of messages, removals, additions of devices and
    /// message loss: every current member reads each message sent while it
    /// was a member at most once and (when not lost) exactly once; a removed
    /// device reads nothing sent after its removal.
    #[test]
    fn random_schedules_keep_every_member_reading_exactly_once(
        ops in proptest::collection::vec((0u8..10, 0usize..6, any::<bool>()), 1..30),
    ) {
        let mut team = Team::new(9, &[2, 2, 2]);
        let mut removed: BTreeSet<usize> = BTreeSet::new();
        for (n, (op, who, lose)) in ops.into_iter().enumerate() {
            let live: Vec<usize> = (0..team.devices.len()).filter(|i| !removed.contains(i)).collect();
            let who = live[who % live.len()];
            if op == 0 && live.len() > 3 && who != 0 {
                // An admin removes one device of another user.
                let key = team.devices[who].key();
                let user = team.devices[who].user.clone();
                team.change(0, GroupAction::Remove { user_id: user, devices: [key].into() });
                removed.insert(who);
                continue;
            }
            let text = format!("message {n}").into_bytes();
            let message = team.send(who, &text);
            for i in 0..team.devices.len() {
                if i == who {
                    continue;
                }
                let result = team.devices[i].group().decrypt(&message);
                if removed.contains(&i) {
                    prop_assert!(result.is_err(), "removed device {} read message {}", i, n);
                    continue;
                }
                if lose {
                    continue;
                }
                let opened = result.unwrap();
                prop_assert_eq!(&opened.plaintext, &text);
                prop_assert_eq!(
                    team.devices[i].group().decrypt(&message).unwrap_err(),
                    Error::DuplicateOrExpired
                );
            }
        }
        prop_assert_eq!(team.heads().len(), 1);
    }

    /// Several members propose changes to the same epoch; every device gets
    /// all of them in its own random order, retrying what waits for a parent:
    /// all devices end at one head.
    #[test]
    fn competing_changes_converge(
        orders in proptest::collection::vec(Just(vec![0usize, 1, 2, 3]).prop_shuffle(), 4),
    ) {
        let mut team = Team::new(10, &[1, 1, 1, 1]);
        let admin = &team.devices[0];
        let group = admin.group.as_ref().unwrap();
        let changes: Vec<Vec<u8>> = vec![
            group.propose(&admin.identity, GroupAction::Rename("north".into()), NOW).unwrap(),
            group.propose(&admin.identity, GroupAction::Rename("south".into()), NOW).unwrap(),
            team.devices[2].group.as_ref().unwrap().propose(
                &team.devices[2].identity,
                GroupAction::Remove { user_id: "user2@clinic.example".into(), devices: BTreeSet::new() },
                NOW,
            ).unwrap(),
            group.propose(&admin.identity, GroupAction::SetAdmin { user_id: "user1@clinic.example".into(), admin: true }, NOW).unwrap(),
        ].into_iter().map(|c| c.to_bytes().to_vec()).collect();
        for (d, order) in orders.iter().enumerate() {
            let group = team.devices[d].group();
            for &c in order {
                match group.apply(&GroupChange::decode(&changes[c]).unwrap()) {
                    Ok(_) | Err(Error::ChangeSuperseded) => {}
                    Err(e) => prop_assert!(false, "{:?}", e),
                }
            }
        }
        let heads: BTreeSet<[u8; 32]> = team.devices.iter().map(|d| *d.group.as_ref().unwrap().head()).collect();
        prop_assert_eq!(heads.len(), 1);
    }
}
