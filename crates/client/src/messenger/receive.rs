//! Receiving: pushes from the relay become stored messages and events.
//!
//! Every event that reports a change of the store (a message, a receipt,
//! an identity) is queued in the store in the same transaction as the
//! change (spec/11, `events`), and leaves the queue only when the app asks
//! for the next event, locks or closes the messenger (RLY-28, CLI-1 of
//! spec/11). So a wait that is cancelled, a relay that stalls before an
//! acknowledgment, a crash and a reopen neither lose an event nor repeat
//! one the app has had.

use std::time::Instant;

use ward_core::{MessageKind, PreKeyMessage, Session};
use ward_proto::relay_v1::{self as wire, request::Body as Req, response::Body as Resp};
use zeroize::Zeroizing;

use super::handoff::HANDOFF_CHECK_INTERVAL;
use super::link::{Link, is_connection_failure};
use super::{
    DueReceipt, Event, IncomingMessage, MAINTENANCE_INTERVAL, Messenger, id16, key32, now_ms,
    random_id,
};
use crate::ClientError;
use crate::content::{self, Content, GroupControlBody, Receipt, ReceiptKind};
use crate::store::{IdentityStatus, MessageRef, PendingEvent, StoreError};

type Result<T, E = ClientError> = core::result::Result<T, E>;

/// Ids per `Ack` request (spec/08, "Limits").
const MAX_ACK_IDS: usize = 1000;

/// The event the last [`Messenger::next_event`] returned: confirmed (taken
/// off the store's queue) when the app asks for the next one, locks or
/// closes; given back by [`Messenger::redeliver_last_event`].
pub(super) enum HandedOut {
    Stored(u64),
    Transient(Box<Event>),
}

/// The identity event a recorded identity calls for (STO-23, SES-13): a
/// changed identity, or a new device of a user of whom other devices were
/// recorded before (`had_others`; at first contact every device is new,
/// and none is reported).
pub(super) fn identity_event(
    user: &str,
    device_key: [u8; 32],
    status: &IdentityStatus,
    had_others: bool,
) -> Option<PendingEvent> {
    match status {
        IdentityStatus::Unchanged => None,
        IdentityStatus::Changed { .. } => Some(PendingEvent::IdentityChanged {
            user: user.to_owned(),
            device_key,
        }),
        IdentityStatus::New if had_others => Some(PendingEvent::NewDevice {
            user: user.to_owned(),
            device_key,
        }),
        IdentityStatus::New => None,
    }
}

impl Messenger {
    /// Waits for the next event: a message, a receipt, an identity change,
    /// a change of the connection. Deliveries are decrypted, stored with
    /// their session and their event in one transaction, then
    /// acknowledged; a redelivered message is acknowledged again and not
    /// reported twice (RLY-28). Prekey notices are handled on the way.
    ///
    /// **Exactly once.** Each event is returned once: it stays queued in
    /// the store until the app calls `next_event` again (or
    /// [`Messenger::lock`], [`Messenger::close`]), which confirms it.
    /// Cancelling a call, a relay that stalls or restarts, and reopening
    /// the device repeat nothing the app has had and lose nothing. Only if
    /// the process dies after an event was returned and before the next
    /// call is that event returned again after reopening (the app may have
    /// died before showing it); [`IncomingMessage::message_id`] identifies
    /// a message across runs. Messages stay in [`Messenger::store`]
    /// whatever becomes of their events.
    ///
    /// **The connection.** A lost connection is reported
    /// ([`Event::Connection`]) and made again by this call, with backoff:
    /// an app keeps calling `next_event` and need not reopen the device.
    /// Coming back, the messenger acknowledges what it stored meanwhile,
    /// supplies prekeys and resends its outbox ([`Event::Sent`]).
    ///
    /// A delivery that does not decrypt is not acknowledged: its error is
    /// returned and the relay keeps it. With auto-lock on, the wait ends
    /// with [`ClientError::Locked`] when the idle time runs out.
    ///
    /// A wipe instruction from the relay (spec/08, "Remote wipe") erases
    /// the store, then tells the relay (`WipeDone`), and returns
    /// [`Event::Wiped`]; a locked messenger still obeys one that has
    /// arrived when it is called.
    pub async fn next_event(&mut self) -> Result<Event> {
        loop {
            if let Err(e) = self.check_idle() {
                if matches!(e, ClientError::Locked) && self.wipe_arrived() {
                    return self.remote_wipe().await;
                }
                return Err(e);
            }
            self.confirm_handed_out()?;
            if let Some(event) = self.take_event()? {
                return Ok(event);
            }
            if !self.link.is_up() {
                self.wait_and_connect().await?;
                continue;
            }
            if let Err(e) = self.settle().await {
                if is_connection_failure(&e) {
                    continue;
                }
                return Err(e);
            }
            if !self.transient.is_empty() {
                // Settling reported something (a sent message).
                continue;
            }
            let Some(push) = self.wait_for_push().await else {
                continue;
            };
            let handled = match push {
                Ok(Some(wire::Push {
                    body: Some(wire::push::Body::Delivery(d)),
                })) => self.handle_delivery(&d).await,
                Ok(Some(wire::Push {
                    body: Some(wire::push::Body::PrekeysLow(_)),
                })) => self.maintain_prekeys(false, true).await,
                Ok(Some(wire::Push {
                    body: Some(wire::push::Body::Wipe(_)),
                })) => return self.remote_wipe().await,
                Ok(Some(wire::Push { body: None })) => Ok(()),
                // The relay ended the delivery stream, or it broke: the
                // connection is of no more use.
                Ok(None) | Err(_) => {
                    self.drop_link();
                    Ok(())
                }
            };
            match handled {
                Err(e) if !is_connection_failure(&e) => return Err(e),
                _ => {}
            }
        }
    }

