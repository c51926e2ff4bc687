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

use ward_audit::{AuditError, Hash, SigningKey, UserId, VerifiedLog, verify_export};
use zeroize::Zeroizing;

use crate::keys::{self, KeyError};
use crate::storage::{Device, DeviceKey, Revocation, Role, Storage, StorageError, User};

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
}
