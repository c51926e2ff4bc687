//! The store's records and their methods (spec/11, "Tables").

use rusqlite::{Connection, ErrorCode, params};
use subtle::ConstantTimeEq;
use ward_core::{IdentityKeyPair, OneTimePreKeyPair, Session, SignedPreKeyPair};
use zeroize::Zeroizing;

use super::codec::{
    blob, blob_n, flag, integer_u32, integer_u64, name_bytes, put_name, reader, text,
};
use super::crypto::Keys;
use super::error::{Result, StoreError, corrupt};
use super::{MAX_VALUE_LEN, Store};

const DEVICE: &str = "device";
const SIGNED_PREKEYS: &str = "signed_prekeys";
const ONE_TIME_PREKEYS: &str = "one_time_prekeys";
const COUNTERS: &str = "counters";
const SESSIONS: &str = "sessions";
const IDENTITIES: &str = "identities";
const INCOMING: &str = "incoming";
const OUTBOX: &str = "outbox";

/// Blind-index names (spec/11, "Blind indexes").
const TAG_SESSION_DEVICE: &str = "session device";
const TAG_SESSION: &str = "session";
const TAG_IDENTITY_USER: &str = "identity user";
const TAG_IDENTITY: &str = "identity";
const TAG_INCOMING: &str = "incoming";
const TAG_OUTBOX: &str = "outbox";

/// The counter row holding the next one-time prekey id.
const NEXT_ONE_TIME_ID: &str = "next_one_time_id";

const MISMATCH: &str = "record does not match its key";

/// The relay a device is enrolled with. Not secret: stored in plain
/// columns, but bound to the sealed identity (spec/11, `device`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayInfo {
    /// The relay's address as the app dials it (`host:port`).
    pub address: String,
    /// SHA-256 of the relay's certificate, the pin (spec/08).
    pub fingerprint: [u8; 32],
}

/// This device: its identity secret, its user and its relay.
pub struct DeviceRecord {
    /// The user the device is enrolled for.
    pub user_id: String,
    /// The relay.
    pub relay: RelayInfo,
    /// The device identity (sealed at rest).
    pub identity: IdentityKeyPair,
}

impl core::fmt::Debug for DeviceRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            user_id: _,
            relay,
            identity,
        } = self;
        // `IdentityKeyPair`'s Debug shows only the public identity.
        f.debug_struct("DeviceRecord")
            .field("relay", relay)
            .field("identity", identity)
            .finish_non_exhaustive()
    }
}

/// A signed prekey set held by the store, without its secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedPreKeyInfo {
    /// The set's id.
    pub id: u32,
    /// Its `created_at`, seconds since the Unix epoch (spec/02).
    pub created_at: u64,
}

/// What [`Store::record_identity`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityStatus {
    /// The first identity recorded for this user and device.
    New,
    /// The same bytes as recorded before.
    Unchanged,
    /// Other bytes than recorded before; the new ones replace them, so the
    /// change is reported once.
    Changed {
        /// The identity recorded before.
        previous: Vec<u8>,
    },
}

/// An identity recorded for a user.
#[derive(Clone, PartialEq, Eq)]
pub struct KnownIdentity {
    /// The device key it was recorded under.
    pub device_key: [u8; 32],
    /// The identity's bytes, as recorded.
    pub identity: Vec<u8>,
}

impl core::fmt::Debug for KnownIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Which contacts a clinician has is sensitive: no keys in logs.
        f.debug_struct("KnownIdentity").finish_non_exhaustive()
    }
}

/// Whether a message was new to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insertion {
    /// Stored.
    Inserted,
    /// Already stored under the same key; nothing changed.
    Duplicate,
}

/// A received message, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The sending user, as the relay named it.
    pub sender_user: String,
    /// The sending device's key.
    pub sender_device: [u8; 32],
    /// The sender's message id.
    pub message_id: [u8; 16],
    /// When this device stored it, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The plaintext.
    pub body: Vec<u8>,
    /// Whether the relay has been told (see [`Store::mark_acknowledged`]).
    pub acknowledged: bool,
}

impl core::fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("len", &self.body.len())
            .field("acknowledged", &self.acknowledged)
            .finish_non_exhaustive()
    }
}

