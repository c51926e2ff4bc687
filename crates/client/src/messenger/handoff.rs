//! Role threads and handoff (spec/15, "Threads and handoff"): every
//! message of a role thread is kept for a while; when this user's hold of
//! a role ends, its devices hand the role's recent threads to whoever
//! takes it over, end to end, and forward what still arrives for the role.
//! The receiving device checks the handoff against a schedule signed by
//! the administrator: a user who did not hold the role cannot hand it
//! over, whatever the relay says.

use std::time::{Duration, Instant};

use ward_core::RoleSchedule;

use super::{Messenger, Result, now_ms};
use crate::ClientError;
use crate::content::{
    self, Content, ContentError, HandedOver, Handoff, MAX_HANDOFF_ENTRIES, MAX_PADDED_LEN,
};
use crate::store::{HandoffRefusal, MessageRef, PendingEvent, RoleThreadEntry, Store, StoreError};

/// How often [`Messenger::next_event`] looks for holds that ended.
pub(super) const HANDOFF_CHECK_INTERVAL: Duration = Duration::from_secs(300);
/// A hold that ended longer ago than this is not handed off any more
/// (the device was off all that time), and thread messages older than
/// this plus [`MessengerOptions::handoff_window`](super::MessengerOptions::handoff_window)
/// are dropped.
pub const MAX_HANDOFF_DELAY: Duration = Duration::from_secs(24 * 3600);
/// How far the receiver's clock may be behind the sender's when it checks
/// that the sender's assignment has ended.
pub const MAX_HANDOFF_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// What one handoff's encoded entries may take, well under
/// [`MAX_PADDED_LEN`] with the schedule and framing beside them.
const HANDOFF_ENTRIES_BUDGET: usize = MAX_PADDED_LEN / 2;
/// The largest schedule a handoff carries; a receiver with no copy of a
/// larger one checks against the one it keeps.
const MAX_CARRIED_SCHEDULE: usize = MAX_PADDED_LEN / 3;

/// A handoff this device sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffSent {
    /// The role.
    pub role_id: String,
    /// The end of the hold it hands off (seconds since the Unix epoch).
    pub ends_at: u64,
    /// Who it went to: the role's next holders.
    pub to_users: Vec<String>,
    /// How many thread messages it carried.
    pub messages: usize,
}

/// What receiving a role thread message or a handoff writes, in the
/// delivery's transaction.
pub(super) enum RoleEffect {
    /// A message of a role thread: kept beside the message.
    Entry(RoleThreadEntry),
    /// A handoff that checked out: its messages to keep (the new ones are
    /// reported), a newer verified schedule to keep, and, from this
    /// user's own device, the hold it handed off.
    Accepted {
        entries: Vec<RoleThreadEntry>,
        schedule: Option<(String, Vec<u8>)>,
        own_hold: Option<(String, u64)>,
    },
    /// A handoff refused, reported as such.
    Refused(HandoffRefusal),
}

impl RoleEffect {
    /// Writes the effect; the event to queue for the stored delivery
    /// `delivery`, if any.
    pub(super) fn commit(
        &self,
        s: &mut Store,
        delivery: MessageRef,
    ) -> Result<Option<PendingEvent>, StoreError> {
        Ok(match self {
            Self::Entry(entry) => {
                s.record_role_entry(entry)?;
                Some(PendingEvent::Received(delivery))
            }
            Self::Accepted {
                entries,
                schedule,
                own_hold,
            } => {
                if let Some((role_id, signed)) = schedule {
                    s.put_role_schedule(role_id, signed)?;
                }
                let mut fresh = Vec::new();
                for entry in entries {
                    if s.record_role_entry(entry)? {
                        fresh.push(entry.message_id);
                    }
                }
                if let Some((role_id, ends_at)) = own_hold {
                    s.set_handed_off(role_id, *ends_at, entries.last().map_or(0, |e| e.at_ms))?;
                    return Ok(None);
                }
                (!fresh.is_empty()).then_some(PendingEvent::Handoff {
                    handoff: delivery,
                    fresh,
                })
            }
            Self::Refused(reason) => Some(PendingEvent::HandoffRefused {
                handoff: delivery,
                reason: *reason,
            }),
        })
    }
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

/// Splits `entries`, each with the length of its stored encoding, into
/// handoffs of at most [`MAX_HANDOFF_ENTRIES`] and
/// [`HANDOFF_ENTRIES_BUDGET`] bytes of entries each, in order.
fn batches(entries: Vec<(HandedOver, usize)>) -> Vec<Vec<HandedOver>> {
    let mut out: Vec<Vec<HandedOver>> = Vec::new();
    let mut size = 0;
    for (entry, encoded_len) in entries {
        // The message's encoding plus its writer, id and framing.
        let len = encoded_len + entry.from_user.len() + 32;
        match out.last_mut() {
            Some(batch)
                if batch.len() < MAX_HANDOFF_ENTRIES && size + len <= HANDOFF_ENTRIES_BUDGET =>
            {
                size += len;
                batch.push(entry);
            }
            _ => {
                size = len;
                out.push(vec![entry]);
            }
        }
    }
    out
}

impl Messenger {
    /// Hands off every role whose hold by this user has ended since the
    /// last handoff (within [`MAX_HANDOFF_DELAY`]): the role's thread
    /// messages of [`MessengerOptions::handoff_window`](super::MessengerOptions::handoff_window)
    /// before the end, and since, go to the role's next holders' devices
    /// (and this user's other devices, which then do not hand it off
    /// again). After a handoff, thread messages that still reach this user
    /// are forwarded to whoever holds the role then. The messenger does
    /// this by itself while [`Messenger::next_event`] runs (every few
    /// minutes, and when such a message arrives); an app may call it at a
    /// shift change. Roles are those of which this device keeps thread
    /// messages; their schedules are fetched and verified first.
    pub async fn hand_off_roles(&mut self) -> Result<Vec<HandoffSent>> {
        self.touch()?;
        self.hand_off_due_roles().await
    }

