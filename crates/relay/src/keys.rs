//! The relay's own secrets: its audit signing key, its QUIC
//! stateless-reset key, and enrollment tokens.
//!
//! - The audit signing key ([`load_or_create_audit_key`]) signs tree heads
//!   (spec/09). It lives in [`AUDIT_KEY_FILE`] in the data directory: the 32
//!   raw bytes of an Ed25519 secret key, mode 0600, created on first use.
//!   Auditors verify exports against its public key.
//! - The stateless-reset key ([`load_or_create_reset_key`]) lets the relay
//!   end, after a restart, the QUIC connections of its previous run
//!   (spec/08, "Stateless resets"). It lives in [`RESET_KEY_FILE`] in the
//!   data directory (or a configured file, [`load_reset_key`]): 32 raw
//!   bytes, an HMAC-SHA256 key, mode 0600, created on first use.
//! - Both key files are read the same way: a file of another length, or
//!   one that users other than its owner may read or write (Unix mode bits
//!   `0o077`), is refused with a [`KeyError`], never replaced.
//! - Enrollment tokens ([`new_enrollment_token`]) are `ward-enroll-`
//!   followed by 64 lowercase hex digits (32 random bytes). The relay stores
//!   only [`token_hash`], SHA-256 of the token's text.
//!
//! The key's bytes pass only through buffers that are zeroized when
//! dropped (a token's random bytes too; the token text is returned as a
//! plain `String`, for the caller to print once). Neither the key nor a
//! token is ever logged.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use ward_audit::{SigningKey, VerifyingKey};
use zeroize::Zeroizing;

/// The audit signing key's file in the data directory.
pub const AUDIT_KEY_FILE: &str = "audit-signing.key";
/// Bytes of the audit signing key file: an Ed25519 secret key.
pub const AUDIT_KEY_LEN: usize = 32;
/// The stateless-reset key's file in the data directory.
pub const RESET_KEY_FILE: &str = "stateless-reset.key";
/// Bytes of the stateless-reset key file: an HMAC-SHA256 key.
pub const RESET_KEY_LEN: usize = 32;
/// What every enrollment token starts with.
pub const ENROLLMENT_TOKEN_PREFIX: &str = "ward-enroll-";
/// Characters of an enrollment token: the prefix and 64 hex digits.
pub const ENROLLMENT_TOKEN_LEN: usize = ENROLLMENT_TOKEN_PREFIX.len() + 64;

/// What can go wrong with the relay's keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold exactly the key's length
    /// ([`AUDIT_KEY_LEN`], [`RESET_KEY_LEN`]).
    #[error(
        "{}: a file holding the {what} has exactly {expected} bytes, this one {len}",
        path.display()
    )]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Which key: "audit signing key", "stateless reset key".
        what: &'static str,
        /// The key's length in bytes.
        expected: usize,
        /// The file's length in bytes.
        len: u64,
    },
    /// The key file does not exist (and was not to be created).
    #[error("{}: no {what} file", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// Which key.
        what: &'static str,
    },
    /// Users other than the key file's owner may read or write it (Unix
    /// mode bits `0o077`): the key may have been read, so the relay does
    /// not use it until the administrator has looked.
    #[error(
        "{}: the {what} file is accessible to other users (mode {mode:o}); \
         chmod 600 it, or replace it if others may have read it",
        path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Which key.
        what: &'static str,
        /// Its permission bits.
        mode: u32,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What errors and logs call the audit signing key.
const AUDIT_KEY_NAME: &str = "audit signing key";
/// What errors and logs call the stateless-reset key.
const RESET_KEY_NAME: &str = "stateless reset key";

/// Loads the audit signing key from `data_dir`, creating the directory
/// (mode 0700) and a fresh key (mode 0600) if there is none.
///
/// Creation is atomic and never replaces a key: the file appears complete
/// or not at all, and if two processes create one at once, both end up
/// with the one that was linked first.
pub fn load_or_create_audit_key(data_dir: &Path) -> Result<SigningKey, KeyError> {
    let secret = load_or_create_key::<AUDIT_KEY_LEN>(data_dir, AUDIT_KEY_FILE, AUDIT_KEY_NAME)?;
    Ok(SigningKey::from_bytes(&secret))
}

