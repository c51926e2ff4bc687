//! Sessions: the handshake (spec/04-handshake.md) and the session value that
//! carries a Double Ratchet between two devices (spec/06-sessions.md).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use rand_core::CryptoRng;
use subtle::ConstantTimeEq;
use ward_proto::{Message, core_v1 as pb};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::encoding::{expect_format, fixed, format};
use crate::error::{DecodeError, Error, Result};
use crate::identity::{DeviceIdentity, IdentityKeyPair};
use crate::kdf::{self, ChainKey, MessageKey, RootKey};
use crate::message::{MessageKind, PreKeyMessage, handshake_digest};
use crate::prekeys::{KEM_CIPHERTEXT_LEN, OneTimePreKeyPair, PreKeyBundle, SignedPreKeyPair};
use crate::ratchet::{AdPrefix, Chain, LocalRatchet, Ratchet, SkippedKey, agree};

/// An end-to-end encrypted session between this device and one other.
///
/// A session is a value: [`Session::to_bytes`] and [`Session::from_bytes`]
/// move it to and from the caller's encrypted store. Every method that fails
/// leaves it unchanged.
pub struct Session {
    inner: Box<Inner>,
}

struct Inner {
    local: DeviceIdentity,
    remote: DeviceIdentity,
    base_key: [u8; 32],
    initiator: bool,
    ratchet: Ratchet,
    /// Until the initiator hears back, each message is wrapped in a
    /// pre-key message carrying these handshake values.
    pending: Option<Pending>,
    /// Digest of the handshake values; every pre-key message the responder
    /// takes into this session must carry exactly these.
    handshake_digest: [u8; 32],
}

#[derive(Clone)]
struct Pending {
    signed_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
    kem_ciphertext: Box<[u8; KEM_CIPHERTEXT_LEN]>,
}

impl Session {
    /// Opens a session to the device of a verified `bundle` (the initiator's
    /// side of the handshake). The first messages it encrypts are pre-key
    /// messages that let the other device open its side.
    pub fn initiate<R: CryptoRng + ?Sized>(
        rng: &mut R,
        local: &IdentityKeyPair,
        bundle: &PreKeyBundle,
    ) -> Result<Self> {
        let remote = bundle.identity();
        let signed = bundle.signed_prekeys();
        let (base, base_key) = LocalRatchet::generate(rng);
        let mut ikm = HandshakeInput::new();
        ikm.push(agree(local.dh_secret(), signed.dh_key())?.as_slice());
        ikm.push(agree(&base.secret, remote.dh_key())?.as_slice());
        ikm.push(agree(&base.secret, signed.dh_key())?.as_slice());
        if let Some(one_time) = bundle.one_time_prekey() {
            ikm.push(agree(&base.secret, &one_time.key)?.as_slice());
        }
        let (kem_bytes, kem_secret) = bundle.kem_key().encapsulate(rng);
        ikm.push(kem_secret.as_slice());
        let (root, chain_key) = kdf::handshake(
            ikm.as_slice(),
            &handshake_info(local.public(), remote, signed.dh_key(), &base_key),
        );
        let one_time_prekey_id = bundle.one_time_prekey().map(|k| k.id);
        let digest = handshake_digest(
            local.public(),
            signed.id(),
            one_time_prekey_id,
            &base_key,
            &kem_bytes,
        );
        Ok(Self {
            inner: Box::new(Inner {
                local: local.public().clone(),
                remote: remote.clone(),
                base_key,
                initiator: true,
                ratchet: Ratchet {
                    root,
                    sending: Some(Chain {
                        ratchet_key: base_key,
                        key: chain_key,
                        index: 0,
                    }),
                    local: Some(base),
                    previous_sending_count: 0,
                    remote: None,
                    receiving: None,
                    skipped: VecDeque::new(),
                    previous_remotes: VecDeque::new(),
                },
                pending: Some(Pending {
                    signed_prekey_id: signed.id(),
                    one_time_prekey_id,
                    kem_ciphertext: kem_bytes,
                }),
                handshake_digest: digest,
            }),
        })
    }