    /// [`Messenger::hand_off_roles`] without counting as activity.
    pub(super) async fn hand_off_due_roles(&mut self) -> Result<Vec<HandoffSent>> {
        self.last_handoff_check = Instant::now();
        self.owed.handoffs = false;
        let keep_from = now_ms().saturating_sub(self.thread_keep_ms());
        self.store.get_mut()?.prune_role_entries(keep_from)?;
        let roles = self.store.get()?.roles_with_entries(keep_from)?;
        let mut sent = Vec::new();
        let mut first_error = None;
        for role_id in roles {
            match self.hand_off_role(&role_id).await {
                Ok(Some(handoff)) => sent.push(handoff),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "a role handoff is not done yet");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if sent.is_empty() => Err(e),
            _ => Ok(sent),
        }
    }

    fn thread_keep_ms(&self) -> u64 {
        let keep = self.options.handoff_window + MAX_HANDOFF_DELAY;
        u64::try_from(keep.as_millis()).unwrap_or(u64::MAX)
    }

    /// Hands off `role_id` if a hold of it ended, or forwards what arrived
    /// for it since this user handed it off.
    async fn hand_off_role(&mut self, role_id: &str) -> Result<Option<HandoffSent>> {
        let handed = self.store.get()?.handed_off_until(role_id)?;
        let schedule = self.fetch_role_schedule(role_id).await?;
        let now = now_secs();
        let window_ms = u64::try_from(self.options.handoff_window.as_millis()).unwrap_or(u64::MAX);
        let oldest = now.saturating_sub(MAX_HANDOFF_DELAY.as_secs());
        let after = handed.map_or(oldest, |(ends_at, _)| ends_at.max(oldest));
        let (ends_at, to_users, since_ms) = match schedule.ended_hold(&self.user, after, now) {
            Some(ends_at) => (
                ends_at,
                schedule.successors(&self.user, ends_at),
                ends_at.saturating_mul(1000).saturating_sub(window_ms),
            ),
            None => match handed {
                Some((ends_at, through_ms))
                    if !schedule.holders_at(now).contains(&self.user.as_str()) =>
                {
                    (ends_at, schedule.successors(&self.user, now), through_ms)
                }
                _ => return Ok(None),
            },
        };
        let to_users: Vec<String> = to_users.into_iter().map(str::to_owned).collect();
        if to_users.is_empty() {
            // Nobody named to take it over yet: tried again later.
            return Ok(None);
        }
        let through_ms = now_ms();
        let entries = self.store.get()?.role_entries(role_id, since_ms)?;
        let handed_over: Vec<(HandedOver, usize)> = entries
            .iter()
            .filter_map(|e| match content::decode(&e.content) {
                Ok(Content::Message(message)) => Some((
                    HandedOver {
                        from_user: e.from_user.clone(),
                        message_id: e.message_id,
                        message,
                    },
                    e.content.len(),
                )),
                _ => None,
            })
            .collect();
        let count = handed_over.len();
        if count > 0 {
            let signed = self
                .store
                .get()?
                .role_schedule(role_id)?
                .unwrap_or_default();
            let carried = if signed.len() <= MAX_CARRIED_SCHEDULE {
                signed
            } else {
                Vec::new()
            };
            let users: Vec<&str> = to_users.iter().map(String::as_str).collect();
            for batch in batches(handed_over) {
                let mut handoff = Handoff {
                    role_id: role_id.to_owned(),
                    ends_at,
                    schedule: carried.clone(),
                    entries: batch,
                };
                let plaintext = match content::encode(&Content::Handoff(handoff.clone())) {
                    // One message near the largest beside a long schedule:
                    // the receiver checks against the schedule it keeps.
                    Err(ContentError::TooLong { field: "content" }) => {
                        handoff.schedule.clear();
                        content::encode(&Content::Handoff(handoff))?
                    }
                    encoded => encoded?,
                };
                match self.send_plaintext(&users, &plaintext).await {
                    // Kept in the outbox: it goes out with it.
                    Ok(_) | Err(ClientError::Pending { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.store
            .get_mut()?
            .set_handed_off(role_id, ends_at, through_ms)?;
        Ok((count > 0).then(|| HandoffSent {
            role_id: role_id.to_owned(),
            ends_at,
            to_users,
            messages: count,
        }))
    }

    /// What a received role thread message writes beside it.
    pub(super) fn role_entry(
        &mut self,
        sender_user: &str,
        message_id: [u8; 16],
        role_id: &str,
        plaintext: &[u8],
    ) -> Result<RoleEffect> {
        if self.store.get()?.handed_off_until(role_id)?.is_some() && sender_user != self.user {
            // Perhaps for a hold that is over: looked at soon.
            self.owed.handoffs = true;
        }
        Ok(RoleEffect::Entry(RoleThreadEntry {
            role_id: role_id.to_owned(),
            from_user: sender_user.to_owned(),
            message_id,
            at_ms: now_ms(),
            content: zeroize::Zeroizing::new(plaintext.to_vec()),
        }))
    }

    /// Checks a handoff from `sender_user` against the best verified
    /// schedule this device has for its role (the one it keeps, or the
    /// one the handoff carries if that verifies and is newer), in the
    /// order of spec/15: the pinned keys, a verified schedule, an
    /// assignment of the sender's ending at `ends_at`, that end passed,
    /// and this user holding the role after it.
    pub(super) fn handoff_effect(
        &self,
        sender_user: &str,
        handoff: &Handoff,
    ) -> Result<RoleEffect> {
        let keys = &self.options.role_admin_keys;
        if keys.is_empty() {
            return Ok(RoleEffect::Refused(HandoffRefusal::NoAdminKeys));
        }
        let verified = |bytes: &[u8]| {
            RoleSchedule::decode_verified(bytes, keys)
                .ok()
                .filter(|s| s.role_id == handoff.role_id)
        };
        let kept = self
            .store
            .get()?
            .role_schedule(&handoff.role_id)?
            .and_then(|bytes| verified(&bytes));
        let carried = (!handoff.schedule.is_empty())
            .then(|| verified(&handoff.schedule))
            .flatten();
        let (schedule, newer) = match (kept, carried) {
            (Some(kept), Some(carried)) if carried.version > kept.version => (carried, true),
            (Some(kept), _) => (kept, false),
            (None, Some(carried)) => (carried, true),
            (None, None) => return Ok(RoleEffect::Refused(HandoffRefusal::NoSchedule)),
        };
        if !schedule.hold_ends_at(sender_user, handoff.ends_at) {
            return Ok(RoleEffect::Refused(HandoffRefusal::NotTheHolder));
        }
        if handoff.ends_at > now_secs() + MAX_HANDOFF_CLOCK_SKEW.as_secs() {
            return Ok(RoleEffect::Refused(HandoffRefusal::NotEnded));
        }
        let own = sender_user == self.user;
        if !own && !schedule.holds_from(&self.user, handoff.ends_at) {
            return Ok(RoleEffect::Refused(HandoffRefusal::NotTheSuccessor));
        }
        let at_ms = now_ms();
        let entries = handoff
            .entries
            .iter()
            .map(|e| {
                Ok(RoleThreadEntry {
                    role_id: handoff.role_id.clone(),
                    from_user: e.from_user.clone(),
                    message_id: e.message_id,
                    at_ms,
                    content: content::encode(&Content::Message(e.message.clone()))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RoleEffect::Accepted {
            entries,
            schedule: newer.then(|| (handoff.role_id.clone(), handoff.schedule.clone())),
            own_hold: own.then(|| (handoff.role_id.clone(), handoff.ends_at)),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::content::{MAX_TEXT_LEN, Message, RoleThread};

    fn entry(n: usize, text_len: usize) -> HandedOver {
        let mut message = Message::text("x".repeat(text_len));
        message.role = Some(RoleThread {
            role_id: "cardiology-oncall".into(),
            party: "nurse.diaz".into(),
        });
        HandedOver {
            from_user: "dr.adams".into(),
            message_id: [n as u8; 16],
            message,
        }
    }

    #[test]
    fn long_threads_go_in_handoffs_that_fit_with_their_schedule() {
        let entries: Vec<HandedOver> = (0..7)
            .map(|n| entry(n, if n % 2 == 0 { MAX_TEXT_LEN } else { 100 }))
            .chain((7..1_500).map(|n| entry(n, 10)))
            .collect();
        let with_lengths = entries
            .iter()
            .map(|e| {
                let encoded = content::encode(&Content::Message(e.message.clone())).unwrap();
                (e.clone(), encoded.len())
            })
            .collect();
        let split = batches(with_lengths);
        assert!(split.len() > 2);
        // Nothing lost, nothing repeated, the order kept.
        let flat: Vec<HandedOver> = split.iter().flatten().cloned().collect();
        assert!(flat == entries);
        for batch in split {
            assert!(!batch.is_empty() && batch.len() <= MAX_HANDOFF_ENTRIES);
            let handoff = Content::Handoff(Handoff {
                role_id: "cardiology-oncall".into(),
                ends_at: 1,
                schedule: vec![0x0e; MAX_CARRIED_SCHEDULE],
                entries: batch,
            });
            assert!(content::encode(&handoff).is_ok());
        }
    }
}