/// Loads the audit signing key from `data_dir`; [`KeyError::Missing`] if
/// there is none.
pub fn load_audit_key(data_dir: &Path) -> Result<SigningKey, KeyError> {
    let secret = load_key::<AUDIT_KEY_LEN>(&data_dir.join(AUDIT_KEY_FILE), AUDIT_KEY_NAME)?;
    Ok(SigningKey::from_bytes(&secret))
}

/// The public half of the audit key in `data_dir`, without creating one.
pub fn load_audit_verifying_key(data_dir: &Path) -> Result<VerifyingKey, KeyError> {
    load_audit_key(data_dir).map(|key| key.verifying_key())
}

/// The relay's QUIC stateless-reset key: the HMAC-SHA256 key from which
/// the relay derives the stateless-reset token of every connection id it
/// issues (spec/08, "Stateless resets"). The same key after a restart lets
/// the relay end the connections of its previous run at once.
///
/// Zeroized when dropped; its `Debug` shows nothing of it.
pub struct ResetKey(Zeroizing<[u8; RESET_KEY_LEN]>);

impl ResetKey {
    /// The key's bytes, for the QUIC endpoint configuration
    /// (`tls::endpoint_config`).
    pub(crate) fn bytes(&self) -> &[u8; RESET_KEY_LEN] {
        &self.0
    }
}

impl core::fmt::Debug for ResetKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ResetKey(..)")
    }
}

/// Loads the stateless-reset key from [`RESET_KEY_FILE`] in `data_dir`,
/// creating the directory (mode 0700) and a fresh key (mode 0600, 32 bytes
/// from the operating system's generator) if there is none. Atomic like
/// [`load_or_create_audit_key`].
pub fn load_or_create_reset_key(data_dir: &Path) -> Result<ResetKey, KeyError> {
    load_or_create_key(data_dir, RESET_KEY_FILE, RESET_KEY_NAME).map(ResetKey)
}

/// Loads the stateless-reset key from `path`, a file the configuration
/// names (relays behind one address share one key); never creates it:
/// [`KeyError::Missing`] if it does not exist.
pub fn load_reset_key(path: &Path) -> Result<ResetKey, KeyError> {
    load_key(path, RESET_KEY_NAME).map(ResetKey)
}

/// Loads the `N`-byte key in `data_dir/name`, creating the directory (mode
/// 0700) and a fresh key (mode 0600) if there is none. Never replaces a
/// file: if two processes create one at once, both end up with the one
/// that was linked first.
fn load_or_create_key<const N: usize>(
    data_dir: &Path,
    name: &str,
    what: &'static str,
) -> Result<Zeroizing<[u8; N]>, KeyError> {
    let path = data_dir.join(name);
    match load_key(&path, what) {
        Err(KeyError::Missing { .. }) => {}
        other => return other,
    }
    create_private_dir(data_dir).map_err(io_error(data_dir))?;
    let mut secret = Zeroizing::new([0u8; N]);
    getrandom::fill(secret.as_mut_slice()).map_err(KeyError::Random)?;
    if write_new_file(&path, secret.as_slice(), 0o600).map_err(io_error(&path))? {
        tracing::info!(path = %path.display(), key = what, "created a key file");
    }
    // Read back what is on disk: ours, or a concurrent creator's.
    load_key(&path, what)
}

