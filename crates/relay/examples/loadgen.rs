//! A load generator for the relay: simulated devices on loopback.
//!
//! The relay runs in a child process (this program started again with the
//! hidden `--serve DIR`), wired as `ward-relay serve` wires it, so that its
//! memory and CPU time can be read from `/proc`. The parent prepares users
//! and enrollment tokens directly in the data directory's storage before
//! the relay starts, then drives devices over QUIC with `ward-client`.
//!
//! ```text
//! cargo run --release -p ward-relay --example loadgen -- --mode throughput --pairs 50 --outstanding 32
//! cargo run --release -p ward-relay --example loadgen -- --mode latency --pairs 50 --rate 2000
//! bash -c 'ulimit -n 20000; cargo run --release -p ward-relay --example loadgen -- --mode idle --devices 10000'
//! ```
//!
//! Modes:
//!
//! - `throughput`: `--pairs` senders and as many recipients (sender *i*
//!   sends to recipient *i*), each sender keeping `--outstanding` Send
//!   requests in flight (one request stream each) of `--payload` bytes of
//!   opaque ciphertext. The first 8 bytes carry the send time (ns since the
//!   generator's start). Recipients read their delivery stream and
//!   acknowledge in batches (`--ack-batch` ids or `--ack-interval-ms`,
//!   whichever first, at most `--ack-outstanding` Ack requests in flight).
//!   A message counts as delivered when its recipient reads it; rates and
//!   latencies are over a `--duration` window after a `--warmup`.
//! - `latency`: the same devices, but senders send at a fixed total
//!   `--rate` (open loop: a send does not wait for the previous one).
//! - `idle`: `--devices` devices connect and enroll (authenticate), then
//!   sit idle; the relay's memory before and after gives the cost per
//!   connected device (`--connect-only`: QUIC connections that do not
//!   authenticate). Each simulated device has its own client endpoint, so
//!   its own UDP socket: raise `ulimit -n` above `--devices`.
//!
//! Each mode prints the machine, the command, and one summary block: rates
//! over the window, latency percentiles, the relay's Prometheus counters,
//! CPU time per thread name of both processes (and of the whole machine),
//! the relay's file I/O from `/proc/<pid>/io`, and its memory (RSS, and
//! anonymous and proportional sizes from `smaps_rollup`). `--ack-batch 0`
//! turns acknowledgments off, `--dir-base` picks the file system of the
//! data directory, and `--relay-wrapper` starts the relay under a profiler.
//!
//! Durability is the relay's default (`synchronous = FULL`, group commit);
//! the only limit changed is the per-connection request rate, which would
//! otherwise throttle the generator's few connections. Every loop here is
//! bounded in count and in time.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use ward_audit::UserId;
use ward_client::wire::{self, request::Body as Req, response::Body as Resp};
use ward_client::{ClientError, Deliveries, RelayConnection};
use ward_core::IdentityKeyPair;
use ward_relay::config::RelayConfig;
use ward_relay::metrics::{self, Metrics};
use ward_relay::server::{Limits, Relay, RelayOptions};
use ward_relay::storage::{Role, SqliteStorage, Storage};
use ward_relay::{keys, tls};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// How often `ward-relay serve` deletes expired messages.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);
/// How often `ward-relay serve` polls for revocations.
const REVOCATION_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Longest wait for one request or one connection set-up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the relay child to start or to stop.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
/// After the window: longest wait for messages still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The most Send requests one sender keeps in flight in latency mode.
const MAX_OPEN_LOOP_IN_FLIGHT: usize = 1024;
/// The relay child stops after this long even if the parent never closes
/// its standard input.
const MAX_RELAY_LIFETIME: Duration = Duration::from_secs(2 * 3600);
/// Upper bound on iterations of any per-message loop.
const MAX_ITERATIONS: u64 = 100_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Throughput,
    Latency,
    Idle,
}

