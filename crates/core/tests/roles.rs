//! Role schedules signed by an administrator (spec/15-roles.md).
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::rng;
use proptest::prelude::*;
use ward_core::{AdminKey, Assignment, DecodeError, Error, Interval, RoleSchedule};

const HOUR: u64 = 3600;
const DAY0: u64 = 1_767_225_600;

fn shift(user: &str, from_hour: u64, to_hour: u64) -> Assignment {
    Assignment {
        user_id: user.into(),
        starts_at: DAY0 + from_hour * HOUR,
        ends_at: DAY0 + to_hour * HOUR,
    }
}

/// Day shift, a gap from 19:00 to 20:00, night shift overlapping the next
/// morning's by an hour.
fn cardiology() -> RoleSchedule {
    RoleSchedule {
        role_id: "cardiology-oncall".into(),
        display_name: "On-call cardiology".into(),
        department: "Cardiology".into(),
        version: 7,
        issued_at: DAY0 - HOUR,
        assignments: vec![
            shift("dr.adams@clinic.example", 7, 19),
            shift("dr.baker@clinic.example", 20, 32),
            shift("dr.chen@clinic.example", 31, 43),
        ],
    }
}

#[test]
fn a_signed_schedule_verifies_under_the_admin_key_only() {
    let admin = AdminKey::generate(&mut rng(1));
    let relay = AdminKey::generate(&mut rng(2));
    let signed = admin.sign(&cardiology()).unwrap();
    let schedule =
        RoleSchedule::decode_verified(&signed, &[relay.public_key(), admin.public_key()]).unwrap();
    assert_eq!(schedule, cardiology());
    // A relay that signs its own schedule with a key of its choosing is refused.
    let mut forged = cardiology();
    forged.assignments[0].user_id = "mallory@clinic.example".into();
    let forged = relay.sign(&forged).unwrap();
    assert_eq!(
        RoleSchedule::decode_verified(&forged, &[admin.public_key()]).unwrap_err(),
        Error::BadSignature
    );
    // So is any changed byte of a genuine one.
    for i in 1..signed.len() {
        let mut bad = signed.clone();
        bad[i] ^= 0x01;
        assert!(
            RoleSchedule::decode_verified(&bad, &[admin.public_key()]).is_err(),
            "byte {i}"
        );
    }
    // A small-order key in the pinned list verifies nothing.
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    assert_eq!(
        RoleSchedule::decode_verified(&signed, &[identity_point]).unwrap_err(),
        Error::BadSignature
    );
}

#[test]
fn a_hold_ends_where_the_next_holder_takes_over() {
    let mut schedule = cardiology();
    // Adams is back to back on day 2: 07:00-19:00 then 19:00-20:00.
    schedule
        .assignments
        .push(shift("dr.adams@clinic.example", 55, 67));
    schedule
        .assignments
        .push(shift("dr.adams@clinic.example", 67, 68));
    schedule
        .assignments
        .push(shift("dr.evans@clinic.example", 68, 80));
    let (adams, baker, chen) = (
        "dr.adams@clinic.example",
        "dr.baker@clinic.example",
        "dr.chen@clinic.example",
    );
    // Adams's day ended at 19:00: nobody holds it until 20:00, when Baker starts.
    assert_eq!(schedule.ended_hold(adams, 0, DAY0 + 19 * HOUR - 1), None);
    assert_eq!(
        schedule.ended_hold(adams, 0, DAY0 + 19 * HOUR),
        Some(DAY0 + 19 * HOUR)
    );
    assert_eq!(schedule.successors(adams, DAY0 + 19 * HOUR), [baker]);
    // Baker's night overlaps Chen's morning: Chen is there at the end.
    assert_eq!(
        schedule.ended_hold(baker, DAY0, DAY0 + 40 * HOUR),
        Some(DAY0 + 32 * HOUR)
    );
    assert_eq!(schedule.successors(baker, DAY0 + 32 * HOUR), [chen]);
    // Handled already: nothing ended after that.
    assert_eq!(
        schedule.ended_hold(baker, DAY0 + 32 * HOUR, DAY0 + 40 * HOUR),
        None
    );
    // Back to back: 67:00 is no end of Adams's hold, 68:00 is.
    assert_eq!(
        schedule.ended_hold(adams, DAY0 + 19 * HOUR, DAY0 + 67 * HOUR),
        None
    );
    assert_eq!(
        schedule.ended_hold(adams, DAY0 + 19 * HOUR, DAY0 + 70 * HOUR),
        Some(DAY0 + 68 * HOUR)
    );
    assert_eq!(
        schedule.successors(adams, DAY0 + 68 * HOUR),
        ["dr.evans@clinic.example"]
    );
    assert!(schedule.hold_ends_at(adams, DAY0 + 68 * HOUR));
    assert!(!schedule.hold_ends_at(adams, DAY0 + 67 * HOUR + 1));
    assert!(schedule.holds_from(chen, DAY0 + 32 * HOUR));
    assert!(!schedule.holds_from(chen, DAY0 + 43 * HOUR));
    // The end of the schedule: nobody to hand to.
    assert!(
        schedule
            .successors("dr.evans@clinic.example", DAY0 + 80 * HOUR)
            .is_empty()
    );
}

