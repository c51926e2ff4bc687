//! [`WardEvent`]: [`Event`] as foreign code sees it.

use ward_client::{
    Attachment, AttachmentKey, ConnectionState, Event, IncomingMessage, Message, Priority,
    ReceiptKind,
};

use crate::{WardError, WardHandedOver, WardHandoffRefusal, WardRoleThread};

/// The length of an attachment's key, in bytes.
const ATTACHMENT_KEY_LEN: usize = 32;
/// The length of an attachment's SHA-256, in bytes.
const SHA256_LEN: usize = 32;

/// A file (an image, a lab PDF) encrypted under its own key and stored
/// elsewhere; a message carries where it is and how to open it (spec/12).
///
/// `key` is the blob's ChaCha20-Poly1305 key: a secret. Keep it in memory
/// only as long as the blob is being opened, and never log it. No `Debug`.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct WardAttachment {
    /// Where the encrypted blob lives (a URL or an opaque reference),
    /// 1 to 2048 bytes.
    pub reference: String,
    /// Its media type (`image/jpeg`), at most 255 bytes.
    pub content_type: String,
    /// The plaintext size of the blob, in bytes.
    pub size: u64,
    /// SHA-256 of the encrypted blob (32 bytes).
    pub sha256: Vec<u8>,
    /// The blob's key (32 bytes).
    pub key: Vec<u8>,
}

impl From<Attachment> for WardAttachment {
    fn from(a: Attachment) -> Self {
        Self {
            reference: a.reference,
            content_type: a.content_type,
            size: a.size,
            sha256: a.sha256.to_vec(),
            key: a.key.expose_secret().to_vec(),
        }
    }
}

impl TryFrom<WardAttachment> for Attachment {
    type Error = WardError;

    fn try_from(a: WardAttachment) -> Result<Self, WardError> {
        let mut key_bytes = zeroize::Zeroizing::new(a.key);
        let key = <[u8; ATTACHMENT_KEY_LEN]>::try_from(key_bytes.as_slice()).map_err(|_| {
            WardError::invalid(format!(
                "an attachment key is {ATTACHMENT_KEY_LEN} bytes, not {}",
                key_bytes.len()
            ))
        })?;
        zeroize::Zeroize::zeroize(&mut *key_bytes);
        let sha256 = <[u8; SHA256_LEN]>::try_from(a.sha256.as_slice()).map_err(|_| {
            WardError::invalid(format!(
                "an attachment's sha256 is {SHA256_LEN} bytes, not {}",
                a.sha256.len()
            ))
        })?;
        Ok(Self {
            reference: a.reference,
            content_type: a.content_type,
            size: a.size,
            sha256,
            key: AttachmentKey::new(key),
        })
    }
}

/// A message to send: text, attachments, priority.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct WardMessage {
    /// The text, at most 64 KiB of UTF-8.
    pub text: String,
    /// Urgent (the recipient's app alerts accordingly).
    #[uniffi(default = false)]
    pub urgent: bool,
    /// At most 32 attachments.
    #[uniffi(default = [])]
    pub attachments: Vec<WardAttachment>,
}

impl TryFrom<WardMessage> for Message {
    type Error = WardError;

    fn try_from(m: WardMessage) -> Result<Self, WardError> {
        Ok(Self {
            text: m.text,
            attachments: m
                .attachments
                .into_iter()
                .map(Attachment::try_from)
                .collect::<Result<_, _>>()?,
            priority: if m.urgent {
                Priority::Urgent
            } else {
                Priority::Routine
            },
            sent_at_ms: 0,
            group_id: None,
            role: None,
        })
    }
}

/// A received message's text, urgency and attachments.
pub(crate) fn message_body(message: Message) -> (String, bool, Vec<WardAttachment>) {
    let urgent = message.priority == Priority::Urgent;
    let attachments = message.attachments.into_iter().map(Into::into).collect();
    (message.text, urgent, attachments)
}

/// Delivered or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum WardReceiptKind {
    /// The message reached a device of the recipient.
    Delivered,
    /// The recipient read it.
    Read,
}

