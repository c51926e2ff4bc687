//! The Double Ratchet against a model of a lossy, reordering, duplicating,
//! corrupting network.
//!
//! Starting from a completed handshake (Alice initiated, Bob accepted her
//! first message), the fuzzer chooses who sends, which message arrives next,
//! which are replayed, lost or bit-flipped, and when a session goes through
//! storage. The model knows what every message carried and what each side
//! has seen, and checks the session against it after every step:
//!
//! * a message delivered for the first time decrypts to exactly its plaintext;
//! * a replay fails with `DuplicateOrExpired` (while its chain is within the
//!   `MAX_PREVIOUS_REMOTE_RATCHETS` the session remembers; older replays must
//!   still fail, but may look like a forged new ratchet key);
//! * a corrupted message fails and leaves the receiver byte for byte unchanged;
//! * a session survives `from_bytes(to_bytes())` and stores the same again;
//! * each side holds exactly one skipped key per message it has skipped past
//!   and not received yet;
//! * at the end, everything still in flight decrypts, and both sides can
//!   still talk.
//!
//! With at most 64 operations every chain stays far below `MAX_SKIP` and the
//! skipped-key bounds, so the model never needs eviction.
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use ward_core::limits::{MAX_PREVIOUS_REMOTE_RATCHETS, MAX_SKIP};
use ward_core::{Error, Session};
use ward_fuzz::ChaCha20Rng;
use ward_proto::{Message, core_v1 as pb};

/// Long scenarios add little coverage but cost linearly, and the bound keeps
/// the model inside the protocol's limits.
const MAX_OPS: usize = 64;
const _: () = assert!((MAX_OPS as u32) * 2 < MAX_SKIP);

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Party {
    Alice,
    Bob,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    AliceSends,
    BobSends,
    /// The `pick`-th (modulo) message to `to` still in flight arrives.
    Deliver {
        to: Party,
        pick: u8,
    },
    /// The `pick`-th (modulo) message already delivered to `to` arrives again.
    Duplicate {
        to: Party,
        pick: u8,
    },
    /// The `pick`-th (modulo) message to `to` in flight is lost for good.
    Drop {
        to: Party,
        pick: u8,
    },
    /// A copy of any message ever sent to `to`, with one bit flipped, arrives.
    Corrupt {
        to: Party,
        pick: u8,
        byte: u16,
        bit: u8,
    },
    /// The session goes through storage.
    Reserialize {
        who: Party,
    },
}

#[derive(Debug)]
struct Scenario {
    seed: u64,
    with_one_time_prekey: bool,
    ops: Vec<Op>,
}

/// Every byte after the seed and flag goes into operations. `Vec`'s own
/// encoding reads a continuation flag before each element, so random bytes
/// average two operations and the fuzzer must learn long runs of flags
/// before it can build a conversation.
impl<'a> Arbitrary<'a> for Scenario {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let seed = u.arbitrary()?;
        let with_one_time_prekey = u.arbitrary()?;
        let mut ops = Vec::new();
        while !u.is_empty() && ops.len() < MAX_OPS {
            ops.push(u.arbitrary()?);
        }
        Ok(Self {
            seed,
            with_one_time_prekey,
            ops,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    InFlight,
    Delivered,
    Dropped,
}

struct Sent {
    bytes: Vec<u8>,
    plaintext: Vec<u8>,
    /// The sender's ratchet key and the counter, from the ratchet header.
    chain: [u8; 32],
    index: u32,
    fate: Fate,
}

/// One direction of the wire, and what its receiver has seen of it.
#[derive(Default)]
struct Link {
    sent: Vec<Sent>,
    /// The sender's ratchet keys in the order the receiver moved to them; the
    /// last is the receiver's current receiving chain.
    chains: Vec<[u8; 32]>,
    /// One past the highest index received in the current chain.
    current_end: u32,
}

impl Link {
    fn nth_with(&self, fate: Fate, pick: u8) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.sent.len())
            .filter(|&i| self.sent[i].fate == fate)
            .collect();
        (!candidates.is_empty()).then(|| candidates[usize::from(pick) % candidates.len()])
    }

