//! What [`Messenger::next_event`](super::Messenger::next_event) reports.

use std::time::Duration;

use ward_proto::relay_v1 as wire;

use crate::content::{ContentError, HandedOver, Message, ReceiptKind};
use crate::store::HandoffRefusal;

/// A message received and stored.
#[derive(Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// The sending user, as the relay named it.
    pub sender_user: String,
    /// The sending device's key (the device whose session decrypted it).
    pub sender_device: [u8; 32],
    /// The sender's message id.
    pub message_id: [u8; 16],
    /// When the sender wrote it, by the sender's clock (ms since the epoch).
    pub sent_at_ms: u64,
    /// When this device stored it (ms since the epoch).
    pub received_at_ms: u64,
    /// The message.
    pub message: Message,
    /// Sent by this user from another of its devices: a copy of what the
    /// user sent, not a message to the user.
    pub from_own_device: bool,
}

impl core::fmt::Debug for IncomingMessage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IncomingMessage")
            .field("message", &self.message)
            .field("from_own_device", &self.from_own_device)
            .finish_non_exhaustive()
    }
}

/// Whether the messenger is connected to its relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected and authenticated: sends go out, pushes come in.
    Connected,
    /// Not connected. The messenger connects again by itself, with
    /// backoff, while [`Messenger::next_event`](super::Messenger::next_event)
    /// runs; `retry_in` is the wait before its next attempt, as it was
    /// when the state was reported.
    Disconnected {
        /// The wait before the next attempt.
        retry_in: Duration,
    },
}

/// What [`Messenger::next_event`](super::Messenger::next_event) reports.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message, stored and acknowledged.
    Message(IncomingMessage),
    /// A receipt for messages this user sent.
    Receipt {
        /// Who sent the receipt.
        from_user: String,
        /// From which device.
        from_device: [u8; 32],
        /// Delivered or read.
        kind: ReceiptKind,
        /// The messages it covers.
        message_ids: Vec<[u8; 16]>,
    },
    /// A recorded device of `user` presented another identity (spec/06,
    /// SES-13): its safety number changed; the app tells the user.
    IdentityChanged {
        /// The user.
        user: String,
        /// The device.
        device_key: [u8; 32],
    },
    /// A device appeared for a user of whom other devices were recorded
    /// (this user included): the safety number changed; the app tells the
    /// user.
    NewDevice {
        /// The user.
        user: String,
        /// The new device.
        device_key: [u8; 32],
    },
    /// An administrator had this device wiped through the relay (spec/08,
    /// "Remote wipe", RLY-37): the store's files are erased and the relay
    /// was told, and will revoke the device. The messenger is unusable from
    /// now on: every fallible method fails with
    /// [`ClientError::NotEnrolled`](crate::ClientError::NotEnrolled) (as
    /// [`Messenger::open`](super::Messenger::open) on this store does). The
    /// app deletes the storage key from the platform's key store and drops
    /// the messenger.
    Wiped,
    /// A group's roster or name changed, or this device joined a group
    /// (a creation or a welcome): read it with
    /// [`Messenger::group`](super::Messenger::group).
    GroupChanged {
        /// The group.
        group_id: [u8; 16],
        /// The user whose device made the change.
        by_user: String,
    },
    /// The outgoing holder of a role handed its recent threads to this
    /// user, who holds the role next (spec/15, "Handoff"): checked
    /// against the administrator's schedule. `messages` are those this
    /// device did not have, oldest first; each names its thread
    /// (`message.role`).
    RoleHandoff {
        /// The role.
        role_id: String,
        /// The outgoing holder.
        from_user: String,
        /// The end of their hold, seconds since the Unix epoch.
        ends_at: u64,
        /// The handed-over messages.
        messages: Vec<HandedOver>,
    },
    /// A handoff that did not check out against the administrator's
    /// schedule (a user who did not hold the role, say): nothing of it was
    /// kept. The app may warn; the relay or the sender's account may be
    /// compromised.
    HandoffRefused {
        /// The role it named.
        role_id: String,
        /// Who sent it.
        from_user: String,
        /// Why it was refused.
        reason: HandoffRefusal,
    },
    /// A message decrypted (and was stored and acknowledged) but its
    /// content is not valid `ward.content.v1` (spec/12, CNT-9).
    Unreadable {
        /// Who sent it.
        from_user: String,
        /// From which device.
        from_device: [u8; 32],
        /// Its id.
        message_id: [u8; 16],
        /// Why it does not decode.
        error: ContentError,
    },
    /// The connection to the relay was lost or is back.
    Connection(ConnectionState),
    /// A message whose send returned
    /// [`ClientError::Pending`](crate::ClientError::Pending) (or that was
    /// left in the outbox by an earlier run) was accepted by the relay.
    Sent {
        /// Its id.
        message_id: [u8; 16],
    },
    /// A message whose send returned
    /// [`ClientError::Pending`](crate::ClientError::Pending) was refused
    /// for good when it was sent again (an unknown recipient, say), and
    /// left the outbox.
    SendFailed {
        /// Its id.
        message_id: [u8; 16],
        /// The relay's reason.
        code: wire::ErrorCode,
    },
}

impl core::fmt::Debug for Event {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // No user ids, keys or message ids (STO-24).
        match self {
            Self::Message(m) => f.debug_tuple("Message").field(m).finish(),
            Self::Receipt {
                kind, message_ids, ..
            } => f
                .debug_struct("Receipt")
                .field("kind", kind)
                .field("count", &message_ids.len())
                .finish_non_exhaustive(),
            Self::IdentityChanged { .. } => f.write_str("IdentityChanged"),
            Self::NewDevice { .. } => f.write_str("NewDevice"),
            Self::Wiped => f.write_str("Wiped"),
            Self::GroupChanged { .. } => f.write_str("GroupChanged"),
            Self::RoleHandoff {
                role_id, messages, ..
            } => f
                .debug_struct("RoleHandoff")
                .field("role_id", role_id)
                .field("messages", &messages.len())
                .finish_non_exhaustive(),
            Self::HandoffRefused {
                role_id, reason, ..
            } => f
                .debug_struct("HandoffRefused")
                .field("role_id", role_id)
                .field("reason", reason)
                .finish_non_exhaustive(),
            Self::Unreadable { error, .. } => f
                .debug_struct("Unreadable")
                .field("error", error)
                .finish_non_exhaustive(),
            Self::Connection(state) => f.debug_tuple("Connection").field(state).finish(),
            Self::Sent { .. } => f.write_str("Sent"),
            Self::SendFailed { code, .. } => f
                .debug_struct("SendFailed")
                .field("code", code)
                .finish_non_exhaustive(),
        }
    }
}