/// Drives simulated devices against a relay in a child process.
#[derive(Debug, Parser)]
#[command(name = "loadgen", max_term_width = 100)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value = "throughput")]
    mode: Mode,
    /// Sender/recipient pairs (throughput and latency modes).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Send requests each sender keeps in flight (throughput mode).
    #[arg(long, default_value_t = 32)]
    outstanding: usize,
    /// Total offered rate in messages per second (latency mode).
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Ciphertext bytes per message (at least 8).
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Seconds of load before the measurement window.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Seconds in the measurement window.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Message ids per Ack request, at most; 0: recipients never
    /// acknowledge (messages stay queued, to separate the cost of acks).
    #[arg(long, default_value_t = 64)]
    ack_batch: usize,
    /// A recipient sends a partial Ack batch this long after its first id.
    #[arg(long, default_value_t = 2)]
    ack_interval_ms: u64,
    /// Ack requests one recipient keeps in flight, at most.
    #[arg(long, default_value_t = 8)]
    ack_outstanding: usize,
    /// Devices to connect (idle mode).
    #[arg(long, default_value_t = 1_000)]
    devices: usize,
    /// Idle mode: connect without authenticating, to separate the cost of
    /// a QUIC connection from that of an authenticated device (the relay
    /// closes unauthenticated connections after 10 s, so the wait is cut
    /// to 2 s).
    #[arg(long)]
    connect_only: bool,
    /// Seconds to wait after the last device connected (idle mode).
    #[arg(long, default_value_t = 5.0)]
    idle_wait: f64,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Where the relay's data directory is created (a fresh one per run).
    #[arg(long, default_value = "/tmp")]
    dir_base: PathBuf,
    /// Keep the data directory after the run.
    #[arg(long)]
    keep_dir: bool,
    /// Start the relay through this command (split at spaces), for
    /// profilers: `--relay-wrapper 'heaptrack -o /tmp/relay'`. Memory and
    /// CPU figures then describe the wrapper's process, not the relay.
    #[arg(long, value_name = "COMMAND")]
    relay_wrapper: Option<String>,
    /// Internal: run the relay on this data directory.
    #[arg(long, hide = true, value_name = "DIR")]
    serve: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.serve {
        return serve(dir);
    }
    if args.payload < 8 {
        return Err("--payload must be at least 8 bytes".into());
    }
    print_machine(&args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.mode {
            Mode::Throughput | Mode::Latency => run_traffic(&args).await,
            Mode::Idle => run_idle(&args).await,
        }
    })
}

// ----- the relay child -----

/// The limits of the load run: the defaults, without the per-connection
/// request rate limit (a handful of connections carry all the load).
fn load_limits() -> Limits {
    Limits {
        requests_per_second: 100_000_000,
        request_burst: 100_000_000,
        ..Limits::default()
    }
}

fn relay_config(dir: &Path) -> Result<RelayConfig> {
    Ok(RelayConfig {
        data_dir: dir.to_owned(),
        bind: "127.0.0.1:0".parse()?,
        metrics_bind: Some("127.0.0.1:0".parse()?),
        limits: load_limits(),
        ..RelayConfig::default()
    })
}

/// `--serve DIR`: the relay as `ward-relay serve` starts it, on loopback,
/// until standard input closes. Prints one line:
/// `READY <addr> <fingerprint hex> <metrics addr>`.
fn serve(dir: &Path) -> Result<()> {
    let config = relay_config(dir)?;
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(
        &config.data_dir,
        config.storage_config(),
    )?);
    let identity = tls::load_or_create(&config.data_dir, config.tls.as_ref())?;
    let audit_key = keys::load_or_create_audit_key(&config.data_dir)?;
    let reset_key = keys::load_or_create_reset_key(&config.data_dir)?;
    let server_config = tls::server_config(&identity, &config.limits)?;
    let fingerprint = identity.fingerprint_hex();
    drop(identity);
    let metrics = Arc::new(Metrics::new());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let metrics_bind = config.metrics_bind.ok_or("no metrics address")?;
        let (metrics_addr, metrics_task) =
            metrics::serve(metrics_bind, Arc::clone(&metrics)).await?;
        let options = RelayOptions {
            bind: config.bind,
            server_config,
            limits: config.limits.clone(),
            audit_key,
            tree_head_interval: config.tree_head_interval(),
            expiry_interval: EXPIRY_INTERVAL,
            revocation_poll_interval: REVOCATION_POLL_INTERVAL,
            reset_key,
        };
        let relay = Relay::start(options, storage, metrics)?;
        let addr = relay.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "READY {addr} {fingerprint} {metrics_addr}")?;
            out.flush()?;
        }
        // Until the parent closes our standard input (or dies), at most
        // MAX_RELAY_LIFETIME.
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            std::io::stdin().take(1 << 20).read_to_end(&mut sink)
        });
        let _ = tokio::time::timeout(MAX_RELAY_LIFETIME, stdin_closed).await;
        relay.shutdown().await?;
        metrics_task.abort();
        Ok(())
    })
}

/// The relay child, seen from the parent.
struct RelayProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    addr: SocketAddr,
    fingerprint: [u8; 32],
    metrics_addr: SocketAddr,
}

