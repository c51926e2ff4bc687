//! The relay's storage: directory, prekeys, store-and-forward queues and the
//! audit log, behind one trait.
//!
//! [`Storage`] is what the server calls; [`SqliteStorage`] is the embedded
//! default (SQLite in a data directory). The trait names no SQL concept, so
//! a PostgreSQL backend can follow without changing callers.
//!
//! # Rules every backend keeps
//!
//! - **Ciphertext and metadata only.** Message bodies and prekeys are opaque
//!   bytes; enrollment tokens are stored as the hash the caller computed.
//!   A shared ciphertext (a group send) is stored once and lives exactly as
//!   long as a queued copy refers to it: every call that deletes copies
//!   (acknowledgment, expiry, revocation, wipe) deletes it with its last
//!   copy, in the same transaction.
//! - **Atomic, durable, audited.** Each mutating call is one transaction:
//!   the change and the audit entries describing it commit together or not
//!   at all, and the call returns only after the commit is durable. A
//!   refused call (any error but [`StorageError::Backend`] or
//!   [`StorageError::Io`]) changes nothing and writes no audit entry; the
//!   caller records refusals worth auditing (failed enrollments, failed
//!   logins, ...) with [`Storage::append_audit`].
//! - **The storage numbers the audit log.** It assigns each entry's
//!   sequence number and timestamp: the timestamp is the call's `now`, or
//!   the log's latest timestamp if `now` is earlier (two threads may reach
//!   the single writer out of clock order; the log never goes back in time).
//! - **Times** are milliseconds since the Unix epoch, passed in by the
//!   caller (the storage reads no clock), at most `i64::MAX`.
//!
//! # What is audited
//!
//! | Call | Entries |
//! |---|---|
//! | [`create_user`](Storage::create_user) | `AdminAction`, detail `create_user role=...` |
//! | [`issue_enrollment_token`](Storage::issue_enrollment_token) | `AdminAction`, detail `enrollment_token role=...` |
//! | [`redeem_enrollment_token`](Storage::redeem_enrollment_token) | `Enrollment` |
//! | [`revoke_device`](Storage::revoke_device) | `Revocation`, then one `Expiry` (detail `device_revoked`) per deleted queued copy |
//! | [`request_wipe`](Storage::request_wipe) | `AdminAction`, detail `wipe` |
//! | [`complete_wipe`](Storage::complete_wipe) | `AdminAction`, detail `wipe_done` (actor: the device), then the entries of a revocation (the `Revocation` entry's actor is the device) |
//! | [`claim_bundle`](Storage::claim_bundle) | `PreKeyFetch`, detail `one_time=<id>` or `one_time=none` |
//! | [`enqueue`](Storage::enqueue) | one `Send` per recipient copy (size = that copy's ciphertext length: the shared ciphertext's for each recipient of a shared delivery); nothing for a duplicate, nothing for a refusal ([`StaleDevices`](StorageError::StaleDevices), ...) |
//! | [`ack`](Storage::ack) | one `Acknowledgment` per deleted copy |
//! | [`expire`](Storage::expire) | one `Expiry` per deleted copy |
//! | [`publish_role_schedule`](Storage::publish_role_schedule) | `AdminAction`, detail `role=<role id> v=<version>` |
//! | [`append_audit`](Storage::append_audit) | the given entries (authentication, delivery, refusals) |
//!
//! Prekey uploads are not audited: ward-audit has no event kind for them,
//! and they carry no user data. Calls that only read (`get_*`, `list_*`,
//! [`fetch`](Storage::fetch), [`revoked_since`](Storage::revoked_since),
//! [`wipe_pending`](Storage::wipe_pending),
//! [`wipes_requested_since`](Storage::wipes_requested_since), proofs,
//! exports, ...) write nothing.

mod error;
mod sqlite;
mod types;

use ward_audit::{
    AuditEntry, ConsistencyProof, Export, InclusionProof, MessageId, SignedTreeHead, SigningKey,
    UserId, VerifyingKey,
};

pub use self::error::{Result, StorageError};
pub use self::sqlite::{DATABASE_FILE, SCHEMA_VERSION, SqliteStorage, StorageConfig};
pub use self::types::{
    AckedMessage, Acknowledged, AuditState, DEVICE_KEY_LEN, Delivery, Device, DeviceKey, DeviceSet,
    EnqueueReceipt, ExpiredMessage, IDENTITY_LEN, OneTimePreKey, PreKeyBundle, QueuedCopy,
    QueuedMessage, Revocation, Role, RoleScheduleRecord, SharedDelivery, TOKEN_HASH_LEN, User,
};

