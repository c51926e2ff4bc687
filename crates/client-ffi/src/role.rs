//! On-call roles for foreign code (spec/15): [`WardDevice`]'s role calls
//! (a message to a role, a reply in a role thread, the handoff at the end
//! of a hold) and the records they and [`WardEvent`](crate::WardEvent)
//! carry.

use std::sync::Arc;

use ward_client::{HandedOver, HandoffRefusal, HandoffSent, Message, RoleSend, RoleThread};

use crate::{WardAttachment, WardDevice, WardError};

type Result<T, E = WardError> = core::result::Result<T, E>;

/// A message sent to a role, or in a role thread, and who held the role
/// when it went.
#[derive(Clone, Debug, uniffi::Record)]
pub struct WardRoleSend {
    /// The message id (16 bytes).
    pub message_id: Vec<u8>,
    /// The role's holders it was sent to (a reply also went to the party).
    pub holders: Vec<String>,
    /// The version of the schedule they were read from.
    pub schedule_version: u64,
}

impl From<RoleSend> for WardRoleSend {
    fn from(sent: RoleSend) -> Self {
        Self {
            message_id: sent.message_id.to_vec(),
            holders: sent.holders,
            schedule_version: sent.version,
        }
    }
}

/// The conversation between a role and one user who wrote to it (the
/// **party**): a message to the role and every reply in the thread carry
/// it, whoever holds the role when they are sent. No `Debug`: the party
/// is a person.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct WardRoleThread {
    /// The role's directory name (`cardiology-oncall`).
    pub role_id: String,
    /// The user on the other side of the role: reply to them with
    /// [`WardDevice::reply_in_role_thread`].
    pub party: String,
}

impl From<RoleThread> for WardRoleThread {
    fn from(thread: RoleThread) -> Self {
        Self {
            role_id: thread.role_id,
            party: thread.party,
        }
    }
}

/// One message of a role thread, handed over by the role's outgoing
/// holder (in [`WardEvent::RoleHandoff`](crate::WardEvent::RoleHandoff)).
/// The handoff is authenticated as the outgoing holder's; who wrote each
/// message (`from_user`) is what that holder's device recorded. No
/// `Debug`: the text is patient data.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct WardHandedOver {
    /// Who wrote it (the party, or a holder of the role).
    pub from_user: String,
    /// The id it was sent with (16 bytes): the same as on the devices that
    /// received it then.
    pub message_id: Vec<u8>,
    /// The text.
    pub text: String,
    /// Sent as urgent.
    pub urgent: bool,
    /// The files it references.
    pub attachments: Vec<WardAttachment>,
    /// When it was written, by its writer's clock (ms since the epoch).
    pub sent_at_ms: u64,
    /// The thread's party (its role is the handoff's).
    pub party: String,
}

impl From<HandedOver> for WardHandedOver {
    fn from(entry: HandedOver) -> Self {
        let HandedOver {
            from_user,
            message_id,
            mut message,
        } = entry;
        // Valid handoffs name the thread in every message.
        let party = message
            .role
            .take()
            .map(|thread| thread.party)
            .unwrap_or_default();
        let sent_at_ms = message.sent_at_ms;
        let (text, urgent, attachments) = crate::event::message_body(message);
        Self {
            from_user,
            message_id: message_id.to_vec(),
            text,
            urgent,
            attachments,
            sent_at_ms,
            party,
        }
    }
}

/// Why a received handoff was refused (in the order it is checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum WardHandoffRefusal {
    /// This device pinned no administrator key
    /// ([`WardOptions::role_admin_keys`](crate::WardOptions::role_admin_keys)):
    /// it cannot check a handoff.
    NoAdminKeys,
    /// No schedule of the role verifies under the pinned keys.
    NoSchedule,
    /// The schedule has no hold of the sender's ending where the handoff
    /// says: the sender did not hold the role then.
    NotTheHolder,
    /// That hold has not ended yet.
    NotEnded,
    /// This user does not hold the role after that end.
    NotTheSuccessor,
    /// A reason this version of the bindings does not name.
    Other,
}

