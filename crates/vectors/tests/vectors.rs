//! The vectors in spec/vectors/ are current, and they are complete: each is
//! replayed from the file alone, and the KDF and safety-number vectors are
//! recomputed from the spec with the primitives directly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};
use ward_core::{
    IdentityKeyPair, OneTimePreKeyPair, PreKeyBundle, PreKeyMessage, Session, SignedPreKeyPair,
};
use ward_vectors::rng::ReplayRng;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors")
}

fn load(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join(name)).unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn vector_files_match_the_generator_byte_for_byte() {
    for (name, value) in ward_vectors::all() {
        let on_disk = std::fs::read_to_string(dir().join(name)).unwrap_or_default();
        assert!(
            on_disk == ward_vectors::render(&value),
            "spec/vectors/{name} is stale: run `cargo run -p ward-vectors --bin gen-vectors` \
             and commit the spec change that goes with it"
        );
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[test]
fn kdf_vectors_follow_the_spec_formulas() {
    let v = load("kdf.json");
    for case in v["kdf_rk"].as_array().unwrap() {
        let mut okm = [0u8; 64];
        Hkdf::<Sha256>::new(Some(&bytes(&case["root_key"])), &bytes(&case["dh_output"]))
            .expand(b"Ward v1 ratchet", &mut okm)
            .unwrap();
        assert_eq!(okm[..32], bytes(&case["next_root_key"])[..]);
        assert_eq!(okm[32..], bytes(&case["chain_key"])[..]);
    }
    let steps = v["kdf_ck_chain"].as_array().unwrap();
    for (i, step) in steps.iter().enumerate() {
        let ck = bytes(&step["chain_key"]);
        assert_eq!(hmac(&ck, &[0x01]), bytes(&step["message_key"]));
        assert_eq!(hmac(&ck, &[0x02]), bytes(&step["next_chain_key"]));
        if let Some(next) = steps.get(i + 1) {
            assert_eq!(step["next_chain_key"], next["chain_key"]);
        }
        let mut okm = [0u8; 44];
        Hkdf::<Sha256>::from_prk(&bytes(&step["message_key"]))
            .unwrap()
            .expand(b"Ward v1 message keys", &mut okm)
            .unwrap();
        assert_eq!(okm[..32], bytes(&step["aead_key"])[..]);
        assert_eq!(okm[32..], bytes(&step["aead_nonce"])[..]);
    }
    for case in v["handshake_kdf"].as_array().unwrap() {
        let mut okm = [0u8; 64];
        Hkdf::<Sha256>::new(Some(&[0u8; 32]), &bytes(&case["ikm"]))
            .expand(&bytes(&case["info"]), &mut okm)
            .unwrap();
        assert_eq!(okm[..32], bytes(&case["root_key"])[..]);
        assert_eq!(okm[32..], bytes(&case["chain_key"])[..]);
    }
}

#[test]
fn encoding_vectors_state_what_decoders_do() {
    let v = load("encodings.json");
    for case in v["ratchet_messages"].as_array().unwrap() {
        let got = ward_core::hazmat::parse_ratchet_message(&bytes(&case["bytes"]));
        let expect = &case["expect"];
        match got {
            Ok(h) => {
                assert_eq!(expect["counter"], h.counter, "{}", case["name"]);
                assert_eq!(expect["previous_counter"], h.previous_counter);
                assert_eq!(expect["header_len"], h.header_len);
            }
            Err(e) => assert_eq!(expect["error"], format!("{e:?}"), "{}", case["name"]),
        }
    }
    let id = &v["identity"];
    let pair = IdentityKeyPair::from_secret_bytes(&bytes(&id["secret"])).unwrap();
    assert_eq!(pair.public().to_bytes().to_vec(), bytes(&id["fixed_form"]));
    assert_eq!(pair.public().encode(), bytes(&id["protobuf"]));
}

#[test]
fn handshake_vectors_replay_from_the_file() {
    for case in load("handshake.json")["cases"].as_array().unwrap() {
        let alice =
            IdentityKeyPair::from_secret_bytes(&bytes(&case["alice_identity_secret"])).unwrap();
        let bob = IdentityKeyPair::from_secret_bytes(&bytes(&case["bob_identity_secret"])).unwrap();
        let signed =
            SignedPreKeyPair::from_secret_bytes(&bob, &bytes(&case["bob_signed_prekey_secret"]))
                .unwrap();
        let one_time =
            OneTimePreKeyPair::from_secret_bytes(&bytes(&case["bob_one_time_prekey_secret"]))
                .unwrap();
        let bundle = PreKeyBundle::decode(&bytes(&case["bundle"])).unwrap();
        assert_eq!(
            bundle.identity().to_bytes().to_vec(),
            bytes(&case["bob_identity"])
        );
        let mut rng = ReplayRng::default();
        rng.push_hex(
            case["initiator_random"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap()),
        );
        let mut session = Session::initiate(&mut rng, &alice, &bundle).unwrap();
        let first = session
            .encrypt(&mut rng, &bytes(&case["plaintext"]))
            .unwrap();
        assert_eq!(rng.mismatch, None);
        assert_eq!(rng.remaining(), 0);
        assert_eq!(first, bytes(&case["first_message"]));
        let message = PreKeyMessage::decode(&first).unwrap();
        let with_one_time = case["with_one_time_prekey"].as_bool().unwrap();
        let (_, plaintext) =
            Session::accept(&bob, &signed, with_one_time.then_some(&one_time), &message).unwrap();
        assert_eq!(plaintext, bytes(&case["plaintext"]));
    }
}

#[test]
fn conversation_vector_replays_from_the_file() {
    let v = load("conversation.json");
    let alice = IdentityKeyPair::from_secret_bytes(&bytes(&v["alice_identity_secret"])).unwrap();
    let bob = IdentityKeyPair::from_secret_bytes(&bytes(&v["bob_identity_secret"])).unwrap();
    let signed =
        SignedPreKeyPair::from_secret_bytes(&bob, &bytes(&v["bob_signed_prekey_secret"])).unwrap();
    let one_time =
        OneTimePreKeyPair::from_secret_bytes(&bytes(&v["bob_one_time_prekey_secret"])).unwrap();
    let bundle = PreKeyBundle::decode(&bytes(&v["bundle"])).unwrap();
    let mut alice_session: Option<Session> = None;
    let mut bob_session: Option<Session> = None;
    let mut wires: Vec<(String, Vec<u8>)> = Vec::new();
    let mut checked = 0;
    for event in v["events"].as_array().unwrap() {
        let mut rng = ReplayRng::default();
        if let Some(draws) = event["random"].as_array() {
            rng.push_hex(draws.iter().map(|d| d.as_str().unwrap()));
        }
        let by_alice = event["by"] == "alice";
        match event["event"].as_str().unwrap() {
            "initiate" => {
                alice_session = Some(Session::initiate(&mut rng, &alice, &bundle).unwrap());
            }
            "send" => {
                let session = if by_alice {
                    &mut alice_session
                } else {
                    &mut bob_session
                };
                let wire = session
                    .as_mut()
                    .unwrap()
                    .encrypt(&mut rng, &bytes(&event["plaintext"]))
                    .unwrap();
                assert_eq!(wire, bytes(&event["wire"]), "{event}");
                wires.push((event["message"].as_str().unwrap().to_owned(), wire));
            }
            "receive" => {
                let wire = match event["message"].as_str() {
                    Some(label) => wires.iter().find(|(l, _)| l == label).unwrap().1.clone(),
                    None => bytes(&event["wire"]),
                };
                let result = if by_alice {
                    alice_session.as_mut().unwrap().decrypt(&wire)
                } else if let Some(s) = bob_session.as_mut() {
                    s.decrypt(&wire)
                } else {
                    let m = PreKeyMessage::decode(&wire).unwrap();
                    Session::accept(&bob, &signed, Some(&one_time), &m).map(|(s, p)| {
                        bob_session = Some(s);
                        p
                    })
                };
                match result {
                    Ok(p) => assert_eq!(event["expect"]["plaintext"], hex::encode(p), "{event}"),
                    Err(e) => assert_eq!(event["expect"]["error"], format!("{e:?}"), "{event}"),
                }
                checked += 1;
            }
            other => panic!("unknown event {other}"),
        }
        assert_eq!(rng.mismatch, None, "{event}");
        assert_eq!(rng.remaining(), 0, "{event}");
    }
    assert_eq!(wires.len(), 24);
    assert!(checked >= 24);
}

#[test]
fn safety_number_vectors_follow_the_spec_formula() {
    let fingerprint = |party: &Value| -> Vec<u8> {
        let user = party["user_id"].as_str().unwrap().as_bytes();
        let mut keys: Vec<Vec<u8>> = party["signing_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(bytes)
            .collect();
        keys.sort();
        keys.dedup();
        let mut hash = Sha512::new();
        hash.update(b"Ward v1 safety number\0");
        hash.update((user.len() as u16).to_be_bytes());
        hash.update(user);
        hash.update((keys.len() as u16).to_be_bytes());
        keys.iter().for_each(|k| hash.update(k));
        hash.finalize()[..32].to_vec()
    };
    for case in load("safety_number.json")["cases"].as_array().unwrap() {
        let mut halves = [fingerprint(&case["local"]), fingerprint(&case["remote"])];
        halves.sort();
        let mut digits = String::new();
        for half in &halves {
            for chunk in half[..30].chunks(5) {
                let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
                digits.push_str(&format!("{:05}", value % 100_000));
            }
        }
        assert_eq!(case["digits"], digits);
        let mut qr = vec![1u8];
        qr.extend_from_slice(&halves[0]);
        qr.extend_from_slice(&halves[1]);
        assert_eq!(bytes(&case["qr_payload"]), qr);
    }
}

/// Decodes one frame of `kind` from the file and gives back its body
/// re-encoded, and the frame `frame::encode` makes of it; `None` for an
/// unknown kind.
fn reencode_frame(kind: &str, frame: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    use ward_proto::Message;
    use ward_proto::frame::{self, MAX_FRAME_LEN};
    use ward_proto::relay_v1::{Push, Request, Response};
    fn both<M: Message + Default>(frame: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let message = frame::decode::<M>(frame, MAX_FRAME_LEN).unwrap();
        (message.encode_to_vec(), frame::encode(&message))
    }
    match kind {
        "Request" => Some(both::<Request>(frame)),
        "Response" => Some(both::<Response>(frame)),
        "Push" => Some(both::<Push>(frame)),
        _ => None,
    }
}

#[test]
fn relay_vectors_follow_spec_08_frames_and_transcripts() {
    use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
    use ward_proto::frame::{self, FrameError, MAX_FRAME_LEN};
    use ward_proto::relay_v1::{ErrorCode, Request, Response, request, response};

    let v = load("relay.json");
    let auth = &v["authentication"];
    let enroll = &v["enrollment"];

    // Frames: u32be(len) || body, and the body is prost's canonical encoding.
    let frames = v["frames"].as_array().unwrap();
    for f in frames {
        let body = bytes(&f["body"]);
        let wire = bytes(&f["frame"]);
        let mut expected = (body.len() as u32).to_be_bytes().to_vec();
        expected.extend_from_slice(&body);
        assert_eq!(wire, expected, "{}", f["description"]);
        let (reencoded, reframed) =
            reencode_frame(f["kind"].as_str().unwrap(), &wire).expect("a known frame kind");
        assert_eq!(reencoded, body, "{}", f["description"]);
        assert_eq!(reframed, wire, "{}", f["description"]);
    }
    // The frames that carry the authentication values carry those of the file.
    let mut carried = 0;
    for f in frames {
        let wire = bytes(&f["frame"]);
        match f["kind"].as_str().unwrap() {
            "Request" => match frame::decode::<Request>(&wire, MAX_FRAME_LEN).unwrap().body {
                Some(request::Body::Challenge(_)) => assert_eq!(wire, [0, 0, 0, 2, 0x0a, 0]),
                Some(request::Body::Authenticate(a)) => {
                    assert_eq!(wire.len(), 106);
                    assert_eq!(a.device_key, bytes(&auth["device_key"]));
                    assert_eq!(a.signature, bytes(&auth["signature"]));
                    carried += 1;
                }
                Some(request::Body::Enroll(e)) => {
                    assert_eq!(e.token, enroll["token"].as_str().unwrap());
                    assert_eq!(e.identity, bytes(&enroll["identity"]));
                    assert_eq!(e.signature, bytes(&enroll["signature"]));
                    carried += 1;
                }
                _ => {}
            },
            "Response" => {
                if let Some(response::Body::Challenge(c)) =
                    frame::decode::<Response>(&wire, MAX_FRAME_LEN)
                        .unwrap()
                        .body
                {
                    assert_eq!(wire.len(), 40);
                    assert_eq!(c.nonce, bytes(&auth["nonce"]));
                    carried += 1;
                }
            }
            _ => {}
        }
    }
    assert_eq!(carried, 3);

    // Refused frames: the frame error, and the relay's code (spec/08, Frames).
    let refused = &v["refused_frames"]["cases"];
    for case in refused.as_array().unwrap() {
        let max = u32::try_from(case["max_len"].as_u64().unwrap()).unwrap();
        assert_eq!(max, MAX_FRAME_LEN);
        let (error, code) = match frame::decode::<Request>(&bytes(&case["frame"]), max) {
            Ok(r) => {
                assert_eq!(r.body, None, "{}", case["description"]);
                (Value::Null, "UNKNOWN_REQUEST")
            }
            Err(FrameError::TooLarge { .. }) => ("TooLarge".into(), "FRAME_TOO_LARGE"),
            Err(FrameError::Truncated) => ("Truncated".into(), "MALFORMED_FRAME"),
            Err(FrameError::Malformed) => ("Malformed".into(), "MALFORMED_FRAME"),
        };
        assert_eq!(case["frame_error"], error, "{}", case["description"]);
        assert_eq!(case["relay_code"], code, "{}", case["description"]);
        assert!(ErrorCode::from_str_name(&format!("ERROR_CODE_{code}")).is_some());
    }

    // Ed25519 (RFC 8032) is deterministic: the seed gives the key and the
    // very signature, which verifies strictly.
    let check_signature = |seed: &[u8], key: &[u8], transcript: &[u8], signature: &[u8]| {
        let signing = SigningKey::from_bytes(&seed.try_into().unwrap());
        assert_eq!(signing.verifying_key().to_bytes(), key);
        assert_eq!(signing.sign(transcript).to_bytes(), signature);
        VerifyingKey::from_bytes(&key.try_into().unwrap())
            .unwrap()
            .verify_strict(transcript, &Signature::from_slice(signature).unwrap())
            .unwrap();
    };

    // auth_transcript, concatenated as spec/08 writes it.
    let mut transcript = b"Ward v1 relay authentication\0".to_vec();
    assert_eq!(transcript.len(), 29);
    for field in ["exporter", "nonce", "device_key"] {
        let value = bytes(&auth[field]);
        assert_eq!(value.len(), 32, "{field}");
        transcript.extend_from_slice(&value);
    }
    assert_eq!(transcript.len(), 125);
    assert_eq!(transcript, bytes(&auth["transcript"]));
    check_signature(
        &bytes(&auth["device_seed"]),
        &bytes(&auth["device_key"]),
        &transcript,
        &bytes(&auth["signature"]),
    );

    // The token's form, its hash, and enroll_transcript.
    let token = enroll["token"].as_str().unwrap();
    let digits = token.strip_prefix("ward-enroll-").unwrap();
    assert_eq!(token.len(), 76);
    assert!(
        digits
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    );
    let token_hash = Sha256::digest(token.as_bytes()).to_vec();
    assert_eq!(token_hash, bytes(&enroll["token_sha256"]));
    let identity = bytes(&enroll["identity"]);
    assert_eq!(identity.len(), 128);
    let mut transcript = b"Ward v1 relay enrollment\0".to_vec();
    assert_eq!(transcript.len(), 25);
    transcript.extend_from_slice(&bytes(&enroll["exporter"]));
    transcript.extend_from_slice(&bytes(&enroll["nonce"]));
    transcript.extend_from_slice(&token_hash);
    transcript.extend_from_slice(&identity);
    assert_eq!(transcript.len(), 249);
    assert_eq!(transcript, bytes(&enroll["transcript"]));
    // The identity is the fixed form of the listed secret, and valid (KEY-3).
    let secret = bytes(&enroll["identity_secret"]);
    let pair = IdentityKeyPair::from_secret_bytes(&secret).unwrap();
    assert_eq!(pair.public().to_bytes().to_vec(), identity);
    assert!(ward_core::DeviceIdentity::from_bytes(&identity).is_ok());
    check_signature(
        &secret[1..33],
        &identity[..32],
        &transcript,
        &bytes(&enroll["signature"]),
    );
}
