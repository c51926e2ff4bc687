//! The relay's side: an append-only log of entries with incremental roots,
//! proofs and signed tree heads.
//!
//! # What is kept, and what things cost
//!
//! - Leaf hashes live in the [`LeafStore`] (32 bytes per entry).
//! - The *frontier*: for each set bit `l` of the tree size, the hash of the
//!   complete subtree of `2^l` leaves on the right edge. At most 64 hashes.
//!   [`MerkleLog::append`] merges into it: O(log n) hashes in the worst case,
//!   amortised two per append; [`MerkleLog::root`] folds it: O(log n).
//! - A cache of every complete, `2^l`-aligned subtree hash with
//!   `l >= CACHED_MIN_LEVEL` (4): the subtrees of 16, 32, 64, ... leaves, kept in
//!   memory (about n/8 hashes, 4 bytes per entry). Subtrees below that level
//!   are recomputed from at most 8 leaf hashes each.
//!
//! Every hash that a root at an earlier size or a proof needs is either such a
//! complete aligned subtree or a combination of O(log n) of them, so
//! [`root_at`](MerkleLog::root_at), [`inclusion_proof`](MerkleLog::inclusion_proof)
//! and [`consistency_proof`](MerkleLog::consistency_proof) take O(log n) cache
//! lookups and hashes, plus at most about 2 * 16 leaf reads for the lowest
//! levels. [`MerkleLog::open`] rebuilds the frontier and cache from the store:
//! O(n) leaf reads and hashes, once at start-up.
//! [`MerkleLog::rollback`] goes back to a [`Checkpoint`] (for a caller whose
//! leaf store sits in a database transaction that rolled back): O(log n)
//! cache lookups and hashes plus at most 15 leaf reads, and the cache rows
//! truncated.

use ed25519_dalek::SigningKey;

use crate::entry::AuditEntry;
use crate::error::LogError;
use crate::head::{SignedTreeHead, TreeHead};
use crate::merkle::{
    ConsistencyProof, EMPTY_ROOT, Hash, InclusionProof, leaf_hash, node_hash, split_point,
};
use crate::store::{LeafStore, MemoryLeafStore, TruncateLeaves};

/// Complete subtrees of `2^CACHED_MIN_LEVEL` leaves and more are cached in
/// memory; smaller ones are recomputed from the leaf hashes.
pub const CACHED_MIN_LEVEL: u32 = 4;

/// An append-only Merkle log of [`AuditEntry`] values (RFC 9162 hashing).
///
/// It enforces the log's two invariants on every append (AUD-10): entry `i`
/// has sequence number `i`, and timestamps (of entries and issued heads) never
/// go back. Every failing call leaves the log unchanged.
#[derive(Clone)]
pub struct MerkleLog<S: LeafStore = MemoryLeafStore> {
    store: S,
    size: u64,
    /// `frontier[l]` is the right-edge complete subtree of `2^l` leaves, present
    /// exactly when bit `l` of `size` is set.
    frontier: Vec<Option<Hash>>,
    /// `cache[j][i]`: the complete subtree of `2^(CACHED_MIN_LEVEL + j)`
    /// leaves starting at leaf `i * 2^(CACHED_MIN_LEVEL + j)`.
    cache: Vec<Vec<Hash>>,
    not_before_ms: u64,
}

/// A state a [`MerkleLog`] can go back to with
/// [`rollback`](MerkleLog::rollback): its size and timestamp bound when
/// [`checkpoint`](MerkleLog::checkpoint) was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    size: u64,
    not_before_ms: u64,
}

impl Checkpoint {
    /// The log's size then.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The log's [`not_before_ms`](MerkleLog::not_before_ms) then.
    pub fn not_before_ms(&self) -> u64 {
        self.not_before_ms
    }
}

impl<S: LeafStore> core::fmt::Debug for MerkleLog<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let root = self.root();
        f.debug_struct("MerkleLog")
            .field("size", &self.size)
            .field("root", &format_args!("{}", hex::encode(root)))
            .field("not_before_ms", &self.not_before_ms)
            .finish_non_exhaustive()
    }
}