/// Names a received message: its sender device and message id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MessageRef {
    /// The sending device's key.
    pub sender_device: [u8; 32],
    /// The sender's message id.
    pub message_id: [u8; 16],
}

impl core::fmt::Debug for MessageRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MessageRef").finish_non_exhaustive()
    }
}

/// Where an outgoing message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxStatus {
    /// Not yet accepted by the relay.
    Pending,
    /// The relay accepted it.
    Sent,
}

impl OutboxStatus {
    fn code(self) -> i64 {
        match self {
            Self::Pending => 0,
            Self::Sent => 1,
        }
    }
}

/// A message in the outbox.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Its message id (the same for every retry, spec/08).
    pub message_id: [u8; 16],
    /// The users it is addressed to.
    pub recipients: Vec<String>,
    /// The plaintext.
    pub body: Vec<u8>,
    /// Whether the relay accepted it.
    pub status: OutboxStatus,
}

impl core::fmt::Debug for OutgoingMessage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OutgoingMessage")
            .field("recipients", &self.recipients.len())
            .field("len", &self.body.len())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Maps a uniqueness violation to [`StoreError::IdInUse`].
fn insert_id(result: rusqlite::Result<usize>, table: &'static str, id: u32) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
            Err(StoreError::IdInUse { table, id })
        }
        Err(e) => Err(e.into()),
    }
}

fn decode<T>(table: &'static str, r: ward_core::Result<T>) -> Result<T> {
    r.map_err(|source| StoreError::Decode { table, source })
}

fn device_record_key(user_id: &str, relay: &RelayInfo) -> Result<Vec<u8>> {
    let mut key = Vec::new();
    put_name(&mut key, user_id, "user id")?;
    put_name(&mut key, &relay.address, "relay address")?;
    key.extend_from_slice(&relay.fingerprint);
    Ok(key)
}

fn signed_record_key(id: u32, created_at: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&id.to_be_bytes());
    key[4..].copy_from_slice(&created_at.to_be_bytes());
    key
}

fn concat(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out
}

fn session_tags(keys: &Keys, device: &[u8; 32], base_key: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    (
        keys.tag(TAG_SESSION_DEVICE, &[device]),
        keys.tag(TAG_SESSION, &[device, base_key]),
    )
}

fn open_session(
    keys: &Keys,
    device_tag: &[u8],
    tag: &[u8],
    sealed: &[u8],
    device: &[u8; 32],
) -> Result<Session> {
    let state = keys.open(SESSIONS, &concat(device_tag, tag), sealed)?;
    let session = decode(SESSIONS, Session::from_bytes(&state))?;
    if session.remote_identity().signing_key() != device {
        return Err(corrupt(SESSIONS, MISMATCH));
    }
    Ok(session)
}

/// `identities` value: `u16be(len(user)) || user || device_key || identity`.
fn parse_identity(value: &Zeroizing<Vec<u8>>) -> Result<(String, [u8; 32], Vec<u8>)> {
    let mut r = reader(IDENTITIES, value);
    let user = r.name()?;
    let device_key = r.array::<32>()?;
    Ok((user, device_key, r.rest().to_vec()))
}

/// `incoming` value: `sender_device || message_id || u64be(received_at_ms)
/// || u16be(len(sender_user)) || sender_user || body`.
fn parse_incoming(value: &Zeroizing<Vec<u8>>, acknowledged: bool) -> Result<ReceivedMessage> {
    let mut r = reader(INCOMING, value);
    let sender_device = r.array::<32>()?;
    let message_id = r.array::<16>()?;
    let received_at_ms = r.u64()?;
    let sender_user = r.name()?;
    Ok(ReceivedMessage {
        sender_user,
        sender_device,
        message_id,
        received_at_ms,
        body: r.rest().to_vec(),
        acknowledged,
    })
}

/// `outbox` value: `message_id || u16be(n) || n × (u16be(len) || user) || body`.
fn parse_outgoing(value: &Zeroizing<Vec<u8>>, status: OutboxStatus) -> Result<OutgoingMessage> {
    let mut r = reader(OUTBOX, value);
    let message_id = r.array::<16>()?;
    let count = r.u16()?;
    let recipients = (0..count).map(|_| r.name()).collect::<Result<Vec<_>>>()?;
    Ok(OutgoingMessage {
        message_id,
        recipients,
        body: r.rest().to_vec(),
        status,
    })
}

