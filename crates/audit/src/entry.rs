//! Audit entries and their canonical encoding (spec/09-audit-log.md, "Entry
//! encoding").
//!
//! An entry is metadata only. Every field has a type that bounds it: integers,
//! a 16-byte message id, and short text fields over small fixed alphabets
//! ([`UserId`], [`DeviceId`], [`ErrorCode`], [`Detail`]). There is no field of
//! arbitrary bytes, so no message content (plaintext or ciphertext) can be put
//! into an entry, by mistake or otherwise (AUD-3). An encoded entry is at most
//! [`MAX_ENTRY_LEN`] bytes.
//!
//! ```text
//! entry = 0x01                         version
//!      || u64be(sequence)
//!      || u64be(timestamp_ms)
//!      || u8(kind)                     1..=10, EventKind
//!      || u8(presence)                 bit 0 actor_user .. bit 6 detail; bit 7 = 0
//!      || u8(outcome)                  0x00 ok, 0x01 error
//!      || [u8(len) || actor_user]      if bit 0; 1..=64 bytes, ID alphabet
//!      || [u8(len) || actor_device]    if bit 1; 1..=64 bytes, ID alphabet
//!      || [u8(len) || target_user]     if bit 2
//!      || [u8(len) || target_device]   if bit 3
//!      || [message_id]                 if bit 4; 16 bytes
//!      || [u64be(size)]                if bit 5
//!      || [u8(len) || error_code]      if outcome = 0x01; 1..=32 bytes, ID alphabet
//!      || [u8(len) || detail]          if bit 6; 1..=64 bytes, detail alphabet
//! ```

use core::fmt;

use crate::codec::Reader;
use crate::error::DecodeError;

/// The version byte of the entry encoding.
pub const ENTRY_VERSION: u8 = 0x01;
/// Longest user id or device id, in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Longest error code, in bytes.
pub const MAX_ERROR_CODE_LEN: usize = 32;
/// Longest detail text, in bytes.
pub const MAX_DETAIL_LEN: usize = 64;
/// Length of a message id.
pub const MESSAGE_ID_LEN: usize = 16;
/// Length of the fixed part of an encoded entry: version, sequence,
/// timestamp, kind, presence, outcome. Also the shortest encoded entry.
pub const MIN_ENTRY_LEN: usize = 1 + 8 + 8 + 1 + 1 + 1;
/// Longest encoded entry: every optional field present at its maximum length.
pub const MAX_ENTRY_LEN: usize = MIN_ENTRY_LEN
    + 4 * (1 + MAX_ID_LEN)
    + MESSAGE_ID_LEN
    + 8
    + (1 + MAX_ERROR_CODE_LEN)
    + (1 + MAX_DETAIL_LEN);

const PRESENT_ACTOR_USER: u8 = 1 << 0;
const PRESENT_ACTOR_DEVICE: u8 = 1 << 1;
const PRESENT_TARGET_USER: u8 = 1 << 2;
const PRESENT_TARGET_DEVICE: u8 = 1 << 3;
const PRESENT_MESSAGE_ID: u8 = 1 << 4;
const PRESENT_SIZE: u8 = 1 << 5;
const PRESENT_DETAIL: u8 = 1 << 6;
const PRESENT_RESERVED: u8 = 1 << 7;

const OUTCOME_OK: u8 = 0x00;
const OUTCOME_ERROR: u8 = 0x01;

/// The ID alphabet: `A-Z a-z 0-9` and `- . _ : @ +`. User ids, device ids and
/// error codes use it.
pub fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'@' | b'+')
}

/// The detail alphabet: the ID alphabet plus space, `=`, `,` and `/`.
pub fn is_detail_byte(b: u8) -> bool {
    is_id_byte(b) || matches!(b, b' ' | b'=' | b',' | b'/')
}

fn check_text(
    field: &'static str,
    bytes: &[u8],
    max: usize,
    allowed: fn(u8) -> bool,
) -> Result<(), DecodeError> {
    if bytes.is_empty() || bytes.len() > max {
        return Err(DecodeError::FieldLength {
            field,
            len: bytes.len(),
        });
    }
    match bytes.iter().find(|&&b| !allowed(b)) {
        Some(&byte) => Err(DecodeError::FieldCharacter { field, byte }),
        None => Ok(()),
    }
}

macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $allowed:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The longest value, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Checks the length and alphabet (AUD-3).
            pub fn new(text: &str) -> Result<Self, DecodeError> {
                Self::from_bytes(text.as_bytes())
            }

            fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
                check_text($field, bytes, $max, $allowed)?;
                // The alphabet is ASCII, so this cannot fail.
                match core::str::from_utf8(bytes) {
                    Ok(text) => Ok(Self(String::from(text))),
                    Err(_) => Err(DecodeError::FieldCharacter { field: $field, byte: 0x80 }),
                }
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            fn encode_into(&self, out: &mut Vec<u8>) {
                // At most `$max` (<= 64) bytes: the length fits in one byte.
                out.push(self.0.len() as u8);
                out.extend_from_slice(self.0.as_bytes());
            }

            fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                let len = usize::from(reader.u8()?);
                if len == 0 || len > $max {
                    return Err(DecodeError::FieldLength { field: $field, len });
                }
                Self::from_bytes(reader.take(len)?)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = DecodeError;
            fn try_from(text: &str) -> Result<Self, DecodeError> {
                Self::new(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }
    };
}

bounded_text!(
    /// A user id as the directory knows it: 1 to 64 bytes of the ID alphabet
    /// ([`is_id_byte`]), for example `alice@clinic.example`.
    UserId,
    "user_id",
    MAX_ID_LEN,
    is_id_byte
);

bounded_text!(
    /// A device id: 1 to 64 bytes of the ID alphabet ([`is_id_byte`]); the
    /// hex form of a 32-byte device key fits.
    DeviceId,
    "device_id",
    MAX_ID_LEN,
    is_id_byte
);

bounded_text!(
    /// A machine-readable error code: 1 to 32 bytes of the ID alphabet
    /// ([`is_id_byte`]), for example `stale_device_list`.
    ErrorCode,
    "error_code",
    MAX_ERROR_CODE_LEN,
    is_id_byte
);

bounded_text!(
    /// A short free-text detail: 1 to 64 bytes of the detail alphabet
    /// ([`is_detail_byte`]), for example `role=oncall-cardiology`.
    Detail,
    "detail",
    MAX_DETAIL_LEN,
    is_detail_byte
);

/// A message id: 16 bytes chosen by the sending client.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub [u8; MESSAGE_ID_LEN]);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// What happened. The code is the byte in the encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum EventKind {
    /// A device authenticated.
    AuthSuccess = 1,
    /// A device failed to authenticate.
    AuthFailure = 2,
    /// A message was accepted for delivery (durably stored).
    Send = 3,
    /// A message was delivered to a device.
    Delivery = 4,
    /// A device acknowledged a message; the relay deleted it.
    Acknowledgment = 5,
    /// A message expired undelivered and was deleted.
    Expiry = 6,
    /// A prekey bundle was handed out.
    PreKeyFetch = 7,
    /// A device enrolled.
    Enrollment = 8,
    /// A device or user was revoked.
    Revocation = 9,
    /// An administrator acted (issued a token, changed a role, ...).
    AdminAction = 10,
}

impl EventKind {
    /// Every kind, in code order.
    pub const ALL: [EventKind; 10] = [
        Self::AuthSuccess,
        Self::AuthFailure,
        Self::Send,
        Self::Delivery,
        Self::Acknowledgment,
        Self::Expiry,
        Self::PreKeyFetch,
        Self::Enrollment,
        Self::Revocation,
        Self::AdminAction,
    ];

    /// The byte that encodes this kind.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind a byte encodes.
    pub fn from_code(code: u8) -> Result<Self, DecodeError> {
        Self::ALL
            .into_iter()
            .find(|k| k.code() == code)
            .ok_or(DecodeError::UnknownEventKind(code))
    }

    /// The kind's name, as in the spec and the vectors.
    pub fn name(self) -> &'static str {
        match self {
            Self::AuthSuccess => "AuthSuccess",
            Self::AuthFailure => "AuthFailure",
            Self::Send => "Send",
            Self::Delivery => "Delivery",
            Self::Acknowledgment => "Acknowledgment",
            Self::Expiry => "Expiry",
            Self::PreKeyFetch => "PreKeyFetch",
            Self::Enrollment => "Enrollment",
            Self::Revocation => "Revocation",
            Self::AdminAction => "AdminAction",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the event ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Outcome {
    /// It succeeded.
    #[default]
    Ok,
    /// It failed with this code.
    Error(ErrorCode),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Error(code) => write!(f, "error:{code}"),
        }
    }
}

