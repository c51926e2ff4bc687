//! `keys.json`: the key checks of spec/02 "Key validation" that fail, and
//! the edges they sit on. ML-KEM-768 encapsulation keys (FIPS 203 section
//! 7.2: length, then every 12-bit coefficient below q) inside signed prekey
//! sets and bundles; ML-KEM ciphertext lengths in pre-key messages; and the
//! strict Ed25519 verification of KEY-4 on identities.
//!
//! The Ed25519 edge cases are made here from their definitions: small-order
//! and non-canonical encodings, `S + L`, and a small-order `R` with
//! `S = k·a mod L` (which a verifier without the strict checks accepts: the
//! generator checks that with ed25519-dalek's non-strict `verify`). The
//! scalar arithmetic mod L is a few lines of schoolbook code below.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha512};
use ward_core::{
    DeviceIdentity, IdentityKeyPair, PreKeyBundle, PreKeyMessage, Session, SignedPreKeyPair,
    SignedPreKeys,
};
use ward_proto::Message;
use ward_proto::core_v1 as pb;

use crate::rng::RecordingRng;
use crate::{h, outcome};

/// `{"ok": true}`, or `{"error": "<the error's name>"}`.
fn verdict<T>(result: ward_core::Result<T>) -> Value {
    match result {
        Ok(_) => json!({"ok": true}),
        Err(e) => json!({"error": format!("{e:?}")}),
    }
}

/// The Ed25519 group order L, little-endian.
pub const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

type U256 = [u64; 4];

fn limbs(bytes: &[u8; 32]) -> U256 {
    core::array::from_fn(|i| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap()))
}

fn le(u: U256) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, limb) in u.iter().enumerate() {
        out[8 * i..8 * i + 8].copy_from_slice(&limb.to_le_bytes());
    }
    out
}

fn add(a: U256, b: U256) -> U256 {
    let mut out = [0u64; 4];
    let mut carry = 0u128;
    for i in 0..4 {
        let sum = u128::from(a[i]) + u128::from(b[i]) + carry;
        out[i] = sum as u64;
        carry = sum >> 64;
    }
    assert_eq!(carry, 0);
    out
}

/// `a - b` if `a ≥ b`.
fn sub(a: U256, b: U256) -> Option<U256> {
    let mut out = [0u64; 4];
    let mut borrow = false;
    for i in 0..4 {
        let (d, b1) = a[i].overflowing_sub(b[i]);
        let (d, b2) = d.overflowing_sub(u64::from(borrow));
        out[i] = d;
        borrow = b1 || b2;
    }
    (!borrow).then_some(out)
}

/// `2r + bit mod L` for `r < L`.
fn double_add(r: U256, add_one: bool, l: U256) -> U256 {
    let mut r = add(r, r);
    if add_one {
        r = add(r, [1, 0, 0, 0]);
    }
    sub(r, l).unwrap_or(r)
}

/// A little-endian integer of any length, reduced mod L.
fn reduce(bytes: &[u8]) -> U256 {
    let l = limbs(&L);
    let mut r = [0u64; 4];
    for byte in bytes.iter().rev() {
        for bit in (0..8).rev() {
            r = double_add(r, byte >> bit & 1 == 1, l);
        }
    }
    r
}

/// `a·b mod L` by double-and-add over the bits of `a`.
fn mul_mod(a: U256, b: U256) -> U256 {
    let l = limbs(&L);
    let mut r = [0u64; 4];
    for bit in (0..256).rev() {
        r = double_add(r, false, l);
        if a[bit / 64] >> (bit % 64) & 1 == 1 {
            let sum = add(r, b);
            r = sub(sum, l).unwrap_or(sum);
        }
    }
    r
}

