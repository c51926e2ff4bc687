//! A device that sends and receives end-to-end encrypted messages through
//! a relay, and remembers everything in its sealed [`Store`]: its keys,
//! its sessions, its contacts' identities, what it received and what it
//! has yet to send.
//!
//! The order of saves follows spec/06 SES-5 and spec/11 STO-23: a session
//! is saved after each encryption before the ciphertext goes out; after a
//! decryption, the session, the consumed one-time prekey, the sender's
//! identity and the message are committed in one transaction before the
//! relay is told (`Ack`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rand_core::Rng;
use tokio::sync::mpsc;
use ward_core::{
    DeviceIdentity, IdentityKeyPair, MessageKind, OneTimePreKeyPair, Party, PreKeyBundle,
    PreKeyMessage, SafetyNumber, Session, SignedPreKeyPair, SignedPreKeys,
};
use ward_proto::relay_v1::{self as wire, request::Body as Req, response::Body as Resp};
use zeroize::Zeroizing;

use crate::content::{self, Content, ContentError, Message, Receipt, ReceiptKind};
use crate::store::{DeviceRecord, IdentityStatus, RelayInfo, StorageKey, Store, StoreError};
use crate::{ClientError, Deliveries, RelayConnection};

type Result<T, E = ClientError> = core::result::Result<T, E>;

/// How often a send is rebuilt after the relay reports a stale device list.
const STALE_RETRIES: usize = 3;
/// Ids per `Ack` request (spec/08, "Limits").
const MAX_ACK_IDS: usize = 1000;
/// Pushes buffered between the delivery stream and [`Messenger::next_event`].
const PUSH_BUFFER: usize = 16;
/// How often [`Messenger::next_event`] checks whether the signed prekey is
/// due for rotation.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);

/// Device keys by user, as a send must cover them, with the identities the
/// relay listed.
type DeviceLists = Vec<(String, Vec<DeviceIdentity>)>;

/// Tunables of a [`Messenger`]. Start from `MessengerOptions::default()`.
#[derive(Clone, Debug)]
pub struct MessengerOptions {
    /// The name sent as SNI to the relay (the certificate is pinned by
    /// fingerprint; the name is not checked). Default `"localhost"`.
    pub server_name: String,
    /// Send a `DELIVERED` receipt for every message stored from another
    /// user. Default `true`.
    pub send_delivery_receipts: bool,
    /// Lock after this long without a call that counts as activity (see
    /// [`Messenger::touch`]); `None` never locks by itself. Default 5
    /// minutes (HIPAA automatic logoff, spec/10).
    pub auto_lock_after: Option<Duration>,
    /// Generate a new signed prekey set when the newest is this old.
    /// Default 7 days (spec/02, "Rotation and deletion").
    pub signed_prekey_rotation: Duration,
    /// Keep a superseded signed prekey set this long after its successor
    /// was made, then delete it. Default 30 days (the relay's longest
    /// message lifetime).
    pub signed_prekey_grace: Duration,
    /// One-time prekeys generated per batch. Default 50.
    pub one_time_batch: u32,
    /// The longest total wait for `RATE_LIMITED` refusals of one request
    /// before the refusal is returned. Default 5 seconds.
    pub max_rate_limit_wait: Duration,
    /// The time-to-live asked for sends, in ms; 0 is the relay's default.
    pub ttl_ms: u64,
}

impl Default for MessengerOptions {
    fn default() -> Self {
        Self {
            server_name: "localhost".to_owned(),
            send_delivery_receipts: true,
            auto_lock_after: Some(Duration::from_secs(300)),
            signed_prekey_rotation: Duration::from_secs(7 * 24 * 3600),
            signed_prekey_grace: Duration::from_secs(30 * 24 * 3600),
            one_time_batch: 50,
            max_rate_limit_wait: Duration::from_secs(5),
            ttl_ms: 0,
        }
    }
}

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

/// What [`Messenger::next_event`] reports.
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
    /// now on: every fallible method fails with [`ClientError::NotEnrolled`]
    /// (as [`Messenger::open`] on this store does). The app deletes the
    /// storage key from the platform's key store and drops the messenger.
    Wiped,
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
            Self::Unreadable { error, .. } => f
                .debug_struct("Unreadable")
                .field("error", error)
                .finish_non_exhaustive(),
        }
    }
}

/// A delivery receipt in the outbox, on its way to the relay.
struct DueReceipt {
    message_id: [u8; 16],
    to_user: String,
    plaintext: Zeroizing<Vec<u8>>,
}

/// A delivery decrypted and committed to the store, not yet acknowledged.
struct Stored {
    sender_user: String,
    sender_device: [u8; 32],
    message_id: [u8; 16],
    received_at_ms: u64,
    plaintext: Zeroizing<Vec<u8>>,
    /// For a new session: the sender's identity status, and whether other
    /// devices of the sender's user were recorded before.
    identity_status: Option<(IdentityStatus, bool)>,
}

