//! The embedded backend: SQLite (bundled) in the relay's data directory.
//!
//! # Connections and transactions
//!
//! - **One writer thread** (`ward-relay-writer`) owns the writer
//!   [`Connection`], inside the audit [`MerkleLog`] as its
//!   [`LeafStore`](ward_audit::LeafStore) ([`SqliteLeaves`]). Every
//!   mutating call, and every call that reads the writer's tree (roots,
//!   proofs, [`audit_state`](Storage::audit_state)), is a request: a
//!   closure over the open transaction, with its inputs copied into it
//!   (ciphertexts into `Vec`s), sent over a bounded channel; the caller then
//!   waits for the answer on a one-shot channel.
//! - **Group commit.** The thread takes one request, then drains whatever
//!   else is waiting (up to 512 requests, or until their ciphertexts and
//!   prekeys add up to 16 MiB), and runs them in one `BEGIN IMMEDIATE`
//!   transaction, each inside its own `SAVEPOINT`. A request checks,
//!   changes and appends its audit entries (entry bytes to `audit_entries`,
//!   leaf hash to `audit_leaves` through the log). A refused request is
//!   rolled back to its savepoint, and if the in-memory tree absorbed
//!   leaves (or issued a head) for it, the tree goes back to the
//!   savepoint's [`Checkpoint`](ward_audit::Checkpoint)
//!   ([`MerkleLog::rollback`]); the others stay. One `COMMIT`, one fsync,
//!   for the batch; then every caller is answered. So each call still
//!   returns only once its change is durable, and a refused call changed
//!   nothing and wrote no audit entry: the [`Storage`] semantics are those
//!   of one transaction per call, with the fsync shared.
//! - **A failed batch.** If `COMMIT` fails, or an error makes SQLite roll
//!   back the whole transaction half-way (disk full, I/O error), every
//!   request of that transaction gets the error and the tree goes back to
//!   the batch's start (or, if that fails, is rebuilt from the tables; if
//!   even that fails, the next batch opens the database again). Requests
//!   not yet run when the transaction was lost run in the next one.
//! - **Readers**: a small pool of `query_only` connections for calls that
//!   change nothing (WAL lets them run beside the writer). They see only
//!   committed batches.
//! - **Several writers** (a second handle on the same directory, or a
//!   second process such as the admin command line) stay correct: after
//!   `BEGIN IMMEDIATE` the writer compares the stored leaf count with its
//!   tree and reloads the tree if another writer appended. That costs one
//!   index lookup per batch. (It is a safety net, not a deployment mode: the
//!   tree reload is O(n).)
//! - **Shutdown.** Dropping the [`SqliteStorage`] closes the request
//!   channel; the thread finishes the requests already sent, and the drop
//!   joins it.
//!
//! # Durability
//!
//! `journal_mode = WAL`, `synchronous = FULL`: every commit fsyncs the WAL
//! before it returns. With `NORMAL` a WAL commit survives a process crash
//! but not a power loss, and the relay acknowledges a send to the sender
//! only after the commit: a message the sender was told is stored must
//! survive power loss on the host, so FULL. Group commit is what makes FULL
//! affordable: concurrent senders share one fsync.
//!
//! `secure_delete = FAST` overwrites deleted ciphertext in the database
//! pages when that costs no extra I/O; `foreign_keys = ON`.
//!
//! # Shared payloads
//!
//! A group send's one ciphertext is stored once, in `payloads`, and its
//! queued copies refer to it; a trigger deletes it with its last copy, in
//! the same statement, whichever path deletes that copy. Per-device
//! envelopes stay inline in their copy, as before: a payload row would
//! save nothing for a ciphertext with one copy and would cost the 1:1 path
//! a row insert, a delete and a lookup per message. See `payloads.rs`.

mod enqueue;
mod leaves;
mod payloads;
mod roles;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, params};
use ward_audit::{
    AuditEntry, ConsistencyProof, Detail, EventKind, Export, ExportWriter, InclusionProof,
    LogError, MerkleLog, MessageId, SignedTreeHead, SigningKey, UserId, VerifyingKey,
};

