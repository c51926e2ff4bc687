//! Shared fixtures of the ward-core fuzz targets.
//!
//! Everything here is deterministic: one seed always gives the same keys,
//! sessions and messages. That is what lets a crash replay exactly, and lets
//! `src/bin/seed_corpus.rs` write seed inputs that are valid for the very
//! sessions the targets rebuild.

use rand_core::SeedableRng;
use ward_core::{
    IdentityKeyPair, OneTimePreKeyPair, PreKeyBundle, PreKeyMessage, Session, SignedPreKeyPair,
};

pub use rand_chacha::ChaCha20Rng;

/// Seed of the device whose identity `device_identity` checks signed prekeys
/// against.
pub const FIXED_DEVICE_SEED: u64 = 0x1d_e7_17_7e;

/// Seed of the conversation `message_kind_and_decrypt` decrypts in.
pub const SNAPSHOT_SEED: u64 = 0x5e_55_10_4e;

/// A deterministic RNG: the core draws all randomness from its caller.
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
        let one_time = OneTimePreKeyPair::generate_batch(rng, 1, 2);
        Self {
            identity,
            signed,
            one_time,
        }
    }

    /// The encoded bundle a relay would hand out.
    pub fn bundle(&self, with_one_time: bool) -> Vec<u8> {
        let one_time = with_one_time.then(|| self.one_time[0].public());
        PreKeyBundle::new(
            self.identity.public().clone(),
            self.signed.public().clone(),
            one_time,
        )
        .expect("a bundle of freshly generated keys verifies")
        .encode()
    }
}

/// The device every fixed-identity check uses.
pub fn fixed_device() -> Device {
    Device::new(&mut rng(FIXED_DEVICE_SEED))
}

/// Alice has opened a session to Bob and Bob has accepted her first message.
pub struct Handshake {
    /// The RNG, positioned after the handshake: keep drawing from it so that a
    /// whole conversation depends on the seed alone.
    pub rng: ChaCha20Rng,
    pub alice: Session,
    pub bob: Session,
    /// Alice's first (pre-key) message, already accepted by Bob.
    pub first: Vec<u8>,
    /// What `first` carried.
    pub first_plaintext: Vec<u8>,
    pub bundle: Vec<u8>,
}

/// Runs the handshake the way a client does: fetch and verify Bob's bundle,
/// initiate, send, accept. Panics only if the core fails on valid input,
/// which is a finding in itself.
pub fn handshake(seed: u64, with_one_time: bool) -> Handshake {
    let mut rng = rng(seed);
    let alice_device = Device::new(&mut rng);
    let bob_device = Device::new(&mut rng);
    let bundle = bob_device.bundle(with_one_time);
    let verified = PreKeyBundle::decode(&bundle).expect("a valid bundle decodes");
    let mut alice = Session::initiate(&mut rng, &alice_device.identity, &verified)
        .expect("initiating to a valid bundle succeeds");
    let first_plaintext = b"first".to_vec();
    let first = alice
        .encrypt(&mut rng, &first_plaintext)
        .expect("the first message encrypts");
    let message = PreKeyMessage::decode(&first).expect("the first message decodes");
    let one_time = with_one_time.then(|| &bob_device.one_time[0]);
    let (bob, text) = Session::accept(&bob_device.identity, &bob_device.signed, one_time, &message)
        .expect("Bob accepts Alice's first message");
    assert_eq!(text, first_plaintext, "accept returned another plaintext");
    Handshake {
        rng,
        alice,
        bob,
        first,
        first_plaintext,
        bundle,
    }
}

/// A serialized session and messages that it can decrypt.
pub struct Snapshot {
    pub name: &'static str,
    pub session: Vec<u8>,
    pub incoming: Vec<Vec<u8>>,
}

