//! What a ratchet message carries between Ward clients: the content format
//! `ward.content.v1` (spec/12-message-content.md). `ward-client` uses it
//! as `ward_client::content`.
//!
//! [`encode`] turns a [`Content`] into the plaintext a session encrypts: the
//! canonical protobuf `Content` (`proto/schemas/ward_content.proto`),
//! padded to a multiple of [`PAD_BLOCK`] bytes ([`pad`]). [`decode`] undoes
//! both and checks every bound, in the order of spec/12, "Decoding".

#![forbid(unsafe_code)]

use prost::Message as _;
use ward_proto::content_v1 as pb;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

mod group;
mod role;

pub use group::{GroupControl, GroupControlBody};
pub use role::{HandedOver, Handoff, MAX_HANDOFF_ENTRIES, MAX_USER_ID_LEN, RoleThread};

/// Padded plaintexts are a multiple of this many bytes (CNT-2).
pub const PAD_BLOCK: usize = 256;
/// The first padding byte (ISO/IEC 7816-4); the others are zero.
pub const PAD_MARKER: u8 = 0x80;
/// The longest padded plaintext, in bytes: 192 KiB, below the relay's
/// default `max_ciphertext_len` of 256 KiB with room for the ratchet
/// and pre-key framing.
pub const MAX_PADDED_LEN: usize = 192 * 1024;
/// The longest message text, in bytes of UTF-8.
pub const MAX_TEXT_LEN: usize = 64 * 1024;
/// The most attachments in one message.
pub const MAX_ATTACHMENTS: usize = 32;
/// The longest attachment reference, in bytes.
pub const MAX_REFERENCE_LEN: usize = 2048;
/// The longest attachment media type, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 255;
/// The most message ids in one receipt.
pub const MAX_RECEIPT_IDS: usize = 1000;

/// Why content did not encode or decode. Names fields and bounds, never
/// contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// The padded length is zero, not a multiple of [`PAD_BLOCK`] or above
    /// [`MAX_PADDED_LEN`], or the padding is not `0x80` then at most
    /// 255 zero bytes.
    #[error("bad padding")]
    Padding,
    /// The unpadded bytes are not a protobuf `Content`.
    #[error("not a content protobuf")]
    Protobuf,
    /// `Content` carries no body this version knows (none, or a later kind).
    #[error("no known content kind")]
    UnknownKind,
    /// A text, list or string above its bound.
    #[error("{field} is too long")]
    TooLong {
        /// The field.
        field: &'static str,
    },
    /// A fixed-length bytes field of another length.
    #[error("{field} has the wrong length")]
    WrongLength {
        /// The field.
        field: &'static str,
    },
    /// A required field is empty (an attachment reference, a receipt's ids).
    #[error("{field} is empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// A value outside what the field may hold: a role id that is no
    /// directory name, a role thread on a group message, a handed-over
    /// message of another role's thread.
    #[error("{field} is not valid")]
    Invalid {
        /// The field.
        field: &'static str,
    },
    /// An enum value this version does not know (or `RECEIPT_KIND_UNSPECIFIED`).
    #[error("{field} has an unknown value")]
    UnknownValue {
        /// The field.
        field: &'static str,
    },
}

/// How urgent a message is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// The default.
    #[default]
    Routine,
    /// Urgent: the app alerts (and escalates) accordingly.
    Urgent,
}

/// The key of an attachment's encrypted blob (ChaCha20-Poly1305, 32
/// bytes). Zeroized on drop; its `Debug` shows nothing.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct AttachmentKey([u8; 32]);

impl AttachmentKey {
    /// Wraps a key.
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// The key's bytes.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AttachmentKey(<redacted>)")
    }
}

/// A file (an image, a lab PDF) encrypted under its own key and stored
/// elsewhere; the message carries where it is and how to open it.
#[derive(Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Where the encrypted blob lives (a URL or an opaque reference),
    /// 1 to [`MAX_REFERENCE_LEN`] bytes.
    pub reference: String,
    /// Its media type (`image/jpeg`), at most [`MAX_CONTENT_TYPE_LEN`] bytes.
    pub content_type: String,
    /// The plaintext size of the blob, in bytes.
    pub size: u64,
    /// SHA-256 of the encrypted blob.
    pub sha256: [u8; 32],
    /// The blob's ChaCha20-Poly1305 key.
    pub key: AttachmentKey,
}

