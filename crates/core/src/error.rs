//! Errors of the protocol core.
//!
//! Decoding errors say precisely what was wrong with the bytes, so that a
//! re-implementer can find their bug. Authentication failures say nothing
//! beyond "it did not authenticate": which check failed is not the caller's
//! business and must not become an oracle.

use core::fmt;

/// Everything that can go wrong in `ward-core`.
///
/// Every failing operation leaves the session or key it was called on exactly
/// as it was before the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a valid encoding of the expected structure.
    Decode(DecodeError),
    /// The leading format byte names a format or version this build does not
    /// know (spec/03-encodings.md, "Format bytes").
    UnsupportedFormat {
        /// The format byte that was found.
        found: u8,
    },
    /// A signature over an identity or a prekey did not verify.
    BadSignature,
    /// A Diffie-Hellman result was all zeroes: the peer's key has small order.
    NonContributoryKey,
    /// The message did not authenticate under any key this session could use.
    /// Bit flips, truncation inside the ciphertext, a foreign session's message
    /// and forged headers all end here.
    DecryptionFailed,
    /// The message's key has already been used or was evicted: a duplicate, a
    /// replay, or a message older than the session keeps keys for.
    DuplicateOrExpired,
    /// Decrypting would need more skipped keys in one chain than
    /// [`crate::limits::MAX_SKIP`].
    TooFarAhead,
    /// A pre-key message names a different session or identity than the one
    /// it was given to.
    WrongSession,
    /// The pre-key message does not name the prekeys the caller passed in.
    PreKeyMismatch,
    /// A chain counter would overflow: the session has sent 2^32 - 1 messages
    /// in one chain and must be replaced.
    ChainExhausted,
    /// The plaintext exceeds [`crate::limits::MAX_PLAINTEXT_LEN`].
    MessageTooLarge,
    /// An argument exceeds a length the encoding can carry.
    InputTooLong {
        /// The argument, as named in the spec.
        field: &'static str,
        /// The largest length allowed.
        max: usize,
    },
    /// A group message names another group or sender chain than the chain it
    /// was given to: the caller should look the chain up by the message's
    /// ids, and ask the sender for it if it has none (spec/13).
    WrongChain,
    /// A group message, change or distribution is for another group.
    WrongGroup,
    /// A group message names a sender chain this device does not hold: ask
    /// the sending device for it over the pairwise session (spec/14).
    MissingChain,
    /// The author of a group change, or the sender of a distribution, is
    /// not a member device, or may not make that change.
    NotAuthorized,
    /// A group change builds on a head this device has not reached: keep it
    /// and apply it again after the changes before it.
    UnknownParent,
    /// A group change lost to a competing change of the same epoch, or
    /// builds on a head older than the history kept (spec/14).
    ChangeSuperseded,
    /// A group change that cannot apply to the roster it names.
    InvalidChange(&'static str),
    /// A role schedule breaks one of its rules (spec/15); the text names which.
    InvalidSchedule(&'static str),
    /// The session has no key to send or receive with yet (a responder asked
    /// to decrypt a new ratchet before it has ever sent).
    NotReady,
}

/// What exactly was wrong with some encoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the structure did.
    Truncated,
    /// A field has the wrong length.
    WrongLength {
        /// The field, as named in the spec.
        field: &'static str,
        /// The length the spec requires.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// A required field is absent.
    MissingField(&'static str),
    /// A varint is longer than needed or exceeds 32 bits.
    NonCanonicalVarint,
    /// The protobuf layer rejected the bytes.
    Protobuf,
    /// A key is not a valid encoding (for example an Ed25519 point that does
    /// not decompress, or an ML-KEM key that fails its checks).
    InvalidKey(&'static str),
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::Decode(e)
    }
}

impl From<ward_proto::DecodeError> for Error {
    fn from(_: ward_proto::DecodeError) -> Self {
        Error::Decode(DecodeError::Protobuf)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Decode(e) => write!(f, "malformed input: {e}"),
            Error::UnsupportedFormat { found } => {
                write!(f, "unsupported format or version byte 0x{found:02x}")
            }
            Error::BadSignature => f.write_str("signature verification failed"),
            Error::NonContributoryKey => f.write_str("peer key has small order"),
            Error::DecryptionFailed => f.write_str("message failed to authenticate"),
            Error::DuplicateOrExpired => {
                f.write_str("message key already used or expired (duplicate or replay)")
            }
            Error::TooFarAhead => f.write_str("message is too far ahead in its chain"),
            Error::WrongSession => f.write_str("pre-key message belongs to another session"),
            Error::PreKeyMismatch => f.write_str("pre-key message names other prekeys"),
            Error::ChainExhausted => f.write_str("sending chain counter exhausted"),
            Error::MessageTooLarge => f.write_str("plaintext too large for one message"),
            Error::InputTooLong { field, max } => write!(f, "{field} longer than {max}"),
            Error::WrongChain => f.write_str("group message belongs to another sender chain"),
            Error::WrongGroup => f.write_str("belongs to another group"),
            Error::MissingChain => f.write_str("sender chain not held: ask its sender"),
            Error::NotAuthorized => f.write_str("not a member device, or not allowed this change"),
            Error::UnknownParent => f.write_str("group change builds on an unknown head"),
            Error::ChangeSuperseded => f.write_str("group change lost to another of its epoch"),
            Error::InvalidChange(why) => write!(f, "invalid group change: {why}"),
            Error::InvalidSchedule(why) => write!(f, "invalid role schedule: {why}"),
            Error::NotReady => f.write_str("session has no ratchet key for this message"),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("input truncated"),
            DecodeError::WrongLength {
                field,
                expected,
                found,
            } => write!(f, "{field}: expected {expected} bytes, found {found}"),
            DecodeError::MissingField(field) => write!(f, "missing field {field}"),
            DecodeError::NonCanonicalVarint => f.write_str("non-canonical or oversized varint"),
            DecodeError::Protobuf => f.write_str("invalid protobuf"),
            DecodeError::InvalidKey(field) => write!(f, "{field}: invalid key encoding"),
        }
    }
}

impl core::error::Error for Error {}
impl core::error::Error for DecodeError {}

/// Result type of this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;
