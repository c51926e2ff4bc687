//! The event queue (spec/11, `events`): what the client has yet to report
//! to the app. An event is written in the same transaction as the change
//! that causes it (a message stored, an identity recorded), and leaves the
//! queue only once the app has had it, so that a crash, a cancelled wait
//! or a restart neither loses nor repeats it.

use rusqlite::{Connection, params};
use zeroize::Zeroizing;

use super::Store;
use super::codec::{blob, integer_u64, put_name, reader};
use super::crypto::Keys;
use super::error::{Result, StoreError, corrupt};
use super::messages::MessageRef;
use super::records::COUNTERS;

pub(super) const EVENTS: &str = "events";

/// The counter row holding the sequence number of the next event.
const NEXT_EVENT_SEQ: &str = "next_event_seq";

const KIND_RECEIVED: u8 = 1;
const KIND_IDENTITY_CHANGED: u8 = 2;
const KIND_NEW_DEVICE: u8 = 3;
const KIND_HANDOFF: u8 = 4;
const KIND_HANDOFF_REFUSED: u8 = 5;

/// Why a received handoff was refused (spec/15, "Handoff", in the order
/// checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandoffRefusal {
    /// This device pinned no administrator key: it cannot check a handoff.
    NoAdminKeys,
    /// Neither the schedule it keeps nor the one the handoff carries
    /// verifies under the pinned keys.
    NoSchedule,
    /// The schedule has no assignment of the sender's ending where the
    /// handoff says: the sender did not hold the role then.
    NotTheHolder,
    /// That assignment has not ended yet.
    NotEnded,
    /// This user does not hold the role after that end.
    NotTheSuccessor,
}

impl HandoffRefusal {
    fn code(self) -> u8 {
        match self {
            Self::NoAdminKeys => 1,
            Self::NoSchedule => 2,
            Self::NotTheHolder => 3,
            Self::NotEnded => 4,
            Self::NotTheSuccessor => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::NoAdminKeys,
            2 => Self::NoSchedule,
            3 => Self::NotTheHolder,
            4 => Self::NotEnded,
            5 => Self::NotTheSuccessor,
            _ => return None,
        })
    }
}

/// An event waiting in the store to be reported.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PendingEvent {
    /// A message stored in `incoming`; reported as what its content is (a
    /// message, a receipt, unreadable content).
    Received(MessageRef),
    /// A recorded device of `user` presented another identity.
    IdentityChanged {
        /// The user.
        user: String,
        /// The device.
        device_key: [u8; 32],
    },
    /// A device of `user` was recorded while others of theirs were known.
    NewDevice {
        /// The user.
        user: String,
        /// The new device.
        device_key: [u8; 32],
    },
    /// A handoff stored in `incoming` (spec/15), and the ids of the
    /// handed-over messages that were new to this device: reported with
    /// those only.
    Handoff {
        /// The stored handoff.
        handoff: MessageRef,
        /// The new messages' ids.
        fresh: Vec<[u8; 16]>,
    },
    /// A handoff stored in `incoming` and refused.
    HandoffRefused {
        /// The stored handoff.
        handoff: MessageRef,
        /// Why.
        reason: HandoffRefusal,
    },
}

impl core::fmt::Debug for PendingEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Kinds only: no user ids, keys or message ids (STO-24).
        f.write_str(match self {
            Self::Received(_) => "Received",
            Self::IdentityChanged { .. } => "IdentityChanged",
            Self::NewDevice { .. } => "NewDevice",
            Self::Handoff { .. } => "Handoff",
            Self::HandoffRefused { .. } => "HandoffRefused",
        })
    }
}

/// `events` value: `u8(kind) || fields` (spec/11, "Tables").
fn encode(event: &PendingEvent) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(64));
    match event {
        PendingEvent::Received(m) => {
            out.push(KIND_RECEIVED);
            out.extend_from_slice(&m.sender_device);
            out.extend_from_slice(&m.message_id);
        }
        PendingEvent::IdentityChanged { user, device_key }
        | PendingEvent::NewDevice { user, device_key } => {
            out.push(if matches!(event, PendingEvent::IdentityChanged { .. }) {
                KIND_IDENTITY_CHANGED
            } else {
                KIND_NEW_DEVICE
            });
            out.extend_from_slice(device_key);
            put_name(&mut out, user, "user id")?;
        }
        PendingEvent::Handoff { handoff, fresh } => {
            out.push(KIND_HANDOFF);
            out.extend_from_slice(&handoff.sender_device);
            out.extend_from_slice(&handoff.message_id);
            let count = u16::try_from(fresh.len()).map_err(|_| StoreError::TooLarge {
                what: "handoff event",
            })?;
            out.extend_from_slice(&count.to_be_bytes());
            fresh.iter().for_each(|id| out.extend_from_slice(id));
        }
        PendingEvent::HandoffRefused { handoff, reason } => {
            out.push(KIND_HANDOFF_REFUSED);
            out.extend_from_slice(&handoff.sender_device);
            out.extend_from_slice(&handoff.message_id);
            out.push(reason.code());
        }
    }
    Ok(out)
}

