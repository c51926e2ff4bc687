//! The store's records and their methods (spec/11, "Tables").

use rusqlite::{Connection, ErrorCode, params};
use subtle::ConstantTimeEq;
use ward_core::{IdentityKeyPair, OneTimePreKeyPair, Session, SignedPreKeyPair};
use zeroize::Zeroizing;

use super::codec::{blob, blob_n, integer_u32, integer_u64, name_bytes, put_name, reader, text};
use super::crypto::Keys;
use super::error::{Result, StoreError, corrupt};
use super::{MAX_VALUE_LEN, Store};

const DEVICE: &str = "device";
const SIGNED_PREKEYS: &str = "signed_prekeys";
const ONE_TIME_PREKEYS: &str = "one_time_prekeys";
pub(super) const COUNTERS: &str = "counters";
const SESSIONS: &str = "sessions";
const IDENTITIES: &str = "identities";

/// Blind-index names (spec/11, "Blind indexes").
const TAG_SESSION_DEVICE: &str = "session device";
const TAG_SESSION: &str = "session";
const TAG_IDENTITY_USER: &str = "identity user";
const TAG_IDENTITY: &str = "identity";

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

pub(super) fn check_tag(stored: &[u8], computed: &[u8; 32], table: &'static str) -> Result<()> {
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
