//! A relay on 127.0.0.1 for the messenger tests, and waiting for events.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ward_audit::UserId;
use ward_client::{Event, IncomingMessage, Messenger, MessengerOptions, ReceiptKind, StorageKey};
use ward_relay::metrics::Metrics;
use ward_relay::server::{Limits, Relay, RelayOptions};
use ward_relay::storage::{SqliteStorage, Storage, StorageConfig};

pub const HOUR_MS: u64 = 3_600_000;
/// Every test ends within this time.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest wait for one event.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A relay on 127.0.0.1 over SQLite in a temporary directory, which also
/// holds the devices' stores.
pub struct TestRelay {
    relay: Option<Relay>,
    limits: Limits,
    pub storage: Arc<SqliteStorage>,
    /// The relay's figures, kept across restarts.
    pub metrics: Arc<Metrics>,
    pub fingerprint: [u8; 32],
    pub addr: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
}

/// A relay on `bind` over `storage`, with the keys of `relay_dir`; and its
/// certificate's fingerprint.
fn serve(
    relay_dir: &Path,
    storage: &Arc<SqliteStorage>,
    metrics: &Arc<Metrics>,
    limits: &Limits,
    bind: SocketAddr,
) -> (Relay, [u8; 32]) {
    let tls = ward_relay::tls::load_or_create(relay_dir, None).unwrap();
    let audit_key = ward_relay::keys::load_or_create_audit_key(relay_dir).unwrap();
    let reset_key = ward_relay::keys::load_or_create_reset_key(relay_dir).unwrap();
    let relay = Relay::start(
        RelayOptions {
            bind,
            server_config: ward_relay::tls::server_config(&tls, limits).unwrap(),
            limits: limits.clone(),
            audit_key,
            tree_head_interval: Duration::from_millis(500),
            expiry_interval: Duration::from_millis(200),
            revocation_poll_interval: Duration::from_millis(200),
            reset_key,
        },
        Arc::clone(storage) as Arc<dyn Storage>,
        Arc::clone(metrics),
    )
    .unwrap();
    (relay, tls.fingerprint)
}

impl TestRelay {
    pub fn start() -> Self {
        Self::start_with(Limits::default())
    }

    pub fn start_with(limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let relay_dir = dir.path().join("relay");
        std::fs::create_dir_all(&relay_dir).unwrap();
        let storage = Arc::new(
            SqliteStorage::open(
                &relay_dir,
                StorageConfig {
                    max_queue_depth: limits.max_queue_depth,
                    max_one_time_prekeys: limits.max_one_time_prekeys,
                    ..StorageConfig::default()
                },
            )
            .unwrap(),
        );
        let metrics = Arc::new(Metrics::new());
        let (relay, fingerprint) = serve(
            &relay_dir,
            &storage,
            &metrics,
            &limits,
            "127.0.0.1:0".parse().unwrap(),
        );
        Self {
            addr: relay.local_addr().unwrap(),
            relay: Some(relay),
            limits,
            storage,
            metrics,
            fingerprint,
            dir,
        }
    }

    /// Stops the relay (it closes every connection) and starts it again on
    /// the same address, data directory and storage.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.resume().await;
    }

    /// Starts the stopped relay again on the same address (as soon as the
    /// stopped relay's last connection task has let go of the socket).
    pub async fn resume(&mut self) {
        assert!(self.relay.is_none(), "the relay is running");
        for _ in 0..100 {
            if std::net::UdpSocket::bind(self.addr).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (relay, _) = serve(
            &self.dir.path().join("relay"),
            &self.storage,
            &self.metrics,
            &self.limits,
            self.addr,
        );
        self.relay = Some(relay);
    }

    pub fn add_user(&self, user: &str) {
        let role = ward_relay::storage::Role::new("clinician").unwrap();
        self.storage
            .create_user(&UserId::new(user).unwrap(), &role, None, now_ms())
            .unwrap();
    }

    pub fn token(&self, user: &str) -> String {
        let (token, hash) = ward_relay::keys::new_enrollment_token();
        self.storage
            .issue_enrollment_token(
                &hash,
                &UserId::new(user).unwrap(),
                None,
                now_ms(),
                now_ms() + HOUR_MS,
            )
            .unwrap();
        token
    }

    /// Where the store of device `name` lives.
    pub fn store_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.ward"))
    }

    pub async fn enroll(&self, user: &str, name: &str, options: MessengerOptions) -> Messenger {
        Messenger::enroll(
            self.store_path(name),
            &key_of(name),
            self.addr,
            self.fingerprint,
            &self.token(user),
            options,
        )
        .await
        .unwrap()
    }

    pub async fn stop(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.shutdown().await.unwrap();
        }
    }
}