/// Aborts the task reading the delivery stream when dropped.
struct Reader(tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads pushes on a task of its own, so that waiting for them can be
/// interrupted (by the auto-lock timer) without losing half-read frames.
fn spawn_reader(
    mut deliveries: Deliveries,
) -> (mpsc::Receiver<Result<Option<wire::Push>>>, Reader) {
    let (tx, rx) = mpsc::channel(PUSH_BUFFER);
    let task = tokio::spawn(async move {
        loop {
            let push = deliveries.next().await;
            let end = !matches!(push, Ok(Some(_)));
            if tx.send(push).await.is_err() || end {
                break;
            }
        }
    });
    (rx, Reader(task))
}

type Push = Result<Option<wire::Push>>;

/// The messenger's store, until a remote wipe erased it.
struct StoreSlot(Option<Store>);

impl StoreSlot {
    /// The store, or [`ClientError::NotEnrolled`] once a remote wipe erased it.
    fn get(&self) -> Result<&Store> {
        self.0.as_ref().ok_or(ClientError::NotEnrolled)
    }

    fn get_mut(&mut self) -> Result<&mut Store> {
        self.0.as_mut().ok_or(ClientError::NotEnrolled)
    }
}

/// A persistent device: a sealed [`Store`] and a connection to its relay.
///
/// Create one with [`Messenger::enroll`], reopen it with
/// [`Messenger::open`]; [`Messenger::send`] and [`Messenger::next_event`]
/// do the rest. While locked ([`Messenger::lock`], or after
/// [`MessengerOptions::auto_lock_after`] of inactivity) every operation but
/// [`Messenger::unlock`], [`Messenger::close`] and [`Messenger::wipe`]
/// fails with [`ClientError::Locked`].
///
/// Its futures are `Send`, so they can run as tasks of a multi-threaded
/// runtime; a messenger is used by one task at a time (`&mut self`).
pub struct Messenger {
    store: StoreSlot,
    user: String,
    public: DeviceIdentity,
    /// `None` while locked.
    identity: Option<IdentityKeyPair>,
    connection: RelayConnection,
    pushes: mpsc::Receiver<Push>,
    /// Pushes taken off `pushes` while locked, looking for a wipe.
    held: VecDeque<Push>,
    _reader: Reader,
    events: VecDeque<Event>,
    options: MessengerOptions,
    last_activity: Instant,
    last_maintenance: Instant,
    /// Set while acknowledging deliveries whose events are queued already.
    /// Still set when a call starts, it means the last call's future was
    /// dropped on the way (a cancelled wait): the store's unacknowledged
    /// messages are acknowledged before anything else is waited for.
    ack_interrupted: bool,
    /// Delivery receipts queued in the outbox and not yet handed to the
    /// relay, with their recipient and encoding: sent before the next wait
    /// if a dropped call left them here.
    receipts_due: VecDeque<DueReceipt>,
    /// Test hook: see `Messenger::simulate_crash_before_ack`.
    #[cfg(feature = "test-hooks")]
    crash_before_ack: bool,
    /// Test hook: see `Messenger::stall_before_next_ack`.
    #[cfg(feature = "test-hooks")]
    stall_before_ack: bool,
}

impl core::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Messenger")
            .field("locked", &self.identity.is_none())
            .field("pending_events", &self.events.len())
            .finish_non_exhaustive()
    }
}

fn now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

fn now_ms() -> u64 {
    u64::try_from(now().as_millis()).unwrap_or(u64::MAX)
}

fn key32(bytes: &[u8]) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| ClientError::UnexpectedResponse)
}

fn id16(bytes: &[u8]) -> Result<[u8; 16]> {
    bytes
        .try_into()
        .map_err(|_| ClientError::UnexpectedResponse)
}

fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    ward_core::os_rng().fill_bytes(&mut id);
    id
}

/// Whether the relay refused the message itself (an unknown recipient, a
/// malformed or oversized message), so that sending it again cannot
/// succeed; other failures (the connection, a rate limit, a full queue, a
/// device list that kept changing) may pass, and the message stays in the
/// outbox.
fn is_final(error: &ClientError) -> bool {
    use wire::ErrorCode as E;
    matches!(
        error,
        ClientError::Refused {
            code: E::NotFound
                | E::InvalidArgument
                | E::MessageTooLarge
                | E::MalformedFrame
                | E::FrameTooLarge
                | E::UnknownRequest,
            ..
        }
    )
}

/// Distinct user ids, in the order given.
fn distinct(users: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(users.len());
    for user in users {
        if !out.iter().any(|u| u == user) {
            out.push((*user).to_owned());
        }
    }
    out
}

impl Messenger {
    /// Creates the store at `store_path` (sealed under `key`), a device
    /// identity, enrolls it at the relay with `token` (pinning the relay's
    /// certificate `fingerprint`), saves it, and publishes its prekeys
    /// (stored before they are uploaded).
    pub async fn enroll(
        store_path: impl AsRef<Path>,
        key: &StorageKey,
        relay: SocketAddr,
        fingerprint: [u8; 32],
        token: &str,
        options: MessengerOptions,
    ) -> Result<Self> {
        let mut store = Store::open(store_path, key)?;
        if store.device()?.is_some() {
            return Err(ClientError::AlreadyEnrolled);
        }
        let identity = IdentityKeyPair::generate(&mut ward_core::os_rng());
        let connection = RelayConnection::connect(relay, &options.server_name, fingerprint).await?;
        let auth = connection.enroll(token, &identity).await?;
        let record = DeviceRecord {
            user_id: auth.user_id,
            relay: RelayInfo {
                address: relay.to_string(),
                fingerprint,
            },
            identity,
        };
        store.save_device(&record)?;
        let DeviceRecord {
            user_id, identity, ..
        } = record;
        let mut messenger = Self::start(store, user_id, identity, connection, options).await?;
        messenger.maintain_prekeys(true, true).await?;
        Ok(messenger)
    }

