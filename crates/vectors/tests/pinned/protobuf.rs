//! A protobuf reader and writer for the messages the pinned vectors need,
//! written from the field tables of spec/03 and spec/06 rather than taken
//! from the schema: varint and length-delimited fields only; proto3
//! defaults omitted, `optional` fields and messages by presence.

use serde_json::{Value, json};

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

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
pub(crate) fn decode(input: &[u8], schema: &Schema) -> Value {
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
pub(crate) fn encode(value: &Value, schema: &Schema) -> Vec<u8> {
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

pub(crate) struct Schema(pub(crate) &'static [(u64, &'static str, &'static str)]);

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
pub(crate) const SESSION_STATE: Schema = Schema(&[
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
pub(crate) fn state_fields(state: &[u8]) -> Value {
    assert_eq!(state[0], 0x04, "session state format byte");
    decode(&state[1..], &SESSION_STATE)
}

/// `0x02 || PreKeyMessage`, decoded field by field.
pub(crate) fn envelope_fields(message: &[u8]) -> Value {
    assert_eq!(message[0], 0x02, "pre-key message format byte");
    decode(&message[1..], &PREKEY_MESSAGE)
}