fn check_tag(stored: &[u8], computed: &[u8; 32], table: &'static str) -> Result<()> {
    if bool::from(stored.ct_eq(computed)) {
        Ok(())
    } else {
        Err(corrupt(table, MISMATCH))
    }
}

fn read_counter(conn: &Connection, name: &str) -> Result<Option<u32>> {
    let mut stmt = conn.prepare_cached("SELECT value FROM counters WHERE name = ?1")?;
    let mut rows = stmt.query([name])?;
    match rows.next()? {
        Some(row) => Ok(Some(integer_u32(row, 0, COUNTERS)?)),
        None => Ok(None),
    }
}

/// # Device
impl Store {
    /// Saves this device's record, replacing any earlier one. The identity
    /// secret is sealed; user id and relay are plain columns bound to it
    /// (a change to them makes [`Store::device`] fail with
    /// [`StoreError::Tampered`]).
    pub fn save_device(&mut self, device: &DeviceRecord) -> Result<()> {
        let record_key = device_record_key(&device.user_id, &device.relay)?;
        self.write(|conn, keys| {
            let secret = device.identity.to_secret_bytes();
            let sealed = keys.seal(DEVICE, &record_key, secret.as_slice())?;
            conn.prepare_cached(
                "INSERT OR REPLACE INTO device \
                 (id, user_id, relay_address, relay_fingerprint, identity) \
                 VALUES (1, ?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                device.user_id,
                device.relay.address,
                device.relay.fingerprint,
                sealed
            ])?;
            Ok(())
        })
    }

    /// This device's record, if one was saved.
    pub fn device(&self) -> Result<Option<DeviceRecord>> {
        let keys = self.keys()?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT user_id, relay_address, relay_fingerprint, identity FROM device WHERE id = 1",
        )?;
        let mut rows = stmt.query([])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let user_id = text(row, 0, DEVICE)?;
        let relay = RelayInfo {
            address: text(row, 1, DEVICE)?,
            fingerprint: blob_n::<32>(row, 2, DEVICE)?,
        };
        let record_key = device_record_key(&user_id, &relay)?;
        let secret = keys.open(DEVICE, &record_key, &blob(row, 3, DEVICE)?)?;
        let identity = decode(DEVICE, IdentityKeyPair::from_secret_bytes(&secret))?;
        Ok(Some(DeviceRecord {
            user_id,
            relay,
            identity,
        }))
    }
}