    /// Reopens the device in the store at `store_path`: checks `key`
    /// (a wrong one is `Store(StoreError::WrongKey)`), reconnects and
    /// authenticates, acknowledges again the messages stored but not
    /// acknowledged (and reports them through [`Messenger::next_event`]),
    /// supplies prekeys, and resends the outbox's pending messages with
    /// their ids.
    pub async fn open(
        store_path: impl AsRef<Path>,
        key: &StorageKey,
        options: MessengerOptions,
    ) -> Result<Self> {
        let path = store_path.as_ref();
        if !path.exists() {
            return Err(ClientError::NotEnrolled);
        }
        let store = Store::open(path, key)?;
        let DeviceRecord {
            user_id,
            relay,
            identity,
        } = store.device()?.ok_or(ClientError::NotEnrolled)?;
        let addr: SocketAddr = relay
            .address
            .parse()
            .map_err(|_| ClientError::Connect("the stored relay address is invalid".to_owned()))?;
        let connection =
            RelayConnection::connect(addr, &options.server_name, relay.fingerprint).await?;
        let auth = connection.authenticate(&identity).await?;
        let mut messenger = Self::start(store, user_id, identity, connection, options).await?;
        messenger.resume_unacknowledged().await?;
        messenger
            .maintain_prekeys(auth.signed_prekeys_missing, auth.prekeys_low)
            .await?;
        // The device is usable whatever became of the resends: a failure
        // leaves the message pending, and the app learnt of the first
        // failure from the `send` that queued it.
        if let Err(e) = messenger.flush_outbox().await {
            tracing::warn!(error = %e, "resending the outbox after opening failed");
        }
        Ok(messenger)
    }

    async fn start(
        store: Store,
        user: String,
        identity: IdentityKeyPair,
        connection: RelayConnection,
        options: MessengerOptions,
    ) -> Result<Self> {
        let (pushes, reader) = spawn_reader(connection.deliveries().await?);
        Ok(Self {
            store: StoreSlot(Some(store)),
            user,
            public: identity.public().clone(),
            identity: Some(identity),
            connection,
            pushes,
            held: VecDeque::new(),
            _reader: reader,
            events: VecDeque::new(),
            options,
            last_activity: Instant::now(),
            last_maintenance: Instant::now(),
            ack_interrupted: false,
            receipts_due: VecDeque::new(),
            #[cfg(feature = "test-hooks")]
            crash_before_ack: false,
            #[cfg(feature = "test-hooks")]
            stall_before_ack: false,
        })
    }

