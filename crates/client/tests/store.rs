#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The device store (spec/11-client-store.md): round trips across close and
//! reopen, keys and locking, wipe, and what an attacker who can read or
//! write the files gets.

use std::path::{Path, PathBuf};

use tempfile::TempDir;
use ward_client::{
    DeviceRecord, IdentityStatus, Insertion, MessageRef, OutboxStatus, RelayInfo, SignedPreKeyInfo,
    StorageKey, Store, StoreError,
};
use ward_core::{
    IdentityKeyPair, OneTimePreKeyPair, PreKeyBundle, PreKeyMessage, Session, SignedPreKeyPair,
};

const KEY: [u8; 32] = [0x5a; 32];
const CANARY: &[u8] = b"CANARY-PHI patient 4711 potassium 6.9";
const CONTACT: &str = "bob-canary@clinic.example";

fn key() -> StorageKey {
    StorageKey::new(KEY)
}

fn new_store() -> (TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.sqlite3");
    let store = Store::open(&path, &key()).unwrap();
    (dir, path, store)
}

fn reopen(store: Store, path: &Path) -> Store {
    drop(store);
    Store::open(path, &key()).unwrap()
}

fn relay() -> RelayInfo {
    RelayInfo {
        address: "relay.clinic.example:4433".to_owned(),
        fingerprint: [0xf1; 32],
    }
}

