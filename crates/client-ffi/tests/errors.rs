//! The mapping of [`ClientError`] to [`WardError`]: the variants foreign
//! code branches on.

use ward_client::wire::ErrorCode;
use ward_client::{ClientError, ContentError, StoreError};
use ward_client_ffi::WardError;

#[test]
fn store_key_and_lock_errors_are_their_own_variants() {
    assert!(matches!(
        WardError::from(ClientError::Store(StoreError::WrongKey)),
        WardError::WrongKey
    ));
    assert!(matches!(
        WardError::from(ClientError::Locked),
        WardError::Locked
    ));
    assert!(matches!(
        WardError::from(ClientError::Store(StoreError::Locked)),
        WardError::Locked
    ));
    assert!(matches!(
        WardError::from(ClientError::Store(StoreError::InUse)),
        WardError::Store { .. }
    ));
}

#[test]
fn refusals_carry_the_code_without_its_prefix() {
    let error = WardError::from(ClientError::Refused {
        code: ErrorCode::RateLimited,
        message: "slow down".to_owned(),
        current_devices: Vec::new(),
        retry_after_ms: 1500,
    });
    match error {
        WardError::Refused {
            code,
            detail,
            retry_after_ms,
        } => {
            assert_eq!(code, "RATE_LIMITED");
            assert_eq!(detail, "slow down");
            assert_eq!(retry_after_ms, 1500);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_other_classes_map_as_documented() {
    let cases = [
        (ClientError::Connect("refused".to_owned()), "Connection"),
        (ClientError::Stream("reset".to_owned()), "Connection"),
        (ClientError::UnexpectedResponse, "Protocol"),
        (ClientError::BundleMismatch, "Protocol"),
        (
            ClientError::Content(ContentError::TooLong {
                field: "message.text",
            }),
            "InvalidArgument",
        ),
        (ClientError::NotEnrolled, "NotEnrolled"),
        (ClientError::AlreadyEnrolled, "AlreadyEnrolled"),
        (ClientError::UnknownContact, "UnknownContact"),
        (ClientError::NoBundle, "Unreachable"),
    ];
    for (client, expected) in cases {
        let ward = WardError::from(client);
        let shown = format!("{ward:?}");
        assert!(shown.starts_with(expected), "{shown} is not {expected}");
    }
}

#[test]
fn a_pending_send_carries_its_id_and_being_offline_is_a_connection_error() {
    let error = WardError::from(ClientError::Pending {
        message_id: [7; 16],
        reason: Box::new(ClientError::Offline),
    });
    match error {
        WardError::Pending { message_id, detail } => {
            assert_eq!(message_id, vec![7; 16]);
            assert!(detail.contains("not connected"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        WardError::from(ClientError::Offline),
        WardError::Connection { .. }
    ));
}
