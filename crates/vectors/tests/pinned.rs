//! Replays `sessions.json`, `eviction.json`, `keys.json` and the handshake
//! digest of `handshake.json` from the files alone. Each expectation is
//! recomputed: by the spec's formula with the primitives (SHA-256, X25519,
//! the KDFs, ChaCha20-Poly1305, a protobuf reader written here from
//! spec/03 and spec/06) where there is one, and by ward-core's public API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use ward_core::{DeviceIdentity, PreKeyMessage, Session, hazmat};

fn load(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors");
    serde_json::from_str(&std::fs::read_to_string(path.join(name)).unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[path = "pinned/protobuf.rs"]
mod protobuf;
use protobuf::{SESSION_STATE, encode, envelope_fields, state_fields};

// ---- The handshake digest (spec/04 HS-15).

fn fixed_identity(id: &Value) -> Vec<u8> {
    ["signing_key", "dh_key", "dh_key_signature"]
        .iter()
        .flat_map(|f| bytes(&id[f]))
        .collect()
}

/// `label || identity (128) || u32be(spk) || 0x00 | 0x01 || u32be(opk) ||
/// base_key || kem_ciphertext`, from a decoded envelope.
fn digest_input(envelope: &Value) -> Vec<u8> {
    let mut input = b"Ward v1 pre-key handshake\0".to_vec();
    assert_eq!(input.len(), 26);
    input.extend(fixed_identity(&envelope["identity"]));
    let spk = u32::try_from(envelope["signed_prekey_id"].as_u64().unwrap()).unwrap();
    input.extend_from_slice(&spk.to_be_bytes());
    match envelope["one_time_prekey_id"].as_u64() {
        None => input.push(0x00),
        Some(id) => {
            input.push(0x01);
            input.extend_from_slice(&u32::try_from(id).unwrap().to_be_bytes());
        }
    }
    input.extend(bytes(&envelope["base_key"]));
    input.extend(bytes(&envelope["kem_ciphertext"]));
    input
}

#[test]
fn the_handshake_digest_is_sha256_of_the_envelope_fields() {
    for case in load("handshake.json")["cases"].as_array().unwrap() {
        let first = bytes(&case["first_message"]);
        let envelope = envelope_fields(&first);
        assert_eq!(
            fixed_identity(&envelope["identity"]),
            bytes(&case["alice_identity"])
        );
        assert_eq!(envelope["base_key"], case["base_key"]);
        assert_eq!(envelope["kem_ciphertext"], case["kem_ciphertext"]);
        // The ids are those of Bob's stored prekeys (u32be after the format byte).
        let spk = &bytes(&case["bob_signed_prekey_secret"])[1..5];
        assert_eq!(
            envelope["signed_prekey_id"],
            u32::from_be_bytes(spk.try_into().unwrap())
        );
        let opk = &bytes(&case["bob_one_time_prekey_secret"])[1..5];
        let with = case["with_one_time_prekey"].as_bool().unwrap();
        let opk = u32::from_be_bytes(opk.try_into().unwrap());
        assert_eq!(
            envelope["one_time_prekey_id"],
            if with { json!(opk) } else { Value::Null }
        );

        let input = digest_input(&envelope);
        assert_eq!(
            input.len(),
            26 + 128 + 4 + if with { 5 } else { 1 } + 32 + 1088
        );
        assert_eq!(input, bytes(&case["handshake_digest_input"]));
        let digest = Sha256::digest(&input).to_vec();
        assert_eq!(digest, bytes(&case["handshake_digest"]));
        // The same message decodes in ward-core to the same envelope values.
        let m = PreKeyMessage::decode(&first).unwrap();
        assert_eq!(
            m.identity().to_bytes().to_vec(),
            fixed_identity(&envelope["identity"])
        );
        assert_eq!(
            m.one_time_prekey_id().map(u64::from),
            envelope["one_time_prekey_id"].as_u64()
        );
    }
    let v = load("sessions.json");
    let digest = Sha256::digest(bytes(&v["handshake_digest_input"])).to_vec();
    assert_eq!(digest, bytes(&v["handshake_digest"]));
}

// ---- sessions.json: later pre-key messages (spec/06 SESSION-DECRYPT).

#[test]
fn later_pre_key_messages_are_bound_by_the_handshake_digest() {
    let v = load("sessions.json");
    let (mut refused, mut opened) = (0, 0);
    for case in v["later_prekey_messages"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let state = bytes(&case["state"]);
        let message = bytes(&case["message"]);
        let fields = state_fields(&state);
        let expect = &case["expect"];

        // What spec/06 says must happen, from the bytes alone: decode (with
        // the identity check), then WrongSession for an initiator or a digest
        // that differs, then the inner message.
        let envelope = envelope_fields(&message);
        let identity = DeviceIdentity::from_bytes(&fixed_identity(&envelope["identity"]));
        let digest = Sha256::digest(digest_input(&envelope)).to_vec();
        match identity {
            Err(e) => {
                assert_eq!(expect["error"], format!("{e:?}"), "{name}");
                assert_eq!(case["message_handshake_digest"], Value::Null, "{name}");
            }
            Ok(_) => {
                assert_eq!(bytes(&case["message_handshake_digest"]), digest, "{name}");
                let wrong =
                    fields["initiator"] == true || digest != bytes(&fields["handshake_digest"]);
                assert_eq!(wrong, expect["error"] == "WrongSession", "{name}");
            }
        }

        // ward-core does exactly that, and a failure changes nothing.
        let mut session = Session::from_bytes(&state).unwrap();
        match session.decrypt(&message) {
            Ok(plaintext) => {
                assert_eq!(expect["plaintext"], hex::encode(plaintext), "{name}");
                assert_eq!(*session.to_bytes(), bytes(&case["state_after"]), "{name}");
                opened += 1;
            }
            Err(e) => {
                assert_eq!(expect["error"], format!("{e:?}"), "{name}");
                assert_eq!(*session.to_bytes(), state, "{name}");
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 8 && opened >= 2,
        "{refused} refused, {opened} opened"
    );
}

// ---- sessions.json: session states (spec/06 SES-1).

/// `KDF_CK` applied `steps` times, then the message key.
fn message_key_after(chain_key: &[u8], steps: u64) -> [u8; 32] {
    let mut ck: [u8; 32] = chain_key.try_into().unwrap();
    for _ in 0..steps {
        ck = *hazmat::kdf_ck(&ck).1;
    }
    *hazmat::kdf_ck(&ck).0
}

/// The key that opens `inner` under a decoded state, by the rules of 05:
/// a skipped key, the receiving chain, or a new chain from a DH step.
fn key_for(fields: &Value, inner: &[u8]) -> [u8; 32] {
    let header = hazmat::parse_ratchet_message(inner).unwrap();
    let key = hex::encode(header.ratchet_key);
    let counter = u64::from(header.counter);
    for k in fields["skipped_keys"].as_array().unwrap() {
        if k["ratchet_key"] == key && k["index"] == counter {
            return bytes(&k["message_key"]).try_into().unwrap();
        }
    }
    let receiving = &fields["receiving_chain"];
    if !receiving.is_null() && receiving["ratchet_key"] == key {
        let index = receiving["index"].as_u64().unwrap();
        return message_key_after(&bytes(&receiving["chain_key"]), counter - index);
    }
    let secret: [u8; 32] = bytes(&fields["local_ratchet_secret"]).try_into().unwrap();
    let dh = x25519_dalek::StaticSecret::from(secret)
        .diffie_hellman(&x25519_dalek::PublicKey::from(header.ratchet_key))
        .to_bytes();
    let root: [u8; 32] = bytes(&fields["root_key"]).try_into().unwrap();
    let (_, chain) = hazmat::kdf_rk(&root, &dh);
    message_key_after(&*chain, counter)
}

/// Opens a ratchet message with the primitives: `EXPAND_MK`, then
/// ChaCha20-Poly1305 with AD = sender key || receiver key || header.
fn open(message_key: &[u8; 32], sender: &[u8], receiver: &[u8], inner: &[u8]) -> Vec<u8> {
    let header_len = hazmat::parse_ratchet_message(inner).unwrap().header_len;
    let (key, nonce) = hazmat::expand_mk(message_key);
    let ad = [sender, receiver, &inner[..header_len]].concat();
    let (body, tag) = inner[header_len..].split_at(inner.len() - header_len - 16);
    let mut body = body.to_vec();
    ChaCha20Poly1305::new(&(*key).into())
        .decrypt_inout_detached(
            &nonce.into(),
            &ad,
            body.as_mut_slice().into(),
            tag.try_into().unwrap(),
        )
        .expect("the state's key opens the message");
    body
}

#[test]
fn session_states_decode_field_by_field_and_reencode_to_the_same_bytes() {
    let v = load("sessions.json");
    let states = v["states"].as_array().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for s in states {
        let name = s["name"].as_str().unwrap();
        let state = bytes(&s["state"]);
        let fields = state_fields(&state);
        assert_eq!(fields, s["fields"], "{name}: decoded fields");
        let mut again = vec![0x04];
        again.extend(encode(&s["fields"], &SESSION_STATE));
        assert_eq!(again, state, "{name}: re-encoded");
        assert_eq!(
            *Session::from_bytes(&state).unwrap().to_bytes(),
            state,
            "{name}"
        );
        for (number, field, _) in SESSION_STATE.0 {
            let v = &fields[*field];
            if !(v.is_null() || v == "" || v == 0 || v == false || v == &json!([])) {
                seen.insert(*number);
            }
        }
        // The identities are those of the handshake, and the digest is theirs.
        for f in ["local_identity", "remote_identity"] {
            assert!(DeviceIdentity::from_bytes(&fixed_identity(&fields[f])).is_ok());
        }
        assert_eq!(fields["handshake_digest"], v["handshake_digest"]);
        // Each listed message opens with the key the fields give for it, and
        // the restored session opens it too.
        let sender = bytes(&fields["remote_identity"]["signing_key"]);
        let receiver = bytes(&fields["local_identity"]["signing_key"]);
        for m in s["opens"].as_array().unwrap() {
            let wire = bytes(&m["wire"]);
            let inner = match wire[0] {
                0x02 => bytes(&envelope_fields(&wire)["message"]),
                _ => wire.clone(),
            };
            let key = key_for(&fields, &inner);
            assert_eq!(
                open(&key, &sender, &receiver, &inner),
                bytes(&m["plaintext"]),
                "{name} {m}"
            );
            let mut session = Session::from_bytes(&state).unwrap();
            assert_eq!(
                session.decrypt(&wire).unwrap(),
                bytes(&m["plaintext"]),
                "{name} {m}"
            );
        }
    }
    // Together the states set every one of the 14 fields.
    assert_eq!(seen.len(), 14, "fields set: {seen:?}");
}

// ---- eviction.json: the bounds of spec/05.

type Skipped = Vec<(String, u64)>;

/// `STORE_SKIPPED` of spec/05, on (ratchet key, index) pairs.
fn store_skipped(list: &mut Skipped, keys: Skipped) {
    let mut chains: Vec<String> = Vec::new();
    for (key, _) in &keys {
        if !chains.contains(key) {
            chains.push(key.clone());
        }
    }
    list.extend(keys);
    for chain in chains {
        let n = list.iter().filter(|(k, _)| *k == chain).count();
        let mut excess = n.saturating_sub(1000);
        list.retain(|(k, _)| {
            let evict = excess > 0 && *k == chain;
            excess -= usize::from(evict);
            !evict
        });
    }
    while list.len() > 2000 {
        list.remove(0);
    }
}

fn skipped_of(fields: &Value) -> Skipped {
    let list = fields["skipped_keys"].as_array().unwrap();
    let pair = |k: &Value| {
        (
            k["ratchet_key"].as_str().unwrap().to_owned(),
            k["index"].as_u64().unwrap(),
        )
    };
    list.iter().map(pair).collect()
}

/// What `PLAN` and `COMMIT` of spec/05 make of `inner` under the decoded
/// state `before`: the error the header alone decides, or the skipped list
/// and previous remote keys after a successful decryption.
fn plan(before: &Value, inner: &[u8]) -> Result<(Skipped, Value), &'static str> {
    let h = hazmat::parse_ratchet_message(inner).unwrap();
    let (key, counter) = (hex::encode(h.ratchet_key), u64::from(h.counter));
    let mut skipped = skipped_of(before);
    let mut previous = before["previous_remote_ratchet_keys"].clone();
    let receiving = &before["receiving_chain"];
    let index = receiving["index"].as_u64().unwrap_or(0);
    let on_receiving = !receiving.is_null() && receiving["ratchet_key"] == key;
    let chain = |k: &str, range: std::ops::Range<u64>| range.map(|i| (k.to_owned(), i)).collect();
    if on_receiving && counter >= index {
        store_skipped(&mut skipped, chain(&key, index..counter));
    } else if let Some(at) = skipped.iter().position(|k| *k == (key.clone(), counter)) {
        skipped.remove(at);
    } else if on_receiving
        || previous.as_array().unwrap().contains(&json!(key))
        || before["sending_chain"]["ratchet_key"] == key
    {
        return Err("DuplicateOrExpired");
    } else {
        if counter > 1000 {
            return Err("TooFarAhead");
        }
        let mut keys: Skipped = Vec::new();
        if !receiving.is_null() {
            let old = receiving["ratchet_key"].as_str().unwrap();
            keys = chain(old, index..u64::from(h.previous_counter).max(index));
            let list = previous.as_array_mut().unwrap();
            list.push(json!(old));
            if list.len() > 8 {
                list.remove(0);
            }
        }
        keys.extend(chain(&key, 0..counter));
        store_skipped(&mut skipped, keys);
    }
    Ok((skipped, previous))
}

#[test]
fn skipped_keys_and_retired_ratchet_keys_are_evicted() {
    use ward_core::limits::*;
    use ward_core::{IdentityKeyPair, OneTimePreKeyPair, PreKeyBundle, SignedPreKeyPair};
    use ward_vectors::rng::ReplayRng;
    assert_eq!((MAX_SKIP, MAX_SKIPPED_PER_CHAIN), (1000, 1000));
    assert_eq!(
        (MAX_SKIPPED_PER_SESSION, MAX_PREVIOUS_REMOTE_RATCHETS),
        (2000, 8)
    );

    let v = load("eviction.json");
    let secret = |name: &str| bytes(&v[name]);
    let alice = IdentityKeyPair::from_secret_bytes(&secret("alice_identity_secret")).unwrap();
    let bob = IdentityKeyPair::from_secret_bytes(&secret("bob_identity_secret")).unwrap();
    let signed =
        SignedPreKeyPair::from_secret_bytes(&bob, &secret("bob_signed_prekey_secret")).unwrap();
    let one_time =
        OneTimePreKeyPair::from_secret_bytes(&secret("bob_one_time_prekey_secret")).unwrap();
    let bundle = PreKeyBundle::decode(&secret("bundle")).unwrap();
    let (mut to_bob, mut to_alice): (Option<Session>, Option<Session>) = (None, None);
    let mut wires: std::collections::HashMap<String, Vec<u8>> = Default::default();
    let mut errors = Vec::new();
    for event in v["events"].as_array().unwrap() {
        let mut rng = ReplayRng::default();
        if let Some(draws) = event["random"].as_array() {
            rng.push_hex(draws.iter().map(|d| d.as_str().unwrap()));
        }
        let by_alice = event["by"] == "alice";
        let session = if by_alice { &mut to_bob } else { &mut to_alice };
        match event["event"].as_str().unwrap() {
            "initiate" => *session = Some(Session::initiate(&mut rng, &alice, &bundle).unwrap()),
            "send" => {
                let plaintext = bytes(&event["plaintext"]);
                assert_eq!(plaintext, event["message"].as_str().unwrap().as_bytes());
                let wire = session
                    .as_mut()
                    .unwrap()
                    .encrypt(&mut rng, &plaintext)
                    .unwrap();
                assert_eq!(wire, bytes(&event["wire"]), "{event}");
                wires.insert(event["message"].as_str().unwrap().into(), wire);
            }
            "send_range" => {
                let mut hash = Sha256::new();
                for i in event["first"].as_u64().unwrap()..=event["last"].as_u64().unwrap() {
                    let label = format!("{}{i}", event["prefix"].as_str().unwrap());
                    let wire = session
                        .as_mut()
                        .unwrap()
                        .encrypt(&mut rng, label.as_bytes());
                    hash.update(wire.as_ref().unwrap());
                    wires.insert(label, wire.unwrap());
                }
                assert_eq!(
                    hash.finalize().to_vec(),
                    bytes(&event["wires_sha256"]),
                    "{event}"
                );
            }
            "receive" => {
                let wire = wires[event["message"].as_str().unwrap()].clone();
                let expect = &event["expect"];
                let Some(s) = session.as_mut() else {
                    let m = PreKeyMessage::decode(&wire).unwrap();
                    let (s, p) = Session::accept(&bob, &signed, Some(&one_time), &m).unwrap();
                    assert_eq!(expect["plaintext"], hex::encode(p));
                    *session = Some(s);
                    continue;
                };
                let before = s.to_bytes();
                let planned = plan(&state_fields(&before), &wire);
                let result = s.decrypt(&wire);
                let after = state_fields(&s.to_bytes());
                match &result {
                    Ok(p) => assert_eq!(expect["plaintext"], hex::encode(p), "{event}"),
                    Err(e) => {
                        assert_eq!(expect["error"], format!("{e:?}"), "{event}");
                        assert_eq!(s.to_bytes(), before, "{event}: a refusal changed the state");
                        errors.push(format!("{e:?}"));
                    }
                }
                assert_eq!(expect["skipped_keys"], s.skipped_key_count(), "{event}");
                assert_eq!(expect["skipped_keys"], skipped_of(&after).len(), "{event}");
                let previous = &after["previous_remote_ratchet_keys"];
                assert_eq!(expect["previous_remote_ratchet_keys"], *previous, "{event}");
                // The spec's PLAN and COMMIT, from the state before, agree.
                match (planned, result) {
                    (Err(error), result) => assert_eq!(
                        result.err().map(|e| format!("{e:?}")).as_deref(),
                        Some(error),
                        "{event}"
                    ),
                    (Ok((skipped, prev)), Ok(_)) => {
                        let same = skipped_of(&after) == skipped;
                        assert!(same, "{event}: the skipped keys are not STORE_SKIPPED's");
                        assert_eq!(*previous, prev, "{event}");
                    }
                    (Ok(_), Err(e)) => assert_eq!(e, ward_core::Error::DecryptionFailed, "{event}"),
                }
            }
            other => panic!("unknown event {other}"),
        }
        assert_eq!(rng.mismatch, None, "{event}");
        assert_eq!(rng.remaining(), 0, "{event}");
    }
    // Two evicted keys and one replay of a remembered chain, a replay under a
    // retired key (case 4), and one above MAX_SKIP.
    assert_eq!(
        errors,
        [
            "DuplicateOrExpired",
            "DuplicateOrExpired",
            "DuplicateOrExpired",
            "DecryptionFailed",
            "TooFarAhead"
        ]
    );
}

// ---- keys.json: key validation (spec/02).

fn verdict<T>(result: ward_core::Result<T>) -> Value {
    match result {
        Ok(_) => json!({"ok": true}),
        Err(e) => json!({"error": format!("{e:?}")}),
    }
}

/// FIPS 203 section 7.2, from the spec: 1184 bytes, and each 12-bit
/// coefficient of the first 1152 bytes below q = 3329.
fn passes_modulus_check(key: &[u8]) -> bool {
    key.len() == 1184
        && key[..1152].chunks(3).all(|t| {
            let c0 = u16::from(t[0]) | u16::from(t[1] & 0x0f) << 8;
            let c1 = u16::from(t[1] >> 4) | u16::from(t[2]) << 4;
            c0 < 3329 && c1 < 3329
        })
}

#[test]
fn ml_kem_keys_and_ciphertexts_are_checked_as_spec_02_says() {
    use ward_core::{IdentityKeyPair, PreKeyBundle, SignedPreKeyPair, SignedPreKeys};
    let v = load("keys.json");
    let m = &v["ml_kem"];
    let bob = IdentityKeyPair::from_secret_bytes(&bytes(&m["bob"]["bob_identity_secret"])).unwrap();
    assert_eq!(
        bob.public().to_bytes().to_vec(),
        bytes(&m["bob"]["bob_identity"])
    );
    let (mut valid, mut invalid) = (0, 0);
    for case in m["encapsulation_keys"].as_array().unwrap() {
        let name = &case["name"];
        let key = bytes(&case["kem_key"]);
        let set = bytes(&case["signed_prekeys"]);
        let bundle = bytes(&case["bundle"]);
        assert!(
            set.windows(key.len()).any(|w| w == key) && bundle.ends_with(&set),
            "{name}"
        );
        let check = passes_modulus_check(&key);
        if key.len() == 1184 {
            assert_eq!(case["coefficients_below_q"], check, "{name}");
            let array = ml_kem::array::Array::try_from(&key[..]).unwrap();
            let primitive = ml_kem::EncapsulationKey::<ml_kem::MlKem768>::new(&array).is_ok();
            assert_eq!(primitive, check, "{name}: ml-kem's own check");
        }
        // The order of 02: lengths, signature, then (in a bundle only) the key.
        let in_set = verdict(SignedPreKeys::decode(&set, bob.public()));
        assert_eq!(in_set, case["expect_signed_prekeys"], "{name}");
        let in_bundle = verdict(PreKeyBundle::decode(&bundle));
        assert_eq!(in_bundle, case["expect_bundle"], "{name}");
        if in_set["ok"] == true {
            let invalid_key = json!({"error": "Decode(InvalidKey(\"signed_prekeys.kem_key\"))"});
            let expected = if check {
                json!({"ok": true})
            } else {
                invalid_key
            };
            assert_eq!(in_bundle, expected, "{name}");
            if check { valid += 1 } else { invalid += 1 }
        }
    }
    assert!(
        valid >= 3 && invalid >= 2,
        "{valid} valid, {invalid} invalid keys"
    );

    let signed =
        SignedPreKeyPair::from_secret_bytes(&bob, &bytes(&m["bob"]["bob_signed_prekey_secret"]))
            .unwrap();
    for case in m["ciphertexts"].as_array().unwrap() {
        let message = bytes(&case["prekey_message"]);
        let length = bytes(&envelope_fields(&message)["kem_ciphertext"]).len();
        let decoded = PreKeyMessage::decode(&message);
        assert_eq!(decoded.is_ok(), length == 1088, "{}", case["name"]);
        assert_eq!(
            verdict(decoded.clone()),
            case["expect_decode"],
            "{}",
            case["name"]
        );
        match decoded {
            Err(_) => assert_eq!(case["expect_accept"], Value::Null),
            Ok(msg) => match Session::accept(&bob, &signed, None, &msg) {
                Ok((_, p)) => assert_eq!(case["expect_accept"]["plaintext"], hex::encode(p)),
                Err(e) => assert_eq!(case["expect_accept"]["error"], format!("{e:?}")),
            },
        }
    }
}

/// The encoding of the identity point (y = 1).
const IDENTITY: [u8; 32] = {
    let mut p = [0u8; 32];
    p[0] = 1;
    p
};

/// Little-endian `a - b`, if `a ≥ b`.
fn sub_le(a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; a.len()];
    let mut borrow = 0i16;
    for i in 0..a.len() {
        let d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = d.rem_euclid(256) as u8;
    }
    (borrow == 0).then_some(out)
}

#[test]
fn strict_ed25519_refuses_each_edge_case_and_only_those() {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let v = load("keys.json");
    let l = bytes(&v["ed25519"]["group_order_l"]);
    // L = 2^252 + 27742317777372353535851937790883648493, little-endian.
    assert_eq!(l[31], 0x10);
    assert_eq!(hex::encode(&l[..16]), "edd3f55c1a631258d69cf7a2def9de14");
    let mut p = vec![0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f; // 2^255 - 19
    let cases = v["ed25519"]["identities"].as_array().unwrap();
    let valid = cases.iter().find(|c| c["rule"] == "valid").unwrap();
    let genuine = DeviceIdentity::from_bytes(&bytes(&valid["identity"])).unwrap();
    let mut rules = std::collections::BTreeSet::new();
    for case in cases {
        let name = &case["name"];
        let (a, dh, sig) = (
            bytes(&case["signing_key"]),
            bytes(&case["dh_key"]),
            bytes(&case["signature"]),
        );
        assert_eq!(
            bytes(&case["identity"]),
            [&a[..], &dh, &sig].concat(),
            "{name}"
        );
        let message = [&b"Ward v1 identity dh key\0"[..], &dh].concat();
        assert_eq!(bytes(&case["message"]), message, "{name}");
        let result = verdict(DeviceIdentity::from_bytes(&bytes(&case["identity"])));
        assert_eq!(result, case["expect"], "{name}");
        let key = |bytes: &[u8]| VerifyingKey::from_bytes(bytes.try_into().unwrap());
        let signature = Signature::from_slice(&sig).unwrap();
        let (r, s) = sig.split_at(32);
        let refused_a = json!({"error": "Decode(InvalidKey(\"identity.signing_key\"))"});
        let bad_signature = json!({"error": "BadSignature"});
        // Each rule: the property that makes the case, checked with the
        // primitives, and the one outcome KEY-4 allows.
        let rule = case["rule"].as_str().unwrap();
        match rule {
            "valid" => {
                assert!(key(&a).unwrap().verify_strict(&message, &signature).is_ok());
                assert_eq!(result, json!({"ok": true}));
            }
            "A small order" | "A small order, lax-valid" => {
                assert!(key(&a).unwrap().is_weak(), "{name}");
                if rule.ends_with("lax-valid") {
                    assert!(
                        key(&a).unwrap().verify(&message, &signature).is_ok(),
                        "{name}"
                    );
                }
                assert_eq!(result, refused_a, "{name}");
            }
            "A not a point" => {
                assert!(key(&a).is_err(), "{name}");
                assert_eq!(result, refused_a, "{name}");
            }
            "S not reduced" => {
                let reduced = sub_le(s, &l).expect("S ≥ L");
                assert!(sub_le(&reduced, &l).is_none(), "{name}: S - L < L");
                let fixed = Signature::from_slice(&[r, &reduced].concat()).unwrap();
                assert!(
                    key(&a).unwrap().verify_strict(&message, &fixed).is_ok(),
                    "{name}"
                );
                assert_eq!(result, bad_signature, "{name}");
            }
            "R small order" | "R non-canonical" => {
                assert!(key(r).unwrap().is_weak(), "{name}");
                let mut y = r.to_vec();
                y[31] &= 0x7f;
                let canonical = sub_le(&y, &p).is_none(); // y < p
                assert_eq!(canonical, rule == "R small order", "{name}");
                // [S]B - [k]A = O: only the small-order check refuses R = O.
                if r == IDENTITY {
                    assert!(
                        key(&a).unwrap().verify(&message, &signature).is_ok(),
                        "{name}"
                    );
                }
                assert_eq!(result, bad_signature, "{name}");
            }
            "R not a point" => {
                assert!(key(r).is_err(), "{name}");
                assert_eq!(result, bad_signature, "{name}");
            }
            other => panic!("unknown rule {other}"),
        }
        // A valid key verifies every signature by the same rules.
        if a == genuine.signing_key() {
            let again = verdict(genuine.verify(&message, &sig));
            let expect = if rule == "valid" {
                json!({"ok": true})
            } else {
                bad_signature
            };
            assert_eq!(again, expect, "{name}");
        }
        rules.insert(rule.to_owned());
    }
    assert_eq!(rules.len(), 8, "{rules:?}");
}
