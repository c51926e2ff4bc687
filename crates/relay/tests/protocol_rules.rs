//! The rules of spec/08 that the conversation tests (`relay.rs`) do not
//! reach: connection states and their close codes, nonces, enrollment
//! checks, the send rule, TTLs, `Fetch` paging, the directory, prekey
//! uploads, acknowledgments, request streams, the rate limit, tree heads
//! and metrics. Everything goes over QUIC on 127.0.0.1 through the relay of
//! `common`; ciphertexts are opaque bytes, since the relay never looks
//! inside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::{
    Device, TestRelay, ack, audit, code_of, enroll_bare, enroll_bare_as, eventually, fetch, now_ms,
    queue_len, refused, stale_lists, test_limits,
};
use prost::Message;
use ward_audit::{AuditEntry, EventKind};
use ward_client::wire::{self, ErrorCode, request::Body as Req, response::Body as Resp};
use ward_client::{ClientError, RelayConnection};
use ward_core::{IdentityKeyPair, OneTimePreKeyPair, SignedPreKeyPair};
use ward_relay::server::{Limits, close_code};
use ward_relay::storage::{DeviceKey, Storage};

// ----- helpers -----

fn audit_id(key: [u8; 32]) -> Option<ward_audit::DeviceId> {
    DeviceKey(key).audit_id()
}

fn detail(e: &AuditEntry) -> &str {
    e.detail.as_ref().map_or("", |d| d.as_str())
}

fn exporter(c: &RelayConnection) -> [u8; 32] {
    let mut out = [0u8; 32];
    c.quic()
        .export_keying_material(&mut out, ward_proto::auth::EXPORTER_LABEL, b"")
        .unwrap();
    out
}

async fn challenge(c: &RelayConnection) -> [u8; 32] {
    match c
        .request(Req::Challenge(wire::ChallengeRequest {}))
        .await
        .unwrap()
    {
        Resp::Challenge(ch) => ch.nonce[..].try_into().expect("a 32-byte nonce"),
        other => panic!("not a challenge: {other:?}"),
    }
}

/// An `Authenticate` for `device_key`, signed by `signer` over this
/// connection's transcript with `nonce`.
fn authenticate(
    c: &RelayConnection,
    nonce: &[u8; 32],
    device_key: [u8; 32],
    signer: &IdentityKeyPair,
) -> Req {
    let transcript = ward_proto::auth::authentication_transcript(&exporter(c), nonce, &device_key);
    Req::Authenticate(wire::Authenticate {
        device_key: device_key.to_vec(),
        signature: signer.sign(&transcript).to_vec(),
    })
}

/// An `Enroll` of `identity` with `token`, signed by `signer`.
fn enroll(
    c: &RelayConnection,
    nonce: &[u8; 32],
    token: &str,
    identity: &[u8],
    signer: &IdentityKeyPair,
) -> Req {
    let transcript = ward_proto::auth::enrollment_transcript(&exporter(c), nonce, token, identity);
    Req::Enroll(wire::Enroll {
        token: token.to_owned(),
        identity: identity.to_vec(),
        signature: signer.sign(&transcript).to_vec(),
    })
}

/// The application close code the relay closed `c` with, within `within`.
async fn closed_with(c: &RelayConnection, within: Duration) -> u32 {
    let error = tokio::time::timeout(within, c.quic().closed())
        .await
        .expect("the relay closed the connection in time");
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => {
            eprintln!("closed: {close}");
            u32::try_from(close.error_code.into_inner()).unwrap()
        }
        other => panic!("closed otherwise: {other}"),
    }
}

fn send_request(id: [u8; 16], users: &[&str], to: &[[u8; 32]], ttl_ms: u64) -> Req {
    Req::Send(wire::Send {
        message_id: id.to_vec(),
        user_ids: users.iter().map(|u| (*u).to_owned()).collect(),
        envelopes: to
            .iter()
            .map(|key| wire::Envelope {
                device_key: key.to_vec(),
                ciphertext: vec![0xc1; 24],
            })
            .collect(),
        ttl_ms,
        ..Default::default()
    })
}

/// Sends 24 opaque bytes to each of `to`.
async fn send(
    c: &RelayConnection,
    id: [u8; 16],
    users: &[&str],
    to: &[[u8; 32]],
    ttl_ms: u64,
) -> Result<wire::SendReceipt, ClientError> {
    match c.request(send_request(id, users, to, ttl_ms)).await? {
        Resp::Sent(receipt) => Ok(receipt),
        other => panic!("not a receipt: {other:?}"),
    }
}

async fn is_alive(c: &RelayConnection) -> bool {
    matches!(
        c.request(Req::PrekeyStatus(wire::PreKeyStatus {})).await,
        Ok(Resp::PrekeyCount(_))
    )
}

fn one_time<'a>(keys: impl IntoIterator<Item = &'a OneTimePreKeyPair>) -> Vec<wire::OneTimePreKey> {
    keys.into_iter()
        .map(|k| wire::OneTimePreKey {
            id: k.id(),
            key: k.public().encode(),
        })
        .collect()
}

async fn upload(
    c: &RelayConnection,
    signed_prekeys: Vec<u8>,
    one_time_prekeys: Vec<wire::OneTimePreKey>,
) -> Result<wire::PreKeysStored, ClientError> {
    match c
        .request(Req::UploadPrekeys(wire::UploadPreKeys {
            signed_prekeys,
            one_time_prekeys,
        }))
        .await?
    {
        Resp::PrekeysStored(s) => Ok(s),
        other => panic!("not stored: {other:?}"),
    }
}

async fn claim(
    c: &RelayConnection,
    user: &str,
    device_keys: &[Vec<u8>],
) -> Result<Vec<wire::Bundle>, ClientError> {
    match c
        .request(Req::ClaimBundles(wire::ClaimBundles {
            user_id: user.to_owned(),
            device_keys: device_keys.to_vec(),
        }))
        .await?
    {
        Resp::Bundles(b) => Ok(b.bundles),
        other => panic!("not bundles: {other:?}"),
    }
}

