//! RFC 9162 (Certificate Transparency 2.0), section 2.1: the Merkle Tree Hash,
//! inclusion proofs and consistency proofs, and their verification.
//!
//! ```text
//! MTH({})        = SHA-256("")
//! MTH({d0})      = SHA-256(0x00 || d0)                          leaf hash
//! MTH(D[n])      = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))  node hash
//!                  where k is the largest power of two < n
//! ```
//!
//! The verification functions here need nothing but hashes: they are what an
//! auditor or a client runs against a relay it does not trust.

use sha2::{Digest, Sha256};

use crate::error::AuditError;

/// A SHA-256 output: a leaf hash, node hash or root.
pub type Hash = [u8; 32];

/// Length of a [`type@Hash`].
pub const HASH_LEN: usize = 32;

/// `MTH({}) = SHA-256("")`, the root of the empty tree.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// `SHA-256(0x00 || data)`: the hash of a leaf whose entry bytes are `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly smaller than `n`; `n` must be at least 2.
pub(crate) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// `MTH` of a list of leaf hashes, straight from the recursive definition.
///
/// O(n) hashes; the reference the incremental [`MerkleLog`](crate::MerkleLog)
/// is tested against.
pub fn root_from_leaf_hashes(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(
                &root_from_leaf_hashes(&leaves[..k]),
                &root_from_leaf_hashes(&leaves[k..]),
            )
        }
    }
}

/// An inclusion proof (audit path): `PATH(leaf_index, D[tree_size])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The leaf's index, `0 <= leaf_index < tree_size`.
    pub leaf_index: u64,
    /// The size of the tree the proof is for.
    pub tree_size: u64,
    /// The sibling hashes, from the leaf's sibling up to the root's child.
    pub path: Vec<Hash>,
}

impl InclusionProof {
    /// Verifies that `leaf_hash` is leaf `leaf_index` of the tree of
    /// `tree_size` leaves whose root is `root` (RFC 9162, 2.1.3.2).
    pub fn verify(&self, leaf_hash: &Hash, root: &Hash) -> Result<(), AuditError> {
        verify_inclusion(leaf_hash, self.leaf_index, self.tree_size, &self.path, root)
    }
}

/// A consistency proof: `PROOF(first_size, D[second_size])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The size of the older tree.
    pub first_size: u64,
    /// The size of the newer tree, `first_size <= second_size`.
    pub second_size: u64,
    /// The proof's hashes; empty when `first_size` is 0 or equals `second_size`.
    pub path: Vec<Hash>,
}

impl ConsistencyProof {
    /// Verifies that the tree of `first_size` leaves with root `first_root` is
    /// a prefix of the tree of `second_size` leaves with root `second_root`
    /// (RFC 9162, 2.1.4.2).
    pub fn verify(&self, first_root: &Hash, second_root: &Hash) -> Result<(), AuditError> {
        verify_consistency(
            self.first_size,
            self.second_size,
            first_root,
            second_root,
            &self.path,
        )
    }
}

/// The root an inclusion proof leads to, or `None` where RFC 9162 2.1.3.2
/// says "fail" (index out of range, proof too long or too short).
pub fn root_from_inclusion_proof(
    leaf_hash: &Hash,
    leaf_index: u64,
    tree_size: u64,
    path: &[Hash],
) -> Option<Hash> {
    // 1. leaf_index must be in the tree.
    if leaf_index >= tree_size {
        return None;
    }
    // 2.-3.
    let mut f_n = leaf_index;
    let mut s_n = tree_size - 1;
    let mut r = *leaf_hash;
    // 4.
    for p in path {
        // a.
        if s_n == 0 {
            return None;
        }
        // b.
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            // If LSB(fn) is not set: shift until it is, or fn is 0.
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        // c.
        f_n >>= 1;
        s_n >>= 1;
    }
    // 5. sn must have reached 0: the proof was not too short.
    (s_n == 0).then_some(r)
}

/// RFC 9162, 2.1.3.2: verifies an inclusion proof (AUD-7).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    leaf_index: u64,
    tree_size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), AuditError> {
    match root_from_inclusion_proof(leaf_hash, leaf_index, tree_size, path) {
        Some(r) if r == *root => Ok(()),
        _ => Err(AuditError::InclusionProofInvalid),
    }
}

