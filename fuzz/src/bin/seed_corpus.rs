//! Writes a small seed corpus for every target: valid encodings that the
//! fuzzer could not find on its own, since each sits behind signatures, KEM
//! keys or AEAD tags. The inputs come from the same deterministic fixtures
//! the targets use, so for instance the messages seeded for
//! `message_kind_and_decrypt` really decrypt in its sessions.
//!
//! `relay_frame` gets one frame of every request, response and push, filled
//! with real keys where the relay would check them; `audit_entry` gets the
//! entries of spec/vectors/audit.json, a longest entry, a signed head and
//! whole exports signed with the vectors' relay key.
//!
//! Usage: `cargo fuzz build seed_corpus`, then
//! `target/x86_64-unknown-linux-gnu/release/seed_corpus CORPUS_DIR` (what
//! scripts/fuzz.sh does).

use std::fs;
use std::path::Path;

use rand_core::Rng;
use ward_audit::{
    AuditEntry, Detail, DeviceId, ErrorCode, EventKind, Export, MerkleLog, MessageId, Outcome,
    SigningKey, UserId,
};
use ward_fuzz::{Device, fixed_device, handshake, snapshots};
use ward_proto::frame;
use ward_proto::relay_v1::{self as wire, push, request, response};

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = root.join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(format!("seed-{name}")), bytes)
}

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus".to_owned());
    let root = Path::new(&root);

    let (chain, messages) = ward_fuzz::sender_chain();
    for (i, message) in messages.iter().enumerate() {
        write(root, "sender_key", &format!("message-{i}"), message)?;
    }
    write(
        root,
        "sender_key",
        "distribution",
        &chain.distribution().encode(),
    )?;
    write(root, "sender_key", "own-chain", &chain.to_bytes())?;
    write(
        root,
        "sender_key",
        "member-chain",
        &ward_fuzz::member_chain().to_bytes(),
    )?;

    let (group, _) = ward_fuzz::group();
    write(root, "group", "state", &group.to_bytes())?;
    write(root, "group", "welcome", &group.welcome())?;
    let admin = ward_fuzz::group_member(0);
    let rename = group
        .propose(
            &admin,
            ward_core::GroupAction::Rename("renamed".into()),
            1_700_000_001,
        )
        .expect("the fixture admin renames");
    write(root, "group", "rename", rename.to_bytes())?;
    let remove = group
        .propose(
            &admin,
            ward_core::GroupAction::Remove {
                user_id: ward_fuzz::group_user(2),
                devices: Default::default(),
            },
            1_700_000_001,
        )
        .expect("the fixture admin removes a member");
    write(root, "group", "remove", remove.to_bytes())?;

    let schedule = ward_core::RoleSchedule {
        role_id: "cardiology-oncall".into(),
        display_name: "On-call cardiology".into(),
        department: "Cardiology".into(),
        version: 1,
        issued_at: 1_700_000_000,
        assignments: vec![ward_core::Assignment {
            user_id: "dr.adams@clinic.example".into(),
            starts_at: 1_700_000_000,
            ends_at: 1_700_043_200,
        }],
    };
    let signed = ward_fuzz::admin_key()
        .sign(&schedule)
        .expect("the fixture schedule signs");
    write(root, "role_schedule", "one-shift", &signed)?;

    let device = fixed_device();
    write(root, "prekey_bundle", "with-one-time", &device.bundle(true))?;
    write(
        root,
        "prekey_bundle",
        "without-one-time",
        &device.bundle(false),
    )?;

    let identity = device.identity.public();
    write(
        root,
        "device_identity",
        "identity-proto",
        &identity.encode(),
    )?;
    write(
        root,
        "device_identity",
        "identity-fixed",
        &identity.to_bytes(),
    )?;
    write(
        root,
        "device_identity",
        "signed-prekeys",
        &device.signed.public().encode(),
    )?;
    write(
        root,
        "device_identity",
        "one-time-prekey",
        &device.one_time[0].public().encode(),
    )?;

    for (name, with_one_time) in [("with-one-time", true), ("without-one-time", false)] {
        let hs = handshake(1, with_one_time);
        write(root, "prekey_message", name, &hs.first)?;
        write(
            root,
            "prekey_bundle",
            &format!("handshake-{name}"),
            &hs.bundle,
        )?;
    }

    for snapshot in snapshots() {
        write(root, "session_state", snapshot.name, &snapshot.session)?;
        for (i, message) in snapshot.incoming.iter().enumerate() {
            let name = format!("{}-{i}", snapshot.name);
            write(root, "message_kind_and_decrypt", &name, message)?;
            // Pre-key messages are also the other target's input.
            if message.first() == Some(&ward_core::format::PREKEY_MESSAGE) {
                write(root, "prekey_message", &name, message)?;
            }
        }
    }
    // Any bytes are a valid scenario; these just start the fuzzer with long
    // conversations instead of growing them from nothing.
    let mut rng = ward_fuzz::rng(0x0de1);
    for i in 0..8 {
        let mut scenario = vec![0u8; 64 + 64 * i];
        rng.fill_bytes(&mut scenario);
        if i == 0 {
            // A seed that runs a real handshake rather than a stored one
            // (see FRESH_EVERY in the target): 0x2a2a..2a is 42 mod 64.
            scenario[..8].fill(0x2a);
        }
        write(root, "ratchet_model", &format!("random-{i}"), &scenario)?;
    }

    relay_frames(root, &device)?;
    audit(root)?;
    content(root)?;

    println!("seed corpus written under {}", root.display());
    Ok(())
}

