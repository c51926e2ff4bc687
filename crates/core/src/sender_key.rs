//! Sender keys: one symmetric chain per (group, sending device), with an
//! Ed25519 signature on every message (spec/13-sender-keys.md).
//!
//! A device encrypts a group message once with its own [`SenderChain`]; every
//! other member reads it with a [`ReceivedChain`] built from the chain's
//! [`SenderKeyDistribution`], which the sender hands to each member inside
//! their pairwise session. The pairwise session authenticates who a chain
//! belongs to; the chain's signature then authenticates each message, so a
//! member holding the chain key can read but not forge.
//!
//! As in the ratchet, decryption is a transaction: a message that fails for
//! any reason leaves the chain exactly as it was.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use ward_proto::Message as _;
use ward_proto::core_v1 as pb;
use zeroize::{Zeroize, Zeroizing};

use crate::encoding::{expect_format, fixed, format, put_varint, take_varint};
use crate::error::{DecodeError, Error, Result};
use crate::kdf::{ChainKey, MessageKey};
use crate::limits::{MAX_PLAINTEXT_LEN, MAX_SENDER_SKIP, MAX_SENDER_SKIPPED_KEYS};

/// Names a group: 16 bytes the group's creator draws at random.
pub type GroupId = [u8; 16];
/// Names one sender chain: 16 random bytes drawn when the chain starts.
pub type ChainId = [u8; 16];

const TAG_LEN: usize = 16;
const SIGNATURE_LEN: usize = 64;
/// Format byte, group id, chain id.
const FIXED_HEADER_LEN: usize = 1 + 16 + 16;
/// A message with an empty plaintext and a one-byte iteration.
const MIN_MESSAGE_LEN: usize = FIXED_HEADER_LEN + 1 + TAG_LEN + SIGNATURE_LEN;

/// When a sender starts a new chain even though no one left the group
/// (spec/13, "Rotation").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// A chain that has sent this many messages is replaced.
    pub max_messages: u32,
    /// A chain older than this many seconds is replaced.
    pub max_age_secs: u64,
}

impl Default for RotationPolicy {
    /// 1,000 messages or 7 days: a stolen chain key reads at most that much
    /// of what follows, while a busy care team redistributes a few times a
    /// week, one pairwise message per member device each time.
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_age_secs: 7 * 24 * 60 * 60,
        }
    }
}

/// This device's own chain in one group: it encrypts and signs.
pub struct SenderChain {
    group_id: GroupId,
    chain_id: ChainId,
    iteration: u32,
    key: ChainKey,
    signing: SigningKey,
    created_at: u64,
}

/// Another device's chain in one group, as learnt from its distribution.
pub struct ReceivedChain {
    group_id: GroupId,
    chain_id: ChainId,
    /// The iteration of the next message `key` derives.
    iteration: u32,
    key: ChainKey,
    verifying: VerifyingKey,
    /// Keys of messages skipped over, oldest first.
    skipped: VecDeque<(u32, MessageKey)>,
}

/// What a member needs to read a chain from its current iteration on. It
/// holds the chain key: it travels only inside a pairwise session.
pub struct SenderKeyDistribution {
    group_id: GroupId,
    chain_id: ChainId,
    iteration: u32,
    key: ChainKey,
    verifying: VerifyingKey,
}

/// A decoded group message: its ids are readable before any key is looked
/// up, so the caller can find the chain (or ask for it).
#[derive(Debug, Clone, Copy)]
pub struct SenderKeyMessage<'a> {
    group_id: GroupId,
    chain_id: ChainId,
    iteration: u32,
    /// Everything up to and including the iteration: the AEAD's associated data.
    header: &'a [u8],
    /// Ciphertext then tag.
    sealed: &'a [u8],
    /// Everything the signature covers.
    signed: &'a [u8],
    signature: [u8; SIGNATURE_LEN],
}

