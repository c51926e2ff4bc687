//! Care-team groups (spec/14, "Carrying groups"): the app's calls, and the
//! group outbox. A group lives as a [`GroupState`] in the store. Changes,
//! welcomes and chains travel pairwise, addressed to the roster's devices;
//! a group message is one sender-key ciphertext that the relay stores
//! once and queues for each member device (08, `shared_ciphertext`).
//!
//! Whatever this device sends for a group is first committed to the group
//! outbox together with the state it came from (the chain moved, the
//! change applied), then handed to the relay with its id as often as it
//! takes, like the pairwise outbox (RLY-25).

use std::collections::{BTreeMap, BTreeSet};

use ward_core::{DeviceIdentity, GroupAction, GroupChange, GroupState, Member};
use ward_proto::relay_v1::{self as wire, request::Body as Req, response::Body as Resp};
use zeroize::Zeroizing;

use super::send::DeviceLists;
use super::{Messenger, Result, now_ms, random_id};
use crate::ClientError;
use crate::content::{self, Content, GroupControl, GroupControlBody, Message};
use crate::store::{GroupSend, StoreError};

/// How often a group send is rebuilt after the relay reports a stale
/// device list.
const STALE_RETRIES: usize = 3;

/// A group as the app sees it.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's id: chosen at random by its creator.
    pub group_id: [u8; 16],
    /// Its name (the care team's: "4 West").
    pub name: String,
    /// The epoch: one more per applied change.
    pub epoch: u64,
    /// The members, by user id, ascending.
    pub members: Vec<GroupMemberInfo>,
    /// Whether this device is still in the roster (false once removed or
    /// after leaving: the group is kept, read-only).
    pub is_member: bool,
}

impl core::fmt::Debug for GroupInfo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GroupInfo")
            .field("epoch", &self.epoch)
            .field("members", &self.members.len())
            .field("is_member", &self.is_member)
            .finish_non_exhaustive()
    }
}

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMemberInfo {
    /// The user.
    pub user_id: String,
    /// The devices that read for them, ascending.
    pub devices: Vec<[u8; 32]>,
    /// Whether they may add, remove and rename.
    pub admin: bool,
}

impl GroupInfo {
    pub(super) fn of(state: &GroupState) -> Self {
        Self {
            group_id: *state.group_id(),
            name: state.name().to_owned(),
            epoch: state.epoch(),
            members: state
                .members()
                .iter()
                .map(|(user, m)| GroupMemberInfo {
                    user_id: user.clone(),
                    devices: m.devices.iter().copied().collect(),
                    admin: m.admin,
                })
                .collect(),
            is_member: state.is_member(),
        }
    }
}

/// Every device key of `state`'s roster, but `own`.
fn roster_devices(state: &GroupState, own: &[u8; 32]) -> BTreeSet<[u8; 32]> {
    state
        .members()
        .values()
        .flat_map(|m| m.devices.iter().copied())
        .filter(|d| d != own)
        .collect()
}

fn control(group_id: [u8; 16], body: GroupControlBody) -> Result<Zeroizing<Vec<u8>>> {
    Ok(content::encode(&Content::Group(GroupControl {
        group_id,
        body,
    }))?)
}

impl Messenger {
    /// Creates a group named `name` with `users` (and this user) as
    /// members, each with every device the relay lists for them now; this
    /// user is its admin. Returns its id once the members are told, or
    /// [`ClientError::Pending`] with the group created here and the news
    /// in the group outbox.
    pub async fn create_group(&mut self, name: &str, users: &[&str]) -> Result<[u8; 16]> {
        self.touch()?;
        let mut wanted: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        wanted.push(self.user.clone());
        let lists = self.listed_devices(&wanted).await?;
        let members: BTreeMap<String, Member> = lists
            .into_iter()
            .filter(|(_, devices)| !devices.is_empty())
            .map(|(user, devices)| {
                let devices = devices.iter().map(|d| *d.signing_key()).collect();
                (
                    user,
                    Member {
                        devices,
                        admin: false,
                    },
                )
            })
            .collect();
        let group_id = random_id();
        let (state, creation) = GroupState::create(
            self.identity_pair()?,
            &self.user,
            group_id,
            name,
            members,
            now_ms() / 1000,
        )?;
        let send = self.change_send(&state, &state, &creation)?;
        self.store.get_mut()?.atomically(|s| {
            s.save_group(&group_id, &state.to_bytes())?;
            s.queue_group_send(&send)?;
            Ok::<_, StoreError>(())
        })?;
        self.deliver_group_now(&send, None).await?;
        Ok(group_id)
    }

