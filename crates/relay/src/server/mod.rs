//! The QUIC server: connections, request streams, the delivery stream, and
//! the background tasks (expiry, tree heads, revocations).
//!
//! The protocol is spec/08-relay-protocol.md. Storage calls are
//! synchronous and durable (they return after the commit); the server runs
//! them on tokio's blocking pool, where concurrent calls meet in the
//! storage's group commit.

mod auth;
mod connection;
mod handlers;
pub mod limits;
mod refusal;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use ward_audit::SigningKey;

pub use self::limits::Limits;
use crate::metrics::Metrics;
use crate::storage::{DeviceKey, Storage, StorageError};
pub(crate) use ward_proto::auth::{EXPORTER_LABEL, EXPORTER_LEN, NONCE_LEN};

/// Application close codes (spec/08, "Closing").
pub mod close_code {
    /// The relay is shutting down.
    pub const SHUTDOWN: u32 = 0x0;
    /// The client did not authenticate in time.
    pub const AUTH_TIMEOUT: u32 = 0x1;
    /// Too many failed authentications.
    pub const AUTH_FAILURES: u32 = 0x2;
    /// The device was revoked.
    pub const REVOKED: u32 = 0x3;
    /// The same device connected again; this older connection is closed.
    pub const REPLACED: u32 = 0x4;
}

/// What the server needs besides its storage.
pub struct RelayOptions {
    /// Where to listen.
    pub bind: SocketAddr,
    /// The QUIC server configuration (certificate, ALPN, transport limits).
    pub server_config: quinn::ServerConfig,
    /// Request, message and connection limits.
    pub limits: Limits,
    /// The key that signs audit tree heads.
    pub audit_key: SigningKey,
    /// How often to sign a tree head when the log grew.
    pub tree_head_interval: Duration,
    /// How often to delete expired messages.
    pub expiry_interval: Duration,
    /// How often to look for devices revoked by another process (the admin
    /// command line).
    pub revocation_poll_interval: Duration,
    /// The QUIC stateless-reset key, kept across restarts (spec/08,
    /// "Stateless resets"): a connection of a previous run that reaches
    /// this relay is reset at once, instead of waiting out its idle
    /// timeout.
    pub reset_key: crate::keys::ResetKey,
}

impl core::fmt::Debug for RelayOptions {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RelayOptions")
            .field("bind", &self.bind)
            .field("limits", &self.limits)
            .field("tree_head_interval", &self.tree_head_interval)
            .finish_non_exhaustive()
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the UDP socket failed.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The TLS identity could not be loaded or created.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The audit signing key or the stateless-reset key could not be
    /// loaded or created.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
}

/// How often the relay deletes expired messages (spec/08: every second).
pub const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);
/// How often the relay looks for devices revoked from the command line
/// (spec/08: their connections close within one second).
pub const REVOCATION_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A relay started from its configuration, as `ward-relay serve` runs it.
#[derive(Debug)]
pub struct Launched {
    /// The running relay.
    pub relay: Relay,
    /// Its storage, for administration in the same process.
    pub storage: Arc<crate::storage::SqliteStorage>,
    /// The SHA-256 fingerprint of its certificate, for clients to pin.
    pub fingerprint: [u8; 32],
}

