//! A device that sends and receives end-to-end encrypted messages through
//! a relay, and remembers everything in its sealed [`Store`]: its keys,
//! its sessions, its contacts' identities, what it received, what it has
//! yet to report to the app and what it has yet to send.
//!
//! The order of saves follows spec/06 SES-5 and spec/11 STO-23: a session
//! is saved after each encryption before the ciphertext goes out; after a
//! decryption, the session, the consumed one-time prekey, the sender's
//! identity, the message and its event are committed in one transaction
//! before the relay is told (`Ack`).
//!
//! The parts: [`link`](self::link) keeps the connection (and makes it
//! again), [`receive`](self::receive) turns pushes into stored messages
//! and events, [`send`](self::send) fans messages out through the outbox,
//! [`prekeys`](self::prekeys) keeps the relay supplied.

mod event;
mod group_receive;
mod groups;
mod handoff;
mod link;
mod prekeys;
mod receive;
mod roles;
mod send;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rand_core::Rng;
use ward_core::{DeviceIdentity, IdentityKeyPair, Party, SafetyNumber};
use zeroize::Zeroizing;

pub use self::event::{ConnectionState, Event, IncomingMessage};
pub use self::groups::{GroupInfo, GroupMemberInfo};
pub use self::handoff::{HandoffSent, MAX_HANDOFF_CLOCK_SKEW, MAX_HANDOFF_DELAY};
use self::link::{Link, Owed, is_connection_failure};
use self::receive::HandedOut;
pub use self::roles::RoleSend;
use crate::store::{DeviceRecord, RelayInfo, StorageKey, Store};
use crate::{ClientError, RelayConnection};

type Result<T, E = ClientError> = core::result::Result<T, E>;

/// How often [`Messenger::next_event`] checks whether the signed prekey is
/// due for rotation.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);
/// How long [`Messenger::close`] waits to finish acknowledgments and
/// delivery receipts still owed to the relay.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

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
    /// The longest a connection attempt (QUIC handshake and
    /// authentication) may take. Default 5 seconds: a relay that is down
    /// does not answer at all, and [`Messenger::open`] waits this long
    /// before it opens the device offline.
    pub connect_timeout: Duration,
    /// The backoff between connection attempts starts here and doubles
    /// (with jitter: a random wait between half and all of it). Default
    /// 500 ms.
    pub reconnect_min: Duration,
    /// ... up to this. Default 30 seconds.
    pub reconnect_max: Duration,
    /// The longest wait for the answer to one request; past it the relay
    /// is presumed gone and the connection is made again. Default 20
    /// seconds: a relay that was killed and not restarted answers nothing,
    /// and QUIC alone notices only at its 30-second idle timeout; the
    /// largest message (256 KiB) still goes out at 100 kbit/s.
    pub request_timeout: Duration,
    /// How long after the relay could not take a message (a rate limit, a
    /// full queue, a recipient device without prekeys) the outbox is sent
    /// again while connected. Default 15 seconds.
    pub outbox_retry: Duration,
    /// The organisation's administrator public keys, under which role
    /// schedules must verify (spec/15). Pinned here by the app, never
    /// taken from the relay. Default: none (roles cannot be used).
    pub role_admin_keys: Vec<[u8; 32]>,
    /// When this device's sender chain in a group is replaced even though
    /// no device left: after this many messages or this age. Default 1000
    /// messages or 7 days (spec/13, "Bounds").
    pub group_rotation: ward_core::RotationPolicy,
    /// When a hold of a role ends, the role's thread messages of this
    /// long before its end (and any since) are handed to the next holder
    /// (spec/15, "Handoff"). Default 12 hours: a shift.
    pub handoff_window: Duration,
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
            connect_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(20),
            outbox_retry: Duration::from_secs(15),
            role_admin_keys: Vec::new(),
            group_rotation: ward_core::RotationPolicy::default(),
            handoff_window: Duration::from_secs(12 * 3600),
        }
    }
}