impl SenderChain {
    /// Starts a new chain for `group_id`. Draws 16 bytes of chain id, 32 of
    /// chain key and 32 of Ed25519 seed, in that order. `created_at` (seconds
    /// since the Unix epoch) only feeds [`Self::is_due_for_rotation`].
    pub fn generate<R: CryptoRng + ?Sized>(
        rng: &mut R,
        group_id: GroupId,
        created_at: u64,
    ) -> Self {
        let mut chain_id = [0u8; 16];
        rng.fill_bytes(&mut chain_id);
        let mut key = ChainKey([0; 32]);
        rng.fill_bytes(&mut key.0);
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut_slice());
        Self {
            group_id,
            chain_id,
            iteration: 0,
            key,
            signing: SigningKey::from_bytes(&seed),
            created_at,
        }
    }

    /// The group this chain belongs to.
    pub fn group_id(&self) -> &GroupId {
        &self.group_id
    }

    /// The chain's name.
    pub fn chain_id(&self) -> &ChainId {
        &self.chain_id
    }

    /// The iteration of the next message: how many this chain has sent.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// When the chain was started, as given to [`Self::generate`].
    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    /// Whether `policy` wants a new chain before the next message at `now`.
    pub fn is_due_for_rotation(&self, policy: &RotationPolicy, now: u64) -> bool {
        self.iteration >= policy.max_messages
            || now.saturating_sub(self.created_at) >= policy.max_age_secs
    }

    /// The distribution at the current iteration: a member given it reads
    /// every message from the next one on, and none sent before.
    pub fn distribution(&self) -> SenderKeyDistribution {
        SenderKeyDistribution {
            group_id: self.group_id,
            chain_id: self.chain_id,
            iteration: self.iteration,
            key: self.key.clone(),
            verifying: self.signing.verifying_key(),
        }
    }

    /// Encrypts and signs `plaintext` as the chain's next message.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(Error::MessageTooLarge);
        }
        if self.iteration == u32::MAX {
            return Err(Error::ChainExhausted);
        }
        let (message_key, next) = self.key.sender_step();
        let mut out =
            Vec::with_capacity(FIXED_HEADER_LEN + 5 + plaintext.len() + TAG_LEN + SIGNATURE_LEN);
        out.push(format::SENDER_KEY_MESSAGE);
        out.extend_from_slice(&self.group_id);
        out.extend_from_slice(&self.chain_id);
        put_varint(&mut out, self.iteration);
        let header_len = out.len();
        out.extend_from_slice(plaintext);
        let keys = message_key.expand_sender();
        let (header, body) = out.split_at_mut(header_len);
        let tag = ChaCha20Poly1305::new(&keys.key.into())
            .encrypt_inout_detached(&keys.nonce.into(), header, body.into())
            .map_err(|_| Error::MessageTooLarge)?;
        out.extend_from_slice(&tag);
        let signature = self.signing.sign(&out);
        out.extend_from_slice(&signature.to_bytes());
        self.key = next;
        self.iteration += 1;
        Ok(out)
    }

    /// Serializes the chain: `0x0a || SenderChainState`, with the seed.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let seed = Zeroizing::new(self.signing.to_bytes());
        let state = pb::SenderChainState {
            group_id: self.group_id.to_vec(),
            chain_id: self.chain_id.to_vec(),
            iteration: self.iteration,
            chain_key: self.key.0.to_vec(),
            signing_key: self.signing.verifying_key().to_bytes().to_vec(),
            signing_seed: seed.to_vec(),
            created_at: self.created_at,
            skipped_keys: Vec::new(),
        };
        encode_state(&state)
    }

    /// Restores a chain from [`Self::to_bytes`]. The seed is required, and
    /// the stored verifying key must be the seed's.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let state = decode_state(bytes)?;
        if state.signing_seed.is_empty() {
            return Err(DecodeError::MissingField("signing_seed").into());
        }
        if !state.skipped_keys.is_empty() {
            return Err(DecodeError::WrongLength {
                field: "skipped_keys",
                expected: 0,
                found: state.skipped_keys.len(),
            }
            .into());
        }
        let common = Common::from_state(&state)?;
        let seed = Zeroizing::new(fixed::<32>("signing_seed", &state.signing_seed)?);
        let signing = SigningKey::from_bytes(&seed);
        if signing.verifying_key() != common.verifying {
            return Err(DecodeError::InvalidKey("signing_key").into());
        }
        Ok(Self {
            group_id: common.group_id,
            chain_id: common.chain_id,
            iteration: state.iteration,
            key: common.key,
            signing,
            created_at: state.created_at,
        })
    }
}

impl ReceivedChain {
    /// The chain a distribution describes, reading from its iteration on.
    pub fn from_distribution(distribution: &SenderKeyDistribution) -> Self {
        Self {
            group_id: distribution.group_id,
            chain_id: distribution.chain_id,
            iteration: distribution.iteration,
            key: distribution.key.clone(),
            verifying: distribution.verifying,
            skipped: VecDeque::new(),
        }
    }

    /// The group this chain belongs to.
    pub fn group_id(&self) -> &GroupId {
        &self.group_id
    }

    /// The chain's name.
    pub fn chain_id(&self) -> &ChainId {
        &self.chain_id
    }

    /// The iteration of the next message the chain key derives.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// How many skipped message keys the chain holds.
    pub fn skipped_len(&self) -> usize {
        self.skipped.len()
    }