impl MerkleLog<MemoryLeafStore> {
    /// An empty log in memory.
    pub fn in_memory() -> Self {
        Self::empty(MemoryLeafStore::new(), 0)
    }
}

impl Default for MerkleLog<MemoryLeafStore> {
    fn default() -> Self {
        Self::in_memory()
    }
}

type Result<T, S> = core::result::Result<T, LogError<<S as LeafStore>::Error>>;

impl<S: LeafStore> MerkleLog<S> {
    fn empty(store: S, not_before_ms: u64) -> Self {
        Self {
            store,
            size: 0,
            frontier: Vec::new(),
            cache: Vec::new(),
            not_before_ms,
        }
    }

    /// Opens a log over the leaf hashes already in `store`, rebuilding the
    /// frontier and the subtree cache (O(n)).
    ///
    /// `not_before_ms` is the greatest timestamp already in the log, that of
    /// its last entry or of the last tree head it issued, whichever is later;
    /// the relay reads it from its own storage. Appends and heads with an
    /// earlier timestamp are refused from then on.
    pub fn open(store: S, not_before_ms: u64) -> Result<Self, S> {
        let len = store.len().map_err(LogError::Store)?;
        let mut log = Self::empty(store, not_before_ms);
        for index in 0..len {
            let hash = log
                .store
                .leaf_hash(index)
                .map_err(LogError::Store)?
                .ok_or(LogError::MissingLeaf(index))?;
            log.absorb(hash);
        }
        Ok(log)
    }

    /// The number of entries.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The earliest timestamp the log accepts for the next entry or head.
    pub fn not_before_ms(&self) -> u64 {
        self.not_before_ms
    }

    /// The leaf store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the leaf store back.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Appends `entry`, which must carry sequence number [`size`](Self::size)
    /// and a timestamp no earlier than [`not_before_ms`](Self::not_before_ms)
    /// (AUD-10). Returns its leaf hash.
    ///
    /// The relay stores `entry.encode()` itself (it needs the entries for the
    /// export); the log stores only the leaf hash.
    pub fn append(&mut self, entry: &AuditEntry) -> Result<Hash, S> {
        if entry.sequence != self.size {
            return Err(LogError::SequenceMismatch {
                expected: self.size,
                found: entry.sequence,
            });
        }
        if entry.timestamp_ms < self.not_before_ms {
            return Err(LogError::TimestampRegressed {
                not_before_ms: self.not_before_ms,
                found: entry.timestamp_ms,
            });
        }
        let hash = leaf_hash(&entry.encode());
        self.store.append(hash).map_err(LogError::Store)?;
        self.absorb(hash);
        self.not_before_ms = entry.timestamp_ms;
        Ok(hash)
    }

    /// Adds a leaf hash to the frontier and the cache; the store already has it.
    pub(crate) fn absorb(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0usize;
        while let Some(left) = self.frontier.get_mut(level).and_then(Option::take) {
            hash = node_hash(&left, &hash);
            level += 1;
            if let Some(j) = level.checked_sub(CACHED_MIN_LEVEL as usize) {
                if self.cache.len() == j {
                    self.cache.push(Vec::new());
                }
                if let Some(row) = self.cache.get_mut(j) {
                    row.push(hash);
                }
            }
        }
        match self.frontier.get_mut(level) {
            Some(slot) => *slot = Some(hash),
            None => self.frontier.push(Some(hash)),
        }
        self.size += 1;
    }

    /// Appends a leaf hash without the entry checks (for the verifier, which
    /// makes its own, and for tests over raw leaves).
    pub(crate) fn push_leaf_hash(&mut self, leaf: Hash) -> Result<(), S> {
        self.store.append(leaf).map_err(LogError::Store)?;
        self.absorb(leaf);
        Ok(())
    }

    /// The root of the whole log: `MTH(D[0:size])`, O(log n).
    pub fn root(&self) -> Hash {
        // Lower levels are further right: fold from level 0 upwards.
        self.frontier
            .iter()
            .flatten()
            .fold(None, |acc, subtree| {
                Some(match acc {
                    None => *subtree,
                    Some(right) => node_hash(subtree, &right),
                })
            })
            .unwrap_or(EMPTY_ROOT)
    }

