//! Property tests over random schedules: two devices, many messages each way,
//! random reordering, loss, duplication and interleaving of ratchet steps.
//! Every message that arrives within the bounds decrypts exactly once to its
//! plaintext; duplicates fail as duplicates; nothing panics.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::Pair;
use proptest::prelude::*;
use ward_core::{Error, Session};

#[derive(Debug, Clone)]
enum Op {
    Send { from_alice: bool, len: usize },
    Deliver { to_alice: bool, pick: usize },
    Replay { to_alice: bool, pick: usize },
    Drop { to_alice: bool, pick: usize },
    Reserialize { alice: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0usize..300).prop_map(|(from_alice, len)| Op::Send { from_alice, len }),
        4 => (any::<bool>(), any::<usize>()).prop_map(|(to_alice, pick)| Op::Deliver { to_alice, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(to_alice, pick)| Op::Replay { to_alice, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(to_alice, pick)| Op::Drop { to_alice, pick }),
        1 => any::<bool>().prop_map(|alice| Op::Reserialize { alice }),
    ]
}

struct InFlight {
    bytes: Vec<u8>,
    plaintext: Vec<u8>,
}

/// Each message's plaintext is unique: its sequence number, then filler.
fn plaintext(seq: u32, len: usize) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.resize(len.max(4), (seq % 251) as u8);
    p
}

fn run(seed: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut p = Pair::new(seed, seed.is_multiple_of(2));
    // Messages in flight towards Alice [0] and Bob [1], and those delivered.
    let mut in_flight: [Vec<InFlight>; 2] = [Vec::new(), Vec::new()];
    let mut delivered: [Vec<InFlight>; 2] = [Vec::new(), Vec::new()];
    let mut seq = 0u32;

    for op in ops {
        match *op {
            Op::Send { from_alice, len } => {
                seq += 1;
                let text = plaintext(seq, len);
                let bytes = if from_alice {
                    p.a_to_b(&text)
                } else {
                    p.b_to_a(&text)
                };
                in_flight[usize::from(from_alice)].push(InFlight {
                    bytes,
                    plaintext: text,
                });
            }
            Op::Deliver { to_alice, pick } => {
                let queue = &mut in_flight[usize::from(!to_alice)];
                if queue.is_empty() {
                    continue;
                }
                let m = queue.remove(pick % queue.len());
                let session = if to_alice { &mut p.alice } else { &mut p.bob };
                let got = session.decrypt(&m.bytes);
                prop_assert_eq!(got.as_deref(), Ok(&m.plaintext[..]));
                delivered[usize::from(!to_alice)].push(m);
            }
            Op::Replay { to_alice, pick } => {
                let done = &delivered[usize::from(!to_alice)];
                if done.is_empty() {
                    continue;
                }
                let m = &done[pick % done.len()];
                let session = if to_alice { &mut p.alice } else { &mut p.bob };
                let before = session.to_bytes();
                // A replay is always refused and never changes the session. It
                // is named a duplicate while its chain is among the ones the
                // session remembers (limits::MAX_PREVIOUS_REMOTE_RATCHETS);
                // older ones can only fail to authenticate.
                let got = session.decrypt(&m.bytes);
                prop_assert!(
                    matches!(
                        got,
                        Err(Error::DuplicateOrExpired
                            | Error::DecryptionFailed
                            | Error::TooFarAhead)
                    ),
                    "replay gave {:?}",
                    got
                );
                prop_assert_eq!(&*session.to_bytes(), &*before);
            }
            Op::Drop { to_alice, pick } => {
                let queue = &mut in_flight[usize::from(!to_alice)];
                if !queue.is_empty() {
                    queue.remove(pick % queue.len());
                }
            }
            Op::Reserialize { alice } => {
                let session = if alice { &mut p.alice } else { &mut p.bob };
                *session = Session::from_bytes(&session.to_bytes()).unwrap();
            }
        }
    }
    // Whatever is still in flight arrives at the end, in reverse order.
    for to_alice in [true, false] {
        while let Some(m) = in_flight[usize::from(!to_alice)].pop() {
            let session = if to_alice { &mut p.alice } else { &mut p.bob };
            let got = session.decrypt(&m.bytes);
            prop_assert_eq!(got.as_deref(), Ok(&m.plaintext[..]));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_schedules_deliver_every_message_exactly_once(
        seed: u64,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        run(seed, &ops)?;
    }

    /// Arbitrary bytes never panic a live session and never change it.
    #[test]
    fn arbitrary_bytes_never_change_a_session(seed: u64, junk: Vec<u8>, kind in 0u8..3) {
        let mut p = Pair::new(seed, true);
        let mut bytes = junk;
        if kind > 0 && !bytes.is_empty() {
            bytes[0] = kind; // steer most inputs past the format byte
        }
        let before = p.bob.to_bytes();
        prop_assert!(p.bob.decrypt(&bytes).is_err());
        prop_assert_eq!(&*p.bob.to_bytes(), &*before);
    }
}
