//! The relay over real QUIC on 127.0.0.1, with devices that hold ward-core
//! sessions (spec/08).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Device, TestRelay, now_ms};
use prost::Message;
use ward_audit::UserId;
use ward_client::wire::{self, ErrorCode, request::Body as Req, response::Body as Resp};
use ward_client::{ClientError, RelayConnection};
use ward_relay::storage::{DeviceKey, Storage};

fn refused(e: ClientError) -> ErrorCode {
    e.code().unwrap_or_else(|| panic!("not a refusal: {e}"))
}

#[tokio::test]
async fn enrollment_tokens_are_single_use_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("dr.okafor");
    let token = relay.token("dr.okafor");

    let mut rng = common::rng();
    let phone = ward_core::IdentityKeyPair::generate(&mut rng);
    let c = relay.connect().await;
    let auth = c.enroll(&token, &phone).await.unwrap();
    assert_eq!(auth.user_id, "dr.okafor");
    assert_eq!(auth.device_key, phone.public().signing_key().to_vec());
    // Enrolled: the connection is authenticated.
    assert!(matches!(
        c.request(Req::PrekeyStatus(wire::PreKeyStatus {}))
            .await
            .unwrap(),
        Resp::PrekeyCount(_)
    ));

    // The token is spent.
    let laptop = ward_core::IdentityKeyPair::generate(&mut rng);
    let c2 = relay.connect().await;
    assert_eq!(
        refused(c2.enroll(&token, &laptop).await.unwrap_err()),
        ErrorCode::EnrollmentRefused
    );
    // An unknown token.
    let c3 = relay.connect().await;
    assert_eq!(
        refused(c3.enroll("ward-enroll-00", &laptop).await.unwrap_err()),
        ErrorCode::EnrollmentRefused
    );
    // An expired token.
    let (expired, hash) = ward_relay::keys::new_enrollment_token();
    let now = now_ms();
    relay
        .storage
        .issue_enrollment_token(
            &hash,
            &UserId::new("dr.okafor").unwrap(),
            None,
            now - 10,
            now - 1,
        )
        .unwrap();
    let c4 = relay.connect().await;
    assert_eq!(
        refused(c4.enroll(&expired, &laptop).await.unwrap_err()),
        ErrorCode::EnrollmentRefused
    );
    // The enrolled device authenticates on a new connection; an unknown
    // one does not.
    relay.connect().await.authenticate(&phone).await.unwrap();
    assert_eq!(
        refused(
            relay
                .connect()
                .await
                .authenticate(&laptop)
                .await
                .unwrap_err()
        ),
        ErrorCode::AuthFailed
    );
}

#[tokio::test]
async fn two_users_with_two_devices_each_converse() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("okafor");
    relay.add_user("lindqvist");
    let mut okafor_phone = Device::enroll(&relay, "okafor").await;
    let mut okafor_desk = Device::enroll(&relay, "okafor").await;
    let mut lindqvist_phone = Device::enroll(&relay, "lindqvist").await;
    let mut lindqvist_tablet = Device::enroll(&relay, "lindqvist").await;

    let id = okafor_phone
        .send_text(&["lindqvist"], b"Bed 4: potassium 6.1")
        .await
        .unwrap();
    // Both of Lindqvist's devices and Okafor's other device get it.
    for device in [
        &mut lindqvist_phone,
        &mut lindqvist_tablet,
        &mut okafor_desk,
    ] {
        let got = device.receive().await;
        assert_eq!(got.plaintext, b"Bed 4: potassium 6.1");
        assert_eq!(got.sender_user, "okafor");
        assert_eq!(got.message_id, id);
    }

    // Replies in both directions, over the sessions now open.
    lindqvist_tablet
        .send_text(&["okafor"], b"On my way")
        .await
        .unwrap();
    for device in [&mut okafor_phone, &mut okafor_desk, &mut lindqvist_phone] {
        assert_eq!(device.receive().await.plaintext, b"On my way");
    }
    for i in 0..5u8 {
        okafor_desk
            .send_text(&["lindqvist"], &[b'm', i])
            .await
            .unwrap();
    }
    for device in [
        &mut lindqvist_phone,
        &mut lindqvist_tablet,
        &mut okafor_phone,
    ] {
        for i in 0..5u8 {
            assert_eq!(device.receive().await.plaintext, [b'm', i], "in order");
        }
    }
    // Every copy was acknowledged: the queues are empty.
    for device in [
        &okafor_phone,
        &okafor_desk,
        &lindqvist_phone,
        &lindqvist_tablet,
    ] {
        assert_eq!(
            relay.storage.queue_len(&DeviceKey(device.key())).unwrap(),
            0
        );
    }
}

