//! Received messages and the outbox (spec/11, "Tables": `incoming`,
//! `outbox`).

use rusqlite::{Connection, params};
use zeroize::Zeroizing;

use super::Store;
use super::codec::{blob, flag, put_name, reader};
use super::crypto::Keys;
use super::error::{Result, StoreError};
use super::records::check_tag;

pub(super) const INCOMING: &str = "incoming";
const OUTBOX: &str = "outbox";

/// Blind-index names (spec/11, "Blind indexes").
pub(super) const TAG_INCOMING: &str = "incoming";
const TAG_OUTBOX: &str = "outbox";

/// Whether a message was new to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insertion {
    /// Stored.
    Inserted,
    /// Already stored under the same key; nothing changed.
    Duplicate,
}

/// A received message, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The sending user, as the relay named it.
    pub sender_user: String,
    /// The sending device's key.
    pub sender_device: [u8; 32],
    /// The sender's message id.
    pub message_id: [u8; 16],
    /// When this device stored it, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The plaintext.
    pub body: Vec<u8>,
    /// Whether the relay has been told (see [`Store::mark_acknowledged`]).
    pub acknowledged: bool,
}

impl core::fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("len", &self.body.len())
            .field("acknowledged", &self.acknowledged)
            .finish_non_exhaustive()
    }
}

/// Names a received message: its sender device and message id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MessageRef {
    /// The sending device's key.
    pub sender_device: [u8; 32],
    /// The sender's message id.
    pub message_id: [u8; 16],
}

impl core::fmt::Debug for MessageRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MessageRef").finish_non_exhaustive()
    }
}

/// Where an outgoing message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxStatus {
    /// Not yet accepted by the relay.
    Pending,
    /// The relay accepted it.
    Sent,
}

impl OutboxStatus {
    fn code(self) -> i64 {
        match self {
            Self::Pending => 0,
            Self::Sent => 1,
        }
    }
}

/// A message in the outbox.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Its message id (the same for every retry, spec/08).
    pub message_id: [u8; 16],
    /// The users it is addressed to.
    pub recipients: Vec<String>,
    /// The plaintext.
    pub body: Vec<u8>,
    /// Whether the relay accepted it.
    pub status: OutboxStatus,
}

impl core::fmt::Debug for OutgoingMessage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OutgoingMessage")
            .field("recipients", &self.recipients.len())
            .field("len", &self.body.len())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// `incoming` value: `sender_device || message_id || u64be(received_at_ms)
/// || u16be(len(sender_user)) || sender_user || body`.
fn parse_incoming(value: &Zeroizing<Vec<u8>>, acknowledged: bool) -> Result<ReceivedMessage> {
    let mut r = reader(INCOMING, value);
    let sender_device = r.array::<32>()?;
    let message_id = r.array::<16>()?;
    let received_at_ms = r.u64()?;
    let sender_user = r.name()?;
    Ok(ReceivedMessage {
        sender_user,
        sender_device,
        message_id,
        received_at_ms,
        body: r.rest().to_vec(),
        acknowledged,
    })
}

/// `outbox` value: `message_id || u16be(n) || n × (u16be(len) || user) || body`.
fn parse_outgoing(value: &Zeroizing<Vec<u8>>, status: OutboxStatus) -> Result<OutgoingMessage> {
    let mut r = reader(OUTBOX, value);
    let message_id = r.array::<16>()?;
    let count = r.u16()?;
    let recipients = (0..count).map(|_| r.name()).collect::<Result<Vec<_>>>()?;
    Ok(OutgoingMessage {
        message_id,
        recipients,
        body: r.rest().to_vec(),
        status,
    })
}

