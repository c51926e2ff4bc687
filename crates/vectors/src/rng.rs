//! RNGs that make every random draw visible, so a vector can list the exact
//! bytes an operation consumed and a re-implementation can feed them back.

use std::collections::VecDeque;
use std::convert::Infallible;

use rand_chacha::ChaCha20Rng;
use rand_core::{SeedableRng, TryCryptoRng, TryRng};

/// A seeded ChaCha20 RNG that logs each draw.
pub struct RecordingRng {
    inner: ChaCha20Rng,
    draws: Vec<Vec<u8>>,
}

impl RecordingRng {
    /// A recorder over ChaCha20 seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            inner: ChaCha20Rng::seed_from_u64(seed),
            draws: Vec::new(),
        }
    }

    /// The draws since the last call, each as lowercase hex.
    pub fn take_draws(&mut self) -> Vec<String> {
        self.draws.drain(..).map(hex::encode).collect()
    }
}

impl TryRng for RecordingRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.inner.try_fill_bytes(dst)?;
        self.draws.push(dst.to_vec());
        Ok(())
    }
}

impl TryCryptoRng for RecordingRng {}

/// Hands back recorded draws in order. A draw of a different length than
/// recorded means the implementation consumes randomness differently from
/// the spec: it is reported, and zeroes are returned.
#[derive(Default)]
pub struct ReplayRng {
    draws: VecDeque<Vec<u8>>,
    /// Set when a draw did not match the recording.
    pub mismatch: Option<String>,
}

impl ReplayRng {
    /// Queues hex-encoded draws.
    pub fn push_hex<'a>(&mut self, draws: impl IntoIterator<Item = &'a str>) {
        for d in draws {
            match hex::decode(d) {
                Ok(bytes) => self.draws.push_back(bytes),
                Err(e) => self.mismatch = Some(format!("bad hex in vector: {e}")),
            }
        }
    }

    /// Draws queued and not yet consumed.
    pub fn remaining(&self) -> usize {
        self.draws.len()
    }
}

impl TryRng for ReplayRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        match self.draws.pop_front() {
            Some(d) if d.len() == dst.len() => dst.copy_from_slice(&d),
            other => {
                self.mismatch = Some(format!(
                    "asked for {} random bytes, recording has {:?}",
                    dst.len(),
                    other.map(|d| d.len())
                ));
                dst.fill(0);
            }
        }
        Ok(())
    }
}

impl TryCryptoRng for ReplayRng {}
