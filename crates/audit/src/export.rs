//! The export file and the auditor's verifier (spec/09-audit-log.md,
//! "Export format" and "Verifying an export").
//!
//! ```text
//! export = "Ward audit\0"                          11 bytes, magic
//!       || 0x01                                    version
//!       || relay_key                               32 bytes, Ed25519 public key
//!       || u64be(entry_count)
//!       || entry_count x ( u16be(len) || entry )   len <= MAX_ENTRY_LEN
//!       || u32be(head_count)
//!       || head_count x signed_tree_head           113 bytes each
//! ```
//!
//! Nothing may follow the last head.

use core::convert::Infallible;

use ed25519_dalek::VerifyingKey;

use crate::codec::Reader;
use crate::entry::{AuditEntry, MAX_ENTRY_LEN, MIN_ENTRY_LEN};
use crate::error::{AuditError, DecodeError, LogError};
use crate::head::{SignedTreeHead, TreeHead};
use crate::log::MerkleLog;
use crate::merkle::{ConsistencyProof, Hash, InclusionProof, leaf_hash, verify_consistency};

/// The first bytes of an export.
pub const EXPORT_MAGIC: &[u8; 11] = b"Ward audit\0";
/// The version byte after the magic.
pub const EXPORT_VERSION: u8 = 0x01;

/// An export's contents, as written by the relay. Decoding one does not
/// verify anything; [`verify_export`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The relay's Ed25519 public key.
    pub relay_key: [u8; 32],
    /// Every entry of the log, in order.
    pub entries: Vec<AuditEntry>,
    /// The signed tree heads the relay issued (at least the latest, which
    /// must cover every entry), in the order issued.
    pub heads: Vec<SignedTreeHead>,
}

impl Export {
    /// Encodes the export.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            EXPORT_MAGIC.len() + 1 + 32 + 8 + self.entries.len() * 64 + 4 + self.heads.len() * 113,
        );
        out.extend_from_slice(EXPORT_MAGIC);
        out.push(EXPORT_VERSION);
        out.extend_from_slice(&self.relay_key);
        out.extend_from_slice(&(self.entries.len() as u64).to_be_bytes());
        for entry in &self.entries {
            let at = out.len();
            out.extend_from_slice(&[0, 0]);
            entry.encode_into(&mut out);
            // An entry is at most MAX_ENTRY_LEN (402) bytes: fits in u16.
            let len = (out.len() - at - 2) as u16;
            out[at..at + 2].copy_from_slice(&len.to_be_bytes());
        }
        out.extend_from_slice(&(self.heads.len() as u32).to_be_bytes());
        for head in &self.heads {
            out.extend_from_slice(&head.encode());
        }
        out
    }

    /// Decodes the structure (framing, every entry, every head) without
    /// verifying signatures, roots or order.
    pub fn decode(bytes: &[u8]) -> Result<Self, AuditError> {
        let raw = RawExport::parse(bytes)?;
        let entries = raw
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                AuditEntry::decode(e).map_err(|error| AuditError::Entry {
                    index: i as u64,
                    error,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            relay_key: raw.relay_key,
            entries,
            heads: raw.heads,
        })
    }
}

/// Writes an export to a stream, one entry at a time, for a relay whose log
/// does not fit in memory as an [`Export`]. The bytes are those of
/// [`Export::encode`].
#[derive(Debug)]
pub struct ExportWriter<W: std::io::Write> {
    out: W,
    remaining: u64,
    buf: Vec<u8>,
}

impl<W: std::io::Write> ExportWriter<W> {
    /// Writes the header for `entry_count` entries.
    pub fn new(mut out: W, relay_key: &[u8; 32], entry_count: u64) -> std::io::Result<Self> {
        out.write_all(EXPORT_MAGIC)?;
        out.write_all(&[EXPORT_VERSION])?;
        out.write_all(relay_key)?;
        out.write_all(&entry_count.to_be_bytes())?;
        Ok(Self {
            out,
            remaining: entry_count,
            buf: Vec::with_capacity(2 + MAX_ENTRY_LEN),
        })
    }

    /// Writes the next entry. More entries than announced is an
    /// `InvalidInput` error.
    pub fn entry(&mut self, entry: &AuditEntry) -> std::io::Result<()> {
        if self.remaining == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "more entries than announced",
            ));
        }
        self.buf.clear();
        self.buf.extend_from_slice(&[0, 0]);
        entry.encode_into(&mut self.buf);
        // At most MAX_ENTRY_LEN (402) bytes: fits in u16.
        let len = ((self.buf.len() - 2) as u16).to_be_bytes();
        self.buf[..2].copy_from_slice(&len);
        self.out.write_all(&self.buf)?;
        self.remaining -= 1;
        Ok(())
    }

    /// Writes the heads and returns the stream. Fewer entries than
    /// announced is an `InvalidInput` error.
    pub fn finish(mut self, heads: &[SignedTreeHead]) -> std::io::Result<W> {
        if self.remaining != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "fewer entries than announced",
            ));
        }
        let count = u32::try_from(heads.len())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "too many heads"))?;
        self.out.write_all(&count.to_be_bytes())?;
        for head in heads {
            self.out.write_all(&head.encode())?;
        }
        Ok(self.out)
    }
}