impl From<ReceiptKind> for WardReceiptKind {
    fn from(kind: ReceiptKind) -> Self {
        match kind {
            ReceiptKind::Delivered => Self::Delivered,
            ReceiptKind::Read => Self::Read,
        }
    }
}

impl From<WardReceiptKind> for ReceiptKind {
    fn from(kind: WardReceiptKind) -> Self {
        match kind {
            WardReceiptKind::Delivered => Self::Delivered,
            WardReceiptKind::Read => Self::Read,
        }
    }
}

/// What [`WardDevice::next_event`](crate::WardDevice::next_event) reports.
///
/// Device keys are 32 bytes, message ids 16. No `Debug`: a message's text
/// is patient data.
#[derive(Clone, PartialEq, Eq, uniffi::Enum)]
pub enum WardEvent {
    /// A message, stored and acknowledged.
    Message {
        /// The sending user.
        sender_user: String,
        /// The sending device's key.
        sender_device: Vec<u8>,
        /// The sender's message id (what receipts refer to).
        message_id: Vec<u8>,
        /// The text.
        text: String,
        /// Sent as urgent.
        urgent: bool,
        /// The files it references.
        attachments: Vec<WardAttachment>,
        /// When it was written, by the sender's clock (ms since the epoch).
        sent_at_ms: u64,
        /// When this device stored it (ms since the epoch).
        received_at_ms: u64,
        /// Sent by this user from another of its devices: a copy of what
        /// the user sent, not a message to the user.
        from_own_device: bool,
        /// The group it was sent to (16 bytes), or none for a 1:1 message.
        group_id: Option<Vec<u8>>,
        /// The role thread it belongs to (spec/15), or none: a message to
        /// a role, or a reply in the thread (answer with
        /// [`WardDevice::reply_in_role_thread`](crate::WardDevice::reply_in_role_thread)).
        role: Option<WardRoleThread>,
    },
    /// A group's roster or name changed, or this device joined one: read
    /// it with [`WardDevice::group`](crate::WardDevice::group).
    GroupChanged {
        /// The group (16 bytes).
        group_id: Vec<u8>,
        /// Whose device made the change.
        by_user: String,
    },
    /// The outgoing holder of a role handed its recent threads to this
    /// user, who holds the role next (spec/15, "Handoff"); checked against
    /// the administrator's schedule under the pinned keys. `messages` are
    /// those this device did not have, oldest first.
    RoleHandoff {
        /// The role.
        role_id: String,
        /// The outgoing holder.
        from_user: String,
        /// The end of their hold, seconds since the Unix epoch.
        ends_at: u64,
        /// The handed-over messages; each names its thread's party.
        messages: Vec<WardHandedOver>,
    },
    /// A handoff that did not check out against the administrator's
    /// schedule (from a user who did not hold the role, say): nothing of
    /// it was kept. The app may warn: the relay or the sender's account
    /// may be compromised.
    HandoffRefused {
        /// The role it named.
        role_id: String,
        /// Who sent it.
        from_user: String,
        /// Why it was refused.
        reason: WardHandoffRefusal,
    },
    /// A receipt for messages this user sent.
    Receipt {
        /// Who sent the receipt.
        from_user: String,
        /// From which device.
        from_device: Vec<u8>,
        /// Delivered or read.
        kind: WardReceiptKind,
        /// The message ids it covers.
        message_ids: Vec<Vec<u8>>,
    },
    /// A recorded device of `user` presented another identity: the
    /// safety number changed; tell the user.
    IdentityChanged {
        /// The user.
        user: String,
        /// The device.
        device_key: Vec<u8>,
    },
    /// A new device appeared for `user` (this user included): the safety
    /// number changed; tell the user.
    NewDevice {
        /// The user.
        user: String,
        /// The new device.
        device_key: Vec<u8>,
    },
    /// A message arrived (and was stored and acknowledged) but its content
    /// does not decode.
    Unreadable {
        /// Who sent it.
        from_user: String,
        /// From which device.
        from_device: Vec<u8>,
        /// Its id.
        message_id: Vec<u8>,
        /// Why it does not decode.
        reason: String,
    },
    /// An administrator had this device wiped through the relay: its store
    /// is erased and every call now fails with
    /// [`WardError::NotEnrolled`](crate::WardError::NotEnrolled). Delete the storage key from the
    /// platform's key store and drop the device.
    Wiped,
    /// The connection to the relay was lost (`connected` false; the device
    /// connects again by itself, the next attempt in `retry_in_ms`) or is
    /// back (`connected` true). Waiting for events goes on either way.
    Connection {
        /// Whether the device is connected now.
        connected: bool,
        /// While disconnected: the wait before the next attempt, in ms.
        retry_in_ms: u64,
    },
    /// A message whose send failed with [`WardError::Pending`] (or left in
    /// the outbox by an earlier run) reached the relay.
    Sent {
        /// Its id.
        message_id: Vec<u8>,
    },
    /// A message whose send failed with [`WardError::Pending`] was refused
    /// for good when sent again, and left the outbox.
    SendFailed {
        /// Its id.
        message_id: Vec<u8>,
        /// The relay's error code (as in [`WardError::Refused`]).
        code: String,
    },
    /// An event of a kind this version of the bindings does not map.
    Unsupported {
        /// Its kind, without its contents.
        description: String,
    },
}