    /// Opens the responder's side of a session from a pre-key message and
    /// decrypts the message it carries.
    ///
    /// The caller looks up the prekeys the message names
    /// ([`PreKeyMessage::signed_prekey_id`], [`PreKeyMessage::one_time_prekey_id`])
    /// and, only once this succeeds, deletes the one-time prekey so that it is
    /// never used twice. It should also check that it has no session with
    /// this [`PreKeyMessage::base_key`] yet, and otherwise give the message to
    /// that session's [`Session::decrypt`].
    pub fn accept(
        local: &IdentityKeyPair,
        signed: &SignedPreKeyPair,
        one_time: Option<&OneTimePreKeyPair>,
        message: &PreKeyMessage,
    ) -> Result<(Self, Vec<u8>)> {
        if message.signed_prekey_id != signed.id()
            || message.one_time_prekey_id != one_time.map(OneTimePreKeyPair::id)
        {
            return Err(Error::PreKeyMismatch);
        }
        let remote = &message.identity;
        let mut ikm = HandshakeInput::new();
        ikm.push(agree(signed.dh_secret(), remote.dh_key())?.as_slice());
        ikm.push(agree(local.dh_secret(), &message.base_key)?.as_slice());
        ikm.push(agree(signed.dh_secret(), &message.base_key)?.as_slice());
        if let Some(one_time) = one_time {
            ikm.push(agree(one_time.secret(), &message.base_key)?.as_slice());
        }
        let kem_secret = signed.kem().decapsulate(&message.kem_ciphertext);
        ikm.push(kem_secret.as_slice());
        let (root, chain_key) = kdf::handshake(
            ikm.as_slice(),
            &handshake_info(
                remote,
                local.public(),
                signed.public().dh_key(),
                &message.base_key,
            ),
        );
        let mut session = Self {
            inner: Box::new(Inner {
                local: local.public().clone(),
                remote: remote.clone(),
                base_key: message.base_key,
                initiator: false,
                ratchet: Ratchet {
                    root,
                    local: None,
                    sending: None,
                    previous_sending_count: 0,
                    remote: Some(message.base_key),
                    receiving: Some(Chain {
                        ratchet_key: message.base_key,
                        key: chain_key,
                        index: 0,
                    }),
                    skipped: VecDeque::new(),
                    previous_remotes: VecDeque::new(),
                },
                pending: None,
                handshake_digest: message.handshake_digest(),
            }),
        };
        let plaintext = session.decrypt_ratchet(&message.message)?;
        Ok((session, plaintext))
    }