impl core::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Attachment")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A message a person wrote.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The text, at most [`MAX_TEXT_LEN`] bytes of UTF-8.
    pub text: String,
    /// At most [`MAX_ATTACHMENTS`] attachments.
    pub attachments: Vec<Attachment>,
    /// Its priority.
    pub priority: Priority,
    /// When it was written, by the sender's clock, milliseconds since the
    /// Unix epoch (`Messenger::send` of ward-client fills in
    /// zero with the current time).
    pub sent_at_ms: u64,
    /// The group it was sent to; `None` for a 1:1 message. Set by
    /// `Messenger::send_to_group` of ward-client.
    pub group_id: Option<[u8; 16]>,
    /// The role thread it belongs to; `None` for other messages. Set by
    /// `Messenger::send_to_role` and `Messenger::reply_in_role_thread` of
    /// ward-client.
    pub role: Option<RoleThread>,
}

impl Message {
    /// A routine text message.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// An urgent text message.
    pub fn urgent(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            priority: Priority::Urgent,
            ..Self::default()
        }
    }
}

impl core::fmt::Debug for Message {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Patient data: lengths and flags only.
        f.debug_struct("Message")
            .field("text_len", &self.text.len())
            .field("attachments", &self.attachments.len())
            .field("priority", &self.priority)
            .field("in_group", &self.group_id.is_some())
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// What a receipt reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceiptKind {
    /// The messages reached a device of the recipient (sent by the SDK).
    Delivered,
    /// The recipient read them (the app's call).
    Read,
}

/// Tells a sender that messages arrived or were read.
#[derive(Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// The message ids, 1 to [`MAX_RECEIPT_IDS`].
    pub message_ids: Vec<[u8; 16]>,
}

impl core::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Receipt")
            .field("kind", &self.kind)
            .field("count", &self.message_ids.len())
            .finish()
    }
}

/// The plaintext of one ratchet message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A message.
    Message(Message),
    /// A receipt.
    Receipt(Receipt),
    /// Something a member device tells another about a group, pairwise.
    Group(GroupControl),
    /// A role's recent threads, from its outgoing holder to the next.
    Handoff(Handoff),
}

fn check_len(len: usize, max: usize, field: &'static str) -> Result<(), ContentError> {
    if len > max {
        Err(ContentError::TooLong { field })
    } else {
        Ok(())
    }
}

fn check_attachment(a: &Attachment) -> Result<(), ContentError> {
    if a.reference.is_empty() {
        return Err(ContentError::Empty {
            field: "attachment.reference",
        });
    }
    check_len(a.reference.len(), MAX_REFERENCE_LEN, "attachment.reference")?;
    check_len(
        a.content_type.len(),
        MAX_CONTENT_TYPE_LEN,
        "attachment.content_type",
    )
}

/// Checks the bounds of spec/12 on a content value (CNT-4 to CNT-7).
pub fn validate(content: &Content) -> Result<(), ContentError> {
    match content {
        Content::Message(m) => validate_message(m),
        Content::Group(g) => group::validate(g),
        Content::Handoff(h) => role::validate(h),
        Content::Receipt(r) => {
            if r.message_ids.is_empty() {
                return Err(ContentError::Empty {
                    field: "receipt.message_ids",
                });
            }
            check_len(r.message_ids.len(), MAX_RECEIPT_IDS, "receipt.message_ids")
        }
    }
}

fn validate_message(m: &Message) -> Result<(), ContentError> {
    check_len(m.text.len(), MAX_TEXT_LEN, "message.text")?;
    check_len(m.attachments.len(), MAX_ATTACHMENTS, "message.attachments")?;
    m.attachments.iter().try_for_each(check_attachment)?;
    role::check_thread(m)
}

fn to_proto(content: &Content) -> pb::Content {
    let body = match content {
        Content::Message(m) => pb::content::Body::Message(message_to_proto(m)),
        Content::Group(g) => pb::content::Body::Group(group::to_proto(g)),
        Content::Handoff(h) => pb::content::Body::Handoff(role::to_proto(h)),
        Content::Receipt(r) => pb::content::Body::Receipt(pb::Receipt {
            kind: match r.kind {
                ReceiptKind::Delivered => pb::ReceiptKind::Delivered,
                ReceiptKind::Read => pb::ReceiptKind::Read,
            } as i32,
            message_ids: r.message_ids.iter().map(|id| id.to_vec()).collect(),
        }),
    };
    pb::Content { body: Some(body) }
}