/// Reads the `N`-byte key file at `path`: [`KeyError::Missing`] if there
/// is none, [`KeyError::BadLength`] if it holds another number of bytes,
/// [`KeyError::TooOpen`] if others may read or write it.
fn load_key<const N: usize>(
    path: &Path,
    what: &'static str,
) -> Result<Zeroizing<[u8; N]>, KeyError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyError::Missing {
                path: path.to_owned(),
                what,
            });
        }
        Err(e) => return Err(io_error(path)(e)),
    };
    let bad_length = |len| KeyError::BadLength {
        path: path.to_owned(),
        what,
        expected: N,
        len,
    };
    let meta = file.metadata().map_err(io_error(path))?;
    if meta.len() != N as u64 {
        return Err(bad_length(meta.len()));
    }
    refuse_if_accessible_by_others(path, &meta, what)?;
    let mut secret = Zeroizing::new([0u8; N]);
    file.read_exact(secret.as_mut_slice())
        .map_err(io_error(path))?;
    // The file may have grown since the length check.
    let mut extra = [0u8; 1];
    if file.read(&mut extra).map_err(io_error(path))? != 0 {
        let len = file.metadata().map_err(io_error(path))?.len();
        return Err(bad_length(len));
    }
    Ok(secret)
}

#[cfg(unix)]
fn refuse_if_accessible_by_others(
    path: &Path,
    meta: &std::fs::Metadata,
    what: &'static str,
) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            path: path.to_owned(),
            what,
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_if_accessible_by_others(
    _path: &Path,
    _meta: &std::fs::Metadata,
    _what: &'static str,
) -> Result<(), KeyError> {
    Ok(())
}