use self::leaves::{SqliteLeaves, stored_len};
pub use self::schema::SCHEMA_VERSION;
use self::writer::{Job, QUEUE_CAPACITY, Request, Tx, Writer};
use super::Storage;
use super::error::{Result, StorageError};
use super::types::{
    AckedMessage, Acknowledged, AuditState, DEVICE_KEY_LEN, Delivery, Device, DeviceKey, DeviceSet,
    EnqueueReceipt, ExpiredMessage, IDENTITY_LEN, OneTimePreKey, PreKeyBundle, QueuedMessage,
    Revocation, Role, RoleScheduleRecord, TOKEN_HASH_LEN, User,
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
///
/// It runs a writer thread (see the module documentation); dropping the
/// storage stops and joins it.
pub struct SqliteStorage {
    path: PathBuf,
    config: StorageConfig,
    /// Requests to the writer thread; `None` only while dropping.
    jobs: Option<SyncSender<Job>>,
    writer: Option<JoinHandle<()>>,
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
    backend("the storage writer lost its database connection after an earlier error")
}

fn writer_stopped() -> StorageError {
    backend("the storage writer thread has stopped")
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

/// Creates the database file mode 0600 before SQLite first opens it (SQLite
/// gives its `-wal`, `-shm` and `-journal` files the database's mode), and
/// takes group and other bits away from a database and side files that an
/// earlier version created mode 0644.
fn create_private_database(path: &Path) -> std::io::Result<()> {
    crate::keys::create_private_file(path)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        crate::keys::restrict_to_owner(Path::new(&side))?;
    }
    Ok(())
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
    // Each request runs in a savepoint, whose statement journal would
    // otherwise spill to a temporary file: two thirds of the writes per
    // message (BENCHMARKS.md, "Where the time goes").
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Statements whose plan may depend on a bound value (an ORDER BY with
    // `user_id = ?`) are otherwise re-prepared on every cached use.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
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

fn wipe_pending(conn: &Connection, key: &DeviceKey) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM devices WHERE device_key = ?1 \
             AND wipe_requested_at IS NOT NULL AND revoked_at IS NULL",
        )?
        .exists([key.0])?)
}

