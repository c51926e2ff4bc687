//! Generates the test vectors in `spec/vectors/` (see `spec/vectors/README.md`).
//!
//! Every vector is produced by ward-core from a seeded RNG whose draws are
//! recorded, so a re-implementation can feed the same bytes back. The
//! handshake vector is also recomputed here from the spec with the primitives
//! directly, a second implementation that ward-core must agree with.

// A generator that hits an impossible state must stop loudly, not write a
// vector: panicking is the right failure here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod eviction;
mod groups;
pub mod keys;
mod relay;
pub mod rng;
mod roles;
mod sender_keys;
pub mod sessions;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use ml_kem::array::Array;
use ml_kem::{DecapsulationKey, MlKem768};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::Sha256;
use ward_core::{
    IdentityKeyPair, OneTimePreKeyPair, Party, PreKeyBundle, PreKeyMessage, SafetyNumber, Session,
    SignedPreKeyPair, hazmat,
};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::rng::RecordingRng;

/// Alice, and Bob with a signed prekey set and one one-time prekey, made
/// from `rng` in that order; and Bob's encoded bundle. The draws are
/// discarded: the vectors give the resulting secrets (see
/// spec/vectors/README.md, "Randomness").
pub(crate) struct Parties {
    pub(crate) alice: IdentityKeyPair,
    pub(crate) bob: IdentityKeyPair,
    pub(crate) signed: SignedPreKeyPair,
    pub(crate) one_time: OneTimePreKeyPair,
    pub(crate) bundle_bytes: Vec<u8>,
}

pub(crate) fn parties(rng: &mut RecordingRng, signed_id: u32, one_time_id: u32) -> Parties {
    let alice = IdentityKeyPair::generate(rng);
    let bob = IdentityKeyPair::generate(rng);
    let signed = SignedPreKeyPair::generate(rng, &bob, signed_id, 1_700_000_000);
    let one_time = OneTimePreKeyPair::generate_batch(rng, one_time_id, 1).remove(0);
    rng.take_draws();
    let bundle_bytes = PreKeyBundle::new(
        bob.public().clone(),
        signed.public().clone(),
        Some(one_time.public()),
    )
    .unwrap()
    .encode();
    Parties {
        alice,
        bob,
        signed,
        one_time,
        bundle_bytes,
    }
}

/// Every vector file: its name under `spec/vectors/` and its contents.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("kdf.json", kdf()),
        ("encodings.json", encodings()),
        ("handshake.json", handshake()),
        ("conversation.json", conversation()),
        ("safety_number.json", safety_number()),
        ("audit.json", ward_audit::vectors()),
        ("relay.json", relay::relay()),
        ("sessions.json", sessions::sessions()),
        ("eviction.json", eviction::eviction()),
        ("keys.json", keys::keys()),
        ("sender_keys.json", sender_keys::sender_keys()),
        ("groups.json", groups::groups()),
        ("roles.json", roles::roles()),
    ]
}

/// The exact text written to disk for a vector file.
pub fn render(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

fn h(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(bytes)
}

fn random<const N: usize>(rng: &mut ChaCha20Rng) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}

/// The KDFs of spec/04 and spec/05 on their own.
pub fn kdf() -> Value {
    let mut rng = ChaCha20Rng::seed_from_u64(0x6b6466);
    let kdf_rk: Vec<Value> = (0..3)
        .map(|_| {
            let rk = random::<32>(&mut rng);
            let dh = random::<32>(&mut rng);
            let (root, chain) = hazmat::kdf_rk(&rk, &dh);
            json!({"root_key": h(rk), "dh_output": h(dh), "next_root_key": h(*root), "chain_key": h(*chain)})
        })
        .collect();
    let mut chain = random::<32>(&mut rng);
    let mut steps = Vec::new();
    for index in 0..4 {
        let (mk, next) = hazmat::kdf_ck(&chain);
        let (key, nonce) = hazmat::expand_mk(&mk);
        steps.push(json!({
            "index": index, "chain_key": h(chain), "message_key": h(*mk),
            "next_chain_key": h(*next), "aead_key": h(*key), "aead_nonce": h(nonce),
        }));
        chain = *next;
    }
    let ikm: Vec<u8> = [0xffu8; 32]
        .iter()
        .copied()
        .chain(random::<160>(&mut rng))
        .collect();
    let info = b"Ward v1 handshake example info".to_vec();
    let (root, chain) = hazmat::handshake_kdf(&ikm, &info);
    json!({
        "description": "KDF_RK, KDF_CK and EXPAND_MK (spec/05-double-ratchet.md) and the handshake KDF (spec/04-handshake.md)",
        "kdf_rk": kdf_rk,
        "kdf_ck_chain": steps,
        "handshake_kdf": [{"ikm": h(&ikm), "info": h(&info), "root_key": h(*root), "chain_key": h(*chain)}],
    })
}

