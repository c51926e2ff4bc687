//! The SQLite schema and its migrations.
//!
//! `schema_version` holds one row, the number of migrations applied.
//! Migration `i` (1-based) is `MIGRATIONS[i - 1]`; each runs in its own
//! `BEGIN IMMEDIATE` transaction together with the version bump, so a crash
//! leaves the database at one version or the next. A database from a newer
//! relay (a version above [`SCHEMA_VERSION`]) is refused, not downgraded.
//!
//! Integers are `u64` values checked into SQLite's `i64` (times in ms since
//! the Unix epoch, sequence numbers, counters). Keys, hashes, ids and
//! ciphertext are blobs with their lengths checked by `CHECK` constraints.

use rusqlite::{Connection, OptionalExtension};

use crate::storage::error::{Result, StorageError};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 5;

/// Version 1.
const V1: &str = r#"
CREATE TABLE users (
    user_id    TEXT PRIMARY KEY NOT NULL,
    role       TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- next_seq: the sequence number of the next message queued for the device
-- (never reused, so a client's `after_seq` cursor stays valid).
-- queue_len: the number of queued copies, kept in step with `queue`, so
-- that the depth check costs one row read.
CREATE TABLE devices (
    device_key  BLOB PRIMARY KEY NOT NULL CHECK (length(device_key) = 32),
    user_id     TEXT NOT NULL REFERENCES users (user_id),
    identity    BLOB NOT NULL CHECK (length(identity) = 128),
    enrolled_at INTEGER NOT NULL,
    revoked_at  INTEGER,
    next_seq    INTEGER NOT NULL DEFAULT 1,
    queue_len   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX devices_by_user ON devices (user_id, enrolled_at);

-- Only the hash of a token is stored.
CREATE TABLE enrollment_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL CHECK (length(token_hash) = 32),
    user_id    TEXT NOT NULL REFERENCES users (user_id),
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    device_key BLOB REFERENCES devices (device_key)
) WITHOUT ROWID;

CREATE TABLE signed_prekeys (
    device_key BLOB PRIMARY KEY NOT NULL REFERENCES devices (device_key),
    encoded    BLOB NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE one_time_prekeys (
    device_key BLOB NOT NULL REFERENCES devices (device_key),
    prekey_id  INTEGER NOT NULL,
    encoded    BLOB NOT NULL,
    PRIMARY KEY (device_key, prekey_id)
) WITHOUT ROWID;

-- One row per accepted message, for idempotent retries; dropped at expiry.
CREATE TABLE sends (
    sender      BLOB NOT NULL REFERENCES devices (device_key),
    message_id  BLOB NOT NULL CHECK (length(message_id) = 16),
    enqueued_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (sender, message_id)
) WITHOUT ROWID;
CREATE INDEX sends_by_expiry ON sends (expires_at);

-- One row per recipient copy. A rowid table: ciphertext rows are large.
CREATE TABLE queue (
    id          INTEGER PRIMARY KEY,
    recipient   BLOB NOT NULL REFERENCES devices (device_key),
    seq         INTEGER NOT NULL,
    sender      BLOB NOT NULL REFERENCES devices (device_key),
    message_id  BLOB NOT NULL CHECK (length(message_id) = 16),
    enqueued_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    ciphertext  BLOB NOT NULL,
    UNIQUE (recipient, seq)
);
CREATE INDEX queue_by_message ON queue (recipient, message_id);
CREATE INDEX queue_by_send ON queue (sender, message_id);
CREATE INDEX queue_by_expiry ON queue (expires_at);

-- The audit log: encoded entries, their leaf hashes (the Merkle log's
-- LeafStore) and the signed tree heads. Append-only, enforced below.
CREATE TABLE audit_entries (
    seq          INTEGER PRIMARY KEY,
    timestamp_ms INTEGER NOT NULL,
    entry        BLOB NOT NULL
);
CREATE TABLE audit_leaves (
    idx       INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL CHECK (length(leaf_hash) = 32)
);
CREATE TABLE audit_heads (
    id           INTEGER PRIMARY KEY,
    tree_size    INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    head         BLOB NOT NULL CHECK (length(head) = 113)
);
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_leaves_no_update BEFORE UPDATE ON audit_leaves
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_leaves_no_delete BEFORE DELETE ON audit_leaves
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_heads_no_update BEFORE UPDATE ON audit_heads
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"#;

/// Version 2: an index of revoked devices, for `revoked_since` (which a
/// running server polls); partial, so it holds only revoked devices.
const V2: &str = r#"
CREATE INDEX devices_by_revocation ON devices (revoked_at) WHERE revoked_at IS NOT NULL;
"#;

/// Version 3: remote wipe (spec/08, "Remote wipe"). `wipe_requested_at`
/// is set when an administrator instructs a device to erase its store, and
/// cleared when the device acknowledges (or is revoked); the partial index
/// holds only pending wipes, for `wipes_requested_since`.
const V3: &str = r#"
ALTER TABLE devices ADD COLUMN wipe_requested_at INTEGER;
CREATE INDEX devices_by_pending_wipe ON devices (wipe_requested_at)
    WHERE wipe_requested_at IS NOT NULL;
"#;

/// Version 4: role schedules (spec/15), as an administrator signed them.
/// The relay keeps the latest version of each role and serves its bytes;
/// it cannot change them without the signature failing on every device.
const V4: &str = r#"
CREATE TABLE role_schedules (
    role_id      TEXT PRIMARY KEY,
    version      INTEGER NOT NULL,
    signed       BLOB NOT NULL,
    published_at INTEGER NOT NULL
);
"#;

/// Version 5: shared payloads (spec/08, "`Send`"; see `payloads.rs`). A
/// group send's one ciphertext is a row of `payloads`, and each of its
/// queued copies refers to it by `payload`, with an empty `ciphertext` of
/// its own; ordinary copies keep their ciphertext inline and `payload`
/// NULL. The trigger deletes a payload with the last copy that refers to
/// it, in the statement that deletes the copy, whatever the path
/// (acknowledgment, expiry, revocation, wipe): a payload lives exactly as
/// long as a copy refers to it. The foreign key refuses a copy of a
/// missing payload, and the partial index (group copies only) makes the
/// trigger's and the foreign key's lookups one probe.
const V5: &str = r#"
CREATE TABLE payloads (
    id         INTEGER PRIMARY KEY,
    ciphertext BLOB NOT NULL CHECK (length(ciphertext) > 0)
);
ALTER TABLE queue ADD COLUMN payload INTEGER REFERENCES payloads (id)
    CHECK (payload IS NULL OR length(ciphertext) = 0);
CREATE INDEX queue_by_payload ON queue (payload) WHERE payload IS NOT NULL;
CREATE TRIGGER queue_payload_release AFTER DELETE ON queue
    WHEN old.payload IS NOT NULL
BEGIN
    DELETE FROM payloads WHERE id = old.payload
        AND NOT EXISTS (SELECT 1 FROM queue WHERE payload = old.payload);
END;
"#;

/// Every migration, in order.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1, V2, V3, V4, V5];

fn current_version(conn: &Connection) -> Result<u32> {
    Ok(conn
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Brings the database to [`SCHEMA_VERSION`].
pub(crate) fn migrate(conn: &Connection) -> Result<()> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Brings the database to `target` (at most [`SCHEMA_VERSION`]; tests make
/// databases of earlier versions with it). A database above
/// [`SCHEMA_VERSION`] is refused whatever the target.
fn migrate_to(conn: &Connection, target: u32) -> Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    loop {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let step = (|| {
            // Read under the write lock: another process may be migrating.
            let version = current_version(conn)?;
            if version > SCHEMA_VERSION {
                return Err(StorageError::Backend(format!(
                    "database schema version {version} is newer than this relay's {SCHEMA_VERSION}"
                )));
            }
            if version >= target {
                return Ok(false);
            }
            let Some(sql) = MIGRATIONS.get(version as usize) else {
                return Ok(false);
            };
            conn.execute_batch(sql)?;
            if version == 0 {
                conn.execute("INSERT INTO schema_version (version) VALUES (1)", [])?;
            } else {
                conn.execute("UPDATE schema_version SET version = ?1", [version + 1])?;
            }
            Ok(true)
        })();
        match step {
            Ok(more) => {
                conn.execute_batch("COMMIT")?;
                if !more {
                    return Ok(());
                }
            }
            Err(e) => {
                // The migration's own error is the one worth reporting.
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ward_audit::{MessageId, UserId};

    use super::*;
    use crate::storage::{
        DATABASE_FILE, DeviceKey, DeviceSet, SharedDelivery, SqliteStorage, Storage, StorageConfig,
    };

    const A1: DeviceKey = DeviceKey([1; 32]);
    const B1: DeviceKey = DeviceKey([2; 32]);
    const B2: DeviceKey = DeviceKey([3; 32]);
    const T0: u64 = 1_790_000_000_000;

    fn payload_count(dir: &std::path::Path) -> u64 {
        Connection::open(dir.join(DATABASE_FILE))
            .unwrap()
            .query_row("SELECT COUNT(*) FROM payloads", [], |row| row.get(0))
            .unwrap()
    }

    /// A database as a version-4 relay leaves it: users `a` and `b`,
    /// devices A1 of `a` and B1, B2 of `b`, and one message from A1 queued
    /// for B1.
    fn version_4(dir: &std::path::Path) {
        let conn = Connection::open(dir.join(DATABASE_FILE)).unwrap();
        migrate_to(&conn, 4).unwrap();
        let version: u32 = conn
            .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, 4);
        conn.execute_batch(&format!(
            "INSERT INTO users VALUES ('a', 'nurse', {T0}), ('b', 'nurse', {T0});
             INSERT INTO devices (device_key, user_id, identity, enrolled_at)
                 VALUES (x'{a1}', 'a', zeroblob(128), {T0});
             INSERT INTO devices (device_key, user_id, identity, enrolled_at, next_seq, queue_len)
                 VALUES (x'{b1}', 'b', zeroblob(128), {T0}, 2, 1),
                        (x'{b2}', 'b', zeroblob(128), {T0} + 1, 1, 0);
             INSERT INTO sends VALUES (x'{a1}', x'{id}', {T0}, {T0} + 3600000);
             INSERT INTO queue (recipient, seq, sender, message_id, enqueued_at, expires_at, ciphertext)
                 VALUES (x'{b1}', 1, x'{a1}', x'{id}', {T0}, {T0} + 3600000, x'0102030405');",
            a1 = hex::encode(A1.0),
            b1 = hex::encode(B1.0),
            b2 = hex::encode(B2.0),
            id = hex::encode([7u8; 16]),
        ))
        .unwrap();
    }

    #[test]
    fn a_version_4_database_is_migrated_with_its_queue() {
        let dir = tempfile::tempdir().unwrap();
        version_4(dir.path());
        let s = SqliteStorage::open(dir.path(), StorageConfig::default()).unwrap();
        let version: u32 = Connection::open(s.path())
            .unwrap()
            .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);

        // The message queued before the migration is delivered as it was.
        let queued = s.fetch(&B1, 0, 10).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].ciphertext, [1, 2, 3, 4, 5]);
        assert_eq!(queued[0].message_id, MessageId([7; 16]));

        // The migrated database takes group sends.
        let receipt = s
            .enqueue(
                &A1,
                MessageId([8; 16]),
                T0 + 10,
                T0 + 3_600_000,
                &[UserId::new("b").unwrap()],
                &[],
                DeviceSet::Subset {
                    shared: Some(SharedDelivery {
                        recipients: &[B1, B2],
                        ciphertext: b"group!",
                    }),
                },
            )
            .unwrap();
        assert_eq!(receipt.copies.len(), 2);
        assert_eq!(receipt.copies[0].seq, 2, "B1's queue goes on from 2");
        assert_eq!(payload_count(dir.path()), 1);
        let acked = s
            .acknowledge(&B1, &[MessageId([7; 16]), MessageId([8; 16])], T0 + 20)
            .unwrap();
        assert_eq!(
            acked.acked.iter().map(|m| m.size).collect::<Vec<_>>(),
            [5, 6]
        );
        assert_eq!(payload_count(dir.path()), 1, "B2 still holds a copy");
        s.ack(&B2, MessageId([8; 16]), T0 + 30).unwrap();
        assert_eq!(payload_count(dir.path()), 0);
    }

    #[test]
    fn a_database_from_a_newer_relay_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStorage::open(dir.path(), StorageConfig::default()).unwrap());
        Connection::open(dir.path().join(DATABASE_FILE))
            .unwrap()
            .execute(
                "UPDATE schema_version SET version = ?1",
                [SCHEMA_VERSION + 1],
            )
            .unwrap();
        match SqliteStorage::open(dir.path(), StorageConfig::default()) {
            Err(StorageError::Backend(message)) => {
                assert!(message.contains("newer than this relay's"), "{message}");
            }
            other => panic!("opened: {other:?}"),
        }
        // Refused, not downgraded.
        let version: u32 = Connection::open(dir.path().join(DATABASE_FILE))
            .unwrap()
            .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION + 1);
    }
}
