//! What member devices tell each other about a group, inside their
//! pairwise sessions (spec/12 `GroupControl`, spec/14 "Carrying groups").
//! The inner formats (`0x0b` changes, `0x0d` welcomes, `0x09`
//! distributions, `0x08` group messages) are ward-core's and are checked
//! there; this layer checks only what makes the envelope well formed.

use ward_proto::content_v1 as pb;
use zeroize::Zeroizing;

use super::{
    ContentError, MAX_RECEIPT_IDS, Message, array, check_len, message_from_proto, message_to_proto,
    validate_message,
};

/// A group's control message: which group, and what about it.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupControl {
    /// The group, 16 bytes.
    pub group_id: [u8; 16],
    /// What is said about it.
    pub body: GroupControlBody,
}

/// What a [`GroupControl`] carries.
#[derive(Clone, PartialEq, Eq)]
pub enum GroupControlBody {
    /// A signed membership change (`0x0b`), for every member device.
    Change(Vec<u8>),
    /// The roster (`0x0d`), for a device an applied change added.
    Welcome(Vec<u8>),
    /// The sender's chain (`0x09`), and the group message (`0x08`) it came
    /// with, empty when it answers a [`GroupControlBody::ChainRequest`].
    Key {
        /// The distribution: secret, zeroized on drop.
        distribution: Zeroizing<Vec<u8>>,
        /// The group message sent with it, if any.
        message: Vec<u8>,
    },
    /// A chain the sender lacks (SK-13), and the messages that named it.
    ChainRequest {
        /// The chain's id.
        chain_id: [u8; 16],
        /// The messages that could not be opened, 1 to
        /// [`MAX_RECEIPT_IDS`](super::MAX_RECEIPT_IDS).
        message_ids: Vec<[u8; 16]>,
    },
    /// A group message again, for a device that lacked its chain.
    Resent {
        /// The id it was first sent with.
        message_id: [u8; 16],
        /// Its content; `group_id` is the control's.
        message: Message,
    },
}

impl core::fmt::Debug for GroupControl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Keys and rosters are not for logs: the kind only.
        let kind = match &self.body {
            GroupControlBody::Change(_) => "change",
            GroupControlBody::Welcome(_) => "welcome",
            GroupControlBody::Key { .. } => "key",
            GroupControlBody::ChainRequest { .. } => "chain_request",
            GroupControlBody::Resent { .. } => "resent",
        };
        f.debug_struct("GroupControl")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

fn non_empty(bytes: &[u8], field: &'static str) -> Result<(), ContentError> {
    if bytes.is_empty() {
        Err(ContentError::Empty { field })
    } else {
        Ok(())
    }
}

fn check_ids(ids: &[[u8; 16]]) -> Result<(), ContentError> {
    non_empty_list(ids, "group.chain_request.message_ids")?;
    check_len(
        ids.len(),
        MAX_RECEIPT_IDS,
        "group.chain_request.message_ids",
    )
}

fn non_empty_list<T>(list: &[T], field: &'static str) -> Result<(), ContentError> {
    if list.is_empty() {
        Err(ContentError::Empty { field })
    } else {
        Ok(())
    }
}

fn check_resent(group_id: &[u8; 16], message: &Message) -> Result<(), ContentError> {
    validate_message(message)?;
    if message.group_id.as_ref() != Some(group_id) {
        return Err(ContentError::UnknownValue {
            field: "group.resent.message.group_id",
        });
    }
    Ok(())
}

pub(super) fn validate(control: &GroupControl) -> Result<(), ContentError> {
    match &control.body {
        GroupControlBody::Change(b) => non_empty(b, "group.change"),
        GroupControlBody::Welcome(b) => non_empty(b, "group.welcome"),
        GroupControlBody::Key { distribution, .. } => non_empty(distribution, "group.key"),
        GroupControlBody::ChainRequest { message_ids, .. } => check_ids(message_ids),
        GroupControlBody::Resent { message, .. } => check_resent(&control.group_id, message),
    }
}

pub(super) fn to_proto(control: &GroupControl) -> pb::GroupControl {
    use pb::group_control::Body;
    let body = match &control.body {
        GroupControlBody::Change(b) => Body::Change(b.clone()),
        GroupControlBody::Welcome(b) => Body::Welcome(b.clone()),
        GroupControlBody::Key {
            distribution,
            message,
        } => Body::Key(pb::GroupKey {
            distribution: distribution.to_vec(),
            message: message.clone(),
        }),
        GroupControlBody::ChainRequest {
            chain_id,
            message_ids,
        } => Body::ChainRequest(pb::ChainRequest {
            chain_id: chain_id.to_vec(),
            message_ids: message_ids.iter().map(|id| id.to_vec()).collect(),
        }),
        GroupControlBody::Resent {
            message_id,
            message,
        } => Body::Resent(pb::Resent {
            message_id: message_id.to_vec(),
            message: Some(message_to_proto(message)),
        }),
    };
    pb::GroupControl {
        group_id: control.group_id.to_vec(),
        body: Some(body),
    }
}

