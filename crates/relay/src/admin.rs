//! The administrator's operations, as the `ward-relay admin` and
//! `ward-relay audit` commands run them: each takes the storage (or a file)
//! and returns a value whose [`Display`](fmt::Display) is what the command
//! prints.
//!
//! Times are passed in (`now`, milliseconds since the Unix epoch) and
//! printed in UTC. Every change is audited by the storage as an
//! `AdminAction` of the local command line (no administrator user id).
//!
//! Nothing here prints a secret except [`IssuedToken`], whose `Display` is
//! the one place an enrollment token is shown; its `Debug` hides it.

use core::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ward_audit::{
    AuditError, EMPTY_ROOT, Hash, SignedTreeHead, SigningKey, TreeHead, UserId, VerifiedLog,
    VerifyingKey, leaf_hash, node_hash, verify_consistency, verify_export, verify_inclusion,
};
use zeroize::Zeroizing;

use crate::keys::{self, KeyError};
use crate::storage::{
    AuditState, Device, DeviceKey, Revocation, Role, Storage, StorageError, User,
};

/// The default validity of an enrollment token, in hours.
pub const DEFAULT_TOKEN_VALID_HOURS: u32 = 24;
/// The longest validity of an enrollment token, in hours (30 days).
pub const MAX_TOKEN_VALID_HOURS: u32 = 30 * 24;
/// How often [`export`] retries when the log grew between signing the
/// tree head and writing the export (a relay serving meanwhile).
pub const EXPORT_ATTEMPTS: u32 = 5;

const HOUR_MS: u64 = 3_600_000;

/// Why an administrative operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The storage refused or failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A user id is not valid (1 to 64 bytes of the audit ID alphabet).
    #[error("invalid user id: {0}")]
    InvalidUserId(ward_audit::DecodeError),
    /// A role is not valid.
    #[error("invalid role: 1 to 32 characters of a-z A-Z 0-9 . _ @ + -")]
    InvalidRole,
    /// A device key is not 64 hexadecimal digits.
    #[error("invalid device key: expected 64 hexadecimal digits")]
    InvalidDeviceKey,
    /// A relay key is not 64 hexadecimal digits.
    #[error("invalid relay key: expected 64 hexadecimal digits")]
    InvalidRelayKey,
    /// The token validity is out of range.
    #[error("token validity must be 1 to {MAX_TOKEN_VALID_HOURS} hours")]
    InvalidValidity,
    /// A key could not be loaded or a token generated.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An audit export does not verify.
    #[error("{}: verification FAILED: {source}", path.display())]
    Verify {
        /// The export file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: AuditError,
    },
    /// The export just written did not verify even after
    /// [`EXPORT_ATTEMPTS`] attempts; nothing was left at the output path.
    #[error("the export did not verify after it was written ({0}); nothing was written")]
    ExportUnverified(AuditError),
    /// A relay key is 64 hexadecimal digits but not a usable Ed25519
    /// public key (it does not decompress, or has small order).
    #[error("invalid relay key: not a valid Ed25519 public key, or one of small order")]
    UnusableRelayKey,
    /// The log has no signed tree head, and no tree size was given.
    #[error(
        "the audit log has no signed tree head yet (run `ward-relay audit export`, \
         or give the tree size)"
    )]
    NoTreeHead,
    /// The data directory holds signed tree heads but no audit key to check
    /// them with.
    #[error(
        "the audit log has signed tree heads but the data directory has no audit \
         signing key to check them with"
    )]
    NoAuditKey,
    /// An entry index is not below the tree size.
    #[error(
        "entry index {index} is out of range for a tree of size {tree_size} \
         (an index must be less than the size)"
    )]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        tree_size: u64,
    },
    /// A tree size is larger than the log.
    #[error("tree size {size} is out of range: the audit log holds {log_size} entries")]
    SizeOutOfRange {
        /// The size asked for.
        size: u64,
        /// The log's size.
        log_size: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("tree size {from} is larger than {to}: a consistency proof goes from the smaller")]
    SizesOutOfOrder {
        /// The size to prove from.
        from: u64,
        /// The size to prove to.
        to: u64,
    },
    /// The stored log contradicts itself: a stored head does not verify or
    /// does not match the stored entries, or the storage's proof does not
    /// verify against the root of the stored entries. Nothing was printed.
    #[error("the stored audit log does not check out (storage fault or tampering): {0}")]
    StoredLog(AuditError),
    /// The root of the stored entries is not the root the storage's Merkle
    /// tree reports: an entry was altered after its leaf hash was stored.
    #[error(
        "the stored audit log does not check out (storage fault or tampering): the root of \
         its first {tree_size} entries is not the root its Merkle tree reports"
    )]
    StoredRoot {
        /// The log's size.
        tree_size: u64,
    },
    /// A signed tree head given on the command line is not hexadecimal.
    #[error("{which}: expected hexadecimal digits (an encoded signed tree head)")]
    HeadNotHex {
        /// `old head` or `new head`.
        which: &'static str,
    },
    /// A signed tree head given on the command line does not decode.
    #[error("{which}: not an encoded signed tree head: {source}")]
    HeadDecode {
        /// `old head` or `new head`.
        which: &'static str,
        /// Why it does not decode.
        #[source]
        source: ward_audit::DecodeError,
    },
    /// A proof hash given on the command line is not 64 hexadecimal digits.
    #[error("proof hash {position} (counting from 0): expected 64 hexadecimal digits")]
    InvalidProofHash {
        /// Its position in the proof.
        position: usize,
    },
    /// A signed tree head does not verify under the relay key.
    #[error("{which}: signature does not verify under the relay key")]
    HeadSignature {
        /// `old head` or `new head`.
        which: &'static str,
    },
    /// The old head is not older than the new one.
    #[error(
        "the old head (tree size {old_size}, signed {old_at}) is not older than the new head \
         (tree size {new_size}, signed {new_at}): are they swapped?"
    )]
    HeadsOutOfOrder {
        /// The old head's tree size.
        old_size: u64,
        /// When the old head was signed.
        old_at: Utc,
        /// The new head's tree size.
        new_size: u64,
        /// When the new head was signed.
        new_at: Utc,
    },
    /// Two correctly signed heads are not consistent: the relay rewrote the
    /// log, signed two histories, or the proof is wrong.
    #[error("the heads of tree sizes {old_size} and {new_size} are NOT consistent: {source}")]
    HeadsInconsistent {
        /// The old head's tree size.
        old_size: u64,
        /// The new head's tree size.
        new_size: u64,
        /// `ConsistencyProofInvalid`, or `Equivocation` for two heads of
        /// one size with different roots.
        #[source]
        source: AuditError,
    },
}

