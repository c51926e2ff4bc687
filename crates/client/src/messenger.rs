//! A device that sends and receives end-to-end encrypted messages through
//! a relay: its keys, its sessions (in memory), fan-out to every device
//! of the addressed users and of its own user, and the delivery stream.
//!
//! This is the SDK's first layer; a persistent, sealed device store comes
//! on top of it (issue 4).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use rand_core::{CryptoRng, Rng};
use ward_core::{
    DeviceIdentity, IdentityKeyPair, MessageKind, OneTimePreKeyPair, PreKeyBundle, PreKeyMessage,
    Session, SignedPreKeyPair, SignedPreKeys,
};
use ward_proto::relay_v1::{self as wire, request::Body as Req, response::Body as Resp};

use crate::{ClientError, Deliveries, RelayConnection};

/// One-time prekeys uploaded at enrollment and whenever the relay says
/// they run low.
const ONE_TIME_BATCH: u32 = 50;
/// How often a send is rebuilt after the relay reports a stale device list.
const STALE_RETRIES: usize = 3;

/// Device keys by user, as a send must cover them.
type DeviceLists = Vec<(String, Vec<[u8; 32]>)>;

/// A message received and decrypted.
#[derive(Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The sending user.
    pub sender_user: String,
    /// The sending device's key.
    pub sender_device: [u8; 32],
    /// The sender's message id.
    pub message_id: [u8; 16],
    /// The plaintext.
    pub plaintext: Vec<u8>,
}

impl core::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Incoming")
            .field("sender_user", &self.sender_user)
            .field("len", &self.plaintext.len())
            .finish_non_exhaustive()
    }
}

/// A device connected to its relay.
pub struct Messenger {
    user: String,
    identity: IdentityKeyPair,
    signed: SignedPreKeyPair,
    one_time: BTreeMap<u32, OneTimePreKeyPair>,
    next_one_time_id: u32,
    connection: RelayConnection,
    deliveries: Deliveries,
    sessions: HashMap<[u8; 32], Session>,
}

impl core::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Messenger")
            .field("user", &self.user)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

