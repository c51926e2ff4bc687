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

// ---- A protobuf reader and writer for the two messages the vectors need,
// from the field tables of spec/03 and spec/06 (varint and length-delimited
// fields only; proto3: defaults omitted, `optional` and messages by presence).

fn take_varint(input: &mut &[u8]) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (byte, rest) = input.split_first().expect("varint truncated");
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint too long")
}

/// The fields of one message: (number, varint value or bytes), in order.
enum Field {
    Varint(u64),
    Bytes(Vec<u8>),
}

fn fields_of(mut input: &[u8]) -> Vec<(u64, Field)> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let key = take_varint(&mut input);
        let field = match key & 7 {
            0 => Field::Varint(take_varint(&mut input)),
            2 => {
                let len = take_varint(&mut input) as usize;
                let (value, rest) = input.split_at(len);
                input = rest;
                Field::Bytes(value.to_vec())
            }
            other => panic!("wire type {other} in a Ward message"),
        };
        out.push((key >> 3, field));
    }
    out
}

/// Decodes a message against `schema`: (number, name, kind) with kind one of
/// "bytes", "uint", "bool", "optional uint", or a nested schema's name
/// (optionally "repeated ..."). Absent fields get their proto3 defaults.
fn decode(input: &[u8], schema: &Schema) -> Value {
    let mut out = serde_json::Map::new();
    for (_, name, kind) in schema.0 {
        let default = match *kind {
            "bytes" => json!(""),
            "uint" => json!(0),
            "bool" => json!(false),
            k if k.starts_with("repeated") => json!([]),
            _ => Value::Null,
        };
        out.insert((*name).into(), default);
    }
    for (number, field) in fields_of(input) {
        let (_, name, kind) = schema
            .0
            .iter()
            .find(|(n, _, _)| *n == number)
            .unwrap_or_else(|| panic!("unknown field {number}"));
        let value = match (*kind, field) {
            ("bytes", Field::Bytes(b)) => json!(hex::encode(b)),
            ("uint" | "optional uint", Field::Varint(v)) => json!(v),
            ("bool", Field::Varint(v)) => json!(v != 0),
            (nested, Field::Bytes(b)) => {
                let inner = nested.trim_start_matches("repeated ");
                let value = match inner {
                    "bytes" => json!(hex::encode(&b)),
                    _ => decode(&b, schema_named(inner)),
                };
                if nested.starts_with("repeated") {
                    out[*name].as_array_mut().unwrap().push(value);
                    continue;
                }
                value
            }
            _ => panic!("field {name}: wrong wire type"),
        };
        out.insert((*name).into(), value);
    }
    Value::Object(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, number: u64, value: &[u8]) {
    put_varint(out, number << 3 | 2);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// The canonical encoding (fields in number order, defaults omitted) of the
/// decoded form [`decode`] gives.
fn encode(value: &Value, schema: &Schema) -> Vec<u8> {
    let mut out = Vec::new();
    for (number, name, kind) in schema.0 {
        let v = &value[*name];
        match *kind {
            "bytes" if v != "" => put_bytes(&mut out, *number, &bytes(v)),
            "uint" | "bool" if v != 0 && v != false => {
                put_varint(&mut out, number << 3);
                put_varint(&mut out, v.as_u64().unwrap_or(1));
            }
            "optional uint" if !v.is_null() => {
                put_varint(&mut out, number << 3);
                put_varint(&mut out, v.as_u64().unwrap());
            }
            "bytes" | "uint" | "bool" | "optional uint" => {}
            "repeated bytes" => v
                .as_array()
                .unwrap()
                .iter()
                .for_each(|b| put_bytes(&mut out, *number, &bytes(b))),
            nested if nested.starts_with("repeated ") => {
                let inner = schema_named(&nested["repeated ".len()..]);
                for item in v.as_array().unwrap() {
                    put_bytes(&mut out, *number, &encode(item, inner));
                }
            }
            nested if !v.is_null() => {
                put_bytes(&mut out, *number, &encode(v, schema_named(nested)))
            }
            _ => {}
        }
    }
    out
}

struct Schema(&'static [(u64, &'static str, &'static str)]);

const DEVICE_IDENTITY: Schema = Schema(&[
    (1, "signing_key", "bytes"),
    (2, "dh_key", "bytes"),
    (3, "dh_key_signature", "bytes"),
]);
const CHAIN_STATE: Schema = Schema(&[
    (1, "ratchet_key", "bytes"),
    (2, "chain_key", "bytes"),
    (3, "index", "uint"),
]);
const SKIPPED_KEY: Schema = Schema(&[
    (1, "ratchet_key", "bytes"),
    (2, "index", "uint"),
    (3, "message_key", "bytes"),
]);
const PENDING_PREKEY: Schema = Schema(&[
    (1, "signed_prekey_id", "uint"),
    (2, "one_time_prekey_id", "optional uint"),
    (3, "kem_ciphertext", "bytes"),
]);
const SESSION_STATE: Schema = Schema(&[
    (1, "local_identity", "DeviceIdentity"),
    (2, "remote_identity", "DeviceIdentity"),
    (3, "base_key", "bytes"),
    (4, "initiator", "bool"),
    (5, "root_key", "bytes"),
    (6, "local_ratchet_secret", "bytes"),
    (7, "sending_chain", "ChainState"),
    (8, "previous_sending_count", "uint"),
    (9, "remote_ratchet_key", "bytes"),
    (10, "receiving_chain", "ChainState"),
    (11, "skipped_keys", "repeated SkippedKey"),
    (12, "pending_prekey", "PendingPreKey"),
    (13, "previous_remote_ratchet_keys", "repeated bytes"),
    (14, "handshake_digest", "bytes"),
]);
const PREKEY_MESSAGE: Schema = Schema(&[
    (1, "identity", "DeviceIdentity"),
    (2, "signed_prekey_id", "uint"),
    (3, "one_time_prekey_id", "optional uint"),
    (4, "base_key", "bytes"),
    (5, "kem_ciphertext", "bytes"),
    (6, "message", "bytes"),
]);

fn schema_named(name: &str) -> &'static Schema {
    match name {
        "DeviceIdentity" => &DEVICE_IDENTITY,
        "ChainState" => &CHAIN_STATE,
        "SkippedKey" => &SKIPPED_KEY,
        "PendingPreKey" => &PENDING_PREKEY,
        other => panic!("no schema {other}"),
    }
}

/// `0x04 || SessionState`, decoded field by field.
fn state_fields(state: &[u8]) -> Value {
    assert_eq!(state[0], 0x04, "session state format byte");
    decode(&state[1..], &SESSION_STATE)
}

/// `0x02 || PreKeyMessage`, decoded field by field.
fn envelope_fields(message: &[u8]) -> Value {
    assert_eq!(message[0], 0x02, "pre-key message format byte");
    decode(&message[1..], &PREKEY_MESSAGE)
}

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