/// Ed25519 small-order points: the eight of order 1, 2, 4, 8 in canonical
/// form, then non-canonical encodings of some of them.
const SMALL_ORDER: [(&str, &str); 11] = [
    (
        "order 1 (the identity, y = 1)",
        "0100000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "order 2 (y = -1)",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ),
    (
        "order 4 (y = 0, x even)",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "order 4 (y = 0, x odd)",
        "0000000000000000000000000000000000000000000000000000000000000080",
    ),
    (
        "order 8",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    ),
    (
        "order 8",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    ),
    (
        "order 8",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    ),
    (
        "order 8",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    ),
    (
        "order 1, non-canonical: x = 0 with the sign bit set",
        "0100000000000000000000000000000000000000000000000000000000000080",
    ),
    (
        "order 1, non-canonical: y = p + 1",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ),
    (
        "order 4, non-canonical: y = p",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ),
];

fn point(hex_bytes: &str) -> [u8; 32] {
    hex::decode(hex_bytes).unwrap().try_into().unwrap()
}

/// One identity given to `DeviceIdentity::from_bytes`.
fn identity_case(name: &str, rule: &str, a: &[u8; 32], dh: &[u8; 32], sig: &[u8; 64]) -> Value {
    let mut fixed = a.to_vec();
    fixed.extend_from_slice(dh);
    fixed.extend_from_slice(sig);
    let mut message = ward_core::identity::IDENTITY_BINDING_LABEL.to_vec();
    message.extend_from_slice(dh);
    json!({
        "name": name, "rule": rule,
        "signing_key": h(a), "dh_key": h(dh), "signature": h(sig), "message": h(&message),
        "identity": h(&fixed),
        "expect": verdict(DeviceIdentity::from_bytes(&fixed)),
    })
}

fn ed25519(rng: &mut RecordingRng) -> Vec<Value> {
    let carol = IdentityKeyPair::generate(rng);
    let a = *carol.public().signing_key();
    let dh = *carol.public().dh_key();
    let good: [u8; 64] = carol.public().to_bytes()[64..].try_into().unwrap();
    let mut message = ward_core::identity::IDENTITY_BINDING_LABEL.to_vec();
    message.extend_from_slice(&dh);
    let lax = |a: &[u8; 32], sig: &[u8; 64]| {
        VerifyingKey::from_bytes(a)
            .unwrap()
            .verify(&message, &Signature::from_bytes(sig))
            .is_ok()
    };
    let mut cases = vec![identity_case("a valid identity", "valid", &a, &dh, &good)];

    // A: small order (refused before any signature check), or no point.
    let identity = point(SMALL_ORDER[0].1);
    let mut trivial = [0u8; 64];
    trivial[..32].copy_from_slice(&identity);
    for (i, (what, bytes)) in SMALL_ORDER.iter().enumerate() {
        let small = point(bytes);
        assert!(
            VerifyingKey::from_bytes(&small).unwrap().is_weak(),
            "{what}"
        );
        let rule = if i == 0 {
            "A small order, lax-valid"
        } else {
            "A small order"
        };
        cases.push(identity_case(
            &format!("signing key of {what}; R = identity, S = 0"),
            rule,
            &small,
            &dh,
            &trivial,
        ));
    }
    assert!(
        lax(&identity, &trivial),
        "[0]B - [k]O = O: a lax verifier accepts"
    );
    let not_a_point = (2u8..)
        .map(|y| {
            let mut p = [0u8; 32];
            p[0] = y;
            p
        })
        .find(|p| VerifyingKey::from_bytes(p).is_err())
        .unwrap();
    cases.push(identity_case(
        "signing key with no point (y small, x² not a square)",
        "A not a point",
        &not_a_point,
        &dh,
        &good,
    ));

    // S: not reduced.
    let mut s_plus_l = good;
    s_plus_l[32..].copy_from_slice(&le(add(limbs(&good[32..].try_into().unwrap()), limbs(&L))));
    cases.push(identity_case(
        "S + L in place of S",
        "S not reduced",
        &a,
        &dh,
        &s_plus_l,
    ));

    // R: small order with S = k·a, so that [S]B - [k]A = O = R.
    let seed = &carol.to_secret_bytes()[1..33];
    let mut secret: [u8; 32] = Sha512::digest(seed)[..32].try_into().unwrap();
    secret[0] &= 248;
    secret[31] &= 127;
    secret[31] |= 64;
    let forge = |r: &[u8; 32]| {
        let k = reduce(
            &Sha512::new()
                .chain_update(r)
                .chain_update(a)
                .chain_update(&message)
                .finalize(),
        );
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(r);
        sig[32..].copy_from_slice(&le(mul_mod(k, reduce(&secret))));
        sig
    };
    let forged = forge(&identity);
    assert!(
        lax(&a, &forged),
        "S = k·a makes a lax verifier accept R = identity"
    );
    cases.push(identity_case(
        "R = identity (small order), S = k·a mod L",
        "R small order",
        &a,
        &dh,
        &forged,
    ));
    let order_8 = point(SMALL_ORDER[4].1);
    cases.push(identity_case(
        "R of order 8, S = k·a mod L",
        "R small order",
        &a,
        &dh,
        &forge(&order_8),
    ));
    let non_canonical = point(SMALL_ORDER[9].1);
    cases.push(identity_case(
        "R = identity encoded as y = p + 1 (non-canonical), S = k·a mod L",
        "R non-canonical",
        &a,
        &dh,
        &forge(&non_canonical),
    ));
    let mut no_r = good;
    no_r[..32].copy_from_slice(&not_a_point);
    cases.push(identity_case(
        "R with no point",
        "R not a point",
        &a,
        &dh,
        &no_r,
    ));
    cases
}

/// Coefficient `i` (12 bits) of an encoded ML-KEM polynomial vector.
fn set_coefficient(key: &mut [u8], i: usize, value: u16) {
    let at = 3 * (i / 2);
    if i.is_multiple_of(2) {
        key[at] = value as u8;
        key[at + 1] = (key[at + 1] & 0xf0) | (value >> 8) as u8;
    } else {
        key[at + 1] = (key[at + 1] & 0x0f) | ((value & 0x0f) << 4) as u8;
        key[at + 2] = (value >> 4) as u8;
    }
}

fn coefficients_below_q(key: &[u8]) -> bool {
    key[..1152].chunks(3).all(|t| {
        let c0 = u16::from(t[0]) | (u16::from(t[1] & 0x0f) << 8);
        let c1 = u16::from(t[1] >> 4) | (u16::from(t[2]) << 4);
        c0 < 3329 && c1 < 3329
    })
}

fn ml_kem(rng: &mut RecordingRng) -> (Vec<Value>, Vec<Value>, Value) {
    let bob = IdentityKeyPair::generate(rng);
    let alice = IdentityKeyPair::generate(rng);
    let signed = SignedPreKeyPair::generate(rng, &bob, 5, 1_700_000_000);
    let set = pb::SignedPreKeys::decode(&*signed.public().encode()).unwrap();
    let bob_pb = pb::DeviceIdentity::decode(&*bob.public().encode()).unwrap();
    let signed_over = |key: &[u8]| {
        let mut m = ward_core::prekeys::SIGNED_PREKEYS_LABEL.to_vec();
        m.extend_from_slice(&set.id.to_be_bytes());
        m.extend_from_slice(&set.created_at.to_be_bytes());
        m.extend_from_slice(&set.dh_key);
        m.extend_from_slice(key);
        bob.sign(&m).to_vec()
    };
    let mut q = set.kem_key.clone();
    set_coefficient(&mut q, 0, 3329);
    let mut q_minus_1 = set.kem_key.clone();
    set_coefficient(&mut q_minus_1, 0, 3328);
    let mut last = set.kem_key.clone();
    set_coefficient(&mut last, 767, 4095);
    let mut rho = set.kem_key.clone();
    rho[1183] ^= 0xff;
    let short = set.kem_key[..1183].to_vec();
    let variants: [(&str, Vec<u8>, bool); 7] = [
        ("the key made from the seed", set.kem_key.clone(), true),
        ("coefficient 0 set to 3329 = q", q.clone(), true),
        ("coefficient 0 set to 3328 = q - 1", q_minus_1, true),
        ("coefficient 767 (the last) set to 4095", last, true),
        (
            "a byte of rho (byte 1183) changed: rho is not checked",
            rho,
            true,
        ),
        (
            "coefficient 0 set to 3329, signature over the original key",
            q,
            false,
        ),
        ("1183 bytes, signed", short, true),
    ];
    let keys = variants
        .into_iter()
        .map(|(name, key, resign)| {
            let mut s = set.clone();
            s.signature = if resign { signed_over(&key) } else { set.signature.clone() };
            s.kem_key = key.clone();
            let bundle = pb::PreKeyBundle { identity: Some(bob_pb.clone()), signed_prekeys: Some(s.clone()), one_time_prekey: None };
            let mut bundle_bytes = vec![ward_core::format::PREKEY_BUNDLE];
            bundle.encode_raw(&mut bundle_bytes);
            let below = (key.len() == 1184).then(|| coefficients_below_q(&key));
            if let Some(below) = below {
                let array = ml_kem::array::Array::try_from(&key[..]).unwrap();
                assert_eq!(ml_kem::EncapsulationKey::<ml_kem::MlKem768>::new(&array).is_ok(), below);
            }
            json!({
                "name": name,
                "kem_key": h(&key),
                "coefficients_below_q": below,
                "signed_prekeys": h(s.encode_to_vec()),
                "expect_signed_prekeys": verdict(SignedPreKeys::decode(&s.encode_to_vec(), bob.public())),
                "bundle": h(&bundle_bytes),
                "expect_bundle": verdict(PreKeyBundle::decode(&bundle_bytes)),
            })
        })
        .collect();

    // Ciphertexts: length only; a wrong 1088 bytes decapsulate to a wrong
    // secret and the handshake fails at authentication.
    let bundle = PreKeyBundle::new(bob.public().clone(), signed.public().clone(), None).unwrap();
    let mut to_bob = Session::initiate(rng, &alice, &bundle).unwrap();
    let first = to_bob.encrypt(rng, b"keys.json").unwrap();
    let envelope = pb::PreKeyMessage::decode(&first[1..]).unwrap();
    let with = |ciphertext: Vec<u8>| {
        let mut m = envelope.clone();
        m.kem_ciphertext = ciphertext;
        let mut out = vec![ward_core::format::PREKEY_MESSAGE];
        m.encode_raw(&mut out);
        out
    };
    let mut flipped = envelope.kem_ciphertext.clone();
    flipped[0] ^= 0x01;
    let ciphertexts = [
        ("as sent", first.clone()),
        ("1087 bytes", with(envelope.kem_ciphertext[..1087].to_vec())),
        (
            "1089 bytes",
            with([&envelope.kem_ciphertext[..], &[0]].concat()),
        ),
        (
            "1088 bytes, bit 0 of byte 0 flipped: implicit rejection",
            with(flipped),
        ),
    ]
    .into_iter()
    .map(|(name, message)| {
        let accept = PreKeyMessage::decode(&message)
            .map(|m| Session::accept(&bob, &signed, None, &m).map(|(_, p)| p));
        json!({
            "name": name,
            "prekey_message": h(&message),
            "expect_decode": verdict(PreKeyMessage::decode(&message)),
            "expect_accept": accept.map(outcome).unwrap_or(Value::Null),
        })
    })
    .collect();
    let secrets = json!({
        "bob_identity_secret": h(*bob.to_secret_bytes()),
        "bob_identity": h(bob.public().to_bytes()),
        "bob_signed_prekey_secret": h(&*signed.to_secret_bytes()),
    });
    (keys, ciphertexts, secrets)
}

/// The whole `keys.json`.
pub fn keys() -> Value {
    let mut rng = RecordingRng::new(0x6b65_7973);
    let (kem_keys, ciphertexts, secrets) = ml_kem(&mut rng);
    let ed25519 = ed25519(&mut rng);
    json!({
        "description": "Key checks of spec/02 (Key validation) on their edges: ML-KEM-768 encapsulation keys in a signed prekey set (SignedPreKeys::decode under bob_identity: lengths and signature only) and in a bundle (then the FIPS 203 modulus check); ML-KEM ciphertext lengths in a pre-key message, and ACCEPT of one whose ciphertext was altered; strict Ed25519 verification (KEY-4) of identities given to DeviceIdentity::from_bytes. There is no decapsulation-key check to pin: ward-core only ever derives decapsulation keys from 64-byte seeds (KEY-14).",
        "ml_kem": {
            "bob": secrets,
            "encapsulation_keys": kem_keys,
            "ciphertexts": ciphertexts,
        },
        "ed25519": {
            "group_order_l": h(L),
            "identities": ed25519,
        },
    })
}