    /// The event the last [`Messenger::next_event`] returned did not reach
    /// the app (the foreign call that awaited it was cancelled as it
    /// returned, say): the next call returns it again. Bindings call this;
    /// an app awaiting `next_event` directly has no need to.
    pub fn redeliver_last_event(&mut self) {
        if let Some(HandedOut::Transient(event)) = self.handed_out.take() {
            self.transient.push_front(*event);
        }
    }

    /// Takes the event the app has had off the store's queue.
    pub(super) fn confirm_handed_out(&mut self) -> Result<()> {
        if let Some(HandedOut::Stored(seq)) = self.handed_out {
            self.store.get_mut()?.delete_event(seq)?;
        }
        self.handed_out = None;
        Ok(())
    }

    /// The next event to return, if one is ready: the connection's and the
    /// outbox's first, then the store's queue.
    fn take_event(&mut self) -> Result<Option<Event>> {
        if let Some(event) = self.transient.pop_front() {
            self.handed_out = Some(HandedOut::Transient(Box::new(event.clone())));
            return Ok(Some(event));
        }
        loop {
            let first = match self.store.get()?.first_event() {
                Ok(first) => first,
                Err(e) => {
                    // A queued event that does not open would block every
                    // later one: it is reported once and dropped.
                    self.store.get_mut()?.discard_first_event()?;
                    return Err(e.into());
                }
            };
            let Some((seq, pending)) = first else {
                return Ok(None);
            };
            match self.resolve(pending)? {
                Some(event) => {
                    self.handed_out = Some(HandedOut::Stored(seq));
                    return Ok(Some(event));
                }
                None => {
                    self.store.get_mut()?.delete_event(seq)?;
                }
            }
        }
    }

