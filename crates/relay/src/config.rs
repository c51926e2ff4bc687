//! The relay's configuration: a TOML file (every field optional, unknown
//! fields refused) and the command-line flags that override it.
//!
//! `ward-relay.example.toml`, next to the crate's `Cargo.toml`, documents
//! every field with its default.
//!
//! Relative paths (`data_dir`, `tls.cert_file`, `tls.key_file`,
//! `stateless_reset_key_file`) are taken relative to the relay's working
//! directory, not to the file.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::server::limits::Limits;
use crate::storage::StorageConfig;

/// The data directory when neither the file nor `--data-dir` names one.
pub const DEFAULT_DATA_DIR: &str = "./ward-relay-data";

/// The QUIC address when neither the file nor `--bind` names one.
pub const DEFAULT_BIND: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 7443));

/// The usual metrics address (`metrics_bind` has no default: metrics are off
/// unless configured; this is the value the example file suggests).
pub const SUGGESTED_METRICS_BIND: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 9464));

/// Seconds between two signed tree heads when the log grew.
pub const DEFAULT_TREE_HEAD_INTERVAL_SECS: u64 = 60;

/// The largest configuration file read, in bytes.
pub const MAX_CONFIG_LEN: u64 = 1024 * 1024;

/// The relay's configuration. Start from [`Default`] or
/// [`load`](Self::load) a file; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Where the database, the TLS certificate (if generated) and the audit
    /// signing key live. Default [`DEFAULT_DATA_DIR`].
    pub data_dir: PathBuf,
    /// The UDP address the QUIC endpoint binds. Default [`DEFAULT_BIND`].
    pub bind: SocketAddr,
    /// The certificate and key files; `None` (the default): a self-signed
    /// certificate in the data directory, created on first start.
    pub tls: Option<TlsFiles>,
    /// The QUIC stateless-reset key's file (32 bytes, mode 0600), which
    /// must exist; relays behind one address share one. `None` (the
    /// default): [`crate::keys::RESET_KEY_FILE`] in the data directory,
    /// created on first start.
    pub stateless_reset_key_file: Option<PathBuf>,
    /// The TCP address serving `GET /metrics`; `None` (the default): no
    /// metrics endpoint.
    pub metrics_bind: Option<SocketAddr>,
    /// How log lines are written to standard error.
    pub log_format: LogFormat,
    /// Seconds between two signed tree heads while the log grows.
    /// Default [`DEFAULT_TREE_HEAD_INTERVAL_SECS`].
    pub tree_head_interval_secs: u64,
    /// What the relay accepts (frames, messages, queues, rates, timeouts).
    pub limits: Limits,
    /// The organisation's administrator public keys (64 hex digits each),
    /// under which `ward-relay admin role publish` checks a schedule before
    /// storing it (spec/15). Devices check again under their own pinned
    /// copy: this list only keeps mistakes out, it protects no one.
    pub role_admin_keys: Vec<String>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            bind: DEFAULT_BIND,
            tls: None,
            stateless_reset_key_file: None,
            metrics_bind: None,
            log_format: LogFormat::default(),
            tree_head_interval_secs: DEFAULT_TREE_HEAD_INTERVAL_SECS,
            limits: Limits::default(),
            role_admin_keys: Vec::new(),
        }
    }
}

/// A configured certificate chain and private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`CERTIFICATE` sections).
    pub cert_file: PathBuf,
    /// The leaf's private key (`PRIVATE KEY`, `EC PRIVATE KEY` or
    /// `RSA PRIVATE KEY`).
    pub key_file: PathBuf,
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Command-line values that replace those of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--bind`.
    pub bind: Option<SocketAddr>,
    /// `--metrics-bind`.
    pub metrics_bind: Option<SocketAddr>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_LEN`].
    #[error("configuration file {} is larger than {MAX_CONFIG_LEN} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid TOML for [`RelayConfig`] (unknown field, wrong
    /// type, ...).
    #[error("invalid configuration{}: {message}", origin(path.as_deref()))]
    Parse {
        /// The file, if the text came from one.
        path: Option<PathBuf>,
        /// The parser's explanation, on one line.
        message: String,
    },
    /// A value is out of its bounds.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
}

fn origin(path: Option<&Path>) -> String {
    path.map(|p| format!(" in {}", p.display()))
        .unwrap_or_default()
}