fn user_id(text: &str) -> Result<UserId, AdminError> {
    UserId::new(text).map_err(AdminError::InvalidUserId)
}

/// Parses a device key: 64 hexadecimal digits.
pub fn parse_device_key(text: &str) -> Result<DeviceKey, AdminError> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| AdminError::InvalidDeviceKey)?;
    Ok(DeviceKey(key))
}

/// Parses a relay (audit) public key: 64 hexadecimal digits.
pub fn parse_relay_key(text: &str) -> Result<[u8; 32], AdminError> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| AdminError::InvalidRelayKey)?;
    Ok(key)
}

// ----- users -----

/// What [`add_user`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAdded(pub User);

impl fmt::Display for UserAdded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "created user {} with role {}",
            self.0.id.as_str(),
            self.0.role
        )
    }
}

/// Creates a user.
pub fn add_user(
    storage: &dyn Storage,
    id: &str,
    role: &str,
    now: u64,
) -> Result<UserAdded, AdminError> {
    let id = user_id(id)?;
    let role = Role::new(role).map_err(|_| AdminError::InvalidRole)?;
    Ok(UserAdded(storage.create_user(&id, &role, None, now)?))
}

/// Every user ([`list_users`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserList(pub Vec<User>);

impl fmt::Display for UserList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no users");
        }
        let width = self
            .0
            .iter()
            .map(|u| u.id.as_str().len())
            .max()
            .unwrap_or(0)
            .max(4);
        write!(f, "{:width$}  {:32}  CREATED", "USER", "ROLE")?;
        for user in &self.0 {
            write!(
                f,
                "\n{:width$}  {:32}  {}",
                user.id.as_str(),
                user.role.as_str(),
                Utc(user.created_at)
            )?;
        }
        Ok(())
    }
}

/// Lists every user, ordered by id.
pub fn list_users(storage: &dyn Storage) -> Result<UserList, AdminError> {
    Ok(UserList(storage.list_users()?))
}

// ----- enrollment tokens -----

/// A freshly issued enrollment token. Its `Display` shows the token (the
/// only time it is ever shown); `Debug` does not.
pub struct IssuedToken {
    /// The user the device will be enrolled under.
    pub user: UserId,
    /// The token: `ward-enroll-` and 64 hex digits.
    pub token: Zeroizing<String>,
    /// When it stops being accepted, ms since the Unix epoch.
    pub expires_at: u64,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            user,
            token: _,
            expires_at,
        } = self;
        f.debug_struct("IssuedToken")
            .field("user", user)
            .field("expires_at", expires_at)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "enrollment token for {}, single use, valid until {} \
             (shown only this once; the relay keeps only its hash):\n{}",
            self.user.as_str(),
            Utc(self.expires_at),
            self.token.as_str()
        )
    }
}

/// Issues a single-use enrollment token for `user`, valid for
/// `valid_hours` (1 to [`MAX_TOKEN_VALID_HOURS`]). Only SHA-256 of the
/// token is stored.
pub fn issue_token(
    storage: &dyn Storage,
    user: &str,
    valid_hours: u32,
    now: u64,
) -> Result<IssuedToken, AdminError> {
    let user = user_id(user)?;
    if !(1..=MAX_TOKEN_VALID_HOURS).contains(&valid_hours) {
        return Err(AdminError::InvalidValidity);
    }
    let expires_at = now
        .checked_add(u64::from(valid_hours) * HOUR_MS)
        .ok_or(AdminError::InvalidValidity)?;
    let (token, hash) = keys::new_enrollment_token();
    let token = Zeroizing::new(token);
    storage.issue_enrollment_token(&hash, &user, None, now, expires_at)?;
    Ok(IssuedToken {
        user,
        token,
        expires_at,
    })
}

// ----- devices -----

/// A user's devices, revoked ones included ([`list_devices`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    /// The user.
    pub user: UserId,
    /// Their devices, in enrollment order.
    pub devices: Vec<Device>,
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.devices.is_empty() {
            return write!(f, "{} has no devices", self.user.as_str());
        }
        write!(f, "{:64}  {:20}  STATUS", "DEVICE", "ENROLLED")?;
        for d in &self.devices {
            write!(f, "\n{}  {:20}  ", d.key, Utc(d.enrolled_at).to_string())?;
            match d.revoked_at {
                None => f.write_str("active")?,
                Some(at) => write!(f, "revoked {}", Utc(at))?,
            }
        }
        Ok(())
    }
}

/// Lists a user's devices, revoked ones included.
pub fn list_devices(storage: &dyn Storage, user: &str) -> Result<DeviceList, AdminError> {
    let user = user_id(user)?;
    // An unknown user is an error, not an empty list.
    storage.get_user(&user)?;
    let devices = storage.list_all_devices(&user)?;
    Ok(DeviceList { user, devices })
}

/// What [`revoke_device`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRevoked(pub Revocation);

impl fmt::Display for DeviceRevoked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.0;
        write!(
            f,
            "revoked device {} of {}; deleted {} queued messages and {} one-time prekeys",
            r.device.key,
            r.device.user.as_str(),
            r.deleted_messages,
            r.deleted_one_time_prekeys
        )
    }
}

/// Revokes a device (64 hex digits of its key): it can no longer
/// authenticate, and its queue and prekeys are deleted.
pub fn revoke_device(
    storage: &dyn Storage,
    device: &str,
    now: u64,
) -> Result<DeviceRevoked, AdminError> {
    let device = parse_device_key(device)?;
    Ok(DeviceRevoked(storage.revoke_device(&device, None, now)?))
}

/// What [`wipe_device`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WipeRequested(pub Device);

impl fmt::Display for WipeRequested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wipe pending for device {} of {}: it is told at once if connected, else when it \
             next connects, and is revoked once it acknowledges",
            self.0.key,
            self.0.user.as_str()
        )
    }
}

/// Instructs a device (64 hex digits of its key) to erase its local store
/// (spec/08, "Remote wipe"). Revokes nothing by itself: the relay pushes
/// the instruction when the device is (or next gets) connected, stops
/// delivering messages to it, and revokes it once it acknowledges. The
/// usual sequence: wipe, then check the audit log (or `device list`) for
/// the revocation; a device that never comes back is revoked by hand
/// ([`revoke_device`]), which also withdraws the instruction.
pub fn wipe_device(
    storage: &dyn Storage,
    device: &str,
    now: u64,
) -> Result<WipeRequested, AdminError> {
    let device = parse_device_key(device)?;
    Ok(WipeRequested(storage.request_wipe(&device, None, now)?))
}

