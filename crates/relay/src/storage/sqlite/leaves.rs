//! The audit Merkle log's leaf hashes in the `audit_leaves` table.

use rusqlite::{Connection, OptionalExtension};
use ward_audit::{Hash, LeafStore, TruncateLeaves};

use crate::storage::error::StorageError;

/// A [`LeafStore`] over the writer connection.
///
/// It owns the writer [`Connection`]: the [`MerkleLog`](ward_audit::MerkleLog)
/// owns the store, so the storage reaches the connection through
/// `log.store().conn()`. [`append`](LeafStore::append) writes into whatever
/// transaction is open on it, so a leaf commits or rolls back together with
/// the change it audits. `len` is cached: [`truncate`](TruncateLeaves::truncate)
/// re-reads it after a rollback, and it is re-read when the log is reloaded
/// after another writer's commit.
pub(crate) struct SqliteLeaves {
    conn: Connection,
    len: u64,
}

impl SqliteLeaves {
    /// Wraps the connection, counting the stored leaves.
    pub(crate) fn new(conn: Connection) -> Result<Self, StorageError> {
        let len = stored_len(&conn)?;
        Ok(Self { conn, len })
    }

    /// The writer connection.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Gives the connection back.
    pub(crate) fn into_conn(self) -> Connection {
        self.conn
    }
}

/// The number of leaves in the table: one past the greatest index (an
/// index lookup, not a scan). Leaves are dense from 0: indices come from
/// the log, which appends `len()` each time.
pub(crate) fn stored_len(conn: &Connection) -> Result<u64, StorageError> {
    let max: Option<u64> = conn
        .prepare_cached("SELECT MAX(idx) FROM audit_leaves")?
        .query_row([], |row| row.get(0))?;
    Ok(max.map_or(0, |m| m + 1))
}

impl LeafStore for SqliteLeaves {
    type Error = StorageError;

    fn len(&self) -> Result<u64, StorageError> {
        Ok(self.len)
    }

    fn leaf_hash(&self, index: u64) -> Result<Option<Hash>, StorageError> {
        Ok(self
            .conn
            .prepare_cached("SELECT leaf_hash FROM audit_leaves WHERE idx = ?1")?
            .query_row([index], |row| row.get::<_, [u8; 32]>(0))
            .optional()?)
    }

    fn append(&mut self, leaf_hash: Hash) -> Result<(), StorageError> {
        self.conn
            .prepare_cached("INSERT INTO audit_leaves (idx, leaf_hash) VALUES (?1, ?2)")?
            .execute(rusqlite::params![self.len, leaf_hash])?;
        self.len += 1;
        Ok(())
    }
}

impl TruncateLeaves for SqliteLeaves {
    /// The table is append-only (its triggers refuse deletes): leaves go
    /// away only when the savepoint or transaction that appended them rolls
    /// back. So this checks that the table holds exactly `len` leaves now,
    /// and takes that as the cached count.
    fn truncate(&mut self, len: u64) -> Result<(), StorageError> {
        let stored = stored_len(&self.conn)?;
        if stored != len {
            return Err(StorageError::Backend(format!(
                "audit log rollback expected {len} leaf hashes, the table holds {stored}"
            )));
        }
        self.len = len;
        Ok(())
    }
}