/// Revokes an active device in the open transaction: deletes its prekeys
/// and queue, clears a pending wipe, and appends the `Revocation` entry
/// (actor: `actor_user` and `actor_device`) and one `Expiry` per deleted
/// copy.
fn revoke(
    tx: &mut Tx<'_>,
    mut record: Device,
    actor_user: Option<UserId>,
    actor_device: Option<DeviceKey>,
    now: u64,
) -> Result<Revocation> {
    let device = record.key;
    let conn = tx.conn();
    conn.prepare_cached(
        "UPDATE devices SET revoked_at = ?1, queue_len = 0, wipe_requested_at = NULL \
         WHERE device_key = ?2",
    )?
    .execute(params![now, device.0])?;
    conn.prepare_cached("DELETE FROM signed_prekeys WHERE device_key = ?1")?
        .execute([device.0])?;
    let deleted_one_time_prekeys = conn
        .prepare_cached("DELETE FROM one_time_prekeys WHERE device_key = ?1")?
        .execute([device.0])? as u64;
    let copies = {
        let mut stmt = conn.prepare_cached(
            "SELECT q.message_id, ifnull(length(p.ciphertext), length(q.ciphertext)) \
             FROM queue q LEFT JOIN payloads p ON p.id = q.payload \
             WHERE q.recipient = ?1 ORDER BY q.seq",
        )?;
        let rows = stmt.query_map([device.0], |row| {
            Ok((row.get::<_, [u8; 16]>(0)?, row.get::<_, u64>(1)?))
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    // Shared payloads go with their last copy (the trigger of schema v5).
    conn.prepare_cached("DELETE FROM queue WHERE recipient = ?1")?
        .execute([device.0])?;
    let deleted_messages = copies.len() as u64;
    tx.audit(
        AuditEntry {
            actor_user,
            actor_device: actor_device.and_then(|d| d.audit_id()),
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
    /// directory (mode 0700 on Unix), opens or creates [`DATABASE_FILE`]
    /// (it and SQLite's files beside it mode 0600 on Unix; older ones are
    /// restricted to that), migrates its schema to [`SCHEMA_VERSION`], and
    /// rebuilds the audit tree from its leaf hashes (O(n) in the log's
    /// size).
    pub fn open(dir: impl AsRef<Path>, config: StorageConfig) -> Result<Self> {
        let dir = dir.as_ref();
        create_data_dir(dir)?;
        let path = dir.join(DATABASE_FILE);
        create_private_database(&path)?;
        let conn = open_connection(&path, &config, false)?;
        schema::migrate(&conn)?;
        let log = load_log(conn)?;
        let (jobs, queue) = mpsc::sync_channel(QUEUE_CAPACITY);
        let writer = Writer::new(path.clone(), config.clone(), log);
        let writer = std::thread::Builder::new()
            .name("ward-relay-writer".to_owned())
            .spawn(move || writer.run(queue))?;
        Ok(Self {
            path,
            config,
            jobs: Some(jobs),
            writer: Some(writer),
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

    /// Runs `f` as one request of a write transaction on the writer thread
    /// and waits until its batch committed (see the module documentation).
    /// `cost` is the request's payload in bytes (ciphertexts, prekeys).
    fn write<T, F>(&self, cost: usize, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(Request::new(cost, f, reply));
        self.jobs
            .as_ref()
            .ok_or_else(writer_stopped)?
            .send(job)
            .map_err(|_| writer_stopped())?;
        answer.recv().map_err(|_| writer_stopped())?
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
}

impl Drop for SqliteStorage {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once it has answered
        // every request already sent.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            // A writer that panicked has nothing left to clean up.
            let _ = writer.join();
        }
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
        let (user, role, admin) = (user.clone(), role.clone(), admin.cloned());
        self.write(0, move |tx| {
            if user_exists(tx.conn(), &user)? {
                return Err(StorageError::AlreadyExists { what: "user" });
            }
            tx.conn()
                .prepare_cached(
                    "INSERT INTO users (user_id, role, created_at) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![user.as_str(), role.as_str(), now])?;
            tx.audit(
                AuditEntry {
                    actor_user: admin,
                    target_user: Some(user.clone()),
                    detail: detail(&format!("create_user role={role}")),
                    ..entry(EventKind::AdminAction)
                },
                now,
            )?;
            Ok(User {
                id: user,
                role,
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
        let (token_hash, user, admin) = (*token_hash, user.clone(), admin.cloned());
        self.write(0, move |tx| {
            let role: Option<String> = tx
                .conn()
                .prepare_cached("SELECT role FROM users WHERE user_id = ?1")?
                .query_row([user.as_str()], |row| row.get(0))
                .optional()?;
            let role = role.ok_or(StorageError::NotFound { what: "user" })?;
            if tx
                .conn()
                .prepare_cached("SELECT 1 FROM enrollment_tokens WHERE token_hash = ?1")?
                .exists([&token_hash])?
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
                    actor_user: admin,
                    target_user: Some(user),
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
        let (token_hash, identity) = (*token_hash, identity.to_bytes());
        self.write(0, move |tx| {
            let token: Option<(String, u64, Option<u64>)> = tx
                .conn()
                .prepare_cached(
                    "SELECT user_id, expires_at, used_at FROM enrollment_tokens \
                     WHERE token_hash = ?1",
                )?
                .query_row([&token_hash], |row| {
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
                identity,
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

    fn revoked_since(&self, since_ms: u64) -> Result<Vec<(DeviceKey, u64)>> {
        let since_ms = check_int(since_ms, "time out of range")?;
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT device_key, revoked_at FROM devices \
                 WHERE revoked_at IS NOT NULL AND revoked_at >= ?1 \
                 ORDER BY revoked_at, device_key",
            )?;
            let rows = stmt.query_map([since_ms], |row| {
                Ok((DeviceKey(row.get(0)?), row.get::<_, u64>(1)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn revoke_device(
        &self,
        device: &DeviceKey,
        admin: Option<&UserId>,
        now: u64,
    ) -> Result<Revocation> {
        let now = check_int(now, "time out of range")?;
        let (device, admin) = (*device, admin.cloned());
        self.write(0, move |tx| {
            let record = active_device(tx.conn(), &device)?;
            revoke(tx, record, admin, None, now)
        })
    }

    fn request_wipe(&self, device: &DeviceKey, admin: Option<&UserId>, now: u64) -> Result<Device> {
        let now = check_int(now, "time out of range")?;
        let (device, admin) = (*device, admin.cloned());
        self.write(0, move |tx| {
            let record = active_device(tx.conn(), &device)?;
            if wipe_pending(tx.conn(), &device)? {
                return Err(StorageError::AlreadyExists {
                    what: "pending wipe",
                });
            }
            tx.conn()
                .prepare_cached("UPDATE devices SET wipe_requested_at = ?1 WHERE device_key = ?2")?
                .execute(params![now, device.0])?;
            tx.audit(
                AuditEntry {
                    actor_user: admin,
                    target_user: Some(record.user.clone()),
                    target_device: device.audit_id(),
                    detail: detail("wipe"),
                    ..entry(EventKind::AdminAction)
                },
                now,
            )?;
            Ok(record)
        })
    }

    fn wipe_pending(&self, device: &DeviceKey) -> Result<bool> {
        self.read(|conn| wipe_pending(conn, device))
    }

    fn wipes_requested_since(&self, since_ms: u64) -> Result<Vec<(DeviceKey, u64)>> {
        let since_ms = check_int(since_ms, "time out of range")?;
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT device_key, wipe_requested_at FROM devices \
                 WHERE wipe_requested_at IS NOT NULL AND wipe_requested_at >= ?1 \
                 AND revoked_at IS NULL ORDER BY wipe_requested_at, device_key",
            )?;
            let rows = stmt.query_map([since_ms], |row| {
                Ok((DeviceKey(row.get(0)?), row.get::<_, u64>(1)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn complete_wipe(&self, device: &DeviceKey, now: u64) -> Result<Revocation> {
        let now = check_int(now, "time out of range")?;
        let device = *device;
        self.write(0, move |tx| {
            let record = active_device(tx.conn(), &device)?;
            if !wipe_pending(tx.conn(), &device)? {
                return Err(StorageError::NotFound {
                    what: "pending wipe",
                });
            }
            tx.audit(
                AuditEntry {
                    actor_user: Some(record.user.clone()),
                    actor_device: device.audit_id(),
                    target_user: Some(record.user.clone()),
                    target_device: device.audit_id(),
                    detail: detail("wipe_done"),
                    ..entry(EventKind::AdminAction)
                },
                now,
            )?;
            let user = record.user.clone();
            revoke(tx, record, Some(user), Some(device), now)
        })
    }

    fn upload_prekeys(
        &self,
        device: &DeviceKey,
        signed: Option<&[u8]>,
        one_time: &[OneTimePreKey],
        now: u64,
    ) -> Result<u64> {
        let now = check_int(now, "time out of range")?;
        let limit = self.config.max_one_time_prekeys;
        if one_time.len() as u64 > u64::from(limit) {
            return Err(StorageError::TooManyPreKeys { limit });
        }
        let (device, signed, keys) = (*device, signed.map(<[u8]>::to_vec), one_time.to_vec());
        let cost = keys.iter().map(|k| k.encoded.len()).sum::<usize>()
            + signed.as_ref().map_or(0, Vec::len);
        self.write(cost, move |tx| {
            if let Some(signed) = &signed {
                tx.check_prekey_len(signed.len())?;
            }
            for key in &keys {
                tx.check_prekey_len(key.encoded.len())?;
            }
            active_device(tx.conn(), &device)?;
            let conn = tx.conn();
            if let Some(signed) = &signed {
                conn.prepare_cached(
                    "INSERT INTO signed_prekeys (device_key, encoded, updated_at) \
                     VALUES (?1, ?2, ?3) \
                     ON CONFLICT (device_key) DO UPDATE \
                     SET encoded = excluded.encoded, updated_at = excluded.updated_at",
                )?
                .execute(params![device.0, signed, now])?;
            }
            if keys.is_empty() {
                return Ok(0);
            }
            let mut added = 0u64;
            {
                let mut insert = conn.prepare_cached(
                    "INSERT OR IGNORE INTO one_time_prekeys (device_key, prekey_id, encoded) \
                     VALUES (?1, ?2, ?3)",
                )?;
                for key in &keys {
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
        let (requester, device) = (*requester, *device);
        self.write(0, move |tx| {
            let asking = active_device(tx.conn(), &requester)?;
            let target = active_device(tx.conn(), &device)?;
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

    fn has_signed_prekeys(&self, device: &DeviceKey) -> Result<bool> {
        self.read(|conn| {
            get_device(conn, device)?;
            Ok(conn
                .prepare_cached("SELECT 1 FROM signed_prekeys WHERE device_key = ?1")?
                .exists([device.0])?)
        })
    }

    fn enqueue(
        &self,
        sender: &DeviceKey,
        message_id: MessageId,
        now: u64,
        expires_at: u64,
        addressed: &[UserId],
        deliveries: &[Delivery<'_>],
        devices: DeviceSet<'_>,
    ) -> Result<EnqueueReceipt> {
        let (subset, shared) = match devices {
            DeviceSet::Exact => (false, None),
            DeviceSet::Subset { shared } => (true, shared),
        };
        let send = enqueue::Send {
            sender: *sender,
            message_id,
            now: check_int(now, "time out of range")?,
            expires_at: check_int(expires_at, "expiry out of range")?,
            addressed: addressed.to_vec(),
            deliveries: deliveries
                .iter()
                .map(|d| (d.recipient, d.ciphertext.to_vec()))
                .collect(),
            subset,
            shared: shared.map(|s| (s.recipients.to_vec(), s.ciphertext.to_vec())),
        };
        self.write(send.cost(), move |tx| send.run(tx))
    }

    fn fetch(&self, device: &DeviceKey, after_seq: u64, limit: u32) -> Result<Vec<QueuedMessage>> {
        let after_seq = check_int(after_seq, "sequence number out of range")?;
        self.read(|conn| {
            active_device(conn, device)?;
            let mut stmt = conn.prepare_cached(
                "SELECT q.seq, q.sender, d.user_id, q.message_id, q.enqueued_at, q.expires_at, \
                 ifnull(p.ciphertext, q.ciphertext) \
                 FROM queue q JOIN devices d ON d.device_key = q.sender \
                 LEFT JOIN payloads p ON p.id = q.payload \
                 WHERE q.recipient = ?1 AND q.seq > ?2 \
                 AND NOT EXISTS (SELECT 1 FROM devices w WHERE w.device_key = ?1 \
                 AND w.wipe_requested_at IS NOT NULL) \
                 ORDER BY q.seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![device.0, after_seq, limit], |row| {
                Ok((
                    row.get::<_, u64>(0)?,
                    row.get::<_, [u8; DEVICE_KEY_LEN]>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, [u8; 16]>(3)?,
                    row.get::<_, u64>(4)?,
                    row.get::<_, u64>(5)?,
                    row.get::<_, Vec<u8>>(6)?,
                ))
            })?;
            rows.map(|row| {
                let (seq, sender, sender_user, message_id, enqueued_at, expires_at, ciphertext) =
                    row?;
                Ok(QueuedMessage {
                    seq,
                    sender: DeviceKey(sender),
                    sender_user: stored_user_id(&sender_user)?,
                    message_id: MessageId(message_id),
                    enqueued_at,
                    expires_at,
                    ciphertext,
                })
            })
            .collect()
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

    fn acknowledge(
        &self,
        device: &DeviceKey,
        message_ids: &[MessageId],
        now: u64,
    ) -> Result<Acknowledged> {
        let now = check_int(now, "time out of range")?;
        let (device, message_ids) = (*device, message_ids.to_vec());
        self.write(0, move |tx| {
            let me = get_device(tx.conn(), &device)?;
            let mut done = Acknowledged::default();
            for message_id in message_ids {
                // No ORDER BY: with it the planner walks the whole queue in
                // seq order instead of using queue_by_message (BENCHMARKS.md).
                let mut copies = {
                    let mut stmt = tx.conn().prepare_cached(
                        "SELECT q.id, q.seq, q.sender, d.user_id, \
                         ifnull(length(p.ciphertext), length(q.ciphertext)) \
                         FROM queue q JOIN devices d ON d.device_key = q.sender \
                         LEFT JOIN payloads p ON p.id = q.payload \
                         WHERE q.recipient = ?1 AND q.message_id = ?2",
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
                    done.unknown.push(message_id);
                    continue;
                }
                copies.sort_unstable_by_key(|copy| copy.1);
                for (id, seq, sender, sender_user, size) in copies {
                    // A shared payload goes with its last copy (the trigger).
                    tx.conn()
                        .prepare_cached("DELETE FROM queue WHERE id = ?1")?
                        .execute([id])?;
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
                    done.acked.push(AckedMessage {
                        seq,
                        sender,
                        message_id,
                        size,
                    });
                }
            }
            if !done.acked.is_empty() {
                tx.conn()
                    .prepare_cached(
                        "UPDATE devices SET queue_len = queue_len - ?2 WHERE device_key = ?1",
                    )?
                    .execute(params![device.0, done.acked.len() as u64])?;
            }
            Ok(done)
        })
    }

    fn expire(&self, now: u64, limit: u32) -> Result<Vec<ExpiredMessage>> {
        let now = check_int(now, "time out of range")?;
        self.write(0, move |tx| {
            let copies = {
                let mut stmt = tx.conn().prepare_cached(
                    "SELECT q.id, q.recipient, d.user_id, q.sender, q.message_id, \
                     ifnull(length(p.ciphertext), length(q.ciphertext)) \
                     FROM queue q JOIN devices d ON d.device_key = q.recipient \
                     LEFT JOIN payloads p ON p.id = q.payload \
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
                // A shared payload goes with its last copy (the trigger).
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
        let entries = entries.to_vec();
        self.write(0, move |tx| {
            entries
                .into_iter()
                .map(|entry| tx.audit(entry, now))
                .collect()
        })
    }

    fn issue_tree_head(&self, key: &SigningKey, now: u64) -> Result<SignedTreeHead> {
        let now = check_int(now, "time out of range")?;
        // The writer signs: the head must be stored in the same transaction.
        let key = key.clone();
        self.write(0, move |tx| {
            let timestamp = now.max(tx.log.not_before_ms());
            if let Some(last) = last_head(tx.conn())?
                && last.head.tree_size == tx.log.size()
                && last.head.timestamp_ms == timestamp
            {
                return Ok(last);
            }
            let head = tx.log.issue_head(timestamp, &key)?;
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

    fn publish_role_schedule(
        &self,
        record: &RoleScheduleRecord,
        admin: Option<&UserId>,
        now: u64,
    ) -> Result<()> {
        let now = check_int(now, "time out of range")?;
        let (record, admin) = (record.clone(), admin.cloned());
        self.write(0, move |tx| roles::publish(tx, &record, admin, now))
    }

    fn get_role_schedule(&self, role_id: &str) -> Result<RoleScheduleRecord> {
        self.read(|conn| roles::get(conn, role_id))
    }

    fn list_role_schedules(&self) -> Result<Vec<RoleScheduleRecord>> {
        self.read(roles::list)
    }

    fn audit_state(&self) -> Result<AuditState> {
        self.write(0, |tx| {
            Ok(AuditState {
                size: tx.log.size(),
                root: tx.log.root(),
                not_before_ms: tx.log.not_before_ms(),
            })
        })
    }

    fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<InclusionProof> {
        self.write(0, move |tx| {
            tx.log.inclusion_proof(index, tree_size).map_err(log_error)
        })
    }

    fn consistency_proof(&self, first: u64, second: u64) -> Result<ConsistencyProof> {
        self.write(0, move |tx| {
            tx.log.consistency_proof(first, second).map_err(log_error)
        })
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

#[cfg(test)]
mod tests {
    //! The writer's rollback paths that no [`Storage`] call reaches today
    //! (every call checks before it appends): requests that append audit
    //! entries, or issue a head, and are then refused.

    use std::sync::Arc;

    use super::*;

    fn append_then(count: usize, refuse: bool) -> impl FnOnce(&mut Tx<'_>) -> Result<u64> {
        move |tx| {
            for _ in 0..count {
                tx.audit(entry(EventKind::AuthSuccess), 1_000)?;
            }
            if refuse {
                Err(StorageError::InvalidInput("refused after appending"))
            } else {
                Ok(tx.log.size())
            }
        }
    }

    #[test]
    fn refused_requests_in_a_batch_leave_no_leaves_behind() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SqliteStorage::open(dir.path(), StorageConfig::default()).unwrap());
        s.append_audit(&[entry(EventKind::Delivery)], 500).unwrap();

        // Hold the write lock so that the requests below queue up behind a
        // first one and run as one batch.
        let lock = Connection::open(s.path()).unwrap();
        lock.execute_batch("BEGIN IMMEDIATE").unwrap();
        let plug = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.write(0, append_then(1, false)))
        };
        std::thread::sleep(Duration::from_millis(200));
        let key = SigningKey::from_bytes(&[3; 32]);
        let plan: Vec<(usize, bool)> = vec![(3, true), (2, false), (17, true), (1, false)];
        let handles: Vec<_> = plan
            .iter()
            .map(|&(count, refuse)| {
                let s = Arc::clone(&s);
                let handle = std::thread::spawn(move || s.write(0, append_then(count, refuse)));
                // Normally in order: each request sent before the next.
                std::thread::sleep(Duration::from_millis(20));
                handle
            })
            .collect();
        // A head issued and then refused: its timestamp bound goes too.
        let head = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                s.write(0, move |tx| {
                    tx.log.issue_head(9_000, &key)?;
                    Err::<(), _>(StorageError::InvalidInput("refused after signing"))
                })
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        lock.execute_batch("ROLLBACK").unwrap();
        // Sizes as seen inside the batch; if the machine is slow enough
        // that the requests did not queue in order, only the set differs.
        let mut sizes = vec![plug.join().unwrap().unwrap()];
        for (result, (_, refuse)) in handles.into_iter().map(|h| h.join().unwrap()).zip(&plan) {
            match result {
                Ok(size) => {
                    assert!(!refuse);
                    sizes.push(size);
                }
                Err(e) => assert!(*refuse && matches!(e, StorageError::InvalidInput(_))),
            }
        }
        sizes.sort_unstable();
        assert_eq!(sizes.len(), 3);
        assert_eq!(
            sizes[2], 5,
            "1 + the plug's 1 + 2 + 1, none of the refused 20"
        );
        assert!(matches!(
            head.join().unwrap(),
            Err(StorageError::InvalidInput(_))
        ));

        let state = s.audit_state().unwrap();
        assert_eq!(state.size, 5);
        assert_eq!(state.not_before_ms, 1_000, "the refused head left no bound");
        // The tree matches the tables, and keeps growing from there.
        s.append_audit(&[entry(EventKind::Delivery)], 2_000)
            .unwrap();
        let state = s.audit_state().unwrap();
        drop(s);
        let reopened = SqliteStorage::open(dir.path(), StorageConfig::default()).unwrap();
        assert_eq!(reopened.audit_state().unwrap(), state);
    }
}
