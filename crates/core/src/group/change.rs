//! Group rosters and the signed changes between them (spec/14-groups.md).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use ward_proto::Message as _;
use ward_proto::core_v1 as pb;

use crate::encoding::{expect_format, fixed, format};
use crate::error::{DecodeError, Error, Result};
use crate::identity::IdentityKeyPair;
use crate::limits::{MAX_GROUP_DEVICES_PER_USER, MAX_GROUP_MEMBERS, MAX_GROUP_TEXT_LEN};
use crate::sender_key::GroupId;

/// A device, named by its Ed25519 identity key.
pub type DeviceKey = [u8; 32];

/// Signed before every change's bytes, so the identity key's signature on a
/// change can never pass for one on anything else.
const CHANGE_LABEL: &[u8] = b"Ward v1 group change\0";
/// Hashed before a parent head and a change: the next head.
const HEAD_LABEL: &[u8] = b"Ward v1 group head\0";

/// A user of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The devices that read for the user.
    pub devices: BTreeSet<DeviceKey>,
    /// Whether the user may add and remove others, rename and appoint admins.
    pub admin: bool,
}

/// A group's membership at one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    pub(crate) epoch: u64,
    pub(crate) head: [u8; 32],
    pub(crate) name: String,
    pub(crate) members: BTreeMap<String, Member>,
}

/// What a change does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupAction {
    /// Starts the group (epoch 0 only): its name and first members.
    Create {
        /// The group's name, seen only by its members.
        name: String,
        /// The first members, with their devices.
        members: BTreeMap<String, Member>,
    },
    /// Adds a user with devices, or devices to a member.
    Add {
        /// The user.
        user_id: String,
        /// The devices to add; not empty.
        devices: BTreeSet<DeviceKey>,
        /// For a new user, whether they are an admin; for a member, ignored
        /// and written as their current flag.
        admin: bool,
    },
    /// Removes a user (`devices` empty) or some of their devices.
    Remove {
        /// The user.
        user_id: String,
        /// The devices to remove; empty: the whole user.
        devices: BTreeSet<DeviceKey>,
    },
    /// Renames the group.
    Rename(String),
    /// Makes a member an admin or not.
    SetAdmin {
        /// The member.
        user_id: String,
        /// The new flag.
        admin: bool,
    },
}

/// A decoded change whose signature has been verified under its author key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChange {
    pub(crate) group_id: GroupId,
    pub(crate) epoch: u64,
    pub(crate) parent: [u8; 32],
    pub(crate) author: DeviceKey,
    pub(crate) author_user: String,
    pub(crate) action: GroupAction,
    /// The `GroupChange` bytes: what is signed and hashed.
    pub(crate) body: Vec<u8>,
    /// The whole signed encoding, `0x0b || SignedGroupChange`.
    pub(crate) signed: Vec<u8>,
}

impl GroupChange {
    /// Makes and signs a change of `roster` (or, with `roster` `None`, the
    /// creation of a group).
    pub(crate) fn sign(
        identity: &IdentityKeyPair,
        author_user: &str,
        group_id: &GroupId,
        roster: Option<&Roster>,
        made_at: u64,
        action: GroupAction,
    ) -> Result<Self> {
        let (epoch, parent) = roster.map_or((0, [0; 32]), |r| (r.epoch, r.head));
        let message = pb::GroupChange {
            group_id: group_id.to_vec(),
            epoch,
            parent: parent.to_vec(),
            author: identity.public().signing_key().to_vec(),
            author_user: author_user.into(),
            made_at,
            action: Some(action_to_proto(&action)),
        };
        let body = message.encode_to_vec();
        let signature = identity.sign(&signing_input(&body));
        let signed = pb::SignedGroupChange {
            change: body,
            signature: signature.to_vec(),
        };
        let mut out = Vec::with_capacity(1 + signed.encoded_len());
        out.push(format::GROUP_CHANGE);
        signed.encode_raw(&mut out);
        Self::decode(&out)
    }