/// Four sessions in the states where decryption takes different paths:
/// a responder that has not sent yet, an initiator still sending pre-key
/// messages, and both sides mid-conversation holding skipped keys.
pub fn snapshots() -> Vec<Snapshot> {
    let Handshake {
        mut rng,
        mut alice,
        mut bob,
        ..
    } = handshake(SNAPSHOT_SEED, true);
    let mut send = |s: &mut Session, text: &[u8]| s.encrypt(&mut rng, text).expect("encrypt");
    let a2 = send(&mut alice, b"a2");
    let a3 = send(&mut alice, b"a3");
    let bob_fresh = Snapshot {
        name: "bob_fresh",
        session: bob.to_bytes().to_vec(),
        incoming: vec![a2.clone(), a3.clone()],
    };

    let b1 = send(&mut bob, b"b1");
    let b2 = send(&mut bob, b"b2");
    let b3 = send(&mut bob, b"b3");
    let alice_pending = Snapshot {
        name: "alice_pending",
        session: alice.to_bytes().to_vec(),
        incoming: vec![b1.clone(), b2.clone(), b3.clone()],
    };

    // Out of order on both sides, so each holds a skipped key, then a new
    // ratchet step from Alice and one more message in Bob's first chain.
    assert_eq!(bob.decrypt(&a3).expect("a3"), b"a3");
    assert_eq!(alice.decrypt(&b2).expect("b2"), b"b2");
    let a4 = send(&mut alice, b"a4");
    let b4 = send(&mut bob, b"b4");
    let bob_mid = Snapshot {
        name: "bob_mid",
        session: bob.to_bytes().to_vec(),
        incoming: vec![a2, a4],
    };
    let alice_mid = Snapshot {
        name: "alice_mid",
        session: alice.to_bytes().to_vec(),
        incoming: vec![b1, b3, b4],
    };
    vec![bob_fresh, alice_pending, bob_mid, alice_mid]
}

/// Seed of the sender chain `sender_key` decrypts with.
pub const SENDER_CHAIN_SEED: u64 = 0x5e_4d_e4_c4;

/// The group of the `sender_key` fixture.
pub const FIXTURE_GROUP: [u8; 16] = [0x6b; 16];

/// A sender chain and the messages it sent: `sender_key` reads them with a
/// member's chain made from the distribution at iteration 0.
pub fn sender_chain() -> (ward_core::SenderChain, Vec<Vec<u8>>) {
    let mut chain =
        ward_core::SenderChain::generate(&mut rng(SENDER_CHAIN_SEED), FIXTURE_GROUP, 1_700_000_000);
    let messages = (0u8..4)
        .map(|i| chain.encrypt(&[i; 24]).expect("a fixture message encrypts"))
        .collect();
    (chain, messages)
}

/// The member's view of [`sender_chain`]: the chain from iteration 0.
pub fn member_chain() -> ward_core::ReceivedChain {
    let chain =
        ward_core::SenderChain::generate(&mut rng(SENDER_CHAIN_SEED), FIXTURE_GROUP, 1_700_000_000);
    ward_core::ReceivedChain::from_distribution(&chain.distribution())
}

/// Seed of the identities of the `group` fixture.
pub const GROUP_SEED: u64 = 0x6a_0f_7e_a3;

/// Member `i` (0 to 2) of the `group` fixture; 0 created it.
pub fn group_member(i: usize) -> ward_core::IdentityKeyPair {
    use std::sync::OnceLock;
    static SECRETS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let secrets = SECRETS.get_or_init(|| {
        let mut rng = rng(GROUP_SEED);
        (0..3)
            .map(|_| {
                ward_core::IdentityKeyPair::generate(&mut rng)
                    .to_secret_bytes()
                    .to_vec()
            })
            .collect()
    });
    ward_core::IdentityKeyPair::from_secret_bytes(&secrets[i]).expect("a fixture identity loads")
}

/// The user of member `i`.
pub fn group_user(i: usize) -> String {
    format!("member{i}@clinic.example")
}

/// The group member 0 created with members 0, 1 and 2, as member 0 holds
/// it, and the user id of member 1 (the welcome's receiver). Made once and
/// loaded from its bytes on every call, so that each input costs a load,
/// not three key generations and a signature.
pub fn group() -> (ward_core::GroupState, String) {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::OnceLock;
    static STATE: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = STATE.get_or_init(|| {
        let members: BTreeMap<String, ward_core::Member> = (0..3)
            .map(|i| {
                (
                    group_user(i),
                    ward_core::Member {
                        devices: BTreeSet::from([*group_member(i).public().signing_key()]),
                        admin: i == 0,
                    },
                )
            })
            .collect();
        let (group, _) = ward_core::GroupState::create(
            &group_member(0),
            &group_user(0),
            [0x67; 16],
            "fuzz",
            members,
            1_700_000_000,
        )
        .expect("the fixture group is created");
        group.to_bytes().to_vec()
    });
    let group = ward_core::GroupState::from_bytes(bytes).expect("the fixture group loads");
    (group, group_user(1))
}

/// The administrator key of the `role_schedule` fixture.
pub fn admin_key() -> ward_core::AdminKey {
    ward_core::AdminKey::generate(&mut rng(0xad_01_2e_75))
}