async fn get_devices(c: &RelayConnection, users: &[&str]) -> Result<wire::DeviceList, ClientError> {
    match c
        .request(Req::GetDevices(wire::GetDevices {
            user_ids: users.iter().map(|u| (*u).to_owned()).collect(),
        }))
        .await?
    {
        Resp::Devices(list) => Ok(list),
        other => panic!("not a device list: {other:?}"),
    }
}

// ----- connection states (RLY-11, RLY-12, RLY-13, RLY-15, RLY-17) -----

#[tokio::test]
async fn an_anonymous_connection_is_closed_at_the_auth_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_with(
        dir.path(),
        Limits {
            auth_timeout_ms: 200,
            ..test_limits()
        },
    )
    .await;
    relay.add_user("a");
    let device = enroll_bare(&relay, "a").await;

    let started = Instant::now();
    let anonymous = relay.connect().await;
    // Requests that are not attempts neither authenticate nor close it.
    assert_eq!(
        code_of(&anonymous, Req::Fetch(wire::Fetch::default())).await,
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        closed_with(&anonymous, Duration::from_secs(2)).await,
        close_code::AUTH_TIMEOUT
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    // The timeout is for anonymous connections: the authenticated one,
    // older than the deadline, carries on.
    assert!(is_alive(&device.connection).await);
}

#[tokio::test]
async fn max_auth_failures_close_the_connection_and_each_failure_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await; // max_auth_failures = 3
    relay.add_user("a");
    let known = enroll_bare(&relay, "a").await;
    let stranger = IdentityKeyPair::generate(&mut common::rng());

    let c = relay.connect().await;
    // 1. A device the relay does not know.
    let nonce = challenge(&c).await;
    let attempt = authenticate(&c, &nonce, *stranger.public().signing_key(), &stranger);
    assert_eq!(code_of(&c, attempt).await, ErrorCode::AuthFailed);
    // 2. A known device, signed by another key.
    let nonce = challenge(&c).await;
    let attempt = authenticate(&c, &nonce, known.key(), &stranger);
    assert_eq!(code_of(&c, attempt).await, ErrorCode::AuthFailed);
    // Two failures: the connection is still open.
    challenge(&c).await;
    // 3. A device key of the wrong length: the third failure closes it.
    let third = c
        .request(Req::Authenticate(wire::Authenticate {
            device_key: vec![1; 31],
            signature: vec![0; 64],
        }))
        .await;
    assert!(third.is_err());
    assert_eq!(
        closed_with(&c, Duration::from_secs(2)).await,
        close_code::AUTH_FAILURES
    );

    // Each failure was audited, with its reason; the actor device is named
    // when a 32-byte key was given, the user when the device is known.
    let failures: Vec<AuditEntry> = audit(&relay)
        .into_iter()
        .filter(|e| e.kind == EventKind::AuthFailure)
        .collect();
    let reasons: Vec<&str> = failures.iter().map(detail).collect();
    assert_eq!(reasons, ["unknown_device", "bad_signature", "bad_key"]);
    for f in &failures {
        assert_eq!(f.outcome.to_string(), "error:auth_failed");
    }
    assert_eq!(
        failures[0].actor_device,
        audit_id(*stranger.public().signing_key())
    );
    assert_eq!(failures[0].actor_user, None);
    assert_eq!(failures[1].actor_device, audit_id(known.key()));
    assert_eq!(
        failures[1].actor_user.as_ref().map(|u| u.as_str()),
        Some("a")
    );
    assert_eq!(failures[2].actor_device, None);
    // Other connections are not affected.
    assert!(is_alive(&known.connection).await);
    relay
        .connect()
        .await
        .authenticate(&known.identity)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_nonce_serves_one_attempt_and_a_new_challenge_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_with(
        dir.path(),
        Limits {
            max_auth_failures: 10,
            ..test_limits()
        },
    )
    .await;
    relay.add_user("a");
    let device = enroll_bare(&relay, "a").await;
    let other = IdentityKeyPair::generate(&mut common::rng());
    let c = relay.connect().await;

    // No challenge, no nonce: even a well-formed attempt fails.
    let attempt = authenticate(&c, &[0; 32], device.key(), &device.identity);
    assert_eq!(code_of(&c, attempt).await, ErrorCode::AuthFailed);

    // A second challenge replaces the first nonce.
    let first = challenge(&c).await;
    let second = challenge(&c).await;
    assert_ne!(first, second);
    let attempt = authenticate(&c, &first, device.key(), &device.identity);
    assert_eq!(code_of(&c, attempt).await, ErrorCode::AuthFailed);

    // A failed attempt consumes the nonce: a correct signature over the
    // same challenge is refused afterwards.
    let nonce = challenge(&c).await;
    let attempt = authenticate(&c, &nonce, device.key(), &other);
    assert_eq!(code_of(&c, attempt).await, ErrorCode::AuthFailed);
    let attempt = authenticate(&c, &nonce, device.key(), &device.identity);
    assert_eq!(code_of(&c, attempt).await, ErrorCode::AuthFailed);

    // A fresh challenge: the device authenticates.
    let nonce = challenge(&c).await;
    let attempt = authenticate(&c, &nonce, device.key(), &device.identity);
    match c.request(attempt).await.unwrap() {
        Resp::Authenticated(a) => assert_eq!(a.device_key, device.key().to_vec()),
        other => panic!("not authenticated: {other:?}"),
    }
}

/// spec/08: an attempt without a nonce is a refused attempt like any
/// other: it counts towards `max_auth_failures` and is audited with the
/// detail `no_challenge`.
#[tokio::test]
async fn attempts_without_a_challenge_count_as_failures_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await; // max_auth_failures = 3
    relay.add_user("a");
    let device = enroll_bare(&relay, "a").await;
    let c = relay.connect().await;
    for _ in 0..3 {
        let attempt = authenticate(&c, &[0; 32], device.key(), &device.identity);
        assert!(c.request(attempt).await.is_err());
    }
    assert_eq!(
        closed_with(&c, Duration::from_secs(2)).await,
        close_code::AUTH_FAILURES
    );
    let no_challenge = audit(&relay)
        .iter()
        .filter(|e| e.kind == EventKind::AuthFailure && detail(e) == "no_challenge")
        .count();
    assert_eq!(no_challenge, 3);
}