// ----- queues -----

/// One active device's queue and prekey supply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRow {
    /// The device.
    pub device: DeviceKey,
    /// Messages waiting for it.
    pub queued: u64,
    /// One-time prekeys it has left.
    pub one_time_prekeys: u64,
}

/// The queues of a user's active devices ([`show_queues`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueReport {
    /// The user.
    pub user: UserId,
    /// One row per active device, in enrollment order.
    pub devices: Vec<QueueRow>,
}

impl fmt::Display for QueueReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.devices.is_empty() {
            return write!(f, "{} has no active devices", self.user.as_str());
        }
        write!(
            f,
            "{:64}  {:>8}  {:>16}",
            "DEVICE", "QUEUED", "ONE-TIME PREKEYS"
        )?;
        for row in &self.devices {
            write!(
                f,
                "\n{}  {:>8}  {:>16}",
                row.device, row.queued, row.one_time_prekeys
            )?;
        }
        Ok(())
    }
}

/// Shows, per active device of `user`, its queue length and how many
/// one-time prekeys it has left.
pub fn show_queues(storage: &dyn Storage, user: &str) -> Result<QueueReport, AdminError> {
    let user = user_id(user)?;
    storage.get_user(&user)?;
    let devices = storage
        .list_devices(&user)?
        .iter()
        .map(|d| {
            Ok(QueueRow {
                device: d.key,
                queued: storage.queue_len(&d.key)?,
                one_time_prekeys: storage.one_time_prekey_count(&d.key)?,
            })
        })
        .collect::<Result<_, StorageError>>()?;
    Ok(QueueReport { user, devices })
}

// ----- audit -----

/// What a verified audit log holds ([`export`], [`verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSummary {
    /// The export file.
    pub path: PathBuf,
    /// The relay's audit public key the heads verified under.
    pub relay_key: [u8; 32],
    /// Entries in the log.
    pub entries: u64,
    /// Signed tree heads in the export.
    pub heads: usize,
    /// The root over every entry (that of the last head).
    pub root: Hash,
    /// When the last head was signed, ms since the Unix epoch.
    pub last_head_at: u64,
}

impl AuditSummary {
    fn new(path: &Path, log: &VerifiedLog) -> Self {
        Self {
            path: path.to_owned(),
            relay_key: log.relay_key(),
            entries: log.size(),
            heads: log.heads().len(),
            root: log.root(),
            last_head_at: log.latest_head().timestamp_ms,
        }
    }
}

impl fmt::Display for AuditSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} entries, {} signed tree heads\n\
             relay key  {}\n\
             last root  {} (tree size {}, signed {})",
            self.path.display(),
            self.entries,
            self.heads,
            hex::encode(self.relay_key),
            hex::encode(self.root),
            self.entries,
            Utc(self.last_head_at),
        )
    }
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport(pub AuditSummary);

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exported and verified {}", self.0)
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport(pub AuditSummary);

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "verified {}", self.0)
    }
}

/// Exports the audit log to `out`: signs a tree head over the whole log
/// first, writes the export (mode 0600) to a temporary file next to `out`,
/// verifies it against `key`, and only then moves it to `out` (replacing
/// it). If a relay serving from the same storage appended entries between
/// the head and the export, the export would end in unsigned entries: it
/// is retried, up to [`EXPORT_ATTEMPTS`] times.
pub fn export(
    storage: &dyn Storage,
    key: &SigningKey,
    out: &Path,
    now: u64,
) -> Result<ExportReport, AdminError> {
    let relay_key = key.verifying_key();
    let tmp = temporary_path(out);
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| AdminError::Io { path, source }
    };
    let mut last_error = None;
    for _ in 0..EXPORT_ATTEMPTS {
        storage.issue_tree_head(key, now)?;
        let written = write_export(storage, &relay_key, &tmp);
        let bytes = match written.and_then(|()| std::fs::read(&tmp).map_err(io_error(&tmp))) {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        match verify_export(&bytes, Some(relay_key.to_bytes())) {
            Ok(log) => {
                if let Err(e) = std::fs::rename(&tmp, out) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(io_error(out)(e));
                }
                return Ok(ExportReport(AuditSummary::new(out, &log)));
            }
            Err(e @ AuditError::UnsignedEntries { .. }) => last_error = Some(e),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(AdminError::ExportUnverified(e));
            }
        }
    }
    let _ = std::fs::remove_file(&tmp);
    Err(AdminError::ExportUnverified(
        last_error.unwrap_or(AuditError::NoTreeHead),
    ))
}

fn temporary_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    PathBuf::from(name)
}

fn write_export(
    storage: &dyn Storage,
    relay_key: &ward_audit::VerifyingKey,
    path: &Path,
) -> Result<(), AdminError> {
    let io_error = |source| AdminError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // User ids and device ids: for the auditor only.
        options.mode(0o600);
    }
    let file = options.open(path).map_err(io_error)?;
    // A temporary file left by an earlier export keeps its mode when opened.
    crate::keys::restrict_to_owner(path).map_err(io_error)?;
    let mut writer = std::io::BufWriter::new(file);
    storage.write_audit_export(relay_key, &mut writer)?;
    writer.flush().map_err(io_error)?;
    let file = writer.into_inner().map_err(|e| io_error(e.into_error()))?;
    file.sync_all().map_err(io_error)
}

/// Verifies the export at `path` against the relay's audit public key
/// `expected_relay_key` (ward-audit's `verify_export`: every entry covered
/// by a correctly signed head, heads consistent, nothing altered).
pub fn verify(path: &Path, expected_relay_key: [u8; 32]) -> Result<VerifyReport, AdminError> {
    let bytes = std::fs::read(path).map_err(|source| AdminError::Io {
        path: path.to_owned(),
        source,
    })?;
    let log =
        verify_export(&bytes, Some(expected_relay_key)).map_err(|source| AdminError::Verify {
            path: path.to_owned(),
            source,
        })?;
    Ok(VerifyReport(AuditSummary::new(path, &log)))
}

// ----- proofs -----

/// The signed tree heads, oldest first ([`list_heads`]). Its `Display` is
/// one line per head, each ending in a newline, nothing for no head:
///
/// ```text
/// <tree size> <timestamp ms> <timestamp UTC> <root, 64 hex> <signed head, 226 hex>
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadList(pub Vec<SignedTreeHead>);