/// Edits the closed store with a plain SQLite connection.
fn edit(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

fn read_blob(path: &Path, sql: &str) -> Vec<u8> {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn write_blob(path: &Path, sql: &str, value: &[u8]) {
    let conn = rusqlite::Connection::open(path).unwrap();
    assert_eq!(conn.execute(sql, [value]).unwrap(), 1);
}

/// Alice's session with Bob and Bob's with Alice, after one message.
struct Pair {
    alice: IdentityKeyPair,
    bob: IdentityKeyPair,
    to_bob: Session,
    to_alice: Session,
}

fn pair_with(alice: IdentityKeyPair) -> Pair {
    let mut rng = ward_core::os_rng();
    let bob = IdentityKeyPair::generate(&mut rng);
    let signed = SignedPreKeyPair::generate(&mut rng, &bob, 1, 1_700_000_000);
    let bundle = PreKeyBundle::new(bob.public().clone(), signed.public().clone(), None).unwrap();
    let mut to_bob = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let first = to_bob.encrypt(&mut rng, b"hello").unwrap();
    let first = PreKeyMessage::decode(&first).unwrap();
    let (to_alice, text) = Session::accept(&bob, &signed, None, &first).unwrap();
    assert_eq!(text, b"hello");
    Pair {
        alice,
        bob,
        to_bob,
        to_alice,
    }
}

fn pair() -> Pair {
    pair_with(IdentityKeyPair::generate(&mut ward_core::os_rng()))
}

fn files(path: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|s| {
            let mut p = path.as_os_str().to_owned();
            p.push(s);
            PathBuf::from(p)
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn device_round_trips_across_reopen() {
    let (_dir, path, mut store) = new_store();
    assert!(store.device().unwrap().is_none());
    let identity = IdentityKeyPair::generate(&mut ward_core::os_rng());
    let public = identity.public().clone();
    store
        .save_device(&DeviceRecord {
            user_id: "alice@clinic.example".to_owned(),
            relay: relay(),
            identity,
        })
        .unwrap();
    let store = reopen(store, &path);
    let device = store.device().unwrap().unwrap();
    assert_eq!(device.user_id, "alice@clinic.example");
    assert_eq!(device.relay, relay());
    assert_eq!(device.identity.public(), &public);
}

#[test]
fn signed_prekeys_round_trip_newest_first() {
    let (_dir, path, mut store) = new_store();
    let mut rng = ward_core::os_rng();
    let identity = IdentityKeyPair::generate(&mut rng);
    let old = SignedPreKeyPair::generate(&mut rng, &identity, 1, 1_700_000_000);
    let new = SignedPreKeyPair::generate(&mut rng, &identity, 2, 1_700_600_000);
    store.save_signed_prekey(&old).unwrap();
    store.save_signed_prekey(&new).unwrap();
    let mut store = reopen(store, &path);
    assert_eq!(
        store.signed_prekeys().unwrap(),
        vec![
            SignedPreKeyInfo {
                id: 2,
                created_at: 1_700_600_000
            },
            SignedPreKeyInfo {
                id: 1,
                created_at: 1_700_000_000
            },
        ]
    );
    let loaded = store.signed_prekey(1, &identity).unwrap().unwrap();
    assert_eq!(loaded.public(), old.public());
    assert_eq!(*loaded.to_secret_bytes(), *old.to_secret_bytes());
    assert!(store.signed_prekey(3, &identity).unwrap().is_none());

    // KEY-12: an id in use is refused, not overwritten.
    let again = SignedPreKeyPair::generate(&mut rng, &identity, 1, 1_700_900_000);
    assert!(matches!(
        store.save_signed_prekey(&again),
        Err(StoreError::IdInUse {
            table: "signed_prekeys",
            id: 1
        })
    ));
    assert!(store.delete_signed_prekey(1).unwrap());
    assert!(!store.delete_signed_prekey(1).unwrap());
    let store = reopen(store, &path);
    assert_eq!(store.signed_prekeys().unwrap().len(), 1);
}

#[test]
fn one_time_prekeys_are_taken_once_and_the_counter_persists() {
    let (_dir, path, mut store) = new_store();
    assert_eq!(store.next_one_time_id().unwrap(), None);
    let batch = OneTimePreKeyPair::generate_batch(&mut ward_core::os_rng(), 1, 5);
    store.add_one_time_prekeys(&batch, 6).unwrap();
    let mut store = reopen(store, &path);
    assert_eq!(store.next_one_time_id().unwrap(), Some(6));
    assert_eq!(store.one_time_prekey_count().unwrap(), 5);

    let peeked = store.one_time_prekey(3).unwrap().unwrap();
    assert_eq!(peeked.public(), batch[2].public());
    let taken = store.take_one_time_prekey(3).unwrap().unwrap();
    assert_eq!(*taken.to_secret_bytes(), *batch[2].to_secret_bytes());
    assert!(store.take_one_time_prekey(3).unwrap().is_none());
    assert!(store.one_time_prekey(3).unwrap().is_none());

    let mut store = reopen(store, &path);
    assert!(store.take_one_time_prekey(3).unwrap().is_none());
    assert_eq!(store.one_time_prekey_count().unwrap(), 4);

    // A batch with an id still held is refused as a whole (KEY-12).
    let clash = OneTimePreKeyPair::generate_batch(&mut ward_core::os_rng(), 5, 3);
    assert!(matches!(
        store.add_one_time_prekeys(&clash, 8),
        Err(StoreError::IdInUse {
            table: "one_time_prekeys",
            id: 5
        })
    ));
    assert_eq!(store.one_time_prekey_count().unwrap(), 4);
    assert_eq!(store.next_one_time_id().unwrap(), Some(6));
}

#[test]
fn sessions_round_trip_and_keep_working() {
    let (_dir, path, mut store) = new_store();
    let mut p = pair();
    let bob_key = *p.bob.public().signing_key();
    let alice_key = *p.alice.public().signing_key();
    store.save_session(&p.to_bob).unwrap();
    store.save_session(&p.to_alice).unwrap();
    let store = reopen(store, &path);

    let mut to_bob = store.session(&bob_key).unwrap().unwrap();
    assert_eq!(to_bob.base_key(), p.to_bob.base_key());
    assert_eq!(to_bob.to_bytes(), p.to_bob.to_bytes());
    let by_base = store
        .session_by_base_key(&alice_key, p.to_alice.base_key())
        .unwrap()
        .unwrap();
    assert_eq!(by_base.to_bytes(), p.to_alice.to_bytes());
    assert!(
        store
            .session_by_base_key(&alice_key, &[9; 32])
            .unwrap()
            .is_none()
    );
    assert!(store.session(&[7; 32]).unwrap().is_none());

    // The restored state goes on where it left off.
    let mut rng = ward_core::os_rng();
    let m = to_bob.encrypt(&mut rng, b"after restart").unwrap();
    assert_eq!(p.to_alice.decrypt(&m).unwrap(), b"after restart");
}

#[test]
fn the_most_recently_saved_session_is_current() {
    let (_dir, path, mut store) = new_store();
    let alice = IdentityKeyPair::generate(&mut ward_core::os_rng());
    let alice_secret = alice.to_secret_bytes();
    let first = pair_with(alice);
    let bob = first.bob;
    // A second session with the same Bob device (both sides initiated).
    let mut rng = ward_core::os_rng();
    let signed = SignedPreKeyPair::generate(&mut rng, &bob, 2, 1_700_000_000);
    let bundle = PreKeyBundle::new(bob.public().clone(), signed.public().clone(), None).unwrap();
    let alice = IdentityKeyPair::from_secret_bytes(alice_secret.as_slice()).unwrap();
    let second = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let bob_key = *bob.public().signing_key();

    store.save_session(&first.to_bob).unwrap();
    store.save_session(&second).unwrap();
    let mut store = reopen(store, &path);
    assert_eq!(store.sessions(&bob_key).unwrap().len(), 2);
    assert_eq!(
        store.session(&bob_key).unwrap().unwrap().base_key(),
        second.base_key()
    );
    // Saving the first again (it decrypted something) makes it current.
    store.save_session(&first.to_bob).unwrap();
    let bases: Vec<[u8; 32]> = store
        .sessions(&bob_key)
        .unwrap()
        .iter()
        .map(|s| *s.base_key())
        .collect();
    assert_eq!(bases, vec![*first.to_bob.base_key(), *second.base_key()]);

    assert!(store.delete_session(&bob_key, second.base_key()).unwrap());
    assert_eq!(store.sessions(&bob_key).unwrap().len(), 1);
    assert_eq!(store.delete_sessions(&bob_key).unwrap(), 1);
    assert!(store.session(&bob_key).unwrap().is_none());
}

#[test]
fn identity_changes_are_detected() {
    let (_dir, path, mut store) = new_store();
    let device = [3u8; 32];
    assert_eq!(
        store
            .record_identity(CONTACT, &device, b"identity one")
            .unwrap(),
        IdentityStatus::New
    );
    let mut store = reopen(store, &path);
    assert_eq!(
        store
            .record_identity(CONTACT, &device, b"identity one")
            .unwrap(),
        IdentityStatus::Unchanged
    );
    assert_eq!(
        store
            .record_identity(CONTACT, &device, b"identity two")
            .unwrap(),
        IdentityStatus::Changed {
            previous: b"identity one".to_vec()
        }
    );
    // Reported once: the new identity is now the recorded one.
    let mut store = reopen(store, &path);
    assert_eq!(
        store
            .record_identity(CONTACT, &device, b"identity two")
            .unwrap(),
        IdentityStatus::Unchanged
    );
    // Another device of the same user, and the same device key for
    // another user, are separate records.
    assert_eq!(
        store
            .record_identity(CONTACT, &[4; 32], b"identity three")
            .unwrap(),
        IdentityStatus::New
    );
    assert_eq!(
        store
            .record_identity("carol@clinic.example", &device, b"x")
            .unwrap(),
        IdentityStatus::New
    );
    let known = store.known_identities(CONTACT).unwrap();
    assert_eq!(known.len(), 2);
    assert_eq!(known[0].device_key, device);
    assert_eq!(known[0].identity, b"identity two");
    assert_eq!(known[1].device_key, [4; 32]);

    assert!(store.forget_identity(CONTACT, &device).unwrap());
    assert!(!store.forget_identity(CONTACT, &device).unwrap());
    assert_eq!(store.known_identities(CONTACT).unwrap().len(), 1);
    assert_eq!(
        store
            .record_identity(CONTACT, &device, b"identity two")
            .unwrap(),
        IdentityStatus::New
    );
}

#[test]
fn duplicate_incoming_messages_are_stored_once() {
    let (_dir, path, mut store) = new_store();
    let sender = [8u8; 32];
    let id = [1u8; 16];
    assert_eq!(
        store
            .store_incoming(CONTACT, &sender, &id, 1000, b"first")
            .unwrap(),
        Insertion::Inserted
    );
    let mut store = reopen(store, &path);
    assert_eq!(
        store
            .store_incoming(CONTACT, &sender, &id, 2000, b"again")
            .unwrap(),
        Insertion::Duplicate
    );
    // The same id from another device is another message.
    assert_eq!(
        store
            .store_incoming(CONTACT, &[9; 32], &id, 3000, b"other")
            .unwrap(),
        Insertion::Inserted
    );
    let received = store.received().unwrap();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].sender_user, CONTACT);
    assert_eq!(received[0].sender_device, sender);
    assert_eq!(received[0].message_id, id);
    assert_eq!(received[0].received_at_ms, 1000);
    assert_eq!(received[0].body, b"first");
    assert!(!received[0].acknowledged);
    assert_eq!(received[1].body, b"other");

    assert!(store.delete_received(&sender, &id).unwrap());
    assert_eq!(store.received().unwrap().len(), 1);
}

#[test]
fn acknowledgments_survive_a_restart() {
    let (_dir, path, mut store) = new_store();
    for i in 0..3u8 {
        store
            .store_incoming(CONTACT, &[i; 32], &[i; 16], u64::from(i), &[i])
            .unwrap();
    }
    assert!(store.mark_acknowledged(&[1; 32], &[1; 16]).unwrap());
    assert!(!store.mark_acknowledged(&[7; 32], &[7; 16]).unwrap());
    // The app dies here, having stored 0 and 2 but acknowledged only 1.
    let store = reopen(store, &path);
    assert_eq!(
        store.unacknowledged().unwrap(),
        vec![
            MessageRef {
                sender_device: [0; 32],
                message_id: [0; 16]
            },
            MessageRef {
                sender_device: [2; 32],
                message_id: [2; 16]
            },
        ]
    );
    let acknowledged: Vec<bool> = store
        .received()
        .unwrap()
        .iter()
        .map(|m| m.acknowledged)
        .collect();
    assert_eq!(acknowledged, vec![false, true, false]);
}

#[test]
fn the_outbox_round_trips_with_its_status() {
    let (_dir, path, mut store) = new_store();
    let a = [0xa0; 16];
    let b = [0xb0; 16];
    assert_eq!(
        store
            .queue_outgoing(&a, &[CONTACT, "carol"], b"to two")
            .unwrap(),
        Insertion::Inserted
    );
    assert_eq!(
        store.queue_outgoing(&b, &[CONTACT], b"to one").unwrap(),
        Insertion::Inserted
    );
    assert_eq!(
        store.queue_outgoing(&a, &[CONTACT], b"again").unwrap(),
        Insertion::Duplicate
    );
    assert!(store.mark_sent(&a).unwrap());
    assert!(!store.mark_sent(&[0; 16]).unwrap());
    let mut store = reopen(store, &path);
    let all = store.outbox().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].message_id, a);
    assert_eq!(
        all[0].recipients,
        vec![CONTACT.to_owned(), "carol".to_owned()]
    );
    assert_eq!(all[0].body, b"to two");
    assert_eq!(all[0].status, OutboxStatus::Sent);
    let pending = store.pending_outgoing().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].message_id, b);
    assert_eq!(pending[0].status, OutboxStatus::Pending);
    assert!(store.delete_outgoing(&a).unwrap());
    assert_eq!(store.outbox().unwrap().len(), 1);
}