/// # Signed prekeys
impl Store {
    /// Saves a signed prekey set under its id. An id already held is
    /// [`StoreError::IdInUse`] (spec/02, KEY-12).
    pub fn save_signed_prekey(&mut self, pair: &SignedPreKeyPair) -> Result<()> {
        let id = pair.id();
        let created_at = pair.public().created_at();
        let created_at_sql =
            i64::try_from(created_at).map_err(|_| StoreError::TooLarge { what: "created_at" })?;
        self.write(|conn, keys| {
            let secret = pair.to_secret_bytes();
            let sealed = keys.seal(
                SIGNED_PREKEYS,
                &signed_record_key(id, created_at),
                secret.as_slice(),
            )?;
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO signed_prekeys (id, created_at, secret) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![id, created_at_sql, sealed]);
            insert_id(inserted, SIGNED_PREKEYS, id)
        })
    }

    /// The signed prekey set `id`, restored under `identity` (which must be
    /// this device's: the public half is recomputed and signed with it).
    pub fn signed_prekey(
        &self,
        id: u32,
        identity: &IdentityKeyPair,
    ) -> Result<Option<SignedPreKeyPair>> {
        let keys = self.keys()?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT created_at, secret FROM signed_prekeys WHERE id = ?1")?;
        let mut rows = stmt.query([id])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let created_at = integer_u64(row, 0, SIGNED_PREKEYS)?;
        let secret = keys.open(
            SIGNED_PREKEYS,
            &signed_record_key(id, created_at),
            &blob(row, 1, SIGNED_PREKEYS)?,
        )?;
        let pair = decode(
            SIGNED_PREKEYS,
            SignedPreKeyPair::from_secret_bytes(identity, &secret),
        )?;
        if pair.id() != id || pair.public().created_at() != created_at {
            return Err(corrupt(SIGNED_PREKEYS, MISMATCH));
        }
        Ok(Some(pair))
    }

    /// The signed prekey sets held, newest (`created_at`) first. Every
    /// entry is authenticated: its sealed value is opened and dropped.
    pub fn signed_prekeys(&self) -> Result<Vec<SignedPreKeyInfo>> {
        let keys = self.keys()?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, created_at, secret FROM signed_prekeys ORDER BY created_at DESC, id DESC",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let id = integer_u32(row, 0, SIGNED_PREKEYS)?;
            let created_at = integer_u64(row, 1, SIGNED_PREKEYS)?;
            keys.open(
                SIGNED_PREKEYS,
                &signed_record_key(id, created_at),
                &blob(row, 2, SIGNED_PREKEYS)?,
            )?;
            out.push(SignedPreKeyInfo { id, created_at });
        }
        Ok(out)
    }

    /// Deletes the signed prekey set `id`; whether it was held.
    pub fn delete_signed_prekey(&mut self, id: u32) -> Result<bool> {
        self.write(|conn, _| {
            Ok(conn
                .prepare_cached("DELETE FROM signed_prekeys WHERE id = ?1")?
                .execute([id])?
                > 0)
        })
    }
}

/// # One-time prekeys
impl Store {
    /// Adds a batch of one-time prekeys and sets the next id to use, in one
    /// transaction. An id already held is [`StoreError::IdInUse`] and
    /// nothing is written (spec/02, KEY-12).
    ///
    /// Store a batch before uploading it: a key the relay hands out that
    /// the device does not hold makes that handshake fail.
    pub fn add_one_time_prekeys(
        &mut self,
        batch: &[OneTimePreKeyPair],
        next_id: u32,
    ) -> Result<()> {
        self.write(|conn, keys| {
            let mut insert =
                conn.prepare_cached("INSERT INTO one_time_prekeys (id, secret) VALUES (?1, ?2)")?;
            for pair in batch {
                let id = pair.id();
                let secret = pair.to_secret_bytes();
                let sealed = keys.seal(ONE_TIME_PREKEYS, &id.to_be_bytes(), secret.as_slice())?;
                insert_id(insert.execute(params![id, sealed]), ONE_TIME_PREKEYS, id)?;
            }
            conn.prepare_cached("INSERT OR REPLACE INTO counters (name, value) VALUES (?1, ?2)")?
                .execute(params![NEXT_ONE_TIME_ID, next_id])?;
            Ok(())
        })
    }

    /// The one-time prekey `id`, left in place (spec/06, SES-7: delete it
    /// only once the handshake succeeded).
    pub fn one_time_prekey(&self, id: u32) -> Result<Option<OneTimePreKeyPair>> {
        let keys = self.keys()?;
        read_one_time(&self.conn, keys, id)
    }

    /// Removes and returns the one-time prekey `id`, in one transaction: a
    /// key is taken at most once. A value that does not open is not
    /// removed.
    pub fn take_one_time_prekey(&mut self, id: u32) -> Result<Option<OneTimePreKeyPair>> {
        self.write(|conn, keys| {
            let pair = read_one_time(conn, keys, id)?;
            if pair.is_some() {
                conn.prepare_cached("DELETE FROM one_time_prekeys WHERE id = ?1")?
                    .execute([id])?;
            }
            Ok(pair)
        })
    }

    /// How many one-time prekeys the store holds.
    pub fn one_time_prekey_count(&self) -> Result<u64> {
        self.keys()?;
        let count: i64 = self
            .conn
            .query_row("SELECT count(*) FROM one_time_prekeys", [], |r| r.get(0))?;
        u64::try_from(count).map_err(|_| corrupt(ONE_TIME_PREKEYS, "negative count"))
    }

