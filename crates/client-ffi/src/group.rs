//! Care-team groups for foreign code: [`WardDevice`]'s group calls and
//! [`WardGroup`].

use std::sync::Arc;

use ward_client::{GroupInfo, Message};

use crate::device::message_id;
use crate::{WardDevice, WardError};

type Result<T, E = WardError> = core::result::Result<T, E>;

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct WardGroupMember {
    /// The user.
    pub user_id: String,
    /// The devices that read for them (32-byte keys).
    pub devices: Vec<Vec<u8>>,
    /// Whether they may add, remove and rename.
    pub admin: bool,
}

/// A group (a care team) as this device holds it.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct WardGroup {
    /// Its id (16 bytes).
    pub group_id: Vec<u8>,
    /// Its name.
    pub name: String,
    /// One more per applied change.
    pub epoch: u64,
    /// The members, by user id.
    pub members: Vec<WardGroupMember>,
    /// False once this device was removed or left.
    pub is_member: bool,
}

impl From<GroupInfo> for WardGroup {
    fn from(g: GroupInfo) -> Self {
        Self {
            group_id: g.group_id.to_vec(),
            name: g.name,
            epoch: g.epoch,
            members: g
                .members
                .into_iter()
                .map(|m| WardGroupMember {
                    user_id: m.user_id,
                    devices: m.devices.iter().map(|d| d.to_vec()).collect(),
                    admin: m.admin,
                })
                .collect(),
            is_member: g.is_member,
        }
    }
}

fn group_id(bytes: &[u8]) -> Result<[u8; 16]> {
    // A group id has the length of a message id.
    message_id(bytes)
}

#[uniffi::export]
impl WardDevice {
    /// Creates a group named `name` with `users` and this user (its
    /// admin), each with every device they have now. Returns its id (16
    /// bytes); [`WardError::Pending`] if the members are told later.
    pub async fn create_group(
        self: Arc<Self>,
        name: String,
        users: Vec<String>,
    ) -> Result<Vec<u8>> {
        self.with(async move |m| {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            Ok(m.create_group(&name, &users).await?.to_vec())
        })
        .await
    }

    /// Adds `users` with all their devices (admins only).
    pub async fn add_to_group(
        self: Arc<Self>,
        group_id: Vec<u8>,
        users: Vec<String>,
    ) -> Result<()> {
        let id = self::group_id(&group_id)?;
        self.with(async move |m| {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            Ok(m.add_to_group(&id, &users).await?)
        })
        .await
    }

    /// Removes `user` (admins, or the user themselves).
    pub async fn remove_from_group(self: Arc<Self>, group_id: Vec<u8>, user: String) -> Result<()> {
        let id = self::group_id(&group_id)?;
        self.with(async move |m| Ok(m.remove_from_group(&id, &user).await?))
            .await
    }

    /// Leaves the group with all of this user's devices.
    pub async fn leave_group(self: Arc<Self>, group_id: Vec<u8>) -> Result<()> {
        let id = self::group_id(&group_id)?;
        self.with(async move |m| Ok(m.leave_group(&id).await?))
            .await
    }

    /// Renames the group (admins only).
    pub async fn rename_group(self: Arc<Self>, group_id: Vec<u8>, name: String) -> Result<()> {
        let id = self::group_id(&group_id)?;
        self.with(async move |m| Ok(m.rename_group(&id, &name).await?))
            .await
    }

    /// Every group this device holds.
    pub async fn groups(self: Arc<Self>) -> Result<Vec<WardGroup>> {
        self.with(async move |m| Ok(m.groups()?.into_iter().map(Into::into).collect()))
            .await
    }

    /// One group, if this device holds it.
    pub async fn group(self: Arc<Self>, group_id: Vec<u8>) -> Result<Option<WardGroup>> {
        let id = self::group_id(&group_id)?;
        self.with(async move |m| Ok(m.group(&id)?.map(Into::into)))
            .await
    }

    /// Sends `text` to every member device of the group, encrypted once.
    /// Returns the message id; members' receipts refer to it.
    pub async fn send_to_group(
        self: Arc<Self>,
        group_id: Vec<u8>,
        text: String,
        urgent: bool,
    ) -> Result<Vec<u8>> {
        let id = self::group_id(&group_id)?;
        let message = if urgent {
            Message::urgent(text)
        } else {
            Message::text(text)
        };
        self.with(async move |m| Ok(m.send_to_group(&id, message).await?.to_vec()))
            .await
    }
}
