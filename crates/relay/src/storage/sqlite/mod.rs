//! The embedded backend: SQLite (bundled) in the relay's data directory.
//!
//! # Connections and transactions
//!
//! - **One writer**: a [`Connection`] behind a [`Mutex`], owned by the
//!   audit [`MerkleLog`] as its [`LeafStore`](ward_audit::LeafStore)
//!   ([`SqliteLeaves`]). Every mutating call takes the mutex, runs
//!   `BEGIN IMMEDIATE`, checks, changes, appends its audit entries (entry
//!   bytes to `audit_entries`, leaf hash to `audit_leaves` through the log)
//!   and commits. On any error it rolls back, and if the in-memory tree had
//!   absorbed leaves that are now gone, rebuilds it from the table.
//! - **Readers**: a small pool of `query_only` connections for calls that
//!   change nothing (WAL lets them run beside the writer).
//! - **Several writers** (a second handle on the same directory, or a
//!   second process) stay correct: after `BEGIN IMMEDIATE` the writer compares
//!   the stored leaf count with its tree and reloads the tree if another
//!   writer appended (so do roots and proofs before they read the tree).
//!   That costs one index lookup per transaction. (It is a
//!   safety net, not a deployment mode: the tree reload is O(n).)
//!
//! # Durability
//!
//! `journal_mode = WAL`, `synchronous = FULL`: every commit fsyncs the WAL
//! before it returns. With `NORMAL` a WAL commit survives a process crash
//! but not a power loss, and the relay acknowledges a send to the sender
//! only after the commit: a message the sender was told is stored must
//! survive power loss on the host, so FULL.
//!
//! `secure_delete = FAST` overwrites deleted ciphertext in the database
//! pages when that costs no extra I/O; `foreign_keys = ON`.
//!
//! # TODO: group commit
//!
//! Today each call is its own transaction, so each enqueue pays one fsync
//! (a few hundred to a few thousand commits per second, depending on the
//! disk). The design for the throughput target of issue 3: a dedicated
//! writer thread owns the writer connection and the log and receives
//! requests (an enum of the mutating operations plus a one-shot reply
//! channel) over a bounded channel. It takes the first request, then drains
//! whatever else is queued (up to a batch limit), and runs them in one
//! `BEGIN IMMEDIATE` transaction, each inside its own `SAVEPOINT`: a refused
//! request rolls back to its savepoint (and the tree is rebuilt only if it
//! appended and was refused after, which the current code avoids by
//! appending last), the others stay. One `COMMIT` (one fsync) for the
//! batch, then every caller is answered; if the commit fails, every caller
//! in the batch gets the error. The [`Storage`] trait does not change: its
//! methods become "send and wait for the reply".

mod leaves;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use ward_audit::{
    AuditEntry, ConsistencyProof, Detail, EventKind, Export, ExportWriter, InclusionProof,
    LogError, MerkleLog, MessageId, SignedTreeHead, SigningKey, UserId, VerifyingKey,
};

use self::leaves::{SqliteLeaves, stored_len};
pub use self::schema::SCHEMA_VERSION;
use super::Storage;
use super::error::{Result, StorageError};
use super::types::{
    AckedMessage, AuditState, DEVICE_KEY_LEN, Delivery, Device, DeviceKey, EnqueueReceipt,
    ExpiredMessage, IDENTITY_LEN, OneTimePreKey, PreKeyBundle, QueuedCopy, QueuedMessage,
    Revocation, Role, TOKEN_HASH_LEN, User,
};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "ward-relay.sqlite3";

/// Tunables of [`SqliteStorage`]. Start from [`Default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// The most messages queued for one device; an enqueue beyond it is
    /// [`StorageError::QueueFull`].
    pub max_queue_depth: u32,
    /// The largest ciphertext stored for one recipient, in bytes.
    pub max_ciphertext_len: usize,
    /// The most one-time prekeys stored for one device.
    pub max_one_time_prekeys: u32,
    /// The largest encoded signed-prekey bundle or one-time prekey, in bytes.
    pub max_prekey_len: usize,
    /// How long a connection waits for another's lock before failing.
    pub busy_timeout: Duration,
    /// How many idle reader connections are kept open.
    pub max_idle_readers: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            max_queue_depth: 10_000,
            max_ciphertext_len: 256 * 1024,
            max_one_time_prekeys: 1_000,
            max_prekey_len: 16 * 1024,
            busy_timeout: Duration::from_secs(5),
            max_idle_readers: 4,
        }
    }
}

type Log = MerkleLog<SqliteLeaves>;

/// [`Storage`] in a SQLite database in a data directory.
pub struct SqliteStorage {
    path: PathBuf,
    config: StorageConfig,
    /// The writer; `None` only if rebuilding the tree after a failure
    /// failed too (then every write fails until the storage is reopened).
    writer: Mutex<Option<Log>>,
    readers: Mutex<Vec<Connection>>,
}

impl core::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn backend(what: &str) -> StorageError {
    StorageError::Backend(what.to_owned())
}

fn writer_gone() -> StorageError {
    backend("the storage writer failed to recover from an earlier error; reopen the storage")
}

