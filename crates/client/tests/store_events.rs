#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The store's event queue (spec/11, `events`) and the upgrade of a store
//! of format 1, which had none.

mod common;

use common::{edit, key, new_store, read_blob, read_integer, reopen, write_blob};
use ward_client::{MessageRef, PendingEvent, STORE_FORMAT, Store, StoreError};

fn received(n: u8) -> PendingEvent {
    PendingEvent::Received(MessageRef {
        sender_device: [n; 32],
        message_id: [n; 16],
    })
}

fn new_device(user: &str, n: u8) -> PendingEvent {
    PendingEvent::NewDevice {
        user: user.to_owned(),
        device_key: [n; 32],
    }
}

#[test]
fn events_come_out_oldest_first_and_outlive_a_reopen() {
    let (_dir, path, mut store) = new_store();
    assert_eq!(store.first_event().unwrap(), None);
    let changed = PendingEvent::IdentityChanged {
        user: "rn.lindqvist".to_owned(),
        device_key: [9; 32],
    };
    let events = [received(1), changed, new_device("dr.okafor", 2)];
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| store.push_event(e).unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);

    let mut store = reopen(store, &path);
    assert_eq!(
        store.pending_events().unwrap(),
        seqs.iter()
            .copied()
            .zip(events.iter().cloned())
            .collect::<Vec<_>>()
    );
    assert_eq!(store.first_event().unwrap(), Some((1, events[0].clone())));
    assert!(store.delete_event(1).unwrap());
    assert!(!store.delete_event(1).unwrap());
    assert_eq!(store.first_event().unwrap(), Some((2, events[1].clone())));
}

#[test]
fn sequence_numbers_are_never_reused_once_the_queue_is_empty() {
    let (_dir, path, mut store) = new_store();
    let first = store.push_event(&received(1)).unwrap();
    assert!(store.delete_event(first).unwrap());
    let mut store = reopen(store, &path);
    // A value sealed for sequence 1 could otherwise be put back.
    let second = store.push_event(&received(2)).unwrap();
    assert!(second > first, "{second} after {first}");
    assert_eq!(store.pending_events().unwrap(), vec![(second, received(2))]);
}