/// RFC 9162, 2.1.4.2: verifies a consistency proof (AUD-8).
///
/// The RFC defines proofs for `0 < first < second`. At the edges this
/// function accepts exactly: `first == second` with an empty proof and equal
/// roots; `first == 0` with an empty proof and `first_root` the empty root.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    path: &[Hash],
) -> Result<(), AuditError> {
    let fail = Err(AuditError::ConsistencyProofInvalid);
    if first > second {
        return fail;
    }
    if first == second {
        return if path.is_empty() && first_root == second_root {
            Ok(())
        } else {
            fail
        };
    }
    if first == 0 {
        return if path.is_empty() && *first_root == EMPTY_ROOT {
            Ok(())
        } else {
            fail
        };
    }
    // 1.
    if path.is_empty() {
        return fail;
    }
    // 2. If first is an exact power of two, prepend first_hash.
    let mut nodes = path.iter();
    let seed = if first.is_power_of_two() {
        first_root
    } else {
        match nodes.next() {
            Some(c) => c,
            None => return fail,
        }
    };
    // 3.
    let mut f_n = first - 1;
    let mut s_n = second - 1;
    // 4.
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // 5.
    let mut f_r = *seed;
    let mut s_r = *seed;
    // 6.
    for c in nodes {
        // a.
        if s_n == 0 {
            return fail;
        }
        // b.
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            // If LSB(fn) is not set: shift until it is, or fn is 0.
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        // c.
        f_n >>= 1;
        s_n >>= 1;
    }
    // 7.
    if f_r == *first_root && s_r == *second_root && s_n == 0 {
        Ok(())
    } else {
        fail
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The leaves of certificate-transparency-go's 8-leaf test tree.
    pub(crate) fn ct_leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .into_iter()
        .map(|h| hex::decode(h).unwrap())
        .collect()
    }

    /// `MTH(D[0:n])` for n = 0..=8: the published roots (certificate-
    /// transparency-go `testonly.RootHashes`), also recomputed here by a
    /// separate Python implementation of RFC 9162 2.1.1 before being pinned.
    pub(crate) const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    pub(crate) fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    fn hs(list: &[&str]) -> Vec<Hash> {
        list.iter().map(|s| h(s)).collect()
    }

    fn ct_leaf_hashes() -> Vec<Hash> {
        ct_leaves().iter().map(|l| leaf_hash(l)).collect()
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, <[u8; 32]>::from(Sha256::digest(b"")));
        assert_eq!(root_from_leaf_hashes(&[]), EMPTY_ROOT);
    }

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        for (n, k) in [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (8, 4),
            (9, 8),
            (1 << 40, 1 << 39),
        ] {
            assert_eq!(split_point(n), k, "n = {n}");
        }
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn ct_roots_for_every_size() {
        let leaves = ct_leaf_hashes();
        for (n, root) in CT_ROOTS.iter().enumerate() {
            assert_eq!(
                hex::encode(root_from_leaf_hashes(&leaves[..n])),
                *root,
                "n = {n}"
            );
        }
    }

    /// certificate-transparency-go's inclusion proofs in the 8-leaf tree.
    #[test]
    fn ct_inclusion_proofs_verify() {
        let leaves = ct_leaf_hashes();
        let root = h(CT_ROOTS[8]);
        let cases = [
            (
                0,
                hs(&[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ]),
            ),
            (
                5,
                hs(&[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ]),
            ),
        ];
        for (index, path) in cases {
            verify_inclusion(&leaves[index], index as u64, 8, &path, &root).unwrap();
            assert!(verify_inclusion(&leaves[index], index as u64 ^ 1, 8, &path, &root).is_err());
            assert!(verify_inclusion(&leaves[index], index as u64, 9, &path, &root).is_err());
            assert!(verify_inclusion(&leaves[index], index as u64, 8, &path[..2], &root).is_err());
        }
        // A single-leaf tree: the empty path, the root is the leaf hash.
        verify_inclusion(&leaves[0], 0, 1, &[], &h(CT_ROOTS[1])).unwrap();
        assert!(verify_inclusion(&leaves[0], 1, 1, &[], &h(CT_ROOTS[1])).is_err());
    }

    /// certificate-transparency-go's consistency proofs in the 8-leaf tree.
    #[test]
    fn ct_consistency_proofs_verify() {
        let cases: [(u64, u64, Vec<Hash>); 4] = [
            (1, 1, vec![]),
            (
                1,
                8,
                hs(&[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ]),
            ),
            (
                6,
                8,
                hs(&[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ]),
            ),
            (
                2,
                5,
                hs(&[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ]),
            ),
        ];
        for (m, n, path) in cases {
            let (rm, rn) = (h(CT_ROOTS[m as usize]), h(CT_ROOTS[n as usize]));
            verify_consistency(m, n, &rm, &rn, &path).unwrap();
            if m != n {
                assert!(verify_consistency(m, n, &rn, &rm, &path).is_err());
                assert!(verify_consistency(m, n, &rm, &rn, &path[1..]).is_err());
            }
            assert!(verify_consistency(n, m, &rn, &rm, &path).is_err() || m == n);
        }
    }

    #[test]
    fn consistency_edge_cases() {
        let r3 = h(CT_ROOTS[3]);
        verify_consistency(0, 3, &EMPTY_ROOT, &r3, &[]).unwrap();
        assert!(verify_consistency(0, 3, &r3, &r3, &[]).is_err());
        assert!(verify_consistency(0, 3, &EMPTY_ROOT, &r3, &[r3]).is_err());
        verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]).unwrap();
        assert!(verify_consistency(3, 3, &r3, &r3, &[r3]).is_err());
        assert!(verify_consistency(3, 3, &r3, &EMPTY_ROOT, &[]).is_err());
        assert!(verify_consistency(2, 3, &h(CT_ROOTS[2]), &r3, &[]).is_err());
    }
}
