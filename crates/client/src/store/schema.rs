//! The store's SQLite schema (spec/11, "Tables"), and the upgrades of
//! stores of formats 1 to 3.

use rusqlite::Connection;

use super::error::{Result, corrupt};

/// The schema of format 1. The stored `CREATE` statements of a store must
/// be exactly those of its format (STO-14): `open` compares them with a
/// fresh in-memory copy.
const SCHEMA_1: &str = "\
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    format INTEGER NOT NULL,
    salt BLOB NOT NULL,
    key_check BLOB NOT NULL
) STRICT;
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
CREATE TABLE device (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    user_id TEXT NOT NULL,
    relay_address TEXT NOT NULL,
    relay_fingerprint BLOB NOT NULL,
    identity BLOB NOT NULL
) STRICT;
CREATE TABLE signed_prekeys (
    id INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    secret BLOB NOT NULL
) STRICT;
CREATE TABLE one_time_prekeys (
    id INTEGER PRIMARY KEY,
    secret BLOB NOT NULL
) STRICT;
CREATE TABLE sessions (
    tag BLOB PRIMARY KEY,
    device_tag BLOB NOT NULL,
    used INTEGER NOT NULL,
    state BLOB NOT NULL
) STRICT;
CREATE INDEX sessions_by_device ON sessions (device_tag, used);
CREATE TABLE identities (
    seq INTEGER PRIMARY KEY,
    tag BLOB NOT NULL UNIQUE,
    user_tag BLOB NOT NULL,
    value BLOB NOT NULL
) STRICT;
CREATE INDEX identities_by_user ON identities (user_tag);
CREATE TABLE incoming (
    seq INTEGER PRIMARY KEY,
    tag BLOB NOT NULL UNIQUE,
    acknowledged INTEGER NOT NULL,
    value BLOB NOT NULL
) STRICT;
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    tag BLOB NOT NULL UNIQUE,
    status INTEGER NOT NULL,
    value BLOB NOT NULL
) STRICT;
";

/// What format 2 adds to format 1: the event queue.
const EVENTS_TABLE: &str = "\
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
";

/// What format 3 adds to format 2: the role schedules taken (spec/15,
/// ROLE-4), so that a relay cannot roll one back across restarts.
const ROLE_SCHEDULES_TABLE: &str = "\
CREATE TABLE role_schedules (
    tag BLOB PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
";

/// What format 4 adds to format 3: groups (spec/14), the group traffic
/// that waits for a chain, a welcome or a parent change, and the outbox of
/// group traffic, addressed to devices.
const GROUP_TABLES: &str = "\
CREATE TABLE groups (
    tag BLOB PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
CREATE TABLE group_pending (
    seq INTEGER PRIMARY KEY,
    tag BLOB NOT NULL UNIQUE,
    group_tag BLOB NOT NULL,
    value BLOB NOT NULL
) STRICT;
CREATE INDEX group_pending_by_group ON group_pending (group_tag, seq);
CREATE TABLE group_outbox (
    seq INTEGER PRIMARY KEY,
    tag BLOB NOT NULL UNIQUE,
    group_tag BLOB NOT NULL,
    status INTEGER NOT NULL,
    value BLOB NOT NULL
) STRICT;
CREATE INDEX group_outbox_by_status ON group_outbox (status, seq);
";

/// What format 5 adds to format 4: the recent messages of role threads,
/// for handing them to a role's next holder, and the last hold handed
/// off per role (spec/15, "Threads and handoff").
const ROLE_THREAD_TABLES: &str = "\
CREATE TABLE role_threads (
    seq INTEGER PRIMARY KEY,
    tag BLOB NOT NULL UNIQUE,
    role_tag BLOB NOT NULL,
    at_ms INTEGER NOT NULL,
    value BLOB NOT NULL
) STRICT;
CREATE INDEX role_threads_by_role ON role_threads (role_tag, at_ms);
CREATE INDEX role_threads_by_time ON role_threads (at_ms);
CREATE TABLE role_handoffs (
    tag BLOB PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
";

/// Creates the schema of the current format (5) in an empty database.
pub(super) fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA_1)?;
    conn.execute_batch(EVENTS_TABLE)?;
    conn.execute_batch(ROLE_SCHEDULES_TABLE)?;
    conn.execute_batch(GROUP_TABLES)?;
    conn.execute_batch(ROLE_THREAD_TABLES)?;
    Ok(())
}

/// Upgrades the schema of a store of format 1 to format 2; the caller
/// fills the new table and sets `meta.format` in the same transaction.
pub(super) fn upgrade_1_to_2(conn: &Connection) -> Result<()> {
    conn.execute_batch(EVENTS_TABLE)?;
    Ok(())
}

/// Upgrades the schema of a store of format 2 to format 3.
pub(super) fn upgrade_2_to_3(conn: &Connection) -> Result<()> {
    conn.execute_batch(ROLE_SCHEDULES_TABLE)?;
    Ok(())
}

/// Upgrades the schema of a store of format 3 to format 4.
pub(super) fn upgrade_3_to_4(conn: &Connection) -> Result<()> {
    conn.execute_batch(GROUP_TABLES)?;
    Ok(())
}

/// Upgrades the schema of a store of format 4 to format 5.
pub(super) fn upgrade_4_to_5(conn: &Connection) -> Result<()> {
    conn.execute_batch(ROLE_THREAD_TABLES)?;
    Ok(())
}

type SchemaRow = (String, String, String, Option<String>);

fn schema_rows(conn: &Connection) -> Result<Vec<SchemaRow>> {
    let mut stmt =
        conn.prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<Vec<SchemaRow>>>();
    // A column of an unexpected type in sqlite_schema is a damaged file.
    rows.map_err(|_| corrupt("schema", "unreadable schema"))
}

/// Refuses a database whose schema is not exactly that of `format` (1 to
/// 5): no extra table, index, trigger or view, no changed column (STO-14).
pub(super) fn check(conn: &Connection, format: u8) -> Result<()> {
    let expected = Connection::open_in_memory()?;
    match format {
        1 => expected.execute_batch(SCHEMA_1)?,
        2 => {
            expected.execute_batch(SCHEMA_1)?;
            expected.execute_batch(EVENTS_TABLE)?;
        }
        3 => {
            expected.execute_batch(SCHEMA_1)?;
            expected.execute_batch(EVENTS_TABLE)?;
            expected.execute_batch(ROLE_SCHEDULES_TABLE)?;
        }
        4 => {
            expected.execute_batch(SCHEMA_1)?;
            expected.execute_batch(EVENTS_TABLE)?;
            expected.execute_batch(ROLE_SCHEDULES_TABLE)?;
            expected.execute_batch(GROUP_TABLES)?;
        }
        _ => create(&expected)?,
    }
    if schema_rows(conn)? == schema_rows(&expected)? {
        Ok(())
    } else {
        Err(corrupt("schema", "the schema is not the store's"))
    }
}

/// Whether the database holds no schema at all (a new or empty file).
pub(super) fn is_empty(conn: &Connection) -> Result<bool> {
    let count: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    Ok(count == 0)
}
