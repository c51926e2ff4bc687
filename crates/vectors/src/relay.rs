//! spec/vectors/relay.json: relay frames with their bodies, frames a reader
//! refuses, and the authentication and enrollment transcripts
//! (spec/08-relay-protocol.md).

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::{Value, json};
use sha2::Sha256;
use ward_core::IdentityKeyPair;
use ward_proto::Message;
use ward_proto::frame::{self, FrameError, MAX_FRAME_LEN};
use ward_proto::relay_v1 as wire;

use crate::{h, random};

/// The name of a `ward_proto::frame` error, as the relay vectors give it.
fn frame_error_name(error: FrameError) -> &'static str {
    match error {
        FrameError::TooLarge { .. } => "TooLarge",
        FrameError::Truncated => "Truncated",
        FrameError::Malformed => "Malformed",
    }
}

/// An error code by its name in spec/08, "Errors" (without `ERROR_CODE_`).
fn code_name(code: wire::ErrorCode) -> &'static str {
    let name = code.as_str_name();
    name.strip_prefix("ERROR_CODE_").unwrap_or(name)
}

/// One accepted frame: its kind, a description, the body and the frame.
fn relay_frame<M: Message>(kind: &str, description: &str, message: &M) -> Value {
    let body = message.encode_to_vec();
    let frame = frame::encode(message);
    let mut expected = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    expected.extend_from_slice(&body);
    assert_eq!(frame, expected, "frame layout differs from spec/08");
    json!({"kind": kind, "description": description, "body": h(&body), "frame": h(&frame)})
}

