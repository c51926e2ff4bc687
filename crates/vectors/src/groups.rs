//! spec/vectors/groups.json: a care team of three devices created, a
//! message to all, a member removed, the sender's chain rotated and handed
//! only to who remains, and two competing changes to one epoch with the
//! rank that decides between them (spec/14-groups.md).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use ward_core::sender_key::RotationPolicy;
use ward_core::{
    GroupAction, GroupChange, GroupState, IdentityKeyPair, Member, SenderKeyDistribution,
};

use crate::h;
use crate::rng::RecordingRng;

const GROUP: [u8; 16] = *b"rapid response 1";
const NOW: u64 = 1_767_225_600;
const USERS: [&str; 3] = [
    "alice@clinic.example",
    "bob@clinic.example",
    "carol@clinic.example",
];

fn change_json(label: &str, change: &GroupChange, head_after: &[u8; 32]) -> Value {
    json!({"event": "change", "label": label, "signed": h(change.to_bytes()), "head_after": h(head_after)})
}

/// The group vectors.
pub(crate) fn groups() -> Value {
    let mut rng = RecordingRng::new(0x6772);
    let identities: Vec<IdentityKeyPair> = (0..3)
        .map(|_| IdentityKeyPair::generate(&mut rng))
        .collect();
    rng.take_draws();
    let members: BTreeMap<String, Member> = USERS
        .iter()
        .zip(&identities)
        .map(|(user, identity)| {
            let member = Member {
                devices: BTreeSet::from([*identity.public().signing_key()]),
                admin: *user == USERS[0],
            };
            ((*user).to_owned(), member)
        })
        .collect();
    let (alice, creation) = GroupState::create(
        &identities[0],
        USERS[0],
        GROUP,
        "Rapid response",
        members,
        NOW,
    )
    .expect("the group is created");
    let mut groups = vec![alice];
    for (i, identity) in identities.iter().enumerate().skip(1) {
        groups.push(GroupState::join(identity, USERS[i], &creation).expect("members join"));
    }
    let mut events = vec![change_json("create", &creation, groups[0].head())];

    let send = |groups: &mut Vec<GroupState>, rng: &mut RecordingRng, label: &str, text: &str| {
        let out = groups[0]
            .encrypt(rng, NOW, &RotationPolicy::default(), text.as_bytes())
            .expect("alice sends");
        let distribution = out.distribution.as_ref().map(|d| d.encode());
        if let Some(bytes) = &distribution {
            for key in &out.distribute_to {
                let i = identities
                    .iter()
                    .position(|id| id.public().signing_key() == key)
                    .unwrap();
                let d = SenderKeyDistribution::decode(bytes).unwrap();
                groups[i]
                    .accept_distribution(identities[0].public().signing_key(), &d)
                    .expect("members take alice's chain");
            }
        }
        json!({
            "event": "send", "by": "alice", "label": label, "plaintext": h(text),
            "random": rng.take_draws(),
            "recipients": out.recipients.iter().map(h).collect::<Vec<_>>(),
            "distribution": distribution.map(|d| h(&*d)),
            "distribute_to": out.distribute_to.iter().map(h).collect::<Vec<_>>(),
            "message": h(&out.message),
        })
    };
    let receive = |group: &mut GroupState, by: &str, label: &str, message: &str| {
        let bytes = hex::decode(message).unwrap();
        let expect = match group.decrypt(&bytes) {
            Ok(opened) => {
                json!({"plaintext": h(&opened.plaintext), "from_user": opened.user_id, "from_device": h(opened.device)})
            }
            Err(e) => json!({"error": format!("{e:?}")}),
        };
        json!({"event": "receive", "by": by, "message": label, "expect": expect})
    };

    let m0 = send(&mut groups, &mut rng, "m0", "Code blue, bed 12");
    let m0_bytes = m0["message"].as_str().unwrap().to_owned();
    events.push(m0);
    for (i, by) in [(1usize, "bob"), (2, "carol")] {
        events.push(receive(&mut groups[i], by, "m0", &m0_bytes));
    }

    let removal = groups[0]
        .propose(
            &identities[0],
            GroupAction::Remove {
                user_id: USERS[2].into(),
                devices: BTreeSet::new(),
            },
            NOW + 60,
        )
        .expect("alice removes carol");
    for group in &mut groups {
        group.apply(&removal).expect("everyone applies the removal");
    }
    events.push(change_json("remove carol", &removal, groups[0].head()));

    let m1 = send(&mut groups, &mut rng, "m1", "Stand down");
    let m1_bytes = m1["message"].as_str().unwrap().to_owned();
    events.push(m1);
    for (i, by) in [(1usize, "bob"), (2, "carol")] {
        events.push(receive(&mut groups[i], by, "m1", &m1_bytes));
    }

    let a = groups[0]
        .propose(
            &identities[0],
            GroupAction::Rename("Rapid response, day".into()),
            NOW + 120,
        )
        .expect("a rename");
    let b = groups[0]
        .propose(
            &identities[0],
            GroupAction::Rename("Rapid response, night".into()),
            NOW + 120,
        )
        .expect("another rename");
    let rank = |c: &GroupChange| h(c.rank());
    let (winner, loser) = if rank(&a) < rank(&b) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    groups[1].apply(loser).expect("bob applies the loser first");
    let rolled_back = groups[1].apply(winner).expect("then the winner");
    assert!(
        matches!(rolled_back, ward_core::Applied::Moved { ref superseded, .. } if superseded.len() == 1)
    );
    groups[0].apply(winner).expect("alice applies the winner");
    assert_eq!(
        groups[0].apply(loser),
        Err(ward_core::Error::ChangeSuperseded)
    );
    assert_eq!(groups[0].head(), groups[1].head());

    json!({
        "description": "Groups (spec/14-groups.md): a group of three created, a message to all, carol removed, alice's chain rotated and handed to bob only, two competing renames of one epoch",
        "group_id": h(GROUP),
        "devices": USERS.iter().zip(&identities).map(|(user, identity)| json!({
            "user_id": user,
            "identity_secret": h(*identity.to_secret_bytes()),
            "signing_key": h(identity.public().signing_key()),
        })).collect::<Vec<_>>(),
        "events": events,
        "competing": {
            "a": h(a.to_bytes()),
            "b": h(b.to_bytes()),
            "rank_a": rank(&a),
            "rank_b": rank(&b),
            "winner": if std::ptr::eq(winner, &a) { "a" } else { "b" },
            "head_after": h(groups[0].head()),
            "name_after": groups[0].name(),
        },
    })
}
