//! The Double Ratchet (spec/05-double-ratchet.md).
//!
//! Decryption is a transaction: [`Ratchet::decrypt`] computes every change it
//! would make on the side, opens the message with the resulting key, and only
//! after the tag verifies commits the changes. A message that fails for any
//! reason leaves the state exactly as it was.
//!
//! The sending half of a DH ratchet step is taken lazily, on the next encrypt
//! after a new remote ratchet key arrives, so a device that only reads pays
//! one X25519 per step instead of two plus a key generation.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use rand_core::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};
use crate::kdf::{ChainKey, MessageKey, RootKey};
use crate::limits::{
    MAX_PLAINTEXT_LEN, MAX_PREVIOUS_REMOTE_RATCHETS, MAX_SKIP, MAX_SKIPPED_PER_CHAIN,
    MAX_SKIPPED_PER_SESSION,
};
use crate::message::{Header, MAX_HEADER_LEN, RatchetMessage, TAG_LEN};

/// Both devices' Ed25519 keys, sender first: the start of every message's
/// associated data.
pub(crate) type AdPrefix = [u8; 64];

/// Our current ratchet secret. Its public half is computed once, when it is
/// generated, and lives on as the sending chain's name (`Chain::ratchet_key`):
/// neither encrypting nor restoring a session repeats that base-point
/// multiplication.
pub(crate) struct LocalRatchet {
    pub(crate) secret: StaticSecret,
}

impl LocalRatchet {
    /// A fresh ratchet key pair: the secret and its public key.
    pub(crate) fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> (Self, [u8; 32]) {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut_slice());
        let secret = StaticSecret::from(*bytes);
        let public = PublicKey::from(&secret).to_bytes();
        (Self { secret }, public)
    }
}

/// A sending or receiving chain, named by the ratchet public key it belongs to.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Chain {
    pub(crate) ratchet_key: [u8; 32],
    pub(crate) key: ChainKey,
    /// The counter of the next message in the chain.
    pub(crate) index: u32,
}

/// A message key kept for a message that has not arrived yet.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct SkippedKey {
    pub(crate) ratchet_key: [u8; 32],
    pub(crate) index: u32,
    pub(crate) key: MessageKey,
}

/// The Double Ratchet state of one session.
pub(crate) struct Ratchet {
    pub(crate) root: RootKey,
    pub(crate) local: Option<LocalRatchet>,
    /// `None` after a new remote ratchet key: the next encrypt steps first.
    pub(crate) sending: Option<Chain>,
    pub(crate) previous_sending_count: u32,
    pub(crate) remote: Option<[u8; 32]>,
    pub(crate) receiving: Option<Chain>,
    /// Oldest first.
    pub(crate) skipped: VecDeque<SkippedKey>,
    /// Remote ratchet keys we have moved past, oldest first: a message under
    /// one of them that has no skipped key is a replay, not a new step.
    pub(crate) previous_remotes: VecDeque<[u8; 32]>,
}

/// What a successful decryption will change, computed before it is known
/// whether the message authenticates.
struct Plan {
    message_key: MessageKey,
    skipped_index: Option<usize>,
    new_root: Option<RootKey>,
    receiving: Option<Chain>,
    new_skipped: Vec<SkippedKey>,
}