/// One content of every kind (spec/12), padded as it travels: a message in
/// a role thread with an attachment, a receipt, a group control, a handoff.
fn content(root: &Path) -> std::io::Result<()> {
    use ward_content::{
        Attachment, AttachmentKey, Content, GroupControl, GroupControlBody, HandedOver, Handoff,
        Message, Receipt, ReceiptKind, RoleThread,
    };
    let mut message = Message::urgent("Bed 4: chest pain");
    message.sent_at_ms = 1_767_225_600_000;
    message.role = Some(RoleThread {
        role_id: "cardiology-oncall".into(),
        party: "nurse.diaz@clinic.example".into(),
    });
    message.attachments.push(Attachment {
        reference: "blob://ward/ecg-1".into(),
        content_type: "application/pdf".into(),
        size: 4096,
        sha256: [0x11; 32],
        key: AttachmentKey::new([0x22; 32]),
    });
    let mut in_group = Message::text("Team huddle at 7");
    in_group.group_id = Some([0x33; 16]);
    let contents = [
        ("message", Content::Message(message.clone())),
        (
            "receipt",
            Content::Receipt(Receipt {
                kind: ReceiptKind::Read,
                message_ids: vec![[0x44; 16], [0x45; 16]],
            }),
        ),
        (
            "group-resent",
            Content::Group(GroupControl {
                group_id: [0x33; 16],
                body: GroupControlBody::Resent {
                    message_id: [0x46; 16],
                    message: in_group,
                },
            }),
        ),
        (
            "handoff",
            Content::Handoff(Handoff {
                role_id: "cardiology-oncall".into(),
                ends_at: 1_767_268_800,
                schedule: vec![0x0e, 1, 2, 3],
                entries: vec![HandedOver {
                    from_user: "nurse.diaz@clinic.example".into(),
                    message_id: [0x47; 16],
                    message,
                }],
            }),
        ),
    ];
    for (name, content) in contents {
        let plaintext = ward_content::encode(&content).map_err(std::io::Error::other)?;
        write(root, "content", name, &plaintext)?;
    }
    Ok(())
}

