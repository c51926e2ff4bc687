//! Receiving group traffic (spec/14, "Carrying groups"): group messages
//! from the relay, and the controls that arrive pairwise. Nothing is
//! dropped for want of something: a message whose chain or group this
//! device lacks, and a change whose parent it has not applied, are kept
//! (`group_pending`) and opened when what they wait for arrives; for a
//! missing chain the sender is asked (SK-13), and answers with its chain
//! and the message again.
//!
//! Every effect of one delivery (group states, messages and their events,
//! kept and released items, answers queued) is worked out first and then
//! committed in the transaction that stores the delivery.

use ward_core::{Applied, GroupChange, GroupState, SenderKeyDistribution, SenderKeyMessage};
use zeroize::Zeroizing;

use super::{DueReceipt, Messenger, Result, now_ms, random_id};
use crate::content::{self, Content, GroupControl, GroupControlBody};
use crate::store::{
    GroupSend, MessageRef, PendingEvent, PendingGroupItem, PendingKind, Store, StoreError,
};

/// A message to store, with its event.
struct Stored {
    user: String,
    device: [u8; 32],
    message_id: [u8; 16],
    body: Zeroizing<Vec<u8>>,
    event: bool,
}

/// What one delivery does to the store.
#[derive(Default)]
pub(super) struct GroupEffects {
    groups: Vec<([u8; 16], Zeroizing<Vec<u8>>)>,
    stored: Vec<Stored>,
    kept: Vec<PendingGroupItem>,
    released: Vec<([u8; 32], [u8; 16])>,
    sends: Vec<GroupSend>,
    pub(super) receipts: Vec<DueReceipt>,
}

impl GroupEffects {
    /// Commits every effect, inside the caller's transaction.
    pub(super) fn commit(&self, s: &mut Store) -> Result<(), StoreError> {
        for (id, state) in &self.groups {
            s.save_group(id, state)?;
        }
        for (device, id) in &self.released {
            s.drop_group_pending(device, id)?;
        }
        for item in &self.kept {
            s.keep_group_pending(item)?;
        }
        for m in &self.stored {
            s.store_incoming(&m.user, &m.device, &m.message_id, now_ms(), &m.body)?;
            if m.event {
                s.push_event(&PendingEvent::Received(MessageRef {
                    sender_device: m.device,
                    message_id: m.message_id,
                }))?;
            }
        }
        for send in &self.sends {
            s.queue_group_send(send)?;
        }
        for r in &self.receipts {
            s.queue_outgoing(&r.message_id, &[r.to_user.as_str()], &r.plaintext)?;
        }
        Ok(())
    }

    /// Whether it queued group traffic to send.
    pub(super) fn sends_anything(&self) -> bool {
        !self.sends.is_empty()
    }

    fn save(&mut self, state: &GroupState) {
        self.groups.retain(|(id, _)| id != state.group_id());
        self.groups.push((*state.group_id(), state.to_bytes()));
    }
}

/// What came of trying to open or apply something.
enum Outcome {
    Done,
    Waits,
}

impl Messenger {
    /// A group message (`0x08`) from the relay.
    pub(super) fn group_message_effects(
        &self,
        user: &str,
        sender: [u8; 32],
        message_id: [u8; 16],
        bytes: &[u8],
    ) -> Result<GroupEffects> {
        let message = SenderKeyMessage::decode(bytes)?;
        let (group_id, chain_id) = (*message.group_id(), *message.chain_id());
        let mut effects = GroupEffects::default();
        let item = PendingGroupItem {
            kind: PendingKind::Message,
            group_id,
            sender_user: user.to_owned(),
            sender_device: sender,
            message_id,
            received_at_ms: now_ms(),
            bytes: Zeroizing::new(bytes.to_vec()),
        };
        let Some(mut state) = self.load_group(&group_id)? else {
            // The welcome is on its way (or was lost): keep it.
            effects.kept.push(item);
            return Ok(effects);
        };
        match self.open_group_message(&mut state, &item, &mut effects)? {
            Outcome::Done => effects.save(&state),
            Outcome::Waits => {
                effects.kept.push(item);
                effects.sends.push(self.pairwise_send(
                    group_id,
                    user,
                    sender,
                    GroupControlBody::ChainRequest {
                        chain_id,
                        message_ids: vec![message_id],
                    },
                )?);
            }
        }
        Ok(effects)
    }