/// A delivery receipt in the outbox, on its way to the relay.
#[derive(Clone)]
struct DueReceipt {
    message_id: [u8; 16],
    to_user: String,
    plaintext: Zeroizing<Vec<u8>>,
}

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
/// do the rest, including connecting again when the connection is lost.
/// While locked ([`Messenger::lock`], or after
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
    relay_addr: SocketAddr,
    relay_fingerprint: [u8; 32],
    link: Link,
    /// Whether the app was told the link is down (and is owed a
    /// `Connected` when it is back).
    reported_down: bool,
    /// Events the store does not queue: the connection's, the outbox's.
    transient: VecDeque<Event>,
    /// The event the last `next_event` returned, not yet confirmed.
    handed_out: Option<HandedOut>,
    owed: Owed,
    /// When to send the outbox again, while connected (see
    /// `Messenger::retry_outbox_later`).
    outbox_retry_at: Option<Instant>,
    /// Delivery receipts queued in the outbox and not yet handed to the
    /// relay, with their recipient and encoding: sent before the next wait
    /// if a dropped call left them here.
    receipts_due: VecDeque<DueReceipt>,
    options: MessengerOptions,
    last_activity: Instant,
    last_maintenance: Instant,
    last_handoff_check: Instant,
    /// Test hook: see `Messenger::stall_before_next_ack`.
    #[cfg(feature = "test-hooks")]
    stall_before_ack: bool,
    #[cfg(feature = "test-hooks")]
    withhold_distribution: bool,
}

impl core::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Messenger")
            .field("locked", &self.identity.is_none())
            .field("connection", &self.link.state())
            .field("transient_events", &self.transient.len())
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

