//! Benchmarks of ward-core's public API: session setup, messages within one
//! chain, messages with a DH ratchet step, and session serialization.
//!
//! Every key and nonce comes from a seeded ChaCha20 RNG, so each run does the
//! same work. Run with:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p ward-core --bench session
//! ```
//!
//! Before the timings it prints the wire sizes (not timed): the steady-state
//! overhead of a 100-byte plaintext, and the sizes of the handshake messages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use core::hint::black_box;
use core::time::Duration;

use criterion::{BatchSize, Criterion};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use ward_core::{
    DeviceIdentity, IdentityKeyPair, OneTimePreKeyPair, PreKeyBundle, PreKeyMessage, Session,
    SignedPreKeyPair,
};

/// The message size of the "same chain" and setup benchmarks.
const MESSAGE_LEN: usize = 200;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// One device: identity, a signed prekey set and one one-time prekey.
struct Device {
    identity: IdentityKeyPair,
    signed: SignedPreKeyPair,
    one_time: OneTimePreKeyPair,
}

impl Device {
    fn new(rng: &mut ChaCha20Rng) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        let signed = SignedPreKeyPair::generate(rng, &identity, 1, 1_700_000_000);
        let one_time = OneTimePreKeyPair::generate_batch(rng, 1, 1).remove(0);
        Self {
            identity,
            signed,
            one_time,
        }
    }

    /// The encoded bundle a relay hands out, with the one-time prekey.
    fn bundle(&self) -> Vec<u8> {
        PreKeyBundle::new(
            self.identity.public().clone(),
            self.signed.public().clone(),
            Some(self.one_time.public()),
        )
        .unwrap()
        .encode()
    }

    fn accept(&self, first: &[u8]) -> (Session, Vec<u8>) {
        let message = PreKeyMessage::decode(first).unwrap();
        Session::accept(&self.identity, &self.signed, Some(&self.one_time), &message).unwrap()
    }

    /// [`Self::accept`] by a responder that already holds the sender's
    /// verified identity (its own store, the sender's device list).
    fn accept_known(&self, first: &[u8], known: &[DeviceIdentity]) -> (Session, Vec<u8>) {
        let message = PreKeyMessage::decode_known(first, known).unwrap();
        Session::accept(&self.identity, &self.signed, Some(&self.one_time), &message).unwrap()
    }
}

/// Alice and Bob with an established session, both past the handshake.
struct Pair {
    rng: ChaCha20Rng,
    alice: Session,
    bob: Session,
}

impl Pair {
    /// Handshake, then `rounds` round trips, so that both sides have stepped
    /// the DH ratchet and Alice no longer wraps her messages.
    fn established(seed: u64, rounds: usize) -> Self {
        let mut rng = rng(seed);
        let alice_device = Device::new(&mut rng);
        let bob_device = Device::new(&mut rng);
        let bundle = PreKeyBundle::decode(&bob_device.bundle()).unwrap();
        let mut alice = Session::initiate(&mut rng, &alice_device.identity, &bundle).unwrap();
        let first = alice.encrypt(&mut rng, b"first").unwrap();
        let (bob, text) = bob_device.accept(&first);
        assert_eq!(text, b"first");
        let mut pair = Self { rng, alice, bob };
        for _ in 0..rounds {
            pair.a_to_b(b"ping");
            pair.b_to_a(b"pong");
        }
        pair
    }

    fn a_to_b(&mut self, text: &[u8]) -> usize {
        let wire = self.alice.encrypt(&mut self.rng, text).unwrap();
        assert_eq!(self.bob.decrypt(&wire).unwrap(), text);
        wire.len()
    }