#[tokio::test]
async fn offline_devices_get_their_queue_in_order_on_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    relay.add_user("b");
    let mut a = Device::enroll(&relay, "a").await;
    let mut b = Device::enroll(&relay, "b").await;
    a.send_text(&["b"], b"hello").await.unwrap();
    assert_eq!(b.receive().await.plaintext, b"hello");

    // b goes offline; a keeps sending.
    let old = std::mem::replace(&mut b.connection, relay.connect().await);
    old.close().await;
    b.deliveries = None;
    for i in 0..20u8 {
        a.send_text(&["b"], &[i]).await.unwrap();
    }
    assert_eq!(relay.storage.queue_len(&DeviceKey(b.key())).unwrap(), 20);

    b.reconnect(&relay).await;
    let mut last_seq = 0;
    for i in 0..20u8 {
        let got = b.receive().await;
        assert_eq!(got.plaintext, [i]);
        assert!(got.seq > last_seq);
        last_seq = got.seq;
    }
    assert_eq!(relay.storage.queue_len(&DeviceKey(b.key())).unwrap(), 0);
}

#[tokio::test]
async fn unacknowledged_messages_are_pushed_again_and_explicit_fetch_works() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    relay.add_user("b");
    let mut a = Device::enroll(&relay, "a").await;
    let mut b = Device::enroll(&relay, "b").await;
    let id = a.send_text(&["b"], b"x").await.unwrap();
    // Read the push but do not acknowledge it.
    let first = next_delivery(&mut b).await;
    b.reconnect(&relay).await;
    let again = next_delivery(&mut b).await;
    assert_eq!(again, first);
    let Resp::Messages(fetched) = b
        .connection
        .request(Req::Fetch(wire::Fetch {
            after_seq: 0,
            limit: 0,
        }))
        .await
        .unwrap()
    else {
        panic!("not messages")
    };
    assert_eq!(fetched.messages, vec![first]);
    let acked = b.ack(&[id.clone(), vec![9; 16]]).await;
    assert_eq!(acked.deleted, 1);
    assert_eq!(acked.unknown_ids, vec![vec![9; 16]]);
}

/// The next delivery pushed to `device`, skipping notices.
async fn next_delivery(device: &mut Device) -> wire::Delivery {
    loop {
        let push = tokio::time::timeout(
            Duration::from_secs(10),
            device.deliveries.as_mut().unwrap().next(),
        )
        .await
        .unwrap()
        .unwrap()
        .unwrap();
        if let Some(wire::push::Body::Delivery(d)) = push.body {
            return d;
        }
    }
}

