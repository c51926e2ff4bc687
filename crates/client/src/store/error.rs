//! The store's errors (spec/11-client-store.md, "Errors").

use rusqlite::ErrorCode;

/// Why a store operation failed.
///
/// No variant carries secret material or record contents: tables are named
/// by their fixed names, never by a key or an identifier of a contact.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage key does not match the store's key check (STO-5): the
    /// wrong key, or a damaged `meta` row.
    #[error("the storage key does not open this store")]
    WrongKey,
    /// The store is locked: [`Store::lock`](super::Store::lock) dropped its
    /// keys and no record can be read or written until
    /// [`Store::unlock`](super::Store::unlock).
    #[error("the store is locked")]
    Locked,
    /// Another connection (another `Store`, another process) holds the
    /// database (STO-16).
    #[error("the store is open elsewhere")]
    InUse,
    /// The file is not a Ward store: not SQLite, or SQLite with another
    /// application id or foreign tables.
    #[error("the file is not a Ward store")]
    NotAStore,
    /// The store was written in a format this build does not know.
    #[error("store format {found} is not supported")]
    UnsupportedFormat {
        /// The format number found in `meta`.
        found: i64,
    },
    /// A sealed value did not authenticate under its place (STO-9): it was
    /// modified, or moved from another row or table.
    #[error("a sealed value in {table} failed authentication")]
    Tampered {
        /// The table the value was read from.
        table: &'static str,
    },
    /// A record is malformed: a plain column of the wrong type or length,
    /// a sealed value too short or too long, an opened value whose layout
    /// is wrong, or a schema that is not the store's.
    #[error("a record in {table} is malformed: {detail}")]
    Corrupt {
        /// The table (or `"schema"`, `"meta"`).
        table: &'static str,
        /// What is wrong, for people.
        detail: &'static str,
    },
    /// An opened value is not a valid `ward-core` secret or session state
    /// (for instance a format from a later version of the core).
    #[error("a record in {table} does not decode: {source}")]
    Decode {
        /// The table the value was read from.
        table: &'static str,
        /// The core's decoding error.
        #[source]
        source: ward_core::Error,
    },
    /// An argument exceeds a bound of spec/11 ("Constants").
    #[error("{what} is too large")]
    TooLarge {
        /// The argument.
        what: &'static str,
    },
    /// A prekey id is already held (spec/02, KEY-12); nothing was written.
    #[error("id {id} is already in use in {table}")]
    IdInUse {
        /// The table.
        table: &'static str,
        /// The id.
        id: u32,
    },
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random,
    /// [`Store::wipe`](super::Store::wipe) could not remove a file.
    #[error("could not remove the store's {file} file: {source}")]
    Wipe {
        /// Which file: `"database"`, `"wal"`, `"shm"`, `"journal"` or the
        /// containing `"directory"` (synchronising the removal).
        file: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// [`Store::open`](super::Store::open) could not create the database
    /// file mode 0600, or take group and other permissions away from a
    /// file of the store (STO-25).
    #[error("could not make the store's {file} file private to its owner: {source}")]
    FileMode {
        /// Which file: `"database"`, `"wal"`, `"shm"` or `"journal"`.
        file: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed (I/O error, disk full, ...).
    #[error("database error: {0}")]
    Database(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Self::InUse,
            Some(ErrorCode::NotADatabase) => Self::NotAStore,
            _ => Self::Database(e),
        }
    }
}

/// The store's result type.
pub(super) type Result<T, E = StoreError> = core::result::Result<T, E>;

/// A malformed-record error.
pub(super) fn corrupt(table: &'static str, detail: &'static str) -> StoreError {
    StoreError::Corrupt { table, detail }
}