impl From<Event> for WardEvent {
    fn from(event: Event) -> Self {
        match event {
            Event::Message(IncomingMessage {
                sender_user,
                sender_device,
                message_id,
                sent_at_ms,
                received_at_ms,
                mut message,
                from_own_device,
            }) => {
                let group_id = message.group_id.map(|id| id.to_vec());
                let role = message.role.take().map(Into::into);
                let (text, urgent, attachments) = message_body(message);
                Self::Message {
                    sender_user,
                    sender_device: sender_device.to_vec(),
                    message_id: message_id.to_vec(),
                    text,
                    urgent,
                    attachments,
                    sent_at_ms,
                    received_at_ms,
                    from_own_device,
                    group_id,
                    role,
                }
            }
            Event::Receipt {
                from_user,
                from_device,
                kind,
                message_ids,
            } => Self::Receipt {
                from_user,
                from_device: from_device.to_vec(),
                kind: kind.into(),
                message_ids: message_ids.iter().map(|id| id.to_vec()).collect(),
            },
            Event::IdentityChanged { user, device_key } => Self::IdentityChanged {
                user,
                device_key: device_key.to_vec(),
            },
            Event::NewDevice { user, device_key } => Self::NewDevice {
                user,
                device_key: device_key.to_vec(),
            },
            Event::Unreadable {
                from_user,
                from_device,
                message_id,
                error,
            } => Self::Unreadable {
                from_user,
                from_device: from_device.to_vec(),
                message_id: message_id.to_vec(),
                reason: error.to_string(),
            },
            Event::Wiped => Self::Wiped,
            Event::GroupChanged { group_id, by_user } => Self::GroupChanged {
                group_id: group_id.to_vec(),
                by_user,
            },
            Event::RoleHandoff {
                role_id,
                from_user,
                ends_at,
                messages,
            } => Self::RoleHandoff {
                role_id,
                from_user,
                ends_at,
                messages: messages.into_iter().map(Into::into).collect(),
            },
            Event::HandoffRefused {
                role_id,
                from_user,
                reason,
            } => Self::HandoffRefused {
                role_id,
                from_user,
                reason: reason.into(),
            },
            Event::Connection(ConnectionState::Connected) => Self::Connection {
                connected: true,
                retry_in_ms: 0,
            },
            Event::Connection(ConnectionState::Disconnected { retry_in }) => Self::Connection {
                connected: false,
                retry_in_ms: u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
            },
            Event::Sent { message_id } => Self::Sent {
                message_id: message_id.to_vec(),
            },
            Event::SendFailed { message_id, code } => Self::SendFailed {
                message_id: message_id.to_vec(),
                code: crate::error::code_name(code),
            },
            // `Event`'s Debug shows no user data.
            other => Self::Unsupported {
                description: format!("{other:?}"),
            },
        }
    }
}
