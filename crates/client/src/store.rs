//! The device's local store (spec/11-client-store.md). The public face is
//! [`Store`]; its documentation gives the overview.

mod codec;
mod crypto;
mod error;
mod events;
mod groups;
mod messages;
mod records;
mod role_threads;
mod roles;
mod schema;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

pub use self::codec::MAX_NAME_LEN;
use self::crypto::{Keys, SALT_LEN, derive, random};
pub use self::crypto::{MAX_VALUE_LEN, StorageKey};
pub use self::error::StoreError;
use self::error::{Result, corrupt};
pub use self::events::{HandoffRefusal, PendingEvent};
pub use self::groups::{
    GroupSend, MAX_GROUP_PENDING, MAX_GROUP_SENT_KEPT, PendingGroupItem, PendingKind,
};
pub use self::messages::{Insertion, MessageRef, OutboxStatus, OutgoingMessage, ReceivedMessage};
pub use self::records::{DeviceRecord, IdentityStatus, KnownIdentity, RelayInfo, SignedPreKeyInfo};
pub use self::role_threads::{MAX_ROLE_THREAD_ENTRIES, RoleThreadEntry};

/// The store format this build writes (`meta.format`). It reads this one
/// and formats 1 to 4, which it upgrades on open (spec/11, "Formats").
pub const STORE_FORMAT: u8 = 5;

/// The version byte of every sealed value's associated data (spec/11,
/// "Sealed values"); unchanged since format 1, so that an upgrade rewrites
/// no value.
pub(crate) const RECORD_FORMAT: u8 = 1;

/// SQLite's `application_id` of a Ward store: `"WARD"` read as a
/// big-endian integer.
pub const APPLICATION_ID: i32 = 0x5741_5244;

/// The name SQLite's savepoints carry; they nest.
const SAVEPOINT: &str = "ward";

/// The device's local store (spec/11-client-store.md): one SQLite file in
/// which every record that holds session state, keys, contacts or message
/// bodies is sealed with ChaCha20-Poly1305 under keys derived from the
/// app's [`StorageKey`].
///
/// The API is synchronous and small: [`Store::open`] creates or opens a
/// store; each kind of record has its own typed methods (below); every
/// method that changes more than one row runs in one SQLite transaction,
/// and [`Store::atomically`] joins several calls into one. A failed call
/// changes nothing.
///
/// | Record | Write | Read |
/// |---|---|---|
/// | Device identity, user, relay | [`Store::save_device`] | [`Store::device`] |
/// | Signed prekey sets | [`Store::save_signed_prekey`], [`Store::delete_signed_prekey`] | [`Store::signed_prekey`], [`Store::signed_prekeys`] |
/// | One-time prekeys | [`Store::add_one_time_prekeys`], [`Store::take_one_time_prekey`] | [`Store::one_time_prekey`], [`Store::one_time_prekey_count`], [`Store::next_one_time_id`] |
/// | Sessions | [`Store::save_session`], [`Store::delete_session`], [`Store::delete_sessions`] | [`Store::session`], [`Store::session_by_base_key`], [`Store::sessions`] |
/// | Known identities | [`Store::record_identity`], [`Store::forget_identity`] | [`Store::known_identities`] |
/// | Received messages | [`Store::store_incoming`], [`Store::mark_acknowledged`], [`Store::delete_received`] | [`Store::received`], [`Store::received_message`], [`Store::unacknowledged`] |
/// | Outbox | [`Store::queue_outgoing`], [`Store::mark_sent`], [`Store::delete_outgoing`] | [`Store::outbox`], [`Store::pending_outgoing`] |
/// | Event queue | [`Store::push_event`], [`Store::delete_event`] | [`Store::first_event`], [`Store::pending_events`] |
///
/// # Locking
///
/// [`Store::lock`] drops (and zeroizes) the derived keys; until
/// [`Store::unlock`] every record method fails with
/// [`StoreError::Locked`]. SQLite's page cache holds the file's bytes
/// (sealed values and the few plain columns of spec/11), so no secret or
/// message remains readable in the store's memory while it is locked;
/// values already returned to the app are the app's to drop.
///
/// # One store, one connection
///
/// The database is opened with `locking_mode = EXCLUSIVE`: while a
/// `Store` is open no other connection, in this process or another, can
/// read or write the file ([`StoreError::InUse`]). Two copies of a session
/// state that both encrypt would reuse message keys (spec/06, SES-5).
pub struct Store {
    conn: Connection,
    path: PathBuf,
    salt: [u8; SALT_LEN],
    key_check: [u8; 32],
    keys: Option<Keys>,
}

impl core::fmt::Debug for Store {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            conn: _,
            path: _,
            salt: _,
            key_check: _,
            keys,
        } = self;
        f.debug_struct("Store")
            .field("locked", &keys.is_none())
            .finish_non_exhaustive()
    }
}