#[test]
fn a_wrong_key_is_refused_on_open_and_on_unlock() {
    let (_dir, path, mut store) = new_store();
    store.queue_outgoing(&[1; 16], &[CONTACT], CANARY).unwrap();
    drop(store);
    let wrong = StorageKey::new([0x5b; 32]);
    assert!(matches!(
        Store::open(&path, &wrong),
        Err(StoreError::WrongKey)
    ));

    let mut store = Store::open(&path, &key()).unwrap();
    // On an unlocked store, a wrong key changes nothing.
    assert!(matches!(store.unlock(&wrong), Err(StoreError::WrongKey)));
    assert!(!store.is_locked());
    store.lock();
    assert!(matches!(store.unlock(&wrong), Err(StoreError::WrongKey)));
    assert!(store.is_locked());
    assert!(matches!(store.outbox(), Err(StoreError::Locked)));
    store.unlock(&key()).unwrap();
    assert_eq!(store.outbox().unwrap()[0].body, CANARY);
    drop(store);

    // A changed salt is a key that no longer matches.
    edit(&path, "UPDATE meta SET salt = zeroblob(32)");
    assert!(matches!(
        Store::open(&path, &key()),
        Err(StoreError::WrongKey)
    ));
}

#[test]
fn a_locked_store_refuses_reads_and_writes() {
    let (_dir, _path, mut store) = new_store();
    let p = pair();
    let bob = *p.bob.public().signing_key();
    let mut rng = ward_core::os_rng();
    let identity = IdentityKeyPair::generate(&mut rng);
    let signed = SignedPreKeyPair::generate(&mut rng, &identity, 1, 1);
    let batch = OneTimePreKeyPair::generate_batch(&mut rng, 1, 1);
    store.save_session(&p.to_bob).unwrap();
    store
        .store_incoming(CONTACT, &[1; 32], &[1; 16], 1, b"x")
        .unwrap();
    store.lock();
    assert!(store.is_locked());

    let locked = |r: Result<(), StoreError>| assert!(matches!(r, Err(StoreError::Locked)), "{r:?}");
    locked(store.device().map(drop));
    locked(store.save_device(&DeviceRecord {
        user_id: "alice".to_owned(),
        relay: relay(),
        identity: IdentityKeyPair::generate(&mut rng),
    }));
    locked(store.save_signed_prekey(&signed));
    locked(store.signed_prekey(1, &identity).map(drop));
    locked(store.signed_prekeys().map(drop));
    locked(store.delete_signed_prekey(1).map(drop));
    locked(store.add_one_time_prekeys(&batch, 2));
    locked(store.one_time_prekey(1).map(drop));
    locked(store.take_one_time_prekey(1).map(drop));
    locked(store.one_time_prekey_count().map(drop));
    locked(store.next_one_time_id().map(drop));
    locked(store.save_session(&p.to_bob));
    locked(store.session(&bob).map(drop));
    locked(store.sessions(&bob).map(drop));
    locked(
        store
            .session_by_base_key(&bob, p.to_bob.base_key())
            .map(drop),
    );
    locked(store.delete_session(&bob, p.to_bob.base_key()).map(drop));
    locked(store.delete_sessions(&bob).map(drop));
    locked(store.record_identity(CONTACT, &[1; 32], b"i").map(drop));
    locked(store.known_identities(CONTACT).map(drop));
    locked(store.forget_identity(CONTACT, &[1; 32]).map(drop));
    locked(
        store
            .store_incoming(CONTACT, &[2; 32], &[2; 16], 2, b"y")
            .map(drop),
    );
    locked(store.received().map(drop));
    locked(store.unacknowledged().map(drop));
    locked(store.mark_acknowledged(&[1; 32], &[1; 16]).map(drop));
    locked(store.delete_received(&[1; 32], &[1; 16]).map(drop));
    locked(store.queue_outgoing(&[3; 16], &[CONTACT], b"z").map(drop));
    locked(store.outbox().map(drop));
    locked(store.pending_outgoing().map(drop));
    locked(store.mark_sent(&[3; 16]).map(drop));
    locked(store.delete_outgoing(&[3; 16]).map(drop));

    // Nothing was written while locked.
    store.unlock(&key()).unwrap();
    assert_eq!(store.received().unwrap().len(), 1);
    assert!(store.session(&bob).unwrap().is_some());
    assert!(store.outbox().unwrap().is_empty());
    assert!(store.device().unwrap().is_none());
}

