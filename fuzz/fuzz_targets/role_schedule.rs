//! `RoleSchedule::decode_verified` on arbitrary bytes (spec/15).
//!
//! Schedules reach devices from the relay, which the signature exists to
//! distrust: nothing may panic, only a schedule the fixture administrator
//! signed may verify, and what verifies follows the schedule rules and
//! signs again to the same bytes (the encoding is canonical and Ed25519
//! deterministic). Holders, gaps and overlaps of what verifies must not
//! panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_core::RoleSchedule;

fuzz_target!(|data: &[u8]| {
    let admin = ward_fuzz::admin_key();
    let Ok(schedule) = RoleSchedule::decode_verified(data, &[admin.public_key()]) else {
        return;
    };
    schedule
        .check()
        .expect("a verified schedule follows the rules");
    let resigned = admin.sign(&schedule).expect("a verified schedule signs");
    let again = RoleSchedule::decode_verified(&resigned, &[admin.public_key()]).expect("verifies");
    assert_eq!(again, schedule, "sign/verify is not a round trip");
    let first = schedule.assignments.first().map_or(0, |a| a.starts_at);
    let _ = schedule.holders_at(first);
    let _ = schedule.gaps(first, first.saturating_add(86_400));
    let _ = schedule.overlaps(first, first.saturating_add(86_400));
});
