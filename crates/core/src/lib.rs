//! # ward-core
//!
//! The protocol core of Ward: device identities, the PQXDH-style handshake
//! (X3DH with an ML-KEM-768 share), the Double Ratchet, sessions as values,
//! and safety numbers.
//!
//! It is sans-IO: it never touches a network, a file or a clock, and draws
//! randomness only from the RNG its caller passes in, so every behaviour is
//! deterministic under test. It builds for `no_std` targets with `alloc`.
//!
//! Every construction is specified in the repository's `spec/` directory and
//! pinned by the test vectors in `spec/vectors/`.
//!
//! ```
//! use ward_core::{IdentityKeyPair, OneTimePreKeyPair, PreKeyBundle, PreKeyMessage,
//!                 Session, SignedPreKeyPair};
//! # fn main() -> Result<(), ward_core::Error> {
//! let mut rng = ward_core::os_rng();
//! let alice = IdentityKeyPair::generate(&mut rng);
//! let bob = IdentityKeyPair::generate(&mut rng);
//! let bob_signed = SignedPreKeyPair::generate(&mut rng, &bob, 1, 1_700_000_000);
//! let bob_one_time = OneTimePreKeyPair::generate_batch(&mut rng, 1, 1).remove(0);
//!
//! // Bob publishes a bundle; Alice fetches and verifies it.
//! let bundle = PreKeyBundle::new(bob.public().clone(), bob_signed.public().clone(),
//!                                Some(bob_one_time.public()))?.encode();
//! let bundle = PreKeyBundle::decode(&bundle)?;
//! let mut to_bob = Session::initiate(&mut rng, &alice, &bundle)?;
//! let first = to_bob.encrypt(&mut rng, b"hello Bob")?;
//!
//! // Bob opens his side from the first message.
//! let first = PreKeyMessage::decode(&first)?;
//! let (mut to_alice, text) = Session::accept(&bob, &bob_signed, Some(&bob_one_time), &first)?;
//! assert_eq!(text, b"hello Bob");
//!
//! let reply = to_alice.encrypt(&mut rng, b"hello Alice")?;
//! assert_eq!(to_bob.decrypt(&reply)?, b"hello Alice");
//! # Ok(()) }
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod dh;
mod encoding;
pub mod error;
pub mod group;
pub mod hazmat;
pub mod identity;
mod kdf;
mod kem;
pub mod limits;
pub mod message;
pub mod prekeys;
mod ratchet;
pub mod role;
pub mod safety_number;
pub mod sender_key;
pub mod session;

pub use encoding::format;
pub use error::{DecodeError, Error, Result};
pub use group::{
    Applied, DeviceKey, GroupAction, GroupChange, GroupState, IncomingGroupMessage, Member,
    OutgoingGroupMessage,
};
pub use identity::{DeviceIdentity, IdentityKeyPair};
pub use message::{MessageKind, PreKeyMessage};
pub use prekeys::{
    OneTimePreKey, OneTimePreKeyPair, PreKeyBundle, SignedPreKeyPair, SignedPreKeys,
};
pub use rand_core::{CryptoRng, Rng};
pub use role::{AdminKey, Assignment, Interval, RoleSchedule, is_role_id};
pub use safety_number::{Party, SafetyNumber};
pub use sender_key::{
    ReceivedChain, RotationPolicy, SenderChain, SenderKeyDistribution, SenderKeyMessage,
};
pub use session::Session;

/// The operating system's RNG, for callers that have no RNG of their own.
#[cfg(feature = "std")]
pub fn os_rng() -> impl CryptoRng {
    rand_core::UnwrapErr(getrandom::SysRng)
}

/// A deterministic RNG for unit tests.
#[cfg(test)]
pub(crate) fn test_rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    use rand_core::SeedableRng;
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}