#[tokio::test]
async fn stale_device_lists_are_refused_with_the_current_list() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    relay.add_user("b");
    let mut a = Device::enroll(&relay, "a").await;
    let mut b1 = Device::enroll(&relay, "b").await;
    // a opens a session with b's only device, then b enrolls another.
    a.send_text(&["b"], b"first").await.unwrap();
    b1.receive().await;
    let b2 = Device::enroll(&relay, "b").await;

    let session = a.sessions.get_mut(&b1.key()).unwrap();
    let mut rng = common::rng();
    let only_b1 = vec![wire::Envelope {
        device_key: b1.key().to_vec(),
        ciphertext: session.encrypt(&mut rng, b"second").unwrap(),
    }];
    let id = a.new_message_id();
    let err = a
        .send_envelopes(&["b"], id.clone(), only_b1.clone())
        .await
        .unwrap_err();
    let ClientError::Refused {
        code,
        current_devices,
        ..
    } = err
    else {
        panic!("not a refusal")
    };
    assert_eq!(code, ErrorCode::StaleDevices);
    let b_devices = current_devices
        .iter()
        .find(|u| u.user_id == "b")
        .expect("b's devices listed");
    assert_eq!(b_devices.devices.len(), 2);
    assert!(
        b_devices
            .devices
            .iter()
            .any(|d| d.identity == b2.identity.public().to_bytes().to_vec())
    );
    assert_eq!(relay.storage.queue_len(&DeviceKey(b1.key())).unwrap(), 0);

    // A device that is not b's is refused too, as is a repeated one.
    let mut extra = only_b1.clone();
    extra.push(wire::Envelope {
        device_key: b2.key().to_vec(),
        ciphertext: vec![1],
    });
    extra.push(wire::Envelope {
        device_key: [7; 32].to_vec(),
        ciphertext: vec![1],
    });
    assert_eq!(
        refused(
            a.send_envelopes(&["b"], id.clone(), extra)
                .await
                .unwrap_err()
        ),
        ErrorCode::StaleDevices
    );
    let mut repeated = only_b1.clone();
    repeated.push(only_b1[0].clone());
    assert!(a.send_envelopes(&["b"], id, repeated).await.is_err());

    // With the current list, the send goes through.
    a.send_text(&["b"], b"third").await.unwrap();
    assert_eq!(relay.storage.queue_len(&DeviceKey(b2.key())).unwrap(), 1);
}

#[tokio::test]
async fn a_retried_send_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    relay.add_user("b");
    let mut a = Device::enroll(&relay, "a").await;
    let b = Device::enroll(&relay, "b").await;
    a.claim_sessions("b", &[b.key().to_vec()]).await;
    let mut rng = common::rng();
    let envelopes = vec![wire::Envelope {
        device_key: b.key().to_vec(),
        ciphertext: a
            .sessions
            .get_mut(&b.key())
            .unwrap()
            .encrypt(&mut rng, b"once")
            .unwrap(),
    }];
    let id = a.new_message_id();
    let first = a
        .send_envelopes(&["b"], id.clone(), envelopes.clone())
        .await
        .unwrap();
    let again = a.send_envelopes(&["b"], id, envelopes).await.unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.enqueued_at_ms, first.enqueued_at_ms);
    assert_eq!(relay.storage.queue_len(&DeviceKey(b.key())).unwrap(), 1);
}

#[tokio::test]
async fn one_time_prekeys_are_never_handed_out_twice_under_concurrent_claims() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("target");
    relay.add_user("claimer");
    let target = Device::enroll(&relay, "target").await; // 10 one-time prekeys
    let mut claimers = Vec::new();
    for _ in 0..16 {
        claimers.push(Device::enroll(&relay, "claimer").await);
    }
    let claims = claimers.iter().map(|c| async {
        let Resp::Bundles(b) = c
            .connection
            .request(Req::ClaimBundles(wire::ClaimBundles {
                user_id: "target".to_owned(),
                device_keys: vec![],
            }))
            .await
            .unwrap()
        else {
            panic!("not bundles")
        };
        b.bundles
    });
    let results = futures_join_all(claims).await;
    let handed: Vec<u32> = results
        .iter()
        .flatten()
        .filter_map(|b| b.one_time_prekey.as_ref().map(|k| k.id))
        .collect();
    let distinct: HashSet<u32> = handed.iter().copied().collect();
    assert_eq!(handed.len(), 10, "every one-time prekey handed out");
    assert_eq!(distinct.len(), 10, "none twice");
    assert_eq!(
        results.iter().flatten().count(),
        16,
        "every claim got a bundle"
    );
    assert_eq!(
        relay
            .storage
            .one_time_prekey_count(&DeviceKey(target.key()))
            .unwrap(),
        0
    );
}

