//! Role schedules in SQLite (schema version 4): one row per role, its
//! latest signed schedule.

use rusqlite::{Connection, OptionalExtension, params};
use ward_audit::{AuditEntry, EventKind, UserId};

use super::writer::Tx;
use super::{check_int, detail, entry};
use crate::storage::error::{Result, StorageError};
use crate::storage::types::RoleScheduleRecord;

pub(super) fn publish(
    tx: &mut Tx<'_>,
    record: &RoleScheduleRecord,
    admin: Option<UserId>,
    now: u64,
) -> Result<()> {
    let version = check_int(record.version, "version out of range")?;
    let held: Option<u64> = tx
        .conn()
        .prepare_cached("SELECT version FROM role_schedules WHERE role_id = ?1")?
        .query_row([record.role_id.as_str()], |row| row.get(0))
        .optional()?;
    if held.is_some_and(|held| held >= version) {
        return Err(StorageError::AlreadyExists {
            what: "role schedule version",
        });
    }
    tx.conn()
        .prepare_cached(
            "INSERT INTO role_schedules (role_id, version, signed, published_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (role_id) DO UPDATE SET \
             version = excluded.version, signed = excluded.signed, \
             published_at = excluded.published_at",
        )?
        .execute(params![
            record.role_id.as_str(),
            version,
            record.signed,
            now
        ])?;
    tx.audit(
        AuditEntry {
            actor_user: admin,
            detail: detail(&format!("role={} v={}", record.role_id, record.version)),
            ..entry(EventKind::AdminAction)
        },
        now,
    )?;
    Ok(())
}

fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RoleScheduleRecord> {
    Ok(RoleScheduleRecord {
        role_id: row.get(0)?,
        version: row.get(1)?,
        signed: row.get(2)?,
        published_at: row.get(3)?,
    })
}

pub(super) fn get(conn: &Connection, role_id: &str) -> Result<RoleScheduleRecord> {
    conn.prepare_cached(
        "SELECT role_id, version, signed, published_at FROM role_schedules WHERE role_id = ?1",
    )?
    .query_row([role_id], row)
    .optional()?
    .ok_or(StorageError::NotFound {
        what: "role schedule",
    })
}

pub(super) fn list(conn: &Connection) -> Result<Vec<RoleScheduleRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT role_id, version, signed, published_at FROM role_schedules ORDER BY role_id",
    )?;
    let rows = stmt.query_map([], row)?;
    rows.map(|r| Ok(r?)).collect()
}
