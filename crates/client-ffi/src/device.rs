//! [`WardDevice`]: a [`Messenger`] shared between concurrent foreign calls.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard, Notify, oneshot};
use ward_client::{ConnectionState, Message, Messenger, MessengerOptions, StorageKey};
use zeroize::{Zeroize, Zeroizing};

use crate::{WardError, WardEvent, WardMessage, WardReceiptKind, runtime};

type Result<T, E = WardError> = core::result::Result<T, E>;

/// The length of a storage key, in bytes.
const STORAGE_KEY_LEN: usize = 32;
/// The length of a relay certificate fingerprint (SHA-256), in bytes.
const FINGERPRINT_LEN: usize = 32;
/// The length of a message id, in bytes.
const MESSAGE_ID_LEN: usize = 16;

/// Tunables of a device; every field has a default.
#[derive(Clone, Debug, uniffi::Record)]
pub struct WardOptions {
    /// Lock after this long without user activity (sends, receipts,
    /// safety numbers, unlock), in ms; 0 never locks by itself. Default 5
    /// minutes (HIPAA automatic logoff).
    #[uniffi(default = 300000)]
    pub auto_lock_after_ms: u64,
    /// Send a `Delivered` receipt for every message received from another
    /// user. Default true.
    #[uniffi(default = true)]
    pub send_delivery_receipts: bool,
    /// The TLS server name sent to the relay (its certificate is pinned by
    /// fingerprint; the name is not checked). Default `localhost`.
    #[uniffi(default = "localhost")]
    pub server_name: String,
    /// The message lifetime asked of the relay, in ms; 0 is the relay's
    /// default.
    #[uniffi(default = 0)]
    pub ttl_ms: u64,
    /// The longest a connection attempt may take, in ms (`open` waits this
    /// long before it opens the device offline). Default 5 seconds.
    #[uniffi(default = 5000)]
    pub connect_timeout_ms: u64,
    /// The backoff between connection attempts starts here (and doubles,
    /// with jitter, up to `reconnect_max_ms`), in ms. Default 500 ms.
    #[uniffi(default = 500)]
    pub reconnect_min_ms: u64,
    /// The longest backoff between connection attempts, in ms. Default 30
    /// seconds.
    #[uniffi(default = 30000)]
    pub reconnect_max_ms: u64,
    /// The longest wait for the relay's answer to one request, in ms; past
    /// it the connection is made again. Default 20 seconds.
    #[uniffi(default = 20000)]
    pub request_timeout_ms: u64,
    /// How long after the relay could not take a message (a rate limit, a
    /// full queue) the device tries again while connected, in ms. Default
    /// 15 seconds.
    #[uniffi(default = 15000)]
    pub outbox_retry_ms: u64,
    /// The organisation's administrator public keys (32 bytes each), under
    /// which role schedules must verify. Pinned by the app, never taken
    /// from the relay; without any, roles cannot be used. Default none.
    #[uniffi(default = [])]
    pub role_admin_keys: Vec<Vec<u8>>,
    /// When this user's hold of a role ends, the role's thread messages of
    /// this long before the end (and any since) are handed to the next
    /// holder, in ms (spec/15, "Handoff"). Default 12 hours: a shift.
    #[uniffi(default = 43200000)]
    pub handoff_window_ms: u64,
}

