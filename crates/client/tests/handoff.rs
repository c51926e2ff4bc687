//! An on-call role handed over at a shift change, through a real relay
//! (spec/15, "Threads and handoff"). The rota is an iCalendar file that
//! hospital IT imports, signs and publishes (`ward-relay admin role
//! import`, `sign`, `publish`, here through the same library calls); the
//! devices verify it under the administrator key they pinned.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::relay::{
    TestRelay, assert_quiet, bounded, events_until_quiet, next_event, next_message, now_ms,
    with_admin_key,
};
use ward_client::{
    Content, Event, HandedOver, Handoff, HandoffRefusal, HandoffSent, Message, Messenger,
    RoleThread,
};
use ward_core::AdminKey;
use ward_relay::roles;

const ROLE: &str = "cardiology-oncall";
const NURSE: &str = "nurse.diaz@clinic.example";
const ADAMS: &str = "dr.adams@clinic.example";
const BAKER: &str = "dr.baker@clinic.example";
const MALLORY: &str = "mallory@clinic.example";
const HOUR: u64 = 3600;

/// Hospital IT's administrator key, in a file of its own.
struct Admin {
    dir: tempfile::TempDir,
    key: PathBuf,
    public: [u8; 32],
}

impl Admin {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("admin.key");
        let public_hex = roles::keygen(&key).unwrap();
        let public: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&public_hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        Self {
            dir,
            key,
            public: public.try_into().unwrap(),
        }
    }

    fn public_hex(&self) -> String {
        self.public.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Imports `shifts` (user, from, to in seconds) as the rota's version
    /// `version` from an iCalendar file, signs it, and publishes it.
    fn publish_rota(&self, relay: &TestRelay, version: u64, shifts: &[(&str, u64, u64)]) {
        let utc = |secs: u64| {
            chrono::DateTime::from_timestamp(secs as i64, 0)
                .unwrap()
                .format("%Y%m%dT%H%M%SZ")
                .to_string()
        };
        let mut ics_text = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Rota//EN\r\n");
        for (i, (user, from, to)) in shifts.iter().enumerate() {
            ics_text += &format!(
                "BEGIN:VEVENT\r\nUID:v{version}-shift-{i}\r\nATTENDEE:mailto:{user}\r\n\
                 DTSTART:{}\r\nDTEND:{}\r\nEND:VEVENT\r\n",
                utc(*from),
                utc(*to)
            );
        }
        ics_text += "END:VCALENDAR\r\n";
        let file = |name: &str| self.dir.path().join(format!("v{version}.{name}"));
        std::fs::write(file("ics"), ics_text).unwrap();
        let options = roles::ImportOptions {
            role_id: ROLE.into(),
            display_name: "On-call cardiology".into(),
            department: "Cardiology".into(),
            version,
            timezone: None,
            map: Vec::new(),
        };
        roles::import(&file("ics"), &options, &file("toml")).unwrap();
        roles::sign(&self.key, &file("toml"), &file("signed"), now_ms() / 1000).unwrap();
        roles::publish(
            relay.storage.as_ref(),
            &[self.public_hex()],
            &file("signed"),
            now_ms(),
        )
        .unwrap();
    }
}

/// The next handoff event, skipping messages and receipts.
async fn next_handoff(m: &mut Messenger) -> Event {
    loop {
        let event = next_event(m).await;
        if matches!(
            event,
            Event::RoleHandoff { .. } | Event::HandoffRefused { .. }
        ) {
            return event;
        }
    }
}

fn texts(messages: &[HandedOver]) -> Vec<&str> {
    messages.iter().map(|m| m.message.text.as_str()).collect()
}

fn thread_with(party: &str) -> Option<RoleThread> {
    Some(RoleThread {
        role_id: ROLE.into(),
        party: party.into(),
    })
}