impl RelayProcess {
    fn spawn(dir: &Path, wrapper: Option<&str>) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut words = wrapper.unwrap_or_default().split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut child = command
            .arg("--serve")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The READY line (a wrapper may print lines of its own first),
            // then whatever else comes, discarded, until the child exits.
            let mut reader = std::io::BufReader::new(stdout);
            let mut tx = Some(tx);
            for _ in 0..1_000_000 {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) if line.starts_with("READY ") => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(Ok(line));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(Err(e));
                        }
                        break;
                    }
                }
            }
        });
        let line = match rx.recv_timeout(CHILD_TIMEOUT) {
            Ok(read) => read?,
            Err(_) => {
                let _ = child.kill();
                return Err("the relay did not start in time".into());
            }
        };
        let mut words = line.split_whitespace();
        if words.next() != Some("READY") {
            let _ = child.kill();
            return Err(format!("unexpected line from the relay: {line:?}").into());
        }
        let addr = words.next().ok_or("no address")?.parse()?;
        let fingerprint = parse_hex32(words.next().ok_or("no fingerprint")?)?;
        let metrics_addr = words.next().ok_or("no metrics address")?.parse()?;
        Ok(Self {
            pid: child.id(),
            child,
            stdin,
            addr,
            fingerprint,
            metrics_addr,
        })
    }

    async fn connect(&self) -> Result<RelayConnection, ClientError> {
        RelayConnection::connect(self.addr, "localhost", self.fingerprint).await
    }

    /// Closes the child's standard input (it shuts down), and waits for it;
    /// kills it if it does not exit in time.
    fn stop(mut self) -> Result<()> {
        drop(self.stdin.take());
        let deadline = Instant::now() + CHILD_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    return Err(format!("the relay exited with {status}").into());
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        let _ = self.child.wait();
        Err("the relay did not stop in time; killed".into())
    }
}

fn parse_hex32(text: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(text)?;
    <[u8; 32]>::try_from(bytes).map_err(|_| "a fingerprint is 32 bytes".into())
}

// ----- preparing the directory -----

/// A device to be: its user, its keys and its enrollment token.
struct DeviceSpec {
    user: String,
    identity: IdentityKeyPair,
    token: String,
    token_hash: [u8; 32],
}

impl DeviceSpec {
    fn key(&self) -> [u8; 32] {
        *self.identity.public().signing_key()
    }
}

fn now_ms() -> Result<u64> {
    Ok(u64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(),
    )?)
}

/// Creates one user per name and one enrollment token each, straight in
/// the storage (from many threads, so that group commit shares the
/// fsyncs), before the relay starts.
fn prepare(dir: &Path, users: Vec<String>) -> Result<Vec<DeviceSpec>> {
    let started = Instant::now();
    let config = relay_config(dir)?;
    let storage = SqliteStorage::open(dir, config.storage_config())?;
    let role = Role::new("clinician")?;
    let now = now_ms()?;
    let mut rng = ward_core::os_rng();
    let specs: Vec<DeviceSpec> = users
        .into_iter()
        .map(|user| {
            let (token, token_hash) = keys::new_enrollment_token();
            DeviceSpec {
                user,
                identity: IdentityKeyPair::generate(&mut rng),
                token,
                token_hash,
            }
        })
        .collect();
    let threads = 64.min(specs.len().max(1));
    let chunk = specs.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = specs
            .chunks(chunk)
            .map(|part| {
                let storage = &storage;
                let role = &role;
                scope.spawn(move || -> Result<()> {
                    for spec in part {
                        let user = UserId::new(&spec.user)?;
                        storage.create_user(&user, role, None, now)?;
                        storage.issue_enrollment_token(
                            &spec.token_hash,
                            &user,
                            None,
                            now,
                            now + 24 * 3_600_000,
                        )?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| "a preparing thread panicked")??;
        }
        Ok(())
    })?;
    drop(storage);
    println!(
        "prepared {} users and tokens in {:.1} s",
        specs.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(specs)
}

/// Connects and enrolls (unless `connect_only`) the devices `range` of
/// `specs`, `concurrency` at a time. Returns the connections in order.
async fn enroll_all(
    relay: &Arc<RelayProcess>,
    specs: &Arc<Vec<DeviceSpec>>,
    range: std::ops::Range<usize>,
    concurrency: usize,
    connect_only: bool,
) -> Result<Vec<RelayConnection>> {
    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let base = range.start;
    let count = range.len();
    for index in range {
        let relay = Arc::clone(relay);
        let specs = Arc::clone(specs);
        let slots = Arc::clone(&slots);
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await?;
            let spec = &specs[index];
            let connection = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let connection = relay.connect().await?;
                if !connect_only {
                    connection.enroll(&spec.token, &spec.identity).await?;
                }
                Ok::<_, ClientError>(connection)
            })
            .await
            .map_err(|_| format!("device {index}: connect + enroll timed out"))??;
            Ok::<_, Error>((index - base, connection))
        });
    }
    let mut connections: Vec<Option<RelayConnection>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, connection) = joined??;
        connections[index] = Some(connection);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "connected{} {count} devices in {elapsed:.1} s ({:.0}/s)",
        if connect_only { "" } else { " and enrolled" },
        count as f64 / elapsed
    );
    connections
        .into_iter()
        .map(|c| c.ok_or_else(|| "a device did not connect".into()))
        .collect()
}

// ----- throughput and latency -----