    /// The root the log had at `tree_size` entries, O(log n).
    pub fn root_at(&self, tree_size: u64) -> Result<Hash, S> {
        self.check_size(tree_size)?;
        if tree_size == self.size {
            Ok(self.root())
        } else if tree_size == 0 {
            Ok(EMPTY_ROOT)
        } else {
            self.range_hash(0, tree_size)
        }
    }

    /// The hash of leaf `index`.
    pub fn leaf_hash(&self, index: u64) -> Result<Hash, S> {
        if index >= self.size {
            return Err(LogError::OutOfRange {
                requested: index,
                size: self.size,
            });
        }
        self.subtree(0, index)
    }

    /// `PATH(leaf_index, D[0:tree_size])` (RFC 9162, 2.1.3.1), O(log n).
    pub fn inclusion_proof(&self, leaf_index: u64, tree_size: u64) -> Result<InclusionProof, S> {
        self.check_size(tree_size)?;
        if leaf_index >= tree_size {
            return Err(LogError::OutOfRange {
                requested: leaf_index,
                size: tree_size,
            });
        }
        let mut path = Vec::new();
        self.path(leaf_index, 0, tree_size, &mut path)?;
        Ok(InclusionProof {
            leaf_index,
            tree_size,
            path,
        })
    }

    /// `PROOF(first_size, D[0:second_size])` (RFC 9162, 2.1.4.1), O(log n);
    /// empty when `first_size` is 0 or equals `second_size`.
    pub fn consistency_proof(
        &self,
        first_size: u64,
        second_size: u64,
    ) -> Result<ConsistencyProof, S> {
        self.check_size(second_size)?;
        if first_size > second_size {
            return Err(LogError::OutOfRange {
                requested: first_size,
                size: second_size,
            });
        }
        let mut path = Vec::new();
        if first_size > 0 && first_size < second_size {
            self.subproof(first_size, 0, second_size, true, &mut path)?;
        }
        Ok(ConsistencyProof {
            first_size,
            second_size,
            path,
        })
    }

    /// The unsigned head of the log as it is now.
    pub fn tree_head(&self, timestamp_ms: u64) -> TreeHead {
        TreeHead {
            tree_size: self.size,
            timestamp_ms,
            root: self.root(),
        }
    }

    /// Signs the head of the log as it is now (AUD-9). `timestamp_ms` must be
    /// no earlier than [`not_before_ms`](Self::not_before_ms), and becomes it:
    /// no later entry can be dated before a head that does not contain it
    /// (AUD-13).
    pub fn issue_head(&mut self, timestamp_ms: u64, key: &SigningKey) -> Result<SignedTreeHead, S> {
        if timestamp_ms < self.not_before_ms {
            return Err(LogError::TimestampRegressed {
                not_before_ms: self.not_before_ms,
                found: timestamp_ms,
            });
        }
        let head = self.tree_head(timestamp_ms).sign(key);
        self.not_before_ms = timestamp_ms;
        Ok(head)
    }

