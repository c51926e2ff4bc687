//! Benchmarks of sender keys (spec/13): group encrypt and decrypt of a
//! 200-byte message, each next to its primitive floor measured in the same
//! run (the Ed25519 signature or strict verification over the same bytes).
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p ward-core --bench sender_keys
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

use core::hint::black_box;
use core::time::Duration;

use criterion::{BatchSize, Criterion};
use ed25519_dalek::{Signer, SigningKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use ward_core::{ReceivedChain, SenderChain, SenderKeyMessage};

/// The message size of ../shared/ANCHORS.md's group figures.
const MESSAGE_LEN: usize = 200;

fn main() {
    let mut c = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let plaintext = [0x2a; MESSAGE_LEN];
    let mut sender = SenderChain::generate(&mut rng, [7; 16], 0);
    let member = ReceivedChain::from_distribution(&sender.distribution()).to_bytes();
    let wire = sender.encrypt(&plaintext).unwrap();
    println!(
        "group message of {MESSAGE_LEN} B: {} B on the wire",
        wire.len()
    );
    let signed = &wire[..wire.len() - 64];

    let mut group = c.benchmark_group("sender_keys");
    group.bench_function("encrypt_200B", |b| {
        b.iter(|| sender.encrypt(black_box(&plaintext)).unwrap());
    });
    group.bench_function("decrypt_200B", |b| {
        b.iter_batched(
            || ReceivedChain::from_bytes(&member).unwrap(),
            |mut chain| {
                let message = SenderKeyMessage::decode(black_box(&wire)).unwrap();
                chain.decrypt(&message).unwrap()
            },
            BatchSize::SmallInput,
        );
    });
    let signing = SigningKey::from_bytes(&[9; 32]);
    let verifying = signing.verifying_key();
    let signature = signing.sign(signed);
    group.bench_function("floor_sign_same_bytes", |b| {
        b.iter(|| black_box(&signing).sign(black_box(signed)));
    });
    group.bench_function("floor_verify_strict_same_bytes", |b| {
        b.iter(|| {
            black_box(&verifying)
                .verify_strict(black_box(signed), black_box(&signature))
                .unwrap()
        });
    });
    group.finish();
    c.final_summary();
}
