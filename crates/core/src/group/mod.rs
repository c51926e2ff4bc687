//! Groups as values (spec/14-groups.md): a roster that changes only by
//! changes signed by member devices, the sender chains of its members, and
//! this device's own chain.
//!
//! Every member applies the same changes in the same order and reaches the
//! same head. When two changes build on one head, the one whose bytes hash
//! lower wins everywhere: a device that applied the other first rolls back
//! to the shared head (it keeps the last [`MAX_GROUP_HISTORY`] rosters for
//! that) and hands the losing changes back to its caller.

mod change;

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use rand_core::CryptoRng;
use ward_proto::Message as _;
use ward_proto::core_v1 as pb;
use zeroize::Zeroizing;

pub use change::{DeviceKey, GroupAction, GroupChange, Member, Roster};

use crate::encoding::{expect_format, fixed, format};
use crate::error::{DecodeError, Error, Result};
use crate::identity::IdentityKeyPair;
use crate::limits::{MAX_CHAINS_PER_DEVICE, MAX_GROUP_HISTORY, MAX_PLAINTEXT_LEN};
use crate::sender_key::{
    GroupId, ReceivedChain, RotationPolicy, SenderChain, SenderKeyDistribution, SenderKeyMessage,
};

/// One device's view of a group.
pub struct GroupState {
    group_id: GroupId,
    own_user: String,
    own_device: DeviceKey,
    roster: Roster,
    /// The rosters the last changes were applied to, with those changes,
    /// oldest first: a competing change to one of them can still win.
    history: VecDeque<(Roster, GroupChange)>,
    own_chain: Option<SenderChain>,
    /// The devices our chain was handed to.
    chain_recipients: BTreeSet<DeviceKey>,
    /// A device left since our chain started: the next message needs a new one.
    rotation_due: bool,
    /// Chains of the other member devices, oldest first per device.
    received: BTreeMap<DeviceKey, VecDeque<ReceivedChain>>,
}

/// What applying a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The change was already applied; nothing changed.
    AlreadyApplied,
    /// The change moved the group to a new epoch. `superseded` holds the
    /// changes it displaced (it won against the first of them), newest
    /// last: their authors may make them again on the new head.
    Moved {
        /// The devices that are no longer members.
        removed: Vec<DeviceKey>,
        /// The devices that became members.
        added: Vec<DeviceKey>,
        /// Changes rolled back, in the order they had been applied.
        superseded: Vec<GroupChange>,
    },
}

/// A group message ready to go: the ciphertext for every other member
/// device, and the distribution that some of them need first.
#[derive(Debug)]
pub struct OutgoingGroupMessage {
    /// The sender-key message (spec/13): one ciphertext for all.
    pub message: Vec<u8>,
    /// Every other member device, the recipients of `message`.
    pub recipients: Vec<DeviceKey>,
    /// Our chain's distribution, to be sent over the pairwise session to
    /// `distribute_to` before `message`; `None` when everyone has it.
    pub distribution: Option<SenderKeyDistribution>,
    /// The devices that do not have our chain yet.
    pub distribute_to: Vec<DeviceKey>,
}

/// A group message opened: who sent it and what it says. Its `Debug`
/// leaves the plaintext out: it is patient data.
pub struct IncomingGroupMessage {
    /// The sending user.
    pub user_id: String,
    /// The sending device.
    pub device: DeviceKey,
    /// The plaintext.
    pub plaintext: Vec<u8>,
}

impl GroupState {
    /// Creates a group with this device's user as its first admin. Returns
    /// the group and the signed creation, which every member applies with
    /// [`GroupState::join`].
    pub fn create(
        identity: &IdentityKeyPair,
        own_user: &str,
        group_id: GroupId,
        name: &str,
        mut members: BTreeMap<String, Member>,
        now: u64,
    ) -> Result<(Self, GroupChange)> {
        let own_device = *identity.public().signing_key();
        let me = members.entry(own_user.into()).or_insert_with(|| Member {
            devices: BTreeSet::new(),
            admin: true,
        });
        me.admin = true;
        me.devices.insert(own_device);
        let change = GroupChange::sign(
            identity,
            own_user,
            &group_id,
            None,
            now,
            GroupAction::Create {
                name: name.into(),
                members,
            },
        )?;
        let state = Self::join(identity, own_user, &change)?;
        Ok((state, change))
    }

