//! [`Storage::enqueue`](crate::storage::Storage::enqueue) in the open
//! transaction: its rules, checked in their order, then the copies, their
//! shared payload if any (`payloads.rs`) and their audit entries.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, OptionalExtension, params};
use ward_audit::{AuditEntry, EventKind, MessageId, UserId};

use super::writer::Tx;
use super::{active_device, entry, list_devices, payloads};
use crate::storage::error::{Result, StorageError};
use crate::storage::types::{Device, DeviceKey, EnqueueReceipt, QueuedCopy};

/// A send's arguments, copied for the writer thread.
pub(super) struct Send {
    pub(super) sender: DeviceKey,
    pub(super) message_id: MessageId,
    pub(super) now: u64,
    pub(super) expires_at: u64,
    pub(super) addressed: Vec<UserId>,
    /// One ciphertext per recipient.
    pub(super) deliveries: Vec<(DeviceKey, Vec<u8>)>,
    /// A group send ([`DeviceSet::Subset`](crate::storage::DeviceSet)).
    pub(super) subset: bool,
    /// A group send's shared recipients and their one ciphertext.
    pub(super) shared: Option<(Vec<DeviceKey>, Vec<u8>)>,
}

impl Send {
    /// The payload in bytes, for the writer's batch bound: the shared
    /// ciphertext counts once.
    pub(super) fn cost(&self) -> usize {
        let own: usize = self.deliveries.iter().map(|(_, c)| c.len()).sum();
        own + self.shared.as_ref().map_or(0, |(_, c)| c.len())
    }

    /// The rules of `enqueue`, numbered as in its documentation, then the
    /// commit's rows.
    pub(super) fn run(self, tx: &mut Tx<'_>) -> Result<EnqueueReceipt> {
        let Self {
            sender,
            message_id,
            now,
            expires_at,
            addressed,
            deliveries,
            subset,
            shared,
        } = self;
        // 1.
        let from = active_device(tx.conn(), &sender)?;
        // 2. A retry of a stored message: the original receipt.
        if let Some(receipt) = original_receipt(tx.conn(), &sender, message_id)? {
            return Ok(receipt);
        }
        // 3.
        if deliveries.is_empty() && shared.is_none() {
            return Err(StorageError::InvalidInput("no deliveries"));
        }
        if expires_at <= now {
            return Err(StorageError::InvalidInput("expiry is not after now"));
        }
        let max = tx.config.max_ciphertext_len;
        if deliveries.iter().any(|(_, c)| c.len() > max)
            || shared.as_ref().is_some_and(|(_, c)| c.len() > max)
        {
            return Err(StorageError::InvalidInput("ciphertext too large"));
        }
        if shared
            .as_ref()
            .is_some_and(|(recipients, c)| recipients.is_empty() || c.is_empty())
        {
            return Err(StorageError::InvalidInput(
                "a shared delivery needs recipients and a ciphertext",
            ));
        }
        let shared_recipients = shared.iter().flat_map(|(recipients, _)| recipients);
        let named = || {
            deliveries
                .iter()
                .map(|(key, _)| key)
                .chain(shared_recipients.clone())
        };
        if subset {
            let mut seen = BTreeSet::new();
            if !named().all(|key| seen.insert(*key)) {
                return Err(StorageError::InvalidInput("a device is named twice"));
            }
        }
        // 4.
        let current = current_recipients(tx.conn(), &from, &addressed)?;
        // 5.
        let targets = if subset {
            current.among(named())
        } else {
            current.exactly(named())
        };
        let Some(targets) = targets else {
            return Err(StorageError::StaleDevices {
                current: current.current,
            });
        };
        // 6.
        let limit = tx.config.max_queue_depth;
        let mut queued = Vec::with_capacity(targets.len());
        for to in targets {
            let (next_seq, len): (u64, u64) = tx
                .conn()
                .prepare_cached("SELECT next_seq, queue_len FROM devices WHERE device_key = ?1")?
                .query_row([to.key.0], |row| Ok((row.get(0)?, row.get(1)?)))?;
            if len >= u64::from(limit) {
                return Err(StorageError::QueueFull {
                    device: to.key,
                    limit,
                });
            }
            queued.push((to.key, to.user.clone(), next_seq));
        }

        tx.conn()
            .prepare_cached(
                "INSERT INTO sends (sender, message_id, enqueued_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![sender.0, message_id.0, now, expires_at])?;
        let payload = match &shared {
            Some((_, ciphertext)) => Some(payloads::store(tx.conn(), ciphertext)?),
            None => None,
        };
        // What each copy holds, in the order of `targets`: the deliveries'
        // own ciphertexts, then, for each shared recipient, an empty one and
        // the shared payload; and the size the copy is audited with.
        let own = deliveries.iter().map(|(_, c)| (&c[..], None, c.len()));
        let referring = shared.iter().flat_map(|(recipients, c)| {
            recipients.iter().map(move |_| (&[][..], payload, c.len()))
        });
        let mut copies = Vec::with_capacity(queued.len());
        for ((to, to_user, seq), (ciphertext, payload, size)) in
            queued.into_iter().zip(own.chain(referring))
        {
            let conn = tx.conn();
            conn.prepare_cached(
                "INSERT INTO queue (recipient, seq, sender, message_id, enqueued_at, \
                 expires_at, ciphertext, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                to.0,
                seq,
                sender.0,
                message_id.0,
                now,
                expires_at,
                ciphertext,
                payload
            ])?;
            conn.prepare_cached(
                "UPDATE devices SET next_seq = next_seq + 1, queue_len = queue_len + 1 \
                 WHERE device_key = ?1",
            )?
            .execute([to.0])?;
            tx.audit(
                AuditEntry {
                    actor_user: Some(from.user.clone()),
                    actor_device: sender.audit_id(),
                    target_user: Some(to_user),
                    target_device: to.audit_id(),
                    message_id: Some(message_id),
                    size: Some(size as u64),
                    ..entry(EventKind::Send)
                },
                now,
            )?;
            copies.push(QueuedCopy { recipient: to, seq });
        }
        Ok(EnqueueReceipt {
            duplicate: false,
            enqueued_at: now,
            expires_at,
            copies,
        })
    }
}