/// The framing of an export, entries still as bytes.
struct RawExport<'a> {
    relay_key: [u8; 32],
    entries: Vec<&'a [u8]>,
    heads: Vec<SignedTreeHead>,
}

impl<'a> RawExport<'a> {
    /// AUD-14 step 1: the framing.
    fn parse(bytes: &'a [u8]) -> Result<Self, AuditError> {
        let mut r = Reader::new(bytes);
        if r.take(EXPORT_MAGIC.len())? != EXPORT_MAGIC {
            return Err(DecodeError::BadMagic.into());
        }
        let version = r.u8()?;
        if version != EXPORT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version).into());
        }
        let relay_key = r.array()?;
        let count = r.u64()?;
        // Each entry takes at least 2 + MIN_ENTRY_LEN bytes: a count that
        // cannot fit is refused before anything is allocated for it.
        if count > (r.remaining() / (2 + MIN_ENTRY_LEN)) as u64 {
            return Err(DecodeError::Truncated.into());
        }
        let mut entries = Vec::with_capacity(count as usize);
        for index in 0..count {
            let len = usize::from(r.u16()?);
            if len > MAX_ENTRY_LEN {
                return Err(AuditError::Entry {
                    index,
                    error: DecodeError::FieldLength {
                        field: "entry",
                        len,
                    },
                });
            }
            entries.push(r.take(len)?);
        }
        let head_count = r.u32()? as usize;
        let expected = head_count.saturating_mul(SignedTreeHead::ENCODED_LEN);
        if r.remaining() < expected {
            return Err(DecodeError::Truncated.into());
        }
        if r.remaining() > expected {
            return Err(DecodeError::TrailingBytes.into());
        }
        let heads = (0..head_count)
            .map(|_| SignedTreeHead::read(&mut r))
            .collect::<Result<_, _>>()?;
        r.finish()?;
        Ok(Self {
            relay_key,
            entries,
            heads,
        })
    }
}

/// An export that passed [`verify_export`]: every entry is covered by a
/// correctly signed tree head, and the heads form one append-only history.
#[derive(Debug, Clone)]
pub struct VerifiedLog {
    relay_key: VerifyingKey,
    entries: Vec<AuditEntry>,
    heads: Vec<SignedTreeHead>,
    latest: TreeHead,
    log: MerkleLog,
}

impl VerifiedLog {
    /// The relay's public key the heads verified under.
    pub fn relay_key(&self) -> [u8; 32] {
        self.relay_key.to_bytes()
    }

    /// The entries, in order; entry `i` has sequence number `i`.
    pub fn entries(&self) -> &[AuditEntry] {
        &self.entries
    }

    /// The signed tree heads, in order; each verified.
    pub fn heads(&self) -> &[SignedTreeHead] {
        &self.heads
    }

    /// The last head: it covers every entry.
    pub fn latest_head(&self) -> &TreeHead {
        &self.latest
    }

    /// The number of entries.
    pub fn size(&self) -> u64 {
        self.log.size()
    }

    /// The root of all entries (equal to the latest head's root).
    pub fn root(&self) -> Hash {
        self.log.root()
    }

    /// The hash of entry `index`.
    pub fn leaf_hash(&self, index: u64) -> Result<Hash, AuditError> {
        self.log.leaf_hash(index).map_err(from_log)
    }

    /// An inclusion proof for entry `index` in the tree of `tree_size` entries.
    pub fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, AuditError> {
        self.log.inclusion_proof(index, tree_size).map_err(from_log)
    }

    /// A consistency proof between two sizes of this log.
    pub fn consistency_proof(
        &self,
        first: u64,
        second: u64,
    ) -> Result<ConsistencyProof, AuditError> {
        self.log.consistency_proof(first, second).map_err(from_log)
    }

    /// Checks a head the auditor kept from earlier (from a previous export,
    /// or handed to a client): it must verify under the relay key and match
    /// this log at its size. A correctly signed head with another root is
    /// proof that the relay signed two different histories
    /// ([`AuditError::Equivocation`]).
    pub fn check_head(&self, head: &SignedTreeHead) -> Result<(), AuditError> {
        let head = head.verify(&self.relay_key)?;
        let root = self.log.root_at(head.tree_size).map_err(from_log)?;
        if root == head.root {
            Ok(())
        } else {
            Err(AuditError::Equivocation {
                tree_size: head.tree_size,
            })
        }
    }
}

fn from_log(e: LogError<Infallible>) -> AuditError {
    match e {
        LogError::Store(never) => match never {},
        LogError::OutOfRange { requested, size } => AuditError::OutOfRange { requested, size },
        LogError::MissingLeaf(requested) => AuditError::OutOfRange { requested, size: 0 },
        LogError::SequenceMismatch { expected, found } => AuditError::SequenceMismatch {
            index: expected,
            found,
        },
        LogError::TimestampRegressed { found, .. } => {
            AuditError::TimestampRegressed { index: found }
        }
    }
}