/// The relay's storage. Methods are synchronous and block until done (for a
/// change: until it is durable): the server calls them from a blocking
/// thread. Implementations are shared between threads, and batch concurrent
/// calls into shared commits where they can ([`SqliteStorage`] does).
///
/// `admin` arguments name the administrator who acted, for the audit log
/// (`None`: the local command line).
pub trait Storage: Send + Sync {
    // ----- users -----

    /// Creates a user. [`StorageError::AlreadyExists`] if the id is taken.
    fn create_user(
        &self,
        user: &UserId,
        role: &Role,
        admin: Option<&UserId>,
        now: u64,
    ) -> Result<User>;

    /// The user with this id, or [`StorageError::NotFound`].
    fn get_user(&self, user: &UserId) -> Result<User>;

    /// Every user, ordered by id.
    fn list_users(&self) -> Result<Vec<User>>;

    // ----- enrollment -----

    /// Stores a single-use enrollment token for `user`, valid until
    /// `expires_at` (exclusive). Only the token's hash is stored: the caller
    /// hashes a high-entropy token (SHA-256) and hands the token itself to
    /// the administrator.
    fn issue_enrollment_token(
        &self,
        token_hash: &[u8; TOKEN_HASH_LEN],
        user: &UserId,
        admin: Option<&UserId>,
        now: u64,
        expires_at: u64,
    ) -> Result<()>;

    /// Redeems a token: checks, atomically, that it exists
    /// ([`StorageError::TokenInvalid`]), is unused ([`StorageError::TokenUsed`])
    /// and unexpired ([`StorageError::TokenExpired`]), marks it used and
    /// enrolls the device (named by the identity's signing key) under the
    /// token's user. A device key enrolled before, even revoked, is
    /// [`StorageError::AlreadyExists`] and leaves the token unused.
    fn redeem_enrollment_token(
        &self,
        token_hash: &[u8; TOKEN_HASH_LEN],
        identity: &ward_core::DeviceIdentity,
        now: u64,
    ) -> Result<Device>;

    // ----- devices -----

    /// The device with this key, revoked or not, or [`StorageError::NotFound`].
    fn get_device(&self, device: &DeviceKey) -> Result<Device>;

    /// The user's active devices, in enrollment order. An unknown user is
    /// [`StorageError::NotFound`].
    fn list_devices(&self, user: &UserId) -> Result<Vec<Device>>;

    /// The user's devices including revoked ones, in enrollment order.
    fn list_all_devices(&self, user: &UserId) -> Result<Vec<Device>>;

    /// Every device revoked at or after `since_ms`, with the time it was
    /// revoked, oldest first. A running server polls this to close the
    /// connections of devices revoked by another process (the admin command
    /// line); revocation times are the revoking caller's clock, so poll with
    /// some overlap.
    fn revoked_since(&self, since_ms: u64) -> Result<Vec<(DeviceKey, u64)>>;

    /// Revokes a device and deletes its prekeys and its queued messages.
    /// Revoking a revoked device is [`StorageError::Revoked`].
    fn revoke_device(
        &self,
        device: &DeviceKey,
        admin: Option<&UserId>,
        now: u64,
    ) -> Result<Revocation>;

    // ----- remote wipe (spec/08, "Remote wipe") -----

    /// Records an administrator's instruction that the device erase its
    /// local store. Revokes nothing: the device must still authenticate to
    /// receive the instruction. From now on [`fetch`](Self::fetch) returns
    /// nothing for the device. An unknown device is
    /// [`StorageError::NotFound`], a revoked one [`StorageError::Revoked`],
    /// one with a wipe pending already [`StorageError::AlreadyExists`]
    /// (`"pending wipe"`).
    fn request_wipe(&self, device: &DeviceKey, admin: Option<&UserId>, now: u64) -> Result<Device>;

    /// Whether a wipe is pending for the device (false for an unknown or
    /// revoked one).
    fn wipe_pending(&self, device: &DeviceKey) -> Result<bool>;

    /// The active devices whose wipe was requested at or after `since_ms`
    /// and is still pending, with the request's time, oldest first. A
    /// running server polls this to push the instruction to online devices
    /// (the admin command line is another process); poll with some overlap.
    fn wipes_requested_since(&self, since_ms: u64) -> Result<Vec<(DeviceKey, u64)>>;

    /// The device acknowledged its wipe: in one transaction, clears the
    /// pending wipe, audits its completion and revokes the device as
    /// [`revoke_device`](Self::revoke_device) does. No pending wipe is
    /// [`StorageError::NotFound`] (`"pending wipe"`); a revoked device is
    /// [`StorageError::Revoked`].
    fn complete_wipe(&self, device: &DeviceKey, now: u64) -> Result<Revocation>;

