//! Inclusion and consistency proofs from `MerkleLog` against the RFC 9162
//! verifiers, for random (m, n, index); and every flipped bit is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::OnceLock;

use proptest::prelude::*;
use ward_audit::merkle::root_from_leaf_hashes;
use ward_audit::{
    AuditEntry, DeviceId, EventKind, Hash, MerkleLog, MessageId, verify_consistency,
    verify_inclusion,
};

const MAX: u64 = 1100;

/// One log of `MAX` varied entries; a tree of size n <= MAX is its prefix.
fn shared() -> &'static (MerkleLog, Vec<Hash>) {
    static LOG: OnceLock<(MerkleLog, Vec<Hash>)> = OnceLock::new();
    LOG.get_or_init(|| {
        let mut log = MerkleLog::in_memory();
        let mut leaves = Vec::new();
        for i in 0..MAX {
            let mut e = AuditEntry::new(i, 1_000 + i / 3, EventKind::ALL[(i % 10) as usize]);
            if i % 2 == 0 {
                e.message_id = Some(MessageId([(i % 251) as u8; 16]));
            }
            if i % 3 == 0 {
                e.actor_device = Some(DeviceId::new(&format!("d{i}")).unwrap());
            }
            leaves.push(log.append(&e).unwrap());
        }
        (log, leaves)
    })
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut h = *hash;
    h[bit / 8] ^= 1 << (bit % 8);
    h
}

/// (n, index) with 1 <= n <= MAX and index < n.
fn size_and_index() -> impl Strategy<Value = (u64, u64)> {
    (1..=MAX).prop_flat_map(|n| (Just(n), 0..n))
}