#[test]
fn wipe_removes_every_file() {
    let (dir, path, mut store) = new_store();
    store
        .store_incoming(CONTACT, &[1; 32], &[1; 16], 1, CANARY)
        .unwrap();
    assert!(path.exists());
    store.lock(); // a locked store can be wiped
    store.wipe().unwrap();
    for file in files(&path) {
        assert!(!file.exists(), "{} left behind", file.display());
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // A store whose key is lost is removed by path; missing files are fine.
    let store = Store::open(&path, &key()).unwrap();
    drop(store);
    Store::wipe_path(&path).unwrap();
    assert!(!path.exists());
    Store::wipe_path(&path).unwrap();

    // And a failure is reported: here the "database" is a directory.
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("f"), b"x").unwrap();
    assert!(matches!(
        Store::wipe_path(&path),
        Err(StoreError::Wipe {
            file: "database",
            ..
        })
    ));
}

/// STO-25: every file of the store, its `-wal` included, is mode 0600 from
/// its creation without a umask, and files created before with wider modes
/// are restricted when the store opens.
#[cfg(unix)]
#[test]
fn the_stores_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    let modes = |dir: &Path| -> Vec<(PathBuf, u32)> {
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path(),
                    e.metadata().unwrap().permissions().mode() & 0o7777,
                )
            })
            .collect();
        out.sort();
        out
    };
    let (dir, path, mut store) = new_store();
    store
        .store_incoming(CONTACT, &[1; 32], &[1; 16], 1, CANARY)
        .unwrap();
    let wal = files(&path)[1].clone();
    let expected = vec![(path.clone(), 0o600), (wal.clone(), 0o600)];
    assert_eq!(modes(dir.path()), expected, "written, open");
    drop(store);
    for (file, mode) in modes(dir.path()) {
        assert_eq!(mode, 0o600, "{}", file.display());
    }

    // As an earlier version left them: the database and an empty WAL 0644.
    std::fs::write(&wal, b"").unwrap();
    for file in [&path, &wal] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut store = Store::open(&path, &key()).unwrap();
    store
        .store_incoming(CONTACT, &[2; 32], &[2; 16], 2, CANARY)
        .unwrap();
    assert_eq!(modes(dir.path()), expected, "reopened, written");
    assert_eq!(store.received().unwrap().len(), 2, "nothing lost");
    drop(store);
}