    /// Encrypts one message. Returns the bytes to send: a pre-key message
    /// until the initiator has received a reply, a ratchet message after.
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let inner = &mut *self.inner;
        let ad = ad_prefix(&inner.local, &inner.remote);
        let mut out = Vec::new();
        inner.ratchet.encrypt(rng, &ad, plaintext, &mut out)?;
        match &inner.pending {
            None => Ok(out),
            Some(pending) => Ok(PreKeyMessage {
                identity: inner.local.clone(),
                signed_prekey_id: pending.signed_prekey_id,
                one_time_prekey_id: pending.one_time_prekey_id,
                base_key: inner.base_key,
                kem_ciphertext: pending.kem_ciphertext.clone(),
                message: out,
            }
            .encode()),
        }
    }

    /// Decrypts a message of this session, ratchet or pre-key.
    pub fn decrypt(&mut self, bytes: &[u8]) -> Result<Vec<u8>> {
        match MessageKind::of(bytes)? {
            MessageKind::Ratchet => self.decrypt_ratchet(bytes),
            MessageKind::PreKey => {
                // The peer's identity was verified when the session was
                // made: a pre-key message carrying it is not verified again.
                let message =
                    PreKeyMessage::decode_known(bytes, core::slice::from_ref(&self.inner.remote))?;
                let same_handshake: bool = message
                    .handshake_digest()
                    .ct_eq(&self.inner.handshake_digest)
                    .into();
                if self.inner.initiator || !same_handshake {
                    return Err(Error::WrongSession);
                }
                self.decrypt_ratchet(&message.message)
            }
        }
    }

    fn decrypt_ratchet(&mut self, bytes: &[u8]) -> Result<Vec<u8>> {
        let inner = &mut *self.inner;
        let ad = ad_prefix(&inner.remote, &inner.local);
        let plaintext = inner.ratchet.decrypt(&ad, bytes)?;
        // The peer has the session: no need to wrap messages any more.
        inner.pending = None;
        Ok(plaintext)
    }

    /// The other device's identity.
    pub fn remote_identity(&self) -> &DeviceIdentity {
        &self.inner.remote
    }

    /// This device's identity.
    pub fn local_identity(&self) -> &DeviceIdentity {
        &self.inner.local
    }

    /// The initiator's base key: names this session on both devices.
    pub fn base_key(&self) -> &[u8; 32] {
        &self.inner.base_key
    }

    /// Whether this device opened the session.
    pub fn is_initiator(&self) -> bool {
        self.inner.initiator
    }

    /// How many skipped message keys the session holds.
    pub fn skipped_key_count(&self) -> usize {
        self.inner.ratchet.skipped.len()
    }

    /// Serializes the session (`0x04 || protobuf SessionState`). The bytes
    /// hold every secret of the session: store them encrypted.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let state = self.to_proto();
        let mut out = Zeroizing::new(Vec::with_capacity(1 + state.encoded_len()));
        out.push(format::SESSION_STATE);
        state.encode_raw(&mut *out);
        out
    }

    /// Restores a session from [`Session::to_bytes`]. Unknown format bytes are
    /// refused with [`Error::UnsupportedFormat`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let body = expect_format(bytes, format::SESSION_STATE)?;
        Self::from_proto(pb::SessionState::decode(body)?)
    }

    fn to_proto(&self) -> pb::SessionState {
        let inner = &*self.inner;
        let r = &inner.ratchet;
        let chain = |c: &Chain| pb::ChainState {
            ratchet_key: c.ratchet_key.to_vec(),
            chain_key: c.key.0.to_vec(),
            index: c.index,
        };
        pb::SessionState {
            local_identity: Some(inner.local.to_proto()),
            remote_identity: Some(inner.remote.to_proto()),
            base_key: inner.base_key.to_vec(),
            initiator: inner.initiator,
            root_key: r.root.0.to_vec(),
            local_ratchet_secret: r
                .local
                .as_ref()
                .map(|l| l.secret.to_bytes().to_vec())
                .unwrap_or_default(),
            sending_chain: r.sending.as_ref().map(chain),
            previous_sending_count: r.previous_sending_count,
            remote_ratchet_key: r.remote.map(|k| k.to_vec()).unwrap_or_default(),
            receiving_chain: r.receiving.as_ref().map(chain),
            skipped_keys: r
                .skipped
                .iter()
                .map(|k| pb::SkippedKey {
                    ratchet_key: k.ratchet_key.to_vec(),
                    index: k.index,
                    message_key: k.key.0.to_vec(),
                })
                .collect(),
            pending_prekey: inner.pending.as_ref().map(|p| pb::PendingPreKey {
                signed_prekey_id: p.signed_prekey_id,
                one_time_prekey_id: p.one_time_prekey_id,
                kem_ciphertext: p.kem_ciphertext.to_vec(),
            }),
            previous_remote_ratchet_keys: r.previous_remotes.iter().map(|k| k.to_vec()).collect(),
            handshake_digest: inner.handshake_digest.to_vec(),
        }
    }

    fn from_proto(mut s: pb::SessionState) -> Result<Self> {
        let chain = |c: &pb::ChainState| -> Result<Chain> {
            Ok(Chain {
                ratchet_key: fixed::<32>("chain.ratchet_key", &c.ratchet_key)?,
                key: ChainKey(fixed::<32>("chain.chain_key", &c.chain_key)?),
                index: c.index,
            })
        };
        let local_ratchet = match s.local_ratchet_secret.len() {
            0 => None,
            _ => Some(LocalRatchet {
                secret: StaticSecret::from(fixed::<32>(
                    "local_ratchet_secret",
                    &s.local_ratchet_secret,
                )?),
            }),
        };
        let remote = match s.remote_ratchet_key.len() {
            0 => None,
            _ => Some(fixed::<32>("remote_ratchet_key", &s.remote_ratchet_key)?),
        };
        let mut skipped = VecDeque::with_capacity(s.skipped_keys.len());
        for k in &s.skipped_keys {
            skipped.push_back(SkippedKey {
                ratchet_key: fixed::<32>("skipped.ratchet_key", &k.ratchet_key)?,
                index: k.index,
                key: MessageKey(fixed::<32>("skipped.message_key", &k.message_key)?),
            });
        }
        let previous_remotes = s
            .previous_remote_ratchet_keys
            .iter()
            .map(|k| fixed::<32>("previous_remote_ratchet_key", k))
            .collect::<Result<VecDeque<_>>>()?;
        let pending = match s.pending_prekey.as_ref() {
            None => None,
            Some(p) => Some(Pending {
                signed_prekey_id: p.signed_prekey_id,
                one_time_prekey_id: p.one_time_prekey_id,
                kem_ciphertext: Box::new(fixed::<KEM_CIPHERTEXT_LEN>(
                    "pending.kem_ciphertext",
                    &p.kem_ciphertext,
                )?),
            }),
        };
        let local = DeviceIdentity::from_trusted_proto(
            s.local_identity
                .as_ref()
                .ok_or(DecodeError::MissingField("session.local_identity"))?,
        )?;
        let remote_identity = DeviceIdentity::from_trusted_proto(
            s.remote_identity
                .as_ref()
                .ok_or(DecodeError::MissingField("session.remote_identity"))?,
        )?;
        let ratchet = Ratchet {
            root: RootKey(fixed::<32>("root_key", &s.root_key)?),
            local: local_ratchet,
            sending: s.sending_chain.as_ref().map(chain).transpose()?,
            previous_sending_count: s.previous_sending_count,
            remote,
            receiving: s.receiving_chain.as_ref().map(chain).transpose()?,
            skipped,
            previous_remotes,
        };
        let base_key = fixed::<32>("base_key", &s.base_key)?;
        let handshake_digest = fixed::<32>("handshake_digest", &s.handshake_digest)?;
        let initiator = s.initiator;
        // `s` zeroizes its copies of the secrets when dropped here.
        s.skipped_keys.clear();
        Ok(Self {
            inner: Box::new(Inner {
                local,
                remote: remote_identity,
                base_key,
                initiator,
                ratchet,
                pending,
                handshake_digest,
            }),
        })
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Inner {
            local,
            remote,
            base_key: _,
            initiator,
            ratchet,
            pending,
            handshake_digest: _,
        } = &*self.inner;
        f.debug_struct("Session")
            .field("local", local)
            .field("remote", remote)
            .field("initiator", initiator)
            .field("awaiting_reply", &pending.is_some())
            .field("skipped_keys", &ratchet.skipped.len())
            .finish_non_exhaustive()
    }
}