/// Counters and the measurement window, shared by every task.
struct Run {
    /// The generator's clock origin: payload timestamps count from here.
    t0: Instant,
    window_start: Instant,
    window_end: Instant,
    sent: AtomicU64,
    delivered: AtomicU64,
    acked: AtomicU64,
    sent_total: AtomicU64,
    delivered_total: AtomicU64,
    acked_total: AtomicU64,
    ack_unknown: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Run {
    fn in_window(&self, at: Instant) -> bool {
        at >= self.window_start && at < self.window_end
    }

    fn error(&self, what: String) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(what).or_default() += 1;
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.t0).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Microsecond samples, one list per task.
type Samples = Arc<Mutex<Vec<u32>>>;

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// splitmix64: distinct inputs give distinct, random-looking outputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a sender needs to address its recipient.
struct Route {
    connection: RelayConnection,
    sender: u64,
    recipient_user: String,
    recipient_key: Vec<u8>,
    payload: Vec<u8>,
    next: AtomicU64,
}

impl Route {
    /// One Send of a fresh message, stamped with `at`.
    fn request(&self, run: &Run, at: Instant) -> Req {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut message_id = Vec::with_capacity(16);
        message_id.extend_from_slice(&mix(self.sender << 40 | n).to_be_bytes());
        message_id.extend_from_slice(&mix(!(self.sender << 40 | n)).to_be_bytes());
        let mut ciphertext = self.payload.clone();
        ciphertext[..8].copy_from_slice(&run.stamp(at).to_be_bytes());
        Req::Send(wire::Send {
            message_id,
            user_ids: vec![self.recipient_user.clone()],
            envelopes: vec![wire::Envelope {
                device_key: self.recipient_key.clone(),
                ciphertext,
            }],
            ttl_ms: 0,
            ..Default::default()
        })
    }
}

/// Sends one message and records its outcome; true if the relay stored it.
async fn send_one(route: &Route, run: &Run, rtts: &Samples, at: Instant) -> bool {
    let request = route.request(run, at);
    let started = Instant::now();
    let outcome = tokio::time::timeout(REQUEST_TIMEOUT, route.connection.request(request)).await;
    let done = Instant::now();
    match outcome {
        Ok(Ok(Resp::Sent(_))) => {
            run.sent_total.fetch_add(1, Ordering::Relaxed);
            if run.in_window(done) {
                run.sent.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut rtts) = rtts.lock() {
                    rtts.push(micros(done - started));
                }
            }
            true
        }
        Ok(Ok(_)) => {
            run.error("send: unexpected response".to_owned());
            false
        }
        Ok(Err(e)) => {
            run.error(match e.code() {
                Some(code) => format!("send: {}", code.as_str_name()),
                None => format!("send: {e}"),
            });
            false
        }
        Err(_) => {
            run.error("send: timed out".to_owned());
            false
        }
    }
}

