//! A relay on 127.0.0.1 and devices that talk through it with ward-core
//! sessions, for the integration tests: in this process ([`TestRelay`]),
//! or as `ward-relay serve` in a child process ([`RelayProcess`]).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ward_audit::{AuditEntry, UserId};
use ward_client::wire::{self, ErrorCode, request::Body as Req, response::Body as Resp};
use ward_client::{ClientError, Deliveries, RelayConnection};
use ward_core::{
    IdentityKeyPair, MessageKind, OneTimePreKeyPair, PreKeyBundle, PreKeyMessage, Session,
    SignedPreKeyPair,
};
use ward_relay::metrics::Metrics;
use ward_relay::server::{Limits, Relay, RelayOptions};
use ward_relay::storage::{DeviceKey, SqliteStorage, Storage, StorageConfig};

pub const HOUR_MS: u64 = 3_600_000;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub struct TestRelay {
    pub relay: Option<Relay>,
    pub storage: Arc<SqliteStorage>,
    pub metrics: Arc<Metrics>,
    pub fingerprint: [u8; 32],
    pub addr: std::net::SocketAddr,
    pub dir: PathBuf,
    pub audit_key: ward_audit::SigningKey,
}

pub fn test_limits() -> Limits {
    Limits {
        max_frame_len: 512 * 1024,
        max_ciphertext_len: 64 * 1024,
        ..Limits::default()
    }
}

impl TestRelay {
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, test_limits()).await
    }

    pub async fn start_with(dir: &Path, limits: Limits) -> Self {
        let storage = Arc::new(
            SqliteStorage::open(
                dir,
                StorageConfig {
                    max_queue_depth: limits.max_queue_depth,
                    max_one_time_prekeys: limits.max_one_time_prekeys,
                    ..StorageConfig::default()
                },
            )
            .unwrap(),
        );
        let tls = ward_relay::tls::load_or_create(dir, None).unwrap();
        let audit_key = ward_relay::keys::load_or_create_audit_key(dir).unwrap();
        let reset_key = ward_relay::keys::load_or_create_reset_key(dir).unwrap();
        let metrics = Arc::new(Metrics::new());
        let relay = Relay::start(
            RelayOptions {
                bind: "127.0.0.1:0".parse().unwrap(),
                server_config: ward_relay::tls::server_config(&tls, &limits).unwrap(),
                limits,
                audit_key: audit_key.clone(),
                tree_head_interval: Duration::from_millis(200),
                expiry_interval: Duration::from_millis(100),
                revocation_poll_interval: Duration::from_millis(100),
                reset_key,
            },
            Arc::clone(&storage) as Arc<dyn Storage>,
            Arc::clone(&metrics),
        )
        .unwrap();
        Self {
            addr: relay.local_addr().unwrap(),
            relay: Some(relay),
            storage,
            metrics,
            fingerprint: tls.fingerprint,
            dir: dir.to_owned(),
            audit_key,
        }
    }

    pub async fn connect(&self) -> RelayConnection {
        RelayConnection::connect(self.addr, "localhost", self.fingerprint)
            .await
            .unwrap()
    }

    pub fn add_user(&self, user: &str) {
        let role = ward_relay::storage::Role::new("clinician").unwrap();
        self.storage
            .create_user(&UserId::new(user).unwrap(), &role, None, now_ms())
            .unwrap();
    }

    /// Issues an enrollment token for `user`, valid for an hour.
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

    pub async fn stop(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.shutdown().await.unwrap();
        }
    }
}

/// Any free port on loopback.
pub const ANY_PORT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    0,
));

/// The `ward-relay` binary of this package.
pub const BIN: &str = env!("CARGO_BIN_EXE_ward-relay");

