//! Groups (spec/11, `groups`, `group_pending`, `group_outbox`): each
//! group's state as ward-core serializes it, the group traffic that waits
//! for something (a chain, a welcome, a parent change), and the outbox of
//! group traffic, addressed to devices rather than users.

use rusqlite::{OptionalExtension, params};
use zeroize::Zeroizing;

use super::Store;
use super::codec::{blob, flag, put_name, reader};
use super::error::{Result, StoreError, corrupt};
use super::records::check_tag;

const GROUPS: &str = "groups";
const GROUP_PENDING: &str = "group_pending";
const GROUP_OUTBOX: &str = "group_outbox";

/// The most group deliveries kept waiting, all groups together: past it
/// the oldest is dropped (spec/11, STO-30).
pub const MAX_GROUP_PENDING: u64 = 5000;
/// The most sent group messages kept for resending to a device that asks
/// for their chain (SK-13), all groups together; older ones are dropped.
pub const MAX_GROUP_SENT_KEPT: u64 = 2000;

/// What a waiting group delivery waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingKind {
    /// A group message (`0x08`) whose group or chain this device lacks.
    Message,
    /// A membership change (`0x0b`) whose parent this device has not applied.
    Change,
    /// A chain with its message (an encoded `GroupControl` `key`), for a
    /// group whose welcome has not arrived.
    Key,
}

/// A group delivery kept until it can be opened or applied.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingGroupItem {
    /// What it waits for.
    pub kind: PendingKind,
    /// The group it is for.
    pub group_id: [u8; 16],
    /// The user the relay named as its sender.
    pub sender_user: String,
    /// The device the relay named as its sender.
    pub sender_device: [u8; 32],
    /// The id it was delivered with.
    pub message_id: [u8; 16],
    /// When it arrived, ms since the Unix epoch.
    pub received_at_ms: u64,
    /// The `0x08` message, the `0x0b` change or the encoded control (which
    /// holds a chain key: zeroized on drop).
    pub bytes: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for PendingGroupItem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PendingGroupItem")
            .field("kind", &self.kind)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// Group traffic on its way out: a plaintext for some devices, each over
/// its pairwise session, and a ciphertext shared by others (a group
/// message). Kept after it was sent, when `resend` holds the message
/// content, to answer a device that lacked its chain.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupSend {
    /// The id it is sent with.
    pub message_id: [u8; 16],
    /// The group it is for.
    pub group_id: [u8; 16],
    /// The users whose devices it addresses (this user's implied).
    pub users: Vec<String>,
    /// The devices that get `pairwise_plaintext` over their sessions.
    pub pairwise: Vec<[u8; 32]>,
    /// An encoded content (spec/12), or empty.
    pub pairwise_plaintext: Zeroizing<Vec<u8>>,
    /// The devices that get `shared_ciphertext`.
    pub shared: Vec<[u8; 32]>,
    /// A sender-key message (`0x08`), or empty.
    pub shared_ciphertext: Vec<u8>,
    /// The encoded `Content::Message` of a group message, for resending.
    pub resend: Zeroizing<Vec<u8>>,
    /// Whether the relay took it.
    pub sent: bool,
}

impl core::fmt::Debug for GroupSend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GroupSend")
            .field("pairwise", &self.pairwise.len())
            .field("shared", &self.shared.len())
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| StoreError::TooLarge { what: "bytes" })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn put_keys(out: &mut Vec<u8>, keys: &[[u8; 32]]) -> Result<()> {
    let count = u16::try_from(keys.len()).map_err(|_| StoreError::TooLarge { what: "devices" })?;
    out.extend_from_slice(&count.to_be_bytes());
    keys.iter().for_each(|k| out.extend_from_slice(k));
    Ok(())
}

fn take_bytes(r: &mut super::codec::Reader<'_>) -> Result<Vec<u8>> {
    let len = u32::from_be_bytes(r.array()?) as usize;
    Ok(r.take(len)?.to_vec())
}