/// Opens the storage in the data directory, loads or creates the TLS
/// identity, the audit key and the stateless-reset key there (the last
/// from `stateless_reset_key_file` if configured), and starts the relay.
/// Must be called inside a tokio runtime.
pub fn launch(
    config: &crate::config::RelayConfig,
    metrics: Arc<Metrics>,
) -> Result<Launched, ServerError> {
    let storage = Arc::new(crate::storage::SqliteStorage::open(
        &config.data_dir,
        config.storage_config(),
    )?);
    let identity = crate::tls::load_or_create(&config.data_dir, config.tls.as_ref())?;
    let server_config = crate::tls::server_config(&identity, &config.limits)?;
    let fingerprint = identity.fingerprint;
    // The key now lives in the rustls configuration only.
    drop(identity);
    let reset_key = match &config.stateless_reset_key_file {
        Some(path) => crate::keys::load_reset_key(path)?,
        None => crate::keys::load_or_create_reset_key(&config.data_dir)?,
    };
    let options = RelayOptions {
        bind: config.bind,
        server_config,
        limits: config.limits.clone(),
        audit_key: crate::keys::load_or_create_audit_key(&config.data_dir)?,
        tree_head_interval: config.tree_head_interval(),
        expiry_interval: EXPIRY_INTERVAL,
        revocation_poll_interval: REVOCATION_POLL_INTERVAL,
        reset_key,
    };
    let relay = Relay::start(options, Arc::clone(&storage) as Arc<dyn Storage>, metrics)?;
    Ok(Launched {
        relay,
        storage,
        fingerprint,
    })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A device with a live, authenticated connection.
struct Online {
    connection_id: u64,
    quic: quinn::Connection,
    /// Wakes the device's delivery task.
    signal: Arc<DeliverySignal>,
}

/// What wakes a delivery task: new messages in its queue, or a notice.
/// A slot rather than a channel: a notice is advisory and only the latest
/// matters, and an idle device should cost as little memory as possible.
#[derive(Debug, Default)]
pub(crate) struct DeliverySignal {
    pub(crate) wake: Notify,
    /// The device's one-time prekey count, when a claim left it low.
    pub(crate) prekeys_low: Mutex<Option<u64>>,
    /// An administrator instructed the device to erase its store (spec/08,
    /// "Remote wipe"): push `Wipe` and nothing more.
    pub(crate) wipe: AtomicBool,
}

/// State shared by every connection.
pub(crate) struct Shared {
    storage: Arc<dyn Storage>,
    limits: Limits,
    metrics: Arc<Metrics>,
    online: Mutex<HashMap<DeviceKey, Online>>,
    next_connection_id: AtomicU64,
}

impl Shared {
    /// Runs a storage call on the blocking pool.
    pub(crate) async fn storage<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&dyn Storage) -> crate::storage::Result<T> + Send + 'static,
    ) -> crate::storage::Result<T> {
        let storage = Arc::clone(&self.storage);
        let result = tokio::task::spawn_blocking(move || f(&*storage))
            .await
            .unwrap_or_else(|_| Err(StorageError::Backend("storage task failed".to_owned())));
        if matches!(result, Err(StorageError::Backend(_) | StorageError::Io(_))) {
            self.metrics.storage_errors_total.inc();
        }
        result
    }

    /// Tells a device's delivery task that messages are waiting, if the
    /// device is online.
    pub(crate) fn wake(&self, device: &DeviceKey) {
        if let Ok(online) = self.online.lock()
            && let Some(o) = online.get(device)
        {
            o.signal.wake.notify_one();
        }
    }

    /// Tells an online device, through its delivery stream, that it has
    /// `one_time_prekeys` left and should upload more.
    pub(crate) fn prekeys_low(&self, device: &DeviceKey, one_time_prekeys: u64) {
        if let Ok(online) = self.online.lock()
            && let Some(o) = online.get(device)
        {
            if let Ok(mut slot) = o.signal.prekeys_low.lock() {
                *slot = Some(one_time_prekeys);
            }
            o.signal.wake.notify_one();
        }
    }

    /// Tells an online device, through its delivery stream, to erase its
    /// store; its delivery task pushes nothing after that.
    pub(crate) fn wipe_requested(&self, device: &DeviceKey) {
        if let Ok(online) = self.online.lock()
            && let Some(o) = online.get(device)
            && !o.signal.wipe.swap(true, Ordering::SeqCst)
        {
            o.signal.wake.notify_one();
            tracing::info!(device = %device, "pushing a wipe instruction");
        }
    }

    /// Registers an authenticated connection, closing an older connection
    /// of the same device.
    fn go_online(&self, device: DeviceKey, online: Online) {
        let previous = match self.online.lock() {
            Ok(mut map) => map.insert(device, online),
            Err(_) => None,
        };
        if let Some(previous) = previous {
            previous.quic.close(
                close_code::REPLACED.into(),
                b"replaced by a newer connection",
            );
        }
    }

    fn go_offline(&self, device: &DeviceKey, connection_id: u64) {
        if let Ok(mut map) = self.online.lock()
            && map
                .get(device)
                .is_some_and(|o| o.connection_id == connection_id)
        {
            map.remove(device);
        }
    }

    pub(crate) fn disconnect_revoked(&self, device: &DeviceKey) {
        let online = self
            .online
            .lock()
            .ok()
            .and_then(|mut map| map.remove(device));
        if let Some(online) = online {
            online
                .quic
                .close(close_code::REVOKED.into(), b"device revoked");
            self.metrics.connections_closed_revoked_total.inc();
            tracing::info!(device = %device, "closed the connection of a revoked device");
        }
    }
}