/// # Received messages
impl Store {
    /// Stores a received message, unless one from the same device with the
    /// same id is already stored: de-duplication and body are one row, so
    /// one statement (STO-12). New messages start unacknowledged.
    pub fn store_incoming(
        &mut self,
        sender_user: &str,
        sender_device: &[u8; 32],
        message_id: &[u8; 16],
        received_at_ms: u64,
        body: &[u8],
    ) -> Result<Insertion> {
        let mut value = Zeroizing::new(Vec::with_capacity(58 + sender_user.len() + body.len()));
        value.extend_from_slice(sender_device);
        value.extend_from_slice(message_id);
        value.extend_from_slice(&received_at_ms.to_be_bytes());
        put_name(&mut value, sender_user, "sender user")?;
        value.extend_from_slice(body);
        self.write(|conn, keys| {
            let tag = keys.tag(TAG_INCOMING, &[sender_device, message_id]);
            let sealed = keys.seal(INCOMING, &tag, &value)?;
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO incoming (tag, acknowledged, value) VALUES (?1, 0, ?2) \
                     ON CONFLICT (tag) DO NOTHING",
                )?
                .execute(params![tag, sealed])?;
            Ok(if inserted == 1 {
                Insertion::Inserted
            } else {
                Insertion::Duplicate
            })
        })
    }

    /// Whether a message from `sender_device` with `message_id` is stored:
    /// a redelivery to acknowledge again without decrypting it (spec/08,
    /// RLY-28).
    pub fn is_received(&self, sender_device: &[u8; 32], message_id: &[u8; 16]) -> Result<bool> {
        let keys = self.keys()?;
        let tag = keys.tag(TAG_INCOMING, &[sender_device, message_id]);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM incoming WHERE tag = ?1")?;
        Ok(stmt.exists([tag])?)
    }

    /// Every stored received message, in the order stored.
    pub fn received(&self) -> Result<Vec<ReceivedMessage>> {
        list_incoming(
            &self.conn,
            self.keys()?,
            "SELECT tag, acknowledged, value FROM incoming ORDER BY seq",
            [],
        )
    }

    /// The received message from `sender_device` with `message_id`, if
    /// stored.
    pub fn received_message(
        &self,
        sender_device: &[u8; 32],
        message_id: &[u8; 16],
    ) -> Result<Option<ReceivedMessage>> {
        let keys = self.keys()?;
        let tag = keys.tag(TAG_INCOMING, &[sender_device, message_id]);
        Ok(list_incoming(
            &self.conn,
            keys,
            "SELECT tag, acknowledged, value FROM incoming WHERE tag = ?1",
            [tag],
        )?
        .pop())
    }

    /// The received messages not yet acknowledged to the relay, in the
    /// order stored: after a restart, acknowledge these again.
    pub fn unacknowledged(&self) -> Result<Vec<MessageRef>> {
        unacknowledged_in(&self.conn, self.keys()?)
    }

    /// Records that the relay was told; whether the message is stored.
    pub fn mark_acknowledged(
        &mut self,
        sender_device: &[u8; 32],
        message_id: &[u8; 16],
    ) -> Result<bool> {
        self.write(|conn, keys| {
            let tag = keys.tag(TAG_INCOMING, &[sender_device, message_id]);
            Ok(conn
                .prepare_cached("UPDATE incoming SET acknowledged = 1 WHERE tag = ?1")?
                .execute([tag])?
                > 0)
        })
    }

    /// Deletes a received message (retention); whether it was stored. A
    /// deleted message is no longer recognised as a duplicate.
    pub fn delete_received(
        &mut self,
        sender_device: &[u8; 32],
        message_id: &[u8; 16],
    ) -> Result<bool> {
        self.write(|conn, keys| {
            let tag = keys.tag(TAG_INCOMING, &[sender_device, message_id]);
            Ok(conn
                .prepare_cached("DELETE FROM incoming WHERE tag = ?1")?
                .execute([tag])?
                > 0)
        })
    }
}

/// [`Store::unacknowledged`], on a connection (also used while upgrading
/// a store, before it is a [`Store`]).
pub(super) fn unacknowledged_in(conn: &Connection, keys: &Keys) -> Result<Vec<MessageRef>> {
    Ok(list_incoming(
        conn,
        keys,
        "SELECT tag, acknowledged, value FROM incoming WHERE acknowledged = 0 ORDER BY seq",
        [],
    )?
    .into_iter()
    .map(|m| MessageRef {
        sender_device: m.sender_device,
        message_id: m.message_id,
    })
    .collect())
}