fn message_to_proto(m: &Message) -> pb::Message {
    pb::Message {
        text: m.text.clone(),
        attachments: m
            .attachments
            .iter()
            .map(|a| pb::Attachment {
                reference: a.reference.clone(),
                content_type: a.content_type.clone(),
                size: a.size,
                sha256: a.sha256.to_vec(),
                key: a.key.expose_secret().to_vec(),
            })
            .collect(),
        priority: match m.priority {
            Priority::Routine => pb::Priority::Routine,
            Priority::Urgent => pb::Priority::Urgent,
        } as i32,
        sent_at_ms: m.sent_at_ms,
        group_id: m.group_id.map(|id| id.to_vec()).unwrap_or_default(),
        role: m.role.as_ref().map(role::thread_to_proto),
    }
}

fn array<const N: usize>(bytes: &[u8], field: &'static str) -> Result<[u8; N], ContentError> {
    bytes
        .try_into()
        .map_err(|_| ContentError::WrongLength { field })
}

fn from_proto(content: &pb::Content) -> Result<Content, ContentError> {
    match &content.body {
        None => Err(ContentError::UnknownKind),
        Some(pb::content::Body::Message(m)) => message_from_proto(m).map(Content::Message),
        Some(pb::content::Body::Group(g)) => group::from_proto(g).map(Content::Group),
        Some(pb::content::Body::Handoff(h)) => role::from_proto(h).map(Content::Handoff),
        Some(pb::content::Body::Receipt(r)) => {
            let kind = match pb::ReceiptKind::try_from(r.kind) {
                Ok(pb::ReceiptKind::Delivered) => ReceiptKind::Delivered,
                Ok(pb::ReceiptKind::Read) => ReceiptKind::Read,
                Ok(pb::ReceiptKind::Unspecified) | Err(_) => {
                    return Err(ContentError::UnknownValue {
                        field: "receipt.kind",
                    });
                }
            };
            if r.message_ids.is_empty() {
                return Err(ContentError::Empty {
                    field: "receipt.message_ids",
                });
            }
            check_len(r.message_ids.len(), MAX_RECEIPT_IDS, "receipt.message_ids")?;
            let message_ids = r
                .message_ids
                .iter()
                .map(|id| array::<16>(id, "receipt.message_id"))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Content::Receipt(Receipt { kind, message_ids }))
        }
    }
}

fn message_from_proto(m: &pb::Message) -> Result<Message, ContentError> {
    check_len(m.text.len(), MAX_TEXT_LEN, "message.text")?;
    check_len(m.attachments.len(), MAX_ATTACHMENTS, "message.attachments")?;
    let priority = match pb::Priority::try_from(m.priority) {
        Ok(pb::Priority::Routine) => Priority::Routine,
        Ok(pb::Priority::Urgent) => Priority::Urgent,
        Err(_) => {
            return Err(ContentError::UnknownValue {
                field: "message.priority",
            });
        }
    };
    let attachments = m
        .attachments
        .iter()
        .map(|a| {
            let attachment = Attachment {
                reference: a.reference.clone(),
                content_type: a.content_type.clone(),
                size: a.size,
                sha256: array(&a.sha256, "attachment.sha256")?,
                key: AttachmentKey(array(&a.key, "attachment.key")?),
            };
            check_attachment(&attachment)?;
            Ok(attachment)
        })
        .collect::<Result<Vec<_>, ContentError>>()?;
    let group_id = match m.group_id.as_slice() {
        [] => None,
        id => Some(array::<16>(id, "message.group_id")?),
    };
    let message = Message {
        text: m.text.clone(),
        attachments,
        priority,
        sent_at_ms: m.sent_at_ms,
        group_id,
        role: m.role.as_ref().map(role::thread_from_proto),
    };
    role::check_thread(&message)?;
    Ok(message)
}

/// Pads `encoded` (ISO/IEC 7816-4): appends `0x80`, then the fewest zero
/// bytes that make the length a multiple of [`PAD_BLOCK`] (CNT-2).
pub fn pad(encoded: &[u8]) -> Zeroizing<Vec<u8>> {
    let len = (encoded.len() / PAD_BLOCK + 1) * PAD_BLOCK;
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    out.extend_from_slice(encoded);
    out.push(PAD_MARKER);
    out.resize(len, 0);
    out
}