/// Throughput: `outstanding` loops, each one Send at a time, until the
/// window ends.
async fn closed_loop(route: Arc<Route>, run: Arc<Run>, rtts: Samples) {
    for _ in 0..MAX_ITERATIONS {
        let now = Instant::now();
        if now >= run.window_end {
            break;
        }
        if !send_one(&route, &run, &rtts, now).await {
            // A refusal (queue full, ...): let the relay catch up.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Latency: one Send every `interval`, each on its own task, until the
/// window ends. Returns how late the sends were against their schedule.
async fn open_loop(
    route: Arc<Route>,
    run: Arc<Run>,
    rtts: Samples,
    first: Instant,
    interval: Duration,
) -> Vec<u32> {
    let mut lateness = Vec::new();
    let mut in_flight = JoinSet::new();
    for k in 0..MAX_ITERATIONS {
        let Some(at) = u32::try_from(k).ok().and_then(|k| interval.checked_mul(k)) else {
            break;
        };
        let at = first + at;
        if at >= run.window_end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= MAX_OPEN_LOOP_IN_FLIGHT {
            run.error("latency: a sender had too many sends in flight".to_owned());
            let _ = in_flight.join_next().await;
        }
        let now = Instant::now();
        if run.in_window(now) {
            lateness.push(micros(now - at));
        }
        let (route, run, rtts) = (Arc::clone(&route), Arc::clone(&run), Arc::clone(&rtts));
        in_flight.spawn(async move {
            send_one(&route, &run, &rtts, now).await;
        });
    }
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline.into(), in_flight.join_next()).await {}
    lateness
}

/// Reads a recipient's delivery stream: records each message's
/// send-to-receive latency and hands its id to the acknowledging task.
async fn receive(
    mut deliveries: Deliveries,
    run: Arc<Run>,
    latencies: Samples,
    acks: Option<mpsc::Sender<Vec<u8>>>,
) {
    for _ in 0..MAX_ITERATIONS {
        let push = match deliveries.next().await {
            Ok(Some(push)) => push,
            Ok(None) => break,
            Err(e) => {
                run.error(format!("delivery stream: {e}"));
                break;
            }
        };
        let Some(wire::push::Body::Delivery(delivery)) = push.body else {
            continue;
        };
        let now = Instant::now();
        let stamp = delivery
            .ciphertext
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes);
        run.delivered_total.fetch_add(1, Ordering::Relaxed);
        if run.in_window(now) {
            run.delivered.fetch_add(1, Ordering::Relaxed);
            if let Some(stamp) = stamp {
                let latency = run.stamp(now).saturating_sub(stamp) / 1_000;
                if let Ok(mut latencies) = latencies.lock() {
                    latencies.push(u32::try_from(latency).unwrap_or(u32::MAX));
                }
            }
        }
        if let Some(acks) = &acks
            && acks.send(delivery.message_id).await.is_err()
        {
            break;
        }
    }
}

/// Acknowledges a recipient's messages in batches.
async fn acknowledge(
    connection: Arc<RelayConnection>,
    run: Arc<Run>,
    mut ids: mpsc::Receiver<Vec<u8>>,
    batch: usize,
    interval: Duration,
    outstanding: usize,
    stop: Instant,
) {
    let batch = batch.clamp(1, 1_000);
    let mut in_flight = JoinSet::new();
    for _ in 0..MAX_ITERATIONS {
        if Instant::now() >= stop {
            break;
        }
        // The first id, then more until the batch is full or `interval`.
        let first = match tokio::time::timeout(Duration::from_millis(100), ids.recv()).await {
            Ok(Some(id)) => id,
            Ok(None) => break,
            Err(_) => continue,
        };
        let mut pending = vec![first];
        let flush_at = Instant::now() + interval;
        while pending.len() < batch {
            match tokio::time::timeout_at(flush_at.into(), ids.recv()).await {
                Ok(Some(id)) => pending.push(id),
                Ok(None) | Err(_) => break,
            }
        }
        while in_flight.try_join_next().is_some() {}
        while in_flight.len() >= outstanding.max(1) {
            let _ = in_flight.join_next().await;
        }
        let connection = Arc::clone(&connection);
        let run = Arc::clone(&run);
        in_flight.spawn(async move {
            let request = Req::Ack(wire::Ack {
                message_ids: pending,
            });
            match tokio::time::timeout(REQUEST_TIMEOUT, connection.request(request)).await {
                Ok(Ok(Resp::Acked(acked))) => {
                    let deleted = u64::from(acked.deleted);
                    run.acked_total.fetch_add(deleted, Ordering::Relaxed);
                    run.ack_unknown
                        .fetch_add(acked.unknown_ids.len() as u64, Ordering::Relaxed);
                    if run.in_window(Instant::now()) {
                        run.acked.fetch_add(deleted, Ordering::Relaxed);
                    }
                }
                Ok(Ok(_)) => run.error("ack: unexpected response".to_owned()),
                Ok(Err(e)) => run.error(format!("ack: {e}")),
                Err(_) => run.error("ack: timed out".to_owned()),
            }
        });
    }
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline.into(), in_flight.join_next()).await {}
}