/// The relay protocol's frames and authentication transcripts
/// (spec/08-relay-protocol.md, "Frames" and "Authentication").
pub(crate) fn relay() -> Value {
    use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
    use sha2::Digest;
    use wire::{request, response};

    let mut rng = ChaCha20Rng::seed_from_u64(0x72656c6179);

    // Authenticate: an enrolled device (Bob's) signs on one connection.
    let auth_exporter = random::<32>(&mut rng);
    let auth_nonce = random::<32>(&mut rng);
    let device_seed = random::<32>(&mut rng);
    let device = SigningKey::from_bytes(&device_seed);
    let device_key = device.verifying_key().to_bytes();
    let auth_transcript =
        ward_proto::auth::authentication_transcript(&auth_exporter, &auth_nonce, &device_key);
    assert_eq!(auth_transcript.len(), 125);
    let auth_signature = device.sign(&auth_transcript).to_bytes();
    VerifyingKey::from_bytes(&device_key)
        .unwrap()
        .verify_strict(&auth_transcript, &auth_signature.into())
        .unwrap();

    // Enroll: a new device (Alice's) joins with a token on another.
    let enroll_exporter = random::<32>(&mut rng);
    let enroll_nonce = random::<32>(&mut rng);
    let token = format!("ward-enroll-{}", h(random::<32>(&mut rng)));
    let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let identity = IdentityKeyPair::generate(&mut rng);
    let identity_bytes = identity.public().to_bytes();
    let enroll_transcript = ward_proto::auth::enrollment_transcript(
        &enroll_exporter,
        &enroll_nonce,
        &token,
        &identity_bytes,
    );
    assert_eq!(enroll_transcript.len(), 249);
    let enroll_signature = identity.sign(&enroll_transcript);
    let identity_secret = identity.to_secret_bytes();
    let enroll_seed = <[u8; 32]>::try_from(&identity_secret[1..33]).unwrap();
    assert_eq!(
        SigningKey::from_bytes(&enroll_seed)
            .sign(&enroll_transcript)
            .to_bytes(),
        enroll_signature,
        "ward-core signs differently from Ed25519 over the seed"
    );
    VerifyingKey::from_bytes(identity.public().signing_key())
        .unwrap()
        .verify_strict(&enroll_transcript, &enroll_signature.into())
        .unwrap();

    // One message from Alice to Bob, through the relay.
    let message_id = random::<16>(&mut rng).to_vec();
    let ciphertext = random::<40>(&mut rng).to_vec();
    let alice_key = identity.public().signing_key().to_vec();
    let enqueued_at_ms = 1_700_000_000_000u64;
    let ttl_ms = 7 * 24 * 3_600_000u64;

    let req = |body| wire::Request { body: Some(body) };
    let resp = |body| wire::Response { body: Some(body) };
    let frames = vec![
        relay_frame(
            "Request",
            "Request.challenge: ChallengeRequest{} (spec/08, Frames, the first example)",
            &req(request::Body::Challenge(wire::ChallengeRequest {})),
        ),
        relay_frame(
            "Response",
            "Response.challenge: Challenge{nonce: authentication.nonce}",
            &resp(response::Body::Challenge(wire::Challenge {
                nonce: auth_nonce.to_vec(),
            })),
        ),
        relay_frame(
            "Request",
            "Request.authenticate: Authenticate{device_key: authentication.device_key, signature: authentication.signature}",
            &req(request::Body::Authenticate(wire::Authenticate {
                device_key: device_key.to_vec(),
                signature: auth_signature.to_vec(),
            })),
        ),
        relay_frame(
            "Request",
            "Request.enroll: Enroll{token: enrollment.token, identity: enrollment.identity, signature: enrollment.signature}",
            &req(request::Body::Enroll(wire::Enroll {
                token: token.clone(),
                identity: identity_bytes.to_vec(),
                signature: enroll_signature.to_vec(),
            })),
        ),
        relay_frame(
            "Response",
            "Response.authenticated after that Enroll: Authenticated{user_id: \"alice@clinic.example\", device_key: the identity's signing_key, one_time_prekeys: 0, prekeys_low: true, signed_prekeys_missing: true}",
            &resp(response::Body::Authenticated(wire::Authenticated {
                user_id: "alice@clinic.example".into(),
                device_key: alice_key.clone(),
                one_time_prekeys: 0,
                prekeys_low: true,
                signed_prekeys_missing: true,
            })),
        ),
        relay_frame(
            "Request",
            "Request.send: Send{message_id, user_ids: [\"bob@clinic.example\"], envelopes: [Envelope{device_key: authentication.device_key, ciphertext: 40 opaque bytes}], ttl_ms: 604800000}",
            &req(request::Body::Send(wire::Send {
                message_id: message_id.clone(),
                user_ids: vec!["bob@clinic.example".into()],
                envelopes: vec![wire::Envelope {
                    device_key: device_key.to_vec(),
                    ciphertext: ciphertext.clone(),
                }],
                ttl_ms,
                ..Default::default()
            })),
        ),
        relay_frame(
            "Response",
            "Response.sent: SendReceipt{duplicate: false, enqueued_at_ms: 1700000000000, expires_at_ms: 1700604800000}",
            &resp(response::Body::Sent(wire::SendReceipt {
                duplicate: false,
                enqueued_at_ms,
                expires_at_ms: enqueued_at_ms + ttl_ms,
            })),
        ),
        relay_frame(
            "Push",
            "Push.delivery of that send to Bob's device: Delivery{seq: 1, sender_device: the enrolled identity's signing_key, sender_user: \"alice@clinic.example\", message_id, enqueued_at_ms, expires_at_ms, ciphertext}",
            &wire::Push {
                body: Some(wire::push::Body::Delivery(wire::Delivery {
                    seq: 1,
                    sender_device: alice_key,
                    sender_user: "alice@clinic.example".into(),
                    message_id: message_id.clone(),
                    enqueued_at_ms,
                    expires_at_ms: enqueued_at_ms + ttl_ms,
                    ciphertext,
                })),
            },
        ),
        relay_frame(
            "Request",
            "Request.ack: Ack{message_ids: [that message_id]}",
            &req(request::Body::Ack(wire::Ack {
                message_ids: vec![message_id],
            })),
        ),
        relay_frame(
            "Response",
            "Response.acked: Acked{deleted: 1, unknown_ids: []}",
            &resp(response::Body::Acked(wire::Acked {
                deleted: 1,
                unknown_ids: Vec::new(),
            })),
        ),
        relay_frame(
            "Response",
            "Response.error: Error{code: AUTH_FAILED (5), message: \"bad signature\"}",
            &resp(response::Body::Error(wire::Error {
                code: wire::ErrorCode::AuthFailed.into(),
                message: "bad signature".into(),
                current_devices: Vec::new(),
                retry_after_ms: 0,
            })),
        ),
    ];

    // Frames a reader refuses, or decodes to a Request without a body.
    let challenge = frame::encode(&req(request::Body::Challenge(wire::ChallengeRequest {})));
    let mut trailing = challenge.clone();
    trailing.push(0x00);
    let cases: [(&str, Vec<u8>, wire::ErrorCode); 7] = [
        (
            "two bytes: the request stream ends inside the length prefix",
            vec![0x00, 0x00],
            wire::ErrorCode::MalformedFrame,
        ),
        (
            "length MAX_FRAME_LEN + 1, no body: refused from the header alone",
            (MAX_FRAME_LEN + 1).to_be_bytes().to_vec(),
            wire::ErrorCode::FrameTooLarge,
        ),
        (
            "the ChallengeRequest frame without its last byte",
            challenge[..challenge.len() - 1].to_vec(),
            wire::ErrorCode::MalformedFrame,
        ),
        (
            "the ChallengeRequest frame and one more byte before the end of the request stream",
            trailing,
            wire::ErrorCode::MalformedFrame,
        ),
        (
            "a body that is not a valid Request: field 1 announces 5 bytes, 1 follows",
            vec![0x00, 0x00, 0x00, 0x03, 0x0a, 0x05, 0x00],
            wire::ErrorCode::MalformedFrame,
        ),
        (
            "a Request with a field no version of the protocol uses (field 2047, empty): decodes, without a body",
            vec![0x00, 0x00, 0x00, 0x03, 0xfa, 0x7f, 0x00],
            wire::ErrorCode::UnknownRequest,
        ),
        (
            "a zero-length body: decodes, without a body",
            vec![0x00, 0x00, 0x00, 0x00],
            wire::ErrorCode::UnknownRequest,
        ),
    ];
    let refused: Vec<Value> = cases
        .into_iter()
        .map(|(description, bytes, relay_code)| {
            let frame_error = match frame::decode::<wire::Request>(&bytes, MAX_FRAME_LEN) {
                Ok(request) => {
                    assert_eq!(request.body, None, "{description}");
                    Value::Null
                }
                Err(e) => json!(frame_error_name(e)),
            };
            json!({
                "description": description,
                "frame": h(&bytes),
                "max_len": MAX_FRAME_LEN,
                "frame_error": frame_error,
                "relay_code": code_name(relay_code),
            })
        })
        .collect();

    json!({
        "description": "Relay frames u32be(len) || body with their protobuf bodies (package ward.relay.v1), frames a reader refuses, and the authentication and enrollment transcripts with their Ed25519 signatures (spec/08-relay-protocol.md). Inputs are random values from a seeded RNG; exporter and nonce stand for a connection's TLS exporter and the relay's challenge.",
        "frames": frames,
        "refused_frames": {
            "description": "Each frame is the whole of a request stream, read as one Request frame with the limit max_len (MAX_FRAME_LEN). frame_error: the frame error of spec/08, Frame errors (RLY-41), that frame::decode reports: TooLarge, Truncated or Malformed; null: the frame decodes, to a Request without a body. relay_code: the Error.code the relay answers on that stream (spec/08, Frames, steps 1 to 6), without the ERROR_CODE_ prefix.",
            "cases": refused,
        },
        "authentication": {
            "description": "auth_transcript = \"Ward v1 relay authentication\\0\" || exporter || nonce || device_key (125 bytes); signature = Ed25519 (RFC 8032) of the transcript under device_seed, verified strictly under device_key",
            "exporter": h(auth_exporter),
            "nonce": h(auth_nonce),
            "device_seed": h(device_seed),
            "device_key": h(device_key),
            "transcript": h(&auth_transcript),
            "signature": h(auth_signature),
        },
        "enrollment": {
            "description": "enroll_transcript = \"Ward v1 relay enrollment\\0\" || exporter || nonce || SHA-256(token) || identity (249 bytes); identity is the fixed form (signing_key || dh_key || dh_key_signature) of the identity whose storage form is identity_secret (format byte, Ed25519 seed, X25519 secret; spec/02); signature = Ed25519 of the transcript under that seed, verified strictly under the identity's signing_key",
            "exporter": h(enroll_exporter),
            "nonce": h(enroll_nonce),
            "token": token,
            "token_sha256": h(token_hash),
            "identity_secret": h(*identity_secret),
            "identity": h(identity_bytes),
            "transcript": h(&enroll_transcript),
            "signature": h(enroll_signature),
        },
    })
}