impl fmt::Display for HeadList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for signed in &self.0 {
            let head = &signed.head;
            writeln!(
                f,
                "{} {} {} {} {}",
                head.tree_size,
                head.timestamp_ms,
                Utc(head.timestamp_ms),
                hex::encode(head.root),
                hex::encode(signed.encode())
            )?;
        }
        Ok(())
    }
}

/// Every signed tree head in the order issued, each checked under
/// `relay_key` (the data directory's audit key) first.
pub fn list_heads(
    storage: &dyn Storage,
    relay_key: Option<&VerifyingKey>,
) -> Result<HeadList, AdminError> {
    let heads = storage.tree_heads()?;
    for j in 0..heads.len() {
        check_stored_head(&heads, j, relay_key)?;
    }
    Ok(HeadList(heads))
}

/// An inclusion proof, checked ([`prove_inclusion`]). Its `Display` is
/// `key value` lines, each ending in a newline, in this order:
///
/// ```text
/// index <entry index>
/// tree-size <N>
/// leaf-hash <64 hex>
/// root <64 hex>
/// signed-head <226 hex>      only if a signed head of size N exists
/// proof <64 hex>             zero or more, in RFC 9162 order
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionReport {
    /// The entry's index (its sequence number).
    pub index: u64,
    /// The size of the tree the proof is for.
    pub tree_size: u64,
    /// `SHA-256(0x00 || entry)` of the stored entry.
    pub leaf_hash: Hash,
    /// The root of the first `tree_size` entries.
    pub root: Hash,
    /// The latest signed head of size `tree_size`, if there is one.
    pub head: Option<SignedTreeHead>,
    /// The proof's hashes, from the leaf's sibling up.
    pub proof: Vec<Hash>,
}

impl fmt::Display for InclusionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "index {}", self.index)?;
        writeln!(f, "tree-size {}", self.tree_size)?;
        writeln!(f, "leaf-hash {}", hex::encode(self.leaf_hash))?;
        writeln!(f, "root {}", hex::encode(self.root))?;
        if let Some(head) = &self.head {
            writeln!(f, "signed-head {}", hex::encode(head.encode()))?;
        }
        write_proof(f, &self.proof)
    }
}

/// A consistency proof, checked ([`prove_consistency`]). Its `Display` is
/// `key value` lines, each ending in a newline, in this order:
///
/// ```text
/// from-size <M>
/// to-size <N>
/// from-root <64 hex>
/// to-root <64 hex>
/// from-head <226 hex>        only if a signed head of size M exists
/// to-head <226 hex>          only if a signed head of size N exists
/// proof <64 hex>             zero or more, in RFC 9162 order
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyReport {
    /// The older tree's size.
    pub from_size: u64,
    /// The newer tree's size.
    pub to_size: u64,
    /// The root of the first `from_size` entries.
    pub from_root: Hash,
    /// The root of the first `to_size` entries.
    pub to_root: Hash,
    /// The latest signed head of size `from_size`, if there is one.
    pub from_head: Option<SignedTreeHead>,
    /// The latest signed head of size `to_size`, if there is one.
    pub to_head: Option<SignedTreeHead>,
    /// The proof's hashes.
    pub proof: Vec<Hash>,
}

impl fmt::Display for ConsistencyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "from-size {}", self.from_size)?;
        writeln!(f, "to-size {}", self.to_size)?;
        writeln!(f, "from-root {}", hex::encode(self.from_root))?;
        writeln!(f, "to-root {}", hex::encode(self.to_root))?;
        if let Some(head) = &self.from_head {
            writeln!(f, "from-head {}", hex::encode(head.encode()))?;
        }
        if let Some(head) = &self.to_head {
            writeln!(f, "to-head {}", hex::encode(head.encode()))?;
        }
        write_proof(f, &self.proof)
    }
}

fn write_proof(f: &mut fmt::Formatter<'_>, proof: &[Hash]) -> fmt::Result {
    proof
        .iter()
        .try_for_each(|hash| writeln!(f, "proof {}", hex::encode(hash)))
}

/// An inclusion proof of entry `index` in the tree of `tree_size` entries
/// (default: the size of the latest signed head), checked before it is
/// returned: the leaf hash and the root are computed from the stored
/// entries (one pass over the whole log, O(log n) memory); the root of all
/// of them must be the root the storage's Merkle tree reports; a signed
/// head of size `tree_size`, if any, must verify under `relay_key` and
/// carry the computed root; and the storage's proof must verify with
/// `verify_inclusion` against it. Any failure is [`AdminError::StoredLog`]
/// or [`AdminError::StoredRoot`] and nothing is returned.
pub fn prove_inclusion(
    storage: &dyn Storage,
    relay_key: Option<&VerifyingKey>,
    index: u64,
    tree_size: Option<u64>,
) -> Result<InclusionReport, AdminError> {
    let heads = storage.tree_heads()?;
    let state = storage.audit_state()?;
    let log_size = state.size;
    let tree_size = match tree_size {
        Some(size) => size,
        None => heads.last().ok_or(AdminError::NoTreeHead)?.head.tree_size,
    };
    if tree_size > log_size {
        return Err(AdminError::SizeOutOfRange {
            size: tree_size,
            log_size,
        });
    }
    if index >= tree_size {
        return Err(AdminError::IndexOutOfRange { index, tree_size });
    }
    let scan = scan_log(storage, relay_key, Some(index), &[tree_size], &state)?;
    let leaf_hash = scan
        .leaf
        .ok_or(AdminError::StoredLog(AuditError::OutOfRange {
            requested: index,
            size: scan.entries,
        }))?;
    let root = scan.roots[0];
    let head = head_of_size(&heads, tree_size, root, relay_key)?;
    let proof = storage.inclusion_proof(index, tree_size)?;
    if proof.leaf_index != index || proof.tree_size != tree_size {
        return Err(AdminError::StoredLog(AuditError::InclusionProofInvalid));
    }
    verify_inclusion(&leaf_hash, index, tree_size, &proof.path, &root)
        .map_err(AdminError::StoredLog)?;
    Ok(InclusionReport {
        index,
        tree_size,
        leaf_hash,
        root,
        head,
        proof: proof.path,
    })
}