/// One frame of every `Request`, `Response` and `Push` body (spec/08).
fn relay_frames(root: &Path, device: &Device) -> std::io::Result<()> {
    let identity = device.identity.public().to_bytes().to_vec();
    let device_key = identity[..32].to_vec();
    let signed = device.signed.public().encode();
    let one_time = |i: usize| wire::OneTimePreKey {
        id: device.one_time[i].id(),
        key: device.one_time[i].public().encode(),
    };
    let user = || "alice@clinic.example".to_owned();
    let message_id = (0u8..16).collect::<Vec<_>>();
    let devices = wire::UserDevices {
        user_id: user(),
        devices: vec![wire::DeviceInfo {
            identity: identity.clone(),
        }],
    };
    let delivery = wire::Delivery {
        seq: 7,
        sender_device: device_key.clone(),
        sender_user: "bob@clinic.example".to_owned(),
        message_id: message_id.clone(),
        enqueued_at_ms: 1_790_027_200_000,
        expires_at_ms: 1_791_236_800_000,
        ciphertext: vec![0x01; 60],
    };

    let requests = [
        (
            "challenge",
            request::Body::Challenge(wire::ChallengeRequest {}),
        ),
        (
            "authenticate",
            request::Body::Authenticate(wire::Authenticate {
                device_key: device_key.clone(),
                signature: vec![0x5a; 64],
            }),
        ),
        (
            "enroll",
            request::Body::Enroll(wire::Enroll {
                token: format!("ward-enroll-{}", "0123456789abcdef".repeat(4)),
                identity: identity.clone(),
                signature: vec![0x5a; 64],
            }),
        ),
        (
            "upload-prekeys",
            request::Body::UploadPrekeys(wire::UploadPreKeys {
                signed_prekeys: signed.clone(),
                one_time_prekeys: vec![one_time(0), one_time(1)],
            }),
        ),
        (
            "get-devices",
            request::Body::GetDevices(wire::GetDevices {
                user_ids: vec![user(), "bob@clinic.example".to_owned()],
            }),
        ),
        (
            "claim-bundles",
            request::Body::ClaimBundles(wire::ClaimBundles {
                user_id: user(),
                device_keys: vec![device_key.clone()],
            }),
        ),
        (
            "send",
            request::Body::Send(wire::Send {
                message_id: message_id.clone(),
                user_ids: vec![user()],
                envelopes: vec![
                    wire::Envelope {
                        device_key: device_key.clone(),
                        ciphertext: vec![0x01; 60],
                    },
                    wire::Envelope {
                        device_key: vec![0x22; 32],
                        ciphertext: vec![0x02; 40],
                    },
                ],
                ttl_ms: 86_400_000,
                ..Default::default()
            }),
        ),
        (
            "send-group",
            request::Body::Send(wire::Send {
                message_id: message_id.clone(),
                user_ids: vec![user(), "bob@clinic.example".to_owned()],
                envelopes: vec![wire::Envelope {
                    device_key: vec![0x22; 32],
                    ciphertext: vec![0x09; 40],
                }],
                ttl_ms: 0,
                shared_ciphertext: vec![0x08; 80],
                shared_devices: vec![device_key.clone(), vec![0x33; 32]],
                ..Default::default()
            }),
        ),
        (
            "fetch",
            request::Body::Fetch(wire::Fetch {
                after_seq: 3,
                limit: 100,
            }),
        ),
        (
            "ack",
            request::Body::Ack(wire::Ack {
                message_ids: vec![message_id.clone(), vec![0xee; 16]],
            }),
        ),
        (
            "prekey-status",
            request::Body::PrekeyStatus(wire::PreKeyStatus {}),
        ),
    ];
    for (name, body) in requests {
        let frame = frame::encode(&wire::Request { body: Some(body) });
        write(root, "relay_frame", &format!("request-{name}"), &frame)?;
    }

    let responses = [
        (
            "error-stale",
            response::Body::Error(wire::Error {
                code: wire::ErrorCode::StaleDevices.into(),
                message: "the device list is not current".to_owned(),
                current_devices: vec![devices.clone()],
                retry_after_ms: 0,
            }),
        ),
        (
            "error-rate-limited",
            response::Body::Error(wire::Error {
                code: wire::ErrorCode::RateLimited.into(),
                message: "too many requests".to_owned(),
                current_devices: Vec::new(),
                retry_after_ms: 250,
            }),
        ),
        (
            "challenge",
            response::Body::Challenge(wire::Challenge {
                nonce: vec![0x3c; 32],
            }),
        ),
        (
            "authenticated",
            response::Body::Authenticated(wire::Authenticated {
                user_id: user(),
                device_key: device_key.clone(),
                one_time_prekeys: 12,
                prekeys_low: true,
                signed_prekeys_missing: false,
            }),
        ),
        (
            "prekeys-stored",
            response::Body::PrekeysStored(wire::PreKeysStored {
                one_time_prekeys: 100,
                added: 2,
            }),
        ),
        (
            "devices",
            response::Body::Devices(wire::DeviceList {
                users: vec![devices.clone()],
            }),
        ),
        (
            "bundles",
            response::Body::Bundles(wire::Bundles {
                bundles: vec![
                    wire::Bundle {
                        identity: identity.clone(),
                        signed_prekeys: signed.clone(),
                        one_time_prekey: Some(one_time(0)),
                    },
                    wire::Bundle {
                        identity: identity.clone(),
                        signed_prekeys: signed.clone(),
                        one_time_prekey: None,
                    },
                ],
            }),
        ),
        (
            "sent",
            response::Body::Sent(wire::SendReceipt {
                duplicate: true,
                enqueued_at_ms: 1_790_027_200_000,
                expires_at_ms: 1_791_236_800_000,
            }),
        ),
        (
            "messages",
            response::Body::Messages(wire::Messages {
                messages: vec![delivery.clone(), delivery.clone()],
            }),
        ),
        (
            "acked",
            response::Body::Acked(wire::Acked {
                deleted: 1,
                unknown_ids: vec![vec![0xee; 16]],
            }),
        ),
        (
            "prekey-count",
            response::Body::PrekeyCount(wire::PreKeyCount {
                one_time_prekeys: 19,
                prekeys_low: true,
            }),
        ),
    ];
    for (name, body) in responses {
        let frame = frame::encode(&wire::Response { body: Some(body) });
        write(root, "relay_frame", &format!("response-{name}"), &frame)?;
    }

    // The delivery stream: one push per frame, and a few frames in a row as
    // a client reads them.
    let pushes = [
        push::Body::Delivery(delivery),
        push::Body::PrekeysLow(wire::PreKeysLow {
            one_time_prekeys: 19,
        }),
    ];
    let mut stream = Vec::new();
    for (name, body) in [("delivery", &pushes[0]), ("prekeys-low", &pushes[1])] {
        let frame = frame::encode(&wire::Push {
            body: Some(body.clone()),
        });
        write(root, "relay_frame", &format!("push-{name}"), &frame)?;
        stream.extend_from_slice(&frame);
    }
    stream.extend_from_slice(&stream.clone());
    write(root, "relay_frame", "delivery-stream", &stream)
}