/// A new enrollment token and its hash: `ward-enroll-` followed by the 64
/// lowercase hex digits of 32 bytes from the operating system's generator
/// (getrandom). Hand the token to the administrator once; store only the
/// hash.
///
/// Like `ward_core::os_rng`, this treats a failing system generator as
/// fatal (it panics inside `rand_core`): there is no safe fallback, and on
/// the supported platforms the generator does not fail once seeded.
pub fn new_enrollment_token() -> (String, [u8; 32]) {
    use rand_core::Rng as _;

    let mut random = Zeroizing::new([0u8; 32]);
    rand_core::UnwrapErr(getrandom::SysRng).fill_bytes(random.as_mut_slice());
    let mut token = String::with_capacity(ENROLLMENT_TOKEN_LEN);
    token.push_str(ENROLLMENT_TOKEN_PREFIX);
    for b in random.iter() {
        token.push(hex_digit(b >> 4));
        token.push(hex_digit(b & 0x0f));
    }
    let hash = token_hash(&token);
    (token, hash)
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

/// SHA-256 of the token's UTF-8 text: what the relay stores and looks up.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `text` has the form of an enrollment token (the prefix and 64
/// lowercase hex digits). Tokens of another form cannot be valid, so the
/// relay may refuse them without a lookup.
pub fn is_enrollment_token(text: &str) -> bool {
    text.len() == ENROLLMENT_TOKEN_LEN
        && text
            .strip_prefix(ENROLLMENT_TOKEN_PREFIX)
            .is_some_and(|digits| {
                digits
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
}

/// Creates `dir` and its parents (mode 0700 on Unix) if missing.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates `path` empty with mode 0600 if it does not exist; if it does,
/// takes away what group and others may do with it
/// ([`restrict_to_owner`]). For files another library then opens and
/// writes (SQLite, which gives its `-wal`, `-shm` and `-journal` files the
/// database's mode), so that they are private from the start without
/// changing the process's umask.
pub(crate) fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            restrict_to_owner(path).map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// If `path` is a regular file that group or others may read, write or
/// execute (as an earlier version created its database and certificate,
/// mode 0644), clears those bits and returns true. A missing file, a
/// directory, or a file that is private already is left alone (false).
pub(crate) fn restrict_to_owner(path: &Path) -> std::io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let mode = meta.permissions().mode();
        if !meta.is_file() || mode & 0o077 == 0 {
            return Ok(false);
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
        tracing::info!(
            path = %path.display(),
            was = format_args!("{:o}", mode & 0o777),
            "made a file private to its owner"
        );
        Ok(true)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(false)
    }
}

/// A temporary file next to `path`, unique to this process and call.
fn temporary_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    PathBuf::from(name)
}

/// Writes `contents` to a new temporary file next to `path` (mode `mode`
/// from creation, synced) and returns it.
fn write_temporary(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<PathBuf> {
    let tmp = temporary_path(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writes `path` (replacing it) so that it appears complete or not at all.
pub(crate) fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = write_temporary(path, contents, mode)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_parent(path)
}

/// Creates `path` with `contents` if it does not exist; never replaces it.
/// Returns whether it created the file.
pub(crate) fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<bool> {
    let tmp = write_temporary(path, contents, mode)?;
    // A hard link fails if the target exists: atomic create-if-absent of a
    // complete file.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(path)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert!(matches!(
            load_audit_key(&data),
            Err(KeyError::Missing { .. })
        ));
        let first = load_or_create_audit_key(&data).unwrap();
        let path = data.join(AUDIT_KEY_FILE);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(bytes, first.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let second = load_or_create_audit_key(&data).unwrap();
        assert_eq!(second.to_bytes(), first.to_bytes());
        assert_eq!(
            load_audit_verifying_key(&data).unwrap(),
            first.verifying_key()
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [AUDIT_KEY_FILE]);
    }

    #[test]
    fn a_key_file_of_another_length_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_KEY_FILE);
        for len in [0usize, 31, 33, 64] {
            std::fs::write(&path, vec![7u8; len]).unwrap();
            let e = load_or_create_audit_key(dir.path()).unwrap_err();
            match &e {
                KeyError::BadLength {
                    len: found,
                    expected: 32,
                    ..
                } => assert_eq!(*found, len as u64),
                other => panic!("{len}: {other:?}"),
            }
            assert_eq!(
                e.to_string(),
                format!(
                    "{}: a file holding the audit signing key has exactly 32 bytes, this one {len}",
                    path.display()
                )
            );
            assert_eq!(std::fs::read(&path).unwrap().len(), len);
        }
    }

    /// Writes `contents` to `path` with permission bits `mode`.
    #[cfg(unix)]
    fn write_with_mode(path: &Path, contents: &[u8], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, contents).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_access_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_KEY_FILE);
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602, 0o666] {
            write_with_mode(&path, &[7u8; 32], mode);
            let e = load_or_create_audit_key(dir.path()).unwrap_err();
            assert!(
                matches!(&e, KeyError::TooOpen { mode: found, .. } if *found == mode),
                "{mode:o}: {e:?}"
            );
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(&format!("mode {mode:o}")), "{text}");
            assert!(text.contains("chmod 600"), "{text}");
            assert_eq!(std::fs::read(&path).unwrap(), [7u8; 32]);
        }
        // Owner-only modes are accepted.
        for mode in [0o600, 0o400] {
            write_with_mode(&path, &[7u8; 32], mode);
            let key = load_or_create_audit_key(dir.path()).unwrap();
            assert_eq!(key.to_bytes(), [7u8; 32]);
        }
    }

    #[test]
    fn errors_and_debug_do_not_show_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_audit_key(dir.path()).unwrap();
        let secret_hex = hex::encode(key.to_bytes());
        let debug = format!("{key:?}");
        assert!(!debug.contains(&secret_hex), "{debug}");
    }

    #[test]
    fn the_reset_key_is_created_once_reused_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let path = data.join(RESET_KEY_FILE);
        assert!(matches!(
            load_reset_key(&path),
            Err(KeyError::Missing { .. })
        ));
        let first = load_or_create_reset_key(&data).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes, first.bytes());
        assert_eq!(bytes.len(), RESET_KEY_LEN);
        assert_ne!(bytes, [0u8; RESET_KEY_LEN]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // A second start reads the same key; a named file is read as is.
        assert_eq!(
            load_or_create_reset_key(&data).unwrap().bytes(),
            first.bytes()
        );
        assert_eq!(load_reset_key(&path).unwrap().bytes(), first.bytes());
        // Another data directory: another key.
        let other = load_or_create_reset_key(&dir.path().join("other")).unwrap();
        assert_ne!(other.bytes(), first.bytes());
        // Its Debug shows nothing of it.
        let debug = format!("{first:?}");
        assert_eq!(debug, "ResetKey(..)");

        // A file of another length is refused, not replaced.
        for len in [0usize, 16, 31, 33, 64] {
            std::fs::write(&path, vec![7u8; len]).unwrap();
            let e = load_or_create_reset_key(&data).unwrap_err();
            assert!(
                matches!(e, KeyError::BadLength { len: found, expected: 32, .. } if found == len as u64),
                "{len}: {e:?}"
            );
            assert!(e.to_string().contains("stateless reset key"), "{e}");
            assert_eq!(std::fs::read(&path).unwrap().len(), len);
        }
        // So is one that others may read or write.
        #[cfg(unix)]
        for mode in [0o644, 0o640, 0o606] {
            write_with_mode(&path, &[7u8; 32], mode);
            for e in [
                load_or_create_reset_key(&data).unwrap_err(),
                load_reset_key(&path).unwrap_err(),
            ] {
                assert!(
                    matches!(&e, KeyError::TooOpen { mode: found, .. } if *found == mode),
                    "{mode:o}: {e:?}"
                );
                let text = e.to_string();
                assert!(text.contains("stateless reset key"), "{text}");
                assert!(text.contains("chmod 600"), "{text}");
            }
            assert_eq!(std::fs::read(&path).unwrap(), [7u8; 32]);
        }
        // A named file is never created.
        let named = dir.path().join("shared.key");
        let e = load_reset_key(&named).unwrap_err();
        assert!(matches!(e, KeyError::Missing { .. }), "{e:?}");
        assert!(e.to_string().contains("shared.key"), "{e}");
        assert!(!named.exists());
    }

    #[test]
    fn tokens_have_the_specified_form() {
        let (token, hash) = new_enrollment_token();
        assert_eq!(token.len(), ENROLLMENT_TOKEN_LEN);
        assert!(token.starts_with("ward-enroll-"));
        assert!(is_enrollment_token(&token));
        assert_eq!(hash, token_hash(&token));
        let expected: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        assert_eq!(hash, expected);
        let (other, other_hash) = new_enrollment_token();
        assert_ne!(token, other);
        assert_ne!(hash, other_hash);
    }

    #[test]
    fn token_hash_is_sha256_of_the_text() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hex::encode(token_hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn malformed_tokens_are_recognised() {
        let good = format!("ward-enroll-{}", "0a".repeat(32));
        assert!(is_enrollment_token(&good));
        for bad in [
            String::new(),
            "ward-enroll-".to_owned(),
            format!("ward-enroll-{}", "0A".repeat(32)),
            format!("ward-enroll-{}", "0a".repeat(31)),
            format!("ward-enroll-{}0", "0a".repeat(32)),
            format!("ward-enrol-{}0", "0a".repeat(32)),
            format!("ward-enroll-{}g", &"0a".repeat(32)[1..]),
        ] {
            assert!(!is_enrollment_token(&bad), "{bad}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_created_0600_and_older_ones_restricted() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        create_private_file(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        // An existing file keeps its contents and loses group and other bits.
        write_with_mode(&path, b"data", 0o664);
        create_private_file(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
        write_with_mode(&path, b"data", 0o444);
        assert!(restrict_to_owner(&path).unwrap());
        assert_eq!(mode(&path), 0o400);
        assert!(!restrict_to_owner(&path).unwrap());
        // Missing files and directories are left alone.
        assert!(!restrict_to_owner(&dir.path().join("missing")).unwrap());
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!restrict_to_owner(&sub).unwrap());
        assert!(create_private_file(&sub).is_ok());
        assert_eq!(mode(&sub), 0o755);
    }

    #[test]
    fn write_new_file_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert!(write_new_file(&path, b"one", 0o600).unwrap());
        assert!(!write_new_file(&path, b"two", 0o600).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        write_file_atomic(&path, b"three", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