/// The receipt of the stored, unexpired send `(sender, message_id)`, if
/// there is one, with its copies still queued.
fn original_receipt(
    conn: &Connection,
    sender: &DeviceKey,
    message_id: MessageId,
) -> Result<Option<EnqueueReceipt>> {
    let original: Option<(u64, u64)> = conn
        .prepare_cached(
            "SELECT enqueued_at, expires_at FROM sends WHERE sender = ?1 AND message_id = ?2",
        )?
        .query_row(params![sender.0, message_id.0], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let Some((enqueued_at, expires_at)) = original else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT recipient, seq FROM queue WHERE sender = ?1 AND message_id = ?2 ORDER BY id",
    )?;
    let copies = stmt
        .query_map(params![sender.0, message_id.0], |row| {
            Ok(QueuedCopy {
                recipient: DeviceKey(row.get(0)?),
                seq: row.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(EnqueueReceipt {
        duplicate: true,
        enqueued_at,
        expires_at,
        copies,
    }))
}

/// Who a send may reach: the active devices of the addressed users and of
/// the sender's own user, but not the sender (rule 5 of `enqueue`).
struct Recipients {
    /// Each addressed user (once, in the order given), then the sender's
    /// user if it was not addressed, with its active devices.
    current: Vec<(UserId, Vec<Device>)>,
    sender: DeviceKey,
}

fn current_recipients(
    conn: &Connection,
    sender: &Device,
    addressed: &[UserId],
) -> Result<Recipients> {
    let mut current: Vec<(UserId, Vec<Device>)> = Vec::with_capacity(addressed.len() + 1);
    for user in addressed.iter().chain(core::iter::once(&sender.user)) {
        if current.iter().any(|(listed, _)| listed == user) {
            continue;
        }
        // An unknown addressed user is NotFound.
        let devices = list_devices(conn, user, false)?;
        current.push((user.clone(), devices));
    }
    Ok(Recipients {
        current,
        sender: sender.key,
    })
}

impl Recipients {
    /// The devices a send may reach, by key.
    fn reachable(&self) -> BTreeMap<DeviceKey, &Device> {
        self.current
            .iter()
            .flat_map(|(_, devices)| devices)
            .filter(|device| device.key != self.sender)
            .map(|device| (device.key, device))
            .collect()
    }

    /// The device of each recipient, in order, if the recipients are
    /// exactly the devices the send must reach, each once; `None` when
    /// they are not (a stale device list).
    fn exactly<'k>(&self, named: impl Iterator<Item = &'k DeviceKey>) -> Option<Vec<&Device>> {
        let mut expected = self.reachable();
        // Removing each recipient from the expected set refuses unexpected
        // devices and repeats alike; what is left was missed.
        let targets = named
            .map(|recipient| expected.remove(recipient))
            .collect::<Option<Vec<_>>>()?;
        expected.is_empty().then_some(targets)
    }

    /// The device of each recipient, in order, if every one is a device
    /// the send may reach (a group send: others may be left out; repeats
    /// were refused before); `None` otherwise.
    fn among<'k>(&self, named: impl Iterator<Item = &'k DeviceKey>) -> Option<Vec<&Device>> {
        let reachable = self.reachable();
        named
            .map(|recipient| reachable.get(recipient).copied())
            .collect()
    }
}