/// A running relay.
pub struct Relay {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    audit_key: Arc<SigningKey>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl core::fmt::Debug for Relay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Relay")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Binds the endpoint and starts accepting connections and running the
    /// background tasks. Must be called inside a tokio runtime.
    pub fn start(
        options: RelayOptions,
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServerError> {
        let RelayOptions {
            bind,
            server_config,
            limits,
            audit_key,
            tree_head_interval,
            expiry_interval,
            revocation_poll_interval,
            reset_key,
        } = options;
        let endpoint_config = crate::tls::endpoint_config(&reset_key);
        drop(reset_key);
        let bind_error = |source| ServerError::Bind { addr: bind, source };
        let socket = std::net::UdpSocket::bind(bind).map_err(bind_error)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind_error(std::io::Error::other("no async runtime")))?;
        let endpoint = quinn::Endpoint::new(endpoint_config, Some(server_config), socket, runtime)
            .map_err(bind_error)?;
        let shared = Arc::new(Shared {
            storage,
            limits,
            metrics,
            online: Mutex::new(HashMap::new()),
            next_connection_id: AtomicU64::new(1),
        });
        let audit_key = Arc::new(audit_key);
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(accept_loop(
                endpoint.clone(),
                Arc::clone(&shared),
                stopped.clone(),
            )),
            tokio::spawn(expiry_loop(
                Arc::clone(&shared),
                expiry_interval,
                stopped.clone(),
            )),
            tokio::spawn(tree_head_loop(
                Arc::clone(&shared),
                Arc::clone(&audit_key),
                tree_head_interval,
                stopped.clone(),
            )),
            tokio::spawn(revocation_loop(
                Arc::clone(&shared),
                revocation_poll_interval,
                stopped,
            )),
        ];
        tracing::info!(addr = ?endpoint.local_addr().ok(), "relay listening");
        Ok(Self {
            endpoint,
            shared,
            audit_key,
            stop,
            tasks,
        })
    }

    /// The address the relay listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// How many devices are connected and authenticated.
    pub fn online_devices(&self) -> usize {
        self.shared.online.lock().map_or(0, |m| m.len())
    }

    /// Stops accepting, closes every connection, waits (up to five seconds)
    /// for them to end, and signs a last tree head.
    pub async fn shutdown(self) -> Result<(), StorageError> {
        let _ = self.stop.send(true);
        self.endpoint
            .close(close_code::SHUTDOWN.into(), b"relay shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
        for task in self.tasks {
            task.abort();
        }
        let key = Arc::clone(&self.audit_key);
        self.shared
            .storage(move |s| s.issue_tree_head(&key, now_ms()))
            .await?;
        tracing::info!("relay stopped");
        Ok(())
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    while let Some(incoming) = endpoint.accept().await {
        if *stop.borrow() {
            incoming.refuse();
            continue;
        }
        let shared = Arc::clone(&shared);
        tokio::spawn(connection::run(shared, incoming));
    }
}

/// Sleeps `interval` or until the relay stops; false when it stopped.
async fn tick(interval: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(interval) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

async fn expiry_loop(shared: Arc<Shared>, interval: Duration, mut stop: watch::Receiver<bool>) {
    const BATCH: u32 = 1_000;
    while tick(interval, &mut stop).await {
        loop {
            match shared.storage(|s| s.expire(now_ms(), BATCH)).await {
                Ok(expired) => {
                    shared
                        .metrics
                        .messages_expired_total
                        .inc_by(expired.len() as u64);
                    if expired.len() < BATCH as usize {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "expiring messages failed");
                    break;
                }
            }
        }
    }
}

async fn tree_head_loop(
    shared: Arc<Shared>,
    key: Arc<SigningKey>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut signed_size = None;
    while tick(interval, &mut stop).await {
        let size = match shared.storage(|s| s.audit_state()).await {
            Ok(state) => state.size,
            Err(e) => {
                tracing::error!(error = %e, "reading the audit log failed");
                continue;
            }
        };
        if signed_size == Some(size) {
            continue;
        }
        let key = Arc::clone(&key);
        match shared
            .storage(move |s| s.issue_tree_head(&key, now_ms()))
            .await
        {
            Ok(head) => {
                signed_size = Some(head.head.tree_size);
                tracing::info!(tree_size = head.head.tree_size, "signed an audit tree head");
            }
            Err(e) => tracing::error!(error = %e, "signing a tree head failed"),
        }
    }
}

/// Also polls wipe instructions (recorded by the admin command line, another
/// process) and hands them to the delivery tasks of online devices; an
/// offline device gets its instruction when it next authenticates.
async fn revocation_loop(shared: Arc<Shared>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut since = now_ms();
    let mut wipes_since = since;
    while tick(interval, &mut stop).await {
        let checked_at = now_ms();
        match shared
            .storage(move |s| s.wipes_requested_since(wipes_since))
            .await
        {
            Ok(wipes) => {
                for (device, _) in wipes {
                    shared.wipe_requested(&device);
                }
                wipes_since = checked_at.saturating_sub(60_000);
            }
            Err(e) => tracing::error!(error = %e, "polling wipe instructions failed"),
        }
        match shared.storage(move |s| s.revoked_since(since)).await {
            Ok(revoked) => {
                for (device, _) in revoked {
                    shared.disconnect_revoked(&device);
                }
                // Revocations stamped by a clock slightly behind ours are
                // caught by the overlap.
                since = checked_at.saturating_sub(60_000);
            }
            Err(e) => tracing::error!(error = %e, "polling revocations failed"),
        }
    }
}

impl Shared {
    fn new_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}
