//! `ward-relay`: runs the relay, administers its directory and exports and
//! verifies its audit log.
//!
//! ```text
//! ward-relay serve [--config FILE] [--data-dir DIR] [--bind ADDR] [--metrics-bind ADDR]
//! ward-relay admin user add <id> --role <role>
//! ward-relay admin user list
//! ward-relay admin token issue <user> [--valid-hours 24]
//! ward-relay admin device list <user>
//! ward-relay admin device revoke <device-hex>
//! ward-relay admin device wipe <device-hex>
//! ward-relay admin queue show <user>
//! ward-relay audit export --out FILE
//! ward-relay audit verify FILE [--relay-key HEX]
//! ward-relay audit heads
//! ward-relay audit prove-inclusion --index I [--size N]
//! ward-relay audit prove-consistency --from M [--to N]
//! ward-relay audit check-consistency --old-head HEX --new-head HEX [--proof HEX,...] --relay-key HEX
//! ```
//!
//! The audit commands' output formats are specified in
//! spec/09-audit-log.md, "The `ward-relay audit` command".
//!
//! Every command takes `--config` and `--data-dir`. Results go to standard
//! output, logs (RUST_LOG, default `info`; text or JSON per the
//! configuration) to standard error. On failure the command prints one line,
//! `ward-relay: error: ...`, and exits with status 1 (2 for a usage error).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use ward_relay::admin::{self, AdminError};
use ward_relay::config::{ConfigError, LogFormat, Overrides, RelayConfig};
use ward_relay::keys::{self, KeyError};
use ward_relay::metrics::{self, Metrics};
use ward_relay::server::{self, ServerError};
use ward_relay::storage::{SqliteStorage, StorageError};
use ward_relay::tls::TlsError;