fn poisoned() -> StorageError {
    backend("a storage lock is poisoned")
}

/// Times and other integers are stored as SQLite's `i64`.
fn check_int(value: u64, what: &'static str) -> Result<u64> {
    if value > i64::MAX as u64 {
        Err(StorageError::InvalidInput(what))
    } else {
        Ok(value)
    }
}

fn stored_user_id(text: &str) -> Result<UserId> {
    UserId::new(text).map_err(|e| StorageError::Backend(format!("stored user id: {e}")))
}

fn entry(kind: EventKind) -> AuditEntry {
    AuditEntry::new(0, 0, kind)
}

fn detail(text: &str) -> Option<Detail> {
    Detail::new(text).ok()
}

fn log_error<E: core::fmt::Display>(e: LogError<E>) -> StorageError {
    match e {
        LogError::OutOfRange { .. } => {
            StorageError::InvalidInput("index or size beyond the audit log")
        }
        other => other.into(),
    }
}

fn create_data_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        // The directory holds ciphertext and metadata: owner only.
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn open_connection(path: &Path, config: &StorageConfig, reader: bool) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(config.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(64);
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Backend(format!(
            "could not enable WAL (journal_mode is {mode})"
        )));
    }
    // FULL: see the module documentation (durability of acknowledged sends).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "FAST")?;
    if reader {
        conn.pragma_update(None, "query_only", "ON")?;
    }
    Ok(conn)
}

/// The latest timestamp in the log: of its last entry or its last head.
fn not_before(conn: &Connection) -> Result<u64> {
    let (entries, heads): (Option<u64>, Option<u64>) = conn.query_row(
        "SELECT (SELECT MAX(timestamp_ms) FROM audit_entries), \
                (SELECT MAX(timestamp_ms) FROM audit_heads)",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok(entries.unwrap_or(0).max(heads.unwrap_or(0)))
}

fn last_head(conn: &Connection) -> Result<Option<SignedTreeHead>> {
    let bytes: Option<Vec<u8>> = conn
        .prepare_cached("SELECT head FROM audit_heads ORDER BY id DESC LIMIT 1")?
        .query_row([], |row| row.get(0))
        .optional()?;
    bytes.map(|b| decode_head(&b)).transpose()
}

fn decode_head(bytes: &[u8]) -> Result<SignedTreeHead> {
    SignedTreeHead::decode(bytes)
        .map_err(|e| StorageError::Backend(format!("stored tree head: {e}")))
}

fn decode_entry(bytes: &[u8]) -> Result<AuditEntry> {
    AuditEntry::decode(bytes).map_err(|e| StorageError::Backend(format!("stored audit entry: {e}")))
}

/// Rebuilds the Merkle log from the tables and checks that they agree: as
/// many entries as leaves, and the last signed head's root is the tree's
/// root at its size.
fn load_log(conn: Connection) -> Result<Log> {
    let not_before = not_before(&conn)?;
    let entries: Option<u64> =
        conn.query_row("SELECT MAX(seq) FROM audit_entries", [], |row| row.get(0))?;
    let entries = entries.map_or(0, |m| m + 1);
    let leaves = stored_len(&conn)?;
    if entries != leaves {
        return Err(StorageError::Backend(format!(
            "audit log has {entries} entries but {leaves} leaf hashes"
        )));
    }
    let head = last_head(&conn)?;
    let log = MerkleLog::open(SqliteLeaves::new(conn)?, not_before)?;
    if let Some(head) = head
        && log.root_at(head.head.tree_size).map_err(log_error)? != head.head.root
    {
        return Err(backend(
            "audit log does not match its last signed tree head",
        ));
    }
    Ok(log)
}

/// Replaces the writer's tree by one rebuilt from the tables.
fn reload(slot: &mut Option<Log>) -> Result<()> {
    let log = slot.take().ok_or_else(writer_gone)?;
    *slot = Some(load_log(log.into_store().into_conn())?);
    Ok(())
}

fn needs_reload(slot: &Option<Log>) -> Result<bool> {
    let log = slot.as_ref().ok_or_else(writer_gone)?;
    Ok(stored_len(log.store().conn())? != log.size())
}

/// A write transaction in progress.
struct Tx<'a> {
    log: &'a mut Log,
    config: &'a StorageConfig,
}

/// A device row.
struct DeviceRow {
    key: [u8; DEVICE_KEY_LEN],
    user: String,
    identity: [u8; IDENTITY_LEN],
    enrolled_at: u64,
    revoked_at: Option<u64>,
}

const DEVICE_COLUMNS: &str = "device_key, user_id, identity, enrolled_at, revoked_at";

impl DeviceRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            key: row.get(0)?,
            user: row.get(1)?,
            identity: row.get(2)?,
            enrolled_at: row.get(3)?,
            revoked_at: row.get(4)?,
        })
    }

    fn into_device(self) -> Result<Device> {
        Ok(Device {
            key: DeviceKey(self.key),
            user: stored_user_id(&self.user)?,
            identity: self.identity,
            enrolled_at: self.enrolled_at,
            revoked_at: self.revoked_at,
        })
    }
}