    /// Verifies and decrypts `message`. Checks, in order: the ids
    /// ([`Error::WrongChain`]), the signature ([`Error::DecryptionFailed`]),
    /// the iteration ([`Error::DuplicateOrExpired`], [`Error::TooFarAhead`]),
    /// then the AEAD tag ([`Error::DecryptionFailed`]). Any failure leaves
    /// the chain unchanged.
    pub fn decrypt(&mut self, message: &SenderKeyMessage<'_>) -> Result<Vec<u8>> {
        if message.group_id != self.group_id || message.chain_id != self.chain_id {
            return Err(Error::WrongChain);
        }
        self.verifying
            .verify_strict(message.signed, &Signature::from_bytes(&message.signature))
            .map_err(|_| Error::DecryptionFailed)?;
        let target = message.iteration;
        if target < self.iteration {
            let position = self
                .skipped
                .iter()
                .position(|(iteration, _)| *iteration == target)
                .ok_or(Error::DuplicateOrExpired)?;
            let plaintext = open(&self.skipped[position].1, message)?;
            self.skipped.remove(position);
            return Ok(plaintext);
        }
        if target - self.iteration > MAX_SENDER_SKIP || target == u32::MAX {
            return Err(Error::TooFarAhead);
        }
        let mut key = self.key.clone();
        let mut new_skipped = Vec::new();
        for iteration in self.iteration..target {
            let (message_key, next) = key.sender_step();
            new_skipped.push((iteration, message_key));
            key = next;
        }
        let (message_key, next) = key.sender_step();
        let plaintext = open(&message_key, message)?;
        self.key = next;
        self.iteration = target + 1;
        self.skipped.extend(new_skipped);
        while self.skipped.len() > MAX_SENDER_SKIPPED_KEYS {
            self.skipped.pop_front();
        }
        Ok(plaintext)
    }

    /// Serializes the chain: `0x0a || SenderChainState`, without a seed.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let state = pb::SenderChainState {
            group_id: self.group_id.to_vec(),
            chain_id: self.chain_id.to_vec(),
            iteration: self.iteration,
            chain_key: self.key.0.to_vec(),
            signing_key: self.verifying.to_bytes().to_vec(),
            signing_seed: Vec::new(),
            created_at: 0,
            skipped_keys: self
                .skipped
                .iter()
                .map(|(iteration, key)| pb::SenderSkippedKey {
                    iteration: *iteration,
                    message_key: key.0.to_vec(),
                })
                .collect(),
        };
        encode_state(&state)
    }

    /// Restores a chain from [`Self::to_bytes`]. A state with a seed is one
    /// of our own chains and is refused here.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let state = decode_state(bytes)?;
        if !state.signing_seed.is_empty() {
            return Err(DecodeError::WrongLength {
                field: "signing_seed",
                expected: 0,
                found: state.signing_seed.len(),
            }
            .into());
        }
        if state.skipped_keys.len() > MAX_SENDER_SKIPPED_KEYS {
            return Err(DecodeError::WrongLength {
                field: "skipped_keys",
                expected: MAX_SENDER_SKIPPED_KEYS,
                found: state.skipped_keys.len(),
            }
            .into());
        }
        let common = Common::from_state(&state)?;
        let mut skipped = VecDeque::with_capacity(state.skipped_keys.len());
        for k in &state.skipped_keys {
            let key = fixed::<32>("skipped.message_key", &k.message_key)?;
            skipped.push_back((k.iteration, MessageKey(key)));
        }
        Ok(Self {
            group_id: common.group_id,
            chain_id: common.chain_id,
            iteration: state.iteration,
            key: common.key,
            verifying: common.verifying,
            skipped,
        })
    }
}

impl SenderKeyDistribution {
    /// The group of the chain.
    pub fn group_id(&self) -> &GroupId {
        &self.group_id
    }

    /// The chain's name.
    pub fn chain_id(&self) -> &ChainId {
        &self.chain_id
    }

    /// The first iteration a member given this distribution can read.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The chain's Ed25519 verifying key.
    pub fn signing_key(&self) -> [u8; 32] {
        self.verifying.to_bytes()
    }