    /// What a queued event reports; `None` for what the app is not told
    /// (this user's devices confirming deliveries to each other, a message
    /// deleted before it was reported).
    fn resolve(&self, pending: PendingEvent) -> Result<Option<Event>> {
        let received = match pending {
            PendingEvent::IdentityChanged { user, device_key } => {
                return Ok(Some(Event::IdentityChanged { user, device_key }));
            }
            PendingEvent::NewDevice { user, device_key } => {
                return Ok(Some(Event::NewDevice { user, device_key }));
            }
            PendingEvent::Received(MessageRef {
                sender_device,
                message_id,
            }) => self
                .store
                .get()?
                .received_message(&sender_device, &message_id)?,
            PendingEvent::Handoff { handoff, fresh } => {
                return self.resolve_handoff(&handoff, |stored, from_user| Event::RoleHandoff {
                    role_id: stored.role_id,
                    from_user,
                    ends_at: stored.ends_at,
                    messages: stored
                        .entries
                        .into_iter()
                        .filter(|e| fresh.contains(&e.message_id))
                        .collect(),
                });
            }
            PendingEvent::HandoffRefused { handoff, reason } => {
                return self.resolve_handoff(&handoff, |stored, from_user| Event::HandoffRefused {
                    role_id: stored.role_id,
                    from_user,
                    reason,
                });
            }
        };
        let Some(m) = received else {
            return Ok(None);
        };
        let from_own = m.sender_user == self.user;
        Ok(match content::decode(&m.body) {
            Ok(Content::Message(message)) => Some(Event::Message(IncomingMessage {
                sender_user: m.sender_user,
                sender_device: m.sender_device,
                message_id: m.message_id,
                sent_at_ms: message.sent_at_ms,
                received_at_ms: m.received_at_ms,
                message,
                from_own_device: from_own,
            })),
            // This user's own devices confirm deliveries to each other
            // only as a side effect of the device set rule: not reported.
            Ok(Content::Receipt(r)) if from_own && r.kind == ReceiptKind::Delivered => None,
            Ok(Content::Group(control)) => match control.body {
                GroupControlBody::Change(_) | GroupControlBody::Welcome(_) => {
                    Some(Event::GroupChanged {
                        group_id: control.group_id,
                        by_user: m.sender_user,
                    })
                }
                _ => None,
            },
            // Reported through their own events, never as received.
            Ok(Content::Handoff(_)) => None,
            Ok(Content::Receipt(r)) => Some(Event::Receipt {
                from_user: m.sender_user,
                from_device: m.sender_device,
                kind: r.kind,
                message_ids: r.message_ids,
            }),
            Err(error) => Some(Event::Unreadable {
                from_user: m.sender_user,
                from_device: m.sender_device,
                message_id: m.message_id,
                error,
            }),
        })
    }

    /// A queued handoff event: the stored handoff, as `report` makes it
    /// an event; `None` if it is gone.
    fn resolve_handoff(
        &self,
        handoff: &MessageRef,
        report: impl FnOnce(content::Handoff, String) -> Event,
    ) -> Result<Option<Event>> {
        let stored = self
            .store
            .get()?
            .received_message(&handoff.sender_device, &handoff.message_id)?;
        Ok(stored.and_then(|m| match content::decode(&m.body) {
            Ok(Content::Handoff(h)) => Some(report(h, m.sender_user)),
            _ => None,
        }))
    }

