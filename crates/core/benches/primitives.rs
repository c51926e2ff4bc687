//! The floor: the primitives ward-core calls, from the same crates and with
//! the same shapes, so each Ward operation can be compared with the sum of
//! what it cannot avoid. Run with:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p ward-core --bench primitives
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use core::hint::black_box;
use core::time::Duration;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _};
use criterion::{BatchSize, Criterion};
use curve25519_dalek::MontgomeryPoint;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use ml_kem::array::Array;
use ml_kem::{Decapsulate, DecapsulationKey, Encapsulate, EncapsulationKey, KeyExport, MlKem768};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256, Sha512};
use x25519_dalek::{PublicKey, StaticSecret};

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(7)
}

fn x25519(c: &mut Criterion) {
    let mut rng = rng();
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    let secret = StaticSecret::from(bytes);
    rng.fill_bytes(&mut bytes);
    let public = PublicKey::from(&StaticSecret::from(bytes));

    let mut group = c.benchmark_group("x25519");
    // A variable-base scalar multiplication by x25519-dalek's Montgomery
    // ladder (what `ratchet::agree` did before dh.rs).
    group.bench_function("dh", |b| {
        b.iter(|| black_box(&secret).diffie_hellman(black_box(&public)));
    });
    // What `ratchet::agree` does now (dh.rs): to the Edwards form, the
    // vectorised multiplication there, back to the Montgomery u.
    group.bench_function("dh_edwards", |b| {
        b.iter(|| {
            MontgomeryPoint(black_box(public.to_bytes()))
                .to_edwards(0)
                .unwrap()
                .mul_clamped(black_box(secret.to_bytes()))
                .to_montgomery()
        });
    });
    // What `LocalRatchet::generate` does after drawing 32 bytes.
    group.bench_function("keygen_base_point", |b| {
        b.iter(|| PublicKey::from(black_box(&secret)));
    });
    group.finish();
}

fn ed25519(c: &mut Criterion) {
    let mut rng = rng();
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let signing = SigningKey::from_bytes(&seed);
    let verifying_bytes = signing.verifying_key().to_bytes();
    // 33 B like the anchors; 56 B is Ward's identity binding message
    // ("Ward v1 identity dh key\0" || X25519 key); 1251 B its signed-prekey
    // message (label || id || created_at || X25519 key || ML-KEM-768 key).
    let messages: [(&str, Vec<u8>); 3] = [
        ("33B", vec![0x33; 33]),
        ("56B_identity_binding", vec![0x56; 56]),
        ("1251B_signed_prekeys", vec![0x12; 23 + 4 + 8 + 32 + 1184]),
    ];

    let mut group = c.benchmark_group("ed25519");
    group.bench_function("verifying_key_from_bytes", |b| {
        b.iter(|| VerifyingKey::from_bytes(black_box(&verifying_bytes)).unwrap());
    });
    for (name, message) in &messages {
        let signature = signing.sign(message);
        let verifying = signing.verifying_key();
        group.bench_function(format!("sign_{name}"), |b| {
            b.iter(|| black_box(&signing).sign(black_box(message)));
        });
        group.bench_function(format!("verify_strict_{name}"), |b| {
            b.iter(|| {
                black_box(&verifying)
                    .verify_strict(black_box(message), black_box(&signature))
                    .unwrap()
            });
        });
    }
    // What `DeviceIdentity::verify` does each time: decompress the key, then verify.
    let (_, message) = &messages[2];
    let signature = signing.sign(message);
    group.bench_function("from_bytes_and_verify_strict_1251B", |b| {
        b.iter(|| {
            VerifyingKey::from_bytes(black_box(&verifying_bytes))
                .unwrap()
                .verify_strict(black_box(message), black_box(&signature))
                .unwrap()
        });
    });
    group.finish();
}

fn hashes(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha2");
    let salt = [1u8; 32];
    let ikm = [2u8; 32];
    // `RootKey::ratchet`: salt = root key, ikm = DH output, 64 B out.
    group.bench_function("hkdf_sha256_64B_out", |b| {
        b.iter(|| {
            let mut okm = [0u8; 64];
            Hkdf::<Sha256>::new(Some(black_box(&salt)), black_box(&ikm))
                .expand(b"Ward v1 ratchet", &mut okm)
                .unwrap();
            okm
        });
    });
    // `kdf::handshake` with a one-time prekey: 192 B of IKM (0xFF^32 and
    // five 32-byte secrets) and a 209 B info (label and six keys).
    let handshake_ikm = [3u8; 192];
    let handshake_info = [4u8; 17 + 6 * 32];
    group.bench_function("hkdf_sha256_handshake_64B_out", |b| {
        b.iter(|| {
            let mut okm = [0u8; 64];
            Hkdf::<Sha256>::new(Some(&[0u8; 32]), black_box(&handshake_ikm))
                .expand(black_box(&handshake_info), &mut okm)
                .unwrap();
            okm
        });
    });
    // `MessageKey::expand`: HKDF-Expand from a PRK, 44 B out.
    group.bench_function("hkdf_expand_44B_out", |b| {
        b.iter(|| {
            let mut okm = [0u8; 44];
            Hkdf::<Sha256>::from_prk(black_box(&ikm))
                .unwrap()
                .expand(b"Ward v1 message keys", &mut okm)
                .unwrap();
            okm
        });
    });
    group.bench_function("hmac_sha256_1B_32B_key", |b| {
        b.iter(|| {
            let mut mac =
                <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(black_box(&salt)).unwrap();
            mac.update(&[1]);
            mac.finalize().into_bytes()
        });
    });
    // `ChainKey::step`: one keyed state, cloned for two 1-byte MACs.
    group.bench_function("chain_step_2_hmacs_one_key", |b| {
        b.iter(|| {
            let keyed = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(black_box(&salt)).unwrap();
            let mut first = keyed.clone();
            first.update(&[1]);
            let mut second = keyed;
            second.update(&[2]);
            (
                first.finalize().into_bytes(),
                second.finalize().into_bytes(),
            )
        });
    });
    // `message::handshake_digest`: label, identity, ids, base key and the
    // ML-KEM ciphertext, hashed once by each side of the handshake.
    let digest_input = [6u8; 26 + 128 + 4 + 5 + 32 + 1088];
    group.bench_function("sha256_1283B_handshake_digest", |b| {
        b.iter(|| Sha256::digest(black_box(&digest_input)));
    });
    let short = [5u8; 120];
    let long = [5u8; 64 + 1251];
    group.bench_function("sha512_120B", |b| {
        b.iter(|| Sha512::digest(black_box(&short)));
    });
    group.bench_function("sha512_1315B", |b| {
        b.iter(|| Sha512::digest(black_box(&long)));
    });
    group.finish();
}