async fn run_traffic(args: &Args) -> Result<()> {
    let pairs = args.pairs.max(1);
    let dir = data_dir(args)?;
    let mut users: Vec<String> = (0..pairs).map(|i| format!("sender{i}")).collect();
    users.extend((0..pairs).map(|i| format!("recipient{i}")));
    let specs = Arc::new(prepare(dir.path(), users)?);
    let relay = Arc::new(RelayProcess::spawn(
        dir.path(),
        args.relay_wrapper.as_deref(),
    )?);
    println!(
        "relay pid {} on {}, data directory {} ({})",
        relay.pid,
        relay.addr,
        dir.path().display(),
        filesystem_of(dir.path())
    );
    let mut connections = enroll_all(
        &relay,
        &specs,
        0..specs.len(),
        args.connect_concurrency,
        false,
    )
    .await?;
    let recipient_connections: Vec<Arc<RelayConnection>> =
        connections.drain(pairs..).map(Arc::new).collect();
    let sender_connections = connections;

    let t0 = Instant::now();
    let warmup = Duration::from_secs_f64(args.warmup.max(0.0));
    let window = Duration::from_secs_f64(args.duration.max(0.1));
    let run = Arc::new(Run {
        t0,
        window_start: t0 + warmup,
        window_end: t0 + warmup + window,
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        sent_total: AtomicU64::new(0),
        delivered_total: AtomicU64::new(0),
        acked_total: AtomicU64::new(0),
        ack_unknown: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
    });
    let stop_all = run.window_end + DRAIN_TIMEOUT + REQUEST_TIMEOUT;

    // Recipients first, so that every push is read.
    let mut readers = JoinSet::new();
    let mut ackers = JoinSet::new();
    let mut latencies: Vec<Samples> = Vec::new();
    for connection in &recipient_connections {
        let deliveries = connection.deliveries().await?;
        let samples = Samples::default();
        latencies.push(Arc::clone(&samples));
        if args.ack_batch == 0 {
            readers.spawn(receive(deliveries, Arc::clone(&run), samples, None));
            continue;
        }
        let (tx, rx) = mpsc::channel(4_096);
        readers.spawn(receive(deliveries, Arc::clone(&run), samples, Some(tx)));
        ackers.spawn(acknowledge(
            Arc::clone(connection),
            Arc::clone(&run),
            rx,
            args.ack_batch,
            Duration::from_millis(args.ack_interval_ms),
            args.ack_outstanding,
            stop_all,
        ));
    }

    let mut senders = JoinSet::new();
    let mut rtts: Vec<Samples> = Vec::new();
    let mut lateness_tasks = JoinSet::new();
    let mut payload = vec![0u8; args.payload];
    for (i, connection) in sender_connections.into_iter().enumerate() {
        for (j, byte) in payload.iter_mut().enumerate() {
            *byte = mix((i as u64) << 32 | j as u64) as u8;
        }
        let recipient = &specs[pairs + i];
        let route = Arc::new(Route {
            connection,
            sender: i as u64,
            recipient_user: recipient.user.clone(),
            recipient_key: recipient.key().to_vec(),
            payload: payload.clone(),
            next: AtomicU64::new(0),
        });
        let samples = Samples::default();
        rtts.push(Arc::clone(&samples));
        match args.mode {
            Mode::Latency => {
                let per_sender = (args.rate as f64 / pairs as f64).max(0.001);
                let interval = Duration::from_secs_f64(1.0 / per_sender);
                // Spread the senders over one interval.
                let first = t0 + interval.mul_f64(i as f64 / pairs as f64);
                lateness_tasks.spawn(open_loop(route, Arc::clone(&run), samples, first, interval));
            }
            _ => {
                for _ in 0..args.outstanding.max(1) {
                    senders.spawn(closed_loop(
                        Arc::clone(&route),
                        Arc::clone(&run),
                        Arc::clone(&samples),
                    ));
                }
            }
        }
    }
    println!(
        "load started: {} mode, {pairs} pairs, {} B payload, warm-up {:.1} s, window {:.1} s",
        match args.mode {
            Mode::Latency => format!("latency ({} msg/s offered)", args.rate),
            _ => format!(
                "throughput ({} sends in flight per sender)",
                args.outstanding
            ),
        },
        args.payload,
        warmup.as_secs_f64(),
        window.as_secs_f64()
    );

    // The window, with the relay's counters and CPU time at both ends.
    tokio::time::sleep_until(run.window_start.into()).await;
    let metrics_start = scrape(relay.metrics_addr).await.unwrap_or_default();
    let cpu_start = (thread_cpu(relay.pid), thread_cpu(std::process::id()));
    let machine_start = machine_cpu();
    let io_start = proc_fields(&format!("/proc/{}/io", relay.pid));
    let wall_start = Instant::now();
    tokio::time::sleep_until(run.window_end.into()).await;
    let metrics_end = scrape(relay.metrics_addr).await.unwrap_or_default();
    let cpu_end = (thread_cpu(relay.pid), thread_cpu(std::process::id()));
    let machine_end = machine_cpu();
    let io_end = proc_fields(&format!("/proc/{}/io", relay.pid));
    let wall = wall_start.elapsed();
    let memory = memory(relay.pid);

    // Senders stop at the end of the window; let what is in flight land.
    let mut lateness = Vec::new();
    let stop_senders = Instant::now() + REQUEST_TIMEOUT;
    while let Ok(Some(_)) = tokio::time::timeout_at(stop_senders.into(), senders.join_next()).await
    {
    }
    while let Ok(Some(Ok(mut late))) =
        tokio::time::timeout_at(stop_senders.into(), lateness_tasks.join_next()).await
    {
        lateness.append(&mut late);
    }
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    for _ in 0..10_000 {
        let sent = run.sent_total.load(Ordering::Relaxed);
        if run.delivered_total.load(Ordering::Relaxed) >= sent
            && (args.ack_batch == 0 || run.acked_total.load(Ordering::Relaxed) >= sent)
            || Instant::now() >= drain_until
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = Instant::now();

    let seconds = window.as_secs_f64();
    let mut latency = collect(&latencies);
    let mut rtt = collect(&rtts);
    lateness.sort_unstable();
    let counter_rate = |name: &str| {
        let start = metrics_start.get(name).copied().unwrap_or(0.0);
        let end = metrics_end.get(name).copied().unwrap_or(0.0);
        (end - start) / wall.as_secs_f64()
    };
    println!();
    println!(
        "== {} ==",
        match args.mode {
            Mode::Latency => "latency",
            _ => "throughput",
        }
    );
    println!(
        "pairs {pairs}, payload {} B, {} s window after {} s warm-up",
        args.payload,
        seconds,
        warmup.as_secs_f64()
    );
    if args.mode == Mode::Latency {
        println!("offered          {} msg/s (open loop)", args.rate);
    } else {
        println!("in flight        {} sends per sender", args.outstanding);
    }
    println!(
        "acks             batch {} ids / {} ms, {} in flight per recipient",
        args.ack_batch, args.ack_interval_ms, args.ack_outstanding
    );
    let per_second = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / seconds;
    println!("delivered        {:.0} msg/s", per_second(&run.delivered));
    println!("sent (receipts)  {:.0} msg/s", per_second(&run.sent));
    println!("acked (deleted)  {:.0} msg/s", per_second(&run.acked));
    println!(
        "send-to-receive  {} ({} samples)",
        summary(&mut latency),
        latency.len()
    );
    println!(
        "send request RTT {} (Send to durable receipt)",
        summary(&mut rtt)
    );
    if !lateness.is_empty() {
        println!("pacing lateness  {}", summary(&mut lateness));
    }
    println!(
        "relay counters   stored {:.0}/s, pushed {:.0}/s, acknowledged {:.0}/s",
        counter_rate("ward_relay_messages_stored_total"),
        counter_rate("ward_relay_messages_pushed_total"),
        counter_rate("ward_relay_messages_acknowledged_total")
    );
    println!(
        "totals           sent {}, delivered {}, acked {} (unknown ids {}), drained {:.1} s after the window",
        run.sent_total.load(Ordering::Relaxed),
        run.delivered_total.load(Ordering::Relaxed),
        run.acked_total.load(Ordering::Relaxed),
        run.ack_unknown.load(Ordering::Relaxed),
        drained.duration_since(run.window_end).as_secs_f64()
    );
    print_cpu("relay CPU", &cpu_start.0, &cpu_end.0, wall);
    print_cpu("loadgen CPU", &cpu_start.1, &cpu_end.1, wall);
    if let (Some((busy0, total0)), Some((busy1, total1))) = (machine_start, machine_end) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let share = (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64;
        println!(
            "machine CPU      {:.0} % of one core busy, all processes ({cores} cores: {:.0} % idle)",
            share * cores as f64 * 100.0,
            (1.0 - share) * 100.0
        );
    }
    let io = |key: &str| {
        io_end
            .get(key)
            .copied()
            .unwrap_or(0)
            .saturating_sub(io_start.get(key).copied().unwrap_or(0)) as f64
            / wall.as_secs_f64()
    };
    let stored = counter_rate("ward_relay_messages_stored_total").max(1.0);
    println!(
        "relay I/O        written {:.1} MiB/s ({:.1} KiB per stored message, {:.0} write calls/s), read {:.1} MiB/s ({:.0} read calls/s)",
        io("wchar") / 1_048_576.0,
        io("wchar") / 1024.0 / stored,
        io("syscw"),
        io("rchar") / 1_048_576.0,
        io("syscr")
    );
    if let Some(m) = memory {
        println!("relay memory     {m}");
    }
    print_errors(&run);

    readers.abort_all();
    ackers.abort_all();
    drop(recipient_connections);
    let relay = Arc::try_unwrap(relay).map_err(|_| "the relay handle is still shared")?;
    relay.stop()?;
    finish_dir(dir, args.keep_dir);
    Ok(())
}

fn collect(samples: &[Samples]) -> Vec<u32> {
    let mut all = Vec::new();
    for s in samples {
        if let Ok(s) = s.lock() {
            all.extend_from_slice(&s);
        }
    }
    all
}

fn summary(samples: &mut [u32]) -> String {
    if samples.is_empty() {
        return "no samples".to_owned();
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        f64::from(samples[i]) / 1_000.0
    };
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        at(1.0)
    )
}