fn take_keys(r: &mut super::codec::Reader<'_>) -> Result<Vec<[u8; 32]>> {
    (0..r.u16()?).map(|_| r.array()).collect()
}

fn encode_send(s: &GroupSend) -> Result<Zeroizing<Vec<u8>>> {
    let mut v = Zeroizing::new(Vec::new());
    v.extend_from_slice(&s.message_id);
    v.extend_from_slice(&s.group_id);
    let users = u16::try_from(s.users.len()).map_err(|_| StoreError::TooLarge { what: "users" })?;
    v.extend_from_slice(&users.to_be_bytes());
    for user in &s.users {
        put_name(&mut v, user, "user")?;
    }
    put_keys(&mut v, &s.pairwise)?;
    put_bytes(&mut v, &s.pairwise_plaintext)?;
    put_keys(&mut v, &s.shared)?;
    put_bytes(&mut v, &s.shared_ciphertext)?;
    put_bytes(&mut v, &s.resend)?;
    Ok(v)
}

fn decode_send(value: &Zeroizing<Vec<u8>>, sent: bool) -> Result<GroupSend> {
    let mut r = reader(GROUP_OUTBOX, value);
    let message_id = r.array()?;
    let group_id = r.array()?;
    let users = (0..r.u16()?)
        .map(|_| r.name())
        .collect::<Result<Vec<_>>>()?;
    let pairwise = take_keys(&mut r)?;
    let pairwise_plaintext = Zeroizing::new(take_bytes(&mut r)?);
    let shared = take_keys(&mut r)?;
    let shared_ciphertext = take_bytes(&mut r)?;
    let resend = Zeroizing::new(take_bytes(&mut r)?);
    if !r.rest().is_empty() {
        return Err(corrupt(GROUP_OUTBOX, "trailing bytes"));
    }
    Ok(GroupSend {
        message_id,
        group_id,
        users,
        pairwise,
        pairwise_plaintext,
        shared,
        shared_ciphertext,
        resend,
        sent,
    })
}

fn encode_pending(p: &PendingGroupItem) -> Result<Zeroizing<Vec<u8>>> {
    let mut v = Zeroizing::new(Vec::with_capacity(80 + p.bytes.len()));
    v.push(match p.kind {
        PendingKind::Message => 1,
        PendingKind::Change => 2,
        PendingKind::Key => 3,
    });
    v.extend_from_slice(&p.group_id);
    v.extend_from_slice(&p.sender_device);
    v.extend_from_slice(&p.message_id);
    v.extend_from_slice(&p.received_at_ms.to_be_bytes());
    put_name(&mut v, &p.sender_user, "sender")?;
    v.extend_from_slice(&p.bytes);
    Ok(v)
}

fn decode_pending(value: &Zeroizing<Vec<u8>>) -> Result<PendingGroupItem> {
    let mut r = reader(GROUP_PENDING, value);
    let kind = match r.array::<1>()? {
        [1] => PendingKind::Message,
        [2] => PendingKind::Change,
        [3] => PendingKind::Key,
        _ => return Err(corrupt(GROUP_PENDING, "unknown kind")),
    };
    Ok(PendingGroupItem {
        kind,
        group_id: r.array()?,
        sender_device: r.array()?,
        message_id: r.array()?,
        received_at_ms: r.u64()?,
        sender_user: r.name()?,
        bytes: Zeroizing::new(r.rest().to_vec()),
    })
}

/// # Groups
impl Store {
    /// Saves a group's state (`GroupState::to_bytes`), replacing the one kept.
    pub fn save_group(&mut self, group_id: &[u8; 16], state: &[u8]) -> Result<()> {
        let mut value = Zeroizing::new(Vec::with_capacity(16 + state.len()));
        value.extend_from_slice(group_id);
        value.extend_from_slice(state);
        self.write(|conn, keys| {
            let tag = keys.tag(GROUPS, &[group_id]);
            let sealed = keys.seal(GROUPS, &tag, &value)?;
            conn.prepare_cached("INSERT OR REPLACE INTO groups (tag, value) VALUES (?1, ?2)")?
                .execute(params![tag, sealed])?;
            Ok(())
        })
    }