/// The messenger's options from the foreign ones (`None`: the defaults).
fn messenger_options(options: Option<WardOptions>) -> Result<MessengerOptions> {
    {
        let defaults = MessengerOptions::default();
        let Some(WardOptions {
            auto_lock_after_ms,
            send_delivery_receipts,
            server_name,
            ttl_ms,
            connect_timeout_ms,
            reconnect_min_ms,
            reconnect_max_ms,
            request_timeout_ms,
            outbox_retry_ms,
            role_admin_keys,
            handoff_window_ms,
        }) = options
        else {
            return Ok(defaults);
        };
        let role_admin_keys = role_admin_keys
            .iter()
            .map(|key| {
                <[u8; 32]>::try_from(key.as_slice())
                    .map_err(|_| WardError::invalid("an administrator key is not 32 bytes"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MessengerOptions {
            server_name,
            send_delivery_receipts,
            auto_lock_after: (auto_lock_after_ms > 0)
                .then(|| Duration::from_millis(auto_lock_after_ms)),
            ttl_ms,
            connect_timeout: Duration::from_millis(connect_timeout_ms),
            reconnect_min: Duration::from_millis(reconnect_min_ms),
            reconnect_max: Duration::from_millis(reconnect_max_ms),
            request_timeout: Duration::from_millis(request_timeout_ms),
            outbox_retry: Duration::from_millis(outbox_retry_ms),
            role_admin_keys,
            handoff_window: Duration::from_millis(handoff_window_ms),
            ..defaults
        })
    }
}

/// Receives a device's events on the runtime's task (see
/// [`WardDevice::start_listening`]). Implemented by foreign code; calls
/// come from a runtime thread, not the caller's (post them to the UI or
/// event loop thread).
#[uniffi::export(foreign)]
pub trait WardListener: Send + Sync {
    /// An event, as [`WardDevice::next_event`] returns it.
    fn on_event(&self, event: WardEvent);
    /// An error of [`WardDevice::next_event`]. Listening stops after it,
    /// except for [`WardError::Protocol`] (a delivery that did not decrypt
    /// is reported and listening goes on).
    fn on_error(&self, error: WardError);
}

/// A device: its sealed store and its connection to the relay.
///
/// Create one with [`WardDevice::enroll`], reopen it with
/// [`WardDevice::open`]. Calls may overlap: they take turns on the device,
/// and a call waiting for its turn interrupts a pending
/// [`WardDevice::next_event`] (which resumes after it, losing nothing:
/// [`Messenger::next_event`] is cancel-safe), so an app can wait
/// for events (or [`WardDevice::start_listening`]) and send at the same
/// time.
#[derive(uniffi::Object)]
pub struct WardDevice {
    /// `None` once closed or wiped. Used on the runtime thread only.
    messenger: Mutex<Option<Messenger>>,
    user: String,
    device_key: Vec<u8>,
    /// Calls waiting for `messenger`, other than `next_event`'s.
    waiting: AtomicUsize,
    /// Signalled when a call starts waiting.
    wake: Notify,
    /// Dropping it stops the listening task, if any.
    listener: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl core::fmt::Debug for WardDevice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WardDevice").finish_non_exhaustive()
    }
}

/// Copies a foreign storage key, checking its length; the caller's copy
/// is zeroized.
fn storage_key(mut bytes: Vec<u8>) -> Result<StorageKey> {
    let result = <[u8; STORAGE_KEY_LEN]>::try_from(bytes.as_slice())
        .map(|mut array| {
            let key = StorageKey::new(array);
            array.zeroize();
            key
        })
        .map_err(|_| {
            WardError::invalid(format!(
                "the storage key must be {STORAGE_KEY_LEN} bytes, not {}",
                bytes.len()
            ))
        });
    bytes.zeroize();
    result
}

pub(crate) fn message_id(bytes: &[u8]) -> Result<[u8; MESSAGE_ID_LEN]> {
    bytes.try_into().map_err(|_| {
        WardError::invalid(format!(
            "a message id is {MESSAGE_ID_LEN} bytes, not {}",
            bytes.len()
        ))
    })
}

fn fingerprint(hex_digits: &str) -> Result<[u8; FINGERPRINT_LEN]> {
    let bytes = hex::decode(hex_digits.trim())
        .map_err(|e| WardError::invalid(format!("the fingerprint is not hex: {e}")))?;
    bytes.as_slice().try_into().map_err(|_| {
        WardError::invalid(format!(
            "the fingerprint must be {FINGERPRINT_LEN} bytes (SHA-256), not {}",
            bytes.len()
        ))
    })
}

/// Resolves `host:port` (an IP address or a name).
async fn relay_address(relay_addr: &str) -> Result<SocketAddr> {
    if let Ok(addr) = relay_addr.parse() {
        return Ok(addr);
    }
    tokio::net::lookup_host(relay_addr)
        .await
        .map_err(|e| WardError::invalid(format!("the relay address {relay_addr:?}: {e}")))?
        .next()
        .ok_or_else(|| {
            WardError::invalid(format!(
                "the relay address {relay_addr:?} resolves to nothing"
            ))
        })
}

/// Counts a call in [`WardDevice::waiting`] while it exists.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WardDevice {
    fn new(messenger: Messenger) -> Arc<Self> {
        Arc::new(Self {
            user: messenger.user().to_owned(),
            device_key: messenger.device_key().to_vec(),
            messenger: Mutex::new(Some(messenger)),
            waiting: AtomicUsize::new(0),
            wake: Notify::new(),
            listener: std::sync::Mutex::new(None),
        })
    }

    /// Takes the device for a call, interrupting a pending `next_event`.
    async fn turn(&self) -> MutexGuard<'_, Option<Messenger>> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        self.wake.notify_waiters();
        self.messenger.lock().await
    }

    /// Runs `call` on the open messenger, on the runtime thread.
    pub(crate) async fn with<T, F>(self: Arc<Self>, call: F) -> Result<T>
    where
        F: AsyncFnOnce(&mut Messenger) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        runtime::run(move || async move {
            let mut guard = self.turn().await;
            let messenger = guard.as_mut().ok_or(WardError::Closed)?;
            call(messenger).await
        })
        .await
    }

    /// Resolves when another call waits for the device.
    async fn interrupted(&self) {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.waiting.load(Ordering::SeqCst) > 0 {
                return;
            }
            notified.await;
        }
    }

    /// The next event, with the device still held; on the runtime thread.
    /// The caller hands the event over before it lets the device go, and
    /// gives it back (`Messenger::redeliver_last_event`) if it could not:
    /// no other call can take the next event meanwhile.
    async fn next(&self) -> (MutexGuard<'_, Option<Messenger>>, Result<WardEvent>) {
        loop {
            {
                let mut guard = self.messenger.lock().await;
                let Some(messenger) = guard.as_mut() else {
                    return (guard, Err(WardError::Closed));
                };
                tokio::select! {
                    biased;
                    event = messenger.next_event() => {
                        let event = event.map(WardEvent::from).map_err(WardError::from);
                        return (guard, event);
                    }
                    () = self.interrupted() => {}
                }
            }
            // The device's mutex is fair: the waiting call, queued before
            // this one locks again, goes first.
            tokio::task::yield_now().await;
        }
    }

    /// Sends `message` to `users`; see [`WardDevice::send_text`].
    async fn send(self: Arc<Self>, users: Vec<String>, message: Message) -> Result<Vec<u8>> {
        self.with(async move |m| {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            Ok(m.send(&users, message).await?.to_vec())
        })
        .await
    }

    fn stop_listener(&self) {
        // Dropping the sender ends the task.
        drop(
            self.listener
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }
}