fn print_errors(run: &Run) {
    if let Ok(errors) = run.errors.lock() {
        for (what, count) in errors.iter() {
            println!("error            {what}: {count}");
        }
    }
}

// ----- idle connections -----

async fn run_idle(args: &Args) -> Result<()> {
    let count = args.devices.max(1);
    let dir = data_dir(args)?;
    let users = (0..count).map(|i| format!("idle{i}")).collect();
    let specs = Arc::new(prepare(dir.path(), users)?);
    let relay = Arc::new(RelayProcess::spawn(
        dir.path(),
        args.relay_wrapper.as_deref(),
    )?);
    println!(
        "relay pid {} on {}, data directory {} ({})",
        relay.pid,
        relay.addr,
        dir.path().display(),
        filesystem_of(dir.path())
    );
    // One connection first, so that the relay's lazily built state (TLS,
    // the storage's reader pool, the metrics) is in the baseline.
    let mut connections = enroll_all(&relay, &specs, 0..1, 1, false).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = memory(relay.pid).ok_or("cannot read the relay's memory")?;
    if count > 1 {
        connections.extend(
            enroll_all(
                &relay,
                &specs,
                1..count,
                args.connect_concurrency,
                args.connect_only,
            )
            .await?,
        );
    }
    let mut deliveries = Vec::with_capacity(connections.len());
    for connection in &connections {
        deliveries.push(connection.deliveries().await?);
    }
    let added = connections.len() - 1;
    let wait = if args.connect_only {
        args.idle_wait.clamp(0.0, 2.0)
    } else {
        args.idle_wait.max(0.0)
    };
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    let after = memory(relay.pid).ok_or("cannot read the relay's memory")?;
    let metrics = scrape(relay.metrics_addr).await.unwrap_or_default();
    let open = metrics
        .get("ward_relay_connections_open")
        .copied()
        .unwrap_or(f64::NAN);
    let own = memory(std::process::id());

    println!();
    println!("== idle ==");
    println!(
        "devices          {count} connected{} ({open} open per the relay's gauge)",
        if args.connect_only {
            ", the first enrolled, the others not authenticated"
        } else {
            " and enrolled"
        }
    );
    println!("relay before     {before}  (1 device connected)");
    println!("relay after      {after}  ({wait:.0} s idle)");
    let per = |a: u64, b: u64| (a as f64 - b as f64) * 1024.0 / added.max(1) as f64;
    println!(
        "per device       RSS {:.0} B, anonymous {:.0} B, PSS {:.0} B",
        per(after.rss_kib, before.rss_kib),
        per(after.anon_kib, before.anon_kib),
        per(after.pss_kib, before.pss_kib)
    );
    if let Some(own) = own {
        println!("loadgen          {own}");
    }
    drop(deliveries);
    let relay = Arc::try_unwrap(relay).map_err(|_| "the relay handle is still shared")?;
    relay.stop()?;
    drop(connections);
    finish_dir(dir, args.keep_dir);
    Ok(())
}

