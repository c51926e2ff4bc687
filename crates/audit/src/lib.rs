//! Ward's verifiable audit log (spec/09-audit-log.md).
//!
//! The relay records metadata about what it does (authentications, sends,
//! deliveries, enrollments, revocations, ...) as [`AuditEntry`] values in an
//! append-only Merkle tree hashed exactly as RFC 9162 (Certificate
//! Transparency 2.0) section 2.1, and periodically signs the tree's root
//! ([`SignedTreeHead`]). An auditor who holds the relay's public key checks
//! an exported log with [`verify_export`] without trusting the relay; a client
//! or auditor who kept an earlier head checks that the log only grew, with a
//! [`ConsistencyProof`], and that an entry is in it, with an
//! [`InclusionProof`].
//!
//! ```
//! use ward_audit::{AuditEntry, EventKind, Export, MerkleLog, UserId, verify_export};
//! use ed25519_dalek::SigningKey;
//!
//! let key = SigningKey::from_bytes(&[7; 32]);
//! let mut log = MerkleLog::in_memory();
//! let mut entries = Vec::new();
//! for (i, kind) in [EventKind::Enrollment, EventKind::AuthSuccess].into_iter().enumerate() {
//!     let mut entry = AuditEntry::new(i as u64, 1_000 + i as u64, kind);
//!     entry.actor_user = Some(UserId::new("alice@clinic.example")?);
//!     log.append(&entry)?;
//!     entries.push(entry);
//! }
//! let head = log.issue_head(2_000, &key)?;
//!
//! let export = Export { relay_key: key.verifying_key().to_bytes(), entries, heads: vec![head] };
//! let verified = verify_export(&export.encode(), Some(key.verifying_key().to_bytes()))?;
//! assert_eq!(verified.root(), log.root());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! | Module | What |
//! |---|---|
//! | [`entry`] | [`AuditEntry`] and its canonical, bounded encoding |
//! | [`merkle`] | RFC 9162 hashing, proof types, proof verification |
//! | [`store`] | [`LeafStore`], where leaf hashes are kept; [`MemoryLeafStore`]; [`TruncateLeaves`] |
//! | [`log`] | [`MerkleLog`]: append, roots, proofs, issuing heads, rolling back to a [`Checkpoint`] (complexities documented there) |
//! | [`head`] | [`TreeHead`], [`SignedTreeHead`] |
//! | [`export`] | The export file, [`verify_export`], [`VerifiedLog`] |
//! | [`mod@vectors`] | [`vectors()`], the data of spec/vectors/audit.json |

#![forbid(unsafe_code)]

mod codec;
pub mod entry;
pub mod error;
pub mod export;
pub mod head;
pub mod log;
pub mod merkle;
pub mod store;
pub mod vectors;

pub use ed25519_dalek::{SigningKey, VerifyingKey};

pub use crate::entry::{
    AuditEntry, Detail, DeviceId, ErrorCode, EventKind, MAX_ENTRY_LEN, MessageId, Outcome, UserId,
};
pub use crate::error::{AuditError, DecodeError, LogError};
pub use crate::export::{Export, ExportWriter, VerifiedLog, verify_export};
pub use crate::head::{SignedTreeHead, TreeHead};
pub use crate::log::{Checkpoint, MerkleLog};
pub use crate::merkle::{
    ConsistencyProof, EMPTY_ROOT, Hash, InclusionProof, leaf_hash, node_hash, verify_consistency,
    verify_inclusion,
};
pub use crate::store::{LeafStore, MemoryLeafStore, TruncateLeaves};
pub use crate::vectors::vectors;