#[tokio::test]
async fn anonymous_requests_and_repeated_authentication_are_refused_without_counting() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await; // max_auth_failures = 3
    relay.add_user("a");
    let device = enroll_bare(&relay, "a").await;

    let c = relay.connect().await;
    for body in [
        Req::Fetch(wire::Fetch::default()),
        Req::PrekeyStatus(wire::PreKeyStatus {}),
        Req::GetDevices(wire::GetDevices {
            user_ids: vec!["a".to_owned()],
        }),
        send_request([1; 16], &["a"], &[device.key()], 0),
    ] {
        assert_eq!(code_of(&c, body).await, ErrorCode::Unauthenticated);
    }
    // Four refusals, none of them a failed attempt: still open.
    c.authenticate(&device.identity).await.unwrap();

    for _ in 0..2 {
        assert_eq!(
            code_of(&c, Req::Challenge(wire::ChallengeRequest {})).await,
            ErrorCode::AlreadyAuthenticated
        );
        let attempt = authenticate(&c, &[0; 32], device.key(), &device.identity);
        assert_eq!(code_of(&c, attempt).await, ErrorCode::AlreadyAuthenticated);
        let token = relay.token("a");
        let other = IdentityKeyPair::generate(&mut common::rng());
        let attempt = enroll(&c, &[0; 32], &token, &other.public().to_bytes(), &other);
        assert_eq!(code_of(&c, attempt).await, ErrorCode::AlreadyAuthenticated);
    }
    // Six refusals later the connection is still authenticated as the device.
    assert!(is_alive(&c).await);
    assert!(
        !audit(&relay)
            .iter()
            .any(|e| e.kind == EventKind::AuthFailure),
        "no refusal above is a failed authentication"
    );
}

#[tokio::test]
async fn refused_enrollments_leave_the_token_unused_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    let existing = enroll_bare(&relay, "a").await;
    let token = relay.token("a");
    let new = IdentityKeyPair::generate(&mut common::rng());
    let new_bytes = new.public().to_bytes();

    // Signed by another key than the identity's.
    let c = relay.connect().await;
    let nonce = challenge(&c).await;
    let attempt = enroll(&c, &nonce, &token, &new_bytes, &existing.identity);
    assert_eq!(code_of(&c, attempt).await, ErrorCode::AuthFailed);
    // Not a valid identity.
    let c = relay.connect().await;
    let nonce = challenge(&c).await;
    let attempt = enroll(&c, &nonce, &token, &[7; 128], &new);
    assert_eq!(code_of(&c, attempt).await, ErrorCode::EnrollmentRefused);
    // A device key enrolled before.
    let c = relay.connect().await;
    assert_eq!(
        refused(c.enroll(&token, &existing.identity).await.unwrap_err()),
        ErrorCode::EnrollmentRefused
    );
    // No challenge.
    let c = relay.connect().await;
    let attempt = enroll(&c, &[0; 32], &token, &new_bytes, &new);
    assert_eq!(code_of(&c, attempt).await, ErrorCode::AuthFailed);

    // None of them used the token.
    let c = relay.connect().await;
    let auth = c.enroll(&token, &new).await.unwrap();
    assert_eq!(auth.device_key, new.public().signing_key().to_vec());
    assert_eq!(auth.one_time_prekeys, 0);
    assert!(auth.signed_prekeys_missing);

    let entries = audit(&relay);
    let reasons: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == EventKind::AuthFailure)
        .map(detail)
        .collect();
    for reason in ["bad_signature", "bad_identity", "device_known"] {
        assert!(reasons.contains(&reason), "{reason} in {reasons:?}");
    }
    let enrollments = entries
        .iter()
        .filter(|e| e.kind == EventKind::Enrollment)
        .count();
    assert_eq!(enrollments, 2);
}

#[tokio::test]
async fn a_new_connection_of_a_device_replaces_the_old_one_and_gets_its_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    relay.add_user("b");
    let a = enroll_bare(&relay, "a").await;
    let b = enroll_bare(&relay, "b").await;

    let newer = relay.connect().await;
    newer.authenticate(&b.identity).await.unwrap();
    assert_eq!(
        closed_with(&b.connection, Duration::from_secs(2)).await,
        close_code::REPLACED
    );
    assert_eq!(relay.relay.as_ref().unwrap().online_devices(), 2);

    let id = [0x42; 16];
    send(&a.connection, id, &["b"], &[b.key()], 0)
        .await
        .unwrap();
    let mut deliveries = newer.deliveries().await.unwrap();
    let push = tokio::time::timeout(Duration::from_secs(2), deliveries.next())
        .await
        .expect("pushed on the newer connection")
        .unwrap()
        .unwrap();
    let Some(wire::push::Body::Delivery(d)) = push.body else {
        panic!("not a delivery: {push:?}")
    };
    assert_eq!(d.message_id, id.to_vec());
    assert_eq!(d.sender_device, a.key().to_vec());
    assert_eq!(d.sender_user, "a");
    assert_eq!(d.ciphertext, vec![0xc1; 24]);
}

// ----- request streams, frames and the rate limit (RLY-7, RLY-8, RLY-32) -----

#[tokio::test]
async fn a_request_is_acted_on_only_at_the_end_of_its_stream_which_must_come_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_with(
        dir.path(),
        Limits {
            idle_timeout_ms: 500,
            ..test_limits()
        },
    )
    .await;
    relay.add_user("a");
    relay.add_user("b");
    let a = enroll_bare(&relay, "a").await;
    let b = enroll_bare(&relay, "b").await;
    let frame = ward_proto::frame::encode(&wire::Request {
        body: Some(send_request([5; 16], &["b"], &[b.key()], 0)),
    });

    // The whole frame, but not the end of the stream: nothing happens.
    let (mut tx, mut rx) = a.connection.quic().open_bi().await.unwrap();
    tx.write_all(&frame).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(queue_len(&relay, b.key()), 0);
    tx.finish().unwrap();
    let answer = rx.read_to_end(1 << 20).await.unwrap();
    let answer: wire::Response = ward_proto::frame::decode(&answer, u32::MAX).unwrap();
    assert!(matches!(answer.body, Some(Resp::Sent(_))), "{answer:?}");
    assert_eq!(queue_len(&relay, b.key()), 1);

    // Part of a frame and no end of stream: MALFORMED_FRAME once
    // idle_timeout_ms has passed. Other requests keep the connection busy
    // meanwhile (an idle connection would close at that timeout).
    let started = Instant::now();
    let (mut tx, mut rx) = a.connection.quic().open_bi().await.unwrap();
    tx.write_all(&frame[..6]).await.unwrap();
    let read = rx.read_to_end(1 << 20);
    tokio::pin!(read);
    let answer = loop {
        tokio::select! {
            answer = &mut read => break answer.unwrap(),
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                assert!(is_alive(&a.connection).await);
            }
        }
    };
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let answer: wire::Response = ward_proto::frame::decode(&answer, u32::MAX).unwrap();
    match answer.body {
        Some(Resp::Error(e)) => assert_eq!(e.code(), ErrorCode::MalformedFrame),
        other => panic!("not an error: {other:?}"),
    }
    // Only its stream was refused.
    assert!(is_alive(&a.connection).await);
    assert_eq!(queue_len(&relay, b.key()), 1);
}