#[test]
fn holders_follow_the_schedule() {
    let schedule = cardiology();
    assert!(schedule.holders_at(DAY0 + 6 * HOUR).is_empty());
    assert_eq!(
        schedule.holders_at(DAY0 + 7 * HOUR),
        ["dr.adams@clinic.example"]
    );
    assert!(
        schedule.holders_at(DAY0 + 19 * HOUR).is_empty(),
        "ends are exclusive"
    );
    assert_eq!(
        schedule.holders_at(DAY0 + 31 * HOUR + 1),
        ["dr.baker@clinic.example", "dr.chen@clinic.example"]
    );
    assert_eq!(
        schedule.gaps(DAY0, DAY0 + 48 * HOUR),
        [
            Interval {
                from: DAY0,
                to: DAY0 + 7 * HOUR
            },
            Interval {
                from: DAY0 + 19 * HOUR,
                to: DAY0 + 20 * HOUR
            },
            Interval {
                from: DAY0 + 43 * HOUR,
                to: DAY0 + 48 * HOUR
            },
        ]
    );
    assert_eq!(
        schedule.overlaps(DAY0, DAY0 + 48 * HOUR),
        [Interval {
            from: DAY0 + 31 * HOUR,
            to: DAY0 + 32 * HOUR
        }]
    );
}

#[test]
fn schedules_that_break_the_rules_are_not_signed() {
    let admin = AdminKey::generate(&mut rng(3));
    let mut bad_id = cardiology();
    bad_id.role_id = "Cardiology On-Call".into();
    assert_eq!(
        admin.sign(&bad_id).unwrap_err(),
        Error::InvalidSchedule("role_id")
    );
    let mut backwards = cardiology();
    backwards.assignments[1].ends_at = backwards.assignments[1].starts_at;
    assert_eq!(
        admin.sign(&backwards).unwrap_err(),
        Error::InvalidSchedule("an assignment ends before it starts")
    );
    let mut unsorted = cardiology();
    unsorted.assignments.swap(0, 2);
    assert_eq!(
        admin.sign(&unsorted).unwrap_err(),
        Error::InvalidSchedule("assignments not strictly ascending")
    );
}

#[test]
fn admin_keys_survive_their_file_and_stay_out_of_debug() {
    let admin = AdminKey::generate(&mut rng(4));
    let bytes = admin.to_secret_bytes();
    let restored = AdminKey::from_secret_bytes(&*bytes).unwrap();
    assert_eq!(restored.public_key(), admin.public_key());
    assert_eq!(
        AdminKey::from_secret_bytes(&bytes[..32]).unwrap_err(),
        Error::Decode(DecodeError::WrongLength {
            field: "admin_key",
            expected: 32,
            found: 31
        })
    );
    assert_eq!(format!("{admin:?}"), "AdminKey { .. }");
}

proptest! {
    /// Gaps and overlaps agree with counting holders second by second.
    #[test]
    fn gaps_and_overlaps_match_a_brute_force_count(
        raw in proptest::collection::vec((0u64..40, 1u64..15, 0u8..3), 0..8),
    ) {
        let mut assignments: Vec<Assignment> = raw
            .iter()
            .map(|&(start, len, user)| Assignment {
                user_id: format!("u{user}"),
                starts_at: start,
                ends_at: start + len,
            })
            .collect();
        assignments.sort_by(|a, b| (a.starts_at, &a.user_id).cmp(&(b.starts_at, &b.user_id)));
        assignments.dedup_by(|a, b| (a.starts_at, &a.user_id) == (b.starts_at, &b.user_id));
        let schedule = RoleSchedule {
            role_id: "r".into(),
            display_name: String::new(),
            department: String::new(),
            version: 1,
            issued_at: 0,
            assignments,
        };
        let (from, to) = (5u64, 50u64);
        let expand = |intervals: Vec<Interval>| -> Vec<u64> {
            intervals.iter().flat_map(|i| i.from..i.to).collect()
        };
        let count = |t: u64| schedule.assignments.iter().filter(|a| a.starts_at <= t && t < a.ends_at).count();
        prop_assert_eq!(expand(schedule.gaps(from, to)), (from..to).filter(|&t| count(t) == 0).collect::<Vec<_>>());
        prop_assert_eq!(expand(schedule.overlaps(from, to)), (from..to).filter(|&t| count(t) >= 2).collect::<Vec<_>>());
        for t in from..to {
            prop_assert!(schedule.holders_at(t).len() <= count(t));
            prop_assert_eq!(schedule.holders_at(t).is_empty(), count(t) == 0);
        }
    }
}