pub(super) fn from_proto(control: &pb::GroupControl) -> Result<GroupControl, ContentError> {
    use pb::group_control::Body;
    let group_id = array::<16>(&control.group_id, "group.group_id")?;
    let body = match &control.body {
        None => return Err(ContentError::UnknownKind),
        Some(Body::Change(b)) => {
            non_empty(b, "group.change")?;
            GroupControlBody::Change(b.clone())
        }
        Some(Body::Welcome(b)) => {
            non_empty(b, "group.welcome")?;
            GroupControlBody::Welcome(b.clone())
        }
        Some(Body::Key(k)) => {
            non_empty(&k.distribution, "group.key")?;
            GroupControlBody::Key {
                distribution: Zeroizing::new(k.distribution.clone()),
                message: k.message.clone(),
            }
        }
        Some(Body::ChainRequest(r)) => {
            let chain_id = array::<16>(&r.chain_id, "group.chain_request.chain_id")?;
            check_len(
                r.message_ids.len(),
                MAX_RECEIPT_IDS,
                "group.chain_request.message_ids",
            )?;
            let message_ids = r
                .message_ids
                .iter()
                .map(|id| array::<16>(id, "group.chain_request.message_id"))
                .collect::<Result<Vec<_>, _>>()?;
            check_ids(&message_ids)?;
            GroupControlBody::ChainRequest {
                chain_id,
                message_ids,
            }
        }
        Some(Body::Resent(r)) => {
            let message_id = array::<16>(&r.message_id, "group.resent.message_id")?;
            let message = message_from_proto(r.message.as_ref().ok_or(ContentError::Empty {
                field: "group.resent.message",
            })?)?;
            check_resent(&group_id, &message)?;
            GroupControlBody::Resent {
                message_id,
                message,
            }
        }
    };
    Ok(GroupControl { group_id, body })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{Content, decode, encode};
    use super::*;

    fn control(body: GroupControlBody) -> Content {
        Content::Group(GroupControl {
            group_id: [7; 16],
            body,
        })
    }

    #[test]
    fn every_control_round_trips() {
        let mut resent = Message::text("again");
        resent.group_id = Some([7; 16]);
        for body in [
            GroupControlBody::Change(vec![0x0b, 1]),
            GroupControlBody::Welcome(vec![0x0d, 2]),
            GroupControlBody::Key {
                distribution: Zeroizing::new(vec![0x09, 3]),
                message: vec![0x08, 4],
            },
            GroupControlBody::ChainRequest {
                chain_id: [5; 16],
                message_ids: vec![[9; 16]],
            },
            GroupControlBody::Resent {
                message_id: [6; 16],
                message: resent,
            },
        ] {
            let content = control(body);
            assert_eq!(decode(&encode(&content).unwrap()).unwrap(), content);
        }
    }

    #[test]
    fn malformed_controls_are_refused() {
        let empty = control(GroupControlBody::Change(Vec::new()));
        assert_eq!(
            encode(&empty),
            Err(ContentError::Empty {
                field: "group.change"
            })
        );
        let mut elsewhere = Message::text("x");
        elsewhere.group_id = Some([8; 16]);
        let resent = control(GroupControlBody::Resent {
            message_id: [1; 16],
            message: elsewhere,
        });
        assert!(matches!(
            encode(&resent),
            Err(ContentError::UnknownValue { .. })
        ));
        let short_id = pb::Content {
            body: Some(pb::content::Body::Group(pb::GroupControl {
                group_id: vec![1; 15],
                body: Some(pb::group_control::Body::ChainRequest(pb::ChainRequest {
                    chain_id: vec![2; 16],
                    message_ids: vec![vec![3; 16]],
                })),
            })),
        };
        let padded = super::super::pad(&prost::Message::encode_to_vec(&short_id));
        assert_eq!(
            decode(&padded),
            Err(ContentError::WrongLength {
                field: "group.group_id"
            })
        );
    }

    proptest::proptest! {
        /// Arbitrary bytes as the body of `Content.group`: a typed error or
        /// a control that encodes back to the same content, never a panic.
        #[test]
        fn arbitrary_group_controls_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            super::super::check_arbitrary_field(0x1a, &body)?;
        }
    }

    #[test]
    fn debug_shows_only_the_kind() {
        let shown = format!(
            "{:?}",
            GroupControl {
                group_id: [7; 16],
                body: GroupControlBody::Key {
                    distribution: Zeroizing::new(vec![0x09, 0xab, 0xcd]),
                    message: Vec::new(),
                },
            }
        );
        assert_eq!(shown, "GroupControl { kind: \"key\", .. }");
    }
}