    // ----- prekeys -----

    /// One upload, in one transaction: replaces the device's signed
    /// prekeys if `signed` is given (the encoded bundle part that is not
    /// one-time: signed X25519 prekey, KEM prekey, signatures) and adds
    /// `one_time` prekeys. Returns how many one-time prekeys were new.
    ///
    /// A one-time id the device already has stored is **ignored** (the
    /// first upload wins), so that a client may retry an upload whose
    /// answer it lost. The relay does not remember ids it handed out:
    /// clients must not reuse them. If the device would hold more than the
    /// configured maximum, [`StorageError::TooManyPreKeys`] and nothing of
    /// the upload is stored, signed prekeys included.
    fn upload_prekeys(
        &self,
        device: &DeviceKey,
        signed: Option<&[u8]>,
        one_time: &[OneTimePreKey],
        now: u64,
    ) -> Result<u64>;

    /// [`upload_prekeys`](Self::upload_prekeys) of signed prekeys alone.
    fn put_signed_prekeys(&self, device: &DeviceKey, encoded: &[u8], now: u64) -> Result<()> {
        self.upload_prekeys(device, Some(encoded), &[], now)
            .map(|_| ())
    }

    /// [`upload_prekeys`](Self::upload_prekeys) of one-time prekeys alone
    /// (the time only dates signed prekeys, so none is needed).
    fn add_one_time_prekeys(&self, device: &DeviceKey, keys: &[OneTimePreKey]) -> Result<u64> {
        self.upload_prekeys(device, None, keys, 0)
    }

    /// Hands out `device`'s bundle to `requester`: its identity, its signed
    /// prekeys, and one one-time prekey (the lowest id) if any is left,
    /// deleted in the same transaction so that each is handed out exactly
    /// once. Either device revoked is [`StorageError::Revoked`]; no signed
    /// prekeys is [`StorageError::NotFound`].
    fn claim_bundle(
        &self,
        requester: &DeviceKey,
        device: &DeviceKey,
        now: u64,
    ) -> Result<PreKeyBundle>;

    /// How many one-time prekeys the device has left.
    fn one_time_prekey_count(&self, device: &DeviceKey) -> Result<u64>;

    /// Whether the device has uploaded signed prekeys.
    fn has_signed_prekeys(&self, device: &DeviceKey) -> Result<bool>;

    // ----- messages -----