#[test]
fn a_sealed_value_moved_to_another_row_or_table_is_refused() {
    let (_dir, path, mut store) = new_store();
    let mut rng = ward_core::os_rng();
    let identity = IdentityKeyPair::generate(&mut rng);
    store
        .add_one_time_prekeys(&OneTimePreKeyPair::generate_batch(&mut rng, 1, 2), 3)
        .unwrap();
    store
        .save_signed_prekey(&SignedPreKeyPair::generate(&mut rng, &identity, 2, 5))
        .unwrap();
    let one = pair();
    let two = pair();
    let one_bob = *one.bob.public().signing_key();
    let two_bob = *two.bob.public().signing_key();
    store.save_session(&one.to_bob).unwrap();
    store.save_session(&two.to_bob).unwrap();
    store
        .store_incoming(CONTACT, &[1; 32], &[1; 16], 1, b"one")
        .unwrap();
    store
        .store_incoming(CONTACT, &[2; 32], &[2; 16], 2, b"two")
        .unwrap();
    store.queue_outgoing(&[1; 16], &[CONTACT], b"one").unwrap();
    store.queue_outgoing(&[2; 16], &[CONTACT], b"two").unwrap();
    store.record_identity(CONTACT, &[1; 32], b"one").unwrap();
    store.record_identity(CONTACT, &[2; 32], b"two").unwrap();
    drop(store);
    let snapshot = std::fs::read(&path).unwrap();
    let restore = || {
        std::fs::write(&path, &snapshot).unwrap();
    };

    // Another row of the same table.
    edit(
        &path,
        "UPDATE one_time_prekeys SET secret = (SELECT secret FROM one_time_prekeys WHERE id = 1) WHERE id = 2",
    );
    let mut store = Store::open(&path, &key()).unwrap();
    assert!(matches!(
        store.take_one_time_prekey(2),
        Err(StoreError::Tampered {
            table: "one_time_prekeys"
        })
    ));
    // Refused, so not deleted either; the untouched row still opens.
    assert!(store.take_one_time_prekey(1).unwrap().is_some());
    assert!(matches!(
        store.one_time_prekey(2),
        Err(StoreError::Tampered { .. })
    ));
    drop(store);
    restore();

    // Another table, same id.
    edit(
        &path,
        "UPDATE one_time_prekeys SET secret = (SELECT secret FROM signed_prekeys WHERE id = 2) WHERE id = 2",
    );
    let store = Store::open(&path, &key()).unwrap();
    assert!(matches!(
        store.one_time_prekey(2),
        Err(StoreError::Tampered {
            table: "one_time_prekeys"
        })
    ));
    drop(store);
    restore();

    // A session state under another device's row.
    edit(
        &path,
        "UPDATE sessions SET state = (SELECT state FROM sessions ORDER BY used LIMIT 1) \
         WHERE used = (SELECT max(used) FROM sessions)",
    );
    let store = Store::open(&path, &key()).unwrap();
    assert!(store.session(&one_bob).unwrap().is_some());
    assert!(matches!(
        store.session(&two_bob),
        Err(StoreError::Tampered { table: "sessions" })
    ));
    drop(store);
    restore();

    // A whole session row relabelled as the other device's.
    edit(
        &path,
        "UPDATE sessions SET device_tag = (SELECT device_tag FROM sessions ORDER BY used DESC LIMIT 1) \
         WHERE used = (SELECT min(used) FROM sessions)",
    );
    let store = Store::open(&path, &key()).unwrap();
    assert!(matches!(
        store.sessions(&two_bob),
        Err(StoreError::Tampered { table: "sessions" })
    ));
    drop(store);
    restore();

    // Received messages, outbox entries and identities swapped between rows.
    for table in ["incoming", "outbox", "identities"] {
        edit(
            &path,
            &format!(
                "UPDATE {table} SET value = (SELECT value FROM {table} WHERE seq = 1) WHERE seq = 2"
            ),
        );
        let store = Store::open(&path, &key()).unwrap();
        let result = match table {
            "incoming" => store.received().map(drop),
            "outbox" => store.outbox().map(drop),
            _ => store.known_identities(CONTACT).map(drop),
        };
        match result {
            Err(StoreError::Tampered { table: t }) => assert_eq!(t, table),
            other => panic!("{table}: {other:?}"),
        }
        drop(store);
        restore();
    }

    // A sealed identity from one table in another.
    edit(
        &path,
        "UPDATE incoming SET value = (SELECT value FROM outbox WHERE seq = 1) WHERE seq = 1",
    );
    let store = Store::open(&path, &key()).unwrap();
    assert!(matches!(
        store.received(),
        Err(StoreError::Tampered { table: "incoming" })
    ));
}