impl RelayConfig {
    /// Reads and checks the TOML file at `path`; `None`: the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            let config = Self::default();
            config.validate()?;
            return Ok(config);
        };
        let text = read_bounded(path)?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse {
                path: None,
                message,
            } => ConfigError::Parse {
                path: Some(path.to_owned()),
                message,
            },
            other => other,
        })
    }

    /// Parses and checks a configuration from TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: None,
            // toml's message spans several lines (it quotes the line); keep
            // the whole explanation but on one line.
            message: one_line(&e.to_string()),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Replaces the values the command line gave.
    pub fn apply(&mut self, overrides: &Overrides) {
        let Overrides {
            data_dir,
            bind,
            metrics_bind,
        } = overrides;
        if let Some(dir) = data_dir {
            self.data_dir.clone_from(dir);
        }
        if let Some(bind) = bind {
            self.bind = *bind;
        }
        if let Some(metrics_bind) = metrics_bind {
            self.metrics_bind = Some(*metrics_bind);
        }
    }

    /// Checks the values that have bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        // spec/08, RLY-35: a head at least every 60 s while the log grows.
        if !(1..=60).contains(&self.tree_head_interval_secs) {
            return Err(ConfigError::Invalid(
                "tree_head_interval_secs must be from 1 to 60",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("data_dir must not be empty"));
        }
        if l.max_frame_len == 0 || l.max_frame_len > ward_proto::frame::MAX_FRAME_LEN {
            return Err(ConfigError::Invalid(
                "limits.max_frame_len must be between 1 and 16 MiB",
            ));
        }
        if l.max_ciphertext_len == 0 || l.max_ciphertext_len > l.max_frame_len {
            return Err(ConfigError::Invalid(
                "limits.max_ciphertext_len must be between 1 and limits.max_frame_len",
            ));
        }
        if l.max_concurrent_requests == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_concurrent_requests must be at least 1",
            ));
        }
        if l.idle_timeout_ms == 0 || l.auth_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "limits.idle_timeout_ms and limits.auth_timeout_ms must be at least 1",
            ));
        }
        // QUIC carries the idle timeout as a varint of milliseconds.
        if l.idle_timeout_ms >= 1 << 62 {
            return Err(ConfigError::Invalid("limits.idle_timeout_ms is too large"));
        }
        if l.default_ttl_ms == 0 || l.default_ttl_ms > l.max_ttl_ms {
            return Err(ConfigError::Invalid(
                "limits.default_ttl_ms must be between 1 and limits.max_ttl_ms",
            ));
        }
        if l.max_fetch == 0 || l.max_envelopes == 0 || l.max_queue_depth == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_fetch, limits.max_envelopes and limits.max_queue_depth must be at least 1",
            ));
        }
        if l.requests_per_second == 0 {
            return Err(ConfigError::Invalid(
                "limits.requests_per_second must be at least 1",
            ));
        }
        if l.max_auth_failures == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_auth_failures must be at least 1",
            ));
        }
        Ok(())
    }

    /// The interval between signed tree heads.
    pub fn tree_head_interval(&self) -> Duration {
        Duration::from_secs(self.tree_head_interval_secs)
    }

    /// The storage tunables that follow from the limits (the rest keep
    /// [`StorageConfig`]'s defaults).
    pub fn storage_config(&self) -> StorageConfig {
        let l = &self.limits;
        StorageConfig {
            max_queue_depth: l.max_queue_depth,
            max_ciphertext_len: usize::try_from(l.max_ciphertext_len).unwrap_or(usize::MAX),
            max_one_time_prekeys: l.max_one_time_prekeys,
            ..StorageConfig::default()
        }
    }
}