// ----- /proc -----

/// A process's memory, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
    anon_kib: u64,
    pss_kib: u64,
}

impl core::fmt::Display for Memory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "RSS {:.1} MiB (peak {:.1} MiB), anonymous {:.1} MiB, PSS {:.1} MiB",
            self.rss_kib as f64 / 1024.0,
            self.hwm_kib as f64 / 1024.0,
            self.anon_kib as f64 / 1024.0,
            self.pss_kib as f64 / 1024.0
        )
    }
}

fn proc_fields(path: &str) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let value = rest.split_whitespace().next()?.parse().ok()?;
            Some((key.trim().to_owned(), value))
        })
        .collect()
}

fn memory(pid: u32) -> Option<Memory> {
    let status = proc_fields(&format!("/proc/{pid}/status"));
    let rollup = proc_fields(&format!("/proc/{pid}/smaps_rollup"));
    Some(Memory {
        rss_kib: *status.get("VmRSS")?,
        hwm_kib: status.get("VmHWM").copied().unwrap_or(0),
        anon_kib: rollup.get("Anonymous").copied().unwrap_or(0),
        pss_kib: rollup.get("Pss").copied().unwrap_or(0),
    })
}

/// CPU time (user + system, clock ticks of 10 ms) per thread name.
fn thread_cpu(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten().take(100_000) {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... : comm may hold spaces, so split at the
        // last parenthesis; utime and stime are fields 14 and 15.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        *out.entry(name).or_default() += ticks(11) + ticks(12);
    }
    out
}

fn print_cpu(
    label: &str,
    start: &BTreeMap<String, u64>,
    end: &BTreeMap<String, u64>,
    wall: Duration,
) {
    let wall = wall.as_secs_f64().max(1e-9);
    let mut total = 0u64;
    let mut parts = Vec::new();
    for (name, ticks) in end {
        let delta = ticks.saturating_sub(start.get(name).copied().unwrap_or(0));
        total += delta;
        if delta > 0 {
            parts.push(format!("{name} {:.0} %", delta as f64 / wall));
        }
    }
    println!(
        "{label:<16} {:.0} % of one core ({})",
        total as f64 / wall,
        parts.join(", ")
    );
}

/// Busy and total clock ticks of the whole machine, from /proc/stat.
fn machine_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    // user nice system idle iowait irq softirq steal: idle and iowait are
    // not busy.
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The relay's metrics (`name{labels}` to value).
async fn scrape(addr: SocketAddr) -> Result<HashMap<String, f64>> {
    let body = tokio::time::timeout(Duration::from_secs(5), async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
            .await?;
        let mut body = Vec::new();
        stream.take(1 << 20).read_to_end(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    })
    .await??;
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .lines()
        .filter(|l| l.starts_with("ward_relay_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

// ----- the machine and the data directory -----

fn data_dir(args: &Args) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("ward-loadgen-")
        .tempdir_in(&args.dir_base)?)
}

fn finish_dir(dir: tempfile::TempDir, keep: bool) {
    if keep {
        let path = dir.keep();
        println!("kept {}", path.display());
    }
}

/// The file system holding `path`: type and device, from /proc/self/mounts.
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, point, kind, ..] = fields[..] else {
            continue;
        };
        if path.starts_with(point) && best.as_ref().is_none_or(|(len, _)| point.len() >= *len) {
            best = Some((
                point.len(),
                format!("{kind} on {device}, mounted at {point}"),
            ));
        }
    }
    best.map_or_else(|| "unknown file system".to_owned(), |(_, s)| s)
}

fn print_machine(args: &Args) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or("unknown", |(_, m)| m.trim());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!(
        "machine: {cores} cores, {model}, Linux {}, load average {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "data directory under {} ({})",
        args.dir_base.display(),
        filesystem_of(&args.dir_base)
    );
}
