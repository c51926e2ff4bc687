//! spec/vectors/roles.json: an administrator key, a signed schedule with a
//! gap and an overlap, its holders at chosen times, and schedules a client
//! refuses (spec/15-roles.md).

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::{Value, json};
use ward_core::{AdminKey, Assignment, RoleSchedule};

use crate::h;

const HOUR: u64 = 3600;
const DAY0: u64 = 1_767_225_600;

fn shift(user: &str, from_hour: u64, to_hour: u64) -> Assignment {
    Assignment {
        user_id: user.into(),
        starts_at: DAY0 + from_hour * HOUR,
        ends_at: DAY0 + to_hour * HOUR,
    }
}

fn intervals(list: Vec<ward_core::Interval>) -> Vec<Value> {
    list.iter()
        .map(|i| json!({"from": i.from, "to": i.to}))
        .collect()
}

/// The role vectors.
pub(crate) fn roles() -> Value {
    let mut rng = ChaCha20Rng::seed_from_u64(0x726f6c65);
    let admin = AdminKey::generate(&mut rng);
    let relay = AdminKey::generate(&mut rng);
    let schedule = RoleSchedule {
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
    };
    let signed = admin.sign(&schedule).expect("signs");
    let verified = RoleSchedule::decode_verified(&signed, &[admin.public_key()]).expect("verifies");
    let times = [6, 7, 19, 20, 31, 32, 43].map(|hour| DAY0 + hour * HOUR);
    let holders: Vec<Value> = times
        .iter()
        .map(|&t| json!({"at": t, "holders": verified.holders_at(t)}))
        .collect();
    let window = (DAY0, DAY0 + 48 * HOUR);

    let mut forged = schedule.clone();
    forged.assignments[1].user_id = "mallory@clinic.example".into();
    let forged = relay.sign(&forged).expect("signs");
    let mut flipped = signed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x80;
    let mut refused = Vec::new();
    for (name, bytes) in [
        ("signed by a key that is not pinned (the relay's)", forged),
        ("one bit of the signature flipped", flipped),
        ("the format byte only", vec![0x0e]),
    ] {
        let error =
            RoleSchedule::decode_verified(&bytes, &[admin.public_key()]).expect_err("refused");
        refused.push(json!({"name": name, "bytes": h(&bytes), "error": format!("{error:?}")}));
    }

    json!({
        "description": "Role schedules (spec/15-roles.md): an administrator key, a signed schedule with a gap and an overlap, holders at chosen times, gaps and overlaps of two days, refused schedules",
        "admin_key_secret": h(*admin.to_secret_bytes()),
        "admin_public_key": h(admin.public_key()),
        "schedule": {
            "role_id": schedule.role_id,
            "display_name": schedule.display_name,
            "department": schedule.department,
            "version": schedule.version,
            "issued_at": schedule.issued_at,
            "assignments": schedule.assignments.iter().map(|a| json!({
                "user_id": a.user_id, "starts_at": a.starts_at, "ends_at": a.ends_at,
            })).collect::<Vec<_>>(),
        },
        "signed": h(&signed),
        "holders": holders,
        "window": {"from": window.0, "to": window.1},
        "gaps": intervals(verified.gaps(window.0, window.1)),
        "overlaps": intervals(verified.overlaps(window.0, window.1)),
        "refused": refused,
    })
}