/// The incoming rows `sql` selects (`tag, acknowledged, value`), opened
/// and checked against their tags.
fn list_incoming(
    conn: &Connection,
    keys: &Keys,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<ReceivedMessage>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let tag = blob(row, 0, INCOMING)?;
        let acknowledged = flag(row, 1, INCOMING)?;
        let value = keys.open(INCOMING, &tag, &blob(row, 2, INCOMING)?)?;
        let message = parse_incoming(&value, acknowledged)?;
        check_tag(
            &tag,
            &keys.tag(TAG_INCOMING, &[&message.sender_device, &message.message_id]),
            INCOMING,
        )?;
        out.push(message);
    }
    Ok(out)
}

/// # Outbox
impl Store {
    /// Puts a message into the outbox as [`OutboxStatus::Pending`], unless
    /// one with the same id is there.
    pub fn queue_outgoing(
        &mut self,
        message_id: &[u8; 16],
        recipients: &[&str],
        body: &[u8],
    ) -> Result<Insertion> {
        let count = u16::try_from(recipients.len())
            .map_err(|_| StoreError::TooLarge { what: "recipients" })?;
        let mut value = Zeroizing::new(Vec::with_capacity(18 + body.len()));
        value.extend_from_slice(message_id);
        value.extend_from_slice(&count.to_be_bytes());
        for user in recipients {
            put_name(&mut value, user, "recipient")?;
        }
        value.extend_from_slice(body);
        self.write(|conn, keys| {
            let tag = keys.tag(TAG_OUTBOX, &[message_id]);
            let sealed = keys.seal(OUTBOX, &tag, &value)?;
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO outbox (tag, status, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (tag) DO NOTHING",
                )?
                .execute(params![tag, OutboxStatus::Pending.code(), sealed])?;
            Ok(if inserted == 1 {
                Insertion::Inserted
            } else {
                Insertion::Duplicate
            })
        })
    }

    /// Every message in the outbox, in the order queued.
    pub fn outbox(&self) -> Result<Vec<OutgoingMessage>> {
        self.list_outbox("SELECT tag, status, value FROM outbox ORDER BY seq")
    }

    /// The pending messages, in the order queued: after a restart, send
    /// these again (with their ids).
    pub fn pending_outgoing(&self) -> Result<Vec<OutgoingMessage>> {
        self.list_outbox("SELECT tag, status, value FROM outbox WHERE status = 0 ORDER BY seq")
    }

    fn list_outbox(&self, sql: &str) -> Result<Vec<OutgoingMessage>> {
        let keys = self.keys()?;
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let tag = blob(row, 0, OUTBOX)?;
            let status = if flag(row, 1, OUTBOX)? {
                OutboxStatus::Sent
            } else {
                OutboxStatus::Pending
            };
            let value = keys.open(OUTBOX, &tag, &blob(row, 2, OUTBOX)?)?;
            let message = parse_outgoing(&value, status)?;
            check_tag(&tag, &keys.tag(TAG_OUTBOX, &[&message.message_id]), OUTBOX)?;
            out.push(message);
        }
        Ok(out)
    }

    /// Marks a message as accepted by the relay; whether it is in the outbox.
    pub fn mark_sent(&mut self, message_id: &[u8; 16]) -> Result<bool> {
        self.write(|conn, keys| {
            let tag = keys.tag(TAG_OUTBOX, &[message_id]);
            Ok(conn
                .prepare_cached("UPDATE outbox SET status = ?1 WHERE tag = ?2")?
                .execute(params![OutboxStatus::Sent.code(), tag])?
                > 0)
        })
    }

    /// Removes a message from the outbox; whether it was there.
    pub fn delete_outgoing(&mut self, message_id: &[u8; 16]) -> Result<bool> {
        self.write(|conn, keys| {
            let tag = keys.tag(TAG_OUTBOX, &[message_id]);
            Ok(conn
                .prepare_cached("DELETE FROM outbox WHERE tag = ?1")?
                .execute([tag])?
                > 0)
        })
    }
}