impl Ratchet {
    /// Encrypts `plaintext`, appending the encoded ratchet message to `out`.
    pub(crate) fn encrypt<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        ad_prefix: &AdPrefix,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(Error::MessageTooLarge);
        }
        if self.sending.is_none() {
            self.step_sending(rng)?;
        }
        let Some(chain) = self.sending.as_mut() else {
            return Err(Error::NotReady);
        };
        if chain.index == u32::MAX {
            return Err(Error::ChainExhausted);
        }
        let (message_key, next) = chain.key.step();
        let header = Header {
            ratchet_key: chain.ratchet_key,
            counter: chain.index,
            previous_counter: self.previous_sending_count,
        };
        out.reserve(MAX_HEADER_LEN + plaintext.len() + TAG_LEN);
        let start = out.len();
        let header_len = header.encode_into(out);
        out.extend_from_slice(plaintext);
        let (header_bytes, body) = out[start..].split_at_mut(header_len);
        let tag = seal(&message_key, ad_prefix, header_bytes, body)?;
        out.extend_from_slice(&tag);
        chain.key = next;
        chain.index += 1;
        Ok(())
    }

    /// The sending half of a DH ratchet step: a new ratchet key and chain.
    fn step_sending<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) -> Result<()> {
        let remote = self.remote.ok_or(Error::NotReady)?;
        let (local, local_public) = LocalRatchet::generate(rng);
        let shared = agree(&local.secret, &remote)?;
        let (root, chain_key) = self.root.ratchet(&shared);
        self.root = root;
        self.sending = Some(Chain {
            ratchet_key: local_public,
            key: chain_key,
            index: 0,
        });
        self.local = Some(local);
        Ok(())
    }

    /// Decrypts an encoded ratchet message; on any error nothing changes.
    pub(crate) fn decrypt(&mut self, ad_prefix: &AdPrefix, bytes: &[u8]) -> Result<Vec<u8>> {
        let message = RatchetMessage::decode(bytes)?;
        let plan = self.plan(&message.header)?;
        let plaintext = open(
            &plan.message_key,
            ad_prefix,
            message.header_bytes,
            message.sealed,
        )?;
        self.commit(plan, &message.header);
        Ok(plaintext)
    }

    fn plan(&self, header: &Header) -> Result<Plan> {
        // In-order messages of the current chain: the common case, no search.
        if let Some(chain) = self.receiving.as_ref()
            && chain.ratchet_key == header.ratchet_key
            && header.counter >= chain.index
        {
            let (message_key, receiving, new_skipped) = advance(chain, header.counter)?;
            return Ok(Plan {
                message_key,
                skipped_index: None,
                new_root: None,
                receiving: Some(receiving),
                new_skipped,
            });
        }
        if let Some(at) = self
            .skipped
            .iter()
            .position(|k| k.index == header.counter && k.ratchet_key == header.ratchet_key)
        {
            return Ok(Plan {
                message_key: self.skipped[at].key.clone(),
                skipped_index: Some(at),
                new_root: None,
                receiving: None,
                new_skipped: Vec::new(),
            });
        }
        let known_chain = self
            .receiving
            .as_ref()
            .is_some_and(|c| c.ratchet_key == header.ratchet_key)
            || self.previous_remotes.contains(&header.ratchet_key)
            || self
                .sending
                .as_ref()
                .is_some_and(|c| c.ratchet_key == header.ratchet_key);
        if known_chain {
            return Err(Error::DuplicateOrExpired);
        }

        // A new remote ratchet key: a DH ratchet step.
        let local = self.local.as_ref().ok_or(Error::NotReady)?;
        if header.counter > MAX_SKIP {
            return Err(Error::TooFarAhead);
        }
        // Keep the keys of what the peer sent in the chain we are leaving:
        // previous_counter is how many messages that chain carried.
        let mut new_skipped = match self.receiving.as_ref() {
            Some(chain) if header.previous_counter > chain.index => {
                skip_to(chain, header.previous_counter)?.1
            }
            _ => Vec::new(),
        };
        let shared = agree(&local.secret, &header.ratchet_key)?;
        let (new_root, chain_key) = self.root.ratchet(&shared);
        let fresh = Chain {
            ratchet_key: header.ratchet_key,
            key: chain_key,
            index: 0,
        };
        let (message_key, receiving, more) = advance(&fresh, header.counter)?;
        new_skipped.extend(more);
        Ok(Plan {
            message_key,
            skipped_index: None,
            new_root: Some(new_root),
            receiving: Some(receiving),
            new_skipped,
        })
    }

    fn commit(&mut self, plan: Plan, header: &Header) {
        let Plan {
            message_key: _,
            skipped_index,
            new_root,
            receiving,
            new_skipped,
        } = plan;
        if let Some(at) = skipped_index {
            self.skipped.remove(at);
        }
        if let Some(root) = new_root {
            self.root = root;
            if let Some(old) = self.receiving.take() {
                self.previous_remotes.push_back(old.ratchet_key);
                if self.previous_remotes.len() > MAX_PREVIOUS_REMOTE_RATCHETS {
                    self.previous_remotes.pop_front();
                }
            }
            self.remote = Some(header.ratchet_key);
            if let Some(sending) = self.sending.take() {
                self.previous_sending_count = sending.index;
            }
        }
        if let Some(chain) = receiving {
            self.receiving = Some(chain);
        }
        self.store_skipped(new_skipped);
    }

    /// Adds skipped keys, evicting the oldest past the per-chain and
    /// per-session bounds.
    fn store_skipped(&mut self, keys: Vec<SkippedKey>) {
        if keys.is_empty() {
            return;
        }
        let mut chains: Vec<[u8; 32]> = Vec::new();
        for key in keys {
            if !chains.contains(&key.ratchet_key) {
                chains.push(key.ratchet_key);
            }
            self.skipped.push_back(key);
        }
        for chain in chains {
            let count = self
                .skipped
                .iter()
                .filter(|k| k.ratchet_key == chain)
                .count();
            let mut excess = count.saturating_sub(MAX_SKIPPED_PER_CHAIN);
            self.skipped.retain(|k| {
                if excess > 0 && k.ratchet_key == chain {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
        while self.skipped.len() > MAX_SKIPPED_PER_SESSION {
            self.skipped.pop_front();
        }
    }
}

/// The keys of indices `chain.index..end`, and the chain positioned at `end`.
fn skip_to(chain: &Chain, end: u32) -> Result<(Chain, Vec<SkippedKey>)> {
    let gap = end.saturating_sub(chain.index);
    if gap > MAX_SKIP {
        return Err(Error::TooFarAhead);
    }
    let mut skipped = Vec::with_capacity(gap as usize);
    let mut key = chain.key.clone();
    for index in chain.index..end {
        let (message_key, next) = key.step();
        skipped.push(SkippedKey {
            ratchet_key: chain.ratchet_key,
            index,
            key: message_key,
        });
        key = next;
    }
    let positioned = Chain {
        ratchet_key: chain.ratchet_key,
        key,
        index: end.max(chain.index),
    };
    Ok((positioned, skipped))
}

/// The message key at `target` (at or after `chain.index`), the chain after
/// it, and the keys skipped on the way.
fn advance(chain: &Chain, target: u32) -> Result<(MessageKey, Chain, Vec<SkippedKey>)> {
    if target == u32::MAX {
        return Err(Error::ChainExhausted);
    }
    let (mut at, skipped) = skip_to(chain, target)?;
    let (message_key, next) = at.key.step();
    at.key = next;
    at.index = target + 1;
    Ok((message_key, at, skipped))
}

/// X25519 (through the Edwards form, see [`crate::dh`]), refusing an
/// all-zero (non-contributory) result.
pub(crate) fn agree(secret: &StaticSecret, public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
    crate::dh::agree(secret, public).ok_or(Error::NonContributoryKey)
}

/// `AD = sender signing key || receiver signing key || header`.
fn associated_data<'a>(
    buffer: &'a mut [u8; 64 + MAX_HEADER_LEN],
    ad_prefix: &AdPrefix,
    header: &[u8],
) -> Result<&'a [u8]> {
    let len = 64 + header.len();
    let slot = buffer.get_mut(..len).ok_or(Error::DecryptionFailed)?;
    slot[..64].copy_from_slice(ad_prefix);
    slot[64..].copy_from_slice(header);
    Ok(slot)
}

fn seal(
    message_key: &MessageKey,
    ad_prefix: &AdPrefix,
    header: &[u8],
    body: &mut [u8],
) -> Result<[u8; TAG_LEN]> {
    let keys = message_key.expand();
    let cipher = ChaCha20Poly1305::new(&keys.key.into());
    let mut buffer = [0u8; 64 + MAX_HEADER_LEN];
    let aad = associated_data(&mut buffer, ad_prefix, header)?;
    let tag = cipher
        .encrypt_inout_detached(&keys.nonce.into(), aad, body.into())
        .map_err(|_| Error::MessageTooLarge)?;
    Ok(tag.into())
}

fn open(
    message_key: &MessageKey,
    ad_prefix: &AdPrefix,
    header: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let keys = message_key.expand();
    let cipher = ChaCha20Poly1305::new(&keys.key.into());
    let mut buffer = [0u8; 64 + MAX_HEADER_LEN];
    let aad = associated_data(&mut buffer, ad_prefix, header)?;
    let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| Error::DecryptionFailed)?;
    let mut plaintext = ciphertext.to_vec();
    cipher
        .decrypt_inout_detached(
            &keys.nonce.into(),
            aad,
            plaintext.as_mut_slice().into(),
            &tag.into(),
        )
        .map_err(|_| Error::DecryptionFailed)?;
    Ok(plaintext)
}