    fn record_delivery(&mut self, at: usize) {
        let (chain, index) = (self.sent[at].chain, self.sent[at].index);
        self.sent[at].fate = Fate::Delivered;
        if self.chains.last() == Some(&chain) {
            self.current_end = self.current_end.max(index + 1);
        } else if !self.chains.contains(&chain) {
            self.chains.push(chain);
            self.current_end = index + 1;
        }
        // Otherwise an older chain, opened with a skipped key.
    }

    /// Whether the receiver still remembers the chain of message `at` well
    /// enough to call a replay of it a replay.
    fn remembers_chain_of(&self, at: usize) -> bool {
        let chain = self.sent[at].chain;
        self.chains
            .iter()
            .rev()
            .position(|k| *k == chain)
            .is_some_and(|steps_back| steps_back <= MAX_PREVIOUS_REMOTE_RATCHETS)
    }

    /// Skipped keys the receiver must hold: one per message it has moved past
    /// without receiving. It moves past a whole chain when it steps to the
    /// next (a chain is closed by then, so every message of it is known
    /// here), and in the current chain up to the highest index received.
    fn expected_skipped(&self) -> usize {
        let Some((current, older)) = self.chains.split_last() else {
            return 0;
        };
        let waiting = |m: &&Sent| m.fate != Fate::Delivered;
        let in_older = self
            .sent
            .iter()
            .filter(|m| older.contains(&m.chain))
            .filter(waiting)
            .count();
        let in_current = self
            .sent
            .iter()
            .filter(|m| m.chain == *current && m.index < self.current_end)
            .filter(waiting)
            .count();
        in_older + in_current
    }
}

/// The ratchet message inside `bytes`: itself, or the one a pre-key message
/// wraps. `None` when it is neither.
fn ratchet_message(bytes: &[u8]) -> Option<Vec<u8>> {
    match bytes.split_first()? {
        (0x01, _) => Some(bytes.to_vec()),
        (0x02, body) => pb::PreKeyMessage::decode(body).ok().map(|p| p.message),
        _ => None,
    }
}

/// The ratchet key and counter of a message this harness just encrypted.
fn header_of(bytes: &[u8]) -> ([u8; 32], u32) {
    let inner = ratchet_message(bytes).expect("encrypt produced an unknown format");
    let key: [u8; 32] = inner[1..33].try_into().expect("32-byte key");
    let mut counter: u32 = 0;
    for (i, byte) in inner[33..].iter().take(5).enumerate() {
        counter |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (key, counter);
        }
    }
    panic!("encrypt produced a malformed counter");
}

struct World {
    rng: ChaCha20Rng,
    alice: Session,
    bob: Session,
    to_alice: Link,
    to_bob: Link,
}

/// A completed handshake as bytes, so that it can be reused.
struct StoredHandshake {
    alice: Vec<u8>,
    bob: Vec<u8>,
    first: Vec<u8>,
    first_plaintext: Vec<u8>,
}

impl StoredHandshake {
    fn of(hs: &ward_fuzz::Handshake) -> Self {
        Self {
            alice: hs.alice.to_bytes().to_vec(),
            bob: hs.bob.to_bytes().to_vec(),
            first: hs.first.clone(),
            first_plaintext: hs.first_plaintext.clone(),
        }
    }
}

/// A handshake costs more (ML-KEM, Ed25519) than a short scenario, so most
/// scenarios start from one of two stored ones and take their variety from
/// the seed of the RNG that follows. One seed in `FRESH_EVERY` runs a real
/// handshake from its seed instead, so that sessions fresh out of
/// `initiate`/`accept` (never stored) get modelled too. The residue is not
/// 0, which every too-short input's zero-filled seed would hit.
const FRESH_EVERY: u64 = 64;
const FRESH_RESIDUE: u64 = 42;

fn stored_handshake(with_one_time_prekey: bool) -> &'static StoredHandshake {
    static STORED: OnceLock<[StoredHandshake; 2]> = OnceLock::new();
    let [with, without] = STORED.get_or_init(|| {
        [true, false].map(|otk| StoredHandshake::of(&ward_fuzz::handshake(0x4a4d, otk)))
    });
    if with_one_time_prekey { with } else { without }
}