#[test]
fn flipping_any_byte_of_a_sealed_value_is_refused() {
    let (_dir, path, mut store) = new_store();
    store
        .add_one_time_prekeys(
            &OneTimePreKeyPair::generate_batch(&mut ward_core::os_rng(), 1, 1),
            2,
        )
        .unwrap();
    store
        .store_incoming(CONTACT, &[1; 32], &[1; 16], 1, CANARY)
        .unwrap();
    drop(store);
    let select_prekey = "SELECT secret FROM one_time_prekeys WHERE id = 1";
    let update_prekey = "UPDATE one_time_prekeys SET secret = ?1 WHERE id = 1";
    let original = read_blob(&path, select_prekey);
    assert_eq!(original.len(), 12 + 37 + 16);
    for i in 0..original.len() {
        let mut flipped = original.clone();
        flipped[i] ^= 0x80;
        write_blob(&path, update_prekey, &flipped);
        let store = Store::open(&path, &key()).unwrap();
        match store.one_time_prekey(1) {
            Err(StoreError::Tampered {
                table: "one_time_prekeys",
            }) => {}
            other => panic!("byte {i}: {other:?}"),
        }
    }
    // Shortened and lengthened values fail too.
    for bad in [
        &original[..original.len() - 1],
        &original[..27],
        &original[..0],
    ] {
        write_blob(&path, update_prekey, bad);
        let store = Store::open(&path, &key()).unwrap();
        assert!(matches!(
            store.one_time_prekey(1),
            Err(StoreError::Tampered { .. } | StoreError::Corrupt { .. })
        ));
    }
    let mut longer = original.clone();
    longer.push(0);
    write_blob(&path, update_prekey, &longer);
    let store = Store::open(&path, &key()).unwrap();
    assert!(matches!(
        store.one_time_prekey(1),
        Err(StoreError::Tampered { .. })
    ));
    drop(store);
    write_blob(&path, update_prekey, &original);

    // A message body: every byte.
    let original = read_blob(&path, "SELECT value FROM incoming");
    for i in 0..original.len() {
        let mut flipped = original.clone();
        flipped[i] ^= 0x01;
        write_blob(&path, "UPDATE incoming SET value = ?1", &flipped);
        let store = Store::open(&path, &key()).unwrap();
        assert!(
            matches!(
                store.received(),
                Err(StoreError::Tampered { table: "incoming" })
            ),
            "byte {i}"
        );
    }
    write_blob(&path, "UPDATE incoming SET value = ?1", &original);
    let store = Store::open(&path, &key()).unwrap();
    assert_eq!(store.received().unwrap()[0].body, CANARY);
}

#[test]
fn plain_columns_bound_to_a_record_cannot_be_changed() {
    let (_dir, path, mut store) = new_store();
    let mut rng = ward_core::os_rng();
    let identity = IdentityKeyPair::generate(&mut rng);
    let signed = SignedPreKeyPair::generate(&mut rng, &identity, 1, 1_700_000_000);
    store.save_signed_prekey(&signed).unwrap();
    store
        .save_device(&DeviceRecord {
            user_id: "alice@clinic.example".to_owned(),
            relay: relay(),
            identity,
        })
        .unwrap();
    drop(store);
    let snapshot = std::fs::read(&path).unwrap();

    // The relay pin redirected to an attacker's relay.
    edit(&path, "UPDATE device SET relay_fingerprint = zeroblob(32)");
    let store = Store::open(&path, &key()).unwrap();
    assert!(matches!(
        store.device(),
        Err(StoreError::Tampered { table: "device" })
    ));
    drop(store);
    std::fs::write(&path, &snapshot).unwrap();
    edit(
        &path,
        "UPDATE device SET relay_address = 'evil.example:4433'",
    );
    let store = Store::open(&path, &key()).unwrap();
    assert!(matches!(
        store.device(),
        Err(StoreError::Tampered { table: "device" })
    ));
    drop(store);
    std::fs::write(&path, &snapshot).unwrap();

    // An old signed prekey made to look new (never rotated out).
    edit(&path, "UPDATE signed_prekeys SET created_at = 1900000000");
    let store = Store::open(&path, &key()).unwrap();
    assert!(matches!(
        store.signed_prekeys(),
        Err(StoreError::Tampered {
            table: "signed_prekeys"
        })
    ));
    drop(store);

    // A plain column of the wrong type is a typed error, not a panic.
    std::fs::write(&path, &snapshot).unwrap();
    edit(&path, "UPDATE signed_prekeys SET created_at = -5");
    let store = Store::open(&path, &key()).unwrap();
    assert!(matches!(
        store.signed_prekeys(),
        Err(StoreError::Corrupt {
            table: "signed_prekeys",
            ..
        })
    ));
}