    /// The log's state now, to [`rollback`](Self::rollback) to later.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            size: self.size,
            not_before_ms: self.not_before_ms,
        }
    }

    fn check_size(&self, tree_size: u64) -> Result<(), S> {
        if tree_size > self.size {
            Err(LogError::OutOfRange {
                requested: tree_size,
                size: self.size,
            })
        } else {
            Ok(())
        }
    }

    /// The complete subtree of `2^level` leaves starting at leaf
    /// `index * 2^level`, which must lie within the log.
    fn subtree(&self, level: u32, index: u64) -> Result<Hash, S> {
        if level == 0 {
            return self
                .store
                .leaf_hash(index)
                .map_err(LogError::Store)?
                .ok_or(LogError::MissingLeaf(index));
        }
        if let Some(j) = level.checked_sub(CACHED_MIN_LEVEL) {
            let cached = usize::try_from(j)
                .ok()
                .and_then(|j| self.cache.get(j))
                .and_then(|row| usize::try_from(index).ok().and_then(|i| row.get(i)));
            if let Some(hash) = cached {
                return Ok(*hash);
            }
        }
        // Below the cached levels (or, were the cache ever short, anywhere):
        // recompute from the two halves.
        let left = self.subtree(level - 1, 2 * index)?;
        let right = self.subtree(level - 1, 2 * index + 1)?;
        Ok(node_hash(&left, &right))
    }

    /// `MTH(D[lo:hi])` for `lo < hi <= size`.
    fn range_hash(&self, lo: u64, hi: u64) -> Result<Hash, S> {
        let n = hi - lo;
        if n.is_power_of_two() && lo.is_multiple_of(n) {
            return self.subtree(n.trailing_zeros(), lo >> n.trailing_zeros());
        }
        // n >= 2 here: a single leaf is always aligned.
        let k = split_point(n);
        let left = self.range_hash(lo, lo + k)?;
        let right = self.range_hash(lo + k, hi)?;
        Ok(node_hash(&left, &right))
    }

    /// Appends `PATH(m - lo, D[lo:hi])` to `out`.
    fn path(&self, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) -> Result<(), S> {
        if hi - lo <= 1 {
            return Ok(());
        }
        let k = split_point(hi - lo);
        if m < lo + k {
            self.path(m, lo, lo + k, out)?;
            out.push(self.range_hash(lo + k, hi)?);
        } else {
            self.path(m, lo + k, hi, out)?;
            out.push(self.range_hash(lo, lo + k)?);
        }
        Ok(())
    }

    /// Appends `SUBPROOF(m - lo, D[lo:hi], b)` to `out`.
    fn subproof(&self, m: u64, lo: u64, hi: u64, b: bool, out: &mut Vec<Hash>) -> Result<(), S> {
        if m == hi {
            if !b {
                out.push(self.range_hash(lo, hi)?);
            }
            return Ok(());
        }
        let k = split_point(hi - lo);
        if m - lo <= k {
            self.subproof(m, lo, lo + k, b, out)?;
            out.push(self.range_hash(lo + k, hi)?);
        } else {
            self.subproof(m, lo + k, hi, false, out)?;
            out.push(self.range_hash(lo, lo + k)?);
        }
        Ok(())
    }
}