/// Removes the padding of [`pad`], refusing anything [`pad`] could not
/// have produced (CNT-3).
pub fn unpad(padded: &[u8]) -> Result<&[u8], ContentError> {
    if padded.is_empty() || !padded.len().is_multiple_of(PAD_BLOCK) || padded.len() > MAX_PADDED_LEN
    {
        return Err(ContentError::Padding);
    }
    let tail = &padded[padded.len() - PAD_BLOCK..];
    let zeros = tail.iter().rev().take_while(|&&b| b == 0).count();
    match tail.len().checked_sub(zeros + 1).map(|i| tail[i]) {
        Some(PAD_MARKER) => Ok(&padded[..padded.len() - zeros - 1]),
        _ => Err(ContentError::Padding),
    }
}

/// Encodes `content` as the plaintext of a ratchet message: bounds checked
/// (CNT-4 to CNT-7), canonical protobuf (CNT-1), padded (CNT-2).
pub fn encode(content: &Content) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    validate(content)?;
    let message = to_proto(content);
    let encoded = Zeroizing::new(message.encode_to_vec());
    let padded = pad(&encoded);
    if padded.len() > MAX_PADDED_LEN {
        return Err(ContentError::TooLong { field: "content" });
    }
    Ok(padded)
}

/// Test helper for the `Content` members' property tests: `body` as the
/// bytes of the `Content` field `tag`, padded, must decode to a typed
/// error or to content that encodes back to itself, never panic.
#[cfg(test)]
fn check_arbitrary_field(tag: u8, body: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
    let mut encoded = vec![tag];
    prost::encoding::encode_varint(body.len() as u64, &mut encoded);
    encoded.extend_from_slice(body);
    if let Ok(content) = decode(&pad(&encoded)) {
        let again = encode(&content).expect("decoded content encodes");
        proptest::prop_assert_eq!(decode(&again), Ok(content));
    }
    Ok(())
}