fn ad_prefix(sender: &DeviceIdentity, receiver: &DeviceIdentity) -> AdPrefix {
    let mut ad = [0u8; 64];
    ad[..32].copy_from_slice(sender.signing_key());
    ad[32..].copy_from_slice(receiver.signing_key());
    ad
}

/// `info = "Ward v1 handshake" || initiator identity || responder identity ||
/// signed prekey || base key`, identities as signing key then X25519 key.
fn handshake_info(
    initiator: &DeviceIdentity,
    responder: &DeviceIdentity,
    signed_prekey: &[u8; 32],
    base_key: &[u8; 32],
) -> [u8; kdf::LABEL_HANDSHAKE.len() + 6 * 32] {
    let mut info = [0u8; kdf::LABEL_HANDSHAKE.len() + 6 * 32];
    let (label, rest) = info.split_at_mut(kdf::LABEL_HANDSHAKE.len());
    label.copy_from_slice(kdf::LABEL_HANDSHAKE);
    for (slot, part) in rest.chunks_exact_mut(32).zip([
        initiator.signing_key(),
        initiator.dh_key(),
        responder.signing_key(),
        responder.dh_key(),
        signed_prekey,
        base_key,
    ]) {
        slot.copy_from_slice(part);
    }
    info
}

/// `IKM = 0xFF^32 || DH1 || DH2 || DH3 [|| DH4] || SS`.
struct HandshakeInput {
    bytes: Zeroizing<Vec<u8>>,
}

impl HandshakeInput {
    fn new() -> Self {
        // Sized for the longest input, so it never reallocates and leaves a
        // copy of secrets behind.
        let mut bytes = Zeroizing::new(Vec::with_capacity(32 * 6));
        bytes.extend_from_slice(&[0xff; 32]);
        Self { bytes }
    }

    fn push(&mut self, part: &[u8]) {
        self.bytes.extend_from_slice(part);
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes
    }
}