    /// The group a creation change makes, as this member device sees it.
    pub fn join(
        identity: &IdentityKeyPair,
        own_user: &str,
        creation: &GroupChange,
    ) -> Result<Self> {
        let roster = Roster::create(creation)?;
        let own_device = *identity.public().signing_key();
        if roster.user_of(&own_device) != Some(own_user) {
            return Err(Error::NotAuthorized);
        }
        Ok(Self {
            group_id: creation.group_id,
            own_user: own_user.into(),
            own_device,
            roster,
            history: VecDeque::new(),
            own_chain: None,
            chain_recipients: BTreeSet::new(),
            rotation_due: false,
            received: BTreeMap::new(),
        })
    }

    /// The roster at the current epoch, for a device just added: it joins
    /// with [`GroupState::from_welcome`]. Send it over the pairwise session.
    pub fn welcome(&self) -> Vec<u8> {
        let welcome = pb::GroupWelcome {
            group_id: self.group_id.to_vec(),
            roster: Some(self.roster.to_proto()),
        };
        let mut out = Vec::with_capacity(1 + welcome.encoded_len());
        out.push(format::GROUP_WELCOME);
        welcome.encode_raw(&mut out);
        out
    }

    /// Joins a group at the epoch of a welcome that arrived over the
    /// pairwise session with `from`. The roster is trusted as `from`'s word,
    /// so `from` must be a member device in it, as must this device.
    pub fn from_welcome(
        identity: &IdentityKeyPair,
        own_user: &str,
        from: &DeviceKey,
        bytes: &[u8],
    ) -> Result<Self> {
        let body = expect_format(bytes, format::GROUP_WELCOME)?;
        let welcome = pb::GroupWelcome::decode(body)?;
        let roster = Roster::from_proto(
            welcome
                .roster
                .as_ref()
                .ok_or(DecodeError::MissingField("roster"))?,
        )?;
        let own_device = *identity.public().signing_key();
        if roster.user_of(&own_device) != Some(own_user) || roster.user_of(from).is_none() {
            return Err(Error::NotAuthorized);
        }
        Ok(Self {
            group_id: fixed::<16>("group_id", &welcome.group_id)?,
            own_user: own_user.into(),
            own_device,
            roster,
            history: VecDeque::new(),
            own_chain: None,
            chain_recipients: BTreeSet::new(),
            rotation_due: false,
            received: BTreeMap::new(),
        })
    }

    /// The group's id.
    pub fn group_id(&self) -> &GroupId {
        &self.group_id
    }

    /// The current epoch: 1 after creation, one more per change.
    pub fn epoch(&self) -> u64 {
        self.roster.epoch
    }

    /// The hash of every change so far: equal on every member at one epoch.
    pub fn head(&self) -> &[u8; 32] {
        &self.roster.head
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.roster.name
    }