    /// `0x09 || SenderKeyDistribution`.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let message = pb::SenderKeyDistribution {
            group_id: self.group_id.to_vec(),
            chain_id: self.chain_id.to_vec(),
            iteration: self.iteration,
            chain_key: self.key.0.to_vec(),
            signing_key: self.verifying.to_bytes().to_vec(),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(1 + message.encoded_len()));
        out.push(format::SENDER_KEY_DISTRIBUTION);
        message.encode_raw(&mut *out);
        out
    }

    /// Decodes and checks a distribution: lengths, then the verifying key
    /// (it must decompress and must not have small order).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let body = expect_format(bytes, format::SENDER_KEY_DISTRIBUTION)?;
        let message = pb::SenderKeyDistribution::decode(body)?;
        let group_id = fixed::<16>("group_id", &message.group_id)?;
        let chain_id = fixed::<16>("chain_id", &message.chain_id)?;
        let key = ChainKey(fixed::<32>("chain_key", &message.chain_key)?);
        let verifying = verifying_key(&message.signing_key)?;
        Ok(Self {
            group_id,
            chain_id,
            iteration: message.iteration,
            key,
            verifying,
        })
    }
}

impl<'a> SenderKeyMessage<'a> {
    /// Splits a group message into its parts, checking only its layout:
    /// `0x08 || group_id (16) || chain_id (16) || varint(iteration) ||
    /// ciphertext || tag (16) || signature (64)`.
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        let rest = expect_format(bytes, format::SENDER_KEY_MESSAGE)?;
        if bytes.len() < MIN_MESSAGE_LEN {
            return Err(DecodeError::Truncated.into());
        }
        let group_id = fixed::<16>("group_id", &rest[..16])?;
        let chain_id = fixed::<16>("chain_id", &rest[16..32])?;
        let (iteration, after) = take_varint(&rest[32..])?;
        if after.len() < TAG_LEN + SIGNATURE_LEN {
            return Err(DecodeError::Truncated.into());
        }
        let header_len = bytes.len() - after.len();
        let signed_len = bytes.len() - SIGNATURE_LEN;
        let signature = fixed::<SIGNATURE_LEN>("signature", &bytes[signed_len..])?;
        Ok(Self {
            group_id,
            chain_id,
            iteration,
            header: &bytes[..header_len],
            sealed: &bytes[header_len..signed_len],
            signed: &bytes[..signed_len],
            signature,
        })
    }

    /// The group the message is for.
    pub fn group_id(&self) -> &GroupId {
        &self.group_id
    }

    /// The chain that encrypted it.
    pub fn chain_id(&self) -> &ChainId {
        &self.chain_id
    }

    /// Its iteration in that chain.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }
}

/// The fields both kinds of chain state share, checked.
struct Common {
    group_id: GroupId,
    chain_id: ChainId,
    key: ChainKey,
    verifying: VerifyingKey,
}

impl Common {
    fn from_state(state: &pb::SenderChainState) -> Result<Self> {
        Ok(Self {
            group_id: fixed::<16>("group_id", &state.group_id)?,
            chain_id: fixed::<16>("chain_id", &state.chain_id)?,
            key: ChainKey(fixed::<32>("chain_key", &state.chain_key)?),
            verifying: verifying_key(&state.signing_key)?,
        })
    }
}

fn encode_state(state: &pb::SenderChainState) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(1 + state.encoded_len()));
    out.push(format::SENDER_CHAIN_STATE);
    state.encode_raw(&mut *out);
    out
}

fn decode_state(bytes: &[u8]) -> Result<pb::SenderChainState> {
    let body = expect_format(bytes, format::SENDER_CHAIN_STATE)?;
    Ok(pb::SenderChainState::decode(body)?)
}

fn verifying_key(bytes: &[u8]) -> Result<VerifyingKey> {
    let bytes = fixed::<32>("signing_key", bytes)?;
    let key =
        VerifyingKey::from_bytes(&bytes).map_err(|_| DecodeError::InvalidKey("signing_key"))?;
    if key.is_weak() {
        return Err(DecodeError::InvalidKey("signing_key").into());
    }
    Ok(key)
}

fn open(message_key: &MessageKey, message: &SenderKeyMessage<'_>) -> Result<Vec<u8>> {
    let keys = message_key.expand_sender();
    let (ciphertext, tag) = message.sealed.split_at(message.sealed.len() - TAG_LEN);
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| Error::DecryptionFailed)?;
    let mut plaintext = ciphertext.to_vec();
    let opened = ChaCha20Poly1305::new(&keys.key.into()).decrypt_inout_detached(
        &keys.nonce.into(),
        message.header,
        plaintext.as_mut_slice().into(),
        &tag.into(),
    );
    if opened.is_err() {
        plaintext.zeroize();
        return Err(Error::DecryptionFailed);
    }
    Ok(plaintext)
}

impl fmt::Debug for SenderChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderChain")
            .field("iteration", &self.iteration)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ReceivedChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedChain")
            .field("iteration", &self.iteration)
            .field("skipped", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SenderKeyDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderKeyDistribution")
            .field("iteration", &self.iteration)
            .finish_non_exhaustive()
    }
}