#[tokio::test]
async fn refused_frames_take_no_request_token() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_with(
        dir.path(),
        Limits {
            requests_per_second: 1,
            request_burst: 3,
            ..test_limits()
        },
    )
    .await;
    let c = relay.connect().await;
    for _ in 0..5 {
        let answer = c.request_raw(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        let answer: wire::Response = ward_proto::frame::decode(&answer, u32::MAX).unwrap();
        match answer.body {
            Some(Resp::Error(e)) => assert_eq!(e.code(), ErrorCode::MalformedFrame),
            other => panic!("not an error: {other:?}"),
        }
    }
    // The burst of three is intact.
    for _ in 0..3 {
        challenge(&c).await;
    }
    match c
        .request(Req::Challenge(wire::ChallengeRequest {}))
        .await
        .unwrap_err()
    {
        ClientError::Refused {
            code,
            retry_after_ms,
            ..
        } => {
            assert_eq!(code, ErrorCode::RateLimited);
            assert!((1..=1000).contains(&retry_after_ms), "{retry_after_ms}");
        }
        other => panic!("{other}"),
    }
}

// ----- sending (RLY-22, RLY-24, RLY-26) -----

#[tokio::test]
async fn the_send_rule_covers_the_addressed_users_and_the_senders_other_devices() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    for user in ["a", "b", "solo"] {
        relay.add_user(user);
    }
    let a1 = enroll_bare(&relay, "a").await;
    let a2 = enroll_bare(&relay, "a").await;
    let b1 = enroll_bare(&relay, "b").await;
    let b2 = enroll_bare(&relay, "b").await;
    let solo = enroll_bare(&relay, "solo").await;
    let c = &a1.connection;
    let mut next = 0u8;
    let mut id = || {
        next += 1;
        [next; 16]
    };
    let stale = stale_lists;

    // The sender's other device is required; the answer lists every
    // addressed user and the sender's own, the sender included.
    let current = stale(
        send(c, id(), &["b"], &[b1.key(), b2.key()], 0)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        current,
        vec![
            (
                "a".to_owned(),
                vec![a1.identity_bytes(), a2.identity_bytes()]
            ),
            (
                "b".to_owned(),
                vec![b1.identity_bytes(), b2.identity_bytes()]
            ),
        ]
    );
    // The sender itself is not a recipient.
    stale(
        send(
            c,
            id(),
            &["b"],
            &[b1.key(), b2.key(), a2.key(), a1.key()],
            0,
        )
        .await
        .unwrap_err(),
    );
    // A device named twice.
    stale(
        send(
            c,
            id(),
            &["b"],
            &[b1.key(), b2.key(), a2.key(), b1.key()],
            0,
        )
        .await
        .unwrap_err(),
    );
    // Exactly the required set, in any order; addressing one's own user
    // changes nothing; a note to one's own other devices needs no user.
    send(c, id(), &["b"], &[a2.key(), b2.key(), b1.key()], 0)
        .await
        .unwrap();
    send(c, id(), &["a", "b"], &[b1.key(), b2.key(), a2.key()], 0)
        .await
        .unwrap();
    send(c, id(), &[], &[a2.key()], 0).await.unwrap();
    assert_eq!(queue_len(&relay, b1.key()), 2);
    assert_eq!(queue_len(&relay, a2.key()), 3);

    // A revoked device is not required, and naming it is stale.
    relay
        .storage
        .revoke_device(&DeviceKey(b2.key()), None, now_ms())
        .unwrap();
    let current = stale(
        send(c, id(), &["b"], &[b1.key(), b2.key(), a2.key()], 0)
            .await
            .unwrap_err(),
    );
    assert_eq!(current[1], ("b".to_owned(), vec![b1.identity_bytes()]));
    send(c, id(), &["b"], &[b1.key(), a2.key()], 0)
        .await
        .unwrap();

    // An unknown addressed user.
    assert_eq!(
        refused(
            send(c, id(), &["b", "nobody"], &[b1.key(), a2.key()], 0)
                .await
                .unwrap_err()
        ),
        ErrorCode::NotFound
    );
    // No envelope: nothing to deliver (checked before the users exist).
    for users in [&["b"][..], &["nobody"][..], &[][..]] {
        assert_eq!(
            refused(send(c, id(), users, &[], 0).await.unwrap_err()),
            ErrorCode::InvalidArgument,
            "{users:?}"
        );
    }
    // A user's only device, addressing nobody, has no one to send to:
    // any envelope is extra.
    let current = stale(
        send(&solo.connection, id(), &[], &[b1.key()], 0)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        current,
        vec![("solo".to_owned(), vec![solo.identity_bytes()])]
    );
    assert_eq!(
        refused(send(&solo.connection, id(), &[], &[], 0).await.unwrap_err()),
        ErrorCode::InvalidArgument
    );
    // Above the limits on envelopes and user ids (256 each).
    let mut to = vec![b1.key(), a2.key()];
    to.extend((0..255u8).map(|n| [n; 32]));
    assert_eq!(
        refused(send(c, id(), &["b"], &to, 0).await.unwrap_err()),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        refused(
            send(c, id(), &["b"; 257], &[b1.key(), a2.key()], 0)
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidArgument
    );

    // Refusals stored nothing.
    assert_eq!(queue_len(&relay, b1.key()), 3);
    assert_eq!(queue_len(&relay, a2.key()), 4);
    let sends = audit(&relay)
        .iter()
        .filter(|e| e.kind == EventKind::Send)
        .count();
    assert_eq!(sends, 3 + 3 + 1 + 2);
}