#[test]
fn no_plaintext_contact_or_key_bytes_in_the_files() {
    let (_dir, path, mut store) = new_store();
    let p = pair();
    let own_secret = p.alice.to_secret_bytes();
    let contact_key = *p.bob.public().signing_key();
    let state = p.to_bob.to_bytes();
    store
        .save_device(&DeviceRecord {
            user_id: "alice@clinic.example".to_owned(),
            relay: relay(),
            identity: IdentityKeyPair::from_secret_bytes(own_secret.as_slice()).unwrap(),
        })
        .unwrap();
    let batch = OneTimePreKeyPair::generate_batch(&mut ward_core::os_rng(), 1, 3);
    store.add_one_time_prekeys(&batch, 4).unwrap();
    store.save_session(&p.to_bob).unwrap();
    store
        .record_identity(CONTACT, &contact_key, &p.bob.public().to_bytes())
        .unwrap();
    let message_id = [0x4d; 16];
    store
        .store_incoming(CONTACT, &contact_key, &message_id, 1, CANARY)
        .unwrap();
    store
        .queue_outgoing(&message_id, &[CONTACT], CANARY)
        .unwrap();
    // A taken prekey and a replaced session leave no old plaintext either.
    store.take_one_time_prekey(2).unwrap();
    store.save_session(&p.to_bob).unwrap();

    let mut needles: Vec<(&str, Vec<u8>)> = vec![
        ("canary", CANARY.to_vec()),
        ("storage key", KEY.to_vec()),
        ("identity seed", own_secret[1..33].to_vec()),
        ("identity dh secret", own_secret[33..65].to_vec()),
        ("contact user id", CONTACT.as_bytes().to_vec()),
        ("contact device key", contact_key.to_vec()),
        ("message id", message_id.to_vec()),
        ("session state", state[..48.min(state.len())].to_vec()),
    ];
    for k in &batch {
        needles.push(("one-time prekey secret", k.to_secret_bytes()[5..].to_vec()));
    }
    let check = |when: &str| {
        let mut seen = 0;
        for file in files(&path) {
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            seen += bytes.len();
            for (what, needle) in &needles {
                assert!(
                    !contains(&bytes, needle),
                    "{what} found in {} ({when})",
                    file.display()
                );
            }
        }
        assert!(seen > 0);
    };
    // While open the writes sit in the WAL (checked above); the exclusive
    // lock keeps the WAL index in memory, so there is no -shm file.
    let [_, wal, shm, _] = <[PathBuf; 4]>::try_from(files(&path)).unwrap();
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    assert!(!shm.exists());
    check("open");
    drop(store);
    // Closing checkpoints the WAL into the database file and removes it.
    assert!(!wal.exists());
    check("closed");
}

#[test]
fn a_second_open_is_refused_while_the_store_is_open() {
    let (_dir, path, store) = new_store();
    assert!(matches!(Store::open(&path, &key()), Err(StoreError::InUse)));
    let other = rusqlite::Connection::open(&path).unwrap();
    assert!(
        other
            .query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0))
            .is_err()
    );
    drop(other);
    drop(store);
    Store::open(&path, &key()).unwrap();
}

#[test]
fn files_that_are_not_stores_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, vec![0x42; 4096]).unwrap();
    assert!(matches!(
        Store::open(&garbage, &key()),
        Err(StoreError::NotAStore)
    ));
    let foreign = dir.path().join("foreign.sqlite3");
    edit(&foreign, "CREATE TABLE notes (body TEXT)");
    assert!(matches!(
        Store::open(&foreign, &key()),
        Err(StoreError::NotAStore)
    ));
    // An empty file becomes a store.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    Store::open(&empty, &key()).unwrap();
}

#[test]
fn an_altered_schema_is_refused() {
    let (_dir, path, store) = new_store();
    drop(store);
    let snapshot = std::fs::read(&path).unwrap();
    for sql in [
        "CREATE TABLE extra (x)",
        "CREATE INDEX extra ON incoming (acknowledged)",
        "CREATE TRIGGER t AFTER INSERT ON incoming BEGIN DELETE FROM incoming; END",
        "CREATE VIEW v AS SELECT * FROM incoming",
        "DROP TABLE outbox",
    ] {
        edit(&path, sql);
        match Store::open(&path, &key()) {
            Err(StoreError::Corrupt {
                table: "schema", ..
            }) => {}
            other => panic!("{sql}: {other:?}"),
        }
        std::fs::write(&path, &snapshot).unwrap();
    }
    edit(&path, "DROP TABLE meta");
    assert!(matches!(
        Store::open(&path, &key()),
        Err(StoreError::Corrupt { table: "meta", .. })
    ));
}

#[test]
fn a_later_format_is_refused() {
    let (_dir, path, store) = new_store();
    drop(store);
    edit(&path, "UPDATE meta SET format = 6");
    assert!(matches!(
        Store::open(&path, &key()),
        Err(StoreError::UnsupportedFormat { found: 6 })
    ));
}