fn find_device(conn: &Connection, key: &DeviceKey) -> Result<Option<Device>> {
    conn.prepare_cached(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE device_key = ?1"
    ))?
    .query_row([key.0], DeviceRow::read)
    .optional()?
    .map(DeviceRow::into_device)
    .transpose()
}

fn get_device(conn: &Connection, key: &DeviceKey) -> Result<Device> {
    find_device(conn, key)?.ok_or(StorageError::NotFound { what: "device" })
}

fn active_device(conn: &Connection, key: &DeviceKey) -> Result<Device> {
    let device = get_device(conn, key)?;
    if device.is_active() {
        Ok(device)
    } else {
        Err(StorageError::Revoked { device: *key })
    }
}

fn user_exists(conn: &Connection, user: &UserId) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM users WHERE user_id = ?1")?
        .exists([user.as_str()])?)
}

fn list_devices(conn: &Connection, user: &UserId, include_revoked: bool) -> Result<Vec<Device>> {
    if !user_exists(conn, user)? {
        return Err(StorageError::NotFound { what: "user" });
    }
    let sql = if include_revoked {
        format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = ?1 \
             ORDER BY enrolled_at, device_key"
        )
    } else {
        format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = ?1 AND revoked_at IS NULL \
             ORDER BY enrolled_at, device_key"
        )
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([user.as_str()], DeviceRow::read)?;
    rows.map(|row| row?.into_device()).collect()
}

impl Tx<'_> {
    fn conn(&self) -> &Connection {
        self.log.store().conn()
    }

    /// Appends an audit entry: numbered and dated by the log, stored in
    /// `audit_entries`, its leaf hash in `audit_leaves`, all in the open
    /// transaction.
    fn audit(&mut self, mut entry: AuditEntry, now: u64) -> Result<u64> {
        let sequence = self.log.size();
        entry.sequence = sequence;
        entry.timestamp_ms = now.max(self.log.not_before_ms());
        self.conn()
            .prepare_cached(
                "INSERT INTO audit_entries (seq, timestamp_ms, entry) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![sequence, entry.timestamp_ms, entry.encode()])?;
        self.log.append(&entry)?;
        Ok(sequence)
    }

    fn check_prekey_len(&self, len: usize) -> Result<()> {
        if len == 0 || len > self.config.max_prekey_len {
            Err(StorageError::InvalidInput("prekey is empty or too large"))
        } else {
            Ok(())
        }
    }
}

