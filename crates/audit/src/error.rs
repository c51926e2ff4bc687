//! Errors of the audit log.
//!
//! Three enums for three audiences:
//!
//! - [`DecodeError`]: bytes (or a field value) that do not meet the format of
//!   spec/09-audit-log.md. Precise, so that a re-implementer finds their bug.
//! - [`AuditError`]: what a verifier found wrong with a proof, a tree head or an
//!   exported log. Each way an export can be tampered with has its own variant
//!   and names the entry or head where it was found.
//! - [`LogError`]: what went wrong while the relay operated its [`MerkleLog`]
//!   (a refused append, a storage failure).
//!
//! [`MerkleLog`]: crate::MerkleLog

use core::fmt;

/// What exactly was wrong with some encoded bytes or a field value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the structure did.
    Truncated,
    /// Bytes follow the end of the structure (AUD-6).
    TrailingBytes,
    /// The version byte names a format this build does not know.
    UnsupportedVersion(u8),
    /// The export does not start with the magic `"Ward audit\0"`.
    BadMagic,
    /// The event kind byte is not a known [`EventKind`](crate::EventKind) code.
    UnknownEventKind(u8),
    /// The presence byte has a reserved bit set (bit 7).
    ReservedBits(u8),
    /// The outcome byte is neither `0x00` (ok) nor `0x01` (error).
    UnknownOutcome(u8),
    /// A field's length is outside its bounds (AUD-3).
    FieldLength {
        /// The field, as named in the spec.
        field: &'static str,
        /// The length found.
        len: usize,
    },
    /// A text field holds a byte outside its alphabet (AUD-3).
    FieldCharacter {
        /// The field, as named in the spec.
        field: &'static str,
        /// The first offending byte.
        byte: u8,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("input is truncated"),
            Self::TrailingBytes => f.write_str("trailing bytes after the structure"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported version byte 0x{v:02x}"),
            Self::BadMagic => f.write_str("not a Ward audit export (bad magic)"),
            Self::UnknownEventKind(k) => write!(f, "unknown event kind 0x{k:02x}"),
            Self::ReservedBits(p) => write!(f, "reserved presence bits set in 0x{p:02x}"),
            Self::UnknownOutcome(o) => write!(f, "unknown outcome byte 0x{o:02x}"),
            Self::FieldLength { field, len } => {
                write!(f, "field {field} has length {len}, outside its bounds")
            }
            Self::FieldCharacter { field, byte } => {
                write!(
                    f,
                    "field {field} holds byte 0x{byte:02x}, outside its alphabet"
                )
            }
        }
    }
}

impl core::error::Error for DecodeError {}

/// What a verifier found wrong (spec/09-audit-log.md, "Verifying an export").
///
/// `entry` and `index` fields are zero-based entry positions; `head` fields
/// are zero-based positions in the export's list of signed tree heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditError {
    /// The export's framing, or a standalone structure, does not decode.
    Decode(DecodeError),
    /// Entry `index` of an export does not decode (or its length frame is
    /// out of bounds).
    Entry {
        /// Position of the entry in the export.
        index: u64,
        /// What was wrong with it.
        error: DecodeError,
    },
    /// The relay key in the export is not the key the auditor expected.
    RelayKeyMismatch,
    /// The relay key is not a valid Ed25519 public key, or has small order.
    InvalidRelayKey,
    /// Entry `index` carries sequence number `found` instead of `index`:
    /// an entry was removed, inserted or reordered (AUD-11).
    SequenceMismatch {
        /// Position of the entry in the export (the expected sequence number).
        index: u64,
        /// The sequence number the entry carries.
        found: u64,
    },
    /// Entry `index` has an earlier timestamp than entry `index - 1` (AUD-11).
    TimestampRegressed {
        /// Position of the entry in the export.
        index: u64,
    },
    /// A signed tree head does not verify under the relay key (AUD-9).
    BadSignature,
    /// Signed tree head `head` of the export does not verify under the relay
    /// key: it was forged or altered.
    HeadSignature {
        /// Position of the head in the export.
        head: usize,
    },
    /// The export holds no signed tree head.
    NoTreeHead,
    /// Head `head` commits to more entries than the export holds: entries
    /// were removed from the end.
    HeadBeyondLog {
        /// Position of the head in the export.
        head: usize,
        /// The head's tree size.
        tree_size: u64,
        /// The number of entries in the export.
        entries: u64,
    },
    /// Head `head` is not after head `head - 1`: tree sizes and timestamps
    /// must both be non-decreasing and not both equal.
    HeadsOutOfOrder {
        /// Position of the head in the export.
        head: usize,
    },
    /// Head `head`'s timestamp is before the last entry it covers, or after
    /// the first entry it does not cover (AUD-13).
    HeadTimestamp {
        /// Position of the head in the export.
        head: usize,
    },
    /// Head `head`'s root is not the root of the first `tree_size` entries:
    /// an entry was modified.
    RootMismatch {
        /// Position of the head in the export.
        head: usize,
    },
    /// The consistency proof from head `head - 1` to head `head` does not
    /// verify.
    InconsistentHeads {
        /// Position of the head in the export.
        head: usize,
    },
    /// The last signed head covers fewer entries than the export holds:
    /// entries were appended without a signature.
    UnsignedEntries {
        /// The last head's tree size.
        signed: u64,
        /// The number of entries in the export.
        entries: u64,
    },
    /// A correctly signed head names a tree size this log has but a
    /// different root: the relay signed two different histories.
    Equivocation {
        /// The tree size at which the histories differ.
        tree_size: u64,
    },
    /// A tree size or index beyond the log was asked for.
    OutOfRange {
        /// The size or index asked for.
        requested: u64,
        /// The log's size.
        size: u64,
    },
    /// An inclusion proof does not verify (RFC 9162, 2.1.3.2).
    InclusionProofInvalid,
    /// A consistency proof does not verify (RFC 9162, 2.1.4.2).
    ConsistencyProofInvalid,
}