/// A consistency proof from the tree of `from` entries to that of `to`
/// (default: the size of the latest signed head), checked before it is
/// returned as [`prove_inclusion`] checks its proof: both roots computed
/// from the stored entries, signed heads of those sizes verified and
/// matched, the storage's proof verified with `verify_consistency`.
pub fn prove_consistency(
    storage: &dyn Storage,
    relay_key: Option<&VerifyingKey>,
    from: u64,
    to: Option<u64>,
) -> Result<ConsistencyReport, AdminError> {
    let heads = storage.tree_heads()?;
    let state = storage.audit_state()?;
    let log_size = state.size;
    let to = match to {
        Some(size) => size,
        None => heads.last().ok_or(AdminError::NoTreeHead)?.head.tree_size,
    };
    if to > log_size {
        return Err(AdminError::SizeOutOfRange { size: to, log_size });
    }
    if from > to {
        return Err(AdminError::SizesOutOfOrder { from, to });
    }
    let scan = scan_log(storage, relay_key, None, &[from, to], &state)?;
    let (from_root, to_root) = (scan.roots[0], scan.roots[1]);
    let from_head = head_of_size(&heads, from, from_root, relay_key)?;
    let to_head = head_of_size(&heads, to, to_root, relay_key)?;
    let proof = storage.consistency_proof(from, to)?;
    if proof.first_size != from || proof.second_size != to {
        return Err(AdminError::StoredLog(AuditError::ConsistencyProofInvalid));
    }
    verify_consistency(from, to, &from_root, &to_root, &proof.path)
        .map_err(AdminError::StoredLog)?;
    Ok(ConsistencyReport {
        from_size: from,
        to_size: to,
        from_root,
        to_root,
        from_head,
        to_head,
        proof: proof.path,
    })
}

/// Checks stored head `j`'s signature under the data directory's key.
fn check_stored_head(
    heads: &[SignedTreeHead],
    j: usize,
    relay_key: Option<&VerifyingKey>,
) -> Result<(), AdminError> {
    let key = relay_key.ok_or(AdminError::NoAuditKey)?;
    heads[j]
        .verify(key)
        .map(|_| ())
        .map_err(|_| AdminError::StoredLog(AuditError::HeadSignature { head: j }))
}

/// The latest stored head of size `tree_size`, if any, checked: its
/// signature, and its root against `root` (computed from the entries).
fn head_of_size(
    heads: &[SignedTreeHead],
    tree_size: u64,
    root: Hash,
    relay_key: Option<&VerifyingKey>,
) -> Result<Option<SignedTreeHead>, AdminError> {
    let Some(j) = heads.iter().rposition(|h| h.head.tree_size == tree_size) else {
        return Ok(None);
    };
    check_stored_head(heads, j, relay_key)?;
    if heads[j].head.root != root {
        return Err(AdminError::StoredLog(AuditError::RootMismatch { head: j }));
    }
    Ok(Some(heads[j]))
}

/// What [`scan_log`] found.
struct Scanned {
    /// Entries in the log.
    entries: u64,
    /// The leaf hash of the entry asked for, if the log holds it.
    leaf: Option<Hash>,
    /// The root at each size asked for, in the order asked.
    roots: Vec<Hash>,
}

/// Reads the stored entries once, as the storage writes an export, and
/// computes from their bytes the leaf hash of entry `leaf` and the roots at
/// `sizes` (each at most `state.size`). Keeps O(log n) hashes, not the log.
/// The root of the first `state.size` entries must be `state.root`, the
/// root the storage's Merkle tree reports: entries and tree agree.
fn scan_log(
    storage: &dyn Storage,
    relay_key: Option<&VerifyingKey>,
    leaf: Option<u64>,
    sizes: &[u64],
    state: &AuditState,
) -> Result<Scanned, AdminError> {
    let mut sizes = sizes.to_vec();
    sizes.push(state.size);
    // The export header's key plays no part in the scan; the data
    // directory's key if there is one, else any valid key.
    let placeholder;
    let header_key = match relay_key {
        Some(key) => key,
        None => {
            placeholder = SigningKey::from_bytes(&[1; 32]).verifying_key();
            &placeholder
        }
    };
    let mut scan = LeafScan::new(leaf, &sizes);
    let written = storage.write_audit_export(header_key, &mut scan);
    if let Some(fault) = scan.fault {
        return Err(AdminError::StoredLog(AuditError::Decode(fault)));
    }
    written?;
    if scan.stage != ScanStage::Heads {
        return Err(AdminError::StoredLog(AuditError::Decode(
            ward_audit::DecodeError::Truncated,
        )));
    }
    let roots = scan
        .sizes
        .iter()
        .zip(&scan.roots)
        .map(|(&size, root)| {
            root.ok_or(AdminError::StoredLog(AuditError::OutOfRange {
                requested: size,
                size: scan.seen,
            }))
        })
        .collect::<Result<Vec<Hash>, _>>()?;
    if roots.last() != Some(&state.root) {
        return Err(AdminError::StoredRoot {
            tree_size: state.size,
        });
    }
    Ok(Scanned {
        entries: scan.seen,
        leaf: scan.leaf,
        roots,
    })
}

/// Export header: magic (11), version (1), relay key (32), entry count (8).
const EXPORT_HEADER_LEN: usize = 11 + 1 + 32 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanStage {
    Header,
    Length,
    Entry(usize),
    Heads,
}

/// A sink for the export stream that hashes each entry as it passes and
/// folds the leaf hashes into the right edge of the Merkle tree (RFC 9162
/// `MTH`: the root is the perfect subtrees of the edge combined from the
/// right).
struct LeafScan {
    stage: ScanStage,
    buf: Vec<u8>,
    announced: u64,
    seen: u64,
    want_leaf: Option<u64>,
    leaf: Option<Hash>,
    sizes: Vec<u64>,
    roots: Vec<Option<Hash>>,
    /// Beyond this many leaves no root is needed: hashing stops.
    last_size: u64,
    /// The perfect subtrees of the right edge, largest first, with heights.
    edge: Vec<(u32, Hash)>,
    fault: Option<ward_audit::DecodeError>,
}

impl LeafScan {
    fn new(want_leaf: Option<u64>, sizes: &[u64]) -> Self {
        let roots = sizes
            .iter()
            .map(|&size| (size == 0).then_some(EMPTY_ROOT))
            .collect();
        Self {
            stage: ScanStage::Header,
            buf: Vec::with_capacity(EXPORT_HEADER_LEN),
            announced: 0,
            seen: 0,
            want_leaf,
            leaf: None,
            sizes: sizes.to_vec(),
            roots,
            last_size: sizes.iter().copied().max().unwrap_or(0),
            edge: Vec::new(),
            fault: None,
        }
    }