/// Runs `ward-relay admin --data-dir DIR ARGS...`, which must succeed;
/// returns its standard output.
pub fn admin(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["admin", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ward-relay admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An enrollment token for `user`, issued with `ward-relay admin`.
pub fn cli_token(dir: &Path, user: &str) -> String {
    let out = admin(dir, &["token", "issue", user]);
    out.split_whitespace()
        .find(|w| w.starts_with("ward-enroll-"))
        .unwrap_or_else(|| panic!("no token in {out:?}"))
        .to_owned()
}

/// `ward-relay serve` in a child process, as an operator runs it; killed
/// (SIGKILL) when dropped.
pub struct RelayProcess {
    child: Child,
    pub addr: SocketAddr,
    pub fingerprint: [u8; 32],
}

impl RelayProcess {
    /// Starts `ward-relay serve --bind BIND --data-dir DIR` and reads the
    /// address and fingerprint it prints once it listens.
    pub fn spawn(dir: &Path, bind: SocketAddr) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--bind", &bind.to_string(), "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        // "ward-relay listening on <addr>, certificate sha256 fingerprint <hex>"
        let rest = line
            .trim_end()
            .strip_prefix("ward-relay listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let (addr, hex) = rest
            .split_once(", certificate sha256 fingerprint ")
            .unwrap();
        Self {
            child,
            addr: addr.parse().unwrap(),
            fingerprint: ward_relay::tls::parse_fingerprint(hex).unwrap(),
        }
    }

    /// Kills the relay with SIGKILL (it closes no connection, flushes
    /// nothing) and waits until it is gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// A connection to the relay, not yet authenticated.
    pub async fn connect(&self) -> RelayConnection {
        RelayConnection::connect(self.addr, "localhost", self.fingerprint)
            .await
            .unwrap()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device: its keys, its relay connection and its sessions.
pub struct Device {
    pub user: String,
    pub identity: IdentityKeyPair,
    pub signed: SignedPreKeyPair,
    pub one_time: HashMap<u32, OneTimePreKeyPair>,
    pub connection: RelayConnection,
    pub deliveries: Option<Deliveries>,
    pub sessions: HashMap<[u8; 32], Session>,
    next_message: u64,
}

pub fn rng() -> impl rand_core::CryptoRng {
    ward_core::os_rng()
}

impl Device {
    /// Enrolls a new device of `user` (which must exist) and uploads prekeys.
    pub async fn enroll(relay: &TestRelay, user: &str) -> Self {
        let mut rng = rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let token = relay.token(user);
        let connection = relay.connect().await;
        let auth = connection.enroll(&token, &identity).await.unwrap();
        assert_eq!(auth.user_id, user);
        assert!(auth.signed_prekeys_missing);
        let signed = SignedPreKeyPair::generate(&mut rng, &identity, 1, now_ms() / 1000);
        let batch = OneTimePreKeyPair::generate_batch(&mut rng, 1, 10);
        let mut device = Self {
            user: user.to_owned(),
            identity,
            signed,
            one_time: batch.into_iter().map(|k| (k.id(), k)).collect(),
            connection,
            deliveries: None,
            sessions: HashMap::new(),
            next_message: 0,
        };
        device.upload_prekeys().await;
        device.deliveries = Some(device.connection.deliveries().await.unwrap());
        device
    }

    pub fn key(&self) -> [u8; 32] {
        *self.identity.public().signing_key()
    }

    pub async fn upload_prekeys(&self) {
        let one_time_prekeys = self
            .one_time
            .values()
            .map(|k| wire::OneTimePreKey {
                id: k.id(),
                key: k.public().encode(),
            })
            .collect();
        let stored = self
            .connection
            .request(Req::UploadPrekeys(wire::UploadPreKeys {
                signed_prekeys: self.signed.public().encode(),
                one_time_prekeys,
            }))
            .await
            .unwrap();
        assert!(matches!(stored, Resp::PrekeysStored(_)));
    }

    /// Reconnects and authenticates (the old connection is dropped).
    pub async fn reconnect(&mut self, relay: &TestRelay) {
        self.connection = relay.connect().await;
        self.connection.authenticate(&self.identity).await.unwrap();
        self.deliveries = Some(self.connection.deliveries().await.unwrap());
    }

    pub fn new_message_id(&mut self) -> Vec<u8> {
        self.next_message += 1;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.key()[..8]);
        id[8..].copy_from_slice(&self.next_message.to_be_bytes());
        id.to_vec()
    }

    /// The devices a send to `users` must cover: every active device of
    /// them and this user's other devices.
    pub async fn current_devices(&self, users: &[&str]) -> Vec<(String, Vec<u8>)> {
        let mut wanted: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        if !wanted.contains(&self.user) {
            wanted.push(self.user.clone());
        }
        let Resp::Devices(list) = self
            .connection
            .request(Req::GetDevices(wire::GetDevices { user_ids: wanted }))
            .await
            .unwrap()
        else {
            panic!("not a device list")
        };
        let mut out = Vec::new();
        for user in list.users {
            for device in user.devices {
                let identity = ward_core::DeviceIdentity::from_bytes(&device.identity).unwrap();
                if *identity.signing_key() != self.key() {
                    out.push((user.user_id.clone(), identity.signing_key().to_vec()));
                }
            }
        }
        out
    }

    /// Opens sessions with `user`'s devices that have none yet.
    pub async fn claim_sessions(&mut self, user: &str, devices: &[Vec<u8>]) {
        let missing: Vec<Vec<u8>> = devices
            .iter()
            .filter(|d| {
                !self
                    .sessions
                    .contains_key(&<[u8; 32]>::try_from(&d[..]).unwrap())
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            return;
        }
        let Resp::Bundles(bundles) = self
            .connection
            .request(Req::ClaimBundles(wire::ClaimBundles {
                user_id: user.to_owned(),
                device_keys: missing,
            }))
            .await
            .unwrap()
        else {
            panic!("not bundles")
        };
        let mut rng = rng();
        for b in bundles.bundles {
            let identity = ward_core::DeviceIdentity::from_bytes(&b.identity).unwrap();
            let signed = ward_core::SignedPreKeys::decode(&b.signed_prekeys, &identity).unwrap();
            let one_time = b
                .one_time_prekey
                .map(|k| ward_core::OneTimePreKey::decode(&k.key).unwrap());
            let bundle = PreKeyBundle::new(identity.clone(), signed, one_time).unwrap();
            let session = Session::initiate(&mut rng, &self.identity, &bundle).unwrap();
            self.sessions.insert(*identity.signing_key(), session);
        }
    }

    /// Encrypts `text` for every current device of `users` and of this
    /// user, and sends it. Returns the message id.
    pub async fn send_text(&mut self, users: &[&str], text: &[u8]) -> Result<Vec<u8>, ClientError> {
        let devices = self.current_devices(users).await;
        let mut by_user: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        for (user, key) in &devices {
            by_user.entry(user.clone()).or_default().push(key.clone());
        }
        for (user, keys) in &by_user {
            self.claim_sessions(user, keys).await;
        }
        let mut rng = rng();
        let envelopes = devices
            .iter()
            .map(|(_, key)| {
                let session = self
                    .sessions
                    .get_mut(&<[u8; 32]>::try_from(&key[..]).unwrap())
                    .unwrap();
                wire::Envelope {
                    device_key: key.clone(),
                    ciphertext: session.encrypt(&mut rng, text).unwrap(),
                }
            })
            .collect();
        let id = self.new_message_id();
        self.send_envelopes(users, id.clone(), envelopes).await?;
        Ok(id)
    }

    pub async fn send_envelopes(
        &self,
        users: &[&str],
        message_id: Vec<u8>,
        envelopes: Vec<wire::Envelope>,
    ) -> Result<wire::SendReceipt, ClientError> {
        match self
            .connection
            .request(Req::Send(wire::Send {
                message_id,
                user_ids: users.iter().map(|u| u.to_string()).collect(),
                envelopes,
                ttl_ms: 0,
                ..Default::default()
            }))
            .await?
        {
            Resp::Sent(receipt) => Ok(receipt),
            _ => panic!("not a receipt"),
        }
    }

    /// The next pushed message, decrypted (opening a session for a
    /// pre-key message), and acknowledged.
    pub async fn receive(&mut self) -> Received {
        loop {
            let push = tokio::time::timeout(
                Duration::from_secs(10),
                self.deliveries.as_mut().unwrap().next(),
            )
            .await
            .expect("a push within 10 s")
            .unwrap()
            .expect("the delivery stream is open");
            let Some(wire::push::Body::Delivery(d)) = push.body else {
                continue;
            };
            let received = self.open(&d);
            self.ack(std::slice::from_ref(&d.message_id)).await;
            return received;
        }
    }

    pub fn open(&mut self, d: &wire::Delivery) -> Received {
        let sender: [u8; 32] = d.sender_device[..].try_into().unwrap();
        let plaintext = match MessageKind::of(&d.ciphertext).unwrap() {
            MessageKind::PreKey if !self.sessions.contains_key(&sender) => {
                let message = PreKeyMessage::decode(&d.ciphertext).unwrap();
                let one_time = message
                    .one_time_prekey_id()
                    .map(|id| self.one_time.remove(&id).unwrap());
                let (session, text) =
                    Session::accept(&self.identity, &self.signed, one_time.as_ref(), &message)
                        .unwrap();
                self.sessions.insert(sender, session);
                text
            }
            _ => self
                .sessions
                .get_mut(&sender)
                .unwrap()
                .decrypt(&d.ciphertext)
                .unwrap(),
        };
        Received {
            sender_user: d.sender_user.clone(),
            sender_device: sender,
            message_id: d.message_id.clone(),
            seq: d.seq,
            plaintext,
        }
    }

    pub async fn ack(&self, ids: &[Vec<u8>]) -> wire::Acked {
        match self
            .connection
            .request(Req::Ack(wire::Ack {
                message_ids: ids.to_vec(),
            }))
            .await
            .unwrap()
        {
            Resp::Acked(a) => a,
            _ => panic!("not an ack"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub sender_user: String,
    pub sender_device: [u8; 32],
    pub message_id: Vec<u8>,
    pub seq: u64,
    pub plaintext: Vec<u8>,
}

// ----- requests of bare devices (opaque ciphertexts, no sessions) -----

/// The code of a refusal (panics if `e` is another error).
pub fn refused(e: ClientError) -> ErrorCode {
    e.code().unwrap_or_else(|| panic!("not a refusal: {e}"))
}

/// The code a request is refused with (panics if it is accepted).
pub async fn code_of(c: &RelayConnection, body: Req) -> ErrorCode {
    match c.request(body).await {
        Ok(answer) => panic!("accepted: {answer:?}"),
        Err(e) => refused(e),
    }
}

/// A device enrolled on its own connection, without prekeys: enough for
/// every request that does not open a session.
pub struct Bare {
    pub identity: IdentityKeyPair,
    pub connection: RelayConnection,
}

impl Bare {
    pub fn key(&self) -> [u8; 32] {
        *self.identity.public().signing_key()
    }

    pub fn identity_bytes(&self) -> Vec<u8> {
        self.identity.public().to_bytes().to_vec()
    }
}

/// Enrolls a new device of `user` (which must exist), without prekeys.
pub async fn enroll_bare(relay: &TestRelay, user: &str) -> Bare {
    enroll_bare_as(relay, user, IdentityKeyPair::generate(&mut rng())).await
}

pub async fn enroll_bare_as(relay: &TestRelay, user: &str, identity: IdentityKeyPair) -> Bare {
    let connection = relay.connect().await;
    let auth = connection
        .enroll(&relay.token(user), &identity)
        .await
        .unwrap();
    assert_eq!(auth.user_id, user);
    Bare {
        identity,
        connection,
    }
}

/// The relay's whole audit log.
pub fn audit(relay: &TestRelay) -> Vec<AuditEntry> {
    let key = ward_audit::VerifyingKey::from(&relay.audit_key);
    relay.storage.export_audit(&key).unwrap().entries
}

/// How many messages are queued for the device.
pub fn queue_len(relay: &TestRelay, key: [u8; 32]) -> u64 {
    relay.storage.queue_len(&DeviceKey(key)).unwrap()
}

/// `Fetch{after_seq, limit}`, which must be answered.
pub async fn fetch(c: &RelayConnection, after_seq: u64, limit: u32) -> Vec<wire::Delivery> {
    match c
        .request(Req::Fetch(wire::Fetch { after_seq, limit }))
        .await
        .unwrap()
    {
        Resp::Messages(m) => m.messages,
        other => panic!("not messages: {other:?}"),
    }
}

/// `Ack` of `ids`, which must be answered.
pub async fn ack(c: &RelayConnection, ids: &[[u8; 16]]) -> wire::Acked {
    match c
        .request(Req::Ack(wire::Ack {
            message_ids: ids.iter().map(|i| i.to_vec()).collect(),
        }))
        .await
        .unwrap()
    {
        Resp::Acked(a) => a,
        other => panic!("not an ack: {other:?}"),
    }
}

/// The `current_devices` of a `STALE_DEVICES` refusal, as (user, device
/// identities) sorted by user (panics on any other outcome).
pub fn stale_lists(e: ClientError) -> Vec<(String, Vec<Vec<u8>>)> {
    match e {
        ClientError::Refused {
            code: ErrorCode::StaleDevices,
            current_devices,
            ..
        } => {
            let mut lists: Vec<(String, Vec<Vec<u8>>)> = current_devices
                .into_iter()
                .map(|u| {
                    (
                        u.user_id,
                        u.devices.into_iter().map(|d| d.identity).collect(),
                    )
                })
                .collect();
            lists.sort();
            lists
        }
        other => panic!("not STALE_DEVICES: {other}"),
    }
}

/// Polls `done` every 20 ms until it holds or `within` has passed.
pub async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