impl Messenger {
    /// Creates the store at `store_path` (sealed under `key`), a device
    /// identity, enrolls it at the relay with `token` (pinning the relay's
    /// certificate `fingerprint`), saves it, and publishes its prekeys
    /// (stored before they are uploaded). Enrolling needs the relay: it
    /// fails if the relay cannot be reached.
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
        let connect = async {
            let connection =
                RelayConnection::connect(relay, &options.server_name, fingerprint).await?;
            let auth = connection.enroll(token, &identity).await?;
            let deliveries = connection.deliveries().await?;
            Ok::<_, ClientError>((connection, auth, deliveries))
        };
        let (connection, auth, deliveries) = tokio::time::timeout(options.connect_timeout, connect)
            .await
            .map_err(|_| ClientError::Connect("the relay did not answer in time".to_owned()))??;
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
        let link = Link::up(connection, deliveries, 0);
        let mut messenger = Self::new(
            store,
            user_id,
            identity,
            (relay, fingerprint),
            link,
            options,
        );
        messenger.maintain_prekeys(true, true).await?;
        Ok(messenger)
    }

    /// Reopens the device in the store at `store_path`: checks `key`
    /// (a wrong one is `Store(StoreError::WrongKey)`), then connects and
    /// authenticates, acknowledges the messages stored but not
    /// acknowledged, supplies prekeys, and resends the outbox's pending
    /// messages with their ids. Events not yet confirmed by the app (see
    /// [`Messenger::next_event`]) are reported again.
    ///
    /// If the relay cannot be reached within
    /// [`MessengerOptions::connect_timeout`], the device opens offline:
    /// its store is there to read, sends are kept for later
    /// ([`ClientError::Pending`]), and [`Messenger::next_event`] first
    /// reports [`Event::Connection`] and connects when it can. Other
    /// failures to authenticate (a revoked device) are errors.
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
        let relay = (addr, relay.fingerprint);
        let mut messenger = Self::new(store, user_id, identity, relay, Link::down_now(), options);
        match messenger.connect().await {
            Ok(()) => match messenger.settle().await {
                Err(e) if !is_connection_failure(&e) => return Err(e),
                _ => {}
            },
            Err(e) if is_connection_failure(&e) => {
                tracing::info!(error = %e, "opened offline");
            }
            Err(e) => return Err(e),
        }
        Ok(messenger)
    }

    fn new(
        store: Store,
        user: String,
        identity: IdentityKeyPair,
        (relay_addr, relay_fingerprint): (SocketAddr, [u8; 32]),
        link: Link,
        options: MessengerOptions,
    ) -> Self {
        Self {
            store: StoreSlot(Some(store)),
            user,
            public: identity.public().clone(),
            identity: Some(identity),
            relay_addr,
            relay_fingerprint,
            link,
            reported_down: false,
            transient: VecDeque::new(),
            handed_out: None,
            owed: Owed::default(),
            outbox_retry_at: None,
            receipts_due: VecDeque::new(),
            options,
            last_activity: Instant::now(),
            last_maintenance: Instant::now(),
            last_handoff_check: Instant::now(),
            #[cfg(feature = "test-hooks")]
            stall_before_ack: false,
            #[cfg(feature = "test-hooks")]
            withhold_distribution: false,
        }
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

    /// The device's store (received messages, outbox), for reading. Its
    /// record methods fail with [`crate::StoreError::Locked`] while locked;
    /// after [`Event::Wiped`] there is no store:
    /// [`ClientError::NotEnrolled`].
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
    /// keys (zeroized). The event last returned by
    /// [`Messenger::next_event`] is confirmed first. The connection stays
    /// open; pushes wait until [`Messenger::unlock`], and a lost
    /// connection is made again only then (authenticating needs the
    /// identity).
    pub fn lock(&mut self) {
        if let Err(e) = self.confirm_handed_out() {
            tracing::warn!(error = %e, "could not confirm the last event before locking");
        }
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
        if self.identity.is_some()
            && idle_limit.is_some_and(|limit| self.last_activity.elapsed() >= limit)
        {
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

    // ---- Verification -----------------------------------------------------

    /// The safety number (spec/07) between this user and `user`, over the
    /// devices known here: this device and this user's recorded devices,
    /// and `user`'s recorded devices. It changes when a device is added
    /// (an [`Event::NewDevice`]).
    pub fn safety_number(&mut self, user: &str) -> Result<SafetyNumber> {
        self.touch()?;
        let mut own = vec![self.public.clone()];
        for known in self.store.get()?.known_identities(&self.user)? {
            let identity = DeviceIdentity::from_bytes(&known.identity)?;
            if !own.iter().any(|d| d.ct_eq(&identity)) {
                own.push(identity);
            }
        }
        let theirs = self
            .store
            .get()?
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

    /// Confirms the event last returned by [`Messenger::next_event`] (the
    /// app has had it), gives the relay up to two seconds to hear the
    /// acknowledgments and delivery receipts still owed, and closes the
    /// connection; the store closes with it. What could not be finished is
    /// finished by the next open.
    pub async fn close(mut self) {
        if let Err(e) = self.confirm_handed_out() {
            tracing::warn!(error = %e, "could not confirm the last event");
        }
        if self.link.is_up() && !self.is_locked() && !self.is_wiped() {
            let finish = async {
                if self.owed.acks {
                    self.ack_unacknowledged().await?;
                }
                self.send_due_receipts().await;
                Ok::<_, ClientError>(())
            };
            match tokio::time::timeout(CLOSE_GRACE, finish).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "closing before the relay heard all"),
                Err(_) => tracing::debug!("closing before the relay heard all"),
            }
        }
        if let Link::Up(up) = self.link {
            up.connection.close().await;
        }
    }

    /// Closes the connection and erases the store's files (spec/11,
    /// STO-19). The app then deletes the storage key from the platform's
    /// key store.
    ///
    /// After [`Event::Wiped`] the files are gone already:
    /// [`ClientError::NotEnrolled`].
    pub async fn wipe(self) -> Result<()> {
        let Self { store, link, .. } = self;
        if let Link::Up(up) = link {
            up.connection.close().await;
        }
        store.0.ok_or(ClientError::NotEnrolled)?.wipe()?;
        Ok(())
    }
}

/// Hooks for ward-client's own integration tests (feature `test-hooks`,
/// which apps do not enable): they make states a test cannot otherwise
/// reach. Not API.
#[cfg(feature = "test-hooks")]
impl Messenger {
    /// The next delivery is stored and its event queued, then the call
    /// waits forever instead of acknowledging it: what a wait cancelled at
    /// that point leaves behind, or (if the messenger is then dropped
    /// without `close`) a process killed between the commit and the `Ack`.
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

    /// The next group message goes to every member device as the shared
    /// ciphertext only, as if its chain had reached them: what a lost
    /// distribution leaves behind (SK-13).
    pub fn withhold_next_distribution(&mut self) {
        self.withhold_distribution = true;
    }

    /// Closes the connection under the messenger, as a network that drops
    /// it would: the messenger notices on its next use of it.
    pub fn break_connection(&mut self) {
        if let Link::Up(up) = &self.link {
            up.connection
                .quic()
                .close(0u32.into(), b"test: connection broken");
        }
    }
}