    fn needed(&self) -> Option<usize> {
        match self.stage {
            ScanStage::Header => Some(EXPORT_HEADER_LEN),
            ScanStage::Length => Some(2),
            ScanStage::Entry(len) => Some(len),
            ScanStage::Heads => None,
        }
    }

    /// `buf` holds exactly what the stage needs.
    fn advance(&mut self) {
        self.stage = match self.stage {
            ScanStage::Header => {
                let magic = ward_audit::export::EXPORT_MAGIC;
                if !self.buf.starts_with(magic) {
                    self.fault = Some(ward_audit::DecodeError::BadMagic);
                } else if self.buf[magic.len()] != ward_audit::export::EXPORT_VERSION {
                    let version = self.buf[magic.len()];
                    self.fault = Some(ward_audit::DecodeError::UnsupportedVersion(version));
                }
                let mut count = [0u8; 8];
                count.copy_from_slice(&self.buf[EXPORT_HEADER_LEN - 8..]);
                self.announced = u64::from_be_bytes(count);
                self.after_entry()
            }
            ScanStage::Length => {
                ScanStage::Entry(usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]])))
            }
            ScanStage::Entry(_) => {
                self.entry();
                self.after_entry()
            }
            ScanStage::Heads => ScanStage::Heads,
        };
        self.buf.clear();
    }

    fn after_entry(&self) -> ScanStage {
        if self.seen < self.announced {
            ScanStage::Length
        } else {
            ScanStage::Heads
        }
    }

    fn entry(&mut self) {
        let index = self.seen;
        self.seen += 1;
        if index >= self.last_size && self.want_leaf != Some(index) {
            return;
        }
        let hash = leaf_hash(&self.buf);
        if self.want_leaf == Some(index) {
            self.leaf = Some(hash);
        }
        if index >= self.last_size {
            return;
        }
        let mut node = (0u32, hash);
        while let Some(&(height, left)) = self.edge.last() {
            if height != node.0 {
                break;
            }
            self.edge.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        self.edge.push(node);
        let size = self.seen;
        if self.sizes.contains(&size) {
            let root = self.edge_root();
            for (wanted, slot) in self.sizes.iter().zip(&mut self.roots) {
                if *wanted == size {
                    *slot = Some(root);
                }
            }
        }
    }

    fn edge_root(&self) -> Hash {
        self.edge
            .iter()
            .rev()
            .map(|(_, hash)| *hash)
            .reduce(|right, left| node_hash(&left, &right))
            .unwrap_or(EMPTY_ROOT)
    }
}

impl std::io::Write for LeafScan {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let written = data.len();
        while let Some(need) = self.needed() {
            if self.fault.is_some() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not an audit export",
                ));
            }
            if self.buf.len() == need {
                self.advance();
                continue;
            }
            if data.is_empty() {
                break;
            }
            let take = (need - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What [`check_consistency`] verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsistencyChecked {
    /// The old head.
    pub old: TreeHead,
    /// The new head.
    pub new: TreeHead,
}

impl fmt::Display for ConsistencyChecked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "consistent: tree size {} (signed {}, root {}) is a prefix of tree size {} \
             (signed {}, root {})",
            self.old.tree_size,
            Utc(self.old.timestamp_ms),
            hex::encode(self.old.root),
            self.new.tree_size,
            Utc(self.new.timestamp_ms),
            hex::encode(self.new.root),
        )
    }
}

/// The auditor's check, needing nothing but its arguments: both signed
/// heads (hex of their 113-byte encoding) verify under `relay_key`
/// (strictly), the old one is not newer than the new one in size or time,
/// and `proof` proves the old tree a prefix of the new one. `proof` holds
/// hex hashes, each string one or several separated by commas; empty
/// strings are ignored (an empty proof is no string, or `""`).
pub fn check_consistency(
    old_head: &str,
    new_head: &str,
    proof: &[String],
    relay_key: &str,
) -> Result<ConsistencyChecked, AdminError> {
    let key = VerifyingKey::from_bytes(&parse_relay_key(relay_key)?)
        .map_err(|_| AdminError::UnusableRelayKey)?;
    if key.is_weak() {
        return Err(AdminError::UnusableRelayKey);
    }
    let old = parse_signed_head("old head", old_head)?;
    let new = parse_signed_head("new head", new_head)?;
    let path = proof
        .iter()
        .flat_map(|text| text.split(','))
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .enumerate()
        .map(|(position, text)| {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(text, &mut hash)
                .map_err(|_| AdminError::InvalidProofHash { position })?;
            Ok(hash)
        })
        .collect::<Result<Vec<Hash>, AdminError>>()?;
    let old = *old
        .verify(&key)
        .map_err(|_| AdminError::HeadSignature { which: "old head" })?;
    let new = *new
        .verify(&key)
        .map_err(|_| AdminError::HeadSignature { which: "new head" })?;
    if old.tree_size > new.tree_size || old.timestamp_ms > new.timestamp_ms {
        return Err(AdminError::HeadsOutOfOrder {
            old_size: old.tree_size,
            old_at: Utc(old.timestamp_ms),
            new_size: new.tree_size,
            new_at: Utc(new.timestamp_ms),
        });
    }
    let inconsistent = |source| AdminError::HeadsInconsistent {
        old_size: old.tree_size,
        new_size: new.tree_size,
        source,
    };
    if old.tree_size == new.tree_size && old.root != new.root {
        return Err(inconsistent(AuditError::Equivocation {
            tree_size: old.tree_size,
        }));
    }
    verify_consistency(old.tree_size, new.tree_size, &old.root, &new.root, &path)
        .map_err(inconsistent)?;
    Ok(ConsistencyChecked { old, new })
}

fn parse_signed_head(which: &'static str, text: &str) -> Result<SignedTreeHead, AdminError> {
    let bytes = hex::decode(text.trim()).map_err(|_| AdminError::HeadNotHex { which })?;
    SignedTreeHead::decode(&bytes).map_err(|source| AdminError::HeadDecode { which, source })
}

// ----- time -----