impl SqliteStorage {
    /// Opens (creating if needed) the storage in `dir`: creates the
    /// directory (mode 0700 on Unix), opens or creates [`DATABASE_FILE`],
    /// migrates its schema to [`SCHEMA_VERSION`], and rebuilds the audit
    /// tree from its leaf hashes (O(n) in the log's size).
    pub fn open(dir: impl AsRef<Path>, config: StorageConfig) -> Result<Self> {
        let dir = dir.as_ref();
        create_data_dir(dir)?;
        let path = dir.join(DATABASE_FILE);
        let conn = open_connection(&path, &config, false)?;
        schema::migrate(&conn)?;
        let log = load_log(conn)?;
        Ok(Self {
            path,
            config,
            writer: Mutex::new(Some(log)),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration.
    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    /// Runs `f` in one write transaction (see the module documentation).
    fn write<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let mut slot = self.writer.lock().map_err(|_| poisoned())?;
        slot.as_ref()
            .ok_or_else(writer_gone)?
            .store()
            .conn()
            .execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| {
            // Another writer may have appended since our last transaction.
            if needs_reload(&slot)? {
                reload(&mut slot)?;
            }
            let log = slot.as_mut().ok_or_else(writer_gone)?;
            let value = f(&mut Tx {
                log,
                config: &self.config,
            })?;
            log.store().conn().execute_batch("COMMIT")?;
            Ok(value)
        })();
        if result.is_err() {
            if let Some(log) = slot.as_ref() {
                let conn = log.store().conn();
                if !conn.is_autocommit() {
                    // The operation's error is the one to report; a failed
                    // rollback shows up as a failed next BEGIN.
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
            // The tree may hold leaves that were just rolled back.
            if needs_reload(&slot).unwrap_or(true) {
                let _ = reload(&mut slot);
            }
        }
        result
    }

    /// Runs `f` on a reader connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().map_err(|_| poisoned())?.pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_connection(&self.path, &self.config, true)?,
        };
        let result = f(&conn);
        if conn.is_autocommit()
            && let Ok(mut pool) = self.readers.lock()
            && pool.len() < self.config.max_idle_readers
        {
            pool.push(conn);
        }
        result
    }

    /// Runs `f` on the writer's tree (proofs, roots), first catching up
    /// with another writer's appends if there were any.
    fn with_log<T>(&self, f: impl FnOnce(&Log) -> Result<T>) -> Result<T> {
        let mut slot = self.writer.lock().map_err(|_| poisoned())?;
        if needs_reload(&slot)? {
            // One snapshot for the tables the reload reads.
            slot.as_ref()
                .ok_or_else(writer_gone)?
                .store()
                .conn()
                .execute_batch("BEGIN")?;
            let reloaded = reload(&mut slot);
            if let Some(log) = slot.as_ref() {
                log.store().conn().execute_batch("COMMIT")?;
            }
            reloaded?;
        }
        f(slot.as_ref().ok_or_else(writer_gone)?)
    }
}

impl Storage for SqliteStorage {
    fn create_user(
        &self,
        user: &UserId,
        role: &Role,
        admin: Option<&UserId>,
        now: u64,
    ) -> Result<User> {
        let now = check_int(now, "time out of range")?;
        self.write(|tx| {
            if user_exists(tx.conn(), user)? {
                return Err(StorageError::AlreadyExists { what: "user" });
            }
            tx.conn()
                .prepare_cached(
                    "INSERT INTO users (user_id, role, created_at) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![user.as_str(), role.as_str(), now])?;
            tx.audit(
                AuditEntry {
                    actor_user: admin.cloned(),
                    target_user: Some(user.clone()),
                    detail: detail(&format!("create_user role={role}")),
                    ..entry(EventKind::AdminAction)
                },
                now,
            )?;
            Ok(User {
                id: user.clone(),
                role: role.clone(),
                created_at: now,
            })
        })
    }

    fn get_user(&self, user: &UserId) -> Result<User> {
        self.read(|conn| {
            let row: Option<(String, u64)> = conn
                .prepare_cached("SELECT role, created_at FROM users WHERE user_id = ?1")?
                .query_row([user.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let (role, created_at) = row.ok_or(StorageError::NotFound { what: "user" })?;
            Ok(User {
                id: user.clone(),
                role: Role::new(&role)?,
                created_at,
            })
        })
    }

    fn list_users(&self) -> Result<Vec<User>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT user_id, role, created_at FROM users ORDER BY user_id")?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, u64>(2)?,
                ))
            })?;
            rows.map(|row| {
                let (id, role, created_at) = row?;
                Ok(User {
                    id: stored_user_id(&id)?,
                    role: Role::new(&role)?,
                    created_at,
                })
            })
            .collect()
        })
    }

    fn issue_enrollment_token(
        &self,
        token_hash: &[u8; TOKEN_HASH_LEN],
        user: &UserId,
        admin: Option<&UserId>,
        now: u64,
        expires_at: u64,
    ) -> Result<()> {
        let now = check_int(now, "time out of range")?;
        let expires_at = check_int(expires_at, "expiry out of range")?;
        if expires_at <= now {
            return Err(StorageError::InvalidInput("token expiry is not after now"));
        }
        self.write(|tx| {
            let role: Option<String> = tx
                .conn()
                .prepare_cached("SELECT role FROM users WHERE user_id = ?1")?
                .query_row([user.as_str()], |row| row.get(0))
                .optional()?;
            let role = role.ok_or(StorageError::NotFound { what: "user" })?;
            if tx
                .conn()
                .prepare_cached("SELECT 1 FROM enrollment_tokens WHERE token_hash = ?1")?
                .exists([token_hash])?
            {
                return Err(StorageError::AlreadyExists {
                    what: "enrollment token",
                });
            }
            tx.conn()
                .prepare_cached(
                    "INSERT INTO enrollment_tokens (token_hash, user_id, issued_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![token_hash, user.as_str(), now, expires_at])?;
            tx.audit(
                AuditEntry {
                    actor_user: admin.cloned(),
                    target_user: Some(user.clone()),
                    detail: detail(&format!("enrollment_token role={role}")),
                    ..entry(EventKind::AdminAction)
                },
                now,
            )?;
            Ok(())
        })
    }

    fn redeem_enrollment_token(
        &self,
        token_hash: &[u8; TOKEN_HASH_LEN],
        identity: &ward_core::DeviceIdentity,
        now: u64,
    ) -> Result<Device> {
        let now = check_int(now, "time out of range")?;
        let key = DeviceKey(*identity.signing_key());
        self.write(|tx| {
            let token: Option<(String, u64, Option<u64>)> = tx
                .conn()
                .prepare_cached(
                    "SELECT user_id, expires_at, used_at FROM enrollment_tokens \
                     WHERE token_hash = ?1",
                )?
                .query_row([token_hash], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?;
            let (user, expires_at, used_at) = token.ok_or(StorageError::TokenInvalid)?;
            if used_at.is_some() {
                return Err(StorageError::TokenUsed);
            }
            if now >= expires_at {
                return Err(StorageError::TokenExpired);
            }
            if find_device(tx.conn(), &key)?.is_some() {
                return Err(StorageError::AlreadyExists { what: "device" });
            }
            let device = Device {
                key,
                user: stored_user_id(&user)?,
                identity: identity.to_bytes(),
                enrolled_at: now,
                revoked_at: None,
            };
            tx.conn()
                .prepare_cached(
                    "INSERT INTO devices (device_key, user_id, identity, enrolled_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![key.0, user, device.identity, now])?;
            tx.conn()
                .prepare_cached(
                    "UPDATE enrollment_tokens SET used_at = ?1, device_key = ?2 \
                     WHERE token_hash = ?3",
                )?
                .execute(params![now, key.0, token_hash])?;
            tx.audit(
                AuditEntry {
                    actor_user: Some(device.user.clone()),
                    actor_device: key.audit_id(),
                    ..entry(EventKind::Enrollment)
                },
                now,
            )?;
            Ok(device)
        })
    }

    fn get_device(&self, device: &DeviceKey) -> Result<Device> {
        self.read(|conn| get_device(conn, device))
    }

    fn list_devices(&self, user: &UserId) -> Result<Vec<Device>> {
        self.read(|conn| list_devices(conn, user, false))
    }

    fn list_all_devices(&self, user: &UserId) -> Result<Vec<Device>> {
        self.read(|conn| list_devices(conn, user, true))
    }

    fn revoke_device(
        &self,
        device: &DeviceKey,
        admin: Option<&UserId>,
        now: u64,
    ) -> Result<Revocation> {
        let now = check_int(now, "time out of range")?;
        self.write(|tx| {
            let mut record = active_device(tx.conn(), device)?;
            let conn = tx.conn();
            conn.prepare_cached(
                "UPDATE devices SET revoked_at = ?1, queue_len = 0 WHERE device_key = ?2",
            )?
            .execute(params![now, device.0])?;
            conn.prepare_cached("DELETE FROM signed_prekeys WHERE device_key = ?1")?
                .execute([device.0])?;
            let deleted_one_time_prekeys = conn
                .prepare_cached("DELETE FROM one_time_prekeys WHERE device_key = ?1")?
                .execute([device.0])? as u64;
            let copies = {
                let mut stmt = conn.prepare_cached(
                    "SELECT message_id, length(ciphertext) FROM queue \
                     WHERE recipient = ?1 ORDER BY seq",
                )?;
                let rows = stmt.query_map([device.0], |row| {
                    Ok((row.get::<_, [u8; 16]>(0)?, row.get::<_, u64>(1)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            conn.prepare_cached("DELETE FROM queue WHERE recipient = ?1")?
                .execute([device.0])?;
            let deleted_messages = copies.len() as u64;
            tx.audit(
                AuditEntry {
                    actor_user: admin.cloned(),
                    target_user: Some(record.user.clone()),
                    target_device: device.audit_id(),
                    detail: detail(&format!(
                        "messages={deleted_messages}, one_time_prekeys={deleted_one_time_prekeys}"
                    )),
                    ..entry(EventKind::Revocation)
                },
                now,
            )?;
            for (message_id, size) in copies {
                tx.audit(
                    AuditEntry {
                        target_user: Some(record.user.clone()),
                        target_device: device.audit_id(),
                        message_id: Some(MessageId(message_id)),
                        size: Some(size),
                        detail: detail("device_revoked"),
                        ..entry(EventKind::Expiry)
                    },
                    now,
                )?;
            }
            record.revoked_at = Some(now);
            Ok(Revocation {
                device: record,
                deleted_messages,
                deleted_one_time_prekeys,
            })
        })
    }

    fn put_signed_prekeys(&self, device: &DeviceKey, encoded: &[u8], now: u64) -> Result<()> {
        let now = check_int(now, "time out of range")?;
        self.write(|tx| {
            tx.check_prekey_len(encoded.len())?;
            active_device(tx.conn(), device)?;
            tx.conn()
                .prepare_cached(
                    "INSERT INTO signed_prekeys (device_key, encoded, updated_at) \
                     VALUES (?1, ?2, ?3) \
                     ON CONFLICT (device_key) DO UPDATE \
                     SET encoded = excluded.encoded, updated_at = excluded.updated_at",
                )?
                .execute(params![device.0, encoded, now])?;
            Ok(())
        })
    }

    fn add_one_time_prekeys(&self, device: &DeviceKey, keys: &[OneTimePreKey]) -> Result<u64> {
        let limit = self.config.max_one_time_prekeys;
        if keys.len() as u64 > u64::from(limit) {
            return Err(StorageError::TooManyPreKeys { limit });
        }
        self.write(|tx| {
            for key in keys {
                tx.check_prekey_len(key.encoded.len())?;
            }
            active_device(tx.conn(), device)?;
            let conn = tx.conn();
            let mut added = 0u64;
            {
                let mut insert = conn.prepare_cached(
                    "INSERT OR IGNORE INTO one_time_prekeys (device_key, prekey_id, encoded) \
                     VALUES (?1, ?2, ?3)",
                )?;
                for key in keys {
                    added += insert.execute(params![device.0, key.id, key.encoded])? as u64;
                }
            }
            let count: u64 = conn
                .prepare_cached("SELECT COUNT(*) FROM one_time_prekeys WHERE device_key = ?1")?
                .query_row([device.0], |row| row.get(0))?;
            if count > u64::from(limit) {
                return Err(StorageError::TooManyPreKeys { limit });
            }
            Ok(added)
        })
    }

    fn claim_bundle(
        &self,
        requester: &DeviceKey,
        device: &DeviceKey,
        now: u64,
    ) -> Result<PreKeyBundle> {
        let now = check_int(now, "time out of range")?;
        self.write(|tx| {
            let asking = active_device(tx.conn(), requester)?;
            let target = active_device(tx.conn(), device)?;
            let conn = tx.conn();
            let signed_prekeys: Vec<u8> = conn
                .prepare_cached("SELECT encoded FROM signed_prekeys WHERE device_key = ?1")?
                .query_row([device.0], |row| row.get(0))
                .optional()?
                .ok_or(StorageError::NotFound {
                    what: "signed prekeys",
                })?;
            let one_time: Option<(u32, Vec<u8>)> = conn
                .prepare_cached(
                    "SELECT prekey_id, encoded FROM one_time_prekeys WHERE device_key = ?1 \
                     ORDER BY prekey_id LIMIT 1",
                )?
                .query_row([device.0], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            if let Some((id, _)) = &one_time {
                conn.prepare_cached(
                    "DELETE FROM one_time_prekeys WHERE device_key = ?1 AND prekey_id = ?2",
                )?
                .execute(params![device.0, id])?;
            }
            let remark = match &one_time {
                Some((id, _)) => format!("one_time={id}"),
                None => "one_time=none".to_owned(),
            };
            tx.audit(
                AuditEntry {
                    actor_user: Some(asking.user),
                    actor_device: requester.audit_id(),
                    target_user: Some(target.user),
                    target_device: device.audit_id(),
                    detail: detail(&remark),
                    ..entry(EventKind::PreKeyFetch)
                },
                now,
            )?;
            Ok(PreKeyBundle {
                identity: target.identity,
                signed_prekeys,
                one_time_prekey: one_time.map(|(id, encoded)| OneTimePreKey { id, encoded }),
            })
        })
    }

    fn one_time_prekey_count(&self, device: &DeviceKey) -> Result<u64> {
        self.read(|conn| {
            get_device(conn, device)?;
            Ok(conn
                .prepare_cached("SELECT COUNT(*) FROM one_time_prekeys WHERE device_key = ?1")?
                .query_row([device.0], |row| row.get(0))?)
        })
    }

    fn enqueue(
        &self,
        sender: &DeviceKey,
        message_id: MessageId,
        now: u64,
        expires_at: u64,
        deliveries: &[Delivery<'_>],
    ) -> Result<EnqueueReceipt> {
        let now = check_int(now, "time out of range")?;
        let expires_at = check_int(expires_at, "expiry out of range")?;
        self.write(|tx| {
            let from = active_device(tx.conn(), sender)?;
            // A retry of a stored message: the original receipt.
            let original: Option<(u64, u64)> = tx
                .conn()
                .prepare_cached(
                    "SELECT enqueued_at, expires_at FROM sends \
                     WHERE sender = ?1 AND message_id = ?2",
                )?
                .query_row(params![sender.0, message_id.0], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            if let Some((enqueued_at, expires_at)) = original {
                let mut stmt = tx.conn().prepare_cached(
                    "SELECT recipient, seq FROM queue WHERE sender = ?1 AND message_id = ?2 \
                     ORDER BY id",
                )?;
                let copies = stmt
                    .query_map(params![sender.0, message_id.0], |row| {
                        Ok(QueuedCopy {
                            recipient: DeviceKey(row.get(0)?),
                            seq: row.get(1)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                return Ok(EnqueueReceipt {
                    duplicate: true,
                    enqueued_at,
                    expires_at,
                    copies,
                });
            }
            if deliveries.is_empty() {
                return Err(StorageError::InvalidInput("no deliveries"));
            }
            if expires_at <= now {
                return Err(StorageError::InvalidInput("expiry is not after now"));
            }
            let mut recipients: Vec<&DeviceKey> = deliveries.iter().map(|d| &d.recipient).collect();
            recipients.sort_unstable();
            if recipients.windows(2).any(|w| w[0] == w[1]) {
                return Err(StorageError::InvalidInput("a recipient appears twice"));
            }
            let limit = tx.config.max_queue_depth;
            let mut targets = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                if delivery.ciphertext.len() > tx.config.max_ciphertext_len {
                    return Err(StorageError::InvalidInput("ciphertext too large"));
                }
                let to = active_device(tx.conn(), &delivery.recipient)?;
                let (next_seq, queued): (u64, u64) = tx
                    .conn()
                    .prepare_cached(
                        "SELECT next_seq, queue_len FROM devices WHERE device_key = ?1",
                    )?
                    .query_row([delivery.recipient.0], |row| Ok((row.get(0)?, row.get(1)?)))?;
                if queued >= u64::from(limit) {
                    return Err(StorageError::QueueFull {
                        device: delivery.recipient,
                        limit,
                    });
                }
                targets.push((to, next_seq));
            }
            tx.conn()
                .prepare_cached(
                    "INSERT INTO sends (sender, message_id, enqueued_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![sender.0, message_id.0, now, expires_at])?;
            let mut copies = Vec::with_capacity(deliveries.len());
            for (delivery, (to, seq)) in deliveries.iter().zip(targets) {
                let conn = tx.conn();
                conn.prepare_cached(
                    "INSERT INTO queue (recipient, seq, sender, message_id, enqueued_at, \
                     expires_at, ciphertext) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    to.key.0,
                    seq,
                    sender.0,
                    message_id.0,
                    now,
                    expires_at,
                    delivery.ciphertext
                ])?;
                conn.prepare_cached(
                    "UPDATE devices SET next_seq = next_seq + 1, queue_len = queue_len + 1 \
                     WHERE device_key = ?1",
                )?
                .execute([to.key.0])?;
                tx.audit(
                    AuditEntry {
                        actor_user: Some(from.user.clone()),
                        actor_device: sender.audit_id(),
                        target_user: Some(to.user),
                        target_device: to.key.audit_id(),
                        message_id: Some(message_id),
                        size: Some(delivery.ciphertext.len() as u64),
                        ..entry(EventKind::Send)
                    },
                    now,
                )?;
                copies.push(QueuedCopy {
                    recipient: to.key,
                    seq,
                });
            }
            Ok(EnqueueReceipt {
                duplicate: false,
                enqueued_at: now,
                expires_at,
                copies,
            })
        })
    }

    fn fetch(&self, device: &DeviceKey, after_seq: u64, limit: u32) -> Result<Vec<QueuedMessage>> {
        let after_seq = check_int(after_seq, "sequence number out of range")?;
        self.read(|conn| {
            active_device(conn, device)?;
            let mut stmt = conn.prepare_cached(
                "SELECT seq, sender, message_id, enqueued_at, expires_at, ciphertext FROM queue \
                 WHERE recipient = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![device.0, after_seq, limit], |row| {
                Ok(QueuedMessage {
                    seq: row.get(0)?,
                    sender: DeviceKey(row.get(1)?),
                    message_id: MessageId(row.get(2)?),
                    enqueued_at: row.get(3)?,
                    expires_at: row.get(4)?,
                    ciphertext: row.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn queue_len(&self, device: &DeviceKey) -> Result<u64> {
        self.read(|conn| {
            conn.prepare_cached("SELECT queue_len FROM devices WHERE device_key = ?1")?
                .query_row([device.0], |row| row.get(0))
                .optional()?
                .ok_or(StorageError::NotFound { what: "device" })
        })
    }

    fn ack(
        &self,
        device: &DeviceKey,
        message_id: MessageId,
        now: u64,
    ) -> Result<Vec<AckedMessage>> {
        let now = check_int(now, "time out of range")?;
        self.write(|tx| {
            let me = get_device(tx.conn(), device)?;
            let copies = {
                let mut stmt = tx.conn().prepare_cached(
                    "SELECT q.id, q.seq, q.sender, d.user_id, length(q.ciphertext) \
                     FROM queue q JOIN devices d ON d.device_key = q.sender \
                     WHERE q.recipient = ?1 AND q.message_id = ?2 ORDER BY q.seq",
                )?;
                let rows = stmt.query_map(params![device.0, message_id.0], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, u64>(1)?,
                        row.get::<_, [u8; DEVICE_KEY_LEN]>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, u64>(4)?,
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            if copies.is_empty() {
                return Err(StorageError::NotFound { what: "message" });
            }
            let mut acked = Vec::with_capacity(copies.len());
            for (id, seq, sender, sender_user, size) in copies {
                let conn = tx.conn();
                conn.prepare_cached("DELETE FROM queue WHERE id = ?1")?
                    .execute([id])?;
                conn.prepare_cached(
                    "UPDATE devices SET queue_len = queue_len - 1 WHERE device_key = ?1",
                )?
                .execute([device.0])?;
                let sender = DeviceKey(sender);
                tx.audit(
                    AuditEntry {
                        actor_user: Some(me.user.clone()),
                        actor_device: device.audit_id(),
                        target_user: Some(stored_user_id(&sender_user)?),
                        target_device: sender.audit_id(),
                        message_id: Some(message_id),
                        size: Some(size),
                        ..entry(EventKind::Acknowledgment)
                    },
                    now,
                )?;
                acked.push(AckedMessage {
                    seq,
                    sender,
                    message_id,
                    size,
                });
            }
            Ok(acked)
        })
    }

    fn expire(&self, now: u64, limit: u32) -> Result<Vec<ExpiredMessage>> {
        let now = check_int(now, "time out of range")?;
        self.write(|tx| {
            let copies = {
                let mut stmt = tx.conn().prepare_cached(
                    "SELECT q.id, q.recipient, d.user_id, q.sender, q.message_id, \
                     length(q.ciphertext) \
                     FROM queue q JOIN devices d ON d.device_key = q.recipient \
                     WHERE q.expires_at <= ?1 ORDER BY q.expires_at, q.id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![now, limit], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, [u8; DEVICE_KEY_LEN]>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, [u8; DEVICE_KEY_LEN]>(3)?,
                        row.get::<_, [u8; 16]>(4)?,
                        row.get::<_, u64>(5)?,
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            let mut expired = Vec::with_capacity(copies.len());
            for (id, recipient, recipient_user, sender, message_id, size) in copies {
                let conn = tx.conn();
                conn.prepare_cached("DELETE FROM queue WHERE id = ?1")?
                    .execute([id])?;
                conn.prepare_cached(
                    "UPDATE devices SET queue_len = queue_len - 1 WHERE device_key = ?1",
                )?
                .execute([recipient])?;
                let recipient = DeviceKey(recipient);
                tx.audit(
                    AuditEntry {
                        target_user: Some(stored_user_id(&recipient_user)?),
                        target_device: recipient.audit_id(),
                        message_id: Some(MessageId(message_id)),
                        size: Some(size),
                        ..entry(EventKind::Expiry)
                    },
                    now,
                )?;
                expired.push(ExpiredMessage {
                    recipient,
                    sender: DeviceKey(sender),
                    message_id: MessageId(message_id),
                    size,
                });
            }
            // Idempotency records of expired sends, once no copy is left.
            tx.conn()
                .prepare_cached(
                    "DELETE FROM sends WHERE (sender, message_id) IN ( \
                       SELECT s.sender, s.message_id FROM sends s \
                       WHERE s.expires_at <= ?1 AND NOT EXISTS ( \
                         SELECT 1 FROM queue q \
                         WHERE q.sender = s.sender AND q.message_id = s.message_id) \
                       LIMIT ?2)",
                )?
                .execute(params![now, limit])?;
            Ok(expired)
        })
    }

    fn append_audit(&self, entries: &[AuditEntry], now: u64) -> Result<Vec<u64>> {
        let now = check_int(now, "time out of range")?;
        self.write(|tx| {
            entries
                .iter()
                .map(|entry| tx.audit(entry.clone(), now))
                .collect()
        })
    }

    fn issue_tree_head(&self, key: &SigningKey, now: u64) -> Result<SignedTreeHead> {
        let now = check_int(now, "time out of range")?;
        self.write(|tx| {
            let timestamp = now.max(tx.log.not_before_ms());
            if let Some(last) = last_head(tx.conn())?
                && last.head.tree_size == tx.log.size()
                && last.head.timestamp_ms == timestamp
            {
                return Ok(last);
            }
            let head = tx.log.issue_head(timestamp, key)?;
            tx.conn()
                .prepare_cached(
                    "INSERT INTO audit_heads (tree_size, timestamp_ms, head) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![
                    head.head.tree_size,
                    head.head.timestamp_ms,
                    head.encode()
                ])?;
            Ok(head)
        })
    }

    fn audit_state(&self) -> Result<AuditState> {
        self.with_log(|log| {
            Ok(AuditState {
                size: log.size(),
                root: log.root(),
                not_before_ms: log.not_before_ms(),
            })
        })
    }

    fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<InclusionProof> {
        self.with_log(|log| log.inclusion_proof(index, tree_size).map_err(log_error))
    }

    fn consistency_proof(&self, first: u64, second: u64) -> Result<ConsistencyProof> {
        self.with_log(|log| log.consistency_proof(first, second).map_err(log_error))
    }

    fn tree_heads(&self) -> Result<Vec<SignedTreeHead>> {
        self.read(read_heads)
    }

    fn export_audit(&self, relay_key: &VerifyingKey) -> Result<Export> {
        self.read(|conn| {
            // One snapshot for entries and heads.
            let snapshot = conn.unchecked_transaction()?;
            let entries = {
                let mut stmt =
                    snapshot.prepare_cached("SELECT entry FROM audit_entries ORDER BY seq")?;
                let rows = stmt.query_map([], |row| row.get::<_, Vec<u8>>(0))?;
                rows.map(|bytes| decode_entry(&bytes?))
                    .collect::<Result<Vec<_>>>()?
            };
            let heads = read_heads(&snapshot)?;
            snapshot.finish()?;
            Ok(Export {
                relay_key: relay_key.to_bytes(),
                entries,
                heads,
            })
        })
    }

    fn write_audit_export(
        &self,
        relay_key: &VerifyingKey,
        out: &mut dyn std::io::Write,
    ) -> Result<()> {
        self.read(|conn| {
            let snapshot = conn.unchecked_transaction()?;
            let count: u64 =
                snapshot.query_row("SELECT COUNT(*) FROM audit_entries", [], |row| row.get(0))?;
            let mut writer = ExportWriter::new(out, &relay_key.to_bytes(), count)?;
            {
                let mut stmt =
                    snapshot.prepare_cached("SELECT entry FROM audit_entries ORDER BY seq")?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    let bytes: Vec<u8> = row.get(0)?;
                    writer.entry(&decode_entry(&bytes)?)?;
                }
            }
            let heads = read_heads(&snapshot)?;
            snapshot.finish()?;
            writer.finish(&heads)?;
            Ok(())
        })
    }
}

fn read_heads(conn: &Connection) -> Result<Vec<SignedTreeHead>> {
    let mut stmt = conn.prepare_cached("SELECT head FROM audit_heads ORDER BY id")?;
    let rows = stmt.query_map([], |row| row.get::<_, Vec<u8>>(0))?;
    rows.map(|bytes| decode_head(&bytes?)).collect()
}
