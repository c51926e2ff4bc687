//! Shared payloads: the one ciphertext of a group send, stored once.
//!
//! A group send (spec/08, "`Send`"; spec/13) carries one ciphertext for
//! many devices. It is stored once, as a row of `payloads`, and each of
//! its queued copies (a `queue` row, one per recipient device, as for any
//! send) refers to it by `payload` and holds an empty `ciphertext` of its
//! own. Reads take a copy's ciphertext and size from its payload if it has
//! one: `ifnull(p.ciphertext, q.ciphertext)` and
//! `ifnull(length(p.ciphertext), length(q.ciphertext))` over `queue q LEFT
//! JOIN payloads p ON p.id = q.payload` (fetch, acknowledgment, expiry,
//! revocation).
//!
//! **Lifetime.** A payload lives exactly as long as a copy refers to it:
//! the trigger `queue_payload_release` (schema version 5) deletes it in the
//! statement that deletes its last copy, so every path that deletes copies
//! (acknowledgment, expiry, revocation, wipe, and any added later) frees it
//! in the same transaction without having to remember to. The count of
//! references is the copies themselves, found through the partial index
//! `queue_by_payload`, not a stored counter that a path could forget to
//! keep in step; the foreign key refuses a copy of a missing payload, so
//! neither orphans nor dangling copies can be committed. [`store`] and the
//! copies referring to it are written in one request's savepoint, so a
//! refused or failed send leaves neither.
//!
//! **Ordinary envelopes stay inline.** A per-device ciphertext has one
//! copy, so a payload row would save nothing and cost, per message, one
//! more row insert and delete, the trigger's lookup, and an index entry;
//! the 1:1 path, which carries most traffic, keeps its single-row insert
//! and delete (its copies have `payload` NULL, which the partial index does
//! not hold, and the trigger's `WHEN` skips). A mixed send stores its
//! envelopes inline and its shared ciphertext once.

use rusqlite::Connection;

use crate::storage::error::Result;

/// Stores a shared ciphertext (non-empty: the table's `CHECK`) and returns
/// its id, for the copies that refer to it, written next in the same
/// savepoint. A payload with no copy referring to it must not be
/// committed: the trigger frees payloads only when a copy is deleted.
pub(super) fn store(conn: &Connection, ciphertext: &[u8]) -> Result<i64> {
    conn.prepare_cached("INSERT INTO payloads (ciphertext) VALUES (?1)")?
        .execute([ciphertext])?;
    Ok(conn.last_insert_rowid())
}