fn decode(value: &Zeroizing<Vec<u8>>) -> Result<PendingEvent> {
    let mut r = reader(EVENTS, value);
    let event = match r.array::<1>()?[0] {
        KIND_RECEIVED => PendingEvent::Received(MessageRef {
            sender_device: r.array()?,
            message_id: r.array()?,
        }),
        kind @ (KIND_IDENTITY_CHANGED | KIND_NEW_DEVICE) => {
            let device_key = r.array()?;
            let user = r.name()?;
            if kind == KIND_IDENTITY_CHANGED {
                PendingEvent::IdentityChanged { user, device_key }
            } else {
                PendingEvent::NewDevice { user, device_key }
            }
        }
        KIND_HANDOFF => {
            let handoff = MessageRef {
                sender_device: r.array()?,
                message_id: r.array()?,
            };
            let count = r.u16()?;
            let fresh = (0..count)
                .map(|_| r.array())
                .collect::<Result<Vec<[u8; 16]>>>()?;
            PendingEvent::Handoff { handoff, fresh }
        }
        KIND_HANDOFF_REFUSED => PendingEvent::HandoffRefused {
            handoff: MessageRef {
                sender_device: r.array()?,
                message_id: r.array()?,
            },
            reason: HandoffRefusal::from_code(r.array::<1>()?[0])
                .ok_or_else(|| corrupt(EVENTS, "unknown handoff refusal"))?,
        },
        _ => return Err(corrupt(EVENTS, "unknown event kind")),
    };
    if !r.rest().is_empty() {
        return Err(corrupt(EVENTS, "trailing bytes"));
    }
    Ok(event)
}

/// Appends `event` under the next sequence number; the caller's
/// transaction (see [`Store::write`]) makes it one with its cause.
pub(super) fn push(conn: &Connection, keys: &Keys, event: &PendingEvent) -> Result<u64> {
    let seq = {
        let mut stmt = conn.prepare_cached("SELECT value FROM counters WHERE name = ?1")?;
        let mut rows = stmt.query([NEXT_EVENT_SEQ])?;
        match rows.next()? {
            Some(row) => integer_u64(row, 0, COUNTERS)?,
            None => 1,
        }
    };
    // Sequence numbers stay SQLite integers (at most 2^63 - 1).
    let too_large = || StoreError::TooLarge {
        what: "event sequence",
    };
    let row = i64::try_from(seq).map_err(|_| too_large())?;
    let next = row.checked_add(1).ok_or_else(too_large)?;
    let sealed = keys.seal(EVENTS, &seq.to_be_bytes(), &encode(event)?)?;
    conn.prepare_cached("INSERT INTO events (seq, value) VALUES (?1, ?2)")?
        .execute(params![row, sealed])?;
    conn.prepare_cached("INSERT OR REPLACE INTO counters (name, value) VALUES (?1, ?2)")?
        .execute(params![NEXT_EVENT_SEQ, next])?;
    Ok(seq)
}

/// # Event queue
impl Store {
    /// Appends an event to the queue; returns its sequence number. Inside
    /// [`Store::atomically`] it is written with the change it reports, or
    /// not at all.
    pub fn push_event(&mut self, event: &PendingEvent) -> Result<u64> {
        self.write(|conn, keys| push(conn, keys, event))
    }

    /// The queued events, oldest first, with their sequence numbers.
    pub fn pending_events(&self) -> Result<Vec<(u64, PendingEvent)>> {
        self.list_events("SELECT seq, value FROM events ORDER BY seq")
    }

    /// The oldest queued event, if any.
    pub fn first_event(&self) -> Result<Option<(u64, PendingEvent)>> {
        Ok(self
            .list_events("SELECT seq, value FROM events ORDER BY seq LIMIT 1")?
            .into_iter()
            .next())
    }

    /// Removes the event `seq` (reported); whether it was queued.
    pub fn delete_event(&mut self, seq: u64) -> Result<bool> {
        let seq = i64::try_from(seq).map_err(|_| StoreError::TooLarge {
            what: "event sequence",
        })?;
        self.write(|conn, _| {
            Ok(conn
                .prepare_cached("DELETE FROM events WHERE seq = ?1")?
                .execute([seq])?
                > 0)
        })
    }

    /// Removes the oldest event without opening it: one that does not open
    /// (see [`Store::first_event`]) would block every later one. Whether
    /// there was one.
    pub fn discard_first_event(&mut self) -> Result<bool> {
        self.write(|conn, _| {
            Ok(conn
                .prepare_cached("DELETE FROM events WHERE seq = (SELECT min(seq) FROM events)")?
                .execute([])?
                > 0)
        })
    }

    fn list_events(&self, sql: &str) -> Result<Vec<(u64, PendingEvent)>> {
        let keys = self.keys()?;
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let seq = integer_u64(row, 0, EVENTS)?;
            let value = keys.open(EVENTS, &seq.to_be_bytes(), &blob(row, 1, EVENTS)?)?;
            out.push((seq, decode(&value)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_bad_values_are_corrupt() {
        let events = [
            PendingEvent::Received(MessageRef {
                sender_device: [1; 32],
                message_id: [2; 16],
            }),
            PendingEvent::IdentityChanged {
                user: "dr.okafor".to_owned(),
                device_key: [3; 32],
            },
            PendingEvent::NewDevice {
                user: String::new(),
                device_key: [4; 32],
            },
        ];
        for event in &events {
            let bytes = encode(event).unwrap();
            assert_eq!(&decode(&bytes).unwrap(), event);
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(
                decode(&longer),
                Err(StoreError::Corrupt { table: EVENTS, .. })
            ));
            for cut in 0..bytes.len() {
                let short = Zeroizing::new(bytes[..cut].to_vec());
                assert!(matches!(
                    decode(&short),
                    Err(StoreError::Corrupt { table: EVENTS, .. })
                ));
            }
        }
        let unknown = Zeroizing::new(vec![9u8; 49]);
        assert!(matches!(
            decode(&unknown),
            Err(StoreError::Corrupt { table: EVENTS, .. })
        ));
    }
}
