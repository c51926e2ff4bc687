//! [`WardError`]: [`ClientError`] as foreign code sees it.

use ward_client::{ClientError, StoreError};

/// Why a call failed. The `detail` strings are for logs and people, not
/// for parsing; branch on the variant (and on `Refused`'s `code`).
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum WardError {
    /// The storage key does not open this store.
    #[error("the storage key does not open this store")]
    WrongKey,
    /// The device is locked (by `lock`, or after the auto-lock delay):
    /// `unlock` it with the storage key.
    #[error("the device is locked")]
    Locked,
    /// The relay refused the request.
    #[error("the relay refused the request: {code}: {detail}")]
    Refused {
        /// The relay's error code, as in the protocol without its
        /// `ERROR_CODE_` prefix: `NOT_FOUND`, `ENROLLMENT_REFUSED`,
        /// `REVOKED`, `RATE_LIMITED`, ...
        code: String,
        /// The relay's explanation, for people. (Not `message`: Kotlin's
        /// exceptions have a `message` of their own.)
        detail: String,
        /// With `RATE_LIMITED`: how long to wait before retrying, in ms.
        retry_after_ms: u64,
    },
    /// The relay could not be reached, or the connection was lost. The
    /// device connects again by itself while the app waits for events
    /// (`WardEvent.Connection` tells when); enrolling needs the relay.
    #[error("connection: {detail}")]
    Connection {
        /// What failed.
        detail: String,
    },
    /// The message is kept in the outbox but the relay has not taken it
    /// yet (not connected, a rate limit, a full queue): the device sends it
    /// again by itself, with this id, and reports `WardEvent.Sent` (or
    /// `WardEvent.SendFailed`). Show it as pending.
    #[error("not sent yet, kept in the outbox: {detail}")]
    Pending {
        /// The message's id (16 bytes).
        message_id: Vec<u8>,
        /// Why it could not be sent now.
        detail: String,
    },
    /// An argument is malformed: a storage key that is not 32 bytes, a
    /// bad address or fingerprint, a message id that is not 16 bytes, a
    /// message over the content limits.
    #[error("invalid argument: {detail}")]
    InvalidArgument {
        /// Which argument, and why.
        detail: String,
    },
    /// The device store failed: damaged, in use by another process, not
    /// a Ward store, ...
    #[error("device store: {detail}")]
    Store {
        /// What failed.
        detail: String,
    },
    /// A session operation failed (a message did not decrypt, a prekey
    /// bundle did not verify), or the relay answered out of protocol.
    #[error("protocol: {detail}")]
    Protocol {
        /// What failed.
        detail: String,
    },
    /// No device is enrolled in this store: `enroll` one.
    #[error("no device is enrolled in this store")]
    NotEnrolled,
    /// The store already holds an enrolled device: `open` it.
    #[error("this store already holds an enrolled device")]
    AlreadyEnrolled,
    /// No device of this contact is known yet.
    #[error("no device of this contact is known")]
    UnknownContact,
    /// A recipient device has published no prekeys yet: retry later.
    #[error("a recipient device cannot be reached yet")]
    Unreachable,
    /// A role's schedule was refused: it does not verify under the pinned
    /// administrator keys (a forged schedule), it would roll the role back,
    /// or no key is pinned.
    #[error("role schedule refused: {detail}")]
    RoleRefused {
        /// Why.
        detail: String,
    },
    /// Nobody holds the role now; nothing was sent.
    #[error("nobody holds the role {role_id} now")]
    RoleUnheld {
        /// The role.
        role_id: String,
    },
    /// This device holds no such group.
    #[error("no such group")]
    UnknownGroup,
    /// The device was closed or wiped.
    #[error("the device is closed")]
    Closed,
    /// A failure of the bindings themselves (a bug): report it.
    #[error("internal error: {detail}")]
    Internal {
        /// What failed.
        detail: String,
    },
}

impl WardError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            detail: message.into(),
        }
    }
}

/// A relay error code as the bindings name it: `NOT_FOUND`, `REVOKED`, ...
pub(crate) fn code_name(code: ward_client::wire::ErrorCode) -> String {
    code.as_str_name()
        .trim_start_matches("ERROR_CODE_")
        .to_owned()
}

impl From<ClientError> for WardError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Store(StoreError::WrongKey) => Self::WrongKey,
            ClientError::Store(StoreError::Locked) | ClientError::Locked => Self::Locked,
            ClientError::Store(e) => Self::Store {
                detail: e.to_string(),
            },
            ClientError::Refused {
                code,
                message,
                retry_after_ms,
                ..
            } => Self::Refused {
                code: code_name(code),
                detail: message,
                retry_after_ms,
            },
            e @ (ClientError::Connect(_)
            | ClientError::Connection(_)
            | ClientError::Stream(_)
            | ClientError::Offline) => Self::Connection {
                detail: e.to_string(),
            },
            ClientError::Pending { message_id, reason } => Self::Pending {
                message_id: message_id.to_vec(),
                detail: reason.to_string(),
            },
            e @ (ClientError::Protocol(_)
            | ClientError::Frame(_)
            | ClientError::UnexpectedResponse
            | ClientError::BundleMismatch) => Self::Protocol {
                detail: e.to_string(),
            },
            ClientError::Content(e) => Self::invalid(e.to_string()),
            ClientError::NotEnrolled => Self::NotEnrolled,
            ClientError::AlreadyEnrolled => Self::AlreadyEnrolled,
            ClientError::UnknownContact => Self::UnknownContact,
            ClientError::NoBundle => Self::Unreachable,
            ClientError::RoleSchedule(why) => Self::RoleRefused {
                detail: why.to_owned(),
            },
            ClientError::RoleUnheld { role_id } => Self::RoleUnheld { role_id },
            ClientError::UnknownGroup => Self::UnknownGroup,
            e => Self::Internal {
                detail: e.to_string(),
            },
        }
    }
}