/// Audit entries, a signed head and exports (spec/09).
fn audit(root: &Path) -> std::io::Result<()> {
    let entries = ward_audit::vectors::vector_entries();
    for (i, entry) in entries.iter().enumerate() {
        write(
            root,
            "audit_entry",
            &format!("vector-entry-{i}"),
            &entry.encode(),
        )?;
    }
    let text = |s: &str| s.repeat(64)[..64].to_owned();
    let longest = AuditEntry {
        actor_user: UserId::new(&text("u")).ok(),
        actor_device: DeviceId::new(&text("d")).ok(),
        target_user: UserId::new(&text("t")).ok(),
        target_device: DeviceId::new(&text("0123456789abcdef")).ok(),
        message_id: Some(MessageId([0xab; 16])),
        size: Some(u64::MAX),
        outcome: Outcome::Error(
            ErrorCode::new(&text("e")[..32]).expect("32 letters are an error code"),
        ),
        detail: Detail::new("one_time=none fetched, a/b").ok(),
        ..AuditEntry::new(u64::MAX, u64::MAX, EventKind::AdminAction)
    };
    write(root, "audit_entry", "longest-entry", &longest.encode())?;
    write(
        root,
        "audit_entry",
        "minimal-entry",
        &AuditEntry::new(0, 0, EventKind::Expiry).encode(),
    )?;

    // Exports signed with the vectors' relay key: the empty log, and the
    // vector log with heads at 3 and 8 entries.
    let key = SigningKey::from_bytes(&ward_audit::vectors::VECTOR_KEY_SEED);
    let relay_key = key.verifying_key().to_bytes();
    let mut log = MerkleLog::in_memory();
    let empty_head = log
        .issue_head(1_790_000_000_000, &key)
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let empty = Export {
        relay_key,
        entries: Vec::new(),
        heads: vec![empty_head],
    };
    write(root, "audit_entry", "export-empty", &empty.encode())?;
    write(root, "audit_entry", "signed-head", &empty_head.encode())?;

    let mut log = MerkleLog::in_memory();
    let mut heads = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        log.append(entry)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        if i == 2 || i + 1 == entries.len() {
            let head = log
                .issue_head(entry.timestamp_ms, &key)
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            heads.push(head);
        }
    }
    let export = Export {
        relay_key,
        entries,
        heads,
    };
    let encoded = export.encode();
    assert!(
        ward_audit::verify_export(&encoded, Some(relay_key)).is_ok(),
        "the seed export verifies"
    );
    write(root, "audit_entry", "export-vectors", &encoded)?;
    // The same bytes without the magic and version: audit_entry also reads
    // each input behind them.
    write(
        root,
        "audit_entry",
        "export-vectors-body",
        &encoded[ward_audit::export::EXPORT_MAGIC.len() + 1..],
    )
}