impl World {
    fn new(seed: u64, with_one_time_prekey: bool) -> Self {
        let (rng, alice, bob, first, first_plaintext) = if seed % FRESH_EVERY == FRESH_RESIDUE {
            let hs = ward_fuzz::handshake(seed, with_one_time_prekey);
            (hs.rng, hs.alice, hs.bob, hs.first, hs.first_plaintext)
        } else {
            let stored = stored_handshake(with_one_time_prekey);
            let load = |bytes: &[u8]| Session::from_bytes(bytes).expect("stored handshake loads");
            (
                ward_fuzz::rng(seed),
                load(&stored.alice),
                load(&stored.bob),
                stored.first.clone(),
                stored.first_plaintext.clone(),
            )
        };
        let (chain, index) = header_of(&first);
        let mut to_bob = Link::default();
        // The first message is in the pool as delivered, so it can be
        // replayed and counted like any other.
        to_bob.sent.push(Sent {
            bytes: first,
            plaintext: first_plaintext,
            chain,
            index,
            fate: Fate::Delivered,
        });
        to_bob.chains.push(chain);
        to_bob.current_end = index + 1;
        Self {
            rng,
            alice,
            bob,
            to_alice: Link::default(),
            to_bob,
        }
    }

    fn session(&mut self, who: Party) -> &mut Session {
        match who {
            Party::Alice => &mut self.alice,
            Party::Bob => &mut self.bob,
        }
    }

    fn link(&mut self, to: Party) -> &mut Link {
        match to {
            Party::Alice => &mut self.to_alice,
            Party::Bob => &mut self.to_bob,
        }
    }

    fn send(&mut self, from: Party) {
        let to = match from {
            Party::Alice => Party::Bob,
            Party::Bob => Party::Alice,
        };
        let n = self.link(to).sent.len();
        // Unique by construction; the varying length moves the tag around.
        let mut plaintext = format!("{from:?} #{n}").into_bytes();
        plaintext.resize(plaintext.len() + (n * 37) % 97, b'.');
        let session = match from {
            Party::Alice => &mut self.alice,
            Party::Bob => &mut self.bob,
        };
        let bytes = session
            .encrypt(&mut self.rng, &plaintext)
            .unwrap_or_else(|e| panic!("{from:?} could not encrypt: {e:?}"));
        let (chain, index) = header_of(&bytes);
        self.link(to).sent.push(Sent {
            bytes,
            plaintext,
            chain,
            index,
            fate: Fate::InFlight,
        });
    }

    fn deliver(&mut self, to: Party, at: usize) {
        let bytes = self.link(to).sent[at].bytes.clone();
        let got = self.session(to).decrypt(&bytes);
        let want = &self.link(to).sent[at].plaintext;
        match got {
            Ok(text) => assert!(
                text == *want,
                "{to:?}: message #{at} decrypted to another plaintext"
            ),
            Err(e) => panic!("{to:?}: message #{at}, delivered once, failed: {e:?}"),
        }
        self.link(to).record_delivery(at);
    }

    /// Feeds `bytes` to `to`, requiring failure without any change of state.
    fn refused(&mut self, to: Party, bytes: &[u8], what: &str) -> Error {
        let session = self.session(to);
        let before = session.to_bytes();
        let Err(e) = session.decrypt(bytes) else {
            panic!("{to:?} accepted {what}");
        };
        assert!(
            session.to_bytes()[..] == before[..],
            "{to:?}: refusing {what} ({e:?}) changed the session"
        );
        e
    }

    fn duplicate(&mut self, to: Party, at: usize) {
        let bytes = self.link(to).sent[at].bytes.clone();
        let e = self.refused(to, &bytes, &format!("a replay of message #{at}"));
        if self.link(to).remembers_chain_of(at) {
            assert_eq!(
                e,
                Error::DuplicateOrExpired,
                "{to:?}: replay of message #{at} refused with the wrong error"
            );
        }
    }