/// Verifies an exported log without trusting the relay (AUD-14).
///
/// In this order, stopping at the first failure:
///
/// 1. the framing decodes ([`AuditError::Decode`], or [`AuditError::Entry`]
///    for an entry's length frame);
/// 2. the relay key equals `expected_relay_key` if one is given
///    ([`AuditError::RelayKeyMismatch`]) and is a valid Ed25519 key
///    ([`AuditError::InvalidRelayKey`]);
/// 3. for each entry `i` in order: it decodes canonically
///    ([`AuditError::Entry`]), carries sequence number `i`
///    ([`AuditError::SequenceMismatch`]), is no older than entry `i - 1`
///    ([`AuditError::TimestampRegressed`]); its leaf hash is computed from the
///    exported bytes;
/// 4. there is at least one head ([`AuditError::NoTreeHead`]); for each head
///    `j` in order: its signature verifies ([`AuditError::HeadSignature`]), it
///    covers no more entries than exported ([`AuditError::HeadBeyondLog`]), it
///    comes after head `j - 1` ([`AuditError::HeadsOutOfOrder`]), its
///    timestamp is between its last entry's and the next entry's
///    ([`AuditError::HeadTimestamp`]), its root is the root of its first
///    `tree_size` entries ([`AuditError::RootMismatch`]), and the consistency
///    proof from head `j - 1` verifies against the two heads alone
///    ([`AuditError::InconsistentHeads`]);
/// 5. the last head covers every entry ([`AuditError::UnsignedEntries`]).
pub fn verify_export(
    bytes: &[u8],
    expected_relay_key: Option<[u8; 32]>,
) -> Result<VerifiedLog, AuditError> {
    // 1.
    let raw = RawExport::parse(bytes)?;
    // 2.
    if expected_relay_key.is_some_and(|expected| expected != raw.relay_key) {
        return Err(AuditError::RelayKeyMismatch);
    }
    let relay_key =
        VerifyingKey::from_bytes(&raw.relay_key).map_err(|_| AuditError::InvalidRelayKey)?;
    if relay_key.is_weak() {
        return Err(AuditError::InvalidRelayKey);
    }
    // 3.
    let mut log = MerkleLog::in_memory();
    let mut entries: Vec<AuditEntry> = Vec::with_capacity(raw.entries.len());
    for (i, bytes) in raw.entries.iter().enumerate() {
        let index = i as u64;
        let entry =
            AuditEntry::decode(bytes).map_err(|error| AuditError::Entry { index, error })?;
        if entry.sequence != index {
            return Err(AuditError::SequenceMismatch {
                index,
                found: entry.sequence,
            });
        }
        if entries
            .last()
            .is_some_and(|prev| entry.timestamp_ms < prev.timestamp_ms)
        {
            return Err(AuditError::TimestampRegressed { index });
        }
        log.push_leaf_hash(leaf_hash(bytes)).map_err(from_log)?;
        entries.push(entry);
    }
    let n = log.size();
    // 4.
    let mut previous: Option<TreeHead> = None;
    for (j, signed) in raw.heads.iter().enumerate() {
        let head = *signed
            .verify(&relay_key)
            .map_err(|_| AuditError::HeadSignature { head: j })?;
        if head.tree_size > n {
            return Err(AuditError::HeadBeyondLog {
                head: j,
                tree_size: head.tree_size,
                entries: n,
            });
        }
        if let Some(prev) = previous {
            let same = head.tree_size == prev.tree_size && head.timestamp_ms == prev.timestamp_ms;
            if head.tree_size < prev.tree_size || head.timestamp_ms < prev.timestamp_ms || same {
                return Err(AuditError::HeadsOutOfOrder { head: j });
            }
        }
        let size = head.tree_size as usize;
        let last_covered = size.checked_sub(1).and_then(|i| entries.get(i));
        let first_uncovered = entries.get(size);
        if last_covered.is_some_and(|e| e.timestamp_ms > head.timestamp_ms)
            || first_uncovered.is_some_and(|e| e.timestamp_ms < head.timestamp_ms)
        {
            return Err(AuditError::HeadTimestamp { head: j });
        }
        if log.root_at(head.tree_size).map_err(from_log)? != head.root {
            return Err(AuditError::RootMismatch { head: j });
        }
        if let Some(prev) = previous {
            let proof = log
                .consistency_proof(prev.tree_size, head.tree_size)
                .map_err(from_log)?;
            verify_consistency(
                prev.tree_size,
                head.tree_size,
                &prev.root,
                &head.root,
                &proof.path,
            )
            .map_err(|_| AuditError::InconsistentHeads { head: j })?;
        }
        previous = Some(head);
    }
    let Some(latest) = previous else {
        return Err(AuditError::NoTreeHead);
    };
    // 5.
    if latest.tree_size != n {
        return Err(AuditError::UnsignedEntries {
            signed: latest.tree_size,
            entries: n,
        });
    }
    Ok(VerifiedLog {
        relay_key,
        entries,
        heads: raw.heads,
        latest,
        log,
    })
}