    /// The next one-time prekey id, as last set by
    /// [`Store::add_one_time_prekeys`]; `None` before the first batch.
    pub fn next_one_time_id(&self) -> Result<Option<u32>> {
        self.keys()?;
        read_counter(&self.conn, NEXT_ONE_TIME_ID)
    }
}

fn read_one_time(conn: &Connection, keys: &Keys, id: u32) -> Result<Option<OneTimePreKeyPair>> {
    let mut stmt = conn.prepare_cached("SELECT secret FROM one_time_prekeys WHERE id = ?1")?;
    let mut rows = stmt.query([id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let secret = keys.open(
        ONE_TIME_PREKEYS,
        &id.to_be_bytes(),
        &blob(row, 0, ONE_TIME_PREKEYS)?,
    )?;
    let pair = decode(
        ONE_TIME_PREKEYS,
        OneTimePreKeyPair::from_secret_bytes(&secret),
    )?;
    if pair.id() != id {
        return Err(corrupt(ONE_TIME_PREKEYS, MISMATCH));
    }
    Ok(Some(pair))
}

/// # Sessions
impl Store {
    /// Saves a session under its remote device and base key (spec/06,
    /// SES-6), replacing the earlier state of the same session, and makes
    /// it that device's most recently used session (SES-9).
    ///
    /// Save after every successful encryption before sending, and after
    /// every successful decryption before acknowledging (SES-5).
    pub fn save_session(&mut self, session: &Session) -> Result<()> {
        let device = *session.remote_identity().signing_key();
        let base_key = *session.base_key();
        self.write(|conn, keys| {
            let (device_tag, tag) = session_tags(keys, &device, &base_key);
            let state = session.to_bytes();
            let sealed = keys.seal(SESSIONS, &concat(&device_tag, &tag), state.as_slice())?;
            conn.prepare_cached(
                "INSERT OR REPLACE INTO sessions (tag, device_tag, used, state) \
                 VALUES (?1, ?2, (SELECT coalesce(max(used), 0) + 1 FROM sessions), ?3)",
            )?
            .execute(params![tag, device_tag, sealed])?;
            Ok(())
        })
    }

    /// The most recently saved session with `device`.
    pub fn session(&self, device: &[u8; 32]) -> Result<Option<Session>> {
        Ok(self.load_sessions(device, true)?.into_iter().next())
    }

    /// Every session with `device`, most recently saved first.
    pub fn sessions(&self, device: &[u8; 32]) -> Result<Vec<Session>> {
        self.load_sessions(device, false)
    }

    fn load_sessions(&self, device: &[u8; 32], first_only: bool) -> Result<Vec<Session>> {
        let keys = self.keys()?;
        let device_tag = keys.tag(TAG_SESSION_DEVICE, &[device]);
        let mut stmt = self.conn.prepare_cached(
            "SELECT tag, state FROM sessions WHERE device_tag = ?1 ORDER BY used DESC",
        )?;
        let mut rows = stmt.query([device_tag])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let tag = blob(row, 0, SESSIONS)?;
            let sealed = blob(row, 1, SESSIONS)?;
            out.push(open_session(keys, &device_tag, &tag, &sealed, device)?);
            if first_only {
                break;
            }
        }
        Ok(out)
    }

    /// The session with `device` whose base key is `base_key`: the one an
    /// incoming pre-key message names (SES-6).
    pub fn session_by_base_key(
        &self,
        device: &[u8; 32],
        base_key: &[u8; 32],
    ) -> Result<Option<Session>> {
        let keys = self.keys()?;
        let (_, tag) = session_tags(keys, device, base_key);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT device_tag, state FROM sessions WHERE tag = ?1")?;
        let mut rows = stmt.query([tag])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let device_tag = blob(row, 0, SESSIONS)?;
        let session = open_session(keys, &device_tag, &tag, &blob(row, 1, SESSIONS)?, device)?;
        if session.base_key() != base_key {
            return Err(corrupt(SESSIONS, MISMATCH));
        }
        Ok(Some(session))
    }

    /// Deletes one session; whether it was held.
    pub fn delete_session(&mut self, device: &[u8; 32], base_key: &[u8; 32]) -> Result<bool> {
        self.write(|conn, keys| {
            let (_, tag) = session_tags(keys, device, base_key);
            Ok(conn
                .prepare_cached("DELETE FROM sessions WHERE tag = ?1")?
                .execute([tag])?
                > 0)
        })
    }

    /// Deletes every session with `device` (a revoked device); how many.
    pub fn delete_sessions(&mut self, device: &[u8; 32]) -> Result<usize> {
        self.write(|conn, keys| {
            let device_tag = keys.tag(TAG_SESSION_DEVICE, &[device]);
            Ok(conn
                .prepare_cached("DELETE FROM sessions WHERE device_tag = ?1")?
                .execute([device_tag])?)
        })
    }
}

/// # Known identities
impl Store {
    /// Records `identity` as the identity of `user`'s device `device_key`
    /// and reports whether it is new, unchanged or changed (spec/11,
    /// "Known identities"). A changed identity replaces the recorded one.
    pub fn record_identity(
        &mut self,
        user: &str,
        device_key: &[u8; 32],
        identity: &[u8],
    ) -> Result<IdentityStatus> {
        let user_name = name_bytes(user, "user id")?;
        if identity.len() > MAX_VALUE_LEN - user_name.len() - 32 {
            return Err(StoreError::TooLarge { what: "identity" });
        }
        self.write(|conn, keys| {
            let user_tag = keys.tag(TAG_IDENTITY_USER, &[&user_name]);
            let tag = keys.tag(TAG_IDENTITY, &[&user_name, device_key]);
            let record_key = concat(&user_tag, &tag);
            let previous = {
                let mut stmt =
                    conn.prepare_cached("SELECT user_tag, value FROM identities WHERE tag = ?1")?;
                let mut rows = stmt.query([tag])?;
                match rows.next()? {
                    None => None,
                    Some(row) => {
                        let stored_user_tag = blob(row, 0, IDENTITIES)?;
                        let value = keys.open(
                            IDENTITIES,
                            &concat(&stored_user_tag, &tag),
                            &blob(row, 1, IDENTITIES)?,
                        )?;
                        let (stored_user, stored_device, stored_identity) = parse_identity(&value)?;
                        if stored_user != user || &stored_device != device_key {
                            return Err(corrupt(IDENTITIES, MISMATCH));
                        }
                        Some(stored_identity)
                    }
                }
            };
            let mut value =
                Zeroizing::new(Vec::with_capacity(user_name.len() + 32 + identity.len()));
            value.extend_from_slice(&user_name);
            value.extend_from_slice(device_key);
            value.extend_from_slice(identity);
            match previous {
                Some(p) if bool::from(p.as_slice().ct_eq(identity)) => {
                    Ok(IdentityStatus::Unchanged)
                }
                Some(previous) => {
                    let sealed = keys.seal(IDENTITIES, &record_key, &value)?;
                    conn.prepare_cached(
                        "UPDATE identities SET user_tag = ?1, value = ?2 WHERE tag = ?3",
                    )?
                    .execute(params![user_tag, sealed, tag])?;
                    Ok(IdentityStatus::Changed { previous })
                }
                None => {
                    let sealed = keys.seal(IDENTITIES, &record_key, &value)?;
                    conn.prepare_cached(
                        "INSERT INTO identities (tag, user_tag, value) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![tag, user_tag, sealed])?;
                    Ok(IdentityStatus::New)
                }
            }
        })
    }

    /// The identities recorded for `user`, in the order first recorded.
    pub fn known_identities(&self, user: &str) -> Result<Vec<KnownIdentity>> {
        let keys = self.keys()?;
        let user_name = name_bytes(user, "user id")?;
        let user_tag = keys.tag(TAG_IDENTITY_USER, &[&user_name]);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT tag, value FROM identities WHERE user_tag = ?1 ORDER BY seq")?;
        let mut rows = stmt.query([user_tag])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let tag = blob(row, 0, IDENTITIES)?;
            let value = keys.open(
                IDENTITIES,
                &concat(&user_tag, &tag),
                &blob(row, 1, IDENTITIES)?,
            )?;
            let (stored_user, device_key, identity) = parse_identity(&value)?;
            check_tag(
                &tag,
                &keys.tag(TAG_IDENTITY, &[&user_name, &device_key]),
                IDENTITIES,
            )?;
            if stored_user != user {
                return Err(corrupt(IDENTITIES, MISMATCH));
            }
            out.push(KnownIdentity {
                device_key,
                identity,
            });
        }
        Ok(out)
    }

    /// Forgets the identity of `user`'s device `device_key` (a device the
    /// relay no longer lists); whether one was recorded.
    pub fn forget_identity(&mut self, user: &str, device_key: &[u8; 32]) -> Result<bool> {
        let user_name = name_bytes(user, "user id")?;
        self.write(|conn, keys| {
            let tag = keys.tag(TAG_IDENTITY, &[&user_name, device_key]);
            Ok(conn
                .prepare_cached("DELETE FROM identities WHERE tag = ?1")?
                .execute([tag])?
                > 0)
        })
    }
}

/// # Received messages
impl Store {
    /// Stores a received message, unless one from the same device with the
    /// same id is already stored: de-duplication and body are one row, so
    /// one statement (STO-12). New messages start unacknowledged.
    pub fn store_incoming(
        &mut self,
        sender_user: &str,
        sender_device: &[u8; 32],
        message_id: &[u8; 16],
        received_at_ms: u64,
        body: &[u8],
    ) -> Result<Insertion> {
        let mut value = Zeroizing::new(Vec::with_capacity(58 + sender_user.len() + body.len()));
        value.extend_from_slice(sender_device);
        value.extend_from_slice(message_id);
        value.extend_from_slice(&received_at_ms.to_be_bytes());
        put_name(&mut value, sender_user, "sender user")?;
        value.extend_from_slice(body);
        self.write(|conn, keys| {
            let tag = keys.tag(TAG_INCOMING, &[sender_device, message_id]);
            let sealed = keys.seal(INCOMING, &tag, &value)?;
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO incoming (tag, acknowledged, value) VALUES (?1, 0, ?2) \
                     ON CONFLICT (tag) DO NOTHING",
                )?
                .execute(params![tag, sealed])?;
            Ok(if inserted == 1 {
                Insertion::Inserted
            } else {
                Insertion::Duplicate
            })
        })
    }

    /// Whether a message from `sender_device` with `message_id` is stored:
    /// a redelivery to acknowledge again without decrypting it (spec/08,
    /// RLY-28).
    pub fn is_received(&self, sender_device: &[u8; 32], message_id: &[u8; 16]) -> Result<bool> {
        let keys = self.keys()?;
        let tag = keys.tag(TAG_INCOMING, &[sender_device, message_id]);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM incoming WHERE tag = ?1")?;
        Ok(stmt.exists([tag])?)
    }

    /// Every stored received message, in the order stored.
    pub fn received(&self) -> Result<Vec<ReceivedMessage>> {
        self.list_incoming("SELECT tag, acknowledged, value FROM incoming ORDER BY seq")
    }

    /// The received messages not yet acknowledged to the relay, in the
    /// order stored: after a restart, acknowledge these again.
    pub fn unacknowledged(&self) -> Result<Vec<MessageRef>> {
        Ok(self
            .list_incoming(
                "SELECT tag, acknowledged, value FROM incoming WHERE acknowledged = 0 ORDER BY seq",
            )?
            .into_iter()
            .map(|m| MessageRef {
                sender_device: m.sender_device,
                message_id: m.message_id,
            })
            .collect())
    }

    fn list_incoming(&self, sql: &str) -> Result<Vec<ReceivedMessage>> {
        let keys = self.keys()?;
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let tag = blob(row, 0, INCOMING)?;
            let acknowledged = flag(row, 1, INCOMING)?;
            let value = keys.open(INCOMING, &tag, &blob(row, 2, INCOMING)?)?;
            let message = parse_incoming(&value, acknowledged)?;
            check_tag(
                &tag,
                &keys.tag(TAG_INCOMING, &[&message.sender_device, &message.message_id]),
                INCOMING,
            )?;
            out.push(message);
        }
        Ok(out)
    }

    /// Records that the relay was told; whether the message is stored.
    pub fn mark_acknowledged(
        &mut self,
        sender_device: &[u8; 32],
        message_id: &[u8; 16],
    ) -> Result<bool> {
        self.write(|conn, keys| {
            let tag = keys.tag(TAG_INCOMING, &[sender_device, message_id]);
            Ok(conn
                .prepare_cached("UPDATE incoming SET acknowledged = 1 WHERE tag = ?1")?
                .execute([tag])?
                > 0)
        })
    }

    /// Deletes a received message (retention); whether it was stored. A
    /// deleted message is no longer recognised as a duplicate.
    pub fn delete_received(
        &mut self,
        sender_device: &[u8; 32],
        message_id: &[u8; 16],
    ) -> Result<bool> {
        self.write(|conn, keys| {
            let tag = keys.tag(TAG_INCOMING, &[sender_device, message_id]);
            Ok(conn
                .prepare_cached("DELETE FROM incoming WHERE tag = ?1")?
                .execute([tag])?
                > 0)
        })
    }
}

