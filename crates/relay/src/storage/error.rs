//! What a storage operation can fail with.

use ward_audit::UserId;

use super::types::{Device, DeviceKey};

/// The error of every [`Storage`](super::Storage) operation.
///
/// A refused operation (every variant but [`Backend`](Self::Backend) and
/// [`Io`](Self::Io)) changed nothing, wrote no audit entry, and can be
/// reported to the client as it is: no variant carries message content,
/// secret keys or tokens (devices are named by their public keys, and
/// [`StaleDevices`](Self::StaleDevices) carries public identities).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The named thing does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for: `"user"`, `"device"`, `"message"`,
        /// `"signed prekeys"`.
        what: &'static str,
    },
    /// The named thing exists already.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What: `"user"`, `"device"`, `"enrollment token"`.
        what: &'static str,
    },
    /// No enrollment token has this hash.
    #[error("enrollment token is not valid")]
    TokenInvalid,
    /// The enrollment token expired before it was redeemed.
    #[error("enrollment token has expired")]
    TokenExpired,
    /// The enrollment token was redeemed already.
    #[error("enrollment token was used already")]
    TokenUsed,
    /// A recipient's queue holds as many messages as allowed; nothing was
    /// stored for any recipient.
    #[error("queue of device {device} is full ({limit} messages)")]
    QueueFull {
        /// The device whose queue is full.
        device: DeviceKey,
        /// The configured queue depth.
        limit: u32,
    },
    /// A device would hold more one-time prekeys than allowed; none of the
    /// batch was stored.
    #[error("too many one-time prekeys (at most {limit} per device)")]
    TooManyPreKeys {
        /// The configured maximum.
        limit: u32,
    },
    /// The recipients of a send are not the devices it must reach (see
    /// [`Storage::enqueue`](super::Storage::enqueue)); nothing was stored.
    #[error("the recipient devices are not current ({} users listed)", current.len())]
    StaleDevices {
        /// The active devices of every addressed user and of the sender's
        /// user (including the sender), each user once: the addressed users
        /// in the order given, then the sender's user if not addressed.
        current: Vec<(UserId, Vec<Device>)>,
    },
    /// The device is revoked.
    #[error("device {device} is revoked")]
    Revoked {
        /// The revoked device.
        device: DeviceKey,
    },
    /// An argument is out of its bounds (empty delivery list, expiry in the
    /// past, oversized prekey, a value the database cannot hold, ...).
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// A file-system or stream error (creating the data directory, writing
    /// an export).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The database failed, or holds data this build cannot read. The
    /// operation may or may not have been applied only if this came from the
    /// commit itself; every other backend error rolls back.
    #[error("storage backend error: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        // SQLite's messages name tables and constraints, never bound values.
        Self::Backend(e.to_string())
    }
}

impl<E: core::fmt::Display> From<ward_audit::LogError<E>> for StorageError {
    fn from(e: ward_audit::LogError<E>) -> Self {
        Self::Backend(format!("audit log: {e}"))
    }
}

/// The result of a storage operation.
pub type Result<T, E = StorageError> = core::result::Result<T, E>;