/// Ward's self-hostable relay.
#[derive(Debug, Parser)]
#[command(name = "ward-relay", version, about, max_term_width = 100)]
struct Cli {
    /// The configuration file (TOML; see ward-relay.example.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data directory (replaces the file's `data_dir`).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the relay until interrupted (Ctrl-C or SIGTERM).
    Serve {
        /// The UDP address to listen on (replaces the file's `bind`).
        #[arg(long, value_name = "ADDR")]
        bind: Option<SocketAddr>,
        /// The TCP address serving GET /metrics (replaces the file's
        /// `metrics_bind`).
        #[arg(long, value_name = "ADDR")]
        metrics_bind: Option<SocketAddr>,
    },
    /// Manages users, enrollment tokens, devices and queues.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Exports and verifies the audit log; lists its signed tree heads;
    /// prints and checks inclusion and consistency proofs.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Devices.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Message queues.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// On-call role schedules, signed with an administrator key (spec/15).
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RoleCommand {
    /// Makes an administrator key (mode 0600) and prints its public key,
    /// for `role_admin_keys` and the devices' configuration.
    Keygen {
        /// Where to write the key; never replaced.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Signs a schedule (TOML: role_id, display_name, department, version,
    /// [[assignment]] user, from, to in seconds since the Unix epoch).
    /// Needs only the key, not the relay.
    Sign {
        /// The administrator key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The schedule.
        #[arg(long, value_name = "FILE")]
        schedule: PathBuf,
        /// Where to write the signed schedule; never replaced.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Turns an iCalendar rota (.ics) into a schedule file to check and
    /// sign: each event's ATTENDEE (mailto:) or mapped SUMMARY is the
    /// holder. An event that cannot be mapped fails the import, naming it.
    Import {
        /// The .ics file.
        #[arg(long, value_name = "FILE")]
        ics: PathBuf,
        /// The role id, e.g. cardiology-oncall.
        #[arg(long)]
        role: String,
        /// What people read, e.g. "On-call cardiology".
        #[arg(long)]
        display_name: String,
        /// The department.
        #[arg(long, default_value = "")]
        department: String,
        /// The version the schedule gets: above the published one.
        #[arg(long)]
        version: u64,
        /// IANA time zone of floating times and all-day events.
        #[arg(long)]
        timezone: Option<String>,
        /// SUMMARY=USER for events without an ATTENDEE (repeatable).
        #[arg(long = "map", value_name = "SUMMARY=USER", value_parser = ward_relay::roles::parse_map)]
        map: Vec<(String, String)>,
        /// Where to write the schedule; never replaced.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Checks a signed schedule under role_admin_keys and publishes it, if
    /// its version is newer than the one held.
    Publish {
        /// The signed schedule.
        file: PathBuf,
    },
    /// Who holds a role now, and its gaps and overlaps in the next 7 days.
    Show {
        /// The role id.
        role: String,
    },
    /// Every role with a schedule.
    List,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Creates a user.
    Add {
        /// The user id (1 to 64 characters of a-z A-Z 0-9 . _ @ + -).
        id: String,
        /// The user's role, for example `nurse`.
        #[arg(long)]
        role: String,
    },
    /// Lists every user.
    List,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issues a single-use enrollment token and prints it (only this once).
    Issue {
        /// The user the enrolled device will belong to.
        user: String,
        /// Hours until the token expires.
        #[arg(long, default_value_t = admin::DEFAULT_TOKEN_VALID_HOURS)]
        valid_hours: u32,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Lists a user's devices, revoked ones included.
    List {
        /// The user.
        user: String,
    },
    /// Revokes a device: it can no longer connect; its queue and prekeys are
    /// deleted.
    Revoke {
        /// The device's key, 64 hexadecimal digits.
        device: String,
    },
    /// Instructs a (lost) device to erase its local store: pushed to it at
    /// once if connected, else when it next connects; no message is
    /// delivered to it any more. The relay revokes the device once it
    /// acknowledges; revoke it by hand if it never comes back.
    Wipe {
        /// The device's key, 64 hexadecimal digits.
        device: String,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Shows each active device's queue length and one-time prekey count.
    Show {
        /// The user.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Signs a tree head, then writes and verifies the whole log.
    Export {
        /// The export file to write (replaced if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Verifies an export.
    Verify {
        /// The export file.
        file: PathBuf,
        /// The relay's audit public key, 64 hexadecimal digits (default: the
        /// public half of the data directory's audit signing key).
        #[arg(long, value_name = "HEX")]
        relay_key: Option<String>,
    },
    /// Lists the signed tree heads, oldest first, one per line: tree size,
    /// timestamp (ms since the Unix epoch), timestamp (UTC), root (hex),
    /// the encoded signed head (hex).
    Heads,
    /// Prints an inclusion proof of one entry, verified first: `key value`
    /// lines `index`, `tree-size`, `leaf-hash`, `root`, `signed-head` (if a
    /// head of that size exists), then one `proof` line per hash.
    ProveInclusion {
        /// The entry's index (its sequence number, from 0).
        #[arg(long, value_name = "I")]
        index: u64,
        /// The tree size to prove inclusion in (default: the size of the
        /// latest signed tree head).
        #[arg(long, value_name = "N")]
        size: Option<u64>,
    },
    /// Prints a consistency proof between two tree sizes, verified first:
    /// `key value` lines `from-size`, `to-size`, `from-root`, `to-root`,
    /// `from-head` and `to-head` (if heads of those sizes exist), then one
    /// `proof` line per hash.
    ProveConsistency {
        /// The older tree size.
        #[arg(long, value_name = "M")]
        from: u64,
        /// The newer tree size (default: the size of the latest signed tree
        /// head).
        #[arg(long, value_name = "N")]
        to: Option<u64>,
    },
    /// Checks, without a data directory, that a newer signed tree head
    /// extends an older one: both verify under the relay key and the
    /// consistency proof between them verifies.
    CheckConsistency {
        /// The older signed tree head, hex (as `heads` prints it).
        #[arg(long, value_name = "HEX")]
        old_head: String,
        /// The newer signed tree head, hex.
        #[arg(long, value_name = "HEX")]
        new_head: String,
        /// The consistency proof's hashes, hex, comma-separated or repeated
        /// (none, or empty, for an empty proof).
        #[arg(long, value_name = "HEX[,HEX...]")]
        proof: Vec<String>,
        /// The relay's audit public key, 64 hexadecimal digits, obtained out
        /// of band.
        #[arg(long, value_name = "HEX")]
        relay_key: String,
    },
}

/// Why a command failed; printed as one line.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Role(#[from] ward_relay::roles::RoleError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the system clock is before 1970")]
    Clock,
    #[error("{0}")]
    Other(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line; no error here carries a key or a token.
            let line = e.to_string().replace('\n', " ");
            eprintln!("ward-relay: error: {line}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let Cli {
        config,
        data_dir,
        command,
    } = cli;
    let mut overrides = Overrides {
        data_dir,
        ..Overrides::default()
    };
    if let Command::Serve { bind, metrics_bind } = &command {
        overrides.bind = *bind;
        overrides.metrics_bind = *metrics_bind;
    }
    let mut config = RelayConfig::load(config.as_deref())?;
    config.apply(&overrides);
    init_logging(config.log_format);

    match command {
        Command::Serve { .. } => serve(config),
        Command::Admin { command } => run_admin(&config, command),
        Command::Audit { command } => run_audit(&config, command),
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (impossible here) would only be refused.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn now_ms() -> Result<u64, CliError> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CliError::Clock)?;
    u64::try_from(since.as_millis()).map_err(|_| CliError::Clock)
}

fn open_storage(config: &RelayConfig) -> Result<SqliteStorage, CliError> {
    Ok(SqliteStorage::open(
        &config.data_dir,
        config.storage_config(),
    )?)
}

fn run_admin(config: &RelayConfig, command: AdminCommand) -> Result<(), CliError> {
    // Opened by the commands that use it: role keys need no relay.
    let storage = || open_storage(config);
    let out = match command {
        AdminCommand::User {
            command: UserCommand::Add { id, role },
        } => admin::add_user(&storage()?, &id, &role, now_ms()?)?.to_string(),
        AdminCommand::User {
            command: UserCommand::List,
        } => admin::list_users(&storage()?)?.to_string(),
        AdminCommand::Token {
            command: TokenCommand::Issue { user, valid_hours },
        } => {
            let issued = admin::issue_token(&storage()?, &user, valid_hours, now_ms()?)?;
            tracing::info!(user = issued.user.as_str(), "issued an enrollment token");
            // The one place the token is shown.
            println!("{issued}");
            return Ok(());
        }
        AdminCommand::Device {
            command: DeviceCommand::List { user },
        } => admin::list_devices(&storage()?, &user)?.to_string(),
        AdminCommand::Device {
            command: DeviceCommand::Revoke { device },
        } => admin::revoke_device(&storage()?, &device, now_ms()?)?.to_string(),
        AdminCommand::Device {
            command: DeviceCommand::Wipe { device },
        } => admin::wipe_device(&storage()?, &device, now_ms()?)?.to_string(),
        AdminCommand::Queue {
            command: QueueCommand::Show { user },
        } => admin::show_queues(&storage()?, &user)?.to_string(),
        AdminCommand::Role { command } => return run_role(config, command),
    };
    println!("{out}");
    Ok(())
}

/// `admin role ...`: making and using the administrator key needs no relay,
/// so only the commands that read or change the directory open it.
fn run_role(config: &RelayConfig, command: RoleCommand) -> Result<(), CliError> {
    use ward_relay::roles;
    let out = match command {
        RoleCommand::Keygen { out } => roles::keygen(&out)?,
        RoleCommand::Sign { key, schedule, out } => {
            roles::sign(&key, &schedule, &out, now_ms()? / 1000)?.to_string()
        }
        RoleCommand::Import {
            ics,
            role,
            display_name,
            department,
            version,
            timezone,
            map,
            out,
        } => {
            let options = roles::ImportOptions {
                role_id: role,
                display_name,
                department,
                version,
                timezone,
                map,
            };
            roles::import(&ics, &options, &out)?.to_string()
        }
        RoleCommand::Publish { file } => {
            let storage = open_storage(config)?;
            roles::publish(&storage, &config.role_admin_keys, &file, now_ms()?)?.to_string()
        }
        RoleCommand::Show { role } => {
            let storage = open_storage(config)?;
            roles::show(&storage, &config.role_admin_keys, &role, now_ms()? / 1000)?.to_string()
        }
        RoleCommand::List => roles::list(&open_storage(config)?)?.to_string(),
    };
    println!("{out}");
    Ok(())
}

fn run_audit(config: &RelayConfig, command: AuditCommand) -> Result<(), CliError> {
    match command {
        AuditCommand::Export { out } => {
            let storage = open_storage(config)?;
            let key = keys::load_or_create_audit_key(&config.data_dir)?;
            let report = admin::export(&storage, &key, &out, now_ms()?)?;
            println!("{report}");
        }
        AuditCommand::Verify { file, relay_key } => {
            let expected = match relay_key {
                Some(hex) => admin::parse_relay_key(&hex)?,
                None => data_dir_relay_key(&config.data_dir)?,
            };
            let report = admin::verify(&file, expected)?;
            println!("{report}");
        }
        AuditCommand::Heads => {
            let storage = open_storage(config)?;
            let key = data_dir_verifying_key(&config.data_dir)?;
            print!("{}", admin::list_heads(&storage, key.as_ref())?);
        }
        AuditCommand::ProveInclusion { index, size } => {
            let storage = open_storage(config)?;
            let key = data_dir_verifying_key(&config.data_dir)?;
            print!(
                "{}",
                admin::prove_inclusion(&storage, key.as_ref(), index, size)?
            );
        }
        AuditCommand::ProveConsistency { from, to } => {
            let storage = open_storage(config)?;
            let key = data_dir_verifying_key(&config.data_dir)?;
            print!(
                "{}",
                admin::prove_consistency(&storage, key.as_ref(), from, to)?
            );
        }
        AuditCommand::CheckConsistency {
            old_head,
            new_head,
            proof,
            relay_key,
        } => {
            // Touches no data directory: the auditor's side.
            print!(
                "{}",
                admin::check_consistency(&old_head, &new_head, &proof, &relay_key)?
            );
        }
    }
    Ok(())
}

/// The data directory's audit public key, or `None` if it has none (then
/// no stored head can be checked; the commands say so if one must be).
fn data_dir_verifying_key(data_dir: &Path) -> Result<Option<ward_audit::VerifyingKey>, CliError> {
    match keys::load_audit_verifying_key(data_dir) {
        Ok(key) => Ok(Some(key)),
        Err(KeyError::Missing { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn data_dir_relay_key(data_dir: &Path) -> Result<[u8; 32], CliError> {
    match keys::load_audit_verifying_key(data_dir) {
        Ok(key) => Ok(key.to_bytes()),
        Err(KeyError::Missing { path, .. }) => Err(CliError::Other(format!(
            "no audit signing key at {}; pass the relay's key with --relay-key",
            path.display()
        ))),
        Err(e) => Err(e.into()),
    }
}

fn serve(config: RelayConfig) -> Result<(), CliError> {
    let metrics = Arc::new(Metrics::new());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(async move {
        let metrics_task = match config.metrics_bind {
            Some(addr) => {
                let (bound, task) = metrics::serve(addr, Arc::clone(&metrics))
                    .await
                    .map_err(|source| CliError::Metrics { addr, source })?;
                tracing::info!(addr = %bound, "serving metrics at /metrics");
                Some(task)
            }
            None => None,
        };
        let launched = server::launch(&config, metrics)?;
        let addr = launched
            .relay
            .local_addr()
            .map_err(|source| ServerError::Bind {
                addr: config.bind,
                source,
            })?;
        let fingerprint = hex::encode(launched.fingerprint);
        println!("ward-relay listening on {addr}, certificate sha256 fingerprint {fingerprint}");
        shutdown_signal().await?;
        tracing::info!("shutting down");
        launched.relay.shutdown().await?;
        if let Some(task) = metrics_task {
            task.abort();
        }
        Ok(())
    })
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM.
async fn shutdown_signal() -> Result<(), CliError> {
    let signal_error = |e: std::io::Error| CliError::Other(format!("listening for signals: {e}"));
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted.map_err(signal_error),
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(signal_error)
    }
}