/// Milliseconds since the Unix epoch, printed as UTC
/// (`2026-01-31T08:15:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc(pub u64);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{SqliteStorage, StorageConfig};

    const T0: u64 = 1_790_000_000_000;

    fn storage(dir: &Path) -> SqliteStorage {
        SqliteStorage::open(dir, StorageConfig::default()).unwrap()
    }

    #[test]
    fn utc_formats_dates() {
        assert_eq!(Utc(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Utc(951_782_400_000).to_string(), "2000-02-29T00:00:00Z");
        assert_eq!(Utc(1_767_225_600_000).to_string(), "2026-01-01T00:00:00Z");
        assert_eq!(Utc(1_767_225_599_999).to_string(), "2025-12-31T23:59:59Z");
        assert_eq!(Utc(4_102_444_800_000).to_string(), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn users_are_added_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(dir.path());
        assert_eq!(list_users(&s).unwrap().to_string(), "no users");
        let added = add_user(&s, "alice@clinic.example", "nurse", T0).unwrap();
        assert_eq!(
            added.to_string(),
            "created user alice@clinic.example with role nurse"
        );
        add_user(&s, "bob@clinic.example", "oncall-cardiology", T0).unwrap();
        let list = list_users(&s).unwrap();
        assert_eq!(list.0.len(), 2);
        let text = list.to_string();
        assert!(text.contains("alice@clinic.example"), "{text}");
        assert!(text.contains("oncall-cardiology"), "{text}");
        assert!(text.contains("2026-09-21T"), "{text}");

        assert!(matches!(
            add_user(&s, "alice@clinic.example", "nurse", T0),
            Err(AdminError::Storage(StorageError::AlreadyExists { .. }))
        ));
        assert!(matches!(
            add_user(&s, "", "nurse", T0),
            Err(AdminError::InvalidUserId(_))
        ));
        assert!(matches!(
            add_user(&s, "carol", "has space", T0),
            Err(AdminError::InvalidRole)
        ));
    }

    #[test]
    fn tokens_are_shown_once_and_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(dir.path());
        add_user(&s, "alice", "nurse", T0).unwrap();
        let issued = issue_token(&s, "alice", DEFAULT_TOKEN_VALID_HOURS, T0).unwrap();
        assert!(keys::is_enrollment_token(&issued.token));
        assert_eq!(issued.expires_at, T0 + 24 * HOUR_MS);
        let shown = issued.to_string();
        assert!(shown.ends_with(issued.token.as_str()), "{shown}");
        let debug = format!("{issued:?}");
        assert!(!debug.contains(issued.token.as_str()), "{debug}");

        // The database holds the hash, not the token.
        drop(s);
        let db = std::fs::read(dir.path().join(crate::storage::DATABASE_FILE)).unwrap();
        let wal = std::fs::read(dir.path().join("ward-relay.sqlite3-wal")).unwrap_or_default();
        for bytes in [&db, &wal] {
            assert!(
                !bytes
                    .windows(issued.token.len())
                    .any(|w| w == issued.token.as_bytes())
            );
        }

        let s = storage(dir.path());
        assert!(matches!(
            issue_token(&s, "nobody", 24, T0),
            Err(AdminError::Storage(StorageError::NotFound { .. }))
        ));
        for hours in [0, MAX_TOKEN_VALID_HOURS + 1] {
            assert!(matches!(
                issue_token(&s, "alice", hours, T0),
                Err(AdminError::InvalidValidity)
            ));
        }
    }

    #[test]
    fn devices_queues_and_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(dir.path());
        add_user(&s, "alice", "nurse", T0).unwrap();
        assert_eq!(
            list_devices(&s, "alice").unwrap().to_string(),
            "alice has no devices"
        );
        assert_eq!(
            show_queues(&s, "alice").unwrap().to_string(),
            "alice has no active devices"
        );
        assert!(matches!(
            list_devices(&s, "nobody"),
            Err(AdminError::Storage(StorageError::NotFound { .. }))
        ));
        assert!(matches!(
            show_queues(&s, "nobody"),
            Err(AdminError::Storage(StorageError::NotFound { .. }))
        ));

        // Enroll a device the way the relay does.
        let issued = issue_token(&s, "alice", 1, T0).unwrap();
        let mut rng = ward_core::os_rng();
        let identity = ward_core::IdentityKeyPair::generate(&mut rng);
        let device = s
            .redeem_enrollment_token(&keys::token_hash(&issued.token), identity.public(), T0 + 1)
            .unwrap();
        let hex_key = device.key.to_string();

        let list = list_devices(&s, "alice").unwrap();
        assert_eq!(list.devices.len(), 1);
        let text = list.to_string();
        assert!(text.contains(&hex_key) && text.contains("active"), "{text}");

        let queues = show_queues(&s, "alice").unwrap();
        assert_eq!(
            queues.devices,
            [QueueRow {
                device: device.key,
                queued: 0,
                one_time_prekeys: 0
            }]
        );

        let revoked = revoke_device(&s, &hex_key, T0 + 2).unwrap();
        assert!(revoked.to_string().starts_with("revoked device "));
        let text = list_devices(&s, "alice").unwrap().to_string();
        assert!(text.contains("revoked 2026-"), "{text}");
        assert!(show_queues(&s, "alice").unwrap().devices.is_empty());
        assert!(matches!(
            revoke_device(&s, &hex_key, T0 + 3),
            Err(AdminError::Storage(StorageError::Revoked { .. }))
        ));
        assert!(matches!(
            revoke_device(&s, "abcd", T0),
            Err(AdminError::InvalidDeviceKey)
        ));
        assert!(matches!(
            revoke_device(&s, &"00".repeat(32), T0),
            Err(AdminError::Storage(StorageError::NotFound { .. }))
        ));
    }

    #[test]
    fn export_then_verify() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(&dir.path().join("data"));
        let key = SigningKey::from_bytes(&[9; 32]);
        add_user(&s, "alice", "nurse", T0).unwrap();
        issue_token(&s, "alice", 24, T0 + 5).unwrap();
        let out = dir.path().join("audit.bin");
        let exported = export(&s, &key, &out, T0 + 10).unwrap();
        assert_eq!(exported.0.entries, 2);
        assert_eq!(exported.0.heads, 1);
        let relay_key = key.verifying_key().to_bytes();
        let verified = verify(&out, relay_key).unwrap();
        assert_eq!(verified.0, exported.0);
        let text = verified.to_string();
        assert!(text.contains("2 entries, 1 signed tree heads"), "{text}");
        assert!(text.contains(&hex::encode(relay_key)), "{text}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary file left"
        );

        // A second export adds a head only if the log grew.
        add_user(&s, "bob", "nurse", T0 + 20).unwrap();
        let again = export(&s, &key, &out, T0 + 30).unwrap();
        assert_eq!((again.0.entries, again.0.heads), (3, 2));

        assert!(matches!(
            verify(&out, [1; 32]),
            Err(AdminError::Verify {
                source: AuditError::RelayKeyMismatch,
                ..
            })
        ));
        let mut bytes = std::fs::read(&out).unwrap();
        bytes[52 + 2 + 3] ^= 1;
        std::fs::write(&out, &bytes).unwrap();
        assert!(matches!(
            verify(&out, relay_key),
            Err(AdminError::Verify { .. })
        ));
        assert!(matches!(
            verify(&dir.path().join("missing"), relay_key),
            Err(AdminError::Io { .. })
        ));
        assert!(parse_relay_key("xyz").is_err());
        assert_eq!(parse_relay_key(&hex::encode(relay_key)).unwrap(), relay_key);
    }

    #[test]
    fn the_leaf_scan_computes_leaf_hashes_and_roots_from_any_chunking() {
        use std::io::Write as _;
        use ward_audit::merkle::root_from_leaf_hashes;
        use ward_audit::{AuditEntry, EventKind, Export};

        let key = SigningKey::from_bytes(&[3; 32]);
        let entries: Vec<AuditEntry> = (0..37)
            .map(|i| AuditEntry::new(i, T0 + i, EventKind::AuthSuccess))
            .collect();
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(&e.encode())).collect();
        let export = Export {
            relay_key: key.verifying_key().to_bytes(),
            entries,
            heads: Vec::new(),
        }
        .encode();
        let sizes: Vec<u64> = (0..=37).collect();
        for chunk in [1, 2, 7, 113, export.len()] {
            for want in [0, 5, 36] {
                let mut scan = LeafScan::new(Some(want), &sizes);
                for piece in export.chunks(chunk) {
                    scan.write_all(piece).unwrap();
                }
                assert_eq!(scan.stage, ScanStage::Heads);
                assert_eq!(scan.seen, 37);
                assert_eq!(scan.leaf, Some(leaves[want as usize]));
                for (size, root) in sizes.iter().zip(&scan.roots) {
                    assert_eq!(
                        *root,
                        Some(root_from_leaf_hashes(&leaves[..*size as usize])),
                        "size {size}, chunks of {chunk}"
                    );
                }
            }
        }
        // Only the sizes asked for are hashed; a bad header is refused.
        let mut scan = LeafScan::new(None, &[3]);
        scan.write_all(&export).unwrap();
        assert_eq!(scan.roots, [Some(root_from_leaf_hashes(&leaves[..3]))]);
        assert_eq!(scan.edge.len(), 2);
        let mut bad = export.clone();
        bad[0] ^= 1;
        let mut scan = LeafScan::new(None, &[3]);
        assert!(scan.write_all(&bad).is_err());
        assert_eq!(scan.fault, Some(ward_audit::DecodeError::BadMagic));
    }

    #[test]
    fn proofs_are_checked_against_the_stored_entries() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(dir.path());
        let key = SigningKey::from_bytes(&[9; 32]);
        let vk = key.verifying_key();
        assert!(matches!(
            prove_inclusion(&s, Some(&vk), 0, None),
            Err(AdminError::NoTreeHead)
        ));
        for (i, name) in ["a", "b", "c", "d", "e", "f", "g"].iter().enumerate() {
            add_user(&s, name, "nurse", T0 + i as u64).unwrap();
            if i == 2 {
                s.issue_tree_head(&key, T0 + 3).unwrap();
            }
        }
        s.issue_tree_head(&key, T0 + 10).unwrap();
        let heads = list_heads(&s, Some(&vk)).unwrap();
        assert_eq!(heads.0.len(), 2);
        assert_eq!(heads.to_string().lines().count(), 2);
        assert!(matches!(list_heads(&s, None), Err(AdminError::NoAuditKey)));
        assert!(matches!(
            list_heads(&s, Some(&SigningKey::from_bytes(&[8; 32]).verifying_key())),
            Err(AdminError::StoredLog(AuditError::HeadSignature { head: 0 }))
        ));

        for size in 1..=7 {
            for index in 0..size {
                let report = prove_inclusion(&s, Some(&vk), index, Some(size)).unwrap();
                verify_inclusion(&report.leaf_hash, index, size, &report.proof, &report.root)
                    .unwrap();
                assert_eq!(report.head.is_some(), size == 3 || size == 7);
            }
            for from in 0..=size {
                let report = prove_consistency(&s, Some(&vk), from, Some(size)).unwrap();
                verify_consistency(
                    from,
                    size,
                    &report.from_root,
                    &report.to_root,
                    &report.proof,
                )
                .unwrap();
            }
        }
        let report = prove_consistency(&s, Some(&vk), 3, None).unwrap();
        let checked = check_consistency(
            &hex::encode(heads.0[0].encode()),
            &hex::encode(heads.0[1].encode()),
            &[report
                .proof
                .iter()
                .map(hex::encode)
                .collect::<Vec<_>>()
                .join(",")],
            &hex::encode(vk.to_bytes()),
        )
        .unwrap();
        assert_eq!((checked.old.tree_size, checked.new.tree_size), (3, 7));
        assert!(checked.to_string().starts_with("consistent: tree size 3 "));
        // Two heads of one size with different roots: equivocation.
        let forged = ward_audit::TreeHead {
            root: [0; 32],
            ..heads.0[1].head
        }
        .sign(&key);
        assert!(matches!(
            check_consistency(
                &hex::encode(heads.0[1].encode()),
                &hex::encode(forged.encode()),
                &[],
                &hex::encode(vk.to_bytes()),
            ),
            Err(AdminError::HeadsInconsistent {
                source: AuditError::Equivocation { tree_size: 7 },
                ..
            })
        ));
        // A small-order key is refused as a key, not as a signature.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            check_consistency("", "", &[], &hex::encode(identity)),
            Err(AdminError::UnusableRelayKey)
        ));

        assert!(matches!(
            prove_inclusion(&s, Some(&vk), 7, None),
            Err(AdminError::IndexOutOfRange {
                index: 7,
                tree_size: 7
            })
        ));
        assert!(matches!(
            prove_inclusion(&s, Some(&vk), 0, Some(8)),
            Err(AdminError::SizeOutOfRange {
                size: 8,
                log_size: 7
            })
        ));
        assert!(matches!(
            prove_consistency(&s, Some(&vk), 5, Some(4)),
            Err(AdminError::SizesOutOfOrder { from: 5, to: 4 })
        ));
    }
}
