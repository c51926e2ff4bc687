//! Setup shared by the client's integration tests.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

pub mod relay;

use std::path::{Path, PathBuf};

use tempfile::TempDir;
use ward_client::{StorageKey, Store};

/// The storage key of the store tests.
pub const KEY: [u8; 32] = [0x5a; 32];

pub fn key() -> StorageKey {
    StorageKey::new(KEY)
}

/// A new store in a directory of its own.
pub fn new_store() -> (TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.sqlite3");
    let store = Store::open(&path, &key()).unwrap();
    (dir, path, store)
}

/// Closes `store` and opens it again.
pub fn reopen(store: Store, path: &Path) -> Store {
    drop(store);
    Store::open(path, &key()).unwrap()
}

/// Edits the closed store with a plain SQLite connection.
pub fn edit(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

pub fn read_blob(path: &Path, sql: &str) -> Vec<u8> {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

pub fn write_blob(path: &Path, sql: &str, value: &[u8]) {
    let conn = rusqlite::Connection::open(path).unwrap();
    assert_eq!(conn.execute(sql, [value]).unwrap(), 1);
}

pub fn read_integer(path: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}