/// Decodes the plaintext of a ratchet message, with the checks of spec/12
/// "Decoding", in order (CNT-3, CNT-8).
pub fn decode(padded: &[u8]) -> Result<Content, ContentError> {
    let encoded = unpad(padded)?;
    let message = pb::Content::decode(encoded).map_err(|_| ContentError::Protobuf)?;
    from_proto(&message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attachment(n: u8) -> Attachment {
        Attachment {
            reference: format!("blob://ward/{n}"),
            content_type: "application/pdf".to_owned(),
            size: 1234 + u64::from(n),
            sha256: [n; 32],
            key: AttachmentKey::new([n ^ 0x55; 32]),
        }
    }

    fn pb_message(text: String, attachments: Vec<pb::Attachment>, priority: i32) -> pb::Content {
        pb::Content {
            body: Some(pb::content::Body::Message(pb::Message {
                text,
                attachments,
                priority,
                sent_at_ms: 0,
                group_id: Vec::new(),
                role: None,
            })),
        }
    }

    fn pb_attachment(reference: &str, sha256_len: usize, key_len: usize) -> pb::Attachment {
        pb::Attachment {
            reference: reference.to_owned(),
            content_type: String::new(),
            size: 0,
            sha256: vec![0; sha256_len],
            key: vec![0; key_len],
        }
    }

    fn padded_proto(message: &pb::Content) -> Zeroizing<Vec<u8>> {
        pad(&message.encode_to_vec())
    }

    #[test]
    fn padding_is_minimal_and_a_multiple_of_the_block() {
        for len in [0usize, 1, 254, 255, 256, 257, 511, 512] {
            let data = vec![0xAB; len];
            let padded = pad(&data);
            assert_eq!(padded.len() % PAD_BLOCK, 0);
            assert!(padded.len() > len && padded.len() <= len + PAD_BLOCK);
            assert_eq!(padded[len], PAD_MARKER);
            assert_eq!(unpad(&padded).unwrap(), &data[..]);
        }
        // Data ending in 0x80 or zeros survives.
        let data = [1u8, 0x80, 0, 0];
        assert_eq!(unpad(&pad(&data)).unwrap(), &data[..]);
    }

    #[test]
    fn bad_padding_is_refused() {
        assert_eq!(unpad(&[]), Err(ContentError::Padding));
        assert_eq!(unpad(&[0x80]), Err(ContentError::Padding));
        assert_eq!(unpad(&[0u8; 256]), Err(ContentError::Padding));
        let mut p = pad(b"hi").to_vec();
        *p.last_mut().unwrap() = 1;
        assert_eq!(unpad(&p), Err(ContentError::Padding));
        // A marker in an earlier block: the padding would exceed a block.
        let mut p = vec![0u8; 512];
        p[100] = PAD_MARKER;
        assert_eq!(unpad(&p), Err(ContentError::Padding));
        // Too long.
        let p = pad(&vec![1u8; MAX_PADDED_LEN]);
        assert_eq!(unpad(&p), Err(ContentError::Padding));
        // Extra block of zeros.
        let mut p = pad(b"x").to_vec();
        p.extend_from_slice(&[0u8; 256]);
        assert_eq!(unpad(&p), Err(ContentError::Padding));
    }

    #[test]
    fn a_text_message_has_the_specified_bytes() {
        // spec/12, "Example".
        let content = Content::Message(Message {
            text: "Bed 4".to_owned(),
            attachments: Vec::new(),
            priority: Priority::Urgent,
            sent_at_ms: 1_700_000_000_000,
            group_id: None,
            role: None,
        });
        let padded = encode(&content).unwrap();
        let expected_head: &[u8] = &[
            0x0a, 0x10, // Content.message, 16 bytes
            0x0a, 0x05, b'B', b'e', b'd', b' ', b'4', // text
            0x18, 0x01, // priority URGENT
            0x20, 0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31, // sent_at_ms
            0x80, // padding marker
        ];
        assert_eq!(padded.len(), 256);
        assert_eq!(&padded[..expected_head.len()], expected_head);
        assert!(padded[expected_head.len()..].iter().all(|&b| b == 0));
        assert_eq!(decode(&padded).unwrap(), content);
    }

    #[test]
    fn a_receipt_round_trips() {
        let content = Content::Receipt(Receipt {
            kind: ReceiptKind::Read,
            message_ids: vec![[1; 16], [2; 16]],
        });
        assert_eq!(decode(&encode(&content).unwrap()).unwrap(), content);
    }

    #[test]
    fn bounds_are_enforced_on_encode_and_decode() {
        let long = Content::Message(Message::text("x".repeat(MAX_TEXT_LEN + 1)));
        assert_eq!(
            encode(&long),
            Err(ContentError::TooLong {
                field: "message.text"
            })
        );
        let many = Content::Message(Message {
            attachments: (0..=MAX_ATTACHMENTS as u8).map(attachment).collect(),
            ..Message::text("x")
        });
        assert_eq!(
            encode(&many).map(|_| ()),
            Err(ContentError::TooLong {
                field: "message.attachments"
            })
        );
        let at_bounds = Content::Message(Message {
            text: "x".repeat(MAX_TEXT_LEN),
            attachments: (0..MAX_ATTACHMENTS as u8).map(attachment).collect(),
            ..Message::default()
        });
        assert_eq!(decode(&encode(&at_bounds).unwrap()).unwrap(), at_bounds);
        let empty = Content::Receipt(Receipt {
            kind: ReceiptKind::Delivered,
            message_ids: Vec::new(),
        });
        assert_eq!(
            encode(&empty).map(|_| ()),
            Err(ContentError::Empty {
                field: "receipt.message_ids"
            })
        );
        // The same bounds on decode, for content another client encoded.
        let wire = pb_message("x".repeat(MAX_TEXT_LEN + 1), Vec::new(), 0);
        assert_eq!(
            decode(&padded_proto(&wire)),
            Err(ContentError::TooLong {
                field: "message.text"
            })
        );
    }

    #[test]
    fn malformed_content_gets_typed_errors() {
        let cases: Vec<(pb::Content, ContentError)> = vec![
            (pb::Content { body: None }, ContentError::UnknownKind),
            (
                pb_message(String::new(), Vec::new(), 7),
                ContentError::UnknownValue {
                    field: "message.priority",
                },
            ),
            (
                pb_message(String::new(), vec![pb_attachment("r", 31, 32)], 0),
                ContentError::WrongLength {
                    field: "attachment.sha256",
                },
            ),
            (
                pb_message(String::new(), vec![pb_attachment("r", 32, 33)], 0),
                ContentError::WrongLength {
                    field: "attachment.key",
                },
            ),
            (
                pb_message(String::new(), vec![pb_attachment("", 32, 32)], 0),
                ContentError::Empty {
                    field: "attachment.reference",
                },
            ),
            (
                pb::Content {
                    body: Some(pb::content::Body::Receipt(pb::Receipt {
                        kind: 0,
                        message_ids: vec![vec![0; 16]],
                    })),
                },
                ContentError::UnknownValue {
                    field: "receipt.kind",
                },
            ),
            (
                pb::Content {
                    body: Some(pb::content::Body::Receipt(pb::Receipt {
                        kind: 1,
                        message_ids: vec![vec![0; 15]],
                    })),
                },
                ContentError::WrongLength {
                    field: "receipt.message_id",
                },
            ),
            (
                pb::Content {
                    body: Some(pb::content::Body::Receipt(pb::Receipt {
                        kind: 2,
                        message_ids: vec![vec![0; 16]; MAX_RECEIPT_IDS + 1],
                    })),
                },
                ContentError::TooLong {
                    field: "receipt.message_ids",
                },
            ),
        ];
        for (wire, error) in cases {
            assert_eq!(decode(&padded_proto(&wire)), Err(error));
        }
        // Not protobuf: a truncated length-delimited field.
        assert_eq!(
            decode(&pad(&[0x0a, 0x05, 0x01])),
            Err(ContentError::Protobuf)
        );
        // An unknown oneof member is skipped and leaves no body.
        assert_eq!(decode(&pad(&[0x7a, 0x00])), Err(ContentError::UnknownKind));
    }

    #[test]
    fn debug_shows_no_content() {
        let m = Message {
            attachments: vec![attachment(7)],
            ..Message::text("potassium 6.1")
        };
        let shown = format!("{:?}", Content::Message(m));
        assert!(!shown.contains("potassium"));
        assert!(!shown.contains("blob://"));
        assert!(!shown.contains("82"), "{shown}"); // 7 ^ 0x55 = 0x52 = 82
    }

    fn arb_attachment() -> impl Strategy<Value = Attachment> {
        (
            "[a-z0-9:/._-]{1,64}",
            "[a-z/+.-]{0,40}",
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
        )
            .prop_map(|(reference, content_type, size, sha256, key)| Attachment {
                reference,
                content_type,
                size,
                sha256,
                key: AttachmentKey::new(key),
            })
    }

    fn arb_content() -> impl Strategy<Value = Content> {
        prop_oneof![
            (
                ".{0,200}",
                proptest::collection::vec(arb_attachment(), 0..4),
                any::<bool>(),
                any::<u64>(),
                proptest::option::of(any::<[u8; 16]>()),
                proptest::option::of(("[a-z0-9.-]{1,32}", ".{1,40}")),
            )
                .prop_map(|(text, attachments, urgent, sent_at_ms, group_id, role)| {
                    // A role thread is never a group message.
                    let role = role
                        .filter(|_| group_id.is_none())
                        .and_then(|(role_id, party)| {
                            (party.len() <= MAX_USER_ID_LEN)
                                .then_some(RoleThread { role_id, party })
                        });
                    Content::Message(Message {
                        text,
                        attachments,
                        priority: if urgent {
                            Priority::Urgent
                        } else {
                            Priority::Routine
                        },
                        sent_at_ms,
                        group_id,
                        role,
                    })
                }),
            (
                any::<bool>(),
                proptest::collection::vec(any::<[u8; 16]>(), 1..20)
            )
                .prop_map(|(read, message_ids)| Content::Receipt(Receipt {
                    kind: if read {
                        ReceiptKind::Read
                    } else {
                        ReceiptKind::Delivered
                    },
                    message_ids,
                })),
        ]
    }

    proptest! {
        #[test]
        fn content_round_trips_canonically(content in arb_content()) {
            let padded = encode(&content).unwrap();
            prop_assert_eq!(padded.len() % PAD_BLOCK, 0);
            let decoded = decode(&padded).unwrap();
            prop_assert_eq!(&decoded, &content);
            // Canonical: encoding the decoded value gives the same bytes.
            prop_assert_eq!(encode(&decoded).unwrap(), padded);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = decode(&bytes);
            let _ = decode(&pad(&bytes));
        }
    }
}
