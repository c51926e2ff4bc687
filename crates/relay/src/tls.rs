//! The relay's TLS identity and the QUIC configurations built on it
//! (spec/08, "Transport").
//!
//! - [`load_or_create`]: the certificate chain and key, from configured PEM
//!   files or from `tls-cert.pem` / `tls-key.pem` in the data directory,
//!   created on first start (self-signed, ECDSA P-256, SAN `localhost` and
//!   `127.0.0.1`; both files mode 0600, like every file in the data
//!   directory). Clients pin the SHA-256 of the leaf certificate's DER,
//!   [`TlsIdentity::fingerprint`].
//! - [`server_config`]: QUIC v1 over TLS 1.3 only (ring provider), ALPN
//!   exactly [`ALPN`], and the transport limits of [`transport_config`].
//! - Clients pin the fingerprint with `ward_client::pinned_client_config`.
//! - [`endpoint_config`]: the QUIC endpoint's stateless-reset key, kept
//!   across restarts ([`crate::keys::ResetKey`]; spec/08, "Stateless
//!   resets").
//!
//! # Per-connection memory ([`transport_config`])
//!
//! QUIC flow-control windows are credit, not allocations: quinn buffers
//! received stream data only as it arrives and frees it as the relay reads,
//! so an idle connection holds no stream buffers. The windows bound what a
//! *busy or hostile* peer can make the relay hold, so they are sized from
//! the largest frame and no more:
//!
//! | setting | value | quinn default | why |
//! |---|---|---|---|
//! | `stream_receive_window` | `max_frame_len + 4` | 1.25 MB | one whole request frame can be in flight without waiting for the relay to read |
//! | `receive_window` (connection) | `max_frame_len + 4` | unbounded | all streams of a connection together hold at most one maximal frame unread (the default lets 64 streams hold 64 × 1.25 MB) |
//! | `send_window` | `2 × (max_frame_len + 4)` | 10 MB | a maximal response plus pushes in flight, unacknowledged |
//! | `max_concurrent_bidi_streams` | `limits.max_concurrent_requests` | 100 | one request per stream; quinn keeps a table slot per allowed stream (about 85 bytes each, measured) |
//! | `max_concurrent_uni_streams` | 0 | 100 | clients open none; the relay opens the one delivery stream |
//! | `datagram_receive_buffer_size` | none | 1.25 MB | the protocol uses no datagrams, so none are accepted |
//! | `mtu_discovery_config` | none | on | packets stay at QUIC's 1 200-byte minimum; probing cost 1.8 KB per idle connection (measured), and large transfers pay ~17 % more packets |
//! | `max_idle_timeout` | `limits.idle_timeout()` | 30 s | |
//!
//! With the default 4 MiB frames a connection's worst case is about 4 MiB
//! received plus 8 MiB sent. An idle connection costs mostly quinn's
//! connection state: measured with the load generator's idle mode
//! (`crates/relay/examples/loadgen.rs`, BENCHMARKS.md "Idle connections";
//! quinn 0.11, glibc, x86-64 Linux, 10 000 connections), a connection
//! that has not authenticated cost about 33 000 bytes with
//! `max_concurrent_requests = 64` and about 4 000 less with 16 (the
//! default). About 14 KB of it is quinn's per-connection plumbing (its
//! event channel and connection driver), which no setting changes; the
//! TLS 1.3 state is small. An authenticated
//! connection adds the relay's own state (delivery stream and tasks).
//! The server also sends no TLS session tickets (no resumption state per
//! client, and the pin is checked on every handshake) and accepts no 0-RTT
//! data.

use core::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::config::TlsFiles;
use crate::keys::{create_private_dir, write_file_atomic};
use crate::server::limits::Limits;

/// The one application protocol the relay speaks (ALPN, RFC 7301).
pub use ward_proto::ALPN;
/// The generated certificate, in the data directory (mode 0600).
pub const CERT_FILE: &str = "tls-cert.pem";
/// The generated certificate's private key, in the data directory (mode 0600).
pub const KEY_FILE: &str = "tls-key.pem";
/// Bytes of a certificate fingerprint (SHA-256).
pub const FINGERPRINT_LEN: usize = 32;
/// The largest PEM file read, in bytes.
pub const MAX_PEM_LEN: u64 = 1024 * 1024;
/// The subject alternative names of a generated certificate.
pub const GENERATED_SANS: [&str; 2] = ["localhost", "127.0.0.1"];

