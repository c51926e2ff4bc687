//! The entry encoding: every entry round-trips; every accepted byte string is
//! the canonical encoding of exactly one entry; mutations are refused or
//! decode to a different entry that re-encodes to the mutated bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use proptest::prelude::*;
use ward_audit::entry::{MAX_DETAIL_LEN, MAX_ERROR_CODE_LEN, MAX_ID_LEN, MIN_ENTRY_LEN};
use ward_audit::{
    AuditEntry, DecodeError, Detail, DeviceId, ErrorCode, EventKind, MAX_ENTRY_LEN, MessageId,
    Outcome, UserId,
};

const ID_CHARS: &str = "[A-Za-z0-9._:@+-]";
const DETAIL_CHARS: &str = "[A-Za-z0-9._:@+ =,/-]";

fn id(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("{ID_CHARS}{{1,{max}}}")).unwrap()
}

fn entry() -> impl Strategy<Value = AuditEntry> {
    let ids = (
        proptest::option::of(id(MAX_ID_LEN).prop_map(|s| UserId::new(&s).unwrap())),
        proptest::option::of(id(MAX_ID_LEN).prop_map(|s| DeviceId::new(&s).unwrap())),
        proptest::option::of(id(MAX_ID_LEN).prop_map(|s| UserId::new(&s).unwrap())),
        proptest::option::of(id(MAX_ID_LEN).prop_map(|s| DeviceId::new(&s).unwrap())),
    );
    let rest = (
        any::<u64>(),
        any::<u64>(),
        0..EventKind::ALL.len(),
        proptest::option::of(any::<[u8; 16]>().prop_map(MessageId)),
        proptest::option::of(any::<u64>()),
        proptest::option::of(id(MAX_ERROR_CODE_LEN).prop_map(|s| ErrorCode::new(&s).unwrap())),
        proptest::option::of(
            proptest::string::string_regex(&format!("{DETAIL_CHARS}{{1,{MAX_DETAIL_LEN}}}"))
                .unwrap()
                .prop_map(|s| Detail::new(&s).unwrap()),
        ),
    );
    (ids, rest).prop_map(
        |(
            (actor_user, actor_device, target_user, target_device),
            (sequence, timestamp_ms, kind, message_id, size, error, detail),
        )| AuditEntry {
            sequence,
            timestamp_ms,
            kind: EventKind::ALL[kind],
            actor_user,
            actor_device,
            target_user,
            target_device,
            message_id,
            size,
            outcome: error.map_or(Outcome::Ok, Outcome::Error),
            detail,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_entry_round_trips(e in entry()) {
        let bytes = e.encode();
        prop_assert!(bytes.len() >= MIN_ENTRY_LEN && bytes.len() <= MAX_ENTRY_LEN);
        prop_assert_eq!(AuditEntry::decode(&bytes), Ok(e.clone()));
        // Deterministic.
        prop_assert_eq!(e.encode(), bytes);
    }

    /// Whatever a mutation yields, the decoder either refuses it or it is the
    /// canonical encoding of the entry it decodes to: no two byte strings
    /// decode to the same entry.
    #[test]
    fn mutations_are_refused_or_canonical(
        e in entry(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 0..3),
    ) {
        let mut bytes = e.encode();
        for (at, value) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        let keep = bytes.len() - cut.index(4).min(bytes.len());
        bytes.truncate(keep);
        bytes.extend_from_slice(&extra);
        if let Ok(decoded) = AuditEntry::decode(&bytes) {
            prop_assert_eq!(decoded.encode(), bytes);
        }
    }

    #[test]
    fn random_bytes_are_refused_or_canonical(bytes in prop::collection::vec(any::<u8>(), 0..500)) {
        if let Ok(decoded) = AuditEntry::decode(&bytes) {
            prop_assert_eq!(decoded.encode(), bytes);
        }
    }

    #[test]
    fn text_outside_the_alphabet_is_refused(s in "[^A-Za-z0-9._:@+-]") {
        prop_assert!(UserId::new(&s).is_err());
        let padded = format!("ok{s}ok");
        prop_assert!(DeviceId::new(&padded).is_err());
        prop_assert!(ErrorCode::new(&s).is_err());
    }
}

/// Every version byte but 0x01 is refused as such, whatever follows.
#[test]
fn only_version_one_is_known() {
    let mut bytes = AuditEntry::new(1, 2, EventKind::Send).encode();
    for v in 0..=255u8 {
        bytes[0] = v;
        let r = AuditEntry::decode(&bytes);
        if v == 1 {
            assert!(r.is_ok());
        } else {
            assert_eq!(r, Err(DecodeError::UnsupportedVersion(v)));
        }
    }
}

/// No field can hold more than its bound: a ciphertext does not fit.
#[test]
fn arbitrary_bytes_do_not_fit_anywhere() {
    let ciphertext = [0x8a_u8, 0x00, 0xff, 0x10, 0x7f];
    let as_text = String::from_utf8_lossy(&ciphertext);
    assert!(UserId::new(&as_text).is_err());
    assert!(DeviceId::new(&as_text).is_err());
    assert!(ErrorCode::new(&as_text).is_err());
    assert!(Detail::new(&as_text).is_err());
    let long = "a".repeat(MAX_ID_LEN + 1);
    assert_eq!(
        UserId::new(&long),
        Err(DecodeError::FieldLength {
            field: "user_id",
            len: MAX_ID_LEN + 1
        })
    );
    assert!(Detail::new(&"a".repeat(MAX_DETAIL_LEN + 1)).is_err());
    assert!(ErrorCode::new(&"a".repeat(MAX_ERROR_CODE_LEN + 1)).is_err());
}