#[uniffi::export]
impl WardDevice {
    /// Creates a sealed store at `store_path` under `storage_key` (32
    /// bytes, from the platform's key store), a device identity, and
    /// enrolls the device at the relay `relay_addr` (`host:port`) with the
    /// one-time `token` an administrator issued, pinning the relay's
    /// certificate by `fingerprint_hex` (SHA-256, 64 hex digits).
    #[uniffi::constructor(default(options = None))]
    pub async fn enroll(
        store_path: String,
        storage_key: Vec<u8>,
        relay_addr: String,
        fingerprint_hex: String,
        token: String,
        options: Option<WardOptions>,
    ) -> Result<Arc<Self>> {
        let token = Zeroizing::new(token);
        let key = self::storage_key(storage_key)?;
        let pin = fingerprint(&fingerprint_hex)?;
        runtime::run(move || async move {
            let addr = relay_address(&relay_addr).await?;
            let options = messenger_options(options)?;
            let messenger =
                Messenger::enroll(&store_path, &key, addr, pin, token.as_str(), options).await?;
            Ok(Self::new(messenger))
        })
        .await
    }

    /// Reopens the device enrolled in the store at `store_path`, and
    /// reconnects to its relay. A wrong key is [`WardError::WrongKey`].
    #[uniffi::constructor(default(options = None))]
    pub async fn open(
        store_path: String,
        storage_key: Vec<u8>,
        options: Option<WardOptions>,
    ) -> Result<Arc<Self>> {
        let key = self::storage_key(storage_key)?;
        runtime::run(move || async move {
            let messenger = Messenger::open(&store_path, &key, messenger_options(options)?).await?;
            Ok(Self::new(messenger))
        })
        .await
    }

    /// Sends `text` to every device of `users` and to this user's other
    /// devices. Returns the message id (16 bytes) once the relay has it; if
    /// it cannot take it now, [`WardError::Pending`] with the id (the
    /// device sends it by itself later).
    pub async fn send_text(
        self: Arc<Self>,
        users: Vec<String>,
        text: String,
        urgent: bool,
    ) -> Result<Vec<u8>> {
        let message = if urgent {
            Message::urgent(text)
        } else {
            Message::text(text)
        };
        self.send(users, message).await
    }

    /// [`WardDevice::send_text`] for a message with attachments.
    pub async fn send_message(
        self: Arc<Self>,
        users: Vec<String>,
        message: WardMessage,
    ) -> Result<Vec<u8>> {
        let message = Message::try_from(message)?;
        self.send(users, message).await
    }

    /// Sends a receipt for `message_ids` (16 bytes each) to `to_user`.
    /// `Delivered` receipts are sent automatically (see [`WardOptions`]);
    /// `Read` is the app's call. Returns the receipt's own message id.
    pub async fn send_receipt(
        self: Arc<Self>,
        to_user: String,
        kind: WardReceiptKind,
        message_ids: Vec<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let ids = message_ids
            .iter()
            .map(|id| message_id(id))
            .collect::<Result<Vec<_>>>()?;
        self.with(async move |m| Ok(m.send_receipt(&to_user, kind.into(), &ids).await?.to_vec()))
            .await
    }