#[test]
fn atomically_commits_all_or_nothing() {
    let (_dir, path, mut store) = new_store();
    let batch = OneTimePreKeyPair::generate_batch(&mut ward_core::os_rng(), 1, 2);
    store.add_one_time_prekeys(&batch, 3).unwrap();

    // An error half-way undoes every change made inside.
    let failed: Result<(), StoreError> = store.atomically(|s| {
        assert!(s.take_one_time_prekey(1)?.is_some());
        s.store_incoming(CONTACT, &[1; 32], &[1; 16], 1, b"x")?;
        s.atomically(|s| s.queue_outgoing(&[1; 16], &[CONTACT], b"y"))?;
        Err(StoreError::Locked)
    });
    assert!(matches!(failed, Err(StoreError::Locked)));
    assert!(store.one_time_prekey(1).unwrap().is_some());
    assert!(store.received().unwrap().is_empty());
    assert!(store.outbox().unwrap().is_empty());

    // So does a panic.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _: Result<(), StoreError> = store.atomically(|s| {
            s.take_one_time_prekey(1)?;
            panic!("the app crashed");
        });
    }));
    assert!(panicked.is_err());
    assert!(store.one_time_prekey(1).unwrap().is_some());

    // A successful closure commits everything, durably.
    store
        .atomically(|s| {
            s.take_one_time_prekey(1)?;
            s.store_incoming(CONTACT, &[1; 32], &[1; 16], 1, b"x")?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let store = reopen(store, &path);
    assert!(store.one_time_prekey(1).unwrap().is_none());
    assert_eq!(store.received().unwrap().len(), 1);
}

#[test]
fn debug_output_shows_no_secrets() {
    let (_dir, _path, mut store) = new_store();
    let identity = IdentityKeyPair::generate(&mut ward_core::os_rng());
    let secret = identity.to_secret_bytes();
    store
        .save_device(&DeviceRecord {
            user_id: "alice@clinic.example".to_owned(),
            relay: relay(),
            identity,
        })
        .unwrap();
    store
        .store_incoming(CONTACT, &[1; 32], &[1; 16], 1, CANARY)
        .unwrap();
    store.queue_outgoing(&[2; 16], &[CONTACT], CANARY).unwrap();
    store
        .record_identity(CONTACT, &[3; 32], b"identity")
        .unwrap();

    let outputs = [
        format!("{:?}", key()),
        format!("{store:?}"),
        format!("{:?}", store.device().unwrap().unwrap()),
        format!("{:?}", store.received().unwrap()),
        format!("{:?}", store.unacknowledged().unwrap()),
        format!("{:?}", store.outbox().unwrap()),
        format!("{:?}", store.known_identities(CONTACT).unwrap()),
    ];
    let canary = String::from_utf8_lossy(CANARY).into_owned();
    let key_decimal = format!("{:?}", KEY);
    let secret_decimal = format!("{:?}", &secret[1..9]);
    for out in &outputs {
        assert!(!out.contains(&canary), "{out}");
        assert!(!out.contains(CONTACT), "{out}");
        assert!(!out.contains(&key_decimal[1..20]), "{out}");
        assert!(!out.contains("5a5a") && !out.contains("90, 90"), "{out}");
        assert!(
            !out.contains(&secret_decimal[1..secret_decimal.len() - 1]),
            "{out}"
        );
    }
    assert_eq!(outputs[0], "StorageKey(..)");
    // The errors name tables, never contents.
    let e = StoreError::Tampered { table: "incoming" };
    assert_eq!(
        e.to_string(),
        "a sealed value in incoming failed authentication"
    );
}

/// Run as a child process by the test below: commits pairs of records,
/// printing the index of each commit, until it is killed.
fn crash_child(path: &Path) -> ! {
    use std::io::Write;
    let mut store = Store::open(path, &key()).unwrap();
    let mut out = std::io::stdout();
    for i in 0u32.. {
        let id: [u8; 16] = core::array::from_fn(|b| (i >> (8 * (b % 4))) as u8);
        store
            .atomically(|s| {
                s.store_incoming(CONTACT, &[1; 32], &id, u64::from(i), CANARY)?;
                s.queue_outgoing(&id, &[CONTACT], CANARY)?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        writeln!(out, "{i}").unwrap();
        out.flush().unwrap();
    }
    unreachable!()
}

#[test]
fn a_killed_process_leaves_the_last_committed_state() {
    use std::io::BufRead;
    const CHILD: &str = "WARD_STORE_CRASH_CHILD";
    if let Some(path) = std::env::var_os(CHILD) {
        crash_child(Path::new(&path));
    }
    let (_dir, path, store) = new_store();
    drop(store);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_killed_process_leaves_the_last_committed_state",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut last = None;
    for line in std::io::BufReader::new(stdout).lines() {
        if let Ok(i) = line.unwrap().trim().parse::<u32>() {
            last = Some(i);
            if i >= 40 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-transaction or between two
    child.wait().unwrap();
    let last = last.expect("the child committed nothing");

    let store = Store::open(&path, &key()).unwrap();
    let received = store.received().unwrap().len();
    let queued = store.outbox().unwrap().len();
    // Both records of a commit, or neither; every reported commit is there.
    assert_eq!(received, queued);
    assert!(received > last as usize, "{received} <= {last}");
    assert!(store.received().unwrap().iter().all(|m| m.body == CANARY));
}