/// One audit log entry: who did what to whom, when, and how it ended.
///
/// Every field is bounded by its type; any value of this struct encodes, and
/// the encoding is at most [`MAX_ENTRY_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuditEntry {
    /// The entry's index in the log (its leaf index), from 0.
    pub sequence: u64,
    /// Milliseconds since the Unix epoch, as supplied by the relay.
    pub timestamp_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The user who acted, if known.
    pub actor_user: Option<UserId>,
    /// The device that acted, if known.
    pub actor_device: Option<DeviceId>,
    /// The user acted upon (recipient, revoked user, ...).
    pub target_user: Option<UserId>,
    /// The device acted upon.
    pub target_device: Option<DeviceId>,
    /// The message concerned.
    pub message_id: Option<MessageId>,
    /// A size in bytes (of the stored ciphertext, for example).
    pub size: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
    /// A short remark from a fixed small alphabet.
    pub detail: Option<Detail>,
}

impl AuditEntry {
    /// An entry with only the required fields; outcome `Ok`.
    pub fn new(sequence: u64, timestamp_ms: u64, kind: EventKind) -> Self {
        Self {
            sequence,
            timestamp_ms,
            kind,
            actor_user: None,
            actor_device: None,
            target_user: None,
            target_device: None,
            message_id: None,
            size: None,
            outcome: Outcome::Ok,
            detail: None,
        }
    }

    /// The canonical encoding (AUD-2).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_ENTRY_LEN);
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let Self {
            sequence,
            timestamp_ms,
            kind,
            actor_user,
            actor_device,
            target_user,
            target_device,
            message_id,
            size,
            outcome,
            detail,
        } = self;
        let mut presence = 0u8;
        for (present, bit) in [
            (actor_user.is_some(), PRESENT_ACTOR_USER),
            (actor_device.is_some(), PRESENT_ACTOR_DEVICE),
            (target_user.is_some(), PRESENT_TARGET_USER),
            (target_device.is_some(), PRESENT_TARGET_DEVICE),
            (message_id.is_some(), PRESENT_MESSAGE_ID),
            (size.is_some(), PRESENT_SIZE),
            (detail.is_some(), PRESENT_DETAIL),
        ] {
            if present {
                presence |= bit;
            }
        }
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&sequence.to_be_bytes());
        out.extend_from_slice(&timestamp_ms.to_be_bytes());
        out.push(kind.code());
        out.push(presence);
        out.push(match outcome {
            Outcome::Ok => OUTCOME_OK,
            Outcome::Error(_) => OUTCOME_ERROR,
        });
        if let Some(v) = actor_user {
            v.encode_into(out);
        }
        if let Some(v) = actor_device {
            v.encode_into(out);
        }
        if let Some(v) = target_user {
            v.encode_into(out);
        }
        if let Some(v) = target_device {
            v.encode_into(out);
        }
        if let Some(v) = message_id {
            out.extend_from_slice(&v.0);
        }
        if let Some(v) = size {
            out.extend_from_slice(&v.to_be_bytes());
        }
        if let Outcome::Error(code) = outcome {
            code.encode_into(out);
        }
        if let Some(v) = detail {
            v.encode_into(out);
        }
    }

    /// Decodes a canonical encoding; anything else is refused (AUD-2, AUD-3).
    ///
    /// Checks, in order: version byte, the fixed fields, kind, reserved
    /// presence bit, outcome byte, each present field in layout order (its
    /// length, then its bytes, then its alphabet), no trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != ENTRY_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let sequence = r.u64()?;
        let timestamp_ms = r.u64()?;
        let kind = EventKind::from_code(r.u8()?)?;
        let presence = r.u8()?;
        if presence & PRESENT_RESERVED != 0 {
            return Err(DecodeError::ReservedBits(presence));
        }
        let outcome_byte = r.u8()?;
        if outcome_byte != OUTCOME_OK && outcome_byte != OUTCOME_ERROR {
            return Err(DecodeError::UnknownOutcome(outcome_byte));
        }
        let has = |bit: u8| presence & bit != 0;
        let actor_user = has(PRESENT_ACTOR_USER)
            .then(|| UserId::decode_from(&mut r))
            .transpose()?;
        let actor_device = has(PRESENT_ACTOR_DEVICE)
            .then(|| DeviceId::decode_from(&mut r))
            .transpose()?;
        let target_user = has(PRESENT_TARGET_USER)
            .then(|| UserId::decode_from(&mut r))
            .transpose()?;
        let target_device = has(PRESENT_TARGET_DEVICE)
            .then(|| DeviceId::decode_from(&mut r))
            .transpose()?;
        let message_id = has(PRESENT_MESSAGE_ID)
            .then(|| r.array().map(MessageId))
            .transpose()?;
        let size = has(PRESENT_SIZE).then(|| r.u64()).transpose()?;
        let outcome = if outcome_byte == OUTCOME_ERROR {
            Outcome::Error(ErrorCode::decode_from(&mut r)?)
        } else {
            Outcome::Ok
        };
        let detail = has(PRESENT_DETAIL)
            .then(|| Detail::decode_from(&mut r))
            .transpose()?;
        r.finish()?;
        Ok(Self {
            sequence,
            timestamp_ms,
            kind,
            actor_user,
            actor_device,
            target_user,
            target_device,
            message_id,
            size,
            outcome,
            detail,
        })
    }

    /// The entry's leaf hash: `SHA-256(0x00 || encode())` (AUD-4).
    pub fn leaf_hash(&self) -> crate::Hash {
        crate::merkle::leaf_hash(&self.encode())
    }
}