    /// Adds `users` with every device the relay lists for them. Only an
    /// admin may ([`ward_core::Error::NotAuthorized`]).
    pub async fn add_to_group(&mut self, group_id: &[u8; 16], users: &[&str]) -> Result<()> {
        self.touch()?;
        let wanted: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        for (user, devices) in self.listed_devices(&wanted).await? {
            let devices: BTreeSet<[u8; 32]> = devices.iter().map(|d| *d.signing_key()).collect();
            if devices.is_empty() {
                return Err(ClientError::NoBundle);
            }
            self.change_group(
                group_id,
                GroupAction::Add {
                    user_id: user,
                    devices,
                    admin: false,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Removes `user` and all their devices. An admin may remove anyone; a
    /// user may remove only themselves (see [`Messenger::leave_group`]).
    pub async fn remove_from_group(&mut self, group_id: &[u8; 16], user: &str) -> Result<()> {
        self.touch()?;
        self.change_group(
            group_id,
            GroupAction::Remove {
                user_id: user.to_owned(),
                devices: BTreeSet::new(),
            },
        )
        .await
    }

    /// Leaves the group, with every device of this user. The last admin
    /// cannot leave while members remain.
    pub async fn leave_group(&mut self, group_id: &[u8; 16]) -> Result<()> {
        let me = self.user.clone();
        self.remove_from_group(group_id, &me).await
    }

    /// Renames the group (admins only).
    pub async fn rename_group(&mut self, group_id: &[u8; 16], name: &str) -> Result<()> {
        self.touch()?;
        self.change_group(group_id, GroupAction::Rename(name.to_owned()))
            .await
    }

    /// Every group this device has, members or not.
    pub fn groups(&mut self) -> Result<Vec<GroupInfo>> {
        self.touch()?;
        let ids = self.store.get()?.group_ids()?;
        ids.iter()
            .filter_map(|id| self.load_group(id).transpose())
            .map(|state| state.map(|s| GroupInfo::of(&s)))
            .collect()
    }

    /// One group, if this device has it.
    pub fn group(&mut self, group_id: &[u8; 16]) -> Result<Option<GroupInfo>> {
        self.touch()?;
        Ok(self.load_group(group_id)?.map(|s| GroupInfo::of(&s)))
    }

    /// Sends `message` to every member device of the group: encrypted once
    /// under this device's sender chain and uploaded once. Devices that do
    /// not have the chain yet get it, with the message, over their pairwise
    /// sessions. The roster is brought in line with the relay first (see
    /// [`Messenger::sync_group`]).
    pub async fn send_to_group(
        &mut self,
        group_id: &[u8; 16],
        mut message: Message,
    ) -> Result<[u8; 16]> {
        self.touch()?;
        // The relay's list, fetched to sync the roster, serves the send too.
        let listed = self.sync_roster(group_id).await?;
        let mut state = self
            .load_group(group_id)?
            .ok_or(ClientError::UnknownGroup)?;
        if message.sent_at_ms == 0 {
            message.sent_at_ms = now_ms();
        }
        message.group_id = Some(*group_id);
        let plaintext = content::encode(&Content::Message(message))?;
        let out = state.encrypt(
            &mut ward_core::os_rng(),
            now_ms() / 1000,
            &self.options.group_rotation,
            &plaintext,
        )?;
        let message_id = random_id();
        let to_key: BTreeSet<[u8; 32]> = out.distribute_to.iter().copied().collect();
        #[cfg(feature = "test-hooks")]
        let to_key = if core::mem::take(&mut self.withhold_distribution) {
            BTreeSet::new()
        } else {
            to_key
        };
        let shared: Vec<[u8; 32]> = out
            .recipients
            .iter()
            .filter(|d| !to_key.contains(*d))
            .copied()
            .collect();
        let pairwise_plaintext = match &out.distribution {
            Some(distribution) if !to_key.is_empty() => control(
                *group_id,
                GroupControlBody::Key {
                    distribution: distribution.encode(),
                    message: out.message.clone(),
                },
            )?,
            _ => Zeroizing::new(Vec::new()),
        };
        let send = GroupSend {
            message_id,
            group_id: *group_id,
            users: state.members().keys().cloned().collect(),
            pairwise: to_key.into_iter().collect(),
            pairwise_plaintext,
            shared_ciphertext: if shared.is_empty() {
                Vec::new()
            } else {
                out.message
            },
            shared,
            resend: plaintext,
            sent: false,
        };
        self.store.get_mut()?.atomically(|s| {
            s.save_group(group_id, &state.to_bytes())?;
            s.queue_group_send(&send)?;
            Ok::<_, StoreError>(())
        })?;
        self.deliver_group_now(&send, listed).await?;
        Ok(message_id)
    }

    /// Brings the roster in line with the devices the relay lists: a device
    /// of a member that the relay no longer lists (revoked, wiped) is
    /// removed, by an admin or by a device of the same user; a new device
    /// of this user is added, and welcomed. Other users' new devices are
    /// theirs to add. [`Messenger::send_to_group`] calls this first.
    pub async fn sync_group(&mut self, group_id: &[u8; 16]) -> Result<()> {
        self.check_idle()?;
        self.sync_roster(group_id).await.map(drop)
    }

    /// [`Messenger::sync_group`], returning the relay's list it used
    /// (`None` when this device is no longer a member).
    async fn sync_roster(&mut self, group_id: &[u8; 16]) -> Result<Option<DeviceLists>> {
        let state = self
            .load_group(group_id)?
            .ok_or(ClientError::UnknownGroup)?;
        if !state.is_member() {
            return Ok(None);
        }
        let users: Vec<String> = state.members().keys().cloned().collect();
        let listed = self.listed_devices(&users).await?;
        let own_device = *self.device_key();
        let i_am_admin = state.members().get(&self.user).is_some_and(|m| m.admin);
        let mut actions = Vec::new();
        for (user, devices) in &listed {
            let listed: BTreeSet<[u8; 32]> = devices.iter().map(|d| *d.signing_key()).collect();
            let Some(member) = state.members().get(user) else {
                continue;
            };
            let gone: BTreeSet<[u8; 32]> = member
                .devices
                .iter()
                .filter(|d| **d != own_device && !listed.contains(*d))
                .copied()
                .collect();
            if !gone.is_empty() && (i_am_admin || *user == self.user) {
                let devices = if gone.len() == member.devices.len() {
                    BTreeSet::new()
                } else {
                    gone
                };
                actions.push(GroupAction::Remove {
                    user_id: user.clone(),
                    devices,
                });
            }
            if *user == self.user {
                let new: BTreeSet<[u8; 32]> = listed
                    .iter()
                    .filter(|d| **d != own_device && !member.devices.contains(*d))
                    .copied()
                    .collect();
                if !new.is_empty() {
                    actions.push(GroupAction::Add {
                        user_id: user.clone(),
                        devices: new,
                        admin: false,
                    });
                }
            }
        }
        for action in actions {
            self.change_group(group_id, action).await?;
        }
        Ok(Some(listed))
    }

    /// Proposes `action`, applies it here, and sends the change to every
    /// device of the roster before and after it, and the roster to the
    /// devices it added.
    async fn change_group(&mut self, group_id: &[u8; 16], action: GroupAction) -> Result<()> {
        let mut state = self
            .load_group(group_id)?
            .ok_or(ClientError::UnknownGroup)?;
        let before = self
            .load_group(group_id)?
            .ok_or(ClientError::UnknownGroup)?;
        let change = state.propose(self.identity_pair()?, action, now_ms() / 1000)?;
        let applied = state.apply(&change)?;
        let send = self.change_send(&before, &state, &change)?;
        let welcome = match applied {
            ward_core::Applied::Moved { added, .. } if !added.is_empty() => {
                Some(self.welcome_send(&state, added)?)
            }
            _ => None,
        };
        self.store.get_mut()?.atomically(|s| {
            s.save_group(group_id, &state.to_bytes())?;
            s.queue_group_send(&send)?;
            if let Some(w) = &welcome {
                s.queue_group_send(w)?;
            }
            Ok::<_, StoreError>(())
        })?;
        self.deliver_group_now(&send, None).await?;
        if let Some(w) = &welcome {
            self.deliver_group_now(w, None).await?;
        }
        Ok(())
    }

    /// The group traffic that carries `change` to the devices of the
    /// roster `before` it (those it removes learn of it; those it adds get
    /// a welcome instead). For a creation, `before` is the new group.
    pub(super) fn change_send(
        &self,
        before: &GroupState,
        after: &GroupState,
        change: &GroupChange,
    ) -> Result<GroupSend> {
        let devices = roster_devices(before, self.device_key());
        let users = before.members().keys().cloned();
        Ok(GroupSend {
            message_id: random_id(),
            group_id: *after.group_id(),
            users: users.collect(),
            pairwise: devices.into_iter().collect(),
            pairwise_plaintext: control(
                *after.group_id(),
                GroupControlBody::Change(change.to_bytes().to_vec()),
            )?,
            shared: Vec::new(),
            shared_ciphertext: Vec::new(),
            resend: Zeroizing::new(Vec::new()),
            sent: false,
        })
    }

    /// The roster, for devices just added.
    pub(super) fn welcome_send(
        &self,
        state: &GroupState,
        added: Vec<[u8; 32]>,
    ) -> Result<GroupSend> {
        let users = added
            .iter()
            .filter_map(|d| {
                state
                    .members()
                    .iter()
                    .find(|(_, m)| m.devices.contains(d))
                    .map(|(u, _)| u.clone())
            })
            .collect::<BTreeSet<_>>();
        Ok(GroupSend {
            message_id: random_id(),
            group_id: *state.group_id(),
            users: users.into_iter().collect(),
            pairwise: added
                .into_iter()
                .filter(|d| d != self.device_key())
                .collect(),
            pairwise_plaintext: control(
                *state.group_id(),
                GroupControlBody::Welcome(state.welcome()),
            )?,
            shared: Vec::new(),
            shared_ciphertext: Vec::new(),
            resend: Zeroizing::new(Vec::new()),
            sent: false,
        })
    }

    /// The group's state, if kept.
    pub(super) fn load_group(&self, group_id: &[u8; 16]) -> Result<Option<GroupState>> {
        match self.store.get()?.group(group_id)? {
            Some(bytes) => Ok(Some(GroupState::from_bytes(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The relay's list of active devices of `users`, this device left out.
    async fn listed_devices(&mut self, users: &[String]) -> Result<DeviceLists> {
        let mut user_ids: Vec<String> = Vec::with_capacity(users.len());
        for user in users {
            if !user_ids.contains(user) {
                user_ids.push(user.clone());
            }
        }
        let Resp::Devices(list) = self
            .request(Req::GetDevices(wire::GetDevices { user_ids }))
            .await?
        else {
            return Err(ClientError::UnexpectedResponse);
        };
        self.device_lists(&list.users)
    }

    /// Hands queued group traffic to the relay now; an error that will pass
    /// by itself leaves it in the group outbox, reported as
    /// [`ClientError::Pending`].
    async fn deliver_group_now(
        &mut self,
        send: &GroupSend,
        listed: Option<DeviceLists>,
    ) -> Result<()> {
        match self.deliver_group_queued(send, listed).await {
            Ok(()) => Ok(()),
            Err(reason) if super::send::is_transient(&reason) => {
                self.retry_outbox_later(&reason);
                Err(ClientError::Pending {
                    message_id: send.message_id,
                    reason: Box::new(reason),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Hands queued group traffic to the relay: kept as sent (if it can be
    /// resent) or removed once the relay took it, removed when refused for
    /// good, left pending otherwise.
    pub(super) async fn deliver_group_queued(
        &mut self,
        send: &GroupSend,
        mut listed: Option<DeviceLists>,
    ) -> Result<()> {
        let mut fresh_connection = false;
        let delivered = loop {
            let was_up = self.link.is_up();
            if let Err(e) = self.ensure_link().await {
                break Err(e);
            }
            fresh_connection |= !was_up;
            match self.deliver_group(send, &mut listed).await {
                Err(_) if !fresh_connection && !self.link.is_up() => fresh_connection = true,
                other => break other,
            }
        };
        let keep = !send.resend.is_empty();
        match delivered {
            Ok(()) => self
                .store
                .get_mut()?
                .mark_group_sent(&send.message_id, keep)?,
            Err(e) if super::link::is_final(&e) => {
                self.store
                    .get_mut()?
                    .mark_group_sent(&send.message_id, false)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// One attempt: the named devices the relay still lists get their
    /// copy, pairwise sessions opened as needed; a stale list is fetched
    /// again and the send rebuilt with the same id (RLY-25). `listed`, if
    /// given, is a list just fetched, used for the first try.
    async fn deliver_group(
        &mut self,
        send: &GroupSend,
        listed: &mut Option<DeviceLists>,
    ) -> Result<()> {
        let mut attempt = 0;
        loop {
            let listed = match listed.take() {
                Some(fresh) => fresh,
                None => self.listed_devices(&send.users).await?,
            };
            let mut pairwise_lists = Vec::new();
            let mut shared = Vec::new();
            let mut users = BTreeSet::new();
            for (user, devices) in &listed {
                let mine: Vec<DeviceIdentity> = devices
                    .iter()
                    .filter(|d| send.pairwise.contains(d.signing_key()))
                    .cloned()
                    .collect();
                for d in devices {
                    if send.shared.contains(d.signing_key()) {
                        shared.push(d.signing_key().to_vec());
                        users.insert(user.clone());
                    }
                }
                if !mine.is_empty() {
                    users.insert(user.clone());
                    pairwise_lists.push((user.clone(), mine));
                }
            }
            if pairwise_lists.is_empty() && shared.is_empty() {
                // Every device it was for is gone: nothing to deliver.
                return Ok(());
            }
            for (user, devices) in &pairwise_lists {
                self.open_sessions(user, devices).await?;
            }
            let envelopes = self.encrypt_for(&pairwise_lists, &send.pairwise_plaintext)?;
            users.remove(&self.user);
            let sent = self
                .request(Req::Send(wire::Send {
                    message_id: send.message_id.to_vec(),
                    user_ids: users.into_iter().collect(),
                    envelopes,
                    ttl_ms: self.options.ttl_ms,
                    shared_ciphertext: if shared.is_empty() {
                        Vec::new()
                    } else {
                        send.shared_ciphertext.clone()
                    },
                    shared_devices: shared,
                    device_subset: true,
                }))
                .await;
            match sent {
                Ok(Resp::Sent(_)) => return Ok(()),
                Ok(_) => return Err(ClientError::UnexpectedResponse),
                Err(ClientError::Refused {
                    code: wire::ErrorCode::StaleDevices,
                    ..
                }) if attempt < STALE_RETRIES => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Resends the group outbox's pending traffic, in the order queued,
    /// after the pairwise outbox. The first failure is returned.
    pub(super) async fn resend_group_outbox(&mut self) -> Result<()> {
        let mut first_error = None;
        let pending = self.store.get()?.pending_group_sends()?;
        for send in pending {
            if let Err(e) = self.deliver_group_queued(&send, None).await {
                tracing::warn!(error = %e, "resending group traffic failed");
                if !super::link::is_final(&e) {
                    self.retry_outbox_later(&e);
                }
                let stop = super::link::is_connection_failure(&e);
                first_error.get_or_insert(e);
                if stop {
                    break;
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
