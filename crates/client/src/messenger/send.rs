//! Sending: every message goes through the outbox, is encrypted for every
//! current device of its recipients and of this user, and is handed to
//! the relay with its id, as often as it takes (RLY-25).

use std::time::{Duration, Instant};

use ward_core::{DeviceIdentity, PreKeyBundle, Session, SignedPreKeys};
use ward_proto::relay_v1::{self as wire, request::Body as Req, response::Body as Resp};

use super::link::{is_connection_failure, is_final};
use super::receive::identity_event;
use super::{Event, Messenger, now_ms, random_id};
use crate::ClientError;
use crate::content::{self, Content, Message, Receipt, ReceiptKind};
use crate::store::{RoleThreadEntry, StoreError};
use zeroize::Zeroizing;

type Result<T, E = ClientError> = core::result::Result<T, E>;

/// How often a send is rebuilt after the relay reports a stale device list.
const STALE_RETRIES: usize = 3;

/// Device keys by user, as a send must cover them, with the identities the
/// relay listed.
pub(super) type DeviceLists = Vec<(String, Vec<DeviceIdentity>)>;

/// Distinct user ids, in the order given.
pub(super) fn distinct(users: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(users.len());
    for user in users {
        if !out.iter().any(|u| u == user) {
            out.push((*user).to_owned());
        }
    }
    out
}

/// Whether a failed send is likely to pass later by itself, so that the
/// app is told it is pending rather than failed: the connection, a rate
/// limit, a full queue, a device list that kept changing, a relay error, a
/// recipient device with no prekeys yet. (Other failures, but for final
/// refusals, also leave the message in the outbox.)
pub(super) fn is_transient(error: &ClientError) -> bool {
    use wire::ErrorCode as E;
    is_connection_failure(error)
        || matches!(error, ClientError::NoBundle)
        || matches!(
            error.code(),
            Some(E::RateLimited | E::QueueFull | E::StaleDevices | E::Internal)
        )
}

/// Whether an outbox entry is one of the SDK's own delivery receipts,
/// whose sending the app is not told of.
fn is_automatic_receipt(plaintext: &[u8]) -> bool {
    matches!(
        content::decode(plaintext),
        Ok(Content::Receipt(Receipt {
            kind: ReceiptKind::Delivered,
            ..
        }))
    )
}

impl Messenger {
    /// Sends `message` to every current device of `users` and to this
    /// user's other devices (which report it with
    /// [`IncomingMessage::from_own_device`](super::IncomingMessage::from_own_device)).
    /// A `sent_at_ms` of 0 is set to now. Returns its id once the relay
    /// has it.
    ///
    /// The message is kept in the outbox until the relay took it. If the
    /// relay cannot take it now (the connection is down, a rate limit, a
    /// full queue) the error is [`ClientError::Pending`], with the id: the
    /// messenger sends it again by itself when it is connected
    /// ([`Event::Sent`], or [`Event::SendFailed`] if it is then refused
    /// for good). A refusal for good (an unknown user) is
    /// [`ClientError::Refused`], and the message leaves the outbox.
    pub async fn send(&mut self, users: &[&str], mut message: Message) -> Result<[u8; 16]> {
        self.touch()?;
        if message.sent_at_ms == 0 {
            message.sent_at_ms = now_ms();
        }
        self.send_content(users, &Content::Message(message)).await
    }

    /// Sends a receipt for `message_ids` to `to_user` (and this user's
    /// other devices), as [`Messenger::send`] sends a message. `DELIVERED`
    /// receipts are sent automatically unless
    /// [`MessengerOptions::send_delivery_receipts`](super::MessengerOptions::send_delivery_receipts)
    /// is off; `READ` is the app's call.
    pub async fn send_receipt(
        &mut self,
        to_user: &str,
        kind: ReceiptKind,
        message_ids: &[[u8; 16]],
    ) -> Result<[u8; 16]> {
        self.touch()?;
        let receipt = Content::Receipt(Receipt {
            kind,
            message_ids: message_ids.to_vec(),
        });
        self.send_content(&[to_user], &receipt).await
    }