    /// Waits for the next connection attempt (or the auto-lock deadline)
    /// and makes it. A connection failure is not an error here: the next
    /// attempt is scheduled, and the caller loops.
    async fn wait_and_connect(&mut self) -> Result<()> {
        let Link::Down { retry_at, .. } = self.link else {
            return Ok(());
        };
        let lock_at = self.options.auto_lock_after.map(|l| self.last_activity + l);
        let sleep_until =
            |at: Instant| tokio::time::sleep_until(tokio::time::Instant::from_std(at));
        match lock_at {
            Some(lock_at) if lock_at <= retry_at => {
                sleep_until(lock_at).await;
                return Ok(());
            }
            _ => sleep_until(retry_at).await,
        }
        let attempt = self.connect();
        let outcome = match lock_at {
            Some(lock_at) => tokio::select! {
                outcome = attempt => outcome,
                () = sleep_until(lock_at) => Ok(()),
            },
            None => attempt.await,
        };
        match outcome {
            Err(e) if !is_connection_failure(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Pays what [`super::link::Owed`] says the relay is owed, then the due
    /// delivery receipts and the periodic prekey check.
    pub(super) async fn settle(&mut self) -> Result<()> {
        if self.owed.acks {
            self.ack_unacknowledged().await?;
            self.owed.acks = false;
        }
        if let Some((signed_missing, low)) = self.owed.prekeys {
            self.maintain_prekeys(signed_missing, low).await?;
            self.owed.prekeys = None;
        }
        if self.outbox_retry_at.is_some_and(|at| at <= Instant::now()) {
            self.owed.outbox = true;
        }
        if self.owed.outbox {
            self.owed.outbox = false;
            if let Err(e) = self.resend_outbox().await {
                tracing::warn!(error = %e, "resending the outbox failed");
                if is_connection_failure(&e) {
                    self.owed.outbox = true;
                    return Err(e);
                }
            }
        }
        self.send_due_receipts().await;
        if self.last_maintenance.elapsed() >= MAINTENANCE_INTERVAL {
            self.maintain_prekeys(false, false).await?;
        }
        let handoffs_due =
            self.owed.handoffs || self.last_handoff_check.elapsed() >= HANDOFF_CHECK_INTERVAL;
        if handoffs_due
            && let Err(e) = self.hand_off_due_roles().await
            && is_connection_failure(&e)
        {
            self.owed.handoffs = true;
            return Err(e);
        }
        Ok(())
    }

    /// The next push, or `None` when something else falls due first: the
    /// auto-lock, a retry of the outbox, the periodic prekey check.
    async fn wait_for_push(&mut self) -> Option<super::link::Push> {
        let wake_at = [
            self.options.auto_lock_after.map(|l| self.last_activity + l),
            self.outbox_retry_at,
            Some(self.last_maintenance + MAINTENANCE_INTERVAL),
            Some(self.last_handoff_check + HANDOFF_CHECK_INTERVAL),
        ]
        .into_iter()
        .flatten()
        .min();
        let Link::Up(up) = &mut self.link else {
            return None;
        };
        if let Some(held) = up.held.pop_front() {
            return Some(held);
        }
        let push = match wake_at {
            Some(at) => {
                let deadline = tokio::time::Instant::from_std(at);
                tokio::select! {
                    push = up.pushes.recv() => push,
                    () = tokio::time::sleep_until(deadline) => return None,
                }
            }
            None => up.pushes.recv().await,
        };
        // The reader ends with the stream.
        Some(push.unwrap_or(Ok(None)))
    }

    /// Drops a connection that is of no more use (its delivery stream
    /// ended or broke); the relay keeps what was not acknowledged.
    fn drop_link(&mut self) {
        if let Link::Up(up) = &self.link {
            up.connection
                .quic()
                .close(0u32.into(), b"delivery stream ended");
        }
        self.link_lost();
    }

    /// Takes the pushes waiting on the delivery stream, without waiting,
    /// and keeps them for later; true if a wipe instruction is among them.
    pub(super) fn wipe_arrived(&mut self) -> bool {
        let Link::Up(up) = &mut self.link else {
            return false;
        };
        while let Ok(push) = up.pushes.try_recv() {
            up.held.push_back(push);
        }
        up.held.iter().any(|push| {
            matches!(
                push,
                Ok(Some(wire::Push {
                    body: Some(wire::push::Body::Wipe(_))
                }))
            )
        })
    }

    /// Obeys a wipe instruction: drops the secrets and undelivered events,
    /// erases the store through [`crate::Store::wipe`], and only then tells
    /// the relay (`WipeDone`), which revokes the device. If erasing fails
    /// the error is returned, the relay is not told (the wipe stays pending
    /// there), and the messenger is unusable all the same.
    pub(super) async fn remote_wipe(&mut self) -> Result<Event> {
        self.identity = None;
        self.transient.clear();
        self.handed_out = None;
        if let Link::Up(up) = &mut self.link {
            up.held.clear();
        }
        let store = self.store.0.take().ok_or(ClientError::NotEnrolled)?;
        store.wipe()?;
        // The local erasure is what counts: a lost answer changes nothing
        // here, and the relay keeps the instruction until it hears of it.
        let _ = self.request(Req::WipeDone(wire::WipeDone {})).await;
        Ok(Event::Wiped)
    }

    async fn handle_delivery(&mut self, d: &wire::Delivery) -> Result<()> {
        let sender = key32(&d.sender_device)?;
        let message_id = id16(&d.message_id)?;
        let seen = {
            let store = self.store.get()?;
            store.is_received(&sender, &message_id)?
                || store.is_group_pending(&sender, &message_id)?
        };
        if seen {
            // Stored before: the relay did not hear our Ack (RLY-28).
            return self.ack(&[(sender, message_id)]).await;
        }
        let (receipt, group_sends) =
            if d.ciphertext.first() == Some(&ward_core::format::SENDER_KEY_MESSAGE) {
                let effects =
                    self.group_message_effects(&d.sender_user, sender, message_id, &d.ciphertext)?;
                self.store.get_mut()?.atomically(|s| effects.commit(s))?;
                (effects.receipts.clone(), effects.sends_anything())
            } else {
                self.decrypt_and_store(d, sender, message_id)?
            };
        if group_sends {
            self.owed.outbox = true;
        }
        // Stored with its event: what follows may be cut short, and the
        // next call (or the next connection) acknowledges it.
        let owed_before = self.owed.acks;
        self.owed.acks = true;
        self.receipts_due.extend(receipt);
        #[cfg(feature = "test-hooks")]
        if core::mem::take(&mut self.stall_before_ack) {
            core::future::pending::<()>().await;
        }
        self.ack(&[(sender, message_id)]).await?;
        self.owed.acks = owed_before;
        self.send_due_receipts().await;
        Ok(())
    }

    /// Acknowledges every stored message the relay was not told of.
    pub(super) async fn ack_unacknowledged(&mut self) -> Result<()> {
        let ids: Vec<_> = self
            .store
            .get()?
            .unacknowledged()?
            .into_iter()
            .map(|m| (m.sender_device, m.message_id))
            .collect();
        self.ack(&ids).await
    }

    async fn ack(&mut self, ids: &[([u8; 32], [u8; 16])]) -> Result<()> {
        for chunk in ids.chunks(MAX_ACK_IDS) {
            let message_ids = chunk.iter().map(|(_, id)| id.to_vec()).collect();
            match self.request(Req::Ack(wire::Ack { message_ids })).await? {
                Resp::Acked(_) => {}
                _ => return Err(ClientError::UnexpectedResponse),
            }
            for (device, id) in chunk {
                self.store.get_mut()?.mark_acknowledged(device, id)?;
            }
        }
        Ok(())
    }

    /// Hands the due delivery receipts to the relay, oldest first. One that
    /// fails is left to the outbox (resent on the next connection and by
    /// [`Messenger::flush_outbox`]); one whose sending is cut short stays
    /// due, and is resent with its id (RLY-25).
    pub(super) async fn send_due_receipts(&mut self) {
        while let Some(due) = self.receipts_due.front() {
            let (id, to_user, plaintext) =
                (due.message_id, due.to_user.clone(), due.plaintext.clone());
            let sent = self.deliver_queued(&id, &[to_user], &plaintext).await;
            self.receipts_due.pop_front();
            if let Err(e) = sent {
                tracing::warn!(error = %e, "a delivery receipt was not sent");
            }
        }
    }

    /// Decrypts a delivery and commits, in one transaction (SES-5, SES-7,
    /// STO-23): the session (and for a new session the one-time prekey's
    /// removal, the sender's identity and its event), the message, its
    /// event, and its automatic delivery receipt in the outbox, which is
    /// returned to be sent. A group control commits its effects instead of
    /// the message (and says whether it queued group traffic).
    fn decrypt_and_store(
        &mut self,
        d: &wire::Delivery,
        sender: [u8; 32],
        message_id: [u8; 16],
    ) -> Result<(Vec<DueReceipt>, bool)> {
        let identity = self.identity.as_ref().ok_or(ClientError::Locked)?;
        let user = d.sender_user.as_str();
        let (session, plaintext, new_identity) = match MessageKind::of(&d.ciphertext)? {
            MessageKind::PreKey => {
                let message = PreKeyMessage::decode(&d.ciphertext)?;
                if message.identity().signing_key() != &sender {
                    return Err(ClientError::Protocol(ward_core::Error::WrongSession));
                }
                let store = self.store.get()?;
                match store.session_by_base_key(&sender, message.base_key())? {
                    Some(mut session) => {
                        let plaintext = Zeroizing::new(session.decrypt(&d.ciphertext)?);
                        (session, plaintext, None)
                    }
                    None => {
                        let mismatch = || ClientError::Protocol(ward_core::Error::PreKeyMismatch);
                        let signed = store
                            .signed_prekey(message.signed_prekey_id(), identity)?
                            .ok_or_else(mismatch)?;
                        let one_time = match message.one_time_prekey_id() {
                            Some(id) => Some(store.one_time_prekey(id)?.ok_or_else(mismatch)?),
                            None => None,
                        };
                        let (session, plaintext) =
                            Session::accept(identity, &signed, one_time.as_ref(), &message)?;
                        let had_others = store
                            .known_identities(user)?
                            .iter()
                            .any(|k| k.device_key != sender);
                        let new_identity = (
                            message.identity().to_bytes(),
                            message.one_time_prekey_id(),
                            had_others,
                        );
                        (session, Zeroizing::new(plaintext), Some(new_identity))
                    }
                }
            }
            MessageKind::Ratchet => {
                // Every session with the device keeps decrypting (SES-9);
                // the most recent first.
                let mut last_error = ward_core::Error::WrongSession;
                let mut opened = None;
                for mut session in self.store.get()?.sessions(&sender)? {
                    match session.decrypt(&d.ciphertext) {
                        Ok(plaintext) => {
                            opened = Some((session, Zeroizing::new(plaintext)));
                            break;
                        }
                        Err(e) => last_error = e,
                    }
                }
                let (session, plaintext) = opened.ok_or(ClientError::Protocol(last_error))?;
                (session, plaintext, None)
            }
        };
        let decoded = content::decode(&plaintext);
        let role = match &decoded {
            Ok(Content::Message(m)) => match &m.role {
                Some(thread) => {
                    Some(self.role_entry(user, message_id, &thread.role_id, &plaintext)?)
                }
                None => None,
            },
            Ok(Content::Handoff(h)) => Some(self.handoff_effect(user, h)?),
            _ => None,
        };
        let group = match decoded {
            Ok(Content::Group(control)) => {
                Some(self.group_control_effects(user, sender, message_id, &plaintext, control)?)
            }
            _ => None,
        };
        let receipt = match group {
            Some(_) => None,
            None => self.delivery_receipt_for(user, message_id, &plaintext)?,
        };
        let received_at_ms = now_ms();
        self.store.get_mut()?.atomically(|s| {
            s.save_session(&session)?;
            if let Some((identity_bytes, one_time_id, had_others)) = &new_identity {
                if let Some(id) = one_time_id {
                    s.take_one_time_prekey(*id)?;
                }
                let status = s.record_identity(user, &sender, identity_bytes)?;
                if let Some(event) = identity_event(user, sender, &status, *had_others) {
                    s.push_event(&event)?;
                }
            }
            if let Some(effects) = &group {
                return effects.commit(s);
            }
            s.store_incoming(user, &sender, &message_id, received_at_ms, &plaintext)?;
            let delivery = MessageRef {
                sender_device: sender,
                message_id,
            };
            let event = match &role {
                Some(effect) => effect.commit(s, delivery)?,
                None => Some(PendingEvent::Received(delivery)),
            };
            if let Some(event) = event {
                s.push_event(&event)?;
            }
            if let Some(r) = &receipt {
                s.queue_outgoing(&r.message_id, &[r.to_user.as_str()], &r.plaintext)?;
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(match group {
            Some(effects) => (effects.receipts.clone(), effects.sends_anything()),
            None => (receipt.into_iter().collect(), false),
        })
    }

    /// The automatic `DELIVERED` receipt a message from another user calls
    /// for, unless turned off
    /// ([`MessengerOptions::send_delivery_receipts`](super::MessengerOptions::send_delivery_receipts)).
    pub(super) fn delivery_receipt_for(
        &self,
        sender_user: &str,
        message_id: [u8; 16],
        plaintext: &[u8],
    ) -> Result<Option<DueReceipt>> {
        if sender_user == self.user
            || !self.options.send_delivery_receipts
            || !matches!(content::decode(plaintext), Ok(Content::Message(_)))
        {
            return Ok(None);
        }
        let plaintext = content::encode(&Content::Receipt(Receipt {
            kind: ReceiptKind::Delivered,
            message_ids: vec![message_id],
        }))?;
        Ok(Some(DueReceipt {
            message_id: random_id(),
            to_user: sender_user.to_owned(),
            plaintext,
        }))
    }
}