    /// Waits for the next event. Cancel it (or use
    /// [`WardDevice::start_listening`]) to stop waiting; other calls may
    /// run meanwhile. Each event is reported once: one whose call was
    /// cancelled as it arrived is returned again by the next call, and a
    /// device that is shut down and opened again does not repeat what it
    /// returned. Losing the connection does not end the wait: the device
    /// connects again, and reports [`WardEvent::Connection`].
    pub async fn next_event(self: Arc<Self>) -> Result<WardEvent> {
        runtime::run_answering(move |mut answer| async move {
            let (mut guard, event) = tokio::select! {
                next = self.next() => next,
                () = answer.closed() => return,
            };
            if let Err(Ok(_)) = answer.send(event)
                && let Some(messenger) = guard.as_mut()
            {
                messenger.redeliver_last_event();
            }
        })
        .await
    }

    /// Tells the device that the network changed (the platform's
    /// connectivity callback: Wi-Fi to cellular, back online): it tries to
    /// connect at once instead of waiting out its backoff.
    pub async fn network_changed(self: Arc<Self>) -> Result<()> {
        self.with(async |m| {
            m.network_changed();
            Ok(())
        })
        .await
    }

    /// Whether the device is connected to its relay now.
    pub async fn is_connected(self: Arc<Self>) -> Result<bool> {
        self.with(async |m| Ok(m.connection_state() == ConnectionState::Connected))
            .await
    }

    /// Drops the keys in memory; every call but `unlock`, `shutdown` and
    /// `wipe` fails with [`WardError::Locked`] until `unlock`.
    pub async fn lock(self: Arc<Self>) -> Result<()> {
        self.with(async |m| {
            m.lock();
            Ok(())
        })
        .await
    }

    /// Unlocks with the storage key; a wrong one is [`WardError::WrongKey`]
    /// and the device stays locked.
    pub async fn unlock(self: Arc<Self>, storage_key: Vec<u8>) -> Result<()> {
        let key = self::storage_key(storage_key)?;
        self.with(async move |m| Ok(m.unlock(&key)?)).await
    }

    /// Whether the device is locked.
    pub async fn is_locked(self: Arc<Self>) -> Result<bool> {
        self.with(async |m| Ok(m.is_locked())).await
    }

    /// The safety number (60 digits) between this user and `user`, over
    /// the devices known here; compare it with the other user's, read
    /// aloud or shown.
    pub async fn safety_number(self: Arc<Self>, user: String) -> Result<String> {
        self.with(async move |m| Ok(m.safety_number(&user)?.digits().to_owned()))
            .await
    }

    /// Closes the connection and erases the store's files (a lost device,
    /// or sign-out). Delete the storage key from the platform's key store
    /// afterwards. The device is closed.
    pub async fn wipe(self: Arc<Self>) -> Result<()> {
        self.stop_listener();
        runtime::run(move || async move {
            let messenger = self.turn().await.take().ok_or(WardError::Closed)?;
            Ok(messenger.wipe().await?)
        })
        .await
    }

    /// Closes the connection and the store; the device is closed (open it
    /// again with [`WardDevice::open`]). Shutting down twice is not an
    /// error. (Not `close`: Kotlin objects have a `close()` of their own,
    /// from `AutoCloseable`, which frees the Rust object.)
    pub async fn shutdown(self: Arc<Self>) -> Result<()> {
        self.stop_listener();
        runtime::run(move || async move {
            let messenger = self.turn().await.take();
            if let Some(messenger) = messenger {
                messenger.close().await;
            }
            Ok(())
        })
        .await
    }

    /// Calls `listener` with every event, on the runtime thread, until an
    /// error (see [`WardListener::on_error`]), `stop_listening`, `shutdown`
    /// or `wipe`. A listener already set is replaced.
    pub fn start_listening(self: Arc<Self>, listener: Arc<dyn WardListener>) -> Result<()> {
        let (stop, stopped) = oneshot::channel::<()>();
        let previous = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(stop);
        drop(previous);
        let device = Arc::clone(&self);
        runtime::submit(move || {
            tokio::task::spawn_local(async move {
                let listen = async {
                    loop {
                        let (guard, event) = device.next().await;
                        drop(guard);
                        match event {
                            Ok(event) => listener.on_event(event),
                            Err(error) => {
                                let go_on = matches!(error, WardError::Protocol { .. });
                                listener.on_error(error);
                                if !go_on {
                                    break;
                                }
                            }
                        }
                    }
                };
                tokio::select! {
                    () = listen => {}
                    _ = stopped => {}
                }
            });
        })
    }

    /// Stops the listener, if any.
    pub fn stop_listening(&self) {
        self.stop_listener();
    }

    /// The user this device belongs to.
    pub fn user(&self) -> String {
        self.user.clone()
    }

    /// This device's public key (32 bytes), as other devices see it.
    pub fn device_key(&self) -> Vec<u8> {
        self.device_key.clone()
    }
}