/// Bytes of a frame's length prefix (ward_proto::frame).
const FRAME_HEADER_LEN: u64 = ward_proto::frame::HEADER_LEN as u64;

/// What can go wrong loading, creating or using the TLS identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file is larger than [`MAX_PEM_LEN`].
    #[error("{}: larger than {MAX_PEM_LEN} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A PEM file does not hold what it should.
    #[error("{}: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{}: no CERTIFICATE section", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The data directory holds the generated certificate but not its key.
    #[error(
        "{} is missing (the certificate next to it is unusable without it; move both away to generate a new pair)",
        path.display()
    )]
    MissingKey {
        /// The missing key file.
        path: PathBuf,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating the TLS certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key (unsupported key type, key not
    /// matching the certificate, ...).
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The TLS configuration cannot carry QUIC.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// A transport limit is out of QUIC's range.
    #[error("invalid transport limit: {0}")]
    Transport(&'static str),
    /// A fingerprint is not 64 hexadecimal digits.
    #[error("a certificate fingerprint is 64 hexadecimal digits")]
    InvalidFingerprint,
}

/// The relay's certificate chain and private key.
///
/// The key is zeroized when the identity is dropped and never appears in
/// [`Debug`] output.
pub struct TlsIdentity {
    /// The certificate chain, leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf certificate's private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate's DER: what clients pin.
    pub fingerprint: [u8; FINGERPRINT_LEN],
}

impl TlsIdentity {
    /// Builds an identity from a chain (leaf first) and its key, computing
    /// the fingerprint. Does not check that they match; [`server_config`]
    /// does.
    pub fn new(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Option<Self> {
        let fingerprint = fingerprint(cert_chain.first()?);
        Some(Self {
            cert_chain,
            key,
            fingerprint,
        })
    }

    /// The fingerprint as 64 lowercase hexadecimal digits.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }
}

impl Drop for TlsIdentity {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            cert_chain,
            key: _,
            fingerprint,
        } = self;
        f.debug_struct("TlsIdentity")
            .field("certificates", &cert_chain.len())
            .field("fingerprint", &hex::encode(fingerprint))
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a certificate's DER.
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; FINGERPRINT_LEN] {
    Sha256::digest(cert.as_ref()).into()
}

/// Parses 64 hexadecimal digits (either case) into a fingerprint.
pub fn parse_fingerprint(text: &str) -> Result<[u8; FINGERPRINT_LEN], TlsError> {
    let mut out = [0u8; FINGERPRINT_LEN];
    hex::decode_to_slice(text.trim(), &mut out).map_err(|_| TlsError::InvalidFingerprint)?;
    Ok(out)
}

/// Loads the relay's identity: from `files` if given, else from
/// [`CERT_FILE`] and [`KEY_FILE`] in `data_dir`, generating them (and the
/// directory, mode 0700) if the certificate file does not exist. The same
/// files give the same fingerprint on every start. A generated certificate
/// that group or others may read (an earlier version wrote it mode 0644)
/// is restricted to its owner; configured files are left as they are.
///
/// The key is checked against the certificate before this returns.
pub fn load_or_create(data_dir: &Path, files: Option<&TlsFiles>) -> Result<TlsIdentity, TlsError> {
    let identity = match files {
        Some(files) => load_files(&files.cert_file, &files.key_file)?,
        None => {
            let cert = data_dir.join(CERT_FILE);
            let key = data_dir.join(KEY_FILE);
            // The certificate is written last: it marks a complete pair.
            if !exists(&cert)? {
                generate(data_dir)?;
                tracing::info!(path = %cert.display(), "generated a self-signed TLS certificate");
            } else if !exists(&key)? {
                return Err(TlsError::MissingKey { path: key });
            } else {
                crate::keys::restrict_to_owner(&cert).map_err(|source| TlsError::Io {
                    path: cert.clone(),
                    source,
                })?;
            }
            load_files(&cert, &key)?
        }
    };
    // Refuses a key that does not match the certificate, or that the ring
    // provider cannot sign with.
    rustls_server_config(&identity)?;
    Ok(identity)
}

fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn load_files(cert_file: &Path, key_file: &Path) -> Result<TlsIdentity, TlsError> {
    let pem_error = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Pem { path, source }
    };
    let cert_pem = read_pem(cert_file)?;
    let cert_chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(cert_file))?;
    warn_if_readable_by_others(key_file);
    let key_pem = read_pem(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(pem_error(key_file))?;
    TlsIdentity::new(cert_chain, key).ok_or_else(|| TlsError::NoCertificate {
        path: cert_file.to_owned(),
    })
}

/// Reads a PEM file of at most [`MAX_PEM_LEN`] bytes into a buffer that is
/// zeroized when dropped (it may hold a private key).
fn read_pem(path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    let io_error = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    // Sized from the start so that the buffer is not reallocated (a
    // reallocation would leave a copy of the key behind, unzeroized).
    let len = file.metadata().map_err(io_error)?.len().min(MAX_PEM_LEN) + 1;
    let mut buf = Zeroizing::new(Vec::with_capacity(usize::try_from(len).unwrap_or(0)));
    file.take(MAX_PEM_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(io_error)?;
    if buf.len() as u64 > MAX_PEM_LEN {
        return Err(TlsError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(buf)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
            "the TLS private key file is accessible to other users; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Generates a self-signed certificate and writes the pair.
fn generate(data_dir: &Path) -> Result<(), TlsError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    create_private_dir(data_dir).map_err(io_error(data_dir))?;
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(GENERATED_SANS.map(str::to_owned).to_vec())?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, "ward-relay");
    params.distinguished_name = name;
    let cert = params.self_signed(&key_pair)?;
    let key_pem = Zeroizing::new(key_pair.serialize_pem());
    // The certificate last: it marks a complete pair (a key left alone by
    // an interrupted start is replaced on the next).
    let (key_file, cert_file) = (data_dir.join(KEY_FILE), data_dir.join(CERT_FILE));
    write_file_atomic(&key_file, key_pem.as_bytes(), 0o600).map_err(io_error(&key_file))?;
    // Not secret, but private like every file in the data directory
    // (spec/10).
    write_file_atomic(&cert_file, cert.pem().as_bytes(), 0o600).map_err(io_error(&cert_file))?;
    Ok(())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server configuration: ring, TLS 1.3 only, ALPN [`ALPN`], no
/// client certificates, no session tickets, no early data.
fn rustls_server_config(identity: &TlsIdentity) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(config)
}

/// The QUIC transport limits of a relay connection; see the module
/// documentation for the memory each one bounds.
pub fn transport_config(limits: &Limits) -> Result<quinn::TransportConfig, TlsError> {
    let frame_window = u64::from(limits.max_frame_len) + FRAME_HEADER_LEN;
    let window =
        quinn::VarInt::from_u64(frame_window).map_err(|_| TlsError::Transport("max_frame_len"))?;
    let idle = quinn::IdleTimeout::try_from(limits.idle_timeout())
        .map_err(|_| TlsError::Transport("idle_timeout_ms is beyond QUIC's range"))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.max_concurrent_requests))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .max_idle_timeout(Some(idle))
        .stream_receive_window(window)
        .receive_window(window)
        .send_window(2 * frame_window)
        .datagram_receive_buffer_size(None)
        .datagram_send_buffer_size(0)
        .mtu_discovery_config(None)
        .keep_alive_interval(None);
    Ok(transport)
}

/// What the connection id generator's key is derived with (spec/08,
/// "Stateless resets"). Not 8 bytes long, so never a connection id whose
/// reset token the same HMAC key computes.
pub const CONNECTION_ID_KEY_LABEL: &[u8] = b"ward-relay connection id key";

/// The relay's QUIC endpoint configuration: quinn's defaults, with two
/// things derived from `reset_key` instead of drawn at every start, so that
/// a relay started again on the same address (or another relay sharing the
/// key) resets the connections of its previous run at once (spec/08,
/// "Stateless resets"):
///
/// - stateless-reset tokens: `HMAC-SHA256(reset_key, connection id)`,
///   truncated to 16 bytes by quinn;
/// - the key of quinn's `HashedConnectionIdGenerator`, which lets the
///   endpoint tell connection ids it issued from noise: the first 8 bytes
///   (little-endian) of `HMAC-SHA256(reset_key, CONNECTION_ID_KEY_LABEL)`.
///   Without it, a restarted relay drops packets of its previous run's
///   connections as foreign instead of resetting them.
pub fn endpoint_config(reset_key: &crate::keys::ResetKey) -> quinn::EndpointConfig {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key.bytes());
    // A tag is 32 bytes, so the fallback is never taken (and the generator's
    // key only filters noise; it protects nothing).
    let cid_key = ring::hmac::sign(&key, CONNECTION_ID_KEY_LABEL)
        .as_ref()
        .first_chunk::<8>()
        .map_or(0, |bytes| u64::from_le_bytes(*bytes));
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// The relay's QUIC server configuration: the identity over TLS 1.3 (ring),
/// ALPN exactly [`ALPN`] (a client offering anything else fails the
/// handshake with `no_application_protocol`), and [`transport_config`].
pub fn server_config(
    identity: &TlsIdentity,
    limits: &Limits,
) -> Result<quinn::ServerConfig, TlsError> {
    let tls = rustls_server_config(identity)?;
    let quic = QuicServerConfig::try_from(Arc::new(tls))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport_config(limits)?));
    // Packets buffered for a connection attempt not yet accepted: the
    // handshake needs a few KiB; no 0-RTT data is accepted.
    config.incoming_buffer_size(64 * 1024);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;

    fn generated(dir: &Path) -> TlsIdentity {
        load_or_create(dir, None).unwrap()
    }

    #[test]
    fn a_generated_identity_is_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = generated(&data);
        assert_eq!(first.fingerprint, fingerprint(&first.cert_chain[0]));
        assert_eq!(first.fingerprint_hex().len(), 64);
        assert!(
            first
                .fingerprint_hex()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let cert_pem = std::fs::read(data.join(CERT_FILE)).unwrap();
        let key_pem = std::fs::read(data.join(KEY_FILE)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&data.join(KEY_FILE)), 0o600);
            assert_eq!(mode(&data.join(CERT_FILE)), 0o600);
            assert_eq!(mode(&data), 0o700);
        }
        let mut names: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [CERT_FILE, KEY_FILE], "no temporary file left");

        let second = generated(&data);
        assert_eq!(second.fingerprint, first.fingerprint);
        assert_eq!(std::fs::read(data.join(CERT_FILE)).unwrap(), cert_pem);
        assert_eq!(std::fs::read(data.join(KEY_FILE)).unwrap(), key_pem);

        // Another directory: another certificate.
        let other = generated(&dir.path().join("other"));
        assert_ne!(other.fingerprint, first.fingerprint);
    }

    #[test]
    fn a_generated_certificate_names_localhost() {
        let dir = tempfile::tempdir().unwrap();
        let id = generated(dir.path());
        let der = id.cert_chain[0].as_ref();
        let contains = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
        // GeneralName dNSName [2] "localhost" and iPAddress [7] 127.0.0.1.
        assert!(contains(b"\x82\x09localhost"));
        assert!(contains(&[0x87, 0x04, 127, 0, 0, 1]));
        // ECDSA with SHA-256 (1.2.840.10045.4.3.2) over a P-256 key
        // (1.2.840.10045.3.1.7).
        assert!(contains(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));
        assert!(contains(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]));
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let id = generated(dir.path());
        let debug = format!("{id:?}");
        assert!(debug.contains(&id.fingerprint_hex()));
        assert!(!debug.contains("key"), "{debug}");
    }

    #[test]
    fn configured_files_are_used_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let certified =
                rcgen::generate_simple_self_signed(vec!["relay.example".into()]).unwrap();
            let cert = dir.path().join(format!("{name}-cert.pem"));
            let key = dir.path().join(format!("{name}-key.pem"));
            std::fs::write(&cert, certified.cert.pem()).unwrap();
            std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
            (cert, key, fingerprint(certified.cert.der()))
        };
        let (cert_a, key_a, fp_a) = make("a");
        let (_, key_b, _) = make("b");

        let files = TlsFiles {
            cert_file: cert_a.clone(),
            key_file: key_a,
        };
        let data = dir.path().join("data");
        let id = load_or_create(&data, Some(&files)).unwrap();
        assert_eq!(id.fingerprint, fp_a);
        assert!(!data.join(CERT_FILE).exists(), "nothing generated");

        let mismatched = TlsFiles {
            cert_file: cert_a.clone(),
            key_file: key_b,
        };
        assert!(matches!(
            load_or_create(&data, Some(&mismatched)),
            Err(TlsError::Rustls(_))
        ));
        let swapped = TlsFiles {
            cert_file: files.key_file.clone(),
            key_file: cert_a,
        };
        assert!(load_or_create(&data, Some(&swapped)).is_err());
        let missing = TlsFiles {
            cert_file: dir.path().join("nope.pem"),
            key_file: files.key_file.clone(),
        };
        assert!(matches!(
            load_or_create(&data, Some(&missing)),
            Err(TlsError::Io { .. })
        ));
    }

    #[test]
    fn a_certificate_without_its_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        generated(dir.path());
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        assert!(matches!(
            load_or_create(dir.path(), None),
            Err(TlsError::MissingKey { .. })
        ));
    }

    #[test]
    fn fingerprints_parse() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_fingerprint(&hex).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint("ab").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn transport_limits_follow_the_configuration() {
        let limits = Limits::default();
        assert!(transport_config(&limits).is_ok());
        let too_long = Limits {
            idle_timeout_ms: u64::MAX,
            ..Limits::default()
        };
        assert!(matches!(
            transport_config(&too_long),
            Err(TlsError::Transport(_))
        ));
    }

    /// A relay endpoint on 127.0.0.1:0 that accepts connections (and keeps
    /// each open until the peer closes it).
    fn server(identity: &TlsIdentity) -> quinn::Endpoint {
        let config = server_config(identity, &Limits::default()).unwrap();
        let endpoint =
            quinn::Endpoint::server(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                tokio::spawn(async move {
                    if let Ok(connection) = incoming.await {
                        connection.closed().await;
                    }
                });
            }
        });
        endpoint
    }

    async fn connect(
        server: &quinn::Endpoint,
        config: quinn::ClientConfig,
    ) -> Result<quinn::Connection, quinn::ConnectionError> {
        let client = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let addr = server.local_addr().unwrap();
        client
            .connect_with(config, addr, "localhost")
            .unwrap()
            .await
    }

    #[tokio::test]
    async fn a_pinned_client_connects_with_ward_alpn() {
        let dir = tempfile::tempdir().unwrap();
        let id = generated(dir.path());
        let server = server(&id);
        let connection = connect(
            &server,
            ward_client::pinned_client_config(id.fingerprint, ALPN).unwrap(),
        )
        .await
        .unwrap();
        let data = connection.handshake_data().unwrap();
        let data = data
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap();
        assert_eq!(data.protocol.as_deref(), Some(ALPN));
        // The exporter the authentication transcript binds to is available.
        let mut exporter = [0u8; 32];
        connection
            .export_keying_material(&mut exporter, b"EXPORTER-ward/1 authentication", b"")
            .unwrap();
        assert_ne!(exporter, [0; 32]);
        connection.close(0u32.into(), b"done");
    }

    #[tokio::test]
    async fn a_client_pinned_to_another_certificate_fails() {
        let dir = tempfile::tempdir().unwrap();
        let id = generated(&dir.path().join("a"));
        let other = generated(&dir.path().join("b"));
        let server = server(&id);
        let error = connect(
            &server,
            ward_client::pinned_client_config(other.fingerprint, ALPN).unwrap(),
        )
        .await
        .unwrap_err();
        // The client aborts with a TLS certificate_unknown (46) alert.
        match error {
            quinn::ConnectionError::TransportError(e) => {
                assert_eq!(e.code, quinn::TransportErrorCode::crypto(46), "{e}");
            }
            other => panic!("unexpected error {other}"),
        }
    }

    #[tokio::test]
    async fn a_client_offering_another_alpn_fails() {
        let dir = tempfile::tempdir().unwrap();
        let id = generated(dir.path());
        let server = server(&id);
        for alpn in [&b"h3"[..], b"ward/2", b""] {
            let config = ward_client::pinned_client_config(id.fingerprint, alpn).unwrap();
            let error = connect(&server, config).await.unwrap_err();
            // The server refuses with no_application_protocol (120).
            match error {
                quinn::ConnectionError::ConnectionClosed(close) => {
                    assert_eq!(
                        close.error_code,
                        quinn::TransportErrorCode::crypto(120),
                        "{alpn:?}: {close}"
                    );
                }
                other => panic!("{alpn:?}: unexpected error {other}"),
            }
        }
    }
}