fn aead(c: &mut Criterion) {
    let key = [9u8; 32];
    let nonce = [3u8; 12];
    let mut group = c.benchmark_group("chacha20poly1305");
    // Each Ward message has its own key, so key setup is part of every seal.
    for len in [200usize, 256, 1024] {
        let mut buffer = vec![0x42u8; len];
        group.bench_function(format!("seal_{len}B"), |b| {
            b.iter(|| {
                let cipher = ChaCha20Poly1305::new(black_box(&key).into());
                cipher
                    .encrypt_inout_detached(&nonce.into(), &[], buffer.as_mut_slice().into())
                    .unwrap()
            });
        });
    }
    // Ward's shape: 200 B body, 100 B of associated data (two signing keys
    // and a 36 B header).
    let ad = [7u8; 100];
    let mut buffer = vec![0x42u8; 200];
    group.bench_function("seal_200B_ad100B", |b| {
        b.iter(|| {
            let cipher = ChaCha20Poly1305::new(black_box(&key).into());
            cipher
                .encrypt_inout_detached(&nonce.into(), &ad, buffer.as_mut_slice().into())
                .unwrap()
        });
    });
    let sealed = vec![0x42u8; 200];
    let cipher = ChaCha20Poly1305::new(&key.into());
    let mut copy = sealed.clone();
    let tag = cipher
        .encrypt_inout_detached(&nonce.into(), &ad, copy.as_mut_slice().into())
        .unwrap();
    group.bench_function("open_200B_ad100B", |b| {
        b.iter_batched(
            || copy.clone(),
            |mut ciphertext| {
                let cipher = ChaCha20Poly1305::new(black_box(&key).into());
                cipher
                    .decrypt_inout_detached(
                        &nonce.into(),
                        &ad,
                        ciphertext.as_mut_slice().into(),
                        &tag,
                    )
                    .unwrap();
                ciphertext
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn ml_kem(c: &mut Criterion) {
    let mut rng = rng();
    let mut seed = [0u8; 64];
    rng.fill_bytes(&mut seed);
    let dk = DecapsulationKey::<MlKem768>::from_seed(Array(seed));
    let ek_bytes = dk.encapsulation_key().to_bytes();
    let ek = EncapsulationKey::<MlKem768>::new(&ek_bytes).unwrap();
    let (ct, _) = ek.encapsulate_with_rng(&mut rng);

    let mut group = c.benchmark_group("ml_kem_768");
    // What `PreKeyBundle::decode` does: decode, modulus check, H(ek).
    group.bench_function("encapsulation_key_parse", |b| {
        b.iter(|| EncapsulationKey::<MlKem768>::new(black_box(&ek_bytes)).unwrap());
    });
    group.bench_function("encapsulate", |b| {
        b.iter(|| black_box(&ek).encapsulate_with_rng(&mut rng));
    });
    group.bench_function("decapsulate", |b| {
        b.iter(|| black_box(&dk).decapsulate(black_box(&ct)));
    });

    // What ward-core calls now (kem.rs): libcrux-ml-kem, AVX2 where the CPU
    // has it. Same seed, so the same keys.
    use libcrux_ml_kem::mlkem768;
    let (private, public) = mlkem768::generate_key_pair(seed).into_parts();
    assert_eq!(public.as_slice()[..], ek_bytes[..]);
    let (libcrux_ct, _) = mlkem768::encapsulate(&public, [3; 32]);
    group.bench_function("libcrux_encapsulation_key_check", |b| {
        b.iter(|| mlkem768::validate_public_key(black_box(&public)));
    });
    group.bench_function("libcrux_encapsulate", |b| {
        b.iter(|| {
            let mut m = [0u8; 32];
            rng.fill_bytes(&mut m);
            mlkem768::encapsulate(black_box(&public), m)
        });
    });
    group.bench_function("libcrux_decapsulate", |b| {
        b.iter(|| mlkem768::decapsulate(black_box(&private), black_box(&libcrux_ct)));
    });
    group.bench_function("libcrux_key_pair_from_seed", |b| {
        b.iter(|| mlkem768::generate_key_pair(black_box(seed)));
    });
    group.finish();
}

fn main() {
    let mut c = config();
    x25519(&mut c);
    ed25519(&mut c);
    hashes(&mut c);
    aead(&mut c);
    ml_kem(&mut c);
    c.final_summary();
}