    fn b_to_a(&mut self, text: &[u8]) -> usize {
        let wire = self.bob.encrypt(&mut self.rng, text).unwrap();
        assert_eq!(self.alice.decrypt(&wire).unwrap(), text);
        wire.len()
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

/// Wire sizes, computed once and printed (not timed).
fn report_sizes() {
    let mut pair = Pair::established(1, 2);
    // Alice's next message opens a new chain; the ones after it are steady state.
    pair.a_to_b(&[0x55; 100]);
    let steady = pair.a_to_b(&[0x55; 100]);
    let reply = pair.b_to_a(&[0x55; 100]);

    let mut rng = rng(2);
    let alice = Device::new(&mut rng);
    let bob = Device::new(&mut rng);
    let bundle_bytes = bob.bundle();
    let bundle = PreKeyBundle::decode(&bundle_bytes).unwrap();
    let mut session = Session::initiate(&mut rng, &alice.identity, &bundle).unwrap();
    let first = session.encrypt(&mut rng, &[0x55; 100]).unwrap();
    let state = pair.alice.to_bytes();

    println!("wire sizes (100 B plaintext):");
    println!(
        "  ratchet message, steady state: {steady} B, overhead {} B (target <= 56 B)",
        steady - 100
    );
    println!(
        "  ratchet message, reply:        {reply} B, overhead {} B",
        reply - 100
    );
    println!(
        "  pre-key message (first):       {} B, overhead {} B",
        first.len(),
        first.len() - 100
    );
    println!("  prekey bundle with one-time:   {} B", bundle_bytes.len());
    println!("  session state (2 rounds):      {} B", state.len());
}

/// 1. Session setup with a one-time prekey: the initiator processes the
///    bundle and encrypts the first message, the responder accepts it.
fn setup(c: &mut Criterion) {
    let mut keys_rng = rng(10);
    let alice = Device::new(&mut keys_rng);
    let bob = Device::new(&mut keys_rng);
    let bundle_bytes = bob.bundle();
    let plaintext = [0x42u8; MESSAGE_LEN];
    let first = {
        let bundle = PreKeyBundle::decode(&bundle_bytes).unwrap();
        let mut s = Session::initiate(&mut keys_rng, &alice.identity, &bundle).unwrap();
        s.encrypt(&mut keys_rng, &plaintext).unwrap()
    };

    let mut group = c.benchmark_group("setup");

    // The parts, to see where the time goes.
    group.bench_function("bundle_decode", |b| {
        b.iter(|| PreKeyBundle::decode(black_box(&bundle_bytes)).unwrap());
    });
    let bundle = PreKeyBundle::decode(&bundle_bytes).unwrap();
    let mut rng_initiate = rng(11);
    group.bench_function("initiate", |b| {
        b.iter(|| {
            Session::initiate(&mut rng_initiate, &alice.identity, black_box(&bundle)).unwrap()
        });
    });
    let mut rng_first = rng(12);
    let mut rng_first_encrypt = rng(15);
    group.bench_function("first_encrypt", |b| {
        b.iter_batched(
            || Session::initiate(&mut rng_first, &alice.identity, &bundle).unwrap(),
            |mut s| {
                let wire = s
                    .encrypt(&mut rng_first_encrypt, black_box(&plaintext))
                    .unwrap();
                (s, wire)
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("prekey_message_decode", |b| {
        b.iter(|| PreKeyMessage::decode(black_box(&first)).unwrap());
    });
    let message = PreKeyMessage::decode(&first).unwrap();
    group.bench_function("accept", |b| {
        b.iter(|| {
            Session::accept(
                &bob.identity,
                &bob.signed,
                Some(&bob.one_time),
                black_box(&message),
            )
            .unwrap()
        });
    });

    // The two sides as a caller sees them, and the whole setup.
    let mut rng_initiator = rng(13);
    group.bench_function("initiator", |b| {
        b.iter(|| {
            let bundle = PreKeyBundle::decode(black_box(&bundle_bytes)).unwrap();
            let mut s = Session::initiate(&mut rng_initiator, &alice.identity, &bundle).unwrap();
            let wire = s
                .encrypt(&mut rng_initiator, black_box(&plaintext))
                .unwrap();
            (s, wire)
        });
    });
    group.bench_function("responder", |b| {
        b.iter(|| bob.accept(black_box(&first)));
    });
    let mut rng_full = rng(14);
    group.bench_function("full", |b| {
        b.iter(|| {
            let bundle = PreKeyBundle::decode(black_box(&bundle_bytes)).unwrap();
            let mut s = Session::initiate(&mut rng_full, &alice.identity, &bundle).unwrap();
            let wire = s.encrypt(&mut rng_full, black_box(&plaintext)).unwrap();
            let (responder, text) = bob.accept(&wire);
            debug_assert_eq!(text.len(), MESSAGE_LEN);
            (s, responder, text)
        });
    });

    // The same, where each side already holds the other's verified identity
    // (from an earlier session, the directory, a verified safety number):
    // the identity bindings are not verified again; the signed prekeys'
    // signature and every other check still run.
    let alice_known = [alice.identity.public().clone()];
    let bob_known = [bob.identity.public().clone()];
    group.bench_function("bundle_decode_known_identity", |b| {
        b.iter(|| PreKeyBundle::decode_known(black_box(&bundle_bytes), &bob_known).unwrap());
    });
    group.bench_function("prekey_message_decode_known_identity", |b| {
        b.iter(|| PreKeyMessage::decode_known(black_box(&first), &alice_known).unwrap());
    });
    group.bench_function("responder_known_identity", |b| {
        b.iter(|| bob.accept_known(black_box(&first), &alice_known));
    });
    let mut rng_full_known = rng(16);
    group.bench_function("full_known_identities", |b| {
        b.iter(|| {
            let bundle = PreKeyBundle::decode_known(black_box(&bundle_bytes), &bob_known).unwrap();
            let mut s = Session::initiate(&mut rng_full_known, &alice.identity, &bundle).unwrap();
            let wire = s
                .encrypt(&mut rng_full_known, black_box(&plaintext))
                .unwrap();
            let (responder, text) = bob.accept_known(&wire, &alice_known);
            debug_assert_eq!(text.len(), MESSAGE_LEN);
            (s, responder, text)
        });
    });
    group.finish();
}

/// 2. 200-byte messages within one sending chain (no DH ratchet step).
fn same_chain(c: &mut Criterion) {
    let plaintext = [0x42u8; MESSAGE_LEN];
    let mut group = c.benchmark_group("chain_200B");

    let mut pair = Pair::established(20, 2);
    pair.a_to_b(b"opens Alice's new sending chain");
    group.bench_function("encrypt", |b| {
        b.iter(|| {
            pair.alice
                .encrypt(&mut pair.rng, black_box(&plaintext))
                .unwrap()
        });
    });

    let mut pair = Pair::established(21, 2);
    pair.a_to_b(b"opens Alice's new sending chain");
    let Pair { rng, alice, bob } = &mut pair;
    group.bench_function("decrypt", |b| {
        b.iter_batched(
            || alice.encrypt(rng, &plaintext).unwrap(),
            |wire| bob.decrypt(black_box(&wire)).unwrap(),
            BatchSize::SmallInput,
        );
    });

    let mut pair = Pair::established(22, 2);
    pair.a_to_b(b"opens Alice's new sending chain");
    group.bench_function("encrypt_decrypt", |b| {
        b.iter(|| {
            let wire = pair
                .alice
                .encrypt(&mut pair.rng, black_box(&plaintext))
                .unwrap();
            pair.bob.decrypt(black_box(&wire)).unwrap()
        });
    });
    group.finish();
}

/// 3. Ping-pong: every message answers the previous one, so every message
///    starts a new chain: one key generation and one DH on the sending side
///    (lazily, on encrypt) and one DH on the receiving side.
fn ping_pong(c: &mut Criterion) {
    let plaintext = [0x42u8; MESSAGE_LEN];
    let mut group = c.benchmark_group("ping_pong_200B");

    // One message per iteration, alternating direction.
    let mut pair = Pair::established(30, 2);
    let mut alice_next = true;
    group.bench_function("per_message", |b| {
        b.iter(|| {
            let (from, to) = if alice_next {
                (&mut pair.alice, &mut pair.bob)
            } else {
                (&mut pair.bob, &mut pair.alice)
            };
            alice_next = !alice_next;
            let wire = from.encrypt(&mut pair.rng, black_box(&plaintext)).unwrap();
            to.decrypt(black_box(&wire)).unwrap()
        });
    });

    // A whole round trip: two messages.
    let mut pair = Pair::established(31, 2);
    group.bench_function("round_trip", |b| {
        b.iter(|| {
            let wire = pair
                .alice
                .encrypt(&mut pair.rng, black_box(&plaintext))
                .unwrap();
            pair.bob.decrypt(black_box(&wire)).unwrap();
            let wire = pair
                .bob
                .encrypt(&mut pair.rng, black_box(&plaintext))
                .unwrap();
            pair.alice.decrypt(black_box(&wire)).unwrap()
        });
    });
    group.finish();
}

/// 4. Serialization of an established session (a few messages each way).
fn serialization(c: &mut Criterion) {
    let mut pair = Pair::established(40, 3);
    // Leave Alice mid-chain, holding both a sending and a receiving chain.
    pair.a_to_b(b"one");
    pair.a_to_b(b"two");
    let session = pair.alice;
    let bytes = session.to_bytes();

    let mut group = c.benchmark_group("session_state");
    group.bench_function("to_bytes", |b| {
        b.iter(|| black_box(&session).to_bytes());
    });
    group.bench_function("from_bytes", |b| {
        b.iter(|| Session::from_bytes(black_box(&bytes)).unwrap());
    });
    group.bench_function("round_trip", |b| {
        b.iter(|| Session::from_bytes(&black_box(&session).to_bytes()).unwrap());
    });
    group.finish();
}

fn main() {
    report_sizes();
    let mut c = config();
    setup(&mut c);
    same_chain(&mut c);
    ping_pong(&mut c);
    serialization(&mut c);
    c.final_summary();
}