    /// The members, by user id.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.roster.members
    }

    /// Whether this device is still a member.
    pub fn is_member(&self) -> bool {
        self.roster.user_of(&self.own_device).is_some()
    }

    /// Makes and signs a change of the current roster. It is not applied:
    /// the caller sends it to the members and applies it like theirs, so
    /// that every device takes the same path.
    pub fn propose(
        &self,
        identity: &IdentityKeyPair,
        action: GroupAction,
        now: u64,
    ) -> Result<GroupChange> {
        if identity.public().signing_key() != &self.own_device {
            return Err(Error::NotAuthorized);
        }
        let change = GroupChange::sign(
            identity,
            &self.own_user,
            &self.group_id,
            Some(&self.roster),
            now,
            action,
        )?;
        // Refuse here what every member would refuse.
        self.roster.apply(&change)?;
        Ok(change)
    }

    /// Applies a signed change from any member (or this device). A failure
    /// changes nothing.
    ///
    /// - building on the current head: applied;
    /// - building on a head of the kept history: a competing change; it
    ///   wins if it ranks lower than the change applied there, and the
    ///   group rolls back to that head and applies it
    ///   ([`Applied::Moved::superseded`]), else [`Error::ChangeSuperseded`];
    /// - building on a head not reached: [`Error::UnknownParent`], to be
    ///   tried again after the changes before it.
    pub fn apply(&mut self, change: &GroupChange) -> Result<Applied> {
        if change.group_id != self.group_id {
            return Err(Error::WrongGroup);
        }
        if change.epoch == self.roster.epoch && change.parent == self.roster.head {
            let next = self.roster.apply(change)?;
            let before = core::mem::replace(&mut self.roster, next);
            let effects = self.settle(&before);
            self.history.push_back((before, change.clone()));
            while self.history.len() > MAX_GROUP_HISTORY {
                self.history.pop_front();
            }
            return Ok(effects_with(effects, Vec::new()));
        }
        let Some(fork) = self
            .history
            .iter()
            .position(|(roster, _)| roster.head == change.parent && roster.epoch == change.epoch)
        else {
            return if change.epoch > self.roster.epoch {
                Err(Error::UnknownParent)
            } else {
                Err(Error::ChangeSuperseded)
            };
        };
        let (base, applied) = &self.history[fork];
        if applied.body == change.body {
            return Ok(Applied::AlreadyApplied);
        }
        if change.rank() > applied.rank() {
            return Err(Error::ChangeSuperseded);
        }
        let next = base.apply(change)?;
        let base = base.clone();
        let superseded: Vec<GroupChange> = self.history.drain(fork..).map(|(_, c)| c).collect();
        let before = core::mem::replace(&mut self.roster, next);
        let effects = self.settle(&before);
        self.history.push_back((base, change.clone()));
        Ok(effects_with(effects, superseded))
    }

    /// After the roster changed from `before`: forgets the chains of devices
    /// that left, and marks our chain for rotation if any did.
    fn settle(&mut self, before: &Roster) -> (Vec<DeviceKey>, Vec<DeviceKey>) {
        let now: BTreeSet<DeviceKey> = self.roster.devices().copied().collect();
        let was: BTreeSet<DeviceKey> = before.devices().copied().collect();
        let removed: Vec<DeviceKey> = was.difference(&now).copied().collect();
        let added: Vec<DeviceKey> = now.difference(&was).copied().collect();
        if !removed.is_empty() {
            self.rotation_due = true;
        }
        for device in &removed {
            self.received.remove(device);
            self.chain_recipients.remove(device);
        }
        (removed, added)
    }

    /// Encrypts `plaintext` for every other member device. Starts a new
    /// chain first if none exists, a device has left since the last one
    /// started (SK-10), or `policy` says the chain is due (SK-11).
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        now: u64,
        policy: &RotationPolicy,
        plaintext: &[u8],
    ) -> Result<OutgoingGroupMessage> {
        if !self.is_member() {
            return Err(Error::NotAuthorized);
        }
        // Refused before a new chain is drawn: a failure changes nothing.
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(Error::MessageTooLarge);
        }
        let due = match &self.own_chain {
            None => true,
            Some(chain) => self.rotation_due || chain.is_due_for_rotation(policy, now),
        };
        if due {
            self.own_chain = Some(SenderChain::generate(rng, self.group_id, now));
            self.chain_recipients.clear();
            self.rotation_due = false;
        }
        let recipients: Vec<DeviceKey> = self
            .roster
            .devices()
            .filter(|d| **d != self.own_device)
            .copied()
            .collect();
        let distribute_to: Vec<DeviceKey> = recipients
            .iter()
            .filter(|d| !self.chain_recipients.contains(*d))
            .copied()
            .collect();
        let Some(chain) = self.own_chain.as_mut() else {
            return Err(Error::NotReady);
        };
        let distribution = (!distribute_to.is_empty()).then(|| chain.distribution());
        let message = chain.encrypt(plaintext)?;
        self.chain_recipients.extend(distribute_to.iter().copied());
        Ok(OutgoingGroupMessage {
            message,
            recipients,
            distribution,
            distribute_to,
        })
    }

    /// Our chain as it stands, for a member device that asks for it
    /// (SK-13): it reads from our next message on.
    pub fn distribution_for(&mut self, device: &DeviceKey) -> Result<SenderKeyDistribution> {
        if *device == self.own_device || self.roster.user_of(device).is_none() {
            return Err(Error::NotAuthorized);
        }
        let chain = self.own_chain.as_ref().ok_or(Error::MissingChain)?;
        self.chain_recipients.insert(*device);
        Ok(chain.distribution())
    }

    /// Takes a distribution that arrived over the pairwise session with
    /// `from` (SK-12). A chain already held is kept as it is.
    pub fn accept_distribution(
        &mut self,
        from: &DeviceKey,
        distribution: &SenderKeyDistribution,
    ) -> Result<()> {
        if distribution.group_id() != &self.group_id {
            return Err(Error::WrongGroup);
        }
        if *from == self.own_device || self.roster.user_of(from).is_none() {
            return Err(Error::NotAuthorized);
        }
        let claimed_elsewhere = self.received.iter().any(|(device, chains)| {
            device != from
                && chains
                    .iter()
                    .any(|c| c.chain_id() == distribution.chain_id())
        });
        if claimed_elsewhere {
            return Err(Error::WrongChain);
        }
        let chains = self.received.entry(*from).or_default();
        if chains
            .iter()
            .any(|c| c.chain_id() == distribution.chain_id())
        {
            return Ok(());
        }
        chains.push_back(ReceivedChain::from_distribution(distribution));
        while chains.len() > MAX_CHAINS_PER_DEVICE {
            chains.pop_front();
        }
        Ok(())
    }

    /// Opens a group message. [`Error::MissingChain`] means no member's
    /// chain is the one it names: keep the message and ask the device the
    /// relay says sent it for its distribution.
    pub fn decrypt(&mut self, bytes: &[u8]) -> Result<IncomingGroupMessage> {
        let message = SenderKeyMessage::decode(bytes)?;
        if message.group_id() != &self.group_id {
            return Err(Error::WrongGroup);
        }
        let (device, chain) = self
            .received
            .iter_mut()
            .find_map(|(device, chains)| {
                chains
                    .iter_mut()
                    .find(|c| c.chain_id() == message.chain_id())
                    .map(|c| (*device, c))
            })
            .ok_or(Error::MissingChain)?;
        let plaintext = chain.decrypt(&message)?;
        let user_id = self.roster.user_of(&device).unwrap_or_default().into();
        Ok(IncomingGroupMessage {
            user_id,
            device,
            plaintext,
        })
    }

    /// Serializes the group: `0x0c || GroupStateRecord`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let record = pb::GroupStateRecord {
            group_id: self.group_id.to_vec(),
            own_user: self.own_user.clone(),
            own_device: self.own_device.to_vec(),
            roster: Some(self.roster.to_proto()),
            history: self
                .history
                .iter()
                .map(|(roster, change)| pb::GroupHistoryEntry {
                    before: Some(roster.to_proto()),
                    change: change.signed.clone(),
                })
                .collect(),
            own_chain: self
                .own_chain
                .as_ref()
                .map(|c| c.to_bytes().to_vec())
                .unwrap_or_default(),
            chain_recipients: self.chain_recipients.iter().map(|d| d.to_vec()).collect(),
            rotation_due: self.rotation_due,
            received: self
                .received
                .iter()
                .map(|(device, chains)| pb::GroupChains {
                    device: device.to_vec(),
                    chains: chains.iter().map(|c| c.to_bytes().to_vec()).collect(),
                })
                .collect(),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(1 + record.encoded_len()));
        out.push(format::GROUP_STATE);
        record.encode_raw(&mut *out);
        out
    }

    /// Restores a group from [`Self::to_bytes`]. Like a session, it is the
    /// device's own data: lengths and encodings are checked, but not the
    /// signatures of the kept changes, verified when they were applied.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let body = expect_format(bytes, format::GROUP_STATE)?;
        let record = pb::GroupStateRecord::decode(body)?;
        let roster = record
            .roster
            .as_ref()
            .ok_or(DecodeError::MissingField("roster"))?;
        let mut history = VecDeque::with_capacity(record.history.len());
        for entry in &record.history {
            let before = entry
                .before
                .as_ref()
                .ok_or(DecodeError::MissingField("history.before"))?;
            history.push_back((
                Roster::from_proto(before)?,
                GroupChange::decode_applied(&entry.change)?,
            ));
        }
        let own_chain = match record.own_chain.is_empty() {
            true => None,
            false => Some(SenderChain::from_bytes(&record.own_chain)?),
        };
        let mut chain_recipients = BTreeSet::new();
        for device in &record.chain_recipients {
            chain_recipients.insert(fixed::<32>("chain_recipients", device)?);
        }
        let mut received = BTreeMap::new();
        for entry in &record.received {
            let mut chains = VecDeque::with_capacity(entry.chains.len());
            for chain in &entry.chains {
                chains.push_back(ReceivedChain::from_bytes(chain)?);
            }
            received.insert(fixed::<32>("received.device", &entry.device)?, chains);
        }
        Ok(Self {
            group_id: fixed::<16>("group_id", &record.group_id)?,
            own_user: record.own_user.clone(),
            own_device: fixed::<32>("own_device", &record.own_device)?,
            roster: Roster::from_proto(roster)?,
            history,
            own_chain,
            chain_recipients,
            rotation_due: record.rotation_due,
            received,
        })
    }
}

fn effects_with(
    (removed, added): (Vec<DeviceKey>, Vec<DeviceKey>),
    superseded: Vec<GroupChange>,
) -> Applied {
    Applied::Moved {
        removed,
        added,
        superseded,
    }
}

impl fmt::Debug for IncomingGroupMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingGroupMessage")
            .field("user_id", &self.user_id)
            .field("plaintext_len", &self.plaintext.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupState")
            .field("epoch", &self.roster.epoch)
            .field("members", &self.roster.members.len())
            .field("own_chain", &self.own_chain)
            .field(
                "received_chains",
                &self.received.values().map(VecDeque::len).sum::<usize>(),
            )
            .finish_non_exhaustive()
    }
}