    /// Resends the outbox's pending messages with their ids (RLY-25),
    /// connecting first if an attempt is due: the relay stores each at
    /// most once. The messenger does this by itself whenever it connects;
    /// an app may call it too. A message the relay takes is reported
    /// ([`Event::Sent`]); one it refuses for good leaves the outbox
    /// ([`Event::SendFailed`]); any other stays pending. The first failure
    /// is returned after trying all.
    pub async fn flush_outbox(&mut self) -> Result<()> {
        self.check_idle()?;
        self.ensure_link().await?;
        self.resend_outbox().await
    }

    /// [`Messenger::flush_outbox`] on an established link.
    pub(super) async fn resend_outbox(&mut self) -> Result<()> {
        let mut first_error = None;
        self.outbox_retry_at = None;
        let outbox = self.store.get()?.pending_outgoing()?;
        for pending in outbox {
            let id = pending.message_id;
            let sent = self
                .deliver_queued(&id, &pending.recipients, &pending.body)
                .await;
            let reported = !is_automatic_receipt(&pending.body);
            match sent {
                Ok(()) if reported => self.transient.push_back(Event::Sent { message_id: id }),
                Ok(()) => {}
                Err(e) => {
                    if reported && let Some(code) = e.code().filter(|_| is_final(&e)) {
                        self.transient.push_back(Event::SendFailed {
                            message_id: id,
                            code,
                        });
                    }
                    tracing::warn!(error = %e, "resending a pending message failed");
                    if !is_final(&e) {
                        self.retry_outbox_later(&e);
                    }
                    let stop = is_connection_failure(&e);
                    first_error.get_or_insert(e);
                    if stop {
                        break;
                    }
                }
            }
        }
        if first_error
            .as_ref()
            .is_none_or(|e| !is_connection_failure(e))
            && let Err(e) = self.resend_group_outbox().await
        {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Schedules a resend of the outbox after
    /// [`MessengerOptions::outbox_retry`](super::MessengerOptions::outbox_retry),
    /// for messages the relay could not take (a rate limit, a full queue):
    /// `next_event` wakes for it. A lost connection needs no schedule: the
    /// outbox is resent whenever the messenger connects.
    /// A rate limit's `retry_after_ms` is waited out if longer.
    pub(super) fn retry_outbox_later(&mut self, error: &ClientError) {
        let retry_after = match error {
            ClientError::Refused { retry_after_ms, .. } => Duration::from_millis(*retry_after_ms),
            ClientError::Pending { reason, .. } => match **reason {
                ClientError::Refused { retry_after_ms, .. } => {
                    Duration::from_millis(retry_after_ms)
                }
                _ => Duration::ZERO,
            },
            _ => Duration::ZERO,
        };
        let at = Instant::now() + self.options.outbox_retry.max(retry_after);
        self.outbox_retry_at = Some(self.outbox_retry_at.map_or(at, |t| t.min(at)));
    }

    /// Queues `content` in the outbox and sends it; see [`Messenger::send`].
    async fn send_content(&mut self, users: &[&str], content: &Content) -> Result<[u8; 16]> {
        let plaintext = content::encode(content)?;
        self.send_plaintext(users, &plaintext).await
    }

    /// [`Messenger::send_content`] once the content is encoded.
    pub(super) async fn send_plaintext(
        &mut self,
        users: &[&str],
        plaintext: &[u8],
    ) -> Result<[u8; 16]> {
        self.send_plaintext_in_thread(users, plaintext, None).await
    }

    /// [`Messenger::send_plaintext`], keeping the message as one of
    /// `role_id`'s threads (spec/15) in the transaction that queues it.
    pub(super) async fn send_plaintext_in_thread(
        &mut self,
        users: &[&str],
        plaintext: &[u8],
        role_id: Option<&str>,
    ) -> Result<[u8; 16]> {
        let message_id = random_id();
        let users = distinct(users);
        let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
        let entry = role_id.map(|role_id| RoleThreadEntry {
            role_id: role_id.to_owned(),
            from_user: self.user.clone(),
            message_id,
            at_ms: now_ms(),
            content: Zeroizing::new(plaintext.to_vec()),
        });
        self.store.get_mut()?.atomically(|s| {
            s.queue_outgoing(&message_id, &user_refs, plaintext)?;
            if let Some(entry) = &entry {
                s.record_role_entry(entry)?;
            }
            Ok::<_, StoreError>(())
        })?;
        match self.deliver_queued(&message_id, &users, plaintext).await {
            Ok(()) => Ok(message_id),
            Err(reason) if is_transient(&reason) => {
                self.retry_outbox_later(&reason);
                Err(ClientError::Pending {
                    message_id,
                    reason: Box::new(reason),
                })
            }
            Err(e) => {
                if !is_final(&e) {
                    self.retry_outbox_later(&e);
                }
                Err(e)
            }
        }
    }

    /// Hands a message of the outbox to the relay: marked sent when the
    /// relay took it, dropped from the outbox when refused for good (see
    /// `is_final`), left pending otherwise. Connects first if an attempt
    /// is due; a connection that breaks under the send is made again once,
    /// at once, and the send repeated with its id.
    pub(super) async fn deliver_queued(
        &mut self,
        message_id: &[u8; 16],
        users: &[String],
        plaintext: &[u8],
    ) -> Result<()> {
        let mut fresh_connection = false;
        let delivered = loop {
            let was_up = self.link.is_up();
            if let Err(e) = self.ensure_link().await {
                break Err(e);
            }
            fresh_connection |= !was_up;
            match self.deliver(message_id, users, plaintext).await {
                Err(e) if !fresh_connection && !self.link.is_up() => {
                    tracing::debug!(error = %e, "the connection broke under a send");
                    fresh_connection = true;
                }
                other => break other,
            }
        };
        match delivered {
            Ok(()) => {
                self.store.get_mut()?.mark_sent(message_id)?;
                Ok(())
            }
            Err(e) => {
                if is_final(&e) {
                    self.store.get_mut()?.delete_outgoing(message_id)?;
                }
                Err(e)
            }
        }
    }

    /// Sends `plaintext` with `message_id` to `users` and this user's other
    /// devices: sessions opened as needed, stale device lists refreshed
    /// and the send rebuilt with the same id (RLY-25).
    async fn deliver(
        &mut self,
        message_id: &[u8; 16],
        users: &[String],
        plaintext: &[u8],
    ) -> Result<()> {
        let mut lists = self.recipients(users).await?;
        let mut attempt = 0;
        loop {
            for (user, devices) in &lists {
                self.open_sessions(user, devices).await?;
            }
            let envelopes = self.encrypt_for(&lists, plaintext)?;
            let sent = self
                .request(Req::Send(wire::Send {
                    message_id: message_id.to_vec(),
                    user_ids: users.iter().filter(|u| **u != self.user).cloned().collect(),
                    envelopes,
                    ttl_ms: self.options.ttl_ms,
                    ..Default::default()
                }))
                .await;
            match sent {
                Ok(Resp::Sent(_)) => return Ok(()),
                Ok(_) => return Err(ClientError::UnexpectedResponse),
                Err(ClientError::Refused {
                    code: wire::ErrorCode::StaleDevices,
                    current_devices,
                    ..
                }) if attempt < STALE_RETRIES => {
                    attempt += 1;
                    lists = self.device_lists(&current_devices)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens sessions with those of `user`'s listed devices that have none.
    /// Each bundle is verified (02, 03) and must carry exactly the identity
    /// the relay listed for the device (RLY-20). A recorded identity and
    /// its event are committed with the session.
    pub(super) async fn open_sessions(
        &mut self,
        user: &str,
        devices: &[DeviceIdentity],
    ) -> Result<()> {
        let mut missing = Vec::new();
        for device in devices {
            if self.store.get()?.session(device.signing_key())?.is_none() {
                missing.push(device.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let had_others = !self.store.get()?.known_identities(user)?.is_empty();
        let Resp::Bundles(bundles) = self
            .request(Req::ClaimBundles(wire::ClaimBundles {
                user_id: user.to_owned(),
                device_keys: missing.iter().map(|d| d.signing_key().to_vec()).collect(),
            }))
            .await?
        else {
            return Err(ClientError::UnexpectedResponse);
        };
        for b in bundles.bundles {
            let identity = DeviceIdentity::from_bytes(&b.identity)?;
            let position = missing
                .iter()
                .position(|m| m.ct_eq(&identity))
                .ok_or(ClientError::BundleMismatch)?;
            missing.swap_remove(position);
            let signed = SignedPreKeys::decode(&b.signed_prekeys, &identity)?;
            let one_time = b
                .one_time_prekey
                .map(|k| ward_core::OneTimePreKey::decode(&k.key))
                .transpose()?;
            let key = *identity.signing_key();
            let identity_bytes = identity.to_bytes();
            let bundle = PreKeyBundle::new(identity, signed, one_time)?;
            let session =
                Session::initiate(&mut ward_core::os_rng(), self.identity_pair()?, &bundle)?;
            self.store.get_mut()?.atomically(|s| {
                let status = s.record_identity(user, &key, &identity_bytes)?;
                if let Some(event) = identity_event(user, key, &status, had_others) {
                    s.push_event(&event)?;
                }
                s.save_session(&session)?;
                Ok::<_, StoreError>(())
            })?;
        }
        Ok(())
    }

    /// The devices a send to `users` must reach, by user: every active
    /// device of theirs and this user's other devices.
    async fn recipients(&mut self, users: &[String]) -> Result<DeviceLists> {
        let mut user_ids = users.to_vec();
        if !user_ids.contains(&self.user) {
            user_ids.push(self.user.clone());
        }
        let Resp::Devices(list) = self
            .request(Req::GetDevices(wire::GetDevices { user_ids }))
            .await?
        else {
            return Err(ClientError::UnexpectedResponse);
        };
        self.device_lists(&list.users)
    }

    pub(super) fn device_lists(&self, users: &[wire::UserDevices]) -> Result<DeviceLists> {
        let own = self.public.signing_key();
        users
            .iter()
            .map(|u| {
                let mut devices = Vec::with_capacity(u.devices.len());
                for d in &u.devices {
                    let identity = DeviceIdentity::from_bytes(&d.identity)?;
                    if identity.signing_key() != own {
                        devices.push(identity);
                    }
                }
                Ok((u.user_id.clone(), devices))
            })
            .collect()
    }

    /// Encrypts `plaintext` for every listed device on its current session,
    /// saving each session before anything is sent (SES-5), all in one
    /// transaction.
    pub(super) fn encrypt_for(
        &mut self,
        lists: &DeviceLists,
        plaintext: &[u8],
    ) -> Result<Vec<wire::Envelope>> {
        self.identity_pair()?;
        self.store.get_mut()?.atomically(|store| {
            let mut rng = ward_core::os_rng();
            let mut envelopes = Vec::new();
            for (_, devices) in lists {
                for device in devices {
                    let mut session = store
                        .session(device.signing_key())?
                        .ok_or(ClientError::NoBundle)?;
                    if !session.remote_identity().ct_eq(device) {
                        // The relay lists another identity under a key we
                        // hold a session with (RLY-20, SES-13).
                        return Err(ClientError::BundleMismatch);
                    }
                    let ciphertext = session.encrypt(&mut rng, plaintext)?;
                    store.save_session(&session)?;
                    envelopes.push(wire::Envelope {
                        device_key: device.signing_key().to_vec(),
                        ciphertext,
                    });
                }
            }
            Ok(envelopes)
        })
    }
}