/// spec/08, `Send` step 4: the user ids must be distinct.
#[tokio::test]
async fn a_send_naming_a_user_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    relay.add_user("b");
    let a = enroll_bare(&relay, "a").await;
    let b = enroll_bare(&relay, "b").await;
    assert_eq!(
        refused(
            send(&a.connection, [1; 16], &["b", "b"], &[b.key()], 0)
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(queue_len(&relay, b.key()), 0);
}

#[tokio::test]
async fn ttl_zero_means_the_default_and_above_the_maximum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limits = test_limits();
    let relay = TestRelay::start_with(dir.path(), limits.clone()).await;
    relay.add_user("a");
    relay.add_user("b");
    let a = enroll_bare(&relay, "a").await;
    let b = enroll_bare(&relay, "b").await;

    let r = send(&a.connection, [1; 16], &["b"], &[b.key()], 0)
        .await
        .unwrap();
    assert_eq!(r.expires_at_ms - r.enqueued_at_ms, limits.default_ttl_ms);
    assert_eq!(
        refused(
            send(
                &a.connection,
                [2; 16],
                &["b"],
                &[b.key()],
                limits.max_ttl_ms + 1
            )
            .await
            .unwrap_err()
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(queue_len(&relay, b.key()), 1);
    let r = send(
        &a.connection,
        [3; 16],
        &["b"],
        &[b.key()],
        limits.max_ttl_ms,
    )
    .await
    .unwrap();
    assert_eq!(r.expires_at_ms - r.enqueued_at_ms, limits.max_ttl_ms);
    let d = fetch(&b.connection, 0, 0).await;
    assert_eq!(d[1].expires_at_ms, r.expires_at_ms);
    assert_eq!(d[1].enqueued_at_ms, r.enqueued_at_ms);
}

#[tokio::test]
async fn a_copy_past_its_ttl_is_expired_audited_and_its_id_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await; // expiry sweep every 100 ms
    relay.add_user("a");
    relay.add_user("b");
    let a = enroll_bare(&relay, "a").await;
    let b = enroll_bare(&relay, "b").await;
    let b_key = b.key();
    b.connection.close().await; // offline

    let id = [9; 16];
    let receipt = send(&a.connection, id, &["b"], &[b_key], 300)
        .await
        .unwrap();
    assert!(!receipt.duplicate);
    assert_eq!(receipt.expires_at_ms - receipt.enqueued_at_ms, 300);
    assert_eq!(queue_len(&relay, b_key), 1);
    // Before its expiry, a retry is a duplicate.
    let again = send(&a.connection, id, &["b"], &[b_key], 300)
        .await
        .unwrap();
    assert!(again.duplicate);

    assert!(
        eventually(Duration::from_secs(2), || queue_len(&relay, b_key) == 0).await,
        "expired within the sweep interval"
    );
    assert!(now_ms() >= receipt.expires_at_ms, "not deleted early");
    let expired: Vec<AuditEntry> = audit(&relay)
        .into_iter()
        .filter(|e| e.kind == EventKind::Expiry)
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].target_device, audit_id(b_key));
    assert_eq!(
        expired[0].target_user.as_ref().map(|u| u.as_str()),
        Some("b")
    );
    assert_eq!(expired[0].message_id.map(|m| m.0), Some(id));
    assert_eq!(expired[0].size, Some(24));

    // The idempotency record went with the last copy: the id is new again.
    let later = send(&a.connection, id, &["b"], &[b_key], 0).await.unwrap();
    assert!(!later.duplicate);
    assert_eq!(queue_len(&relay, b_key), 1);
}

// ----- delivery (RLY-29, RLY-30) -----

#[tokio::test]
async fn fetch_pages_by_after_seq_and_caps_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_with(
        dir.path(),
        Limits {
            max_fetch: 3,
            ..test_limits()
        },
    )
    .await;
    relay.add_user("a");
    relay.add_user("b");
    let a = enroll_bare(&relay, "a").await;
    let b = enroll_bare(&relay, "b").await;
    for n in 1..=5u8 {
        send(&a.connection, [n; 16], &["b"], &[b.key()], 0)
            .await
            .unwrap();
    }
    let ids =
        |page: &[wire::Delivery]| -> Vec<u8> { page.iter().map(|d| d.message_id[0]).collect() };

    // limit 0 is 100, capped at max_fetch.
    let all = fetch(&b.connection, 0, 0).await;
    assert_eq!(ids(&all), [1, 2, 3]);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(ids(&fetch(&b.connection, 0, 100).await), [1, 2, 3]);
    // Paging with the last seq received.
    let page = fetch(&b.connection, 0, 2).await;
    assert_eq!(ids(&page), [1, 2]);
    let page = fetch(&b.connection, page[1].seq, 2).await;
    assert_eq!(ids(&page), [3, 4]);
    let page = fetch(&b.connection, page[1].seq, 2).await;
    assert_eq!(ids(&page), [5]);
    assert!(fetch(&b.connection, page[0].seq, 0).await.is_empty());
    // Fetching neither removes nor marks.
    assert_eq!(queue_len(&relay, b.key()), 5);
    assert_eq!(ids(&fetch(&b.connection, 0, 1).await), [1]);
    let fetched = audit(&relay)
        .iter()
        .filter(|e| e.kind == EventKind::Delivery && detail(e) == "fetched")
        .count();
    assert_eq!(fetched, 3 + 3 + 2 + 2 + 1 + 1);
}