#[test]
fn an_event_is_committed_with_its_message_or_not_at_all() {
    let (_dir, path, mut store) = new_store();
    let refused: Result<(), StoreError> = store.atomically(|s| {
        s.store_incoming("bob", &[1; 32], &[1; 16], 1, b"body")?;
        s.push_event(&received(1))?;
        Err(StoreError::Locked)
    });
    assert!(refused.is_err());
    assert!(store.received().unwrap().is_empty());
    assert!(store.pending_events().unwrap().is_empty());

    store
        .atomically(|s| {
            s.store_incoming("bob", &[1; 32], &[1; 16], 1, b"body")?;
            s.push_event(&received(1))?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let store = reopen(store, &path);
    assert_eq!(store.received().unwrap().len(), 1);
    assert_eq!(store.pending_events().unwrap().len(), 1);
    assert!(
        store
            .received_message(&[1; 32], &[1; 16])
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .received_message(&[1; 32], &[2; 16])
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_tampered_or_moved_event_is_refused_and_can_be_discarded() {
    let (_dir, path, mut store) = new_store();
    for n in 1..=3 {
        store.push_event(&new_device("dr.okafor", n)).unwrap();
    }
    drop(store);
    // A flipped byte in the first; the third moved into the second's row.
    let mut first = read_blob(&path, "SELECT value FROM events WHERE seq = 1");
    first[20] ^= 1;
    write_blob(&path, "UPDATE events SET value = ?1 WHERE seq = 1", &first);
    let third = read_blob(&path, "SELECT value FROM events WHERE seq = 3");
    write_blob(&path, "UPDATE events SET value = ?1 WHERE seq = 2", &third);

    let mut store = Store::open(&path, &key()).unwrap();
    for _ in 0..2 {
        assert!(matches!(
            store.first_event(),
            Err(StoreError::Tampered { table: "events" })
        ));
        assert!(store.discard_first_event().unwrap());
    }
    assert_eq!(
        store.first_event().unwrap(),
        Some((3, new_device("dr.okafor", 3)))
    );
}

#[test]
fn a_locked_store_refuses_the_queue() {
    let (_dir, _path, mut store) = new_store();
    store.push_event(&received(1)).unwrap();
    store.lock();
    assert!(matches!(store.first_event(), Err(StoreError::Locked)));
    assert!(matches!(store.pending_events(), Err(StoreError::Locked)));
    assert!(matches!(
        store.push_event(&received(2)),
        Err(StoreError::Locked)
    ));
    assert!(matches!(store.delete_event(1), Err(StoreError::Locked)));
    assert!(matches!(
        store.discard_first_event(),
        Err(StoreError::Locked)
    ));
    store.unlock(&key()).unwrap();
    assert_eq!(store.pending_events().unwrap().len(), 1);
}

/// What a store written by a release of format 1 looks like: the same
/// tables but `events`, and `meta.format = 1`.
/// What format 5 added: the role thread tables (their indexes go with them).
const DROP_ROLE_THREAD_TABLES: &str = "DROP TABLE role_threads; DROP TABLE role_handoffs;";
/// What formats 4 and 5 added: the group tables, then the role threads'.
const DROP_GROUP_TABLES: &str = "DROP TABLE groups; DROP TABLE group_pending; \
     DROP TABLE group_outbox; DROP TABLE role_threads; DROP TABLE role_handoffs;";

fn make_format_1(path: &std::path::Path) {
    edit(
        path,
        &format!(
            "{DROP_GROUP_TABLES} DROP TABLE events; DROP TABLE role_schedules; \
             DELETE FROM counters WHERE name = 'next_event_seq'; UPDATE meta SET format = 1;"
        ),
    );
}

#[test]
fn a_store_of_format_1_is_upgraded_once_and_reports_its_unacknowledged_messages() {
    let (_dir, path, mut store) = new_store();
    for n in 1..=3u8 {
        store
            .store_incoming("bob", &[n; 32], &[n; 16], u64::from(n), b"body")
            .unwrap();
    }
    store.mark_acknowledged(&[2; 32], &[2; 16]).unwrap();
    drop(store);
    make_format_1(&path);
    assert_eq!(read_integer(&path, "SELECT format FROM meta"), 1);

    // Format 1 reported every unacknowledged message on open: after the
    // upgrade, each is queued once.
    let store = Store::open(&path, &key()).unwrap();
    assert_eq!(
        store.pending_events().unwrap(),
        vec![(1, received(1)), (2, received(3))]
    );
    drop(store);
    assert_eq!(
        read_integer(&path, "SELECT format FROM meta"),
        i64::from(STORE_FORMAT)
    );
    let store = Store::open(&path, &key()).unwrap();
    assert_eq!(store.pending_events().unwrap().len(), 2);
    assert_eq!(store.received().unwrap().len(), 3);
}

#[test]
fn a_store_of_format_2_gains_its_role_schedules_and_keeps_everything_else() {
    let (_dir, path, mut store) = new_store();
    store.push_event(&received(7)).unwrap();
    drop(store);
    edit(
        &path,
        &format!("{DROP_GROUP_TABLES} DROP TABLE role_schedules; UPDATE meta SET format = 2"),
    );
    let mut store = Store::open(&path, &key()).unwrap();
    assert_eq!(store.pending_events().unwrap(), vec![(1, received(7))]);
    assert_eq!(store.role_schedule("cardiology-oncall").unwrap(), None);
    store
        .put_role_schedule("cardiology-oncall", b"signed bytes")
        .unwrap();
    drop(store);
    assert_eq!(
        read_integer(&path, "SELECT format FROM meta"),
        i64::from(STORE_FORMAT)
    );
    let store = Store::open(&path, &key()).unwrap();
    assert_eq!(
        store.role_schedule("cardiology-oncall").unwrap().as_deref(),
        Some(&b"signed bytes"[..])
    );
}

#[test]
fn a_store_of_format_3_gains_its_group_tables_and_keeps_its_role_schedules() {
    let (_dir, path, mut store) = new_store();
    store
        .put_role_schedule("cardiology-oncall", b"signed bytes")
        .unwrap();
    drop(store);
    edit(
        &path,
        &format!("{DROP_GROUP_TABLES} UPDATE meta SET format = 3"),
    );
    let mut store = Store::open(&path, &key()).unwrap();
    assert!(store.group_ids().unwrap().is_empty());
    store.save_group(&[9; 16], b"state").unwrap();
    drop(store);
    assert_eq!(
        read_integer(&path, "SELECT format FROM meta"),
        i64::from(STORE_FORMAT)
    );
    let store = Store::open(&path, &key()).unwrap();
    assert_eq!(store.group_ids().unwrap(), vec![[9; 16]]);
    assert_eq!(
        store.role_schedule("cardiology-oncall").unwrap().as_deref(),
        Some(&b"signed bytes"[..])
    );
}

#[test]
fn a_store_of_format_4_gains_its_role_threads_and_keeps_its_groups() {
    let (_dir, path, mut store) = new_store();
    store.save_group(&[9; 16], b"state").unwrap();
    drop(store);
    edit(
        &path,
        &format!("{DROP_ROLE_THREAD_TABLES} UPDATE meta SET format = 4"),
    );
    let mut store = Store::open(&path, &key()).unwrap();
    assert_eq!(store.group_ids().unwrap(), vec![[9; 16]]);
    assert!(store.roles_with_entries(0).unwrap().is_empty());
    assert_eq!(store.handed_off_until("cardiology-oncall").unwrap(), None);
    store.set_handed_off("cardiology-oncall", 100, 5).unwrap();
    drop(store);
    assert_eq!(
        read_integer(&path, "SELECT format FROM meta"),
        i64::from(STORE_FORMAT)
    );
    let store = Store::open(&path, &key()).unwrap();
    assert_eq!(
        store.handed_off_until("cardiology-oncall").unwrap(),
        Some((100, 5))
    );
}

#[test]
fn an_upgrade_needs_the_right_key_and_a_store_of_format_1() {
    let (_dir, path, store) = new_store();
    drop(store);
    make_format_1(&path);
    let wrong = ward_client::StorageKey::new([1; 32]);
    assert!(matches!(
        Store::open(&path, &wrong),
        Err(StoreError::WrongKey)
    ));
    assert_eq!(read_integer(&path, "SELECT format FROM meta"), 1);

    // Format 1 with a table of format 2 is neither.
    edit(
        &path,
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, value BLOB NOT NULL) STRICT",
    );
    assert!(matches!(
        Store::open(&path, &key()),
        Err(StoreError::Corrupt {
            table: "schema",
            ..
        })
    ));
    // Format 2 without its event queue is not format 2.
    edit(&path, "DROP TABLE events; UPDATE meta SET format = 2");
    assert!(matches!(
        Store::open(&path, &key()),
        Err(StoreError::Corrupt {
            table: "schema",
            ..
        })
    ));
    // Format 2 with the role schedules of format 3 is neither.
    edit(
        &path,
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, value BLOB NOT NULL) STRICT; \
         CREATE TABLE role_schedules (tag BLOB PRIMARY KEY, value BLOB NOT NULL) STRICT",
    );
    assert!(matches!(
        Store::open(&path, &key()),
        Err(StoreError::Corrupt {
            table: "schema",
            ..
        })
    ));
}
