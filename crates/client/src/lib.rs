//! Ward's client SDK.
//!
//! [`RelayConnection`] is the relay protocol (spec/08) from the device's
//! side: a pinned QUIC connection, authentication bound to the TLS
//! session, one request per stream, and the delivery stream.
//! [`Messenger`] is a persistent device on top of it and of [`Store`], the
//! device's sealed local store (spec/11): keys, sessions, contacts and
//! messages in SQLite, sealed under the app's [`StorageKey`]. It fans
//! messages out to every device of the addressed users and of its own
//! user, de-duplicates and acknowledges what is pushed, sends receipts,
//! keeps its prekeys supplied, and locks after inactivity.
//! [`content`] is the message content format carried inside each ratchet
//! message (spec/12).

#![forbid(unsafe_code)]

mod connection;
mod messenger;
mod store;
mod tls;

pub use self::connection::{Deliveries, RelayConnection};
pub use self::content::{
    Attachment, AttachmentKey, Content, ContentError, GroupControl, GroupControlBody, HandedOver,
    Handoff, MAX_HANDOFF_ENTRIES, Message, Priority, Receipt, ReceiptKind, RoleThread,
};
pub use self::messenger::{
    ConnectionState, Event, GroupInfo, GroupMemberInfo, HandoffSent, IncomingMessage,
    MAX_HANDOFF_CLOCK_SKEW, MAX_HANDOFF_DELAY, Messenger, MessengerOptions, RoleSend,
};
pub use self::store::{
    APPLICATION_ID, DeviceRecord, GroupSend, HandoffRefusal, IdentityStatus, Insertion,
    KnownIdentity, MAX_GROUP_PENDING, MAX_GROUP_SENT_KEPT, MAX_NAME_LEN, MAX_ROLE_THREAD_ENTRIES,
    MAX_VALUE_LEN, MessageRef, OutboxStatus, OutgoingMessage, PendingEvent, PendingGroupItem,
    PendingKind, ReceivedMessage, RelayInfo, RoleThreadEntry, STORE_FORMAT, SignedPreKeyInfo,
    StorageKey, Store, StoreError,
};
pub use self::tls::{ALPN, PinMismatch, pinned_client_config};
/// The content format (spec/12), from its own crate.
pub use ward_content as content;
pub use ward_proto::relay_v1 as wire;

/// Why a relay operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint could not be created or the connection not started.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The connection failed or was closed.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A stream failed mid-request.
    #[error("stream failed: {0}")]
    Stream(String),
    /// The relay sent something that is not a valid frame.
    #[error("bad frame from the relay: {0}")]
    Frame(ward_proto::frame::FrameError),
    /// The relay refused the request.
    #[error("relay refused the request: {code:?}: {message}")]
    Refused {
        /// The error code.
        code: wire::ErrorCode,
        /// The relay's message, for people.
        message: String,
        /// With [`wire::ErrorCode::StaleDevices`]: the current devices.
        current_devices: Vec<wire::UserDevices>,
        /// With [`wire::ErrorCode::RateLimited`]: when to retry.
        retry_after_ms: u64,
    },
    /// A session operation failed: a message did not decrypt, a bundle
    /// did not verify, ...
    #[error("protocol error: {0}")]
    Protocol(#[from] ward_core::Error),
    /// The relay answered with a response of the wrong kind.
    #[error("unexpected response from the relay")]
    UnexpectedResponse,
    /// The device store failed (a wrong storage key is
    /// `Store(StoreError::WrongKey)`).
    #[error("device store: {0}")]
    Store(#[from] StoreError),
    /// The messenger is locked ([`Messenger::lock`], or automatically after
    /// inactivity): unlock it with the storage key.
    #[error("the messenger is locked")]
    Locked,
    /// Message content did not encode or decode (spec/12).
    #[error("message content: {0}")]
    Content(#[from] ContentError),
    /// There is no enrolled device in this store.
    #[error("no device is enrolled in this store")]
    NotEnrolled,
    /// The store already holds an enrolled device.
    #[error("this store already holds an enrolled device")]
    AlreadyEnrolled,
    /// A prekey bundle's identity is not that of the device the relay
    /// listed, or a bundle came for a device not asked for (spec/08,
    /// RLY-20).
    #[error("a prekey bundle does not match the device it was claimed for")]
    BundleMismatch,
    /// A device the send must reach has published no prekeys yet.
    #[error("a recipient device cannot be reached yet (no prekeys)")]
    NoBundle,
    /// No device of this contact is known yet.
    #[error("no device of this contact is known")]
    UnknownContact,
    /// Not connected to the relay. The messenger connects again by itself
    /// (see [`Messenger::next_event`]); what needs the relay fails with
    /// this meanwhile.
    #[error("not connected to the relay")]
    Offline,
    /// A role's schedule was refused (spec/15): it does not verify under the
    /// configured administrator keys, or it would roll the role back.
    #[error("role schedule refused: {0}")]
    RoleSchedule(&'static str),
    /// Nobody holds the role now: nothing was sent.
    #[error("nobody holds the role {role_id} now")]
    RoleUnheld {
        /// The role.
        role_id: String,
    },
    /// This device has no such group.
    #[error("no such group")]
    UnknownGroup,
    /// The message is in the outbox, but the relay has not taken it yet:
    /// the connection is down, or the relay asked to wait (a rate limit, a
    /// full queue). The messenger sends it again, with this id, when it is
    /// connected, and reports [`Event::Sent`] (or [`Event::SendFailed`]).
    #[error("not sent yet, kept in the outbox: {reason}")]
    Pending {
        /// The message's id.
        message_id: [u8; 16],
        /// Why it could not be sent now.
        reason: Box<ClientError>,
    },
}

impl ClientError {
    /// The relay's error code, if the relay refused the request (now, or
    /// the pending send's last attempt).
    pub fn code(&self) -> Option<wire::ErrorCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            Self::Pending { reason, .. } => reason.code(),
            _ => None,
        }
    }
}