#[tokio::test]
async fn the_outgoing_on_call_hands_the_open_threads_to_the_next() {
    bounded(async {
        let relay = TestRelay::start();
        for user in [NURSE, ADAMS, BAKER, MALLORY] {
            relay.add_user(user);
        }
        let admin = Admin::new();
        let now = now_ms() / 1000;
        admin.publish_rota(
            &relay,
            1,
            &[
                (ADAMS, now - 3 * HOUR, now + 3 * HOUR),
                (BAKER, now + 3 * HOUR, now + 15 * HOUR),
            ],
        );
        let pinned = with_admin_key(admin.public);
        let mut nurse = relay.enroll(NURSE, "nurse", pinned.clone()).await;
        let mut adams = relay.enroll(ADAMS, "adams", pinned.clone()).await;
        let mut adams_pager = relay.enroll(ADAMS, "adams-pager", pinned.clone()).await;
        let mut baker = relay.enroll(BAKER, "baker", pinned.clone()).await;
        let mut mallory = relay.enroll(MALLORY, "mallory", pinned).await;

        // Day shift: the nurse writes to the role, Dr Adams answers in her thread.
        let sent = nurse
            .send_to_role(ROLE, Message::urgent("Bed 4: chest pain, troponin pending"))
            .await
            .unwrap();
        assert_eq!(sent.holders, [ADAMS]);
        let got = next_message(&mut adams).await;
        assert_eq!(got.message.role, thread_with(NURSE));
        let reply = adams
            .reply_in_role_thread(ROLE, NURSE, Message::text("Coming. ECG please"))
            .await
            .unwrap();
        assert_eq!(reply.holders, [ADAMS]);
        let got = next_message(&mut nurse).await;
        assert_eq!(
            (got.sender_user.as_str(), got.message.role),
            (ADAMS, thread_with(NURSE))
        );
        events_until_quiet(&mut adams_pager, Duration::from_millis(300)).await;

        // The rota changes: Dr Adams leaves a minute ago, Dr Baker takes over.
        let change = now - 60;
        admin.publish_rota(
            &relay,
            2,
            &[
                (ADAMS, now - 3 * HOUR, change),
                (BAKER, change, now + 12 * HOUR),
            ],
        );
        let handed = adams.hand_off_roles().await.unwrap();
        assert_eq!(
            handed,
            [HandoffSent {
                role_id: ROLE.into(),
                ends_at: change,
                to_users: vec![BAKER.into()],
                messages: 2,
            }]
        );
        // Dr Baker never fetched the rota: the handoff carries it, and it
        // verifies under the pinned key.
        match next_handoff(&mut baker).await {
            Event::RoleHandoff {
                role_id,
                from_user,
                ends_at,
                messages,
            } => {
                assert_eq!(
                    (role_id.as_str(), from_user.as_str(), ends_at),
                    (ROLE, ADAMS, change)
                );
                assert_eq!(
                    texts(&messages),
                    ["Bed 4: chest pain, troponin pending", "Coming. ECG please"]
                );
                assert_eq!(
                    messages
                        .iter()
                        .map(|m| m.from_user.as_str())
                        .collect::<Vec<_>>(),
                    [NURSE, ADAMS]
                );
                assert!(
                    messages
                        .iter()
                        .all(|m| m.message.role == thread_with(NURSE))
                );
            }
            other => panic!("{other:?}"),
        }
        // Dr Adams's pager saw the handoff go: it hands nothing over again.
        events_until_quiet(&mut adams_pager, Duration::from_millis(300)).await;
        assert_eq!(adams_pager.hand_off_roles().await.unwrap(), []);
        assert_quiet(&mut baker).await;

        // New messages to the role reach Dr Baker directly.
        let sent = nurse
            .send_to_role(ROLE, Message::text("Bed 9: review"))
            .await
            .unwrap();
        assert_eq!(sent.holders, [BAKER]);
        assert_eq!(next_message(&mut baker).await.message.text, "Bed 9: review");

        // One resolved before the change still reaches Dr Adams: his device
        // forwards it by itself.
        let mut late = Message::text("Bed 4: troponin 0.9");
        late.role = thread_with(NURSE);
        nurse.send(&[ADAMS], late).await.unwrap();
        let events = events_until_quiet(&mut adams, Duration::from_millis(500)).await;
        assert!(
            events.iter().any(|e| matches!(e, Event::Message(_))),
            "{events:?}"
        );
        match next_handoff(&mut baker).await {
            Event::RoleHandoff {
                from_user,
                messages,
                ..
            } => {
                assert_eq!(from_user, ADAMS);
                assert_eq!(texts(&messages), ["Bed 4: troponin 0.9"]);
            }
            other => panic!("{other:?}"),
        }

        // Dr Baker replies in the nurse's thread.
        baker
            .reply_in_role_thread(ROLE, NURSE, Message::text("Seen beds 4 and 9"))
            .await
            .unwrap();
        loop {
            let got = next_message(&mut nurse).await;
            if got.sender_user == BAKER {
                assert_eq!(got.message.role, thread_with(NURSE));
                assert_eq!(got.message.text, "Seen beds 4 and 9");
                break;
            }
        }

        // A user who never held the role "hands it over", with a rota
        // signed by a key of her own: refused, and nothing of it is kept.
        let forger = AdminKey::generate(&mut ward_core::os_rng());
        let mut forged_rota = ward_core::RoleSchedule {
            role_id: ROLE.into(),
            display_name: String::new(),
            department: String::new(),
            version: 9,
            issued_at: now,
            assignments: vec![ward_core::Assignment {
                user_id: MALLORY.into(),
                starts_at: now - HOUR,
                ends_at: change,
            }],
        };
        forged_rota.assignments.push(ward_core::Assignment {
            user_id: BAKER.into(),
            starts_at: change,
            ends_at: now + HOUR,
        });
        let mut planted = Message::text("Bed 4: discharge now");
        planted.role = thread_with(NURSE);
        let forged = Content::Handoff(Handoff {
            role_id: ROLE.into(),
            ends_at: change,
            schedule: forger.sign(&forged_rota).unwrap(),
            entries: vec![HandedOver {
                from_user: NURSE.into(),
                message_id: [7; 16],
                message: planted,
            }],
        });
        mallory
            .send_raw_plaintext(&[BAKER], &ward_client::content::encode(&forged).unwrap())
            .await
            .unwrap();
        match next_handoff(&mut baker).await {
            Event::HandoffRefused {
                role_id,
                from_user,
                reason,
            } => {
                assert_eq!((role_id.as_str(), from_user.as_str()), (ROLE, MALLORY));
                assert_eq!(reason, HandoffRefusal::NotTheHolder);
            }
            other => panic!("{other:?}"),
        }
        assert_quiet(&mut baker).await;
    })
    .await;
}