    /// Decodes `0x0b || SignedGroupChange` and verifies its signature under
    /// the author key it names. Whether that key may make the change is the
    /// roster's question (applying it).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_checking(bytes, true)
    }

    /// [`GroupChange::decode`] of a change this device verified when it
    /// applied it and kept in its own state (spec/14, "State at rest"):
    /// every check but the author key's and the signature's.
    pub(crate) fn decode_applied(bytes: &[u8]) -> Result<Self> {
        Self::decode_checking(bytes, false)
    }

    fn decode_checking(bytes: &[u8], verify_signature: bool) -> Result<Self> {
        let body = expect_format(bytes, format::GROUP_CHANGE)?;
        let signed = pb::SignedGroupChange::decode(body)?;
        let signature = fixed::<64>("signature", &signed.signature)?;
        let change = pb::GroupChange::decode(signed.change.as_slice())?;
        let group_id = fixed::<16>("group_id", &change.group_id)?;
        let parent = fixed::<32>("parent", &change.parent)?;
        let author = fixed::<32>("author", &change.author)?;
        check_text("author_user", &change.author_user)?;
        if verify_signature {
            let verifying =
                VerifyingKey::from_bytes(&author).map_err(|_| DecodeError::InvalidKey("author"))?;
            if verifying.is_weak() {
                return Err(DecodeError::InvalidKey("author").into());
            }
            verifying
                .verify_strict(
                    &signing_input(&signed.change),
                    &Signature::from_bytes(&signature),
                )
                .map_err(|_| Error::BadSignature)?;
        }
        let action = action_from_proto(change.action.ok_or(DecodeError::MissingField("action"))?)?;
        Ok(Self {
            group_id,
            epoch: change.epoch,
            parent,
            author,
            author_user: change.author_user,
            action,
            body: signed.change,
            signed: bytes.to_vec(),
        })
    }

    /// The signed encoding, as sent to the members.
    pub fn to_bytes(&self) -> &[u8] {
        &self.signed
    }

    /// The group it changes.
    pub fn group_id(&self) -> &GroupId {
        &self.group_id
    }

    /// The epoch it starts from.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The device that made it.
    pub fn author(&self) -> &DeviceKey {
        &self.author
    }

    /// The user of that device.
    pub fn author_user(&self) -> &str {
        &self.author_user
    }

    /// What it does.
    pub fn action(&self) -> &GroupAction {
        &self.action
    }

    /// `SHA-256(change bytes)`: of two changes to one head, the lower wins.
    pub fn rank(&self) -> [u8; 32] {
        Sha256::digest(&self.body).into()
    }
}

impl Roster {
    /// The roster a creation change makes.
    pub(crate) fn create(change: &GroupChange) -> Result<Self> {
        let GroupAction::Create { name, members } = &change.action else {
            return Err(Error::InvalidChange(
                "the first change must create the group",
            ));
        };
        if change.epoch != 0 || change.parent != [0; 32] {
            return Err(Error::InvalidChange("a creation starts from epoch 0"));
        }
        let author_member = members
            .get(&change.author_user)
            .ok_or(Error::NotAuthorized)?;
        if !author_member.devices.contains(&change.author) || !author_member.admin {
            return Err(Error::NotAuthorized);
        }
        let roster = Self {
            epoch: 1,
            head: next_head(&change.parent, &change.body),
            name: name.clone(),
            members: members.clone(),
        };
        roster.check_bounds()?;
        Ok(roster)
    }