fn configure(conn: &Connection) -> Result<()> {
    // No triggers or views can run, the schema is not trusted, and the
    // schema cannot be written directly (STO-14).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_VIEW, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    // Before the first access, so that SQLite keeps the WAL index in memory
    // (no -shm file) and holds the file lock until the store closes (STO-16).
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(corrupt("journal", "could not enable WAL"));
    }
    // Every commit is on disk before the call returns (STO-15).
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Deleted records (a used one-time prekey, a replaced session state)
    // are overwritten with zeros in the database file (STO-17).
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cell_size_check", "ON")?;
    Ok(())
}

/// `path` with `suffix` appended, as SQLite names its side files.
fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates the database file mode 0600 before SQLite opens it (SQLite
/// gives its `-wal` and `-journal` files the database's mode), and takes
/// group and other permissions away from a database and side files created
/// before (STO-25). The umask is not changed; other systems than Unix have
/// no modes.
fn create_private(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true).mode(0o600);
        match options.open(path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::FileMode {
                    file: "database",
                    source: e,
                });
            }
            _ => {}
        }
        for (suffix, file) in [
            ("", "database"),
            ("-wal", "wal"),
            ("-shm", "shm"),
            ("-journal", "journal"),
        ] {
            let failed = |source| StoreError::FileMode { file, source };
            let side = side_file(path, suffix);
            let meta = match std::fs::metadata(&side) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed(e)),
            };
            let mode = meta.permissions().mode();
            if meta.is_file() && mode & 0o077 != 0 {
                let private = std::fs::Permissions::from_mode(mode & 0o700);
                std::fs::set_permissions(&side, private).map_err(failed)?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Rolls a savepoint back unless released.
struct Savepoint<'a> {
    conn: &'a Connection,
    released: bool,
}

impl<'a> Savepoint<'a> {
    fn begin(conn: &'a Connection) -> Result<Self> {
        conn.execute_batch(&format!("SAVEPOINT {SAVEPOINT}"))?;
        Ok(Self {
            conn,
            released: false,
        })
    }

    fn release(mut self) -> Result<()> {
        self.conn.execute_batch(&format!("RELEASE {SAVEPOINT}"))?;
        self.released = true;
        Ok(())
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if !self.released {
            rollback(self.conn);
        }
    }
}

/// Undoes the innermost savepoint. If SQLite already rolled the whole
/// transaction back (after an I/O error, say) there is no savepoint left
/// and the error is moot.
fn rollback(conn: &Connection) {
    let _ = conn.execute_batch(&format!("ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}"));
}