#[tokio::test]
async fn a_fetch_answer_fits_in_one_frame_of_max_frame_len() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_frame_len: 64 * 1024,
        max_ciphertext_len: 30 * 1024,
        ..test_limits()
    };
    let relay = TestRelay::start_with(dir.path(), limits.clone()).await;
    relay.add_user("a");
    relay.add_user("b");
    let a = enroll_bare(&relay, "a").await;
    let b = enroll_bare(&relay, "b").await;
    for n in 1..=4u8 {
        let request = Req::Send(wire::Send {
            message_id: vec![n; 16],
            user_ids: vec!["b".to_owned()],
            envelopes: vec![wire::Envelope {
                device_key: b.key().to_vec(),
                ciphertext: vec![n; 30 * 1024],
            }],
            ttl_ms: 0,
            ..Default::default()
        });
        assert!(matches!(
            a.connection.request(request).await.unwrap(),
            Resp::Sent(_)
        ));
    }
    let mut after = 0;
    let mut got = Vec::new();
    while got.len() < 4 {
        let page = fetch(&b.connection, after, 0).await;
        assert!(!page.is_empty(), "at least one message per answer");
        assert!(page.len() < 4, "four would not fit in one frame");
        let body = wire::Response {
            body: Some(Resp::Messages(wire::Messages {
                messages: page.clone(),
            })),
        };
        assert!(body.encoded_len() <= limits.max_frame_len as usize);
        after = page.last().unwrap().seq;
        got.extend(page.into_iter().map(|d| d.message_id[0]));
    }
    assert_eq!(got, [1, 2, 3, 4]);
}

#[tokio::test]
async fn an_ack_deletes_every_copy_of_the_id_in_the_devices_own_queue_only() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    for user in ["a", "b", "c", "d"] {
        relay.add_user(user);
    }
    let a = enroll_bare(&relay, "a").await;
    let b = enroll_bare(&relay, "b").await;
    let c = enroll_bare(&relay, "c").await;
    let d = enroll_bare(&relay, "d").await;
    // Two senders happen to use the same id; d holds a copy too.
    let id = [0x77; 16];
    send(&a.connection, id, &["b", "d"], &[b.key(), d.key()], 0)
        .await
        .unwrap();
    send(&c.connection, id, &["b"], &[b.key()], 0)
        .await
        .unwrap();
    assert_eq!(queue_len(&relay, b.key()), 2);

    let acked = ack(&b.connection, &[id]).await;
    assert_eq!(acked.deleted, 2);
    assert!(acked.unknown_ids.is_empty());
    assert_eq!(queue_len(&relay, b.key()), 0);
    assert_eq!(queue_len(&relay, d.key()), 1, "d's copy is d's");
    let acked = ack(&b.connection, &[id]).await;
    assert_eq!(acked.deleted, 0);
    assert_eq!(acked.unknown_ids, vec![id.to_vec()]);

    let acks: Vec<AuditEntry> = audit(&relay)
        .into_iter()
        .filter(|e| e.kind == EventKind::Acknowledgment)
        .collect();
    assert_eq!(acks.len(), 2);
    for e in &acks {
        assert_eq!(e.actor_device, audit_id(b.key()));
        assert_eq!(e.message_id.map(|m| m.0), Some(id));
    }
    let mut senders: Vec<_> = acks.iter().map(|e| e.target_device.clone()).collect();
    senders.sort();
    let mut expected = vec![audit_id(a.key()), audit_id(c.key())];
    expected.sort();
    assert_eq!(senders, expected);

    // Malformed acknowledgments.
    let short = Req::Ack(wire::Ack {
        message_ids: vec![vec![1; 15]],
    });
    assert_eq!(
        code_of(&b.connection, short).await,
        ErrorCode::InvalidArgument
    );
    let many = Req::Ack(wire::Ack {
        message_ids: vec![vec![1; 16]; 1001],
    });
    assert_eq!(
        code_of(&b.connection, many).await,
        ErrorCode::InvalidArgument
    );
}

// ----- directory (RLY-16, RLY-18, RLY-19, RLY-21) -----