    /// The state kept for a group, if any.
    pub fn group(&self, group_id: &[u8; 16]) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let keys = self.keys()?;
        let tag = keys.tag(GROUPS, &[group_id]);
        let sealed = self
            .conn
            .prepare_cached("SELECT value FROM groups WHERE tag = ?1")?
            .query_row([tag.as_slice()], |row| Ok(blob(row, 0, GROUPS)))
            .optional()?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let value = keys.open(GROUPS, &tag, &sealed?)?;
        match value.get(..16) {
            Some(id) if id == group_id => Ok(Some(Zeroizing::new(value[16..].to_vec()))),
            _ => Err(corrupt(GROUPS, "group id does not match its tag")),
        }
    }

    /// The ids of every group kept.
    pub fn group_ids(&self) -> Result<Vec<[u8; 16]>> {
        let keys = self.keys()?;
        let mut stmt = self.conn.prepare_cached("SELECT tag, value FROM groups")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let tag = blob(row, 0, GROUPS)?;
            let value = keys.open(GROUPS, &tag, &blob(row, 1, GROUPS)?)?;
            let id: [u8; 16] = value
                .get(..16)
                .and_then(|id| id.try_into().ok())
                .ok_or_else(|| corrupt(GROUPS, "value truncated"))?;
            check_tag(&tag, &keys.tag(GROUPS, &[&id]), GROUPS)?;
            out.push(id);
        }
        Ok(out)
    }

    /// Keeps a group delivery that waits for something; the oldest is
    /// dropped past [`MAX_GROUP_PENDING`]. A second copy (same sender
    /// device and id) changes nothing.
    pub fn keep_group_pending(&mut self, item: &PendingGroupItem) -> Result<()> {
        let value = encode_pending(item)?;
        self.write(|conn, keys| {
            let tag = keys.tag(GROUP_PENDING, &[&item.sender_device, &item.message_id]);
            let group_tag = keys.tag(GROUPS, &[&item.group_id]);
            let sealed = keys.seal(GROUP_PENDING, &tag, &value)?;
            conn.prepare_cached(
                "INSERT INTO group_pending (tag, group_tag, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tag) DO NOTHING",
            )?
            .execute(params![tag, group_tag, sealed])?;
            conn.prepare_cached(
                "DELETE FROM group_pending WHERE seq <= \
                 (SELECT seq FROM group_pending ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
            )?
            .execute([MAX_GROUP_PENDING as i64])?;
            Ok(())
        })
    }

    /// The deliveries waiting for `group_id`, oldest first.
    pub fn group_pending(&self, group_id: &[u8; 16]) -> Result<Vec<PendingGroupItem>> {
        let keys = self.keys()?;
        let group_tag = keys.tag(GROUPS, &[group_id]);
        let mut stmt = self.conn.prepare_cached(
            "SELECT tag, value FROM group_pending WHERE group_tag = ?1 ORDER BY seq",
        )?;
        let mut rows = stmt.query([group_tag.as_slice()])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let tag = blob(row, 0, GROUP_PENDING)?;
            let value = keys.open(GROUP_PENDING, &tag, &blob(row, 1, GROUP_PENDING)?)?;
            let item = decode_pending(&value)?;
            check_tag(
                &tag,
                &keys.tag(GROUP_PENDING, &[&item.sender_device, &item.message_id]),
                GROUP_PENDING,
            )?;
            out.push(item);
        }
        Ok(out)
    }

    /// Whether a delivery is kept waiting.
    pub fn is_group_pending(
        &self,
        sender_device: &[u8; 32],
        message_id: &[u8; 16],
    ) -> Result<bool> {
        let keys = self.keys()?;
        let tag = keys.tag(GROUP_PENDING, &[sender_device, message_id]);
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM group_pending WHERE tag = ?1")?
            .query_row([tag.as_slice()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Drops a waiting delivery; whether it was kept.
    pub fn drop_group_pending(
        &mut self,
        sender_device: &[u8; 32],
        message_id: &[u8; 16],
    ) -> Result<bool> {
        self.write(|conn, keys| {
            let tag = keys.tag(GROUP_PENDING, &[sender_device, message_id]);
            Ok(conn
                .prepare_cached("DELETE FROM group_pending WHERE tag = ?1")?
                .execute([tag])?
                > 0)
        })
    }

    /// Puts group traffic into the group outbox, pending. Sent entries
    /// kept for resending past [`MAX_GROUP_SENT_KEPT`] go, oldest first.
    pub fn queue_group_send(&mut self, send: &GroupSend) -> Result<()> {
        let value = encode_send(send)?;
        self.write(|conn, keys| {
            let tag = keys.tag(GROUP_OUTBOX, &[&send.message_id]);
            let group_tag = keys.tag(GROUPS, &[&send.group_id]);
            let sealed = keys.seal(GROUP_OUTBOX, &tag, &value)?;
            conn.prepare_cached(
                "INSERT INTO group_outbox (tag, group_tag, status, value) VALUES (?1, ?2, 0, ?3) \
                 ON CONFLICT (tag) DO NOTHING",
            )?
            .execute(params![tag, group_tag, sealed])?;
            conn.prepare_cached(
                "DELETE FROM group_outbox WHERE status = 1 AND seq <= \
                 (SELECT seq FROM group_outbox WHERE status = 1 \
                  ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
            )?
            .execute([MAX_GROUP_SENT_KEPT as i64])?;
            Ok(())
        })
    }

    /// The group traffic not yet taken by the relay, in the order queued.
    pub fn pending_group_sends(&self) -> Result<Vec<GroupSend>> {
        self.list_group_sends(
            "SELECT tag, status, value FROM group_outbox WHERE status = 0 ORDER BY seq",
            [],
        )
    }

    /// A group message sent with `message_id` in `group_id`, if kept.
    pub fn group_send(
        &self,
        group_id: &[u8; 16],
        message_id: &[u8; 16],
    ) -> Result<Option<GroupSend>> {
        let keys = self.keys()?;
        let tag = keys.tag(GROUP_OUTBOX, &[message_id]);
        let found = self.list_group_sends(
            "SELECT tag, status, value FROM group_outbox WHERE tag = ?1",
            [tag.as_slice()],
        )?;
        Ok(found.into_iter().find(|s| &s.group_id == group_id))
    }

    fn list_group_sends(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<GroupSend>> {
        let keys = self.keys()?;
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let tag = blob(row, 0, GROUP_OUTBOX)?;
            let sent = flag(row, 1, GROUP_OUTBOX)?;
            let value = keys.open(GROUP_OUTBOX, &tag, &blob(row, 2, GROUP_OUTBOX)?)?;
            let send = decode_send(&value, sent)?;
            check_tag(
                &tag,
                &keys.tag(GROUP_OUTBOX, &[&send.message_id]),
                GROUP_OUTBOX,
            )?;
            out.push(send);
        }
        Ok(out)
    }

    /// The relay took group traffic: kept as sent if it can be resent
    /// (it has `resend`), else removed.
    pub fn mark_group_sent(&mut self, message_id: &[u8; 16], keep: bool) -> Result<()> {
        self.write(|conn, keys| {
            let tag = keys.tag(GROUP_OUTBOX, &[message_id]);
            if keep {
                conn.prepare_cached("UPDATE group_outbox SET status = 1 WHERE tag = ?1")?
                    .execute([tag])?;
            } else {
                conn.prepare_cached("DELETE FROM group_outbox WHERE tag = ?1")?
                    .execute([tag])?;
            }
            Ok(())
        })
    }
}
