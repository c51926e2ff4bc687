//! The values the storage takes and returns.

use core::fmt;

use ward_audit::entry::is_id_byte;
use ward_audit::{DeviceId, MessageId, UserId};

use super::error::StorageError;

/// Length of a device key (an Ed25519 public key).
pub const DEVICE_KEY_LEN: usize = 32;
/// Length of a [`DeviceIdentity`](ward_core::DeviceIdentity) in its fixed form.
pub const IDENTITY_LEN: usize = ward_core::DeviceIdentity::ENCODED_LEN;
/// Length of an enrollment token hash.
pub const TOKEN_HASH_LEN: usize = 32;

/// A device's name: its Ed25519 signing key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceKey(pub [u8; DEVICE_KEY_LEN]);

impl DeviceKey {
    /// The device's id in the audit log: the 64 lowercase hex digits of the
    /// key (exactly [`DeviceId::MAX_LEN`]). Always `Some`; an `Option` only
    /// because [`DeviceId::new`] checks its input, and entry fields are
    /// optional anyway.
    pub fn audit_id(&self) -> Option<DeviceId> {
        let mut text = String::with_capacity(2 * DEVICE_KEY_LEN);
        for b in self.0 {
            text.push(hex_digit(b >> 4));
            text.push(hex_digit(b & 0x0f));
        }
        DeviceId::new(&text).ok()
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({self})")
    }
}

/// A user's role, for example `nurse` or `oncall-cardiology`: 1 to
/// [`Role::MAX_LEN`] bytes of the audit ID alphabet, so that it can be
/// written into audit entries as it is.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Role(String);

impl Role {
    /// The longest role, in bytes. Short enough that `create_user role=...`
    /// fits an audit entry's 64-byte detail.
    pub const MAX_LEN: usize = 32;

    /// Checks the length and the alphabet.
    pub fn new(text: &str) -> Result<Self, StorageError> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(StorageError::InvalidInput("role must be 1 to 32 bytes"));
        }
        if !text.bytes().all(is_id_byte) {
            return Err(StorageError::InvalidInput(
                "role must use the audit ID alphabet",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The role as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Role({:?})", self.0)
    }
}

/// A user of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The unique user id.
    pub id: UserId,
    /// The user's role.
    pub role: Role,
    /// When the user was created, ms since the Unix epoch.
    pub created_at: u64,
}

/// An enrolled device.
#[derive(Clone, PartialEq, Eq)]
pub struct Device {
    /// The device's Ed25519 key, its name.
    pub key: DeviceKey,
    /// The user the device belongs to.
    pub user: UserId,
    /// `DeviceIdentity::to_bytes`, checked when the device enrolled.
    pub identity: [u8; IDENTITY_LEN],
    /// When the device enrolled, ms since the Unix epoch.
    pub enrolled_at: u64,
    /// When the device was revoked, if it was.
    pub revoked_at: Option<u64>,
}

impl Device {
    /// Whether the device is not revoked.
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            key,
            user,
            identity: _,
            enrolled_at,
            revoked_at,
        } = self;
        f.debug_struct("Device")
            .field("key", key)
            .field("user", user)
            .field("enrolled_at", enrolled_at)
            .field("revoked_at", revoked_at)
            .finish_non_exhaustive()
    }
}

/// What [`revoke_device`](super::Storage::revoke_device) removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The device, now revoked.
    pub device: Device,
    /// Queued messages deleted undelivered.
    pub deleted_messages: u64,
    /// One-time prekeys deleted.
    pub deleted_one_time_prekeys: u64,
}

/// A one-time prekey as uploaded and handed out: the client's id and its
/// encoded bytes (opaque to the relay).
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimePreKey {
    /// The client-chosen id.
    pub id: u32,
    /// The encoded prekey.
    pub encoded: Vec<u8>,
}

impl fmt::Debug for OneTimePreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimePreKey")
            .field("id", &self.id)
            .field("len", &self.encoded.len())
            .finish_non_exhaustive()
    }
}

/// A device's prekey bundle as handed out by
/// [`claim_bundle`](super::Storage::claim_bundle).
#[derive(Clone, PartialEq, Eq)]
pub struct PreKeyBundle {
    /// The device's identity, `DeviceIdentity::to_bytes`.
    pub identity: [u8; IDENTITY_LEN],
    /// The device's signed prekeys, as the device uploaded them.
    pub signed_prekeys: Vec<u8>,
    /// One one-time prekey, removed from the store; `None` when the device
    /// has none left.
    pub one_time_prekey: Option<OneTimePreKey>,
}

impl fmt::Debug for PreKeyBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreKeyBundle")
            .field("signed_prekeys_len", &self.signed_prekeys.len())
            .field("one_time_prekey", &self.one_time_prekey)
            .finish_non_exhaustive()
    }
}

