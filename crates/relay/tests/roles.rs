//! Role schedules on the relay (spec/15; spec/08, "Role schedules"): the
//! administrator key and signing apart from the relay, publishing checked
//! under `role_admin_keys`, versions only forward, and the schedule served
//! to devices byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Device, TestRelay, now_ms};
use ward_core::RoleSchedule;
use ward_proto::relay_v1::{self as wire, ErrorCode, request::Body as Req, response::Body as Resp};
use ward_relay::storage::Storage as _;

fn run(config: &Path, args: &[&str]) -> Output {
    Command::new(common::BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

fn ok(config: &Path, args: &[&str]) -> String {
    let out = run(config, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(config: &Path, args: &[&str]) -> String {
    let out = run(config, args);
    assert_eq!(out.status.code(), Some(1), "{args:?} did not fail: {out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

/// `admin role sign --key KEY --schedule SCHEDULE --out OUT`.
fn sign_args<'a>(key: &'a Path, schedule: &'a Path, out: &'a Path) -> [&'a str; 9] {
    let text = |p: &'a Path| p.to_str().unwrap();
    [
        "admin",
        "role",
        "sign",
        "--key",
        text(key),
        "--schedule",
        text(schedule),
        "--out",
        text(out),
    ]
}

fn schedule_toml(version: u64, now_secs: u64) -> String {
    format!(
        "role_id = \"cardiology-oncall\"\n\
         display_name = \"On-call cardiology\"\n\
         department = \"Cardiology\"\n\
         version = {version}\n\
         [[assignment]]\n\
         user = \"dr.baker@clinic.example\"\n\
         from = {night}\n\
         to = {night_end}\n\
         [[assignment]]\n\
         user = \"dr.adams@clinic.example\"\n\
         from = {day}\n\
         to = {day_end}\n",
        day = now_secs - 3600,
        day_end = now_secs + 3600,
        night = now_secs + 7200,
        night_end = now_secs + 14_400,
    )
}

#[tokio::test]
async fn an_administrator_signs_and_publishes_and_devices_get_the_signed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("admin.key");
    std::fs::write(dir.path().join("none.toml"), "").unwrap();
    let public = ok(
        &dir.path().join("none.toml"),
        &["admin", "role", "keygen", "--out", key.to_str().unwrap()],
    );
    let public = public.trim().to_owned();
    assert_eq!(public.len(), 64);
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let other_key = dir.path().join("other.key");
    ok(
        &dir.path().join("none.toml"),
        &[
            "admin",
            "role",
            "keygen",
            "--out",
            other_key.to_str().unwrap(),
        ],
    );

    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nrole_admin_keys = [\"{public}\"]\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let now_secs = now_ms() / 1000;
    let schedule = dir.path().join("cardiology.toml");
    std::fs::write(&schedule, schedule_toml(1, now_secs)).unwrap();
    let signed = dir.path().join("cardiology.signed");
    let out = ok(&config, &sign_args(&key, &schedule, &signed));
    assert_eq!(
        out.trim(),
        "role cardiology-oncall version 1: 2 assignments"
    );
    let again = fails(&config, &sign_args(&key, &schedule, &signed));
    assert!(again.contains("exists already"), "{again}");

    // Signed with a key the relay does not list: refused, nothing stored.
    let forged = dir.path().join("forged.signed");
    ok(&config, &sign_args(&other_key, &schedule, &forged));
    let refused = fails(
        &config,
        &["admin", "role", "publish", forged.to_str().unwrap()],
    );
    assert!(
        refused.contains("signature verification failed"),
        "{refused}"
    );
    assert_eq!(
        ok(&config, &["admin", "role", "list"]).trim(),
        "no role schedules"
    );

    let out = ok(
        &config,
        &["admin", "role", "publish", signed.to_str().unwrap()],
    );
    assert_eq!(
        out.trim(),
        "role cardiology-oncall version 1: 2 assignments"
    );
    let twice = fails(
        &config,
        &["admin", "role", "publish", signed.to_str().unwrap()],
    );
    assert!(
        twice.contains("role schedule version already exists"),
        "{twice}"
    );
    let shown = ok(&config, &["admin", "role", "show", "cardiology-oncall"]);
    assert!(
        shown.contains("held now by: dr.adams@clinic.example"),
        "{shown}"
    );
    assert!(
        shown.contains("2 gaps and 0 overlaps in the next 7 days"),
        "{shown}"
    );
    assert_eq!(
        ok(&config, &["admin", "role", "list"]).trim(),
        "cardiology-oncall version 1"
    );

    // A device reads the schedule as it was signed, and verifies it itself.
    let relay = TestRelay::start(&data).await;
    relay.add_user("dr.chen@clinic.example");
    let device = Device::enroll(&relay, "dr.chen@clinic.example").await;
    let answer = device
        .connection
        .request(Req::GetRoleSchedule(wire::GetRoleSchedule {
            role_id: "cardiology-oncall".into(),
        }))
        .await
        .unwrap();
    let Resp::RoleSchedule(served) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(served.signed, std::fs::read(&signed).unwrap());
    let admin_key: [u8; 32] = hex::decode(&public).unwrap().try_into().unwrap();
    let verified = RoleSchedule::decode_verified(&served.signed, &[admin_key]).unwrap();
    assert_eq!(verified.holders_at(now_secs), ["dr.adams@clinic.example"]);
    let missing = device
        .connection
        .request(Req::GetRoleSchedule(wire::GetRoleSchedule {
            role_id: "neurology".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::NotFound));
    let audit = relay
        .storage
        .export_audit(&relay.audit_key.verifying_key())
        .unwrap();
    assert!(
        audit.entries.iter().any(|e| e
            .detail
            .as_ref()
            .is_some_and(|d| d.as_str() == "role=cardiology-oncall v=1")),
        "publishing is audited"
    );
}

const ROTA: &str = "BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Rota//EN\r
BEGIN:VEVENT\r
UID:shift-1\r
SUMMARY:Adams\r
DTSTART;TZID=America/New_York:20261207T070000\r
DTEND;TZID=America/New_York:20261207T190000\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:shift-2\r
ATTENDEE;CN=Dr Baker:mailto:dr.baker@clinic.example\r
DTSTART:20261208T000000Z\r
DTEND:20261208T120000Z\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:shift-3\r
SUMMARY:Chen\r
DTSTART;VALUE=DATE:20261209\r
DTEND;VALUE=DATE:20261210\r
END:VEVENT\r
END:VCALENDAR\r
";

fn utc(text: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp() as u64
}

#[test]
fn an_ics_rota_becomes_a_schedule_and_nothing_in_it_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("none.toml");
    std::fs::write(&none, "").unwrap();
    let ics = dir.path().join("rota.ics");
    std::fs::write(&ics, ROTA).unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let import = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "admin",
            "role",
            "import",
            "--ics",
            ics.to_str().unwrap(),
            "--role",
            "cardiology-oncall",
            "--display-name",
            "On-call cardiology",
            "--version",
            "3",
        ];
        args.extend_from_slice(extra);
        args.push("--out");
        let out = path(out);
        let mut owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        owned.push(out);
        run(&none, &owned.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Chen's shift maps to nobody: the import fails, naming the event.
    let out = import(
        "partial.toml",
        &[
            "--map",
            "Adams=dr.adams@clinic.example",
            "--timezone",
            "America/New_York",
        ],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("event shift-3: no ATTENDEE, and SUMMARY \"Chen\" is not in --map"),
        "{stderr}"
    );
    assert!(!dir.path().join("partial.toml").exists());
    // An all-day event without a time zone: refused, not guessed.
    let out = import(
        "nozone.toml",
        &[
            "--map",
            "Adams=dr.adams@clinic.example",
            "--map",
            "Chen=dr.chen@clinic.example",
        ],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("event shift-3: DTSTART has no time zone: give --timezone"),
        "{stderr}"
    );

    let out = import(
        "schedule.toml",
        &[
            "--map",
            "Adams=dr.adams@clinic.example",
            "--map",
            "Chen=dr.chen@clinic.example",
            "--timezone",
            "America/New_York",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("3 assignments written")
    );
    let schedule = ward_relay::roles::read_schedule(&dir.path().join("schedule.toml"), 0).unwrap();
    let got: Vec<(&str, u64, u64)> = schedule
        .assignments
        .iter()
        .map(|a| (a.user_id.as_str(), a.starts_at, a.ends_at))
        .collect();
    assert_eq!(
        got,
        [
            (
                "dr.adams@clinic.example",
                utc("2026-12-07T12:00:00Z"),
                utc("2026-12-08T00:00:00Z")
            ),
            (
                "dr.baker@clinic.example",
                utc("2026-12-08T00:00:00Z"),
                utc("2026-12-08T12:00:00Z")
            ),
            (
                "dr.chen@clinic.example",
                utc("2026-12-09T05:00:00Z"),
                utc("2026-12-10T05:00:00Z")
            ),
        ]
    );
    // The gap between Dr Baker and Dr Chen is shown, not hidden.
    assert_eq!(
        schedule.gaps(utc("2026-12-07T12:00:00Z"), utc("2026-12-10T05:00:00Z")),
        [ward_core::Interval {
            from: utc("2026-12-08T12:00:00Z"),
            to: utc("2026-12-09T05:00:00Z")
        }]
    );
    // And the file signs as any schedule.
    let key = path("admin.key");
    ok(&none, &["admin", "role", "keygen", "--out", &key]);
    let signed = ok(
        &none,
        &[
            "admin",
            "role",
            "sign",
            "--key",
            &key,
            "--schedule",
            &path("schedule.toml"),
            "--out",
            &path("s.signed"),
        ],
    );
    assert_eq!(
        signed.trim(),
        "role cardiology-oncall version 3: 3 assignments"
    );
}