fn rng() -> impl CryptoRng {
    ward_core::os_rng()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn key32(bytes: &[u8]) -> Result<[u8; 32], ClientError> {
    bytes
        .try_into()
        .map_err(|_| ClientError::UnexpectedResponse)
}

impl Messenger {
    /// Creates a device identity, enrolls it with `token` at the relay,
    /// and publishes its prekeys.
    pub async fn enroll(
        addr: SocketAddr,
        fingerprint: [u8; 32],
        token: &str,
    ) -> Result<Self, ClientError> {
        let mut rng = rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let connection = RelayConnection::connect(addr, "localhost", fingerprint).await?;
        let auth = connection.enroll(token, &identity).await?;
        let signed = SignedPreKeyPair::generate(&mut rng, &identity, 1, now_secs());
        let deliveries = connection.deliveries().await?;
        let mut messenger = Self {
            user: auth.user_id,
            identity,
            signed,
            one_time: BTreeMap::new(),
            next_one_time_id: 1,
            connection,
            deliveries,
            sessions: HashMap::new(),
        };
        messenger.publish_prekeys(true).await?;
        Ok(messenger)
    }

    /// The user this device belongs to.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// This device's public identity.
    pub fn identity(&self) -> &DeviceIdentity {
        self.identity.public()
    }

    /// The relay connection.
    pub fn connection(&self) -> &RelayConnection {
        &self.connection
    }

    /// Uploads a batch of one-time prekeys (and the signed prekeys if
    /// `with_signed`).
    async fn publish_prekeys(&mut self, with_signed: bool) -> Result<(), ClientError> {
        let batch =
            OneTimePreKeyPair::generate_batch(&mut rng(), self.next_one_time_id, ONE_TIME_BATCH);
        self.next_one_time_id = self.next_one_time_id.saturating_add(ONE_TIME_BATCH);
        let upload = wire::UploadPreKeys {
            signed_prekeys: if with_signed {
                self.signed.public().encode()
            } else {
                Vec::new()
            },
            one_time_prekeys: batch
                .iter()
                .map(|k| wire::OneTimePreKey {
                    id: k.id(),
                    key: k.public().encode(),
                })
                .collect(),
        };
        match self.connection.request(Req::UploadPrekeys(upload)).await? {
            Resp::PrekeysStored(_) => {
                self.one_time.extend(batch.into_iter().map(|k| (k.id(), k)));
                Ok(())
            }
            _ => Err(ClientError::UnexpectedResponse),
        }
    }

    /// Opens sessions with those of `user`'s devices that have none.
    async fn open_sessions(&mut self, user: &str, devices: &[[u8; 32]]) -> Result<(), ClientError> {
        let missing: Vec<Vec<u8>> = devices
            .iter()
            .filter(|d| !self.sessions.contains_key(*d))
            .map(|d| d.to_vec())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let Resp::Bundles(bundles) = self
            .connection
            .request(Req::ClaimBundles(wire::ClaimBundles {
                user_id: user.to_owned(),
                device_keys: missing,
            }))
            .await?
        else {
            return Err(ClientError::UnexpectedResponse);
        };
        let mut rng = rng();
        for b in bundles.bundles {
            let identity = DeviceIdentity::from_bytes(&b.identity)?;
            let signed = SignedPreKeys::decode(&b.signed_prekeys, &identity)?;
            let one_time = b
                .one_time_prekey
                .map(|k| ward_core::OneTimePreKey::decode(&k.key))
                .transpose()?;
            let key = *identity.signing_key();
            let bundle = PreKeyBundle::new(identity, signed, one_time)?;
            self.sessions
                .insert(key, Session::initiate(&mut rng, &self.identity, &bundle)?);
        }
        Ok(())
    }

    /// The devices a send to `users` must reach, by user: every active
    /// device of theirs and this user's other devices.
    async fn recipients(&self, users: &[&str]) -> Result<DeviceLists, ClientError> {
        let mut user_ids: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        if !user_ids.contains(&self.user) {
            user_ids.push(self.user.clone());
        }
        let Resp::Devices(list) = self
            .connection
            .request(Req::GetDevices(wire::GetDevices { user_ids }))
            .await?
        else {
            return Err(ClientError::UnexpectedResponse);
        };
        self.device_lists(&list.users)
    }

    fn device_lists(&self, users: &[wire::UserDevices]) -> Result<DeviceLists, ClientError> {
        let own = *self.identity.public().signing_key();
        users
            .iter()
            .map(|u| {
                let devices = u
                    .devices
                    .iter()
                    .map(|d| Ok(*DeviceIdentity::from_bytes(&d.identity)?.signing_key()))
                    .filter(|k: &Result<[u8; 32], ClientError>| {
                        k.as_ref().map_or(true, |k| *k != own)
                    })
                    .collect::<Result<Vec<_>, ClientError>>()?;
                Ok((u.user_id.clone(), devices))
            })
            .collect()
    }

    /// Encrypts `plaintext` for every current device of `users` and of
    /// this user, and sends it in one request. If the relay reports the
    /// device list stale, sessions are opened for new devices and the send
    /// is rebuilt (with the same message id). Returns the message id.
    pub async fn send(
        &mut self,
        users: &[&str],
        plaintext: &[u8],
    ) -> Result<[u8; 16], ClientError> {
        let mut message_id = [0u8; 16];
        rng().fill_bytes(&mut message_id);
        let mut lists = self.recipients(users).await?;
        let mut attempt = 0;
        loop {
            for (user, devices) in &lists {
                self.open_sessions(user, devices).await?;
            }
            let mut rng = rng();
            let mut envelopes = Vec::new();
            for (_, devices) in &lists {
                for device in devices {
                    let session = self
                        .sessions
                        .get_mut(device)
                        .ok_or(ClientError::UnexpectedResponse)?;
                    envelopes.push(wire::Envelope {
                        device_key: device.to_vec(),
                        ciphertext: session.encrypt(&mut rng, plaintext)?,
                    });
                }
            }
            let sent = self
                .connection
                .request(Req::Send(wire::Send {
                    message_id: message_id.to_vec(),
                    user_ids: users.iter().map(|u| (*u).to_owned()).collect(),
                    envelopes,
                    ttl_ms: 0,
                }))
                .await;
            match sent {
                Ok(Resp::Sent(_)) => return Ok(message_id),
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

    /// Waits for the next message, decrypts it (opening a session for a
    /// pre-key message) and acknowledges it to the relay. Prekey notices
    /// are handled on the way. A message that does not decrypt is not
    /// acknowledged: its error is returned and the relay keeps it.
    pub async fn receive(&mut self) -> Result<Incoming, ClientError> {
        loop {
            let push = self.deliveries.next().await?.ok_or(ClientError::Stream(
                "the relay ended the delivery stream".to_owned(),
            ))?;
            match push.body {
                Some(wire::push::Body::Delivery(d)) => {
                    let incoming = self.open(&d)?;
                    self.connection
                        .request(Req::Ack(wire::Ack {
                            message_ids: vec![d.message_id],
                        }))
                        .await?;
                    return Ok(incoming);
                }
                Some(wire::push::Body::PrekeysLow(_)) => self.publish_prekeys(false).await?,
                None => {}
            }
        }
    }

    fn open(&mut self, d: &wire::Delivery) -> Result<Incoming, ClientError> {
        let sender = key32(&d.sender_device)?;
        let message_id: [u8; 16] = d
            .message_id
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::UnexpectedResponse)?;
        let plaintext = match (
            MessageKind::of(&d.ciphertext)?,
            self.sessions.get_mut(&sender),
        ) {
            (MessageKind::PreKey, None) => {
                let message = PreKeyMessage::decode(&d.ciphertext)?;
                let one_time = match message.one_time_prekey_id() {
                    Some(id) => Some(
                        self.one_time
                            .get(&id)
                            .ok_or(ClientError::Protocol(ward_core::Error::PreKeyMismatch))?,
                    ),
                    None => None,
                };
                let (session, text) =
                    Session::accept(&self.identity, &self.signed, one_time, &message)?;
                if let Some(id) = message.one_time_prekey_id() {
                    self.one_time.remove(&id);
                }
                self.sessions.insert(sender, session);
                text
            }
            (_, Some(session)) => session.decrypt(&d.ciphertext)?,
            (_, None) => return Err(ClientError::Protocol(ward_core::Error::WrongSession)),
        };
        Ok(Incoming {
            sender_user: d.sender_user.clone(),
            sender_device: sender,
            message_id,
            plaintext,
        })
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.connection.close().await;
    }
}
