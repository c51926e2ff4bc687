//! Where a [`MerkleLog`](crate::MerkleLog) keeps its leaf hashes.

use core::convert::Infallible;

use crate::merkle::Hash;

/// Durable storage of leaf hashes, in leaf order.
///
/// The relay backs it with its database (a table of `(index, leaf_hash)`,
/// usually next to the encoded entries); [`MemoryLeafStore`] keeps them in a
/// `Vec`. The log calls [`append`](Self::append) once per entry, after all
/// its checks passed, and reads leaves only below [`len`](Self::len).
pub trait LeafStore {
    /// The storage's own error.
    type Error;

    /// The number of leaf hashes stored.
    fn len(&self) -> Result<u64, Self::Error>;

    /// Whether no leaf hash is stored.
    fn is_empty(&self) -> Result<bool, Self::Error> {
        Ok(self.len()? == 0)
    }

    /// The hash of leaf `index`, or `None` if there is none.
    fn leaf_hash(&self, index: u64) -> Result<Option<Hash>, Self::Error>;

    /// Stores the hash of leaf `len()`. On error nothing may be stored.
    fn append(&mut self, leaf_hash: Hash) -> Result<(), Self::Error>;
}

/// A [`LeafStore`] that can drop its newest leaf hashes, for
/// [`MerkleLog::rollback`](crate::MerkleLog::rollback).
///
/// A store inside a database transaction may have dropped them already, by
/// rolling back the transaction or savepoint that appended them; its
/// `truncate` then only checks that it holds `len` leaves.
pub trait TruncateLeaves: LeafStore {
    /// Keeps the first `len` leaf hashes and drops the rest; `len` is at
    /// most [`len`](LeafStore::len).
    fn truncate(&mut self, len: u64) -> Result<(), Self::Error>;
}

/// Leaf hashes in memory: 32 bytes per leaf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryLeafStore {
    leaves: Vec<Hash>,
}

impl MemoryLeafStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored leaf hashes, in order.
    pub fn leaf_hashes(&self) -> &[Hash] {
        &self.leaves
    }
}

impl LeafStore for MemoryLeafStore {
    type Error = Infallible;

    fn len(&self) -> Result<u64, Infallible> {
        Ok(self.leaves.len() as u64)
    }

    fn leaf_hash(&self, index: u64) -> Result<Option<Hash>, Infallible> {
        Ok(usize::try_from(index)
            .ok()
            .and_then(|i| self.leaves.get(i))
            .copied())
    }

    fn append(&mut self, leaf_hash: Hash) -> Result<(), Infallible> {
        self.leaves.push(leaf_hash);
        Ok(())
    }
}

impl TruncateLeaves for MemoryLeafStore {
    fn truncate(&mut self, len: u64) -> Result<(), Infallible> {
        if let Ok(len) = usize::try_from(len) {
            self.leaves.truncate(len);
        }
        Ok(())
    }
}
