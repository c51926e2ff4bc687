#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Role threads in the store (spec/11, `role_threads`, `role_handoffs`):
//! kept once per role and message id, sealed to their row, pruned by age,
//! and the last handoff recorded only moving forward.

mod common;

use common::{key, new_store, read_blob, reopen, write_blob};
use ward_client::{HandoffRefusal, MessageRef, PendingEvent, RoleThreadEntry, Store, StoreError};
use zeroize::Zeroizing;

fn entry(role_id: &str, n: u8, at_ms: u64) -> RoleThreadEntry {
    RoleThreadEntry {
        role_id: role_id.to_owned(),
        from_user: "nurse.diaz".to_owned(),
        message_id: [n; 16],
        at_ms,
        content: Zeroizing::new(vec![n; 256]),
    }
}

#[test]
fn thread_messages_are_kept_once_per_role_and_pruned_by_age() {
    let (_dir, path, mut store) = new_store();
    assert!(
        store
            .record_role_entry(&entry("cardiology-oncall", 1, 1_000))
            .unwrap()
    );
    assert!(
        store
            .record_role_entry(&entry("cardiology-oncall", 2, 3_000))
            .unwrap()
    );
    // The same message again (a handoff of what arrived directly): not new.
    assert!(
        !store
            .record_role_entry(&entry("cardiology-oncall", 1, 5_000))
            .unwrap()
    );
    // The same id in another role's thread is another entry.
    assert!(
        store
            .record_role_entry(&entry("rapid-response", 1, 2_000))
            .unwrap()
    );
    let store = reopen(store, &path);
    let kept = store.role_entries("cardiology-oncall", 0).unwrap();
    assert_eq!(
        kept,
        [
            entry("cardiology-oncall", 1, 1_000),
            entry("cardiology-oncall", 2, 3_000)
        ]
    );
    assert_eq!(
        store
            .role_entries("cardiology-oncall", 2_000)
            .unwrap()
            .len(),
        1
    );
    let mut roles = store.roles_with_entries(0).unwrap();
    roles.sort();
    assert_eq!(roles, ["cardiology-oncall", "rapid-response"]);
    assert_eq!(
        store.roles_with_entries(2_500).unwrap(),
        ["cardiology-oncall"]
    );

    let mut store = store;
    store.prune_role_entries(2_500).unwrap();
    assert_eq!(store.role_entries("cardiology-oncall", 0).unwrap().len(), 1);
    assert!(store.role_entries("rapid-response", 0).unwrap().is_empty());
}

#[test]
fn a_thread_message_moved_to_another_row_is_refused() {
    let (_dir, path, mut store) = new_store();
    store
        .record_role_entry(&entry("cardiology-oncall", 1, 1_000))
        .unwrap();
    store
        .record_role_entry(&entry("cardiology-oncall", 2, 2_000))
        .unwrap();
    drop(store);
    let second = read_blob(&path, "SELECT value FROM role_threads WHERE seq = 2");
    write_blob(
        &path,
        "UPDATE role_threads SET value = ?1 WHERE seq = 1",
        &second,
    );
    let store = Store::open(&path, &key()).unwrap();
    assert!(matches!(
        store.role_entries("cardiology-oncall", 0),
        Err(StoreError::Tampered {
            table: "role_threads"
        })
    ));
}

#[test]
fn the_last_handoff_only_moves_forward() {
    let (_dir, path, mut store) = new_store();
    assert_eq!(store.handed_off_until("cardiology-oncall").unwrap(), None);
    store.set_handed_off("cardiology-oncall", 100, 7).unwrap();
    store.set_handed_off("cardiology-oncall", 90, 9).unwrap();
    store.set_handed_off("cardiology-oncall", 100, 3).unwrap();
    assert_eq!(
        store.handed_off_until("cardiology-oncall").unwrap(),
        Some((100, 7))
    );
    store.set_handed_off("cardiology-oncall", 100, 8).unwrap();
    let mut store = reopen(store, &path);
    assert_eq!(
        store.handed_off_until("cardiology-oncall").unwrap(),
        Some((100, 8))
    );
    store.set_handed_off("cardiology-oncall", 200, 1).unwrap();
    assert_eq!(
        store.handed_off_until("cardiology-oncall").unwrap(),
        Some((200, 1))
    );
    assert_eq!(store.handed_off_until("rapid-response").unwrap(), None);
}

#[test]
fn handoff_events_survive_the_queue() {
    let (_dir, path, mut store) = new_store();
    let handoff = MessageRef {
        sender_device: [3; 32],
        message_id: [4; 16],
    };
    let events = [
        PendingEvent::Handoff {
            handoff,
            fresh: vec![[5; 16], [6; 16]],
        },
        PendingEvent::HandoffRefused {
            handoff,
            reason: HandoffRefusal::NotTheSuccessor,
        },
    ];
    for event in &events {
        store.push_event(event).unwrap();
    }
    let store = reopen(store, &path);
    let queued: Vec<PendingEvent> = store
        .pending_events()
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(queued, events);
}