#[tokio::test]
async fn get_devices_lists_active_devices_in_enrollment_order() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("ward.7");
    relay.add_user("other");
    // Enrolled in descending key order, so that key order and enrollment
    // order disagree.
    let mut identities: Vec<IdentityKeyPair> = (0..3)
        .map(|_| IdentityKeyPair::generate(&mut common::rng()))
        .collect();
    identities.sort_by_key(|i| std::cmp::Reverse(*i.public().signing_key()));
    let mut devices = Vec::new();
    for identity in identities {
        devices.push(enroll_bare_as(&relay, "ward.7", identity).await);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let other = enroll_bare(&relay, "other").await;
    relay
        .storage
        .revoke_device(&DeviceKey(devices[1].key()), None, now_ms())
        .unwrap();

    let list = get_devices(&other.connection, &["other", "ward.7"])
        .await
        .unwrap();
    let listed: Vec<(&str, Vec<Vec<u8>>)> = list
        .users
        .iter()
        .map(|u| {
            (
                u.user_id.as_str(),
                u.devices.iter().map(|d| d.identity.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("other", vec![other.identity_bytes()]),
            (
                "ward.7",
                vec![devices[0].identity_bytes(), devices[2].identity_bytes()]
            ),
        ]
    );

    let c = &other.connection;
    assert_eq!(
        refused(get_devices(c, &["other", "nobody"]).await.unwrap_err()),
        ErrorCode::NotFound
    );
    let long = "x".repeat(65);
    for bad in ["", "no spaces", long.as_str()] {
        assert_eq!(
            refused(get_devices(c, &[bad]).await.unwrap_err()),
            ErrorCode::InvalidArgument,
            "{bad:?}"
        );
    }
    assert_eq!(
        refused(get_devices(c, &["other"; 257]).await.unwrap_err()),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        get_devices(c, &["other"; 256]).await.unwrap().users.len(),
        256
    );
}

#[tokio::test]
async fn claim_bundles_hands_out_only_active_devices_of_the_named_user() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    for user in ["a", "b", "c"] {
        relay.add_user(user);
    }
    let requester = enroll_bare(&relay, "a").await;
    let b1 = Device::enroll(&relay, "b").await;
    let b2 = enroll_bare(&relay, "b").await; // no prekeys uploaded
    let b3 = Device::enroll(&relay, "b").await;
    let c1 = Device::enroll(&relay, "c").await;
    relay
        .storage
        .revoke_device(&DeviceKey(b3.key()), None, now_ms())
        .unwrap();
    let c = &requester.connection;
    let count = |key: [u8; 32]| {
        relay
            .storage
            .one_time_prekey_count(&DeviceKey(key))
            .unwrap()
    };

    // Another user's device, an unknown key, a revoked device; with a
    // good key alongside.
    for keys in [
        vec![c1.key().to_vec()],
        vec![b1.key().to_vec(), [9; 32].to_vec()],
        vec![b3.key().to_vec()],
    ] {
        assert_eq!(
            refused(claim(c, "b", &keys).await.unwrap_err()),
            ErrorCode::NotFound
        );
    }
    assert_eq!(
        refused(claim(c, "nobody", &[]).await.unwrap_err()),
        ErrorCode::NotFound
    );
    assert_eq!(
        refused(claim(c, "b", &[vec![1; 31]]).await.unwrap_err()),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        refused(claim(c, "not valid", &[]).await.unwrap_err()),
        ErrorCode::InvalidArgument
    );
    let too_many: Vec<Vec<u8>> = (0..257u16).map(|_| b1.key().to_vec()).collect();
    assert_eq!(
        refused(claim(c, "b", &too_many).await.unwrap_err()),
        ErrorCode::InvalidArgument
    );
    // The refusals handed out nothing.
    assert_eq!(count(b1.key()), 10);
    assert_eq!(count(c1.key()), 10);

    // All of b: b1 only (b2 has no signed prekeys yet, b3 is revoked).
    let bundles = claim(c, "b", &[]).await.unwrap();
    assert_eq!(bundles.len(), 1);
    assert_eq!(
        bundles[0].identity,
        b1.identity.public().to_bytes().to_vec()
    );
    assert_eq!(bundles[0].signed_prekeys, b1.signed.public().encode());
    let handed = bundles[0]
        .one_time_prekey
        .as_ref()
        .expect("a one-time prekey");
    assert!(b1.one_time.contains_key(&handed.id));
    assert_eq!(count(b1.key()), 9);
    assert!(
        claim(c, "b", &[b2.key().to_vec()])
            .await
            .unwrap()
            .is_empty()
    );
    // Exactly one PreKeyFetch entry, for the bundle handed out.
    let fetches: Vec<AuditEntry> = audit(&relay)
        .into_iter()
        .filter(|e| e.kind == EventKind::PreKeyFetch)
        .collect();
    assert_eq!(fetches.len(), 1);
    assert_eq!(fetches[0].actor_device, audit_id(requester.key()));
    assert_eq!(fetches[0].target_device, audit_id(b1.key()));
    assert_eq!(detail(&fetches[0]), format!("one_time={}", handed.id));
}

#[tokio::test]
async fn one_time_prekey_uploads_are_checked_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_with(
        dir.path(),
        Limits {
            max_one_time_prekeys: 15,
            ..test_limits()
        },
    )
    .await;
    relay.add_user("b");
    let b = Device::enroll(&relay, "b").await; // one-time prekeys 1..=10
    let c = &b.connection;
    let mut rng = common::rng();
    let count = || {
        relay
            .storage
            .one_time_prekey_count(&DeviceKey(b.key()))
            .unwrap()
    };

    // An entry whose key carries another id.
    let key_51 = OneTimePreKeyPair::generate_batch(&mut rng, 51, 1);
    let mismatched = vec![wire::OneTimePreKey {
        id: 50,
        key: key_51[0].public().encode(),
    }];
    assert_eq!(
        refused(upload(c, vec![], mismatched).await.unwrap_err()),
        ErrorCode::InvalidArgument
    );
    // A key that does not decode.
    let garbage = vec![wire::OneTimePreKey {
        id: 52,
        key: vec![0xff; 5],
    }];
    assert_eq!(
        refused(upload(c, vec![], garbage).await.unwrap_err()),
        ErrorCode::InvalidArgument
    );
    // More than max_one_time_prekeys in one upload.
    let sixteen = OneTimePreKeyPair::generate_batch(&mut rng, 100, 16);
    assert_eq!(
        refused(upload(c, vec![], one_time(&sixteen)).await.unwrap_err()),
        ErrorCode::TooManyPrekeys
    );
    // Few enough in the upload, too many with those already held.
    let six = OneTimePreKeyPair::generate_batch(&mut rng, 20, 6);
    assert_eq!(
        refused(upload(c, vec![], one_time(&six)).await.unwrap_err()),
        ErrorCode::TooManyPrekeys
    );
    assert_eq!(count(), 10, "refused uploads stored nothing");

    // Ids already held are ignored: re-uploading 1..=10 with five new.
    let mut again = one_time(b.one_time.values());
    again.extend(one_time(&OneTimePreKeyPair::generate_batch(
        &mut rng, 30, 5,
    )));
    let stored = upload(c, vec![], again).await.unwrap();
    assert_eq!(stored.added, 5);
    assert_eq!(stored.one_time_prekeys, 15);
    assert_eq!(count(), 15);
}

/// spec/08, `UploadPreKeys`: the signed prekeys and the one-time prekeys
/// are stored in one transaction, and a refused upload stores nothing.
#[tokio::test]
async fn a_refused_upload_keeps_the_signed_prekeys() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_with(
        dir.path(),
        Limits {
            max_one_time_prekeys: 15,
            ..test_limits()
        },
    )
    .await;
    relay.add_user("a");
    relay.add_user("b");
    let a = enroll_bare(&relay, "a").await;
    let b = Device::enroll(&relay, "b").await; // 10 one-time prekeys
    let mut rng = common::rng();
    let newer = SignedPreKeyPair::generate(&mut rng, &b.identity, 2, now_ms() / 1000);
    let six = OneTimePreKeyPair::generate_batch(&mut rng, 20, 6);
    assert_eq!(
        refused(
            upload(&b.connection, newer.public().encode(), one_time(&six))
                .await
                .unwrap_err()
        ),
        ErrorCode::TooManyPrekeys
    );
    let bundles = claim(&a.connection, "b", &[]).await.unwrap();
    assert!(
        bundles[0].signed_prekeys == b.signed.public().encode(),
        "the refused upload replaced the signed prekeys"
    );
}