    /// A group control that arrived pairwise from `sender`. The delivery
    /// itself is stored (so that a redelivery is recognised) unless it is
    /// kept waiting.
    pub(super) fn group_control_effects(
        &self,
        user: &str,
        sender: [u8; 32],
        message_id: [u8; 16],
        plaintext: &Zeroizing<Vec<u8>>,
        control: GroupControl,
    ) -> Result<GroupEffects> {
        let mut effects = GroupEffects::default();
        let group_id = control.group_id;
        let state = self.load_group(&group_id)?;
        let store_this = |effects: &mut GroupEffects, event: bool| {
            effects.stored.push(Stored {
                user: user.to_owned(),
                device: sender,
                message_id,
                body: plaintext.clone(),
                event,
            });
        };
        let keep = |kind, bytes: Vec<u8>| PendingGroupItem {
            kind,
            group_id,
            sender_user: user.to_owned(),
            sender_device: sender,
            message_id,
            received_at_ms: now_ms(),
            bytes: Zeroizing::new(bytes),
        };
        match control.body {
            GroupControlBody::Change(bytes) => {
                let item = keep(PendingKind::Change, bytes);
                match state {
                    Some(mut state) => match self.apply_change(&mut state, &item, &mut effects)? {
                        Outcome::Done => {
                            self.release_pending(&mut state, &mut effects)?;
                            effects.save(&state);
                        }
                        Outcome::Waits => effects.kept.push(item),
                    },
                    None => match GroupChange::decode(&item.bytes) {
                        Ok(creation) if creation.epoch() == 0 => {
                            match GroupState::join(self.identity_pair()?, &self.user, &creation) {
                                Ok(mut state) => {
                                    store_this(&mut effects, true);
                                    self.release_pending(&mut state, &mut effects)?;
                                    effects.save(&state);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "a group creation was refused");
                                    store_this(&mut effects, false);
                                }
                            }
                        }
                        // A change of a group not joined yet: its welcome may follow.
                        Ok(_) => effects.kept.push(item),
                        Err(e) => {
                            tracing::warn!(error = %e, "a group change did not decode");
                            store_this(&mut effects, false);
                        }
                    },
                }
            }
            GroupControlBody::Welcome(bytes) => match state {
                Some(state)
                    if state.is_member() && !self.welcomes_again(&state, &sender, &bytes) =>
                {
                    store_this(&mut effects, false)
                }
                _ => match GroupState::from_welcome(
                    self.identity_pair()?,
                    &self.user,
                    &sender,
                    &bytes,
                ) {
                    Ok(mut state) => {
                        store_this(&mut effects, true);
                        self.release_pending(&mut state, &mut effects)?;
                        effects.save(&state);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a group welcome was refused");
                        store_this(&mut effects, false);
                    }
                },
            },
            GroupControlBody::Key { .. } => {
                let item = keep(PendingKind::Key, plaintext.to_vec());
                match state {
                    Some(mut state) => match self.take_key(&mut state, &item, &mut effects)? {
                        Outcome::Done => {
                            self.release_pending(&mut state, &mut effects)?;
                            effects.save(&state);
                        }
                        Outcome::Waits => effects.kept.push(item),
                    },
                    None => effects.kept.push(item),
                }
            }
            GroupControlBody::ChainRequest { message_ids, .. } => {
                store_this(&mut effects, false);
                if let Some(mut state) = state {
                    self.answer_chain_request(
                        &mut state,
                        user,
                        sender,
                        &message_ids,
                        &mut effects,
                    )?;
                }
            }
            GroupControlBody::Resent {
                message_id: original,
                message,
            } => {
                store_this(&mut effects, false);
                let known = self.store.get()?.is_received(&sender, &original)?;
                if state.as_ref().is_some_and(GroupState::is_member) && !known {
                    let body = content::encode(&Content::Message(message))?;
                    effects.released.push((sender, original));
                    self.stored_message(user, sender, original, body, &mut effects)?;
                }
            }
        }
        Ok(effects)
    }

    /// A group message opened: stored with its event, and a delivery
    /// receipt owed to its sender.
    fn stored_message(
        &self,
        user: &str,
        device: [u8; 32],
        message_id: [u8; 16],
        body: Zeroizing<Vec<u8>>,
        effects: &mut GroupEffects,
    ) -> Result<()> {
        if let Some(receipt) = self.delivery_receipt_for(user, message_id, &body)? {
            effects.receipts.push(receipt);
        }
        effects.stored.push(Stored {
            user: user.to_owned(),
            device,
            message_id,
            body,
            event: true,
        });
        Ok(())
    }

    /// Opens a kept or new group message. One from another device than the
    /// chain's, or whose content is not a message of this group, is dropped
    /// with a warning (the relay or a member misbehaves).
    fn open_group_message(
        &self,
        state: &mut GroupState,
        item: &PendingGroupItem,
        effects: &mut GroupEffects,
    ) -> Result<Outcome> {
        match state.decrypt(&item.bytes) {
            Ok(opened) => {
                let body = Zeroizing::new(opened.plaintext.clone());
                let fits = opened.device == item.sender_device
                    && matches!(content::decode(&body), Ok(Content::Message(m)) if m.group_id == Some(*state.group_id()));
                if fits {
                    self.stored_message(
                        &item.sender_user,
                        item.sender_device,
                        item.message_id,
                        body,
                        effects,
                    )?;
                } else {
                    tracing::warn!(
                        "a group message from another device than its chain's, or not for its group, was dropped"
                    );
                }
                Ok(Outcome::Done)
            }
            Err(ward_core::Error::MissingChain) => Ok(Outcome::Waits),
            Err(e) => {
                // A replay, a forgery, a message too far ahead: not readable, ever.
                tracing::warn!(error = %e, "a group message was dropped");
                Ok(Outcome::Done)
            }
        }
    }

    /// Applies a kept or new change; on success its delivery is stored with
    /// its event, and changes of this device that it displaced are made
    /// again on the new head.
    fn apply_change(
        &self,
        state: &mut GroupState,
        item: &PendingGroupItem,
        effects: &mut GroupEffects,
    ) -> Result<Outcome> {
        let body = |control| {
            content::encode(&Content::Group(GroupControl {
                group_id: item.group_id,
                body: control,
            }))
        };
        let change = match GroupChange::decode(&item.bytes) {
            Ok(change) => change,
            Err(e) => {
                tracing::warn!(error = %e, "a group change did not decode");
                return Ok(Outcome::Done);
            }
        };
        let event = match state.apply(&change) {
            Ok(Applied::Moved { superseded, .. }) => {
                for lost in superseded
                    .iter()
                    .filter(|c| c.author() == self.device_key())
                {
                    self.propose_again(state, lost, effects)?;
                }
                true
            }
            Ok(Applied::AlreadyApplied) => false,
            Err(ward_core::Error::UnknownParent) => return Ok(Outcome::Waits),
            Err(e) => {
                tracing::warn!(error = %e, "a group change was refused");
                false
            }
        };
        effects.stored.push(Stored {
            user: item.sender_user.clone(),
            device: item.sender_device,
            message_id: item.message_id,
            body: body(GroupControlBody::Change(item.bytes.to_vec()))?,
            event,
        });
        Ok(Outcome::Done)
    }

    /// Whether a welcome to a group this device is a member of replaces its
    /// state (spec/14, GRP-14): a device welcomed into a change that lost
    /// to a competing one is welcomed again when the change is made again
    /// on the winner, and only an admin device of the roster it holds, at a
    /// later epoch, can do that.
    fn welcomes_again(&self, state: &GroupState, from: &[u8; 32], bytes: &[u8]) -> bool {
        let from_admin = state
            .members()
            .values()
            .any(|m| m.admin && m.devices.contains(from));
        from_admin
            && self.identity_pair().is_ok_and(|identity| {
                GroupState::from_welcome(identity, &self.user, from, bytes)
                    .is_ok_and(|welcomed| welcomed.epoch() > state.epoch())
            })
    }

    /// A change of ours that lost to a competing one, made again on the new
    /// head if it still applies (spec/14, "Competing changes").
    fn propose_again(
        &self,
        state: &mut GroupState,
        lost: &GroupChange,
        effects: &mut GroupEffects,
    ) -> Result<()> {
        let before = GroupState::from_bytes(&state.to_bytes())?;
        let Ok(change) = state.propose(
            self.identity_pair()?,
            lost.action().clone(),
            now_ms() / 1000,
        ) else {
            return Ok(());
        };
        let applied = state.apply(&change)?;
        effects
            .sends
            .push(self.change_send(&before, state, &change)?);
        if let Applied::Moved { added, .. } = applied
            && !added.is_empty()
        {
            effects.sends.push(self.welcome_send(state, added)?);
        }
        Ok(())
    }

    /// Takes a chain from a `Key` control and opens the message it came with.
    fn take_key(
        &self,
        state: &mut GroupState,
        item: &PendingGroupItem,
        effects: &mut GroupEffects,
    ) -> Result<Outcome> {
        let Ok(Content::Group(GroupControl {
            body:
                GroupControlBody::Key {
                    distribution,
                    message,
                },
            ..
        })) = content::decode(&item.bytes)
        else {
            return Ok(Outcome::Done);
        };
        let taken = SenderKeyDistribution::decode(&distribution)
            .and_then(|d| state.accept_distribution(&item.sender_device, &d));
        if let Err(e) = taken {
            tracing::warn!(error = %e, "a group chain was refused");
        }
        if message.is_empty() {
            effects.stored.push(Stored {
                user: item.sender_user.clone(),
                device: item.sender_device,
                message_id: item.message_id,
                body: item.bytes.clone(),
                event: false,
            });
            return Ok(Outcome::Done);
        }
        let inner = PendingGroupItem {
            kind: PendingKind::Message,
            bytes: Zeroizing::new(message),
            ..item.clone()
        };
        self.open_group_message(state, &inner, effects)
    }

    /// Tries every item kept for the group again, until none moves: a
    /// welcome or a change can let changes apply, a chain can open messages.
    fn release_pending(&self, state: &mut GroupState, effects: &mut GroupEffects) -> Result<()> {
        let mut waiting = self.store.get()?.group_pending(state.group_id())?;
        loop {
            let mut moved = false;
            let mut still = Vec::new();
            for item in waiting {
                let outcome = match item.kind {
                    PendingKind::Change => self.apply_change(state, &item, effects)?,
                    PendingKind::Message => self.open_group_message(state, &item, effects)?,
                    PendingKind::Key => self.take_key(state, &item, effects)?,
                };
                match outcome {
                    Outcome::Done => {
                        moved = true;
                        effects.released.push((item.sender_device, item.message_id));
                    }
                    Outcome::Waits => still.push(item),
                }
            }
            waiting = still;
            if !moved || waiting.is_empty() {
                return Ok(());
            }
        }
    }

    /// A member device lacks our chain: it gets the chain as it stands,
    /// and the messages it names again, those it was a recipient of and
    /// that are still kept (SK-13).
    fn answer_chain_request(
        &self,
        state: &mut GroupState,
        user: &str,
        device: [u8; 32],
        message_ids: &[[u8; 16]],
        effects: &mut GroupEffects,
    ) -> Result<()> {
        let distribution = match state.distribution_for(&device) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "a chain request was not answered");
                return Ok(());
            }
        };
        let group_id = *state.group_id();
        effects.save(state);
        effects.sends.push(self.pairwise_send(
            group_id,
            user,
            device,
            GroupControlBody::Key {
                distribution: distribution.encode(),
                message: Vec::new(),
            },
        )?);
        for id in message_ids {
            let Some(sent) = self.store.get()?.group_send(&group_id, id)? else {
                continue;
            };
            let was_recipient = sent.shared.contains(&device) || sent.pairwise.contains(&device);
            let Ok(Content::Message(message)) = content::decode(&sent.resend) else {
                continue;
            };
            if was_recipient {
                effects.sends.push(self.pairwise_send(
                    group_id,
                    user,
                    device,
                    GroupControlBody::Resent {
                        message_id: *id,
                        message,
                    },
                )?);
            }
        }
        Ok(())
    }

    /// Group traffic for one device, over its pairwise session.
    fn pairwise_send(
        &self,
        group_id: [u8; 16],
        user: &str,
        device: [u8; 32],
        body: GroupControlBody,
    ) -> Result<GroupSend> {
        Ok(GroupSend {
            message_id: random_id(),
            group_id,
            users: vec![user.to_owned()],
            pairwise: vec![device],
            pairwise_plaintext: content::encode(&Content::Group(GroupControl { group_id, body }))?,
            shared: Vec::new(),
            shared_ciphertext: Vec::new(),
            resend: Zeroizing::new(Vec::new()),
            sent: false,
        })
    }
}