async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(f);
    }
    let mut out = Vec::with_capacity(set.len());
    // Poll them concurrently on this task.
    let mut pinned: Vec<_> = set.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(done.into_iter().map(Option::unwrap));
    out
}

#[tokio::test]
async fn a_revoked_device_is_disconnected_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    let device = Device::enroll(&relay, "a").await;
    relay
        .storage
        .revoke_device(&DeviceKey(device.key()), None, now_ms())
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), device.connection.quic().closed())
        .await
        .expect("closed within the poll interval");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                ward_relay::server::close_code::REVOKED.into()
            );
        }
        other => panic!("closed otherwise: {other}"),
    }
    assert_eq!(
        refused(
            relay
                .connect()
                .await
                .authenticate(&device.identity)
                .await
                .unwrap_err()
        ),
        ErrorCode::Revoked
    );
}

#[tokio::test]
async fn malformed_oversized_and_unknown_frames_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    let device = Device::enroll(&relay, "a").await;
    let c = &device.connection;
    let error_of = |bytes: Vec<u8>| async move {
        let answer = c.request_raw(&bytes).await.unwrap();
        let response: wire::Response = ward_proto::frame::decode(&answer, u32::MAX).unwrap();
        match response.body {
            Some(Resp::Error(e)) => e.code(),
            other => panic!("not an error: {other:?}"),
        }
    };
    // Not protobuf.
    assert_eq!(
        error_of([&[0, 0, 0, 3][..], &[0xff, 0xff, 0xff]].concat()).await,
        ErrorCode::MalformedFrame
    );
    // Truncated header, truncated body, bytes after the frame.
    assert_eq!(error_of(vec![0, 0]).await, ErrorCode::MalformedFrame);
    assert_eq!(
        error_of(vec![0, 0, 0, 9, 1]).await,
        ErrorCode::MalformedFrame
    );
    let good = ward_proto::frame::encode(&wire::Request {
        body: Some(Req::PrekeyStatus(wire::PreKeyStatus {})),
    });
    assert_eq!(
        error_of([&good[..], &[0]].concat()).await,
        ErrorCode::MalformedFrame
    );
    // Announced above the limit: refused without reading the body.
    assert_eq!(
        error_of(vec![0x7f, 0xff, 0xff, 0xff]).await,
        ErrorCode::FrameTooLarge
    );
    // A request this relay does not know (a future field number).
    let mut unknown = Vec::new();
    prost::encoding::bytes::encode(99, &vec![1u8, 2, 3], &mut unknown);
    let mut framed = (unknown.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&unknown);
    assert_eq!(error_of(framed).await, ErrorCode::UnknownRequest);
    // Nothing was taken down: this connection and others still work.
    assert!(matches!(
        c.request(Req::PrekeyStatus(wire::PreKeyStatus {}))
            .await
            .unwrap(),
        Resp::PrekeyCount(_)
    ));
    relay
        .connect()
        .await
        .authenticate(&device.identity)
        .await
        .unwrap();
    assert!(relay.metrics.render().contains("frames_refused"));
}

/// Every refused frame of spec/vectors/relay.json, sent as it is on a
/// request stream of an anonymous connection, gets the `relay_code` the
/// file names (spec/08, "Frame errors", RLY-41), and the connection carries
/// on.
#[tokio::test]
async fn the_refused_frames_of_relay_json_get_their_relay_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../spec/vectors/relay.json");
    let vectors: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = vectors["refused_frames"]["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    let c = relay.connect().await;
    for case in cases {
        let frame = hex::decode(case["frame"].as_str().unwrap()).unwrap();
        let answer = c.request_raw(&frame).await.unwrap();
        let response: wire::Response =
            ward_proto::frame::decode(&answer, ward_proto::frame::MAX_FRAME_LEN).unwrap();
        let Some(Resp::Error(e)) = response.body else {
            panic!("not an error: {response:?} ({})", case["description"])
        };
        let code = e.code().as_str_name();
        assert_eq!(
            code.strip_prefix("ERROR_CODE_"),
            case["relay_code"].as_str(),
            "{}",
            case["description"]
        );
    }
    // A frame error is the stream's alone.
    assert!(matches!(
        c.request(Req::Challenge(wire::ChallengeRequest {}))
            .await
            .unwrap(),
        Resp::Challenge(_)
    ));
}

