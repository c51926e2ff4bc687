//! Role threads and handoffs (spec/12 `RoleThread`, `Handoff`; spec/15,
//! "Threads and handoff"): which conversation with a role a message
//! belongs to, and what the outgoing holder of a role hands to the next.

use ward_proto::content_v1 as pb;

use super::{ContentError, Message, array, check_len, message_from_proto, message_to_proto};

/// The most messages in one [`Handoff`]; a longer handoff is split.
pub const MAX_HANDOFF_ENTRIES: usize = 1000;
/// The longest user id in content, in bytes (as in role schedules).
pub const MAX_USER_ID_LEN: usize = 128;

/// A conversation between a role and one user who wrote to it: the role,
/// and that user (the **party**). A message to the role and every reply
/// in the thread carry it, whoever holds the role when they are sent.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RoleThread {
    /// The role's directory name (spec/15).
    pub role_id: String,
    /// The user on the other side of the role.
    pub party: String,
}

impl core::fmt::Debug for RoleThread {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // A role is a directory entry, the party a person: only the role.
        f.debug_struct("RoleThread")
            .field("role_id", &self.role_id)
            .finish_non_exhaustive()
    }
}

/// One message of a thread, as a handoff carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct HandedOver {
    /// Who wrote it.
    pub from_user: String,
    /// The id it was sent with.
    pub message_id: [u8; 16],
    /// The message; its `role` is the handoff's role.
    pub message: Message,
}

impl core::fmt::Debug for HandedOver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HandedOver")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

/// What the outgoing holder of a role sends the incoming one when an
/// assignment ends: the role's recent threads.
#[derive(Clone, PartialEq, Eq)]
pub struct Handoff {
    /// The role.
    pub role_id: String,
    /// The end of the sender's assignment, seconds since the Unix epoch.
    pub ends_at: u64,
    /// The signed schedule (`0x0e`) the sender read the assignment from,
    /// or empty; the receiver verifies it under its own pinned keys.
    pub schedule: Vec<u8>,
    /// The messages, 1 to [`MAX_HANDOFF_ENTRIES`], oldest first.
    pub entries: Vec<HandedOver>,
}

impl core::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Handoff")
            .field("role_id", &self.role_id)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

fn check_user(user: &str, field: &'static str) -> Result<(), ContentError> {
    if user.is_empty() {
        return Err(ContentError::Empty { field });
    }
    check_len(user.len(), MAX_USER_ID_LEN, field)
}

fn check_role_id(role_id: &str, field: &'static str) -> Result<(), ContentError> {
    if ward_core::is_role_id(role_id) {
        Ok(())
    } else {
        Err(ContentError::Invalid { field })
    }
}

/// The checks on `Message.role` (and that a role message is no group
/// message).
pub(super) fn check_thread(message: &Message) -> Result<(), ContentError> {
    let Some(thread) = &message.role else {
        return Ok(());
    };
    if message.group_id.is_some() {
        return Err(ContentError::Invalid {
            field: "message.role",
        });
    }
    check_role_id(&thread.role_id, "message.role.role_id")?;
    check_user(&thread.party, "message.role.party")
}

pub(super) fn validate(handoff: &Handoff) -> Result<(), ContentError> {
    check_role_id(&handoff.role_id, "handoff.role_id")?;
    if handoff.entries.is_empty() {
        return Err(ContentError::Empty {
            field: "handoff.entries",
        });
    }
    check_len(
        handoff.entries.len(),
        MAX_HANDOFF_ENTRIES,
        "handoff.entries",
    )?;
    for entry in &handoff.entries {
        check_user(&entry.from_user, "handoff.entry.from_user")?;
        super::validate_message(&entry.message)?;
        if entry.message.role.as_ref().map(|t| t.role_id.as_str()) != Some(&handoff.role_id) {
            return Err(ContentError::Invalid {
                field: "handoff.entry.message.role",
            });
        }
    }
    Ok(())
}

pub(super) fn thread_to_proto(thread: &RoleThread) -> pb::RoleThread {
    pb::RoleThread {
        role_id: thread.role_id.clone(),
        party: thread.party.clone(),
    }
}

pub(super) fn thread_from_proto(thread: &pb::RoleThread) -> RoleThread {
    RoleThread {
        role_id: thread.role_id.clone(),
        party: thread.party.clone(),
    }
}

pub(super) fn to_proto(handoff: &Handoff) -> pb::Handoff {
    pb::Handoff {
        role_id: handoff.role_id.clone(),
        ends_at: handoff.ends_at,
        schedule: handoff.schedule.clone(),
        entries: handoff
            .entries
            .iter()
            .map(|e| pb::HandedOver {
                from_user: e.from_user.clone(),
                message_id: e.message_id.to_vec(),
                message: Some(message_to_proto(&e.message)),
            })
            .collect(),
    }
}

