//! Roles (spec/15): a role's schedule fetched from the relay, verified
//! under the administrator keys the app was configured with, kept only
//! moving forward (ROLE-4), and resolved to its holders at send time
//! (ROLE-5). The relay serves schedules; it cannot forge or roll one back.

use ward_core::RoleSchedule;
use ward_proto::relay_v1::{self as wire, ErrorCode, request::Body as Req, response::Body as Resp};

use super::{Messenger, Result, now_ms};
use crate::ClientError;
use crate::content::{self, Content, Message, RoleThread};

/// A message sent to a role: its id, and who held the role when it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSend {
    /// The message's id.
    pub message_id: [u8; 16],
    /// The users it was sent to: the role's holders at send time.
    pub holders: Vec<String>,
    /// The version of the schedule they were read from.
    pub version: u64,
}

impl Messenger {
    /// The role's schedule: fetched from the relay and verified, or the one
    /// kept from before when the relay cannot be reached.
    ///
    /// Refused, with [`ClientError::RoleSchedule`]: a schedule that does not
    /// verify under [`MessengerOptions::role_admin_keys`](super::MessengerOptions::role_admin_keys)
    /// (a relay forging an assignment), one for another role, one of a
    /// version below the one kept (a rollback), and one of the same version
    /// with other contents. A newer one replaces the kept one in the store.
    pub async fn role_schedule(&mut self, role_id: &str) -> Result<RoleSchedule> {
        self.touch()?;
        self.fetch_role_schedule(role_id).await
    }

    /// [`Messenger::role_schedule`] without counting as activity.
    pub(super) async fn fetch_role_schedule(&mut self, role_id: &str) -> Result<RoleSchedule> {
        let keys = self.options.role_admin_keys.clone();
        if keys.is_empty() {
            return Err(ClientError::RoleSchedule(
                "no administrator keys configured",
            ));
        }
        let kept = match self.store.get()?.role_schedule(role_id)? {
            Some(bytes) => Some((
                RoleSchedule::decode_verified(&bytes, &keys).map_err(|_| {
                    ClientError::RoleSchedule("the kept schedule no longer verifies")
                })?,
                bytes,
            )),
            None => None,
        };
        let served = match self
            .request(Req::GetRoleSchedule(wire::GetRoleSchedule {
                role_id: role_id.to_owned(),
            }))
            .await
        {
            Ok(Resp::RoleSchedule(r)) => r.signed,
            Ok(_) => return Err(ClientError::UnexpectedResponse),
            Err(e) if e.code() == Some(ErrorCode::NotFound) && kept.is_none() => return Err(e),
            // Offline, or the relay no longer has it: what was verified before holds.
            Err(e) => return kept.map(|(schedule, _)| schedule).ok_or(e),
        };
        let schedule = RoleSchedule::decode_verified(&served, &keys)
            .map_err(|_| ClientError::RoleSchedule("the relay's schedule does not verify"))?;
        if schedule.role_id != role_id {
            return Err(ClientError::RoleSchedule(
                "the relay served another role's schedule",
            ));
        }
        if let Some((held, held_bytes)) = kept {
            if schedule.version < held.version {
                return Err(ClientError::RoleSchedule(
                    "the relay served an older schedule",
                ));
            }
            if schedule.version == held.version {
                return match served == held_bytes {
                    true => Ok(held),
                    false => Err(ClientError::RoleSchedule(
                        "the relay served other contents under a version already held",
                    )),
                };
            }
        }
        self.store.get_mut()?.put_role_schedule(role_id, &served)?;
        Ok(schedule)
    }

    /// Sends `message` to whoever holds `role_id` now (every current device
    /// of each holder, and this user's other devices), as
    /// [`Messenger::send`] does, in this user's thread with the role
    /// (`message.role` is set to it), and says who that was. A role nobody
    /// holds now is [`ClientError::RoleUnheld`]: nothing is sent.
    pub async fn send_to_role(&mut self, role_id: &str, message: Message) -> Result<RoleSend> {
        let party = self.user.clone();
        self.send_in_thread(role_id, &party, message).await
    }

    /// Replies in the thread between `role_id` and `party` (the user who
    /// wrote to the role): to `party` and to whoever holds the role now,
    /// so that a holder's colleagues, and the next holder after a handoff,
    /// see the reply. `holders` in the result are the role's holders it
    /// went to; `party` got it too. A role nobody holds now still gets the
    /// reply to `party`.
    pub async fn reply_in_role_thread(
        &mut self,
        role_id: &str,
        party: &str,
        message: Message,
    ) -> Result<RoleSend> {
        self.send_in_thread(role_id, party, message).await
    }

    async fn send_in_thread(
        &mut self,
        role_id: &str,
        party: &str,
        mut message: Message,
    ) -> Result<RoleSend> {
        self.touch()?;
        let schedule = self.fetch_role_schedule(role_id).await?;
        let holders: Vec<String> = schedule
            .holders_at(now_ms() / 1000)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let to_party = party != self.user;
        if holders.is_empty() && !to_party {
            return Err(ClientError::RoleUnheld {
                role_id: role_id.to_owned(),
            });
        }
        if message.sent_at_ms == 0 {
            message.sent_at_ms = now_ms();
        }
        message.role = Some(RoleThread {
            role_id: role_id.to_owned(),
            party: party.to_owned(),
        });
        let mut users: Vec<&str> = holders.iter().map(String::as_str).collect();
        if to_party {
            users.push(party);
        }
        let plaintext = content::encode(&Content::Message(message))?;
        let message_id = self
            .send_plaintext_in_thread(&users, &plaintext, Some(role_id))
            .await?;
        Ok(RoleSend {
            message_id,
            holders,
            version: schedule.version,
        })
    }
}