    fn corrupt(&mut self, to: Party, at: usize, byte: u16, bit: u8) {
        let original = &self.link(to).sent[at];
        let fate = original.fate;
        let mut bytes = original.bytes.clone();
        let i = usize::from(byte) % bytes.len();
        bytes[i] ^= 1 << (bit % 8);

        // A pre-key message's envelope is not authenticated once a session
        // exists: flipping, say, its prekey id leaves a message that is still
        // the original one. Only the wrapped ratchet message must be intact,
        // and if it is, the copy may either fail or count as the original.
        let envelope_only =
            ratchet_message(&bytes).is_some_and(|m| Some(m) == ratchet_message(&original.bytes));
        if !envelope_only {
            self.refused(
                to,
                &bytes,
                &format!("message #{at} with byte {i} corrupted"),
            );
            return;
        }
        let session = self.session(to);
        let before = session.to_bytes();
        match session.decrypt(&bytes) {
            Err(_) => assert!(
                session.to_bytes()[..] == before[..],
                "{to:?}: refusing a corrupted envelope changed the session"
            ),
            Ok(text) => {
                assert!(
                    fate != Fate::Delivered,
                    "{to:?}: message #{at} accepted twice through a corrupted envelope"
                );
                assert!(
                    text == self.link(to).sent[at].plaintext,
                    "{to:?}: corrupted envelope of #{at} decrypted to another plaintext"
                );
                self.link(to).record_delivery(at);
            }
        }
    }

    fn reserialize(&mut self, who: Party) {
        let session = self.session(who);
        let stored = session.to_bytes();
        let restored = Session::from_bytes(&stored)
            .unwrap_or_else(|e| panic!("{who:?}: stored session does not load: {e:?}"));
        assert!(
            restored.to_bytes()[..] == stored[..],
            "{who:?}: save/load is not a fixed point"
        );
        *session = restored;
    }

    fn check_skipped(&self) {
        assert_eq!(
            self.alice.skipped_key_count(),
            self.to_alice.expected_skipped(),
            "Alice holds the wrong number of skipped keys"
        );
        assert_eq!(
            self.bob.skipped_key_count(),
            self.to_bob.expected_skipped(),
            "Bob holds the wrong number of skipped keys"
        );
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::AliceSends => self.send(Party::Alice),
            Op::BobSends => self.send(Party::Bob),
            Op::Deliver { to, pick } => {
                if let Some(at) = self.link(to).nth_with(Fate::InFlight, pick) {
                    self.deliver(to, at);
                }
            }
            Op::Duplicate { to, pick } => {
                if let Some(at) = self.link(to).nth_with(Fate::Delivered, pick) {
                    self.duplicate(to, at);
                }
            }
            Op::Drop { to, pick } => {
                if let Some(at) = self.link(to).nth_with(Fate::InFlight, pick) {
                    self.link(to).sent[at].fate = Fate::Dropped;
                }
            }
            Op::Corrupt {
                to,
                pick,
                byte,
                bit,
            } => {
                let count = self.link(to).sent.len();
                if count > 0 {
                    self.corrupt(to, usize::from(pick) % count, byte, bit);
                }
            }
            Op::Reserialize { who } => self.reserialize(who),
        }
        self.check_skipped();
    }

    /// Whatever the network did, nothing still in flight is lost and the
    /// conversation can go on both ways.
    fn settle(&mut self) {
        for to in [Party::Alice, Party::Bob] {
            while let Some(at) = self.link(to).nth_with(Fate::InFlight, 0) {
                self.deliver(to, at);
            }
        }
        self.check_skipped();
        for from in [Party::Alice, Party::Bob, Party::Alice] {
            self.send(from);
            let to = match from {
                Party::Alice => Party::Bob,
                Party::Bob => Party::Alice,
            };
            let at = self.link(to).sent.len() - 1;
            self.deliver(to, at);
        }
        self.check_skipped();
    }
}

fuzz_target!(|scenario: Scenario| {
    let mut world = World::new(scenario.seed, scenario.with_one_time_prekey);
    for &op in &scenario.ops {
        world.apply(op);
    }
    world.settle();
});