/// # Outbox
impl Store {
    /// Puts a message into the outbox as [`OutboxStatus::Pending`], unless
    /// one with the same id is there.
    pub fn queue_outgoing(
        &mut self,
        message_id: &[u8; 16],
        recipients: &[&str],
        body: &[u8],
    ) -> Result<Insertion> {
        let count = u16::try_from(recipients.len())
            .map_err(|_| StoreError::TooLarge { what: "recipients" })?;
        let mut value = Zeroizing::new(Vec::with_capacity(18 + body.len()));
        value.extend_from_slice(message_id);
        value.extend_from_slice(&count.to_be_bytes());
        for user in recipients {
            put_name(&mut value, user, "recipient")?;
        }
        value.extend_from_slice(body);
        self.write(|conn, keys| {
            let tag = keys.tag(TAG_OUTBOX, &[message_id]);
            let sealed = keys.seal(OUTBOX, &tag, &value)?;
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO outbox (tag, status, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (tag) DO NOTHING",
                )?
                .execute(params![tag, OutboxStatus::Pending.code(), sealed])?;
            Ok(if inserted == 1 {
                Insertion::Inserted
            } else {
                Insertion::Duplicate
            })
        })
    }

    /// Every message in the outbox, in the order queued.
    pub fn outbox(&self) -> Result<Vec<OutgoingMessage>> {
        self.list_outbox("SELECT tag, status, value FROM outbox ORDER BY seq")
    }