    /// The user this device belongs to.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// This device's public identity.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.public
    }

    /// This device's key.
    pub fn device_key(&self) -> &[u8; 32] {
        self.public.signing_key()
    }

    /// The relay connection.
    pub fn connection(&self) -> &RelayConnection {
        &self.connection
    }

    /// The device's store (received messages, outbox), for reading. Its
    /// record methods fail with [`StoreError::Locked`] while locked; after
    /// [`Event::Wiped`] there is no store: [`ClientError::NotEnrolled`].
    pub fn store(&self) -> Result<&Store> {
        self.store.get()
    }

    /// Whether a remote wipe erased this device's store ([`Event::Wiped`]).
    pub fn is_wiped(&self) -> bool {
        self.store.0.is_none()
    }

    /// Whether the messenger is locked.
    pub fn is_locked(&self) -> bool {
        self.identity.is_none()
    }

    // ---- Locking ----------------------------------------------------------

    /// Drops the in-memory secrets: the device identity and the store's
    /// keys (zeroized). The connection stays open; pushes wait until
    /// [`Messenger::unlock`]. Events already decoded but not yet returned
    /// by [`Messenger::next_event`] stay queued.
    pub fn lock(&mut self) {
        self.identity = None;
        if let Some(store) = &mut self.store.0 {
            store.lock();
        }
    }

    /// Unlocks with the storage key (a wrong one is
    /// `Store(StoreError::WrongKey)`, and the messenger stays locked).
    pub fn unlock(&mut self, key: &StorageKey) -> Result<()> {
        if self.is_wiped() {
            return Err(ClientError::NotEnrolled);
        }
        self.store.get_mut()?.unlock(key)?;
        match self.store.get_mut()?.device() {
            Ok(Some(device)) => {
                self.identity = Some(device.identity);
                self.last_activity = Instant::now();
                Ok(())
            }
            Ok(None) => {
                self.store.get_mut()?.lock();
                Err(ClientError::NotEnrolled)
            }
            Err(e) => {
                self.store.get_mut()?.lock();
                Err(e.into())
            }
        }
    }

    /// Records user activity: resets the auto-lock timer. [`Messenger::send`],
    /// [`Messenger::send_receipt`], [`Messenger::safety_number`] and
    /// [`Messenger::unlock`] count as activity; [`Messenger::next_event`],
    /// which an app awaits in the background, does not.
    pub fn touch(&mut self) -> Result<()> {
        self.check_idle()?;
        self.last_activity = Instant::now();
        Ok(())
    }

    /// Locks if idle for longer than allowed; `Locked` if locked;
    /// `NotEnrolled` once wiped.
    fn check_idle(&mut self) -> Result<()> {
        if self.is_wiped() {
            return Err(ClientError::NotEnrolled);
        }
        let idle_limit = self.options.auto_lock_after;
        if idle_limit.is_some_and(|limit| self.last_activity.elapsed() >= limit) {
            self.lock();
        }
        if self.identity.is_none() {
            return Err(ClientError::Locked);
        }
        Ok(())
    }

    fn identity_pair(&self) -> Result<&IdentityKeyPair> {
        self.identity.as_ref().ok_or(ClientError::Locked)
    }

    // ---- Relay requests ---------------------------------------------------

    /// One request; `RATE_LIMITED` refusals are waited out (`retry_after_ms`,
    /// spec/08 RLY-32) up to [`MessengerOptions::max_rate_limit_wait`] in all.
    async fn request(&mut self, body: Req) -> Result<Resp> {
        let mut waited = Duration::ZERO;
        loop {
            match self.connection.request(body.clone()).await {
                Err(ClientError::Refused {
                    code: wire::ErrorCode::RateLimited,
                    message,
                    current_devices,
                    retry_after_ms,
                }) => {
                    let wait = Duration::from_millis(retry_after_ms.max(1));
                    if waited + wait > self.options.max_rate_limit_wait {
                        return Err(ClientError::Refused {
                            code: wire::ErrorCode::RateLimited,
                            message,
                            current_devices,
                            retry_after_ms,
                        });
                    }
                    waited += wait;
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn ack(&mut self, ids: &[([u8; 32], [u8; 16])]) -> Result<()> {
        for chunk in ids.chunks(MAX_ACK_IDS) {
            let message_ids = chunk.iter().map(|(_, id)| id.to_vec()).collect();
            match self.request(Req::Ack(wire::Ack { message_ids })).await? {
                Resp::Acked(_) => {}
                _ => return Err(ClientError::UnexpectedResponse),
            }
            for (device, id) in chunk {
                self.store.get_mut()?.mark_acknowledged(device, id)?;
            }
        }
        Ok(())
    }

    // ---- Prekeys ----------------------------------------------------------

    /// Rotates the signed prekey set when due, deletes superseded sets past
    /// their grace period, and tops up one-time prekeys when `low` — every
    /// new secret stored before it is uploaded (STO-23).
    async fn maintain_prekeys(&mut self, upload_signed: bool, low: bool) -> Result<()> {
        self.last_maintenance = Instant::now();
        let now_secs = now().as_secs();
        let rotation = self.options.signed_prekey_rotation.as_secs();
        let grace = self.options.signed_prekey_grace.as_secs();
        let held = self.store.get_mut()?.signed_prekeys()?;
        let mut upload_signed = upload_signed;
        let current = match held.first() {
            Some(newest) if newest.created_at.saturating_add(rotation) > now_secs => newest.id,
            newest => {
                let id = newest.map_or(1, |n| n.id.wrapping_add(1).max(1));
                let pair = SignedPreKeyPair::generate(
                    &mut ward_core::os_rng(),
                    self.identity_pair()?,
                    id,
                    now_secs,
                );
                self.store.get_mut()?.save_signed_prekey(&pair)?;
                upload_signed = true;
                id
            }
        };
        // A set is superseded when its successor was made; keep it `grace`
        // longer for pre-key messages still in flight (spec/02).
        let superseded_since: Vec<(u32, u64)> = held
            .windows(2)
            .map(|w| (w[1].id, w[0].created_at))
            .chain(
                held.first()
                    .filter(|n| n.id != current)
                    .map(|n| (n.id, now_secs)),
            )
            .collect();
        for (id, since) in superseded_since {
            if since.saturating_add(grace) <= now_secs {
                self.store.get_mut()?.delete_signed_prekey(id)?;
            }
        }
        let signed_prekeys = if upload_signed {
            self.store
                .get()?
                .signed_prekey(current, self.identity_pair()?)?
                .ok_or(ClientError::Store(StoreError::Corrupt {
                    table: "signed_prekeys",
                    detail: "current set missing",
                }))?
                .public()
                .encode()
        } else {
            Vec::new()
        };
        let mut one_time_prekeys = Vec::new();
        if low {
            let first = self.store.get_mut()?.next_one_time_id()?.unwrap_or(1);
            let count = self.options.one_time_batch;
            let batch = OneTimePreKeyPair::generate_batch(&mut ward_core::os_rng(), first, count);
            self.store
                .get_mut()?
                .add_one_time_prekeys(&batch, first.wrapping_add(count))?;
            one_time_prekeys = batch
                .iter()
                .map(|k| wire::OneTimePreKey {
                    id: k.id(),
                    key: k.public().encode(),
                })
                .collect();
        }
        if signed_prekeys.is_empty() && one_time_prekeys.is_empty() {
            return Ok(());
        }
        let upload = wire::UploadPreKeys {
            signed_prekeys,
            one_time_prekeys,
        };
        match self.request(Req::UploadPrekeys(upload)).await? {
            Resp::PrekeysStored(_) => Ok(()),
            _ => Err(ClientError::UnexpectedResponse),
        }
    }

    // ---- Sessions and identities -------------------------------------------

    /// Queues the event an identity record calls for (STO-23, SES-13):
    /// a changed identity, or a new device of a user of whom other devices
    /// were recorded before (`had_others`; at first contact every device is
    /// new, and none is reported).
    fn note_identity(
        &mut self,
        user: &str,
        device_key: [u8; 32],
        status: &IdentityStatus,
        had_others: bool,
    ) {
        match status {
            IdentityStatus::Unchanged => {}
            IdentityStatus::Changed { .. } => self.events.push_back(Event::IdentityChanged {
                user: user.to_owned(),
                device_key,
            }),
            IdentityStatus::New if had_others => self.events.push_back(Event::NewDevice {
                user: user.to_owned(),
                device_key,
            }),
            IdentityStatus::New => {}
        }
    }

    /// Opens sessions with those of `user`'s listed devices that have none.
    /// Each bundle is verified (02, 03) and must carry exactly the identity
    /// the relay listed for the device (RLY-20).
    async fn open_sessions(&mut self, user: &str, devices: &[DeviceIdentity]) -> Result<()> {
        let mut missing = Vec::new();
        for device in devices {
            if self
                .store
                .get_mut()?
                .session(device.signing_key())?
                .is_none()
            {
                missing.push(device.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let had_others = !self.store.get_mut()?.known_identities(user)?.is_empty();
        let Resp::Bundles(bundles) = self
            .request(Req::ClaimBundles(wire::ClaimBundles {
                user_id: user.to_owned(),
                device_keys: missing.iter().map(|d| d.signing_key().to_vec()).collect(),
            }))
            .await?
        else {
            return Err(ClientError::UnexpectedResponse);
        };
        for b in bundles.bundles {
            let identity = DeviceIdentity::from_bytes(&b.identity)?;
            let position = missing
                .iter()
                .position(|m| m.ct_eq(&identity))
                .ok_or(ClientError::BundleMismatch)?;
            missing.swap_remove(position);
            let signed = SignedPreKeys::decode(&b.signed_prekeys, &identity)?;
            let one_time = b
                .one_time_prekey
                .map(|k| ward_core::OneTimePreKey::decode(&k.key))
                .transpose()?;
            let key = *identity.signing_key();
            let identity_bytes = identity.to_bytes();
            let bundle = PreKeyBundle::new(identity, signed, one_time)?;
            let session =
                Session::initiate(&mut ward_core::os_rng(), self.identity_pair()?, &bundle)?;
            let status = self.store.get_mut()?.atomically(|s| {
                let status = s.record_identity(user, &key, &identity_bytes)?;
                s.save_session(&session)?;
                Ok::<_, StoreError>(status)
            })?;
            self.note_identity(user, key, &status, had_others);
        }
        Ok(())
    }

    /// The devices a send to `users` must reach, by user: every active
    /// device of theirs and this user's other devices.
    async fn recipients(&mut self, users: &[String]) -> Result<DeviceLists> {
        let mut user_ids = users.to_vec();
        if !user_ids.contains(&self.user) {
            user_ids.push(self.user.clone());
        }
        let Resp::Devices(list) = self
            .request(Req::GetDevices(wire::GetDevices { user_ids }))
            .await?
        else {
            return Err(ClientError::UnexpectedResponse);
        };
        self.device_lists(&list.users)
    }

    fn device_lists(&self, users: &[wire::UserDevices]) -> Result<DeviceLists> {
        let own = self.public.signing_key();
        users
            .iter()
            .map(|u| {
                let mut devices = Vec::with_capacity(u.devices.len());
                for d in &u.devices {
                    let identity = DeviceIdentity::from_bytes(&d.identity)?;
                    if identity.signing_key() != own {
                        devices.push(identity);
                    }
                }
                Ok((u.user_id.clone(), devices))
            })
            .collect()
    }

    /// Encrypts `plaintext` for every listed device on its current session,
    /// saving each session before anything is sent (SES-5), all in one
    /// transaction.
    fn encrypt_for(
        &mut self,
        lists: &DeviceLists,
        plaintext: &[u8],
    ) -> Result<Vec<wire::Envelope>> {
        self.identity_pair()?;
        self.store.get_mut()?.atomically(|store| {
            let mut rng = ward_core::os_rng();
            let mut envelopes = Vec::new();
            for (_, devices) in lists {
                for device in devices {
                    let mut session = store
                        .session(device.signing_key())?
                        .ok_or(ClientError::NoBundle)?;
                    if !session.remote_identity().ct_eq(device) {
                        // The relay lists another identity under a key we
                        // hold a session with (RLY-20, SES-13).
                        return Err(ClientError::BundleMismatch);
                    }
                    let ciphertext = session.encrypt(&mut rng, plaintext)?;
                    store.save_session(&session)?;
                    envelopes.push(wire::Envelope {
                        device_key: device.signing_key().to_vec(),
                        ciphertext,
                    });
                }
            }
            Ok(envelopes)
        })
    }

    /// Sends `plaintext` with `message_id` to `users` and this user's other
    /// devices: sessions opened as needed, stale device lists refreshed
    /// and the send rebuilt with the same id (RLY-25).
    async fn deliver(
        &mut self,
        message_id: &[u8; 16],
        users: &[String],
        plaintext: &[u8],
    ) -> Result<()> {
        let mut lists = self.recipients(users).await?;
        let mut attempt = 0;
        loop {
            for (user, devices) in &lists {
                self.open_sessions(user, devices).await?;
            }
            let envelopes = self.encrypt_for(&lists, plaintext)?;
            let sent = self
                .request(Req::Send(wire::Send {
                    message_id: message_id.to_vec(),
                    user_ids: users.iter().filter(|u| **u != self.user).cloned().collect(),
                    envelopes,
                    ttl_ms: self.options.ttl_ms,
                }))
                .await;
            match sent {
                Ok(Resp::Sent(_)) => return Ok(()),
                Ok(_) => return Err(ClientError::UnexpectedResponse),
                Err(ClientError::Refused {
                    code: wire::ErrorCode::StaleDevices,
                    current_devices,
                    ..
                }) if attempt < STALE_RETRIES => {
                    attempt += 1;
                    lists = self.device_lists(&current_devices)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues `content` in the outbox and sends it; on success it is marked
    /// sent. On failure it stays pending, to be resent with its id by
    /// [`Messenger::flush_outbox`] (and on the next open).
    async fn send_content(&mut self, users: &[&str], content: &Content) -> Result<[u8; 16]> {
        let plaintext = content::encode(content)?;
        self.send_plaintext(users, &plaintext).await
    }

    /// [`Messenger::send_content`] once the content is encoded.
    async fn send_plaintext(&mut self, users: &[&str], plaintext: &[u8]) -> Result<[u8; 16]> {
        let message_id = random_id();
        let users = distinct(users);
        let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
        self.store
            .get_mut()?
            .queue_outgoing(&message_id, &user_refs, plaintext)?;
        self.deliver_queued(&message_id, &users, plaintext).await?;
        Ok(message_id)
    }

    /// Hands a message of the outbox to the relay: marked sent when the
    /// relay took it, dropped from the outbox when refused for good (see
    /// `is_final`), left pending otherwise.
    async fn deliver_queued(
        &mut self,
        message_id: &[u8; 16],
        users: &[String],
        plaintext: &[u8],
    ) -> Result<()> {
        match self.deliver(message_id, users, plaintext).await {
            Ok(()) => {
                self.store.get_mut()?.mark_sent(message_id)?;
                Ok(())
            }
            Err(e) => {
                if is_final(&e) {
                    self.store.get_mut()?.delete_outgoing(message_id)?;
                }
                Err(e)
            }
        }
    }

    /// Sends `message` to every current device of `users` and to this
    /// user's other devices (which report it with
    /// [`IncomingMessage::from_own_device`]). A `sent_at_ms` of 0 is set to
    /// now. The message is kept in the outbox until the relay accepted it.
    /// Returns its id.
    pub async fn send(&mut self, users: &[&str], mut message: Message) -> Result<[u8; 16]> {
        self.touch()?;
        if message.sent_at_ms == 0 {
            message.sent_at_ms = now_ms();
        }
        self.send_content(users, &Content::Message(message)).await
    }

    /// Sends a receipt for `message_ids` to `to_user` (and this user's
    /// other devices). `DELIVERED` receipts are sent automatically unless
    /// [`MessengerOptions::send_delivery_receipts`] is off; `READ` is the
    /// app's call.
    pub async fn send_receipt(
        &mut self,
        to_user: &str,
        kind: ReceiptKind,
        message_ids: &[[u8; 16]],
    ) -> Result<[u8; 16]> {
        self.touch()?;
        let receipt = Content::Receipt(Receipt {
            kind,
            message_ids: message_ids.to_vec(),
        });
        self.send_content(&[to_user], &receipt).await
    }

    /// Resends the outbox's pending messages with their ids (RLY-25): the
    /// relay stores each at most once. A message that fails stays pending,
    /// unless the relay refused the message itself (see `is_final`): that
    /// one is dropped from the outbox. The first failure is returned after
    /// trying all.
    pub async fn flush_outbox(&mut self) -> Result<()> {
        self.check_idle()?;
        let mut first_error = None;
        for pending in self.store.get_mut()?.pending_outgoing()? {
            let sent = self
                .deliver_queued(&pending.message_id, &pending.recipients, &pending.body)
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "resending a pending message failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    // ---- Receiving --------------------------------------------------------

    /// Waits for the next event: a message, a receipt, an identity change.
    /// Deliveries are decrypted, stored with their session in one
    /// transaction, then acknowledged; a redelivered message is
    /// acknowledged again and not reported twice (RLY-28). Prekey notices
    /// are handled on the way.
    ///
    /// A delivery that does not decrypt is not acknowledged: its error is
    /// returned and the relay keeps it. With auto-lock on, the wait ends
    /// with [`ClientError::Locked`] when the idle time runs out.
    ///
    /// Cancel-safe: once a message is stored its event is queued, so a
    /// call dropped while acknowledging it (or sending its delivery
    /// receipt) loses nothing; the next call returns the event and
    /// finishes the acknowledgement and the receipt.
    ///
    /// A wipe instruction from the relay (spec/08, "Remote wipe") erases
    /// the store, then tells the relay (`WipeDone`), and returns
    /// [`Event::Wiped`]; a locked messenger still obeys one that has
    /// arrived when it is called.
    pub async fn next_event(&mut self) -> Result<Event> {
        loop {
            if let Err(e) = self.check_idle() {
                if matches!(e, ClientError::Locked) && self.wipe_arrived() {
                    return self.remote_wipe().await;
                }
                return Err(e);
            }
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            if self.ack_interrupted {
                self.ack_unacknowledged().await?;
            }
            self.send_due_receipts().await;
            if self.last_maintenance.elapsed() >= MAINTENANCE_INTERVAL {
                self.maintain_prekeys(false, false).await?;
            }
            let push = match (self.held.pop_front(), self.options.auto_lock_after) {
                (Some(held), _) => Some(held),
                (None, Some(limit)) => {
                    let deadline = tokio::time::Instant::from_std(self.last_activity + limit);
                    tokio::select! {
                        push = self.pushes.recv() => push,
                        () = tokio::time::sleep_until(deadline) => continue,
                    }
                }
                (None, None) => self.pushes.recv().await,
            };
            let Some(push) = push.transpose()?.flatten() else {
                return Err(ClientError::Stream(
                    "the relay ended the delivery stream".to_owned(),
                ));
            };
            match push.body {
                Some(wire::push::Body::Delivery(d)) => self.handle_delivery(&d).await?,
                Some(wire::push::Body::PrekeysLow(_)) => self.maintain_prekeys(false, true).await?,
                Some(wire::push::Body::Wipe(_)) => return self.remote_wipe().await,
                None => {}
            }
        }
    }

    /// Takes the pushes waiting on the delivery stream, without waiting,
    /// and keeps them for later; true if a wipe instruction is among them.
    fn wipe_arrived(&mut self) -> bool {
        while let Ok(push) = self.pushes.try_recv() {
            self.held.push_back(push);
        }
        self.held.iter().any(|push| {
            matches!(
                push,
                Ok(Some(wire::Push {
                    body: Some(wire::push::Body::Wipe(_))
                }))
            )
        })
    }

    /// Obeys a wipe instruction: drops the secrets and undelivered events,
    /// erases the store through [`Store::wipe`], and only then tells the
    /// relay (`WipeDone`), which revokes the device. If erasing fails the
    /// error is returned, the relay is not told (the wipe stays pending
    /// there), and the messenger is unusable all the same.
    async fn remote_wipe(&mut self) -> Result<Event> {
        self.identity = None;
        self.events.clear();
        self.held.clear();
        let store = self.store.0.take().ok_or(ClientError::NotEnrolled)?;
        store.wipe()?;
        // The local erasure is what counts: a lost answer changes nothing
        // here, and the relay keeps the instruction until it hears of it.
        let _ = self.request(Req::WipeDone(wire::WipeDone {})).await;
        Ok(Event::Wiped)
    }

    async fn handle_delivery(&mut self, d: &wire::Delivery) -> Result<()> {
        let sender = key32(&d.sender_device)?;
        let message_id = id16(&d.message_id)?;
        if self.store.get_mut()?.is_received(&sender, &message_id)? {
            // Stored before: the relay did not hear our Ack (RLY-28).
            return self.ack(&[(sender, message_id)]).await;
        }
        let stored = self.decrypt_and_store(d, sender, message_id)?;
        #[cfg(feature = "test-hooks")]
        if self.crash_before_ack {
            return Err(ClientError::Stream("simulated crash before ack".to_owned()));
        }
        // Stored: the events are queued before any await, so that they
        // survive this future being dropped (see `ack_interrupted`).
        if let Some((status, had_others)) = &stored.identity_status {
            self.note_identity(&stored.sender_user, sender, status, *had_others);
        }
        self.report(
            &stored.sender_user,
            stored.sender_device,
            stored.message_id,
            stored.received_at_ms,
            &stored.plaintext,
        );
        self.ack_interrupted = true;
        #[cfg(feature = "test-hooks")]
        if core::mem::take(&mut self.stall_before_ack) {
            core::future::pending::<()>().await;
        }
        self.ack(&[(sender, message_id)]).await?;
        self.ack_interrupted = false;
        self.send_due_receipts().await;
        Ok(())
    }

    /// Acknowledges every stored message the relay was not told of.
    async fn ack_unacknowledged(&mut self) -> Result<()> {
        let ids: Vec<_> = self
            .store
            .get()?
            .unacknowledged()?
            .into_iter()
            .map(|m| (m.sender_device, m.message_id))
            .collect();
        self.ack(&ids).await?;
        self.ack_interrupted = false;
        Ok(())
    }

    /// Hands the due delivery receipts to the relay, oldest first. One that
    /// fails is left to the outbox (`deliver_queued`: for
    /// [`Messenger::flush_outbox`] and the next open); one whose sending is
    /// dropped half-way stays due, and is resent with its id (RLY-25).
    async fn send_due_receipts(&mut self) {
        while let Some(due) = self.receipts_due.front() {
            let (id, to_user, plaintext) =
                (due.message_id, due.to_user.clone(), due.plaintext.clone());
            let sent = self.deliver_queued(&id, &[to_user], &plaintext).await;
            self.receipts_due.pop_front();
            if let Err(e) = sent {
                tracing::warn!(error = %e, "a delivery receipt was not sent");
            }
        }
    }

    /// Decrypts a delivery and commits the session (and for a new session
    /// the one-time prekey's removal and the sender's identity) with the
    /// message, in one transaction (SES-5, SES-7, STO-23).
    fn decrypt_and_store(
        &mut self,
        d: &wire::Delivery,
        sender: [u8; 32],
        message_id: [u8; 16],
    ) -> Result<Stored> {
        let identity = self.identity.as_ref().ok_or(ClientError::Locked)?;
        let received_at_ms = now_ms();
        let user = d.sender_user.as_str();
        let (plaintext, identity_status) = match MessageKind::of(&d.ciphertext)? {
            MessageKind::PreKey => {
                let message = PreKeyMessage::decode(&d.ciphertext)?;
                if message.identity().signing_key() != &sender {
                    return Err(ClientError::Protocol(ward_core::Error::WrongSession));
                }
                match self
                    .store
                    .get_mut()?
                    .session_by_base_key(&sender, message.base_key())?
                {
                    Some(mut session) => {
                        let plaintext = Zeroizing::new(session.decrypt(&d.ciphertext)?);
                        self.store.get_mut()?.atomically(|s| {
                            s.save_session(&session)?;
                            s.store_incoming(
                                user,
                                &sender,
                                &message_id,
                                received_at_ms,
                                &plaintext,
                            )?;
                            Ok::<_, StoreError>(())
                        })?;
                        (plaintext, None)
                    }
                    None => {
                        let signed = self
                            .store
                            .get_mut()?
                            .signed_prekey(message.signed_prekey_id(), identity)?
                            .ok_or(ClientError::Protocol(ward_core::Error::PreKeyMismatch))?;
                        let one_time = match message.one_time_prekey_id() {
                            Some(id) => {
                                Some(self.store.get_mut()?.one_time_prekey(id)?.ok_or(
                                    ClientError::Protocol(ward_core::Error::PreKeyMismatch),
                                )?)
                            }
                            None => None,
                        };
                        let (session, plaintext) =
                            Session::accept(identity, &signed, one_time.as_ref(), &message)?;
                        let plaintext = Zeroizing::new(plaintext);
                        let identity_bytes = message.identity().to_bytes();
                        let had_others = self
                            .store
                            .get_mut()?
                            .known_identities(user)?
                            .iter()
                            .any(|k| k.device_key != sender);
                        let status = self.store.get_mut()?.atomically(|s| {
                            s.save_session(&session)?;
                            if let Some(id) = message.one_time_prekey_id() {
                                s.take_one_time_prekey(id)?;
                            }
                            let status = s.record_identity(user, &sender, &identity_bytes)?;
                            s.store_incoming(
                                user,
                                &sender,
                                &message_id,
                                received_at_ms,
                                &plaintext,
                            )?;
                            Ok::<_, StoreError>(status)
                        })?;
                        (plaintext, Some((status, had_others)))
                    }
                }
            }
            MessageKind::Ratchet => {
                // Every session with the device keeps decrypting (SES-9);
                // the most recent first.
                let mut last_error = ward_core::Error::WrongSession;
                let mut opened = None;
                for mut session in self.store.get_mut()?.sessions(&sender)? {
                    match session.decrypt(&d.ciphertext) {
                        Ok(plaintext) => {
                            opened = Some((session, Zeroizing::new(plaintext)));
                            break;
                        }
                        Err(e) => last_error = e,
                    }
                }
                let (session, plaintext) = opened.ok_or(ClientError::Protocol(last_error))?;
                self.store.get_mut()?.atomically(|s| {
                    s.save_session(&session)?;
                    s.store_incoming(user, &sender, &message_id, received_at_ms, &plaintext)?;
                    Ok::<_, StoreError>(())
                })?;
                (plaintext, None)
            }
        };
        Ok(Stored {
            sender_user: d.sender_user.clone(),
            sender_device: sender,
            message_id,
            received_at_ms,
            plaintext,
            identity_status,
        })
    }

    /// Queues a stored message's event and, for a message from another
    /// user, the automatic `DELIVERED` receipt: in the outbox, and due for
    /// [`Messenger::send_due_receipts`]. Nothing here awaits.
    fn report(
        &mut self,
        sender_user: &str,
        sender_device: [u8; 32],
        message_id: [u8; 16],
        received_at_ms: u64,
        plaintext: &[u8],
    ) {
        let from_own = sender_user == self.user;
        match content::decode(plaintext) {
            Ok(Content::Message(message)) => {
                self.events.push_back(Event::Message(IncomingMessage {
                    sender_user: sender_user.to_owned(),
                    sender_device,
                    message_id,
                    sent_at_ms: message.sent_at_ms,
                    received_at_ms,
                    message,
                    from_own_device: from_own,
                }));
                if !from_own
                    && self.options.send_delivery_receipts
                    && let Err(e) = self.queue_delivery_receipt(sender_user, message_id)
                {
                    tracing::warn!(error = %e, "a delivery receipt could not be queued");
                }
            }
            // This user's own devices confirm deliveries to each other
            // only as a side effect of the device set rule: not reported.
            Ok(Content::Receipt(r)) if from_own && r.kind == ReceiptKind::Delivered => {}
            Ok(Content::Receipt(r)) => self.events.push_back(Event::Receipt {
                from_user: sender_user.to_owned(),
                from_device: sender_device,
                kind: r.kind,
                message_ids: r.message_ids.clone(),
            }),
            Err(error) => self.events.push_back(Event::Unreadable {
                from_user: sender_user.to_owned(),
                from_device: sender_device,
                message_id,
                error,
            }),
        }
    }

    fn queue_delivery_receipt(&mut self, to_user: &str, message_id: [u8; 16]) -> Result<()> {
        let plaintext = content::encode(&Content::Receipt(Receipt {
            kind: ReceiptKind::Delivered,
            message_ids: vec![message_id],
        }))?;
        let receipt_id = random_id();
        self.store
            .get_mut()?
            .queue_outgoing(&receipt_id, &[to_user], &plaintext)?;
        self.receipts_due.push_back(DueReceipt {
            message_id: receipt_id,
            to_user: to_user.to_owned(),
            plaintext,
        });
        Ok(())
    }

    /// After a restart: messages stored but not acknowledged (the process
    /// ended between the commit and the `Ack`) are acknowledged now and
    /// reported, once.
    async fn resume_unacknowledged(&mut self) -> Result<()> {
        let pending: Vec<_> = self
            .store
            .get_mut()?
            .received()?
            .into_iter()
            .filter(|m| !m.acknowledged)
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let ids: Vec<_> = pending
            .iter()
            .map(|m| (m.sender_device, m.message_id))
            .collect();
        self.ack(&ids).await?;
        for m in pending {
            self.report(
                &m.sender_user,
                m.sender_device,
                m.message_id,
                m.received_at_ms,
                &m.body,
            );
        }
        self.send_due_receipts().await;
        Ok(())
    }

    // ---- Verification -----------------------------------------------------

    /// The safety number (spec/07) between this user and `user`, over the
    /// devices known here: this device and this user's recorded devices,
    /// and `user`'s recorded devices. It changes when a device is added
    /// (an [`Event::NewDevice`]).
    pub fn safety_number(&mut self, user: &str) -> Result<SafetyNumber> {
        self.touch()?;
        let mut own = vec![self.public.clone()];
        for known in self.store.get_mut()?.known_identities(&self.user)? {
            let identity = DeviceIdentity::from_bytes(&known.identity)?;
            if !own.iter().any(|d| d.ct_eq(&identity)) {
                own.push(identity);
            }
        }
        let theirs = self
            .store
            .get_mut()?
            .known_identities(user)?
            .iter()
            .map(|k| DeviceIdentity::from_bytes(&k.identity))
            .collect::<Result<Vec<_>, _>>()?;
        if theirs.is_empty() {
            return Err(ClientError::UnknownContact);
        }
        Ok(SafetyNumber::new(
            Party {
                user_id: self.user.as_bytes(),
                devices: &own,
            },
            Party {
                user_id: user.as_bytes(),
                devices: &theirs,
            },
        )?)
    }

    // ---- Ending -----------------------------------------------------------

    /// Closes the connection; the store closes with it.
    pub async fn close(self) {
        self.connection.close().await;
    }

    /// Closes the connection and erases the store's files (spec/11,
    /// STO-19). The app then deletes the storage key from the platform's
    /// key store.
    ///
    /// After [`Event::Wiped`] the files are gone already:
    /// [`ClientError::NotEnrolled`].
    pub async fn wipe(self) -> Result<()> {
        let Self {
            store, connection, ..
        } = self;
        connection.close().await;
        store.0.ok_or(ClientError::NotEnrolled)?.wipe()?;
        Ok(())
    }
}

/// Hooks for ward-client's own integration tests (feature `test-hooks`,
/// which apps do not enable): they make states a test cannot otherwise
/// reach. Not API.
#[cfg(feature = "test-hooks")]
impl Messenger {
    /// From now on, a delivery is decrypted and stored but not
    /// acknowledged, and `next_event` returns an error instead: what a
    /// process killed between the commit and the `Ack` leaves behind.
    pub fn simulate_crash_before_ack(&mut self) {
        self.crash_before_ack = true;
    }

    /// The next delivery is stored and its event queued, then the call
    /// waits forever instead of acknowledging it: what a wait cancelled at
    /// that point leaves behind.
    pub fn stall_before_next_ack(&mut self) {
        self.stall_before_ack = true;
    }

    /// Sends `plaintext` as it is, not a `ward.content.v1` encoding: what
    /// a faulty or newer client could send (CNT-9).
    pub async fn send_raw_plaintext(
        &mut self,
        users: &[&str],
        plaintext: &[u8],
    ) -> Result<[u8; 16]> {
        self.send_plaintext(users, plaintext).await
    }
}