/// Reads at most [`MAX_CONFIG_LEN`] bytes of UTF-8.
fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;

    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_LEN + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_CONFIG_LEN {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../ward-relay.example.toml");

    #[test]
    fn the_example_file_parses_and_states_the_defaults() {
        let config = RelayConfig::parse(EXAMPLE).unwrap();
        // The example shows every default, plus a metrics address.
        let expected = RelayConfig {
            metrics_bind: Some(SUGGESTED_METRICS_BIND),
            ..RelayConfig::default()
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let config = RelayConfig::parse("").unwrap();
        assert_eq!(config, RelayConfig::default());
        assert_eq!(config.bind.to_string(), "127.0.0.1:7443");
        assert_eq!(config.data_dir, Path::new("./ward-relay-data"));
        assert_eq!(config.metrics_bind, None);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.tree_head_interval(), Duration::from_secs(60));
        assert_eq!(RelayConfig::load(None).unwrap(), RelayConfig::default());
    }

    #[test]
    fn fields_parse() {
        let config = RelayConfig::parse(
            r#"
            data_dir = "/var/lib/ward"
            bind = "[::]:443"
            metrics_bind = "127.0.0.1:9000"
            log_format = "json"
            tree_head_interval_secs = 5
            stateless_reset_key_file = "/etc/ward/stateless-reset.key"
            [tls]
            cert_file = "/etc/ward/cert.pem"
            key_file = "/etc/ward/key.pem"
            [limits]
            max_queue_depth = 7
            "#,
        )
        .unwrap();
        assert_eq!(config.data_dir, Path::new("/var/lib/ward"));
        assert_eq!(config.bind.to_string(), "[::]:443");
        assert_eq!(config.metrics_bind.unwrap().port(), 9000);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.tree_head_interval_secs, 5);
        assert_eq!(
            config.stateless_reset_key_file.as_deref(),
            Some(Path::new("/etc/ward/stateless-reset.key"))
        );
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(tls.cert_file, Path::new("/etc/ward/cert.pem"));
        assert_eq!(tls.key_file, Path::new("/etc/ward/key.pem"));
        assert_eq!(config.limits.max_queue_depth, 7);
        assert_eq!(config.limits.max_fetch, Limits::default().max_fetch);
        assert_eq!(config.storage_config().max_queue_depth, 7);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        for text in [
            "datadir = \"x\"",
            "[limits]\nmax_frame = 1",
            "[tls]\ncert_file = \"a\"\nkey_file = \"b\"\npassword = \"c\"",
            "[tls]\ncert_file = \"a\"",
            "log_format = \"xml\"",
            "bind = \"localhost\"",
        ] {
            let e = RelayConfig::parse(text).unwrap_err();
            assert!(matches!(e, ConfigError::Parse { .. }), "{text}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        for text in [
            "tree_head_interval_secs = 0",
            "tree_head_interval_secs = 61",
            "[limits]\nmax_frame_len = 16777217",
            "[limits]\nmax_concurrent_requests = 0",
            "[limits]\nmax_ciphertext_len = 5000000",
            "[limits]\nidle_timeout_ms = 0",
        ] {
            let e = RelayConfig::parse(text).unwrap_err();
            assert!(matches!(e, ConfigError::Invalid(_)), "{text}: {e}");
        }
    }

    #[test]
    fn overrides_replace_file_values() {
        let mut config = RelayConfig::parse("bind = \"127.0.0.1:1\"").unwrap();
        config.apply(&Overrides {
            data_dir: Some(PathBuf::from("/tmp/d")),
            bind: Some("127.0.0.1:2".parse().unwrap()),
            metrics_bind: Some("127.0.0.1:3".parse().unwrap()),
        });
        assert_eq!(config.data_dir, Path::new("/tmp/d"));
        assert_eq!(config.bind.port(), 2);
        assert_eq!(config.metrics_bind.unwrap().port(), 3);
        let before = config.clone();
        config.apply(&Overrides::default());
        assert_eq!(config, before);
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "tree_head_interval_secs = 9\n").unwrap();
        assert_eq!(
            RelayConfig::load(Some(&path))
                .unwrap()
                .tree_head_interval_secs,
            9
        );
        std::fs::write(&path, "nope = 1\n").unwrap();
        let e = RelayConfig::load(Some(&path)).unwrap_err();
        assert!(e.to_string().contains("relay.toml"), "{e}");
        let missing = dir.path().join("missing.toml");
        assert!(matches!(
            RelayConfig::load(Some(&missing)),
            Err(ConfigError::Read { .. })
        ));
        std::fs::write(&path, vec![b'#'; MAX_CONFIG_LEN as usize + 1]).unwrap();
        assert!(matches!(
            RelayConfig::load(Some(&path)),
            Err(ConfigError::TooLarge { .. })
        ));
    }
}