#[tokio::test]
async fn a_wrong_alpn_client_cannot_connect() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    let result =
        RelayConnection::connect_with_alpn(relay.addr, "localhost", relay.fingerprint, b"h3").await;
    assert!(result.is_err());
    // A client that pins another certificate fails too.
    let result = RelayConnection::connect(relay.addr, "localhost", [0; 32]).await;
    assert!(result.is_err());
}

#[tokio::test]
async fn a_device_cannot_reach_another_devices_queue_or_replay_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    relay.add_user("b");
    relay.add_user("mallory");
    let mut a = Device::enroll(&relay, "a").await;
    let mut b = Device::enroll(&relay, "b").await;
    let mallory = Device::enroll(&relay, "mallory").await;

    let id = a.send_text(&["b"], b"for b only").await.unwrap();
    // Mallory's fetch sees only Mallory's queue; her ack of b's message
    // id deletes nothing.
    let Resp::Messages(m) = mallory
        .connection
        .request(Req::Fetch(wire::Fetch {
            after_seq: 0,
            limit: 100,
        }))
        .await
        .unwrap()
    else {
        panic!("not messages")
    };
    assert!(m.messages.is_empty());
    let acked = mallory.ack(std::slice::from_ref(&id)).await;
    assert_eq!(acked.deleted, 0);
    assert_eq!(b.receive().await.plaintext, b"for b only");

    // Mallory cannot authenticate as b: a signature b made on another
    // connection does not verify on hers.
    let c_b = relay.connect().await;
    let Resp::Challenge(_) = c_b
        .request(Req::Challenge(wire::ChallengeRequest {}))
        .await
        .unwrap()
    else {
        panic!()
    };
    let replay = relay.connect().await;
    let Resp::Challenge(ch) = replay
        .request(Req::Challenge(wire::ChallengeRequest {}))
        .await
        .unwrap()
    else {
        panic!()
    };
    // b signs a transcript with c_b's exporter; mallory replays it on hers.
    let mut exporter = [0u8; 32];
    c_b.quic()
        .export_keying_material(&mut exporter, ward_proto::auth::EXPORTER_LABEL, b"")
        .unwrap();
    let nonce: [u8; 32] = ch.nonce[..].try_into().unwrap();
    let signature = b
        .identity
        .sign(&ward_proto::auth::authentication_transcript(
            &exporter,
            &nonce,
            &b.key(),
        ));
    let err = replay
        .request(Req::Authenticate(wire::Authenticate {
            device_key: b.key().to_vec(),
            signature: signature.to_vec(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused(err), ErrorCode::AuthFailed);
    // Requests before authentication are refused.
    assert_eq!(
        refused(
            replay
                .request(Req::Fetch(wire::Fetch::default()))
                .await
                .unwrap_err()
        ),
        ErrorCode::Unauthenticated
    );
    a.reconnect(&relay).await;
}

#[tokio::test]
async fn limits_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ward_relay::server::Limits {
        max_queue_depth: 2,
        requests_per_second: 1,
        request_burst: 40,
        ..common::test_limits()
    };
    let relay = TestRelay::start_with(dir.path(), limits.clone()).await;
    relay.add_user("a");
    relay.add_user("b");
    let a = Device::enroll(&relay, "a").await;
    let b = Device::enroll(&relay, "b").await;
    let b_key = b.key();
    let envelope = |len: usize| {
        vec![wire::Envelope {
            device_key: b_key.to_vec(),
            ciphertext: vec![0; len],
        }]
    };
    let too_big = limits.max_ciphertext_len as usize + 1;
    assert_eq!(
        refused(
            a.send_envelopes(&["b"], vec![1; 16], envelope(too_big))
                .await
                .unwrap_err()
        ),
        ErrorCode::MessageTooLarge
    );
    // b is not acknowledging: its queue's depth limit is reached.
    drop(b);
    a.send_envelopes(&["b"], vec![2; 16], envelope(10))
        .await
        .unwrap();
    a.send_envelopes(&["b"], vec![3; 16], envelope(10))
        .await
        .unwrap();
    assert_eq!(
        refused(
            a.send_envelopes(&["b"], vec![4; 16], envelope(10))
                .await
                .unwrap_err()
        ),
        ErrorCode::QueueFull
    );
    assert_eq!(
        refused(
            a.send_envelopes(&["b"], vec![5; 1], envelope(10))
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidArgument
    );
    // The burst runs out.
    let mut limited = None;
    for _ in 0..60 {
        if let Err(e) = a
            .connection
            .request(Req::PrekeyStatus(wire::PreKeyStatus {}))
            .await
        {
            limited = Some(e);
            break;
        }
    }
    match limited.expect("rate limited within the burst") {
        ClientError::Refused {
            code,
            retry_after_ms,
            ..
        } => {
            assert_eq!(code, ErrorCode::RateLimited);
            assert!(retry_after_ms > 0);
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn prekey_uploads_are_verified_and_low_counts_are_announced() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    relay.add_user("b");
    let mut a = Device::enroll(&relay, "a").await;
    let b = Device::enroll(&relay, "b").await;
    // Signed prekeys signed by another identity are refused.
    let mut rng = common::rng();
    let other = ward_core::IdentityKeyPair::generate(&mut rng);
    let forged = ward_core::SignedPreKeyPair::generate(&mut rng, &other, 2, 0);
    assert_eq!(
        refused(
            b.connection
                .request(Req::UploadPrekeys(wire::UploadPreKeys {
                    signed_prekeys: forged.public().encode(),
                    one_time_prekeys: vec![],
                }))
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidArgument
    );
    // b has 10 one-time prekeys, below the threshold of 20: the claim
    // that takes one tells b.
    a.claim_sessions("b", &[b.key().to_vec()]).await;
    let mut b = b;
    let push = tokio::time::timeout(
        Duration::from_secs(5),
        b.deliveries.as_mut().unwrap().next(),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(
        push.body,
        Some(wire::push::Body::PrekeysLow(wire::PreKeysLow {
            one_time_prekeys: 9
        }))
    );
    let _ = wire::Push::default().encode_to_vec();
}

#[tokio::test]
async fn the_audit_log_records_the_conversation_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = TestRelay::start(dir.path()).await;
    relay.add_user("a");
    relay.add_user("b");
    let mut a = Device::enroll(&relay, "a").await;
    let mut b = Device::enroll(&relay, "b").await;
    a.send_text(&["b"], b"audited").await.unwrap();
    b.receive().await;
    // A failed login is audited too.
    let stranger = ward_core::IdentityKeyPair::generate(&mut common::rng());
    relay
        .connect()
        .await
        .authenticate(&stranger)
        .await
        .unwrap_err();
    relay.stop().await;

    let key = ward_audit::VerifyingKey::from(&relay.audit_key);
    let export = relay.storage.export_audit(&key).unwrap();
    let verified = ward_audit::verify_export(&export.encode(), None).unwrap();
    let kinds: Vec<ward_audit::EventKind> = verified.entries().iter().map(|e| e.kind).collect();
    use ward_audit::EventKind::*;
    for kind in [
        Enrollment,
        PreKeyFetch,
        Send,
        Delivery,
        Acknowledgment,
        AuthFailure,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} audited");
    }
}