impl From<HandoffRefusal> for WardHandoffRefusal {
    fn from(reason: HandoffRefusal) -> Self {
        match reason {
            HandoffRefusal::NoAdminKeys => Self::NoAdminKeys,
            HandoffRefusal::NoSchedule => Self::NoSchedule,
            HandoffRefusal::NotTheHolder => Self::NotTheHolder,
            HandoffRefusal::NotEnded => Self::NotEnded,
            HandoffRefusal::NotTheSuccessor => Self::NotTheSuccessor,
            _ => Self::Other,
        }
    }
}

/// A handoff this device sent.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct WardHandoffSent {
    /// The role.
    pub role_id: String,
    /// The end of the hold it hands off (seconds since the Unix epoch).
    pub ends_at: u64,
    /// Who it went to: the role's next holders.
    pub to_users: Vec<String>,
    /// How many thread messages it carried.
    pub messages: u64,
}

impl From<HandoffSent> for WardHandoffSent {
    fn from(sent: HandoffSent) -> Self {
        Self {
            role_id: sent.role_id,
            ends_at: sent.ends_at,
            to_users: sent.to_users,
            messages: u64::try_from(sent.messages).unwrap_or(u64::MAX),
        }
    }
}

fn message(text: String, urgent: bool) -> Message {
    if urgent {
        Message::urgent(text)
    } else {
        Message::text(text)
    }
}

#[uniffi::export]
impl WardDevice {
    /// Sends `text` to whoever holds the on-call role `role_id` now
    /// (spec/15): the role's schedule is fetched, verified under
    /// [`WardOptions::role_admin_keys`](crate::WardOptions::role_admin_keys)
    /// and resolved at this moment. The message opens (or goes on with)
    /// this user's thread with the role: the holders' devices see it in
    /// [`WardEvent::Message`](crate::WardEvent::Message)'s `role`, with this
    /// user as the party. Returns the message id and the users it went to.
    /// [`WardError::RoleRefused`] if the schedule does not verify or would
    /// roll the role back; [`WardError::RoleUnheld`] if nobody holds it.
    pub async fn send_to_role(
        self: Arc<Self>,
        role_id: String,
        text: String,
        urgent: bool,
    ) -> Result<WardRoleSend> {
        let message = message(text, urgent);
        self.with(async move |m| Ok(m.send_to_role(&role_id, message).await?.into()))
            .await
    }

    /// Replies in the thread between `role_id` and `party` (the user who
    /// wrote to the role, a message's `role.party`): to `party` and to
    /// whoever holds the role now, so that the holder's colleagues, and
    /// the next holder after a handoff, see the reply. `holders` in the
    /// result are the role's holders it went to; `party` got it too (even
    /// when nobody holds the role now). [`WardError::RoleRefused`] as for
    /// [`WardDevice::send_to_role`].
    pub async fn reply_in_role_thread(
        self: Arc<Self>,
        role_id: String,
        party: String,
        text: String,
        urgent: bool,
    ) -> Result<WardRoleSend> {
        let message = message(text, urgent);
        self.with(async move |m| {
            Ok(m.reply_in_role_thread(&role_id, &party, message)
                .await?
                .into())
        })
        .await
    }

    /// Hands off every role whose hold by this user has ended (by the
    /// signed schedule) since the last handoff: the role's recent thread
    /// messages ([`WardOptions::handoff_window_ms`](crate::WardOptions::handoff_window_ms)
    /// before the end, and since) go to the role's next holders, whose
    /// devices report [`WardEvent::RoleHandoff`](crate::WardEvent::RoleHandoff).
    /// Thread messages that still reach this user afterwards are forwarded
    /// to whoever holds the role then. The device does this by itself
    /// while events are awaited (every few minutes, and when such a
    /// message arrives); an app may call it at a shift change. Returns the
    /// handoffs sent now (none if no hold ended).
    pub async fn hand_off_roles(self: Arc<Self>) -> Result<Vec<WardHandoffSent>> {
        self.with(async |m| {
            Ok(m.hand_off_roles()
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
        })
        .await
    }
}
