//! The mapping of [`Event`] to [`WardEvent`] and of [`WardMessage`] to a
//! message: attachments in both directions, connection and outbox events,
//! role threads and handoffs.
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::time::Duration;

use ward_client::wire::ErrorCode;
use ward_client::{
    Attachment, AttachmentKey, ConnectionState, Event, HandedOver, HandoffRefusal, IncomingMessage,
    Message, Priority, RoleThread,
};
use ward_client_ffi::{
    WardAttachment, WardError, WardEvent, WardHandedOver, WardHandoffRefusal, WardMessage,
    WardRoleThread,
};

fn attachment() -> WardAttachment {
    WardAttachment {
        reference: "blob:4711".to_owned(),
        content_type: "image/jpeg".to_owned(),
        size: 123_456,
        sha256: vec![0xab; 32],
        key: vec![0x5c; 32],
    }
}

#[test]
fn attachments_cross_the_bindings_both_ways() {
    let message = Message::try_from(WardMessage {
        text: "wound, day 3".to_owned(),
        urgent: true,
        attachments: vec![attachment()],
    })
    .unwrap();
    assert_eq!(message.priority, Priority::Urgent);
    let Attachment {
        reference,
        content_type,
        size,
        sha256,
        key,
    } = &message.attachments[0];
    assert_eq!(
        (reference.as_str(), content_type.as_str(), *size, *sha256),
        ("blob:4711", "image/jpeg", 123_456, [0xab; 32])
    );
    assert_eq!(key, &AttachmentKey::new([0x5c; 32]));

    let event = WardEvent::from(Event::Message(IncomingMessage {
        sender_user: "alice".to_owned(),
        sender_device: [1; 32],
        message_id: [2; 16],
        sent_at_ms: 3,
        received_at_ms: 4,
        message,
        from_own_device: false,
    }));
    let WardEvent::Message {
        attachments,
        urgent,
        ..
    } = event
    else {
        panic!("not a message");
    };
    assert!(urgent);
    assert!(attachments == vec![attachment()], "the attachment changed");
}

#[test]
fn malformed_attachments_are_invalid_arguments() {
    for broken in [
        WardAttachment {
            key: vec![0; 31],
            ..attachment()
        },
        WardAttachment {
            sha256: vec![0; 33],
            ..attachment()
        },
    ] {
        let refused = Message::try_from(WardMessage {
            text: String::new(),
            urgent: false,
            attachments: vec![broken],
        });
        assert!(matches!(refused, Err(WardError::InvalidArgument { .. })));
    }
}

#[test]
fn connection_and_outbox_events_are_mapped() {
    assert!(matches!(
        WardEvent::from(Event::Connection(ConnectionState::Connected)),
        WardEvent::Connection {
            connected: true,
            retry_in_ms: 0
        }
    ));
    assert!(matches!(
        WardEvent::from(Event::Connection(ConnectionState::Disconnected {
            retry_in: Duration::from_millis(1500)
        })),
        WardEvent::Connection {
            connected: false,
            retry_in_ms: 1500
        }
    ));
    let WardEvent::Sent { message_id } = WardEvent::from(Event::Sent {
        message_id: [9; 16],
    }) else {
        panic!("not Sent");
    };
    assert_eq!(message_id, vec![9; 16]);
    let WardEvent::SendFailed { message_id, code } = WardEvent::from(Event::SendFailed {
        message_id: [8; 16],
        code: ErrorCode::NotFound,
    }) else {
        panic!("not SendFailed");
    };
    assert_eq!((message_id, code.as_str()), (vec![8; 16], "NOT_FOUND"));
}

fn in_thread(text: &str, party: &str) -> Message {
    let mut message = Message::urgent(text);
    message.sent_at_ms = 5;
    message.role = Some(RoleThread {
        role_id: "cardiology-oncall".to_owned(),
        party: party.to_owned(),
    });
    message
}

#[test]
fn role_threads_and_handoffs_are_mapped() {
    let event = WardEvent::from(Event::Message(IncomingMessage {
        sender_user: "nurse.diaz".to_owned(),
        sender_device: [1; 32],
        message_id: [2; 16],
        sent_at_ms: 5,
        received_at_ms: 6,
        message: in_thread("Bed 4: chest pain", "nurse.diaz"),
        from_own_device: false,
    }));
    let WardEvent::Message { role, group_id, .. } = event else {
        panic!("not a message");
    };
    assert!(group_id.is_none());
    assert!(
        role == Some(WardRoleThread {
            role_id: "cardiology-oncall".to_owned(),
            party: "nurse.diaz".to_owned(),
        }),
        "the thread changed"
    );

    let mut with_file = in_thread("ECG attached", "nurse.diaz");
    with_file.priority = Priority::Routine;
    with_file.attachments = vec![Attachment::try_from(attachment()).unwrap()];
    let event = WardEvent::from(Event::RoleHandoff {
        role_id: "cardiology-oncall".to_owned(),
        from_user: "dr.adams".to_owned(),
        ends_at: 1_767_225_600,
        messages: vec![
            HandedOver {
                from_user: "nurse.diaz".to_owned(),
                message_id: [3; 16],
                message: in_thread("Bed 4: chest pain", "nurse.diaz"),
            },
            HandedOver {
                from_user: "dr.adams".to_owned(),
                message_id: [4; 16],
                message: with_file,
            },
        ],
    });
    let WardEvent::RoleHandoff {
        role_id,
        from_user,
        ends_at,
        messages,
    } = event
    else {
        panic!("not a handoff");
    };
    assert_eq!(
        (role_id.as_str(), from_user.as_str(), ends_at),
        ("cardiology-oncall", "dr.adams", 1_767_225_600)
    );
    assert!(
        messages
            == vec![
                WardHandedOver {
                    from_user: "nurse.diaz".to_owned(),
                    message_id: vec![3; 16],
                    text: "Bed 4: chest pain".to_owned(),
                    urgent: true,
                    attachments: Vec::new(),
                    sent_at_ms: 5,
                    party: "nurse.diaz".to_owned(),
                },
                WardHandedOver {
                    from_user: "dr.adams".to_owned(),
                    message_id: vec![4; 16],
                    text: "ECG attached".to_owned(),
                    urgent: false,
                    attachments: vec![attachment()],
                    sent_at_ms: 5,
                    party: "nurse.diaz".to_owned(),
                },
            ],
        "the handed-over messages changed"
    );

    for (reason, expected) in [
        (HandoffRefusal::NoAdminKeys, WardHandoffRefusal::NoAdminKeys),
        (HandoffRefusal::NoSchedule, WardHandoffRefusal::NoSchedule),
        (
            HandoffRefusal::NotTheHolder,
            WardHandoffRefusal::NotTheHolder,
        ),
        (HandoffRefusal::NotEnded, WardHandoffRefusal::NotEnded),
        (
            HandoffRefusal::NotTheSuccessor,
            WardHandoffRefusal::NotTheSuccessor,
        ),
    ] {
        let WardEvent::HandoffRefused {
            role_id,
            from_user,
            reason,
        } = WardEvent::from(Event::HandoffRefused {
            role_id: "cardiology-oncall".to_owned(),
            from_user: "mallory".to_owned(),
            reason,
        })
        else {
            panic!("not a refusal");
        };
        assert_eq!(
            (role_id.as_str(), from_user.as_str(), reason),
            ("cardiology-oncall", "mallory", expected)
        );
    }
}