    /// The roster after `change`, which must build on this one.
    pub(crate) fn apply(&self, change: &GroupChange) -> Result<Self> {
        if change.epoch != self.epoch || change.parent != self.head {
            return Err(Error::UnknownParent);
        }
        let author = self
            .members
            .get(&change.author_user)
            .filter(|m| m.devices.contains(&change.author))
            .ok_or(Error::NotAuthorized)?;
        let mut next = self.clone();
        match &change.action {
            GroupAction::Create { .. } => {
                return Err(Error::InvalidChange("a group is created only once"));
            }
            GroupAction::Add {
                user_id,
                devices,
                admin,
            } => {
                if devices.is_empty() {
                    return Err(Error::InvalidChange("an addition names devices"));
                }
                if self.devices().any(|d| devices.contains(d)) {
                    return Err(Error::InvalidChange("a device is already a member"));
                }
                match next.members.get_mut(user_id) {
                    // Any device of a user may add that user's new devices.
                    Some(member) => {
                        if !author.admin && change.author_user != *user_id {
                            return Err(Error::NotAuthorized);
                        }
                        member.devices.extend(devices.iter().copied());
                    }
                    None => {
                        if !author.admin {
                            return Err(Error::NotAuthorized);
                        }
                        next.members.insert(
                            user_id.clone(),
                            Member {
                                devices: devices.clone(),
                                admin: *admin,
                            },
                        );
                    }
                }
            }
            GroupAction::Remove { user_id, devices } => {
                // Admins remove anyone; anyone removes themselves or their devices.
                if !author.admin && change.author_user != *user_id {
                    return Err(Error::NotAuthorized);
                }
                let member = next
                    .members
                    .get_mut(user_id)
                    .ok_or(Error::InvalidChange("not a member"))?;
                if !devices.is_subset(&member.devices) {
                    return Err(Error::InvalidChange("not a device of that member"));
                }
                member.devices.retain(|d| !devices.contains(d));
                if devices.is_empty() || member.devices.is_empty() {
                    next.members.remove(user_id);
                }
            }
            GroupAction::Rename(name) => {
                if !author.admin {
                    return Err(Error::NotAuthorized);
                }
                next.name = name.clone();
            }
            GroupAction::SetAdmin { user_id, admin } => {
                if !author.admin {
                    return Err(Error::NotAuthorized);
                }
                next.members
                    .get_mut(user_id)
                    .ok_or(Error::InvalidChange("not a member"))?
                    .admin = *admin;
            }
        }
        if !next.members.is_empty() && !next.members.values().any(|m| m.admin) {
            return Err(Error::InvalidChange(
                "the last admin cannot leave admins-less members",
            ));
        }
        next.check_bounds()?;
        next.epoch = self.epoch + 1;
        next.head = next_head(&self.head, &change.body);
        Ok(next)
    }

    /// Every member device.
    pub(crate) fn devices(&self) -> impl Iterator<Item = &DeviceKey> {
        self.members.values().flat_map(|m| m.devices.iter())
    }

    /// The user a device belongs to.
    pub(crate) fn user_of(&self, device: &DeviceKey) -> Option<&str> {
        self.members
            .iter()
            .find(|(_, m)| m.devices.contains(device))
            .map(|(user, _)| user.as_str())
    }

    fn check_bounds(&self) -> Result<()> {
        if self.members.len() > MAX_GROUP_MEMBERS {
            return Err(Error::InvalidChange("too many members"));
        }
        check_text("name", &self.name).map_err(|_| Error::InvalidChange("name too long"))?;
        for (user, member) in &self.members {
            check_text("user_id", user).map_err(|_| Error::InvalidChange("bad user id"))?;
            if member.devices.len() > MAX_GROUP_DEVICES_PER_USER {
                return Err(Error::InvalidChange("too many devices for one user"));
            }
        }
        Ok(())
    }

    pub(crate) fn to_proto(&self) -> pb::GroupRoster {
        pb::GroupRoster {
            epoch: self.epoch,
            head: self.head.to_vec(),
            name: self.name.clone(),
            members: members_to_proto(&self.members),
        }
    }

    pub(crate) fn from_proto(roster: &pb::GroupRoster) -> Result<Self> {
        Ok(Self {
            epoch: roster.epoch,
            head: fixed::<32>("roster.head", &roster.head)?,
            name: roster.name.clone(),
            members: members_from_proto(&roster.members)?,
        })
    }
}

/// `head' = SHA-256("Ward v1 group head\0" || head || change)`.
fn next_head(parent: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(HEAD_LABEL);
    hash.update(parent);
    hash.update(body);
    hash.finalize().into()
}

fn signing_input(body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(CHANGE_LABEL.len() + body.len());
    input.extend_from_slice(CHANGE_LABEL);
    input.extend_from_slice(body);
    input
}

