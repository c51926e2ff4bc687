//! Alice and Bob in memory, with a deterministic RNG.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use ward_core::{
    IdentityKeyPair, OneTimePreKeyPair, PreKeyBundle, PreKeyMessage, Session, SignedPreKeyPair,
};

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A device as its owner's app holds it: identity and unused prekeys.
pub struct Device {
    pub identity: IdentityKeyPair,
    pub signed: SignedPreKeyPair,
    pub one_time: Vec<OneTimePreKeyPair>,
}

impl Device {
    pub fn new(rng: &mut ChaCha20Rng) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        let signed = SignedPreKeyPair::generate(rng, &identity, 1, 1_700_000_000);
        let one_time = OneTimePreKeyPair::generate_batch(rng, 1, 4);
        Self {
            identity,
            signed,
            one_time,
        }
    }

    /// The encoded bundle a relay would hand out, with or without a one-time prekey.
    pub fn bundle(&self, with_one_time: bool) -> Vec<u8> {
        let one_time = with_one_time.then(|| self.one_time[0].public());
        PreKeyBundle::new(
            self.identity.public().clone(),
            self.signed.public().clone(),
            one_time,
        )
        .unwrap()
        .encode()
    }

    /// What a client does with an incoming pre-key message: find the prekeys
    /// it names, accept, and only then delete the one-time prekey.
    pub fn accept(&mut self, bytes: &[u8]) -> ward_core::Result<(Session, Vec<u8>)> {
        let message = PreKeyMessage::decode(bytes)?;
        if message.signed_prekey_id() != self.signed.id() {
            return Err(ward_core::Error::PreKeyMismatch);
        }
        let at = message
            .one_time_prekey_id()
            .map(|id| self.one_time.iter().position(|k| k.id() == id));
        let one_time = match at {
            None => None,
            Some(None) => return Err(ward_core::Error::PreKeyMismatch),
            Some(Some(i)) => Some(&self.one_time[i]),
        };
        let accepted = Session::accept(&self.identity, &self.signed, one_time, &message)?;
        if let Some(Some(i)) = at {
            self.one_time.remove(i);
        }
        Ok(accepted)
    }
}

/// Alice has opened a session to Bob and Bob has accepted her first message.
pub struct Pair {
    pub rng: ChaCha20Rng,
    pub alice: Session,
    pub bob: Session,
}

impl Pair {
    pub fn new(seed: u64, with_one_time: bool) -> Self {
        let mut rng = rng(seed);
        let alice_device = Device::new(&mut rng);
        let mut bob_device = Device::new(&mut rng);
        let bundle = PreKeyBundle::decode(&bob_device.bundle(with_one_time)).unwrap();
        let mut alice = Session::initiate(&mut rng, &alice_device.identity, &bundle).unwrap();
        let first = alice.encrypt(&mut rng, b"first").unwrap();
        let (bob, text) = bob_device.accept(&first).unwrap();
        assert_eq!(text, b"first");
        Self { rng, alice, bob }
    }

    pub fn a_to_b(&mut self, text: &[u8]) -> Vec<u8> {
        self.alice.encrypt(&mut self.rng, text).unwrap()
    }

    pub fn b_to_a(&mut self, text: &[u8]) -> Vec<u8> {
        self.bob.encrypt(&mut self.rng, text).unwrap()
    }
}