/// A storage key per device name (the app would keep it in the platform's
/// key store).
pub fn key_of(name: &str) -> StorageKey {
    let mut key = [0u8; 32];
    for (k, b) in key.iter_mut().zip(name.bytes().cycle()) {
        *k = b;
    }
    StorageKey::new(key)
}

/// No auto-lock, so that slow machines do not lock tests that do not
/// test locking.
pub fn options() -> MessengerOptions {
    MessengerOptions {
        auto_lock_after: None,
        ..MessengerOptions::default()
    }
}

/// [`options`] with the administrator key of role schedules pinned.
pub fn with_admin_key(admin_public: [u8; 32]) -> MessengerOptions {
    MessengerOptions {
        role_admin_keys: vec![admin_public],
        ..options()
    }
}

pub async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

pub async fn next_event(m: &mut Messenger) -> Event {
    tokio::time::timeout(EVENT_TIMEOUT, m.next_event())
        .await
        .expect("no event in time")
        .unwrap()
}

/// The next message event, skipping receipts and identity events.
pub async fn next_message(m: &mut Messenger) -> IncomingMessage {
    loop {
        if let Event::Message(message) = next_event(m).await {
            return message;
        }
    }
}

/// The next receipt, skipping other events.
pub async fn next_receipt(m: &mut Messenger) -> (String, ReceiptKind, Vec<[u8; 16]>) {
    loop {
        if let Event::Receipt {
            from_user,
            kind,
            message_ids,
            ..
        } = next_event(m).await
        {
            return (from_user, kind, message_ids);
        }
    }
}

/// Asserts that no event arrives for a short while.
pub async fn assert_quiet(m: &mut Messenger) {
    let waited = tokio::time::timeout(Duration::from_millis(300), m.next_event()).await;
    assert!(waited.is_err(), "unexpected event: {waited:?}");
}

/// Opens the device `name` again.
pub async fn reopen(relay: &TestRelay, name: &str, options: MessengerOptions) -> Messenger {
    Messenger::open(relay.store_path(name), &key_of(name), options)
        .await
        .unwrap()
}

/// The events that arrive until none has for `quiet` (at most a
/// thousand: a messenger that repeats an event forever fails the test
/// instead of hanging it).
pub async fn events_until_quiet(m: &mut Messenger, quiet: Duration) -> Vec<Event> {
    let mut events = Vec::new();
    while let Ok(event) = tokio::time::timeout(quiet, m.next_event()).await {
        events.push(event.unwrap());
        assert!(events.len() < 1000, "endless events: {:?}", &events[..10]);
    }
    events
}

/// The ids of the message events among `events`, in order.
pub fn message_ids(events: &[Event]) -> Vec<[u8; 16]> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.message_id),
            _ => None,
        })
        .collect()
}

/// A relay with the users `alice` and `bob`, and a device of each
/// (stores `alice` and `bob`).
pub async fn alice_and_bob(
    alice: MessengerOptions,
    bob: MessengerOptions,
) -> (TestRelay, Messenger, Messenger) {
    let relay = TestRelay::start();
    relay.add_user("alice");
    relay.add_user("bob");
    let alice = relay.enroll("alice", "alice", alice).await;
    let bob = relay.enroll("bob", "bob", bob).await;
    (relay, alice, bob)
}