#[tokio::test]
async fn revocation_deletes_the_queue_and_prekeys_and_audits_the_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    relay.add_user("b");
    let a = enroll_bare(&relay, "a").await;
    let b = Device::enroll(&relay, "b").await; // 10 one-time prekeys
    let b_key = b.key();
    // b is offline (the close of an open connection is
    // relay.rs::a_revoked_device_is_disconnected_and_refused) with two
    // messages queued.
    let Device {
        connection,
        identity: b_identity,
        ..
    } = b;
    connection.close().await;
    for n in 1..=2u8 {
        send(&a.connection, [n; 16], &["b"], &[b_key], 0)
            .await
            .unwrap();
    }
    assert_eq!(queue_len(&relay, b_key), 2);
    relay
        .storage
        .revoke_device(&DeviceKey(b_key), None, now_ms())
        .unwrap();
    assert_eq!(queue_len(&relay, b_key), 0);
    assert_eq!(
        relay
            .storage
            .one_time_prekey_count(&DeviceKey(b_key))
            .unwrap(),
        0
    );
    let entries = audit(&relay);
    assert!(
        entries
            .iter()
            .any(|e| e.kind == EventKind::Revocation && e.target_device == audit_id(b_key))
    );
    let deleted = entries
        .iter()
        .filter(|e| {
            e.kind == EventKind::Expiry
                && detail(e) == "device_revoked"
                && e.target_device == audit_id(b_key)
        })
        .count();
    assert_eq!(deleted, 2);
    // Senders learn of it through the send rule: b has no device left.
    let current = match send(&a.connection, [3; 16], &["b"], &[b_key], 0)
        .await
        .unwrap_err()
    {
        ClientError::Refused {
            code: ErrorCode::StaleDevices,
            current_devices,
            ..
        } => current_devices,
        other => panic!("{other}"),
    };
    assert!(
        current
            .iter()
            .any(|u| u.user_id == "b" && u.devices.is_empty())
    );

    // Only the holder of the device's key learns that it is revoked.
    let c = relay.connect().await;
    let other = IdentityKeyPair::generate(&mut common::rng());
    let nonce = challenge(&c).await;
    let attempt = authenticate(&c, &nonce, b_key, &other);
    assert_eq!(code_of(&c, attempt).await, ErrorCode::AuthFailed);
    assert_eq!(
        refused(c.authenticate(&b_identity).await.unwrap_err()),
        ErrorCode::Revoked
    );
    let failures: Vec<(String, String)> = audit(&relay)
        .iter()
        .filter(|e| e.kind == EventKind::AuthFailure)
        .map(|e| (detail(e).to_owned(), e.outcome.to_string()))
        .collect();
    assert_eq!(
        failures,
        [
            ("bad_signature".to_owned(), "error:auth_failed".to_owned()),
            ("revoked".to_owned(), "error:revoked".to_owned()),
        ]
    );
}

/// spec/08, "Closing": a revoked device's connection is closed with 0x3.
/// A device that had messages pushed just before its revocation is
/// sometimes closed with 0x0 ("relay storage failed") instead: its
/// delivery task, woken by a pending notification, reads the queue of a
/// device that is now revoked, gets `StorageError::Revoked`, and closes the
/// connection as for a storage failure before the revocation poll closes
/// it with 0x3. Twenty rounds make the race near certain.
#[tokio::test]
async fn a_device_revoked_right_after_deliveries_is_closed_as_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    relay.add_user("b");
    let a = enroll_bare(&relay, "a").await;
    for round in 0..20u8 {
        let b = enroll_bare(&relay, "b").await;
        for n in 0..2u8 {
            send(
                &a.connection,
                [round, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                &["b"],
                &[b.key()],
                0,
            )
            .await
            .unwrap();
        }
        relay
            .storage
            .revoke_device(&DeviceKey(b.key()), None, now_ms())
            .unwrap();
        assert_eq!(
            closed_with(&b.connection, Duration::from_secs(2)).await,
            close_code::REVOKED,
            "round {round}"
        );
    }
}

// ----- audit and metrics (RLY-35, RLY-36) -----

#[tokio::test]
async fn tree_heads_are_signed_while_the_log_grows_and_not_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await; // a head every 200 ms if the log grew
    relay.add_user("a");
    let _device = enroll_bare(&relay, "a").await;
    let state = relay.storage.audit_state().unwrap();
    assert!(state.size >= 1);

    let started = Instant::now();
    let covered = eventually(Duration::from_secs(1), || {
        relay
            .storage
            .tree_heads()
            .unwrap()
            .last()
            .is_some_and(|h| h.head.tree_size >= state.size)
    })
    .await;
    assert!(covered, "a head covering the activity within a second");
    assert!(started.elapsed() < Duration::from_secs(1));
    let heads = relay.storage.tree_heads().unwrap();
    let last = heads.last().unwrap();
    let key = ward_audit::VerifyingKey::from(&relay.audit_key);
    last.verify(&key)
        .expect("signed with the relay's audit key");
    assert_eq!(last.head.tree_size, state.size);
    assert_eq!(last.head.root, state.root);

    // Nothing happens: no new head.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(relay.storage.audit_state().unwrap().size, state.size);
    assert_eq!(relay.storage.tree_heads().unwrap().len(), heads.len());
}

#[tokio::test]
async fn metrics_carry_no_user_device_or_message_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("okafor.clinician");
    relay.add_user("lindqvist.nurse");
    let a = enroll_bare(&relay, "okafor.clinician").await;
    let b = enroll_bare(&relay, "lindqvist.nurse").await;
    let id = [0xab; 16];
    send(&a.connection, id, &["lindqvist.nurse"], &[b.key()], 0)
        .await
        .unwrap();
    assert_eq!(fetch(&b.connection, 0, 0).await.len(), 1);
    ack(&b.connection, &[id]).await;
    let stranger = IdentityKeyPair::generate(&mut common::rng());
    relay
        .connect()
        .await
        .authenticate(&stranger)
        .await
        .unwrap_err();

    let text = relay.metrics.render();
    assert!(
        text.contains("ward_relay_messages_stored_total 1"),
        "{text}"
    );
    assert!(text.contains("ward_relay_auth_failure_total 1"), "{text}");
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    for secret in [
        "okafor".to_owned(),
        "lindqvist".to_owned(),
        hex(&a.key()),
        hex(&b.key()),
        hex(stranger.public().signing_key()),
        hex(&id),
        hex(&a.key()[..8]),
        hex(&[0xc1; 8]),
    ] {
        assert!(!text.contains(&secret), "{secret} in the metrics");
    }
}
