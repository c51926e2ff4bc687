//! Sending to an on-call role through a real relay (spec/15): the schedule
//! is verified under the administrator keys the app pinned, kept only
//! moving forward, and resolved at send time; a relay that forges or rolls
//! back a schedule is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::relay::{TestRelay, bounded, next_message, options};
use ward_client::{ClientError, Message, MessengerOptions};
use ward_core::{AdminKey, Assignment, RoleSchedule};
use ward_relay::storage::{RoleScheduleRecord, Storage as _};

const ROLE: &str = "cardiology-oncall";

fn schedule(version: u64, holder: &str, now_secs: u64) -> RoleSchedule {
    RoleSchedule {
        role_id: ROLE.into(),
        display_name: "On-call cardiology".into(),
        department: "Cardiology".into(),
        version,
        issued_at: now_secs,
        assignments: vec![Assignment {
            user_id: holder.into(),
            starts_at: now_secs - 3600,
            ends_at: now_secs + 3600,
        }],
    }
}

/// Stores a signed schedule as `ward-relay admin role publish` would, or
/// as a relay that does not check would.
fn publish(relay: &TestRelay, version: u64, signed: Vec<u8>) {
    relay
        .storage
        .publish_role_schedule(
            &RoleScheduleRecord {
                role_id: ROLE.into(),
                version,
                signed,
                published_at: common::relay::now_ms(),
            },
            None,
            common::relay::now_ms(),
        )
        .unwrap();
}

fn with_keys(admin: &AdminKey) -> MessengerOptions {
    common::relay::with_admin_key(admin.public_key())
}

/// A relay with a nurse and two doctors, an administrator key, and now in
/// seconds.
fn team() -> (TestRelay, AdminKey, u64) {
    let relay = TestRelay::start();
    for user in ["nurse.diaz", "dr.adams", "dr.baker"] {
        relay.add_user(user);
    }
    let admin = AdminKey::generate(&mut ward_core::os_rng());
    (relay, admin, common::relay::now_ms() / 1000)
}

#[tokio::test]
async fn a_message_to_a_role_reaches_whoever_holds_it_now() {
    bounded(async {
        let (relay, admin, now) = team();
        publish(
            &relay,
            1,
            admin.sign(&schedule(1, "dr.adams", now)).unwrap(),
        );

        let mut nurse = relay.enroll("nurse.diaz", "nurse", with_keys(&admin)).await;
        let mut adams = relay.enroll("dr.adams", "adams", options()).await;
        let mut baker = relay.enroll("dr.baker", "baker", options()).await;

        let sent = nurse
            .send_to_role(ROLE, Message::text("Bed 4: chest pain"))
            .await
            .unwrap();
        assert_eq!(sent.holders, ["dr.adams"]);
        assert_eq!(sent.version, 1);
        let got = next_message(&mut adams).await;
        assert_eq!(got.message.text, "Bed 4: chest pain");

        // The shift changes: version 2 names Dr Baker, and the next message
        // goes to him.
        publish(
            &relay,
            2,
            admin.sign(&schedule(2, "dr.baker", now)).unwrap(),
        );
        let sent = nurse
            .send_to_role(ROLE, Message::text("Bed 9: review"))
            .await
            .unwrap();
        assert_eq!(sent.holders, ["dr.baker"]);
        assert_eq!(next_message(&mut baker).await.message.text, "Bed 9: review");

        // A relay that forges version 3 with a key of its own: refused, nothing sent.
        let forger = AdminKey::generate(&mut ward_core::os_rng());
        publish(
            &relay,
            3,
            forger.sign(&schedule(3, "dr.adams", now)).unwrap(),
        );
        let refused = nurse
            .send_to_role(ROLE, Message::text("x"))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, ClientError::RoleSchedule(_)),
            "{refused:?}"
        );
        common::relay::assert_quiet(&mut adams).await;
    })
    .await;
}

#[tokio::test]
async fn a_relay_cannot_roll_a_role_back_even_after_a_restart_of_the_app() {
    bounded(async {
        let (relay, admin, now) = team();
        let old = admin.sign(&schedule(1, "dr.adams", now)).unwrap();
        publish(
            &relay,
            2,
            admin.sign(&schedule(2, "dr.baker", now)).unwrap(),
        );
        let mut nurse = relay.enroll("nurse.diaz", "nurse", with_keys(&admin)).await;
        assert_eq!(nurse.role_schedule(ROLE).await.unwrap().version, 2);
        nurse.close().await;

        // The relay's database now hands out last week's rota.
        let db = relay
            .dir
            .path()
            .join("relay")
            .join(ward_relay::storage::DATABASE_FILE);
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute(
            "UPDATE role_schedules SET version = 1, signed = ?1 WHERE role_id = ?2",
            rusqlite::params![old, ROLE],
        )
        .unwrap();
        drop(conn);

        let mut nurse = common::relay::reopen(&relay, "nurse", with_keys(&admin)).await;
        let refused = nurse.role_schedule(ROLE).await.unwrap_err();
        assert!(
            matches!(refused, ClientError::RoleSchedule(_)),
            "{refused:?}"
        );
        // A device pinned no administrator key: roles cannot be used at all.
        let mut other = relay.enroll("dr.adams", "adams", options()).await;
        assert!(matches!(
            other.send_to_role(ROLE, Message::text("x")).await,
            Err(ClientError::RoleSchedule(_))
        ));
    })
    .await;
}