impl From<DecodeError> for AuditError {
    fn from(error: DecodeError) -> Self {
        Self::Decode(error)
    }
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "decoding failed: {e}"),
            Self::Entry { index, error } => write!(f, "entry {index} does not decode: {error}"),
            Self::RelayKeyMismatch => f.write_str("the export's relay key is not the expected key"),
            Self::InvalidRelayKey => f.write_str("the relay key is not a valid Ed25519 public key"),
            Self::SequenceMismatch { index, found } => write!(
                f,
                "entry {index} carries sequence number {found}: entries removed, inserted or reordered"
            ),
            Self::TimestampRegressed { index } => {
                write!(f, "entry {index} is older than the entry before it")
            }
            Self::BadSignature => f.write_str("tree head signature does not verify"),
            Self::HeadSignature { head } => {
                write!(f, "tree head {head}: signature does not verify")
            }
            Self::NoTreeHead => f.write_str("the export holds no signed tree head"),
            Self::HeadBeyondLog {
                head,
                tree_size,
                entries,
            } => write!(
                f,
                "tree head {head} covers {tree_size} entries but the export holds {entries}"
            ),
            Self::HeadsOutOfOrder { head } => {
                write!(f, "tree head {head} is not after the head before it")
            }
            Self::HeadTimestamp { head } => {
                write!(
                    f,
                    "tree head {head}: timestamp out of order with the entries"
                )
            }
            Self::RootMismatch { head } => write!(
                f,
                "tree head {head}: root differs from the entries' root (entries modified)"
            ),
            Self::InconsistentHeads { head } => {
                write!(
                    f,
                    "tree head {head} is not consistent with the head before it"
                )
            }
            Self::UnsignedEntries { signed, entries } => write!(
                f,
                "the last tree head covers {signed} entries but the export holds {entries}"
            ),
            Self::Equivocation { tree_size } => write!(
                f,
                "a signed tree head at size {tree_size} has a different root: the relay signed two histories"
            ),
            Self::OutOfRange { requested, size } => {
                write!(f, "{requested} is out of range for a log of size {size}")
            }
            Self::InclusionProofInvalid => f.write_str("inclusion proof does not verify"),
            Self::ConsistencyProofInvalid => f.write_str("consistency proof does not verify"),
        }
    }
}

impl core::error::Error for AuditError {}

/// What went wrong while operating a [`MerkleLog`](crate::MerkleLog).
///
/// Every failing operation leaves the log exactly as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogError<E> {
    /// The [`LeafStore`](crate::LeafStore) failed.
    Store(E),
    /// The store reports `len` leaves but has no hash at this index.
    MissingLeaf(u64),
    /// The entry's sequence number is not the log's next index (AUD-10).
    SequenceMismatch {
        /// The log's next index.
        expected: u64,
        /// The entry's sequence number.
        found: u64,
    },
    /// The timestamp is earlier than the latest entry or tree head (AUD-10).
    TimestampRegressed {
        /// The earliest timestamp the log accepts now.
        not_before_ms: u64,
        /// The timestamp given.
        found: u64,
    },
    /// A tree size or leaf index beyond the log was asked for.
    OutOfRange {
        /// The size or index asked for.
        requested: u64,
        /// The log's size.
        size: u64,
    },
}

impl<E: fmt::Display> fmt::Display for LogError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(e) => write!(f, "leaf store failed: {e}"),
            Self::MissingLeaf(i) => write!(f, "leaf store has no hash at index {i}"),
            Self::SequenceMismatch { expected, found } => {
                write!(
                    f,
                    "entry has sequence number {found}, the log expects {expected}"
                )
            }
            Self::TimestampRegressed {
                not_before_ms,
                found,
            } => write!(
                f,
                "timestamp {found} is before the log's latest timestamp {not_before_ms}"
            ),
            Self::OutOfRange { requested, size } => {
                write!(f, "{requested} is out of range for a log of size {size}")
            }
        }
    }
}

impl<E: core::error::Error + 'static> core::error::Error for LogError<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
            _ => None,
        }
    }
}
