//! `Send` (spec/08, "`Send` → `SendReceipt`"): the checks that need no
//! storage, then `enqueue`, which checks the rest and commits in one
//! transaction.

use std::collections::HashSet;
use std::sync::Arc;

use ward_audit::UserId;
use ward_proto::relay_v1::{self as wire, ErrorCode, response::Body as Resp};

use super::{Handled, MAX_USERS_PER_REQUEST, device_key, message_id, user_id};
use crate::server::connection::Session;
use crate::server::refusal::Refusal;
use crate::server::{Limits, Shared, now_ms};
use crate::storage::{Delivery, DeviceKey, DeviceSet, SharedDelivery, StorageError};

/// spec/08, "`Send`": steps 1 to 6 are checked here; steps 7 to 11, which
/// need the directory, by `enqueue`, in the transaction that commits.
pub(super) async fn send(shared: &Arc<Shared>, session: &Arc<Session>, r: wire::Send) -> Handled {
    let limits = &shared.limits;
    let id = message_id(&r.message_id)?;
    // Step 2: envelopes and shared devices alike name recipients.
    if r.envelopes.len().saturating_add(r.shared_devices.len()) > limits.max_envelopes as usize {
        return Err(Refusal::invalid(format!(
            "at most {} recipient devices (envelopes and shared devices) per send",
            limits.max_envelopes
        )));
    }
    if r.user_ids.len() > MAX_USERS_PER_REQUEST {
        return Err(Refusal::invalid("too many users in one send"));
    }
    let ttl = match r.ttl_ms {
        0 => limits.default_ttl_ms,
        ttl if ttl > limits.max_ttl_ms => {
            return Err(Refusal::invalid(format!(
                "ttl_ms is above the relay's maximum of {}",
                limits.max_ttl_ms
            )));
        }
        ttl => ttl,
    };
    let addressed = r
        .user_ids
        .iter()
        .map(|u| user_id(u))
        .collect::<Result<Vec<_>, _>>()?;
    let distinct: HashSet<&UserId> = addressed.iter().collect();
    if distinct.len() != addressed.len() {
        return Err(Refusal::invalid("a user is named twice"));
    }
    let mut envelopes = Vec::with_capacity(r.envelopes.len());
    let mut bytes = 0u64;
    for e in r.envelopes {
        if e.ciphertext.len() > limits.max_ciphertext_len as usize {
            return Err(too_large(limits));
        }
        bytes += e.ciphertext.len() as u64;
        envelopes.push((device_key(&e.device_key)?, e.ciphertext));
    }
    let shared_part = shared_part(r.shared_ciphertext, &r.shared_devices, limits)?;
    // A group send: addressed by a roster, so held to the group rule.
    let group = r.device_subset || shared_part.is_some();
    if group {
        let mut named = HashSet::new();
        let shared_devices = shared_part.iter().flat_map(|s| &s.devices);
        let all = envelopes.iter().map(|(key, _)| key).chain(shared_devices);
        if !all.into_iter().all(|key| named.insert(*key)) {
            return Err(Refusal::invalid(
                "a device is named twice across envelopes and shared_devices",
            ));
        }
    }
    // The shared ciphertext is stored once, and counted once.
    bytes += shared_part
        .as_ref()
        .map_or(0, |s| s.ciphertext.len() as u64);
    let sender = session.device;
    let receipt = shared
        .storage(move |s| {
            let now = now_ms();
            let deliveries: Vec<Delivery<'_>> = envelopes
                .iter()
                .map(|(recipient, ciphertext)| Delivery {
                    recipient: *recipient,
                    ciphertext,
                })
                .collect();
            let devices = if group {
                DeviceSet::Subset {
                    shared: shared_part.as_ref().map(|s| SharedDelivery {
                        recipients: &s.devices,
                        ciphertext: &s.ciphertext,
                    }),
                }
            } else {
                DeviceSet::Exact
            };
            s.enqueue(
                &sender,
                id,
                now,
                now.saturating_add(ttl),
                &addressed,
                &deliveries,
                devices,
            )
        })
        .await;
    let receipt = match receipt {
        Ok(receipt) => receipt,
        Err(e @ StorageError::StaleDevices { .. }) => {
            shared.metrics.sends_stale_total.inc();
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    if !receipt.duplicate {
        shared
            .metrics
            .messages_stored_total
            .inc_by(receipt.copies.len() as u64);
        shared.metrics.message_bytes_stored_total.inc_by(bytes);
        for copy in &receipt.copies {
            shared.wake(&copy.recipient);
        }
    }
    Ok(Resp::Sent(wire::SendReceipt {
        duplicate: receipt.duplicate,
        enqueued_at_ms: receipt.enqueued_at,
        expires_at_ms: receipt.expires_at,
    }))
}

fn too_large(limits: &Limits) -> Refusal {
    Refusal::new(
        ErrorCode::MessageTooLarge,
        format!(
            "a ciphertext is above the relay's maximum of {} bytes",
            limits.max_ciphertext_len
        ),
    )
}

/// The shared part of a group send.
struct SharedPart {
    devices: Vec<DeviceKey>,
    ciphertext: Vec<u8>,
}

/// Step 6 of spec/08, "`Send`", but for devices named twice (which needs
/// the envelopes too): the shared part of a send, if it has one.
fn shared_part(
    ciphertext: Vec<u8>,
    devices: &[Vec<u8>],
    limits: &Limits,
) -> Result<Option<SharedPart>, Refusal> {
    if ciphertext.is_empty() != devices.is_empty() {
        return Err(Refusal::invalid(
            "shared_ciphertext and shared_devices are set together or not at all",
        ));
    }
    if devices.is_empty() {
        return Ok(None);
    }
    if ciphertext.len() > limits.max_ciphertext_len as usize {
        return Err(too_large(limits));
    }
    let devices = devices
        .iter()
        .map(|k| device_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(SharedPart {
        devices,
        ciphertext,
    }))
}
