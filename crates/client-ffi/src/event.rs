//! [`WardEvent`]: [`Event`] as foreign code sees it.

use ward_client::{Event, IncomingMessage, Priority, ReceiptKind};

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
        /// How many attachments it references (not yet exposed here).
        attachment_count: u32,
        /// When it was written, by the sender's clock (ms since the epoch).
        sent_at_ms: u64,
        /// When this device stored it (ms since the epoch).
        received_at_ms: u64,
        /// Sent by this user from another of its devices: a copy of what
        /// the user sent, not a message to the user.
        from_own_device: bool,
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
                message,
                from_own_device,
            }) => Self::Message {
                sender_user,
                sender_device: sender_device.to_vec(),
                message_id: message_id.to_vec(),
                urgent: message.priority == Priority::Urgent,
                attachment_count: u32::try_from(message.attachments.len()).unwrap_or(u32::MAX),
                text: message.text,
                sent_at_ms,
                received_at_ms,
                from_own_device,
            },
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
            // `Event`'s Debug shows no user data.
            other => Self::Unsupported {
                description: format!("{other:?}"),
            },
        }
    }
}