impl TryFrom<&[u8]> for AuditEntry {
    type Error = DecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode(bytes)
    }
}

impl fmt::Display for AuditEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} t={} {}",
            self.sequence, self.timestamp_ms, self.kind
        )?;
        if self.actor_user.is_some() || self.actor_device.is_some() {
            f.write_str(" actor=")?;
            party(f, self.actor_user.as_ref(), self.actor_device.as_ref())?;
        }
        if self.target_user.is_some() || self.target_device.is_some() {
            f.write_str(" target=")?;
            party(f, self.target_user.as_ref(), self.target_device.as_ref())?;
        }
        if let Some(id) = &self.message_id {
            write!(f, " message={id}")?;
        }
        if let Some(size) = self.size {
            write!(f, " size={size}")?;
        }
        write!(f, " {}", self.outcome)?;
        if let Some(detail) = &self.detail {
            write!(f, " detail={:?}", detail.as_str())?;
        }
        Ok(())
    }
}

fn party(
    f: &mut fmt::Formatter<'_>,
    user: Option<&UserId>,
    device: Option<&DeviceId>,
) -> fmt::Result {
    match user {
        Some(user) => write!(f, "{user}")?,
        None => f.write_str("?")?,
    }
    if let Some(device) = device {
        write!(f, "/{device}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_entry() -> AuditEntry {
        AuditEntry {
            sequence: 0x0102_0304_0506_0708,
            timestamp_ms: 1_790_000_000_123,
            kind: EventKind::Send,
            actor_user: Some(UserId::new("alice@clinic.example").unwrap()),
            actor_device: Some(DeviceId::new("phone-1").unwrap()),
            target_user: Some(UserId::new("bob@clinic.example").unwrap()),
            target_device: Some(DeviceId::new("tablet-2").unwrap()),
            message_id: Some(MessageId([0xab; 16])),
            size: Some(4096),
            outcome: Outcome::Error(ErrorCode::new("stale_device_list").unwrap()),
            detail: Some(Detail::new("retry=1, route=/cardiology").unwrap()),
        }
    }

    fn max_entry() -> AuditEntry {
        let id = "x".repeat(MAX_ID_LEN);
        AuditEntry {
            actor_user: Some(UserId::new(&id).unwrap()),
            actor_device: Some(DeviceId::new(&id).unwrap()),
            target_user: Some(UserId::new(&id).unwrap()),
            target_device: Some(DeviceId::new(&id).unwrap()),
            message_id: Some(MessageId([0; 16])),
            size: Some(u64::MAX),
            outcome: Outcome::Error(ErrorCode::new(&"e".repeat(MAX_ERROR_CODE_LEN)).unwrap()),
            detail: Some(Detail::new(&"d".repeat(MAX_DETAIL_LEN)).unwrap()),
            ..AuditEntry::new(u64::MAX, u64::MAX, EventKind::AdminAction)
        }
    }

    #[test]
    fn minimal_entry_layout_is_exact() {
        let e = AuditEntry::new(5, 0x1122_3344_5566_7788, EventKind::Delivery);
        let bytes = e.encode();
        assert_eq!(
            hex::encode(&bytes),
            "01\
             0000000000000005\
             1122334455667788\
             04\
             00\
             00"
        );
        assert_eq!(bytes.len(), MIN_ENTRY_LEN);
        assert_eq!(AuditEntry::decode(&bytes), Ok(e));
    }

    #[test]
    fn full_entry_round_trips() {
        let e = full_entry();
        let bytes = e.encode();
        assert_eq!(AuditEntry::decode(&bytes), Ok(e.clone()));
        assert_eq!(bytes[18], 0x7f, "every presence bit but the reserved one");
        assert_eq!(bytes[19], 0x01);
    }

    #[test]
    fn longest_entry_is_max_entry_len() {
        let bytes = max_entry().encode();
        assert_eq!(bytes.len(), MAX_ENTRY_LEN);
        assert_eq!(MAX_ENTRY_LEN, 402);
        assert_eq!(AuditEntry::decode(&bytes), Ok(max_entry()));
    }

    #[test]
    fn every_kind_round_trips_and_unknown_codes_are_refused() {
        for kind in EventKind::ALL {
            let e = AuditEntry::new(1, 2, kind);
            assert_eq!(AuditEntry::decode(&e.encode()).unwrap().kind, kind);
        }
        for code in [0u8, 11, 0x7f, 0xff] {
            let mut bytes = AuditEntry::new(1, 2, EventKind::Send).encode();
            bytes[17] = code;
            assert_eq!(
                AuditEntry::decode(&bytes),
                Err(DecodeError::UnknownEventKind(code))
            );
        }
    }

    #[test]
    fn non_canonical_forms_are_refused() {
        let good = full_entry().encode();
        let refuse = |bytes: &[u8], err: DecodeError| {
            assert_eq!(
                AuditEntry::decode(bytes),
                Err(err),
                "{}",
                hex::encode(bytes)
            );
        };
        // Unknown version.
        let mut b = good.clone();
        b[0] = 0x02;
        refuse(&b, DecodeError::UnsupportedVersion(2));
        b[0] = 0x00;
        refuse(&b, DecodeError::UnsupportedVersion(0));
        // Trailing byte.
        let mut b = good.clone();
        b.push(0);
        refuse(&b, DecodeError::TrailingBytes);
        // Every truncation.
        for len in 0..good.len() {
            let err = AuditEntry::decode(&good[..len]).unwrap_err();
            assert_eq!(err, DecodeError::Truncated, "len {len}");
        }
        // Reserved presence bit.
        let mut b = good.clone();
        b[18] |= 0x80;
        refuse(&b, DecodeError::ReservedBits(0xff));
        // Unknown outcome.
        let mut b = good.clone();
        b[19] = 0x02;
        refuse(&b, DecodeError::UnknownOutcome(2));
        // A present field of length zero (the canonical form of "absent" is the
        // cleared presence bit).
        let mut b = AuditEntry::new(0, 0, EventKind::Send).encode();
        b[18] = PRESENT_ACTOR_USER;
        b.push(0);
        refuse(
            &b,
            DecodeError::FieldLength {
                field: "user_id",
                len: 0,
            },
        );
        // An over-long field, even with the bytes present.
        let mut b = AuditEntry::new(0, 0, EventKind::Send).encode();
        b[18] = PRESENT_DETAIL;
        b.push(65);
        b.extend_from_slice(&[b'a'; 65]);
        refuse(
            &b,
            DecodeError::FieldLength {
                field: "detail",
                len: 65,
            },
        );
        // A byte outside the alphabet.
        let mut b = AuditEntry::new(0, 0, EventKind::Send).encode();
        b[18] = PRESENT_TARGET_DEVICE;
        b.extend_from_slice(&[3, b'a', 0xff, b'b']);
        refuse(
            &b,
            DecodeError::FieldCharacter {
                field: "device_id",
                byte: 0xff,
            },
        );
        // An error code where the outcome says ok: trailing bytes.
        let mut b = AuditEntry::new(0, 0, EventKind::Send).encode();
        b.extend_from_slice(&[1, b'x']);
        refuse(&b, DecodeError::TrailingBytes);
        // Outcome error without its code: truncated.
        let mut b = AuditEntry::new(0, 0, EventKind::Send).encode();
        b[19] = OUTCOME_ERROR;
        refuse(&b, DecodeError::Truncated);
    }

    #[test]
    fn constructors_bound_every_text_field() {
        assert!(UserId::new("").is_err());
        assert!(UserId::new(&"a".repeat(65)).is_err());
        assert!(UserId::new(&"a".repeat(64)).is_ok());
        assert!(UserId::new("alice smith").is_err(), "no spaces in ids");
        assert!(UserId::new("ålice").is_err(), "ASCII only");
        assert!(ErrorCode::new(&"e".repeat(33)).is_err());
        assert!(Detail::new("a\nb").is_err());
        assert!(Detail::new("a b=c, d/e").is_ok());
        assert_eq!(
            Detail::new("\u{0}"),
            Err(DecodeError::FieldCharacter {
                field: "detail",
                byte: 0
            })
        );
    }

    #[test]
    fn display_is_one_line() {
        let text = full_entry().to_string();
        assert_eq!(
            text,
            "#72623859790382856 t=1790000000123 Send actor=alice@clinic.example/phone-1 \
             target=bob@clinic.example/tablet-2 message=abababababababababababababababab \
             size=4096 error:stale_device_list detail=\"retry=1, route=/cardiology\""
        );
    }
}