impl Store {
    /// Opens the store at `path`, creating it (file and schema, one
    /// transaction) if the file does not exist or is empty.
    ///
    /// An existing store opens only under the key it was created with;
    /// any other key is [`StoreError::WrongKey`] (STO-5). A file that is
    /// not a Ward store is [`StoreError::NotAStore`]; one held by another
    /// connection is [`StoreError::InUse`].
    pub fn open(path: impl AsRef<Path>, key: &StorageKey) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        create_private(&path)?;
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let application_id: i64 =
            tx.pragma_query_value(None, "application_id", |row| row.get(0))?;
        let (salt, key_check, keys) = if schema::is_empty(&tx)? {
            if application_id != 0 {
                return Err(StoreError::NotAStore);
            }
            schema::create(&tx)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            let salt = random::<SALT_LEN>()?;
            let (keys, check) = derive(key, &salt);
            tx.execute(
                "INSERT INTO meta (id, format, salt, key_check) VALUES (1, ?1, ?2, ?3)",
                params![STORE_FORMAT, salt, check.0],
            )?;
            (salt, check.0, keys)
        } else {
            if application_id != i64::from(APPLICATION_ID) {
                return Err(StoreError::NotAStore);
            }
            let (format, salt, key_check) = read_meta(&tx)?;
            schema::check(&tx, format)?;
            let (keys, check) = derive(key, &salt);
            if !check.matches(&key_check) {
                return Err(StoreError::WrongKey);
            }
            if format == 1 {
                upgrade_1_to_2(&tx, &keys)?;
            }
            if format <= 2 {
                schema::upgrade_2_to_3(&tx)?;
            }
            if format <= 3 {
                schema::upgrade_3_to_4(&tx)?;
            }
            if format <= 4 {
                schema::upgrade_4_to_5(&tx)?;
                tx.execute("UPDATE meta SET format = ?1 WHERE id = 1", [STORE_FORMAT])?;
            }
            (salt, key_check, keys)
        };
        tx.commit()?;
        Ok(Self {
            conn,
            path,
            salt,
            key_check,
            keys: Some(keys),
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops the derived keys, zeroizing them. Every record method then
    /// fails with [`StoreError::Locked`] until [`Store::unlock`].
    pub fn lock(&mut self) {
        self.keys = None;
    }

    /// Whether the store is locked.
    pub fn is_locked(&self) -> bool {
        self.keys.is_none()
    }

    /// Derives the keys from `key` again and checks them against the
    /// store's key check: [`StoreError::WrongKey`] if it does not match, and
    /// the store stays as it was (locked, or unlocked under its key).
    pub fn unlock(&mut self, key: &StorageKey) -> Result<()> {
        let (keys, check) = derive(key, &self.salt);
        if !check.matches(&self.key_check) {
            return Err(StoreError::WrongKey);
        }
        self.keys = Some(keys);
        Ok(())
    }

    /// Closes the store and deletes its files: the database and its
    /// `-wal`, `-shm` and `-journal` files (those that exist). Works on a
    /// locked store. Returns the first failure, after trying every file.
    ///
    /// Deleting files does not erase flash storage: what makes leftover
    /// copies unreadable is that the app also deletes the storage key from
    /// the platform's key store (spec/11, STO-19).
    pub fn wipe(self) -> Result<()> {
        let Self { conn, path, .. } = self;
        let closed = conn.close().map_err(|(conn, e)| {
            drop(conn);
            StoreError::from(e)
        });
        let removed = Self::wipe_path(&path);
        closed.and(removed)
    }

    /// Deletes the files of a store that is not open, for instance one whose
    /// storage key is lost. Files that do not exist are not an error.
    pub fn wipe_path(path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut first_error = None;
        for (suffix, file) in [
            ("-wal", "wal"),
            ("-shm", "shm"),
            ("-journal", "journal"),
            ("", "database"),
        ] {
            match std::fs::remove_file(side_file(path, suffix)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    first_error.get_or_insert(StoreError::Wipe { file, source });
                }
            }
        }
        #[cfg(unix)]
        if first_error.is_none() {
            // Make the removal itself durable.
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if let Err(source) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
                first_error = Some(StoreError::Wipe {
                    file: "directory",
                    source,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Runs `f` as one transaction: if it returns an error (or panics),
    /// every change it made through the store is undone; if it returns
    /// `Ok`, they are committed together (durably, if this is the outermost
    /// call). Calls nest.
    ///
    /// ```no_run
    /// # use ward_client::{Store, StorageKey, StoreError};
    /// # fn f(store: &mut Store, session: &ward_core::Session) -> Result<(), StoreError> {
    /// // A pre-key message was accepted: keep the session, drop the
    /// // one-time prekey and keep the message, or none of them.
    /// store.atomically(|s| {
    ///     s.save_session(session)?;
    ///     s.take_one_time_prekey(7)?;
    ///     s.store_incoming("bob", &[1; 32], &[2; 16], 1_700_000_000_000, b"hello")?;
    ///     Ok::<_, StoreError>(())
    /// })
    /// # }
    /// ```
    pub fn atomically<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        struct Guard<'a> {
            store: &'a mut Store,
            released: bool,
        }
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                if !self.released {
                    rollback(&self.store.conn);
                }
            }
        }
        self.conn
            .execute_batch(&format!("SAVEPOINT {SAVEPOINT}"))
            .map_err(StoreError::from)?;
        let mut guard = Guard {
            store: self,
            released: false,
        };
        let value = f(&mut *guard.store)?;
        guard
            .store
            .conn
            .execute_batch(&format!("RELEASE {SAVEPOINT}"))
            .map_err(StoreError::from)?;
        guard.released = true;
        Ok(value)
    }

    /// The keys, or [`StoreError::Locked`].
    fn keys(&self) -> Result<&Keys> {
        self.keys.as_ref().ok_or(StoreError::Locked)
    }

    /// Runs `f` over the connection and the keys inside a savepoint: one
    /// transaction, or part of the caller's [`Store::atomically`].
    fn write<T>(&mut self, f: impl FnOnce(&Connection, &Keys) -> Result<T>) -> Result<T> {
        let keys = self.keys.as_ref().ok_or(StoreError::Locked)?;
        let savepoint = Savepoint::begin(&self.conn)?;
        let value = f(&self.conn, keys)?;
        savepoint.release()?;
        Ok(value)
    }
}

/// Format 1 had no event queue: a message stored but not acknowledged was
/// reported again on every open until acknowledged. Queueing those
/// messages' events once reports each of them once more, as format 1
/// would have on this open, and never again.
fn upgrade_1_to_2(conn: &Connection, keys: &Keys) -> Result<()> {
    schema::upgrade_1_to_2(conn)?;
    for message in messages::unacknowledged_in(conn, keys)? {
        events::push(conn, keys, &PendingEvent::Received(message))?;
    }
    conn.execute("UPDATE meta SET format = 2 WHERE id = 1", [])?;
    Ok(())
}

/// `meta`: the format (1 to 4), the salt and the key check.
fn read_meta(conn: &Connection) -> Result<(u8, [u8; SALT_LEN], [u8; 32])> {
    // A database with Ward's application id but no `meta` table is damaged.
    let mut stmt = conn
        .prepare("SELECT format, salt, key_check FROM meta WHERE id = 1")
        .map_err(|_| corrupt("meta", "no meta table"))?;
    let mut rows = stmt.query([])?;
    let row = rows.next()?.ok_or_else(|| corrupt("meta", "no meta row"))?;
    let found = codec::integer(row, 0, "meta")?;
    let format = match u8::try_from(found) {
        Ok(format @ (1 | 2 | 3 | 4 | STORE_FORMAT)) => format,
        _ => return Err(StoreError::UnsupportedFormat { found }),
    };
    let salt = codec::blob_n::<SALT_LEN>(row, 1, "meta")?;
    let key_check = codec::blob_n::<32>(row, 2, "meta")?;
    Ok((format, salt, key_check))
}