/// Canonical encodings and what decoders must refuse (spec/03-encodings.md).
pub fn encodings() -> Value {
    let mut rng = ChaCha20Rng::seed_from_u64(0x656e63);
    let identity = IdentityKeyPair::generate(&mut rng);
    let key = random::<32>(&mut rng);
    let tag = [0u8; 16];
    let message = |varints: &[u8]| -> Vec<u8> {
        let mut m = vec![ward_core::format::RATCHET_MESSAGE];
        m.extend_from_slice(&key);
        m.extend_from_slice(varints);
        m.extend_from_slice(&tag);
        m
    };
    let cases: [(&str, Vec<u8>); 9] = [
        ("zero counters", vec![0x00, 0x00]),
        ("one-byte maximum", vec![0x7f, 0x01]),
        ("two-byte counter 300", vec![0xac, 0x02, 0x00]),
        (
            "u32::MAX previous counter",
            vec![0x05, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
        ("non-canonical: trailing zero group", vec![0x80, 0x00, 0x00]),
        ("over 32 bits", vec![0x00, 0xff, 0xff, 0xff, 0xff, 0x1f]),
        (
            "six-byte varint",
            vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00],
        ),
        ("tag missing", Vec::new()),
        ("truncated in the key", Vec::new()),
    ];
    let ratchet_messages: Vec<Value> = cases
        .iter()
        .map(|(name, varints)| {
            let mut bytes = message(varints);
            if *name == "tag missing" {
                bytes.truncate(1 + 32 + 2);
                bytes.extend_from_slice(&[0x00, 0x00][..0]);
            }
            if *name == "truncated in the key" {
                bytes.truncate(20);
            }
            let expect = match hazmat::parse_ratchet_message(&bytes) {
                Ok(header) => json!({
                    "counter": header.counter,
                    "previous_counter": header.previous_counter,
                    "header_len": header.header_len,
                }),
                Err(e) => json!({"error": format!("{e:?}")}),
            };
            json!({"name": name, "bytes": h(&bytes), "expect": expect})
        })
        .collect();
    let public = identity.public();
    json!({
        "description": "Format bytes, the ratchet message header with its canonical varints, and the identity encodings (spec/03-encodings.md)",
        "ratchet_messages": ratchet_messages,
        "identity": {
            "secret": h(*identity.to_secret_bytes()),
            "fixed_form": h(public.to_bytes()),
            "protobuf": h(public.encode()),
        },
    })
}

/// The handshake with and without a one-time prekey (spec/04-handshake.md).
pub fn handshake() -> Value {
    let cases: Vec<Value> = [(0x6873_0001u64, true), (0x6873_0002, false)]
        .into_iter()
        .map(|(seed, with_one_time)| handshake_case(seed, with_one_time))
        .collect();
    json!({
        "description": "Initiator and responder of the handshake, every intermediate value, recomputed independently of ward-core (spec/04-handshake.md)",
        "cases": cases,
    })
}

fn handshake_case(seed: u64, with_one_time: bool) -> Value {
    let mut rng = RecordingRng::new(seed);
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob = IdentityKeyPair::generate(&mut rng);
    let signed = SignedPreKeyPair::generate(&mut rng, &bob, 1, 1_700_000_000);
    let one_time = OneTimePreKeyPair::generate_batch(&mut rng, 42, 1).remove(0);
    rng.take_draws(); // key generation: the secrets below say it all
    let bundle_bytes = PreKeyBundle::new(
        bob.public().clone(),
        signed.public().clone(),
        with_one_time.then(|| one_time.public()),
    )
    .unwrap()
    .encode();
    let bundle = PreKeyBundle::decode(&bundle_bytes).unwrap();
    let mut session = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let initiate_draws = rng.take_draws();
    let plaintext = b"Patient in bed 4 needs review".to_vec();
    let first = session.encrypt(&mut rng, &plaintext).unwrap();

    // The same values from the spec, with the primitives directly.
    let alice_secret = alice.to_secret_bytes();
    let signed_secret = signed.to_secret_bytes();
    let one_time_secret = one_time.to_secret_bytes();
    let x = |secret: &[u8], public: &[u8; 32]| -> [u8; 32] {
        let mut s = [0u8; 32];
        s.copy_from_slice(secret);
        StaticSecret::from(s)
            .diffie_hellman(&PublicKey::from(*public))
            .to_bytes()
    };
    let base_secret = hex::decode(&initiate_draws[0]).unwrap();
    let kem_m = hex::decode(&initiate_draws[1]).unwrap();
    let base_public = PublicKey::from(&StaticSecret::from(
        <[u8; 32]>::try_from(&base_secret[..]).unwrap(),
    ))
    .to_bytes();
    let spk_public = *signed.public().dh_key();
    let mut dh = vec![
        x(&alice_secret[33..], &spk_public),
        x(&base_secret, bob.public().dh_key()),
        x(&base_secret, &spk_public),
    ];
    if with_one_time {
        dh.push(x(&base_secret, &one_time.public().key));
    }
    let kem_seed = Array::try_from(&signed_secret[45..109]).unwrap();
    let decapsulation = DecapsulationKey::<MlKem768>::from_seed(kem_seed);
    let (kem_ciphertext, kem_secret) = decapsulation
        .encapsulation_key()
        .encapsulate_deterministic(&Array::try_from(&kem_m[..]).unwrap());
    let mut ikm = vec![0xffu8; 32];
    dh.iter().for_each(|d| ikm.extend_from_slice(d));
    ikm.extend_from_slice(&kem_secret);
    let mut info = b"Ward v1 handshake".to_vec();
    for part in [
        alice.public().signing_key(),
        alice.public().dh_key(),
        bob.public().signing_key(),
        bob.public().dh_key(),
        &spk_public,
        &base_public,
    ] {
        info.extend_from_slice(part);
    }
    let mut okm = [0u8; 64];
    Hkdf::<Sha256>::new(Some(&[0u8; 32]), &ikm)
        .expand(&info, &mut okm)
        .unwrap();
    let (root_key, chain_key) = okm.split_at(32);
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(chain_key).unwrap();
    mac.update(&[0x01]);
    let message_key = mac.finalize().into_bytes();
    let mut aead = [0u8; 44];
    Hkdf::<Sha256>::from_prk(&message_key)
        .unwrap()
        .expand(b"Ward v1 message keys", &mut aead)
        .unwrap();
    let mut inner = vec![0x01];
    inner.extend_from_slice(&base_public);
    inner.extend_from_slice(&[0x00, 0x00]);
    let mut ad = Vec::new();
    ad.extend_from_slice(alice.public().signing_key());
    ad.extend_from_slice(bob.public().signing_key());
    ad.extend_from_slice(&inner);
    let mut body = plaintext.clone();
    let cipher = ChaCha20Poly1305::new(&Array::try_from(&aead[..32]).unwrap());
    let tag = cipher
        .encrypt_inout_detached(
            &Array::try_from(&aead[32..]).unwrap(),
            &ad,
            body.as_mut_slice().into(),
        )
        .unwrap();
    inner.extend_from_slice(&body);
    inner.extend_from_slice(&tag);

    // ward-core must agree with the recomputation, and Bob must accept.
    assert!(
        first.ends_with(&inner),
        "inner message differs from the spec"
    );
    assert!(first.windows(1088).any(|w| w == &kem_ciphertext[..]));
    let message = PreKeyMessage::decode(&first).unwrap();
    assert_eq!(message.base_key(), &base_public);
    let (_, accepted) =
        Session::accept(&bob, &signed, with_one_time.then_some(&one_time), &message).unwrap();
    assert_eq!(accepted, plaintext);
    // The handshake digest (spec/04 HS-15) from the spec; both states keep it.
    let digest_input = sessions::digest_input(
        &alice.public().to_bytes(),
        signed.id(),
        with_one_time.then(|| one_time.id()),
        &base_public,
        &kem_ciphertext,
    );
    let digest = sessions::digest(&digest_input);
    sessions::assert_state_digest(&session.to_bytes(), &digest);
    let (bob_session, _) =
        Session::accept(&bob, &signed, with_one_time.then_some(&one_time), &message).unwrap();
    sessions::assert_state_digest(&bob_session.to_bytes(), &digest);

    json!({
        "with_one_time_prekey": with_one_time,
        "alice_identity_secret": h(*alice_secret),
        "bob_identity_secret": h(*bob.to_secret_bytes()),
        "bob_signed_prekey_secret": h(&*signed_secret),
        "bob_one_time_prekey_secret": h(&*one_time_secret),
        "alice_identity": h(alice.public().to_bytes()),
        "bob_identity": h(bob.public().to_bytes()),
        "bundle": h(&bundle_bytes),
        "initiator_random": initiate_draws,
        "base_key": h(base_public),
        "dh": dh.iter().map(h).collect::<Vec<_>>(),
        "kem_ciphertext": h(kem_ciphertext),
        "kem_shared_secret": h(kem_secret),
        "ikm": h(&ikm),
        "info": h(&info),
        "root_key": h(root_key),
        "chain_key": h(chain_key),
        "first_message_key": h(message_key),
        "first_inner_message": h(&inner),
        "plaintext": h(&plaintext),
        "first_message": h(&first),
        "handshake_digest_input": h(&digest_input),
        "handshake_digest": h(digest),
    })
}

/// One step of the scripted conversation: who, and which message by label.
enum Step {
    Send(bool, &'static str, &'static str),
    Receive(bool, &'static str),
}

/// A conversation of 24 messages with out-of-order delivery within and
/// across ratchet steps, a lost message, a duplicate and a tampered message
/// (spec/05-double-ratchet.md, spec/06-sessions.md).
pub fn conversation() -> Value {
    use Step::{Receive, Send};
    const A: bool = true;
    const B: bool = false;
    let script = [
        Send(A, "a0", "first message, opens the session"),
        Send(A, "a1", "second, still a pre-key message"),
        Send(A, "a2", "third"),
        Receive(B, "a1"),
        Receive(B, "a0"),
        Send(B, "b0", "first reply: Bob's first ratchet key"),
        Send(B, "b1", "second reply"),
        Receive(A, "b1"),
        Receive(B, "a2"),
        Send(A, "a3", "Alice steps her ratchet"),
        Send(A, "a4", "same chain"),
        Receive(A, "b0"),
        Receive(B, "a4"),
        Send(B, "b2", "Bob steps his ratchet"),
        Receive(B, "a3"),
        Send(A, "a5", "still on the a3 chain"),
        Receive(A, "b2"),
        Send(A, "a6", "Alice steps again"),
        Receive(B, "a6"),
        Receive(B, "a5"),
        Send(B, "b3", "new chain"),
        Send(B, "b4", "same chain"),
        Send(B, "b5", "same chain"),
        Receive(A, "b5"),
        Receive(A, "b3"),
        Send(A, "a7", "new chain"),
        Send(A, "a8", "same chain"),
        Send(A, "a9", "same chain"),
        Receive(B, "a9"),
        Receive(B, "a8"),
        Receive(B, "a7"),
        Receive(A, "b4"),
        Send(B, "b6", "new chain"),
        Send(A, "a10", "same chain as a7"),
        Receive(A, "b6"),
        Receive(B, "a10"),
        Send(B, "b7", "delivered last of all"),
        Send(B, "b8", "same chain"),
        Send(A, "a11", "new chain"),
        Receive(B, "a11"),
        Receive(A, "b8"),
        Send(A, "a12", "same chain"),
        Send(B, "b9", "lost: never delivered"),
        Receive(B, "a12"),
        Send(A, "a13", "same chain"),
        Receive(B, "a13"),
        Receive(A, "b7"),
    ];
    let mut rng = RecordingRng::new(0x636f6e76);
    let Parties {
        alice,
        bob,
        signed,
        one_time,
        bundle_bytes,
    } = parties(&mut rng, 1, 1);
    let mut events = Vec::new();
    let bundle = PreKeyBundle::decode(&bundle_bytes).unwrap();
    let mut alice_session = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    events.push(json!({"event": "initiate", "by": "alice", "random": rng.take_draws()}));
    let mut bob_session: Option<Session> = None;
    let mut sent: Vec<(&str, Vec<u8>)> = Vec::new();
    let name = |alice: bool| if alice { "alice" } else { "bob" };
    for step in &script {
        match *step {
            Send(from_alice, label, text) => {
                let session = if from_alice {
                    &mut alice_session
                } else {
                    bob_session
                        .as_mut()
                        .expect("the script sends from Bob only after he accepted")
                };
                let plaintext = format!("{label}: {text}");
                let wire = session.encrypt(&mut rng, plaintext.as_bytes()).unwrap();
                events.push(json!({
                    "event": "send", "by": name(from_alice), "message": label,
                    "plaintext": h(plaintext.as_bytes()), "random": rng.take_draws(), "wire": h(&wire),
                }));
                sent.push((label, wire));
            }
            Receive(to_alice, label) => {
                let wire = sent.iter().find(|(l, _)| *l == label).unwrap().1.clone();
                let result = if to_alice {
                    alice_session.decrypt(&wire)
                } else if let Some(s) = bob_session.as_mut() {
                    s.decrypt(&wire)
                } else {
                    let m = PreKeyMessage::decode(&wire).unwrap();
                    Session::accept(&bob, &signed, Some(&one_time), &m).map(|(s, p)| {
                        bob_session = Some(s);
                        p
                    })
                };
                events.push(json!({
                    "event": "receive", "by": name(to_alice), "message": label,
                    "expect": outcome(result),
                }));
            }
        }
    }
    // A duplicate and a tampered message, with the errors they must give.
    let wire_of = |label: &str| sent.iter().find(|(l, _)| *l == label).unwrap().1.clone();
    let mut tampered = wire_of("b9");
    *tampered.last_mut().unwrap() ^= 0x01;
    let duplicate = outcome(bob_session.as_mut().unwrap().decrypt(&wire_of("a8")));
    let forged = outcome(alice_session.decrypt(&tampered));
    events.push(json!({
        "event": "receive", "by": "bob", "message": "a8", "note": "a duplicate", "expect": duplicate,
    }));
    events.push(json!({
        "event": "receive", "by": "alice", "wire": h(&tampered),
        "note": "the lost b9 with the last bit of its tag flipped", "expect": forged,
    }));
    json!({
        "description": "A conversation of 24 messages between Alice and Bob with out-of-order delivery within and across ratchet steps. To replay: restore both devices from their secrets, give each operation the `random` draws listed for it, and check every wire message and outcome (spec/05-double-ratchet.md).",
        "alice_identity_secret": h(*alice.to_secret_bytes()),
        "bob_identity_secret": h(*bob.to_secret_bytes()),
        "bob_signed_prekey_secret": h(&*signed.to_secret_bytes()),
        "bob_one_time_prekey_secret": h(&*one_time.to_secret_bytes()),
        "bundle": h(&bundle_bytes),
        "events": events,
    })
}

fn outcome(result: ward_core::Result<Vec<u8>>) -> Value {
    match result {
        Ok(plaintext) => json!({"plaintext": h(plaintext)}),
        Err(e) => json!({"error": format!("{e:?}")}),
    }
}

/// Safety numbers (spec/07-safety-numbers.md).
pub fn safety_number() -> Value {
    let mut rng = ChaCha20Rng::seed_from_u64(0x736e);
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob_phone = IdentityKeyPair::generate(&mut rng);
    let bob_desktop = IdentityKeyPair::generate(&mut rng);
    let a = [alice.public().clone()];
    let b = [bob_phone.public().clone(), bob_desktop.public().clone()];
    let cases: Vec<Value> = [(&a[..], &b[..1]), (&a[..], &b[..])]
        .into_iter()
        .map(|(local, remote)| {
            let number = SafetyNumber::new(
                Party { user_id: b"alice@clinic.example", devices: local },
                Party { user_id: b"bob@clinic.example", devices: remote },
            )
            .unwrap();
            json!({
                "local": {"user_id": "alice@clinic.example", "signing_keys": local.iter().map(|d| h(d.signing_key())).collect::<Vec<_>>()},
                "remote": {"user_id": "bob@clinic.example", "signing_keys": remote.iter().map(|d| h(d.signing_key())).collect::<Vec<_>>()},
                "digits": number.digits(),
                "qr_payload": h(number.qr_payload()),
            })
        })
        .collect();
    json!({
        "description": "Safety numbers of one and of two remote devices; the same when local and remote are swapped (spec/07-safety-numbers.md)",
        "cases": cases,
    })
}