    /// Stores one message for each delivery and for each recipient of a
    /// shared delivery, durably, before returning. `addressed` are the
    /// users the send is addressed to (the sender's own user may be among
    /// them, or not). `devices` says which rule the recipients are held to:
    /// [`DeviceSet::Exact`] for a 1:1 send, [`DeviceSet::Subset`] for a
    /// **group send** (spec/13, 14), whose `shared` ciphertext, if any, is
    /// stored once however many devices it is queued for.
    ///
    /// In this order, in one transaction:
    ///
    /// 1. The sender must be enrolled ([`StorageError::NotFound`]) and
    ///    active ([`StorageError::Revoked`]).
    /// 2. Idempotent on `(sender, message_id)`: if that message was stored
    ///    before (and has not expired), nothing is stored and the original
    ///    receipt comes back with `duplicate: true`, whatever the rest of
    ///    the arguments.
    /// 3. [`StorageError::InvalidInput`]: no recipient at all (no delivery
    ///    and no shared delivery), `expires_at` not after `now`, or a
    ///    ciphertext (of a delivery or the shared one) above the configured
    ///    maximum; in a group send also a shared delivery without
    ///    recipients or with an empty ciphertext, or a device named twice
    ///    across the deliveries and the shared delivery.
    /// 4. Every addressed user must exist ([`StorageError::NotFound`]).
    /// 5. Let *current* be the active devices of every addressed user and
    ///    of the sender's own user, except the sender itself. In a 1:1
    ///    send the delivery recipients must be exactly the current devices:
    ///    no device missing, none extra (unknown, revoked, or of a user not
    ///    addressed), none twice. In a group send every recipient (of the
    ///    deliveries and of the shared delivery) must be a current device,
    ///    and current devices may be missing (the group's roster, not the
    ///    relay, decides who reads). Otherwise
    ///    [`StorageError::StaleDevices`] with the active devices of every
    ///    addressed user and of the sender's user, for the sender to
    ///    encrypt again.
    /// 6. Every recipient must have room in its queue
    ///    ([`StorageError::QueueFull`]).
    ///
    /// A refusal stores nothing for any recipient.
    #[allow(
        clippy::too_many_arguments,
        reason = "one argument per part of a send, as the protocol's Send has them"
    )]
    fn enqueue(
        &self,
        sender: &DeviceKey,
        message_id: MessageId,
        now: u64,
        expires_at: u64,
        addressed: &[UserId],
        deliveries: &[Delivery<'_>],
        devices: DeviceSet<'_>,
    ) -> Result<EnqueueReceipt>;

    /// Up to `limit` messages queued for `device` with a sequence number
    /// above `after_seq`, in enqueue order. Copies past their expiry are
    /// returned until [`expire`](Self::expire) deletes them. A device with
    /// a pending wipe gets none (read in the same snapshot as the queue).
    fn fetch(&self, device: &DeviceKey, after_seq: u64, limit: u32) -> Result<Vec<QueuedMessage>>;

    /// How many messages are queued for `device`.
    fn queue_len(&self, device: &DeviceKey) -> Result<u64>;

    /// Deletes `device`'s copies of each of `message_ids` (one per sender
    /// that used the id; message ids are random, so normally one), in one
    /// transaction with their audit entries. An id with no copy in this
    /// device's queue is reported in [`Acknowledged::unknown`].
    fn acknowledge(
        &self,
        device: &DeviceKey,
        message_ids: &[MessageId],
        now: u64,
    ) -> Result<Acknowledged>;

    /// [`acknowledge`](Self::acknowledge) of one id: no copy in this
    /// device's queue is [`StorageError::NotFound`].
    fn ack(
        &self,
        device: &DeviceKey,
        message_id: MessageId,
        now: u64,
    ) -> Result<Vec<AckedMessage>> {
        let done = self.acknowledge(device, &[message_id], now)?;
        if done.unknown.is_empty() {
            Ok(done.acked)
        } else {
            Err(StorageError::NotFound { what: "message" })
        }
    }

    /// Deletes up to `limit` copies whose expiry is at or before `now`, in
    /// expiry order, and returns them. Call again while it returns `limit`
    /// copies. Idempotency records of expired sends are dropped too.
    fn expire(&self, now: u64, limit: u32) -> Result<Vec<ExpiredMessage>>;

    // ----- role schedules (spec/15) -----

    /// Stores a role's signed schedule, replacing the one held if its
    /// version is higher; a version not higher is
    /// [`StorageError::AlreadyExists`] (`"role schedule version"`). The
    /// caller has verified the signature; the storage keeps bytes.
    fn publish_role_schedule(
        &self,
        record: &RoleScheduleRecord,
        admin: Option<&UserId>,
        now: u64,
    ) -> Result<()>;

    /// The latest schedule of a role, or [`StorageError::NotFound`].
    fn get_role_schedule(&self, role_id: &str) -> Result<RoleScheduleRecord>;

    /// Every role's latest schedule, ordered by role id.
    fn list_role_schedules(&self) -> Result<Vec<RoleScheduleRecord>>;

    // ----- audit -----

    /// Appends entries for events that change no stored state
    /// (authentication, delivery, refused operations). Their `sequence` and
    /// `timestamp_ms` are ignored and assigned by the storage. Returns the
    /// sequence numbers.
    fn append_audit(&self, entries: &[AuditEntry], now: u64) -> Result<Vec<u64>>;

    /// Signs and stores a tree head over the whole log. If the latest head
    /// already has the same size and timestamp, that head is returned
    /// instead (an export may not hold two identical heads).
    fn issue_tree_head(&self, key: &SigningKey, now: u64) -> Result<SignedTreeHead>;

    /// The log's size, root and next allowed timestamp.
    fn audit_state(&self) -> Result<AuditState>;

    /// An inclusion proof of entry `index` in the tree of `tree_size` entries.
    fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<InclusionProof>;

    /// A consistency proof from the tree of `first` entries to that of `second`.
    fn consistency_proof(&self, first: u64, second: u64) -> Result<ConsistencyProof>;

    /// Every signed tree head, in the order issued.
    fn tree_heads(&self) -> Result<Vec<SignedTreeHead>>;

    /// The whole log (entries and heads, from one consistent snapshot) in
    /// ward-audit's export form. For a log that does not fit in memory, use
    /// [`write_audit_export`](Self::write_audit_export).
    fn export_audit(&self, relay_key: &VerifyingKey) -> Result<Export>;

    /// Writes the export's bytes ([`Export::encode`]) to `out`, one entry at
    /// a time.
    fn write_audit_export(
        &self,
        relay_key: &VerifyingKey,
        out: &mut dyn std::io::Write,
    ) -> Result<()>;
}