pub(super) fn from_proto(handoff: &pb::Handoff) -> Result<Handoff, ContentError> {
    check_len(
        handoff.entries.len(),
        MAX_HANDOFF_ENTRIES,
        "handoff.entries",
    )?;
    let entries = handoff
        .entries
        .iter()
        .map(|e| {
            Ok(HandedOver {
                from_user: e.from_user.clone(),
                message_id: array(&e.message_id, "handoff.entry.message_id")?,
                message: message_from_proto(e.message.as_ref().ok_or(ContentError::Empty {
                    field: "handoff.entry.message",
                })?)?,
            })
        })
        .collect::<Result<Vec<_>, ContentError>>()?;
    let handoff = Handoff {
        role_id: handoff.role_id.clone(),
        ends_at: handoff.ends_at,
        schedule: handoff.schedule.clone(),
        entries,
    };
    validate(&handoff)?;
    Ok(handoff)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{Content, decode, encode};
    use super::*;

    fn in_thread(text: &str, role_id: &str) -> Message {
        let mut message = Message::text(text);
        message.role = Some(RoleThread {
            role_id: role_id.into(),
            party: "nurse.ito@clinic.example".into(),
        });
        message
    }

    fn handoff(entries: Vec<HandedOver>) -> Content {
        Content::Handoff(Handoff {
            role_id: "cardiology-oncall".into(),
            ends_at: 1_767_268_800,
            schedule: vec![0x0e, 1, 2],
            entries,
        })
    }

    fn entry(message: Message) -> HandedOver {
        HandedOver {
            from_user: "dr.adams@clinic.example".into(),
            message_id: [4; 16],
            message,
        }
    }

    #[test]
    fn threads_and_handoffs_round_trip() {
        let message = Content::Message(in_thread("Bed 4", "cardiology-oncall"));
        assert_eq!(decode(&encode(&message).unwrap()).unwrap(), message);
        let content = handoff(vec![
            entry(in_thread("Bed 4: chest pain", "cardiology-oncall")),
            entry(in_thread("On my way", "cardiology-oncall")),
        ]);
        assert_eq!(decode(&encode(&content).unwrap()).unwrap(), content);
    }

    #[test]
    fn malformed_threads_and_handoffs_are_refused() {
        let bad_role = Content::Message(in_thread("x", "Cardiology"));
        assert_eq!(
            encode(&bad_role),
            Err(ContentError::Invalid {
                field: "message.role.role_id"
            })
        );
        let mut in_group = in_thread("x", "cardiology-oncall");
        in_group.group_id = Some([1; 16]);
        assert_eq!(
            encode(&Content::Message(in_group)),
            Err(ContentError::Invalid {
                field: "message.role"
            })
        );
        let mut no_party = in_thread("x", "cardiology-oncall");
        no_party.role.as_mut().unwrap().party.clear();
        assert_eq!(
            encode(&Content::Message(no_party)),
            Err(ContentError::Empty {
                field: "message.role.party"
            })
        );
        assert_eq!(
            encode(&handoff(Vec::new())),
            Err(ContentError::Empty {
                field: "handoff.entries"
            })
        );
        // An entry of another role's thread, or of no thread at all.
        for message in [in_thread("x", "rapid-response"), Message::text("x")] {
            assert_eq!(
                encode(&handoff(vec![entry(message)])),
                Err(ContentError::Invalid {
                    field: "handoff.entry.message.role"
                })
            );
        }
        let too_many = handoff(vec![
            entry(in_thread("x", "cardiology-oncall"));
            MAX_HANDOFF_ENTRIES + 1
        ]);
        assert_eq!(
            encode(&too_many),
            Err(ContentError::TooLong {
                field: "handoff.entries"
            })
        );
    }

    proptest::proptest! {
        /// Arbitrary bytes as the body of `Content.handoff`: a typed error
        /// or a handoff that encodes back to the same content.
        #[test]
        fn arbitrary_handoffs_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            super::super::check_arbitrary_field(0x22, &body)?;
        }
    }

    #[test]
    fn debug_shows_no_party_and_no_text() {
        let content = handoff(vec![entry(in_thread(
            "Bed 4: chest pain",
            "cardiology-oncall",
        ))]);
        let shown = format!("{content:?}");
        assert!(
            !shown.contains("nurse.ito") && !shown.contains("chest") && !shown.contains("adams")
        );
        assert!(shown.contains("cardiology-oncall"));
    }
}