    /// The pending messages, in the order queued: after a restart, send
    /// these again (with their ids).
    pub fn pending_outgoing(&self) -> Result<Vec<OutgoingMessage>> {
        self.list_outbox("SELECT tag, status, value FROM outbox WHERE status = 0 ORDER BY seq")
    }

    fn list_outbox(&self, sql: &str) -> Result<Vec<OutgoingMessage>> {
        let keys = self.keys()?;
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let tag = blob(row, 0, OUTBOX)?;
            let status = if flag(row, 1, OUTBOX)? {
                OutboxStatus::Sent
            } else {
                OutboxStatus::Pending
            };
            let value = keys.open(OUTBOX, &tag, &blob(row, 2, OUTBOX)?)?;
            let message = parse_outgoing(&value, status)?;
            check_tag(&tag, &keys.tag(TAG_OUTBOX, &[&message.message_id]), OUTBOX)?;
            out.push(message);
        }
        Ok(out)
    }

    /// Marks a message as accepted by the relay; whether it is in the outbox.
    pub fn mark_sent(&mut self, message_id: &[u8; 16]) -> Result<bool> {
        self.write(|conn, keys| {
            let tag = keys.tag(TAG_OUTBOX, &[message_id]);
            Ok(conn
                .prepare_cached("UPDATE outbox SET status = ?1 WHERE tag = ?2")?
                .execute(params![OutboxStatus::Sent.code(), tag])?
                > 0)
        })
    }

    /// Removes a message from the outbox; whether it was there.
    pub fn delete_outgoing(&mut self, message_id: &[u8; 16]) -> Result<bool> {
        self.write(|conn, keys| {
            let tag = keys.tag(TAG_OUTBOX, &[message_id]);
            Ok(conn
                .prepare_cached("DELETE FROM outbox WHERE tag = ?1")?
                .execute([tag])?
                > 0)
        })
    }
}