fn check_text(field: &'static str, text: &str) -> Result<()> {
    if text.is_empty() && field != "name" {
        return Err(DecodeError::MissingField(field).into());
    }
    if text.len() > MAX_GROUP_TEXT_LEN {
        return Err(Error::InputTooLong {
            field,
            max: MAX_GROUP_TEXT_LEN,
        });
    }
    Ok(())
}

/// Devices strictly ascending, each 32 bytes: one encoding per set.
fn devices_from_proto(devices: &[Vec<u8>]) -> Result<BTreeSet<DeviceKey>> {
    let mut set = BTreeSet::new();
    let mut last: Option<DeviceKey> = None;
    for device in devices {
        let key = fixed::<32>("device", device)?;
        if last.is_some_and(|l| l >= key) {
            return Err(Error::InvalidChange("devices not strictly ascending"));
        }
        last = Some(key);
        set.insert(key);
    }
    Ok(set)
}

fn devices_to_proto(devices: &BTreeSet<DeviceKey>) -> Vec<Vec<u8>> {
    devices.iter().map(|d| d.to_vec()).collect()
}

fn members_from_proto(members: &[pb::GroupMember]) -> Result<BTreeMap<String, Member>> {
    let mut map = BTreeMap::new();
    let mut last: Option<&str> = None;
    for member in members {
        check_text("user_id", &member.user_id)?;
        if last.is_some_and(|l| l >= member.user_id.as_str()) {
            return Err(Error::InvalidChange("members not strictly ascending"));
        }
        last = Some(&member.user_id);
        let devices = devices_from_proto(&member.devices)?;
        if devices.is_empty() {
            return Err(Error::InvalidChange("a member without devices"));
        }
        map.insert(
            member.user_id.clone(),
            Member {
                devices,
                admin: member.admin,
            },
        );
    }
    Ok(map)
}

fn members_to_proto(members: &BTreeMap<String, Member>) -> Vec<pb::GroupMember> {
    members
        .iter()
        .map(|(user, m)| pb::GroupMember {
            user_id: user.clone(),
            devices: devices_to_proto(&m.devices),
            admin: m.admin,
        })
        .collect()
}

fn action_to_proto(action: &GroupAction) -> pb::group_change::Action {
    use pb::group_change::Action;
    match action {
        GroupAction::Create { name, members } => Action::Create(pb::GroupCreate {
            name: name.clone(),
            members: members_to_proto(members),
        }),
        GroupAction::Add {
            user_id,
            devices,
            admin,
        } => Action::Add(pb::GroupMember {
            user_id: user_id.clone(),
            devices: devices_to_proto(devices),
            admin: *admin,
        }),
        GroupAction::Remove { user_id, devices } => Action::Remove(pb::GroupRemove {
            user_id: user_id.clone(),
            devices: devices_to_proto(devices),
        }),
        GroupAction::Rename(name) => Action::Rename(name.clone()),
        GroupAction::SetAdmin { user_id, admin } => Action::SetAdmin(pb::GroupSetAdmin {
            user_id: user_id.clone(),
            admin: *admin,
        }),
    }
}

fn action_from_proto(action: pb::group_change::Action) -> Result<GroupAction> {
    use pb::group_change::Action;
    Ok(match action {
        Action::Create(create) => {
            check_text("name", &create.name)?;
            GroupAction::Create {
                members: members_from_proto(&create.members)?,
                name: create.name,
            }
        }
        Action::Add(member) => {
            check_text("user_id", &member.user_id)?;
            GroupAction::Add {
                devices: devices_from_proto(&member.devices)?,
                user_id: member.user_id,
                admin: member.admin,
            }
        }
        Action::Remove(remove) => {
            check_text("user_id", &remove.user_id)?;
            GroupAction::Remove {
                devices: devices_from_proto(&remove.devices)?,
                user_id: remove.user_id,
            }
        }
        Action::Rename(name) => {
            check_text("name", &name)?;
            GroupAction::Rename(name)
        }
        Action::SetAdmin(set) => {
            check_text("user_id", &set.user_id)?;
            GroupAction::SetAdmin {
                user_id: set.user_id,
                admin: set.admin,
            }
        }
    })
}