/// One recipient's copy of a message handed to
/// [`enqueue`](super::Storage::enqueue).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// The recipient device.
    pub recipient: DeviceKey,
    /// The ciphertext for that device.
    pub ciphertext: &'a [u8],
}

impl fmt::Debug for Delivery<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("recipient", &self.recipient)
            .field("len", &self.ciphertext.len())
            .finish()
    }
}

/// How [`enqueue`](super::Storage::enqueue) checks a send's recipients
/// against the directory (its rule 5), and the one ciphertext the send
/// shares, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSet<'a> {
    /// The deliveries name every current device, each once (spec/08, "The
    /// device set rule"): the 1:1 send.
    Exact,
    /// A group send (spec/08, "The group rule"): the sender names a subset
    /// of the current devices, as a group's roster decides. `shared`, if
    /// given, is queued for its recipients besides the deliveries.
    Subset {
        /// One ciphertext for several recipients, stored once.
        shared: Option<SharedDelivery<'a>>,
    },
}

/// One ciphertext for several recipients (a group message, spec/13),
/// handed to [`enqueue`](super::Storage::enqueue) in
/// [`DeviceSet::Subset`]: stored once, and queued for each recipient.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SharedDelivery<'a> {
    /// The recipient devices, each named once.
    pub recipients: &'a [DeviceKey],
    /// The one ciphertext they all get.
    pub ciphertext: &'a [u8],
}

impl fmt::Debug for SharedDelivery<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedDelivery")
            .field("recipients", &self.recipients)
            .field("len", &self.ciphertext.len())
            .finish()
    }
}

/// Where a copy of a message sits: a recipient's queue and its sequence
/// number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedCopy {
    /// The recipient device.
    pub recipient: DeviceKey,
    /// The copy's sequence number in that device's queue.
    pub seq: u64,
}

/// What [`enqueue`](super::Storage::enqueue) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnqueueReceipt {
    /// The message was stored by an earlier call with the same sender and
    /// message id; this call stored nothing.
    pub duplicate: bool,
    /// When the message was first enqueued.
    pub enqueued_at: u64,
    /// When it expires.
    pub expires_at: u64,
    /// The copies still queued (for a new message, one per delivery in the
    /// order given, then one per shared recipient in the order given; for a
    /// duplicate, those not yet acknowledged or expired, in enqueue order).
    pub copies: Vec<QueuedCopy>,
}

/// A message waiting in a device's queue.
#[derive(Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Its sequence number in the queue: increasing in enqueue order, never
    /// reused.
    pub seq: u64,
    /// The sending device.
    pub sender: DeviceKey,
    /// The user the sending device belongs to.
    pub sender_user: UserId,
    /// The sender's message id.
    pub message_id: MessageId,
    /// When it was enqueued.
    pub enqueued_at: u64,
    /// When it expires.
    pub expires_at: u64,
    /// The ciphertext for this device.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for QueuedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            seq,
            sender,
            sender_user,
            message_id,
            enqueued_at,
            expires_at,
            ciphertext,
        } = self;
        f.debug_struct("QueuedMessage")
            .field("seq", seq)
            .field("sender", sender)
            .field("sender_user", sender_user)
            .field("message_id", message_id)
            .field("enqueued_at", enqueued_at)
            .field("expires_at", expires_at)
            .field("len", &ciphertext.len())
            .finish()
    }
}

/// A copy deleted by [`ack`](super::Storage::ack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckedMessage {
    /// The copy's sequence number in the acknowledging device's queue.
    pub seq: u64,
    /// The sending device.
    pub sender: DeviceKey,
    /// The message id.
    pub message_id: MessageId,
    /// The ciphertext's size in bytes.
    pub size: u64,
}

/// What [`acknowledge`](super::Storage::acknowledge) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acknowledged {
    /// The copies deleted, in the order of the ids given (and of `seq`
    /// within one id).
    pub acked: Vec<AckedMessage>,
    /// The ids with no copy in the device's queue.
    pub unknown: Vec<MessageId>,
}

/// A copy deleted by [`expire`](super::Storage::expire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiredMessage {
    /// The device it was queued for.
    pub recipient: DeviceKey,
    /// The sending device.
    pub sender: DeviceKey,
    /// The message id.
    pub message_id: MessageId,
    /// The ciphertext's size in bytes.
    pub size: u64,
}

/// The audit log as the storage holds it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditState {
    /// The number of entries.
    pub size: u64,
    /// The Merkle root of all entries.
    pub root: ward_audit::Hash,
    /// The earliest timestamp the next entry or head can carry.
    pub not_before_ms: u64,
}

/// A role's schedule as an administrator signed it (spec/15): the relay
/// keeps the latest version per role and serves the bytes unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleScheduleRecord {
    /// The role's directory name.
    pub role_id: String,
    /// The schedule's version.
    pub version: u64,
    /// `0x0e || SignedRoleSchedule`, as signed.
    pub signed: Vec<u8>,
    /// When it was published, ms since the Unix epoch.
    pub published_at: u64,
}
