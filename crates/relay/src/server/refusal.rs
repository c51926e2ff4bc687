//! Typed refusals: what a request gets back when it fails, and how storage
//! errors map onto the wire's error codes.

use ward_proto::relay_v1::{self as wire, ErrorCode};

use crate::storage::{Device, StorageError};

/// A refused request, as it goes on the wire.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    pub(crate) current_devices: Vec<wire::UserDevices>,
    pub(crate) retry_after_ms: u64,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            current_devices: Vec::new(),
            retry_after_ms: 0,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub(crate) fn malformed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::MalformedFrame, message)
    }

    pub(crate) fn internal() -> Self {
        // Details go to the relay's log; the client learns only that
        // nothing was changed.
        Self::new(ErrorCode::Internal, "the relay failed; nothing was changed")
    }

    pub(crate) fn into_wire(self) -> wire::Error {
        wire::Error {
            code: self.code.into(),
            message: self.message,
            current_devices: self.current_devices,
            retry_after_ms: self.retry_after_ms,
        }
    }
}

/// The short name of an error code, for metrics labels and audit entries
/// (the audit ID alphabet).
pub(crate) fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unspecified => "unspecified",
        ErrorCode::MalformedFrame => "malformed_frame",
        ErrorCode::FrameTooLarge => "frame_too_large",
        ErrorCode::UnknownRequest => "unknown_request",
        ErrorCode::Unauthenticated => "unauthenticated",
        ErrorCode::AuthFailed => "auth_failed",
        ErrorCode::EnrollmentRefused => "enrollment_refused",
        ErrorCode::Revoked => "revoked",
        ErrorCode::NotFound => "not_found",
        ErrorCode::InvalidArgument => "invalid_argument",
        ErrorCode::StaleDevices => "stale_devices",
        ErrorCode::MessageTooLarge => "message_too_large",
        ErrorCode::QueueFull => "queue_full",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::AlreadyAuthenticated => "already_authenticated",
        ErrorCode::TooManyPrekeys => "too_many_prekeys",
        ErrorCode::Internal => "internal",
    }
}

/// The active devices of users, as the wire lists them.
pub(crate) fn user_devices(users: &[(ward_audit::UserId, Vec<Device>)]) -> Vec<wire::UserDevices> {
    users
        .iter()
        .map(|(user, devices)| wire::UserDevices {
            user_id: user.as_str().to_owned(),
            devices: devices
                .iter()
                .map(|d| wire::DeviceInfo {
                    identity: d.identity.to_vec(),
                })
                .collect(),
        })
        .collect()
}

impl From<StorageError> for Refusal {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound { what } => {
                Self::new(ErrorCode::NotFound, format!("{what} not found"))
            }
            StorageError::AlreadyExists { what } => Self::invalid(format!("{what} already exists")),
            e @ (StorageError::TokenInvalid
            | StorageError::TokenExpired
            | StorageError::TokenUsed) => Self::new(ErrorCode::EnrollmentRefused, e.to_string()),
            e @ StorageError::QueueFull { .. } => Self::new(ErrorCode::QueueFull, e.to_string()),
            e @ StorageError::TooManyPreKeys { .. } => {
                Self::new(ErrorCode::TooManyPrekeys, e.to_string())
            }
            e @ StorageError::Revoked { .. } => Self::new(ErrorCode::Revoked, e.to_string()),
            StorageError::InvalidInput(what) => Self::invalid(what),
            StorageError::StaleDevices { current } => Self {
                current_devices: user_devices(&current),
                ..Self::new(
                    ErrorCode::StaleDevices,
                    "the device list is not current; nothing was stored",
                )
            },
            e => {
                tracing::error!(error = %e, "storage failed");
                Self::internal()
            }
        }
    }
}