/// (m, n) with 0 <= m <= n <= MAX.
fn two_sizes() -> impl Strategy<Value = (u64, u64)> {
    (0..=MAX).prop_flat_map(|n| (0..=n, Just(n)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn inclusion_proofs_verify_and_every_bit_matters((n, index) in size_and_index()) {
        let (log, leaves) = shared();
        let root = log.root_at(n).unwrap();
        prop_assert_eq!(root, root_from_leaf_hashes(&leaves[..n as usize]));
        let proof = log.inclusion_proof(index, n).unwrap();
        let leaf = leaves[index as usize];
        prop_assert_eq!(proof.verify(&leaf, &root), Ok(()));
        // ceil(log2 n) hashes at most.
        prop_assert!(proof.path.len() <= 64 - (n - 1).leading_zeros() as usize);

        for i in 0..proof.path.len() {
            for bit in 0..256 {
                let mut path = proof.path.clone();
                path[i] = flip(&path[i], bit);
                prop_assert!(verify_inclusion(&leaf, index, n, &path, &root).is_err());
            }
        }
        for bit in 0..256 {
            prop_assert!(verify_inclusion(&leaf, index, n, &proof.path, &flip(&root, bit)).is_err());
            prop_assert!(verify_inclusion(&flip(&leaf, bit), index, n, &proof.path, &root).is_err());
        }
        // Wrong position, wrong size, a hash too many or too few.
        if n > 1 {
            let other = (index + 1) % n;
            prop_assert!(verify_inclusion(&leaf, other, n, &proof.path, &root).is_err());
        }
        // The size is bound by the root (a signed head signs both): the
        // proof does not lead to the root of the next larger tree.
        if n < MAX {
            let next_root = log.root_at(n + 1).unwrap();
            prop_assert!(verify_inclusion(&leaf, index, n + 1, &proof.path, &next_root).is_err());
        }
        let mut longer = proof.path.clone();
        longer.push(root);
        prop_assert!(verify_inclusion(&leaf, index, n, &longer, &root).is_err());
        if !proof.path.is_empty() {
            prop_assert!(verify_inclusion(&leaf, index, n, &proof.path[1..], &root).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_every_bit_matters((m, n) in two_sizes()) {
        let (log, leaves) = shared();
        let first = log.root_at(m).unwrap();
        let second = log.root_at(n).unwrap();
        prop_assert_eq!(first, root_from_leaf_hashes(&leaves[..m as usize]));
        let proof = log.consistency_proof(m, n).unwrap();
        prop_assert_eq!(proof.verify(&first, &second), Ok(()));
        prop_assert!(proof.path.len() <= 2 * 64);

        for i in 0..proof.path.len() {
            for bit in 0..256 {
                let mut path = proof.path.clone();
                path[i] = flip(&path[i], bit);
                prop_assert!(verify_consistency(m, n, &first, &second, &path).is_err());
            }
        }
        for bit in 0..256 {
            prop_assert!(verify_consistency(m, n, &flip(&first, bit), &second, &proof.path).is_err());
            // The empty tree is a prefix of every tree: from size 0 the
            // second root is not constrained.
            if m > 0 {
                prop_assert!(verify_consistency(m, n, &first, &flip(&second, bit), &proof.path).is_err());
            }
        }
        if 0 < m && m < n {
            // A proof for other sizes, or with a hash missing or added, fails.
            prop_assert!(verify_consistency(m, n, &second, &first, &proof.path).is_err());
            prop_assert!(verify_consistency(n, m, &second, &first, &proof.path).is_err());
            let mut longer = proof.path.clone();
            longer.push(second);
            prop_assert!(verify_consistency(m, n, &first, &second, &longer).is_err());
            prop_assert!(verify_consistency(m, n, &first, &second, &proof.path[1..]).is_err());
        }
    }

    /// Random leaf contents, not just the shared log: the incremental root
    /// at every size equals the recursive definition.
    #[test]
    fn incremental_roots_match_the_definition(leaves in prop::collection::vec(any::<[u8; 32]>(), 0..80)) {
        let mut log = MerkleLog::in_memory();
        let mut hashes = Vec::new();
        for (i, seed) in leaves.iter().enumerate() {
            let mut e = AuditEntry::new(i as u64, 0, EventKind::Send);
            e.message_id = Some(MessageId(seed[..16].try_into().unwrap()));
            hashes.push(log.append(&e).unwrap());
            prop_assert_eq!(log.root(), root_from_leaf_hashes(&hashes));
        }
        for m in 0..=hashes.len() {
            prop_assert_eq!(log.root_at(m as u64).unwrap(), root_from_leaf_hashes(&hashes[..m]));
        }
    }
}

/// Every (m, n) and (index, n) up to 40, exhaustively.
#[test]
fn exhaustive_small_trees() {
    let (log, leaves) = shared();
    for n in 0..=40u64 {
        let root = log.root_at(n).unwrap();
        for index in 0..n {
            let proof = log.inclusion_proof(index, n).unwrap();
            verify_inclusion(&leaves[index as usize], index, n, &proof.path, &root).unwrap();
        }
        for m in 0..=n {
            let proof = log.consistency_proof(m, n).unwrap();
            verify_consistency(m, n, &log.root_at(m).unwrap(), &root, &proof.path).unwrap();
        }
    }
}

/// Proofs at the edges of the cached subtrees (16, 32, ... leaves) and of
/// powers of two.
#[test]
fn edges_of_cached_levels() {
    let (log, leaves) = shared();
    for n in [
        15u64, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1023, 1024, 1025,
    ] {
        let root = log.root_at(n).unwrap();
        assert_eq!(root, root_from_leaf_hashes(&leaves[..n as usize]));
        for index in [0, 1, n / 2, n - 2, n - 1] {
            let proof = log.inclusion_proof(index, n).unwrap();
            verify_inclusion(&leaves[index as usize], index, n, &proof.path, &root).unwrap();
        }
        for m in [1, n / 2, n - 1, n] {
            let proof = log.consistency_proof(m, n).unwrap();
            verify_consistency(m, n, &log.root_at(m).unwrap(), &root, &proof.path).unwrap();
        }
    }
}
