//! The entries of spec/vectors/audit.json (`ward_audit::vectors::vector_entries`)
//! are entries this relay writes: the test plays the vectors' story against
//! a relay over QUIC and finds each vector entry, field for field but for
//! `sequence` and `timestamp_ms`, in the relay's own log (spec/08, "Audit";
//! RLY-34). A change to how the relay writes an entry, or to the vectors,
//! that makes them differ fails here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{HOUR_MS, TestRelay, now_ms, rng};
use ward_audit::vectors::{
    ALICE_PHONE_SEED, BOB_TABLET_SEED, VECTOR_CIPHERTEXT_LEN, VECTOR_MESSAGE_ID,
    VECTOR_ONE_TIME_PREKEY_ID, vector_entries,
};
use ward_audit::{AuditEntry, UserId};
use ward_client::wire::{self, request::Body as Req, response::Body as Resp};
use ward_client::{ClientError, RelayConnection};
use ward_core::{IdentityKeyPair, OneTimePreKeyPair, SignedPreKeyPair};
use ward_relay::storage::{Role, Storage};

/// The identity whose Ed25519 seed is `seed` (its X25519 secret is
/// arbitrary: audit entries name a device by its signing key alone).
fn identity(seed: &[u8; 32]) -> IdentityKeyPair {
    let mut secret = IdentityKeyPair::generate(&mut rng()).to_secret_bytes();
    secret[1..33].copy_from_slice(seed);
    IdentityKeyPair::from_secret_bytes(&secret[..]).unwrap()
}

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

/// Uploads signed prekeys and three one-time prekeys, the lowest (the one
/// the relay hands out first) `VECTOR_ONE_TIME_PREKEY_ID`.
async fn upload_prekeys(connection: &RelayConnection, identity: &IdentityKeyPair) {
    let mut rng = rng();
    let signed = SignedPreKeyPair::generate(&mut rng, identity, 1, now_ms() / 1000);
    let one_time = OneTimePreKeyPair::generate_batch(&mut rng, VECTOR_ONE_TIME_PREKEY_ID, 3)
        .iter()
        .map(|k| wire::OneTimePreKey {
            id: k.id(),
            key: k.public().encode(),
        })
        .collect();
    let stored = connection
        .request(Req::UploadPrekeys(wire::UploadPreKeys {
            signed_prekeys: signed.public().encode(),
            one_time_prekeys: one_time,
        }))
        .await
        .unwrap();
    assert!(matches!(stored, Resp::PrekeysStored(_)), "{stored:?}");
}

#[tokio::test]
async fn the_audit_vector_entries_are_entries_the_relay_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = TestRelay::start(dir.path()).await;
    let (alice, bob, admin) = (
        user("alice@clinic.example"),
        user("bob@clinic.example"),
        user("admin@clinic.example"),
    );
    let (phone, tablet) = (identity(&ALICE_PHONE_SEED), identity(&BOB_TABLET_SEED));
    let tablet_key = tablet.public().signing_key().to_vec();
    let s = &relay.storage;
    s.create_user(&alice, &Role::new("nurse").unwrap(), None, now_ms())
        .unwrap();
    s.create_user(&bob, &Role::new("physician").unwrap(), None, now_ms())
        .unwrap();

    // Before the vector log: Bob's tablet enrolls and uploads prekeys.
    let connection = relay.connect().await;
    connection
        .enroll(&relay.token("bob@clinic.example"), &tablet)
        .await
        .unwrap();
    upload_prekeys(&connection, &tablet).await;
    connection.close().await;

    // 0. The administrator, named, issues Alice a token.
    let (token, hash) = ward_relay::keys::new_enrollment_token();
    s.issue_enrollment_token(&hash, &alice, Some(&admin), now_ms(), now_ms() + HOUR_MS)
        .unwrap();
    // 1. Alice's phone enrolls.
    let connection = relay.connect().await;
    connection.enroll(&token, &phone).await.unwrap();
    connection.close().await;
    // 2. It authenticates on a later connection.
    let alice_phone = relay.connect().await;
    alice_phone.authenticate(&phone).await.unwrap();
    // 3. It claims the tablet's bundle, and one-time prekey 42 with it.
    let Resp::Bundles(bundles) = alice_phone
        .request(Req::ClaimBundles(wire::ClaimBundles {
            user_id: bob.as_str().into(),
            device_keys: vec![tablet_key.clone()],
        }))
        .await
        .unwrap()
    else {
        panic!("not bundles")
    };
    assert_eq!(
        bundles.bundles[0].one_time_prekey.as_ref().map(|k| k.id),
        Some(VECTOR_ONE_TIME_PREKEY_ID)
    );
    // 4. It sends the tablet one message (the relay reads no ciphertext).
    let sent = alice_phone
        .request(Req::Send(wire::Send {
            message_id: VECTOR_MESSAGE_ID.0.to_vec(),
            user_ids: vec![bob.as_str().into()],
            envelopes: vec![wire::Envelope {
                device_key: tablet_key.clone(),
                ciphertext: vec![0x5a; VECTOR_CIPHERTEXT_LEN as usize],
            }],
            ttl_ms: 0,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(matches!(sent, Resp::Sent(_)), "{sent:?}");
    // 5. Someone tries to authenticate as the tablet without its key.
    let stranger = relay.connect().await;
    stranger
        .request(Req::Challenge(wire::ChallengeRequest {}))
        .await
        .unwrap();
    let refused = stranger
        .request(Req::Authenticate(wire::Authenticate {
            device_key: tablet_key.clone(),
            signature: vec![0; 64],
        }))
        .await;
    assert!(
        matches!(&refused, Err(ClientError::Refused { code, .. }) if *code == wire::ErrorCode::AuthFailed),
        "{refused:?}"
    );
    // 6. The tablet connects and is pushed the message; 7. it acknowledges.
    let bob_tablet = relay.connect().await;
    bob_tablet.authenticate(&tablet).await.unwrap();
    let mut deliveries = bob_tablet.deliveries().await.unwrap();
    let push = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(wire::push::Body::Delivery(delivery)) = push.body else {
        panic!("not a delivery: {push:?}")
    };
    assert_eq!(delivery.message_id, VECTOR_MESSAGE_ID.0);
    let acked = bob_tablet
        .request(Req::Ack(wire::Ack {
            message_ids: vec![delivery.message_id],
        }))
        .await
        .unwrap();
    assert!(matches!(acked, Resp::Acked(wire::Acked { deleted: 1, .. })));
    // The push's entry is appended after the frame is written.
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay.stop().await;

    let key = ward_audit::VerifyingKey::from(&relay.audit_key);
    let export = relay.storage.export_audit(&key).unwrap();
    let verified = ward_audit::verify_export(&export.encode(), None).unwrap();
    let written = verified.entries();
    for (i, vector) in vector_entries().iter().enumerate() {
        let found = written.iter().any(|entry| {
            *entry
                == AuditEntry {
                    sequence: entry.sequence,
                    timestamp_ms: entry.timestamp_ms,
                    ..vector.clone()
                }
        });
        assert!(
            found,
            "vector entry {i} ({vector}) is not among the entries the relay wrote:\n{}",
            written
                .iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