impl<S: TruncateLeaves> MerkleLog<S> {
    /// Goes back to `checkpoint`, taken earlier from this log: forgets the
    /// entries appended since (the store [truncates](TruncateLeaves::truncate)
    /// to the checkpoint's size) and restores the timestamp bound of then,
    /// so heads issued since are forgotten too (the caller discards them).
    ///
    /// This undoes appends whose durable record was rolled back (a database
    /// transaction that failed); it is not a way to rewrite a published log.
    /// A checkpoint beyond the log's size is
    /// [`OutOfRange`](LogError::OutOfRange). On error the log is unchanged
    /// (the store is as its `truncate` left it).
    pub fn rollback(&mut self, checkpoint: Checkpoint) -> Result<(), S> {
        let size = checkpoint.size;
        self.check_size(size)?;
        // The right-edge subtrees of `size` leaves, read before anything
        // changes: the subtree of `2^l` leaves for each set bit `l`, the
        // `((size >> l) - 1)`-th of its level.
        let levels = (u64::BITS - size.leading_zeros()) as usize;
        let mut frontier = Vec::with_capacity(levels);
        for level in 0..levels as u32 {
            frontier.push(if (size >> level) & 1 == 1 {
                Some(self.subtree(level, (size >> level) - 1)?)
            } else {
                None
            });
        }
        self.store.truncate(size).map_err(LogError::Store)?;
        for (j, row) in self.cache.iter_mut().enumerate() {
            let level = CACHED_MIN_LEVEL as usize + j;
            let keep = usize::try_from(size >> level).unwrap_or(usize::MAX);
            row.truncate(keep);
        }
        while self.cache.last().is_some_and(Vec::is_empty) {
            self.cache.pop();
        }
        self.frontier = frontier;
        self.size = size;
        self.not_before_ms = checkpoint.not_before_ms;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EventKind;
    use crate::merkle::tests::{CT_ROOTS, ct_leaves, h};
    use crate::merkle::{root_from_leaf_hashes, verify_consistency, verify_inclusion};

    fn log_of(leaves: &[Hash]) -> MerkleLog {
        let mut log = MerkleLog::in_memory();
        for leaf in leaves {
            log.push_leaf_hash(*leaf).unwrap();
        }
        log
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn ct_tree_roots_at_every_size() {
        let hashes: Vec<Hash> = ct_leaves().iter().map(|l| leaf_hash(l)).collect();
        let log = log_of(&hashes);
        for (n, root) in CT_ROOTS.iter().enumerate() {
            assert_eq!(log.root_at(n as u64).unwrap(), h(root), "n = {n}");
            assert_eq!(log_of(&hashes[..n]).root(), h(root), "incremental n = {n}");
        }
    }

    /// Exhaustive up to 70 leaves (past the first cached level of 16 and
    /// the second of 32): every root, every inclusion proof and every
    /// consistency proof against the reference and the verifiers.
    #[test]
    fn every_root_and_proof_up_to_70_leaves() {
        let all = leaves(70);
        let log = log_of(&all);
        for n in 0..=70u64 {
            let root = root_from_leaf_hashes(&all[..n as usize]);
            assert_eq!(log.root_at(n).unwrap(), root, "root {n}");
            for i in 0..n {
                let proof = log.inclusion_proof(i, n).unwrap();
                verify_inclusion(&all[i as usize], i, n, &proof.path, &root).unwrap();
            }
            for m in 0..=n {
                let proof = log.consistency_proof(m, n).unwrap();
                let first = root_from_leaf_hashes(&all[..m as usize]);
                verify_consistency(m, n, &first, &root, &proof.path).unwrap();
            }
        }
    }

    #[test]
    fn open_rebuilds_the_same_state() {
        let log = log_of(&leaves(300));
        let reopened = MerkleLog::open(log.store().clone(), 0).unwrap();
        assert_eq!(reopened.size(), 300);
        assert_eq!(reopened.root(), log.root());
        assert_eq!(reopened.cache, log.cache);
        assert_eq!(reopened.frontier, log.frontier);
        assert_eq!(
            reopened.inclusion_proof(123, 250).unwrap(),
            log.inclusion_proof(123, 250).unwrap()
        );
    }

    #[test]
    fn cache_holds_every_complete_subtree_of_16_and_more() {
        let all = leaves(100);
        let log = log_of(&all);
        assert_eq!(log.cache.len(), 3); // 16, 32, 64
        assert_eq!(log.cache[0].len(), 6);
        assert_eq!(log.cache[1].len(), 3);
        assert_eq!(log.cache[2].len(), 1);
        assert_eq!(log.cache[1][2], root_from_leaf_hashes(&all[64..96]));
        assert_eq!(log.cache[2][0], root_from_leaf_hashes(&all[..64]));
    }

    #[test]
    fn append_enforces_sequence_and_time() {
        let mut log = MerkleLog::in_memory();
        log.append(&AuditEntry::new(0, 100, EventKind::Enrollment))
            .unwrap();
        assert_eq!(
            log.append(&AuditEntry::new(2, 100, EventKind::Send)),
            Err(LogError::SequenceMismatch {
                expected: 1,
                found: 2
            })
        );
        assert_eq!(
            log.append(&AuditEntry::new(1, 99, EventKind::Send)),
            Err(LogError::TimestampRegressed {
                not_before_ms: 100,
                found: 99
            })
        );
        let key = SigningKey::from_bytes(&[7; 32]);
        assert!(log.issue_head(99, &key).is_err());
        let head = log.issue_head(150, &key).unwrap();
        assert_eq!(head.head.tree_size, 1);
        assert_eq!(
            log.append(&AuditEntry::new(1, 120, EventKind::Send)),
            Err(LogError::TimestampRegressed {
                not_before_ms: 150,
                found: 120
            }),
            "an entry may not be dated before a head that does not contain it"
        );
        assert_eq!(log.size(), 1, "refused appends change nothing");
        log.append(&AuditEntry::new(1, 150, EventKind::Send))
            .unwrap();
        assert_eq!(log.size(), 2);
    }

    #[test]
    fn out_of_range_requests_are_refused() {
        let log = log_of(&leaves(5));
        assert!(matches!(log.root_at(6), Err(LogError::OutOfRange { .. })));
        assert!(matches!(
            log.inclusion_proof(5, 5),
            Err(LogError::OutOfRange { .. })
        ));
        assert!(matches!(
            log.inclusion_proof(0, 6),
            Err(LogError::OutOfRange { .. })
        ));
        assert!(matches!(
            log.consistency_proof(4, 3),
            Err(LogError::OutOfRange { .. })
        ));
        assert!(matches!(log.leaf_hash(5), Err(LogError::OutOfRange { .. })));
    }

    /// Rolling back gives exactly the log that never had the later entries,
    /// at every kind of size (empty, below and on the cached levels, powers
    /// of two), and appending continues from there.
    #[test]
    fn rollback_restores_the_earlier_log() {
        let all = leaves(300);
        for size in [
            0u64, 1, 2, 7, 15, 16, 17, 31, 32, 33, 100, 128, 255, 256, 257,
        ] {
            let mut log = log_of(&all[..size as usize]);
            let mark = log.checkpoint();
            for leaf in &all[size as usize..] {
                log.push_leaf_hash(*leaf).unwrap();
            }
            log.rollback(mark).unwrap();
            let fresh = log_of(&all[..size as usize]);
            assert_eq!(log.size(), size);
            assert_eq!(log.root(), fresh.root(), "size {size}");
            assert_eq!(log.frontier, fresh.frontier, "size {size}");
            assert_eq!(log.cache, fresh.cache, "size {size}");
            assert_eq!(log.store(), fresh.store());
            for leaf in &all[size as usize..] {
                log.push_leaf_hash(*leaf).unwrap();
            }
            assert_eq!(log.root(), log_of(&all).root(), "regrown from {size}");
        }
    }

    #[test]
    fn rollback_restores_the_timestamp_bound_and_checks_the_size() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut log = MerkleLog::in_memory();
        log.append(&AuditEntry::new(0, 100, EventKind::Enrollment))
            .unwrap();
        let mark = log.checkpoint();
        assert_eq!((mark.size(), mark.not_before_ms()), (1, 100));
        log.append(&AuditEntry::new(1, 200, EventKind::Send))
            .unwrap();
        log.issue_head(300, &key).unwrap();
        log.rollback(mark).unwrap();
        assert_eq!(log.checkpoint(), mark);
        log.append(&AuditEntry::new(1, 150, EventKind::Send))
            .unwrap();

        let small = log_of(&leaves(3));
        let mut big = log_of(&leaves(5));
        let root = small.root();
        let beyond = big.checkpoint();
        big.rollback(small.checkpoint()).unwrap();
        assert_eq!(big.root(), root);
        assert!(matches!(
            big.rollback(beyond),
            Err(LogError::OutOfRange {
                requested: 5,
                size: 3
            })
        ));
        assert_eq!(big.root(), root, "a refused rollback changes nothing");
    }

    /// A store that lost a leaf is reported, not papered over.
    #[test]
    fn a_store_missing_a_leaf_is_an_error() {
        struct Lossy(MemoryLeafStore);
        impl LeafStore for Lossy {
            type Error = core::convert::Infallible;
            fn len(&self) -> core::result::Result<u64, Self::Error> {
                self.0.len()
            }
            fn leaf_hash(&self, index: u64) -> core::result::Result<Option<Hash>, Self::Error> {
                Ok(if index == 3 {
                    None
                } else {
                    self.0.leaf_hash(index)?
                })
            }
            fn append(&mut self, leaf_hash: Hash) -> core::result::Result<(), Self::Error> {
                self.0.append(leaf_hash)
            }
        }
        let store = log_of(&leaves(8)).into_store();
        assert_eq!(
            MerkleLog::open(Lossy(store), 0).map(|l| l.size()),
            Err(LogError::MissingLeaf(3))
        );
    }
}
