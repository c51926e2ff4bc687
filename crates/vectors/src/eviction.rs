//! `eviction.json`: the bounds of spec/05 at work. Bob's skipped keys reach
//! `MAX_SKIPPED_PER_CHAIN` and then `MAX_SKIPPED_PER_SESSION`, the oldest is
//! evicted each time and its message is then refused; and one of Alice's
//! ratchet keys is retired from `previous_remotes` after
//! `MAX_PREVIOUS_REMOTE_RATCHETS` newer ones, after which a replay under it
//! is taken for a new ratchet key.
//!
//! Long runs of messages on one chain that Bob never receives are listed as
//! one `send_range` event: no randomness, plaintexts by rule, and the
//! SHA-256 of their wires in order, so a replay can regenerate and check them.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use ward_core::limits::{
    MAX_PREVIOUS_REMOTE_RATCHETS, MAX_SKIP, MAX_SKIPPED_PER_CHAIN, MAX_SKIPPED_PER_SESSION,
};
use ward_core::{
    IdentityKeyPair, OneTimePreKeyPair, PreKeyBundle, PreKeyMessage, Session, SignedPreKeyPair,
};

use crate::rng::RecordingRng;
use crate::{Parties, h, outcome, parties, sessions};

struct Run {
    rng: RecordingRng,
    alice: Session,
    bob: Option<Session>,
    bob_keys: (IdentityKeyPair, SignedPreKeyPair, OneTimePreKeyPair),
    sent: Vec<(String, Vec<u8>)>,
    events: Vec<Value>,
}

fn name(alice: bool) -> &'static str {
    if alice { "alice" } else { "bob" }
}

impl Run {
    fn session(&mut self, alice: bool) -> &mut Session {
        if alice {
            &mut self.alice
        } else {
            self.bob.as_mut().expect("Bob sends only after he accepted")
        }
    }

    fn send(&mut self, from_alice: bool, label: &str, note: &str) {
        let mut rng = std::mem::replace(&mut self.rng, RecordingRng::new(0));
        let wire = self
            .session(from_alice)
            .encrypt(&mut rng, label.as_bytes())
            .unwrap();
        let draws = rng.take_draws();
        self.rng = rng;
        let mut event = json!({
            "event": "send", "by": name(from_alice), "message": label,
            "plaintext": h(label.as_bytes()), "random": draws, "wire": h(&wire),
        });
        if !note.is_empty() {
            event["note"] = json!(note);
        }
        self.events.push(event);
        self.sent.push((label.to_owned(), wire));
    }

    /// Alice sends `prefix{first}` to `prefix{last}` on her current chain.
    fn send_range(&mut self, prefix: &str, first: u32, last: u32, note: &str) {
        let mut hash = Sha256::new();
        for i in first..=last {
            let label = format!("{prefix}{i}");
            let wire = self.alice.encrypt(&mut self.rng, label.as_bytes()).unwrap();
            hash.update(&wire);
            self.sent.push((label, wire));
        }
        assert!(
            self.rng.take_draws().is_empty(),
            "a range stays on one chain"
        );
        self.events.push(json!({
            "event": "send_range", "by": "alice", "prefix": prefix, "first": first, "last": last,
            "note": note, "wires_sha256": h(hash.finalize()),
        }));
    }

    /// Delivers `label`; returns the outcome and what the receiver holds after.
    fn receive(&mut self, to_alice: bool, label: &str, note: &str) -> (Value, usize, Vec<Vec<u8>>) {
        let wire = self
            .sent
            .iter()
            .find(|(l, _)| l == label)
            .unwrap()
            .1
            .clone();
        let result = if to_alice || self.bob.is_some() {
            let session = self.session(to_alice);
            let before = session.to_bytes();
            let result = session.decrypt(&wire);
            if result.is_err() {
                assert_eq!(*session.to_bytes(), *before, "a refusal changed nothing");
            }
            result
        } else {
            let (bob, signed, one_time) = &self.bob_keys;
            let m = PreKeyMessage::decode(&wire).unwrap();
            Session::accept(bob, signed, Some(one_time), &m).map(|(s, p)| {
                self.bob = Some(s);
                p
            })
        };
        let session = self.session(to_alice);
        let skipped = session.skipped_key_count();
        let previous = sessions::state(&session.to_bytes())
            .previous_remote_ratchet_keys
            .clone();
        let mut expect = outcome(result);
        expect["skipped_keys"] = json!(skipped);
        expect["previous_remote_ratchet_keys"] = json!(previous.iter().map(h).collect::<Vec<_>>());
        let mut event = json!({"event": "receive", "by": name(to_alice), "message": label});
        if !note.is_empty() {
            event["note"] = json!(note);
        }
        event["expect"] = expect.clone();
        self.events.push(event);
        (expect, skipped, previous)
    }

    /// The ratchet key in the header of a sent message.
    fn key_of(&self, label: &str) -> Vec<u8> {
        let wire = &self.sent.iter().find(|(l, _)| l == label).unwrap().1;
        wire[1..33].to_vec()
    }
}

/// The whole `eviction.json`.
pub fn eviction() -> Value {
    // The scenario below is laid out for these bounds.
    assert_eq!(
        (MAX_SKIP, MAX_SKIPPED_PER_CHAIN, MAX_SKIPPED_PER_SESSION),
        (1000, 1000, 2000)
    );
    assert_eq!(MAX_PREVIOUS_REMOTE_RATCHETS, 8);
    let mut rng = RecordingRng::new(0x6576_6963);
    let Parties {
        alice,
        bob,
        signed,
        one_time,
        bundle_bytes,
    } = parties(&mut rng, 1, 1);
    let bundle = PreKeyBundle::decode(&bundle_bytes).unwrap();
    let to_bob = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let secrets = json!({
        "alice_identity_secret": h(*alice.to_secret_bytes()),
        "bob_identity_secret": h(*bob.to_secret_bytes()),
        "bob_signed_prekey_secret": h(&*signed.to_secret_bytes()),
        "bob_one_time_prekey_secret": h(&*one_time.to_secret_bytes()),
        "bundle": h(&bundle_bytes),
    });
    let first = json!({"event": "initiate", "by": "alice", "random": rng.take_draws()});
    let mut run = Run {
        rng,
        alice: to_bob,
        bob: None,
        bob_keys: (bob, signed, one_time),
        sent: Vec::new(),
        events: vec![first],
    };
    const A: bool = true;
    const B: bool = false;
    let error = |e: &Value| e["error"].as_str().map(str::to_owned);

    run.send(A, "a0", "");
    run.receive(B, "a0", "Bob accepts");
    run.send(B, "b0", "");
    run.receive(A, "b0", "");

    // Per chain: 1000 skipped keys of chain x, then one more evicts x0.
    run.send(A, "x0", "Alice's new chain x (DH ratchet step)");
    run.send(A, "x1", "");
    run.send_range(
        "x",
        2,
        999,
        "never delivered in order: their keys are skipped",
    );
    run.send(A, "x1000", "");
    run.send(A, "x1001", "never delivered");
    run.send(A, "x1002", "");
    let (_, n, _) = run.receive(
        B,
        "x1000",
        "skips x0..x999: 1000 keys, MAX_SKIPPED_PER_CHAIN",
    );
    assert_eq!(n, 1000);
    let (_, n, _) = run.receive(
        B,
        "x1002",
        "skips x1001: 1001 keys of chain x, the oldest (x0) is evicted",
    );
    assert_eq!(n, 1000);
    let (e, _, _) = run.receive(B, "x0", "evicted, and chain x is known: case 3");
    assert_eq!(error(&e).as_deref(), Some("DuplicateOrExpired"));
    let (e, n, _) = run.receive(B, "x1", "the oldest key left opens its message");
    assert_eq!((error(&e), n), (None, 999));

    // Per session: 999 + 1000 (chain y) + 2 (chain z) > 2000 evicts x2.
    run.send(B, "b1", "");
    run.receive(A, "b1", "");
    run.send(A, "y0", "Alice's new chain y");
    run.send_range(
        "y",
        1,
        999,
        "never delivered in order: their keys are skipped",
    );
    run.send(A, "y1000", "");
    let (_, n, _) = run.receive(B, "y1000", "skips y0..y999: 1999 keys in the session");
    assert_eq!(n, 1999);
    run.send(B, "b2", "");
    run.receive(A, "b2", "");
    run.send(A, "z0", "Alice's new chain z");
    run.send(A, "z1", "");
    run.send(A, "z2", "");
    let (_, n, _) = run.receive(
        B,
        "z2",
        "skips z0, z1: 2001 keys, MAX_SKIPPED_PER_SESSION is 2000, the oldest (x2) is evicted",
    );
    assert_eq!(n, 2000);
    let (e, _, _) = run.receive(B, "x2", "evicted, and chain x is known: case 3");
    assert_eq!(error(&e).as_deref(), Some("DuplicateOrExpired"));

    // Retirement: eight newer remote ratchet keys push x out.
    let x = run.key_of("x0");
    for (round, chain) in ["p", "q", "r", "s", "t", "u"].into_iter().enumerate() {
        let b = format!("b{}", round + 3);
        run.send(B, &b, "");
        run.receive(A, &b, "");
        let label = format!("{chain}0");
        run.send(A, &label, "");
        let note = match chain {
            "u" => {
                "Bob moves past t: a, the oldest remembered key, is retired; x is now the oldest of 8"
            }
            _ => "",
        };
        let (_, _, previous) = run.receive(B, &label, note);
        assert!(previous.len() <= MAX_PREVIOUS_REMOTE_RATCHETS && previous.contains(&x));
    }
    let (e, _, previous) = run.receive(B, "x1000", "a replay; chain x is still remembered: case 3");
    assert_eq!(error(&e).as_deref(), Some("DuplicateOrExpired"));
    assert_eq!(previous[0], x, "x is the oldest remembered key");
    run.send(B, "b9", "");
    run.receive(A, "b9", "");
    run.send(A, "v0", "");
    let (_, _, previous) = run.receive(
        B,
        "v0",
        "Bob moves past u: x, the oldest remembered key, is retired",
    );
    assert!(!previous.contains(&x) && previous.len() == MAX_PREVIOUS_REMOTE_RATCHETS);
    let (e, _, _) = run.receive(
        B,
        "x1000",
        "x is retired: taken for a new ratchet key (case 4), which does not authenticate",
    );
    assert_eq!(error(&e).as_deref(), Some("DecryptionFailed"));
    let (e, _, _) = run.receive(B, "x1002", "the same with a counter above MAX_SKIP");
    assert_eq!(error(&e).as_deref(), Some("TooFarAhead"));
    let (e, n, _) = run.receive(
        B,
        "x3",
        "x3's skipped key is still kept: case 2 comes before cases 3 and 4",
    );
    assert_eq!((error(&e), n), (None, 1999));

    let mut out = json!({
        "description": "The bounds of spec/05 at work: MAX_SKIP = 1000, MAX_SKIPPED_PER_CHAIN = 1000, MAX_SKIPPED_PER_SESSION = 2000, MAX_PREVIOUS_REMOTE_RATCHETS = 8. Bob's skipped keys are evicted oldest first, per chain and then per session, and an evicted key's message is refused; Alice's chain x is retired from Bob's previous remote ratchet keys, after which a replay under it is taken for a new ratchet key. Replay as conversation.json; a send_range event is Alice encrypting prefix+first .. prefix+last (inclusive) in order, each plaintext the ASCII of its label, with no randomness; wires_sha256 is SHA-256 of their wires concatenated in order.",
    });
    for (k, v) in secrets.as_object().unwrap() {
        out[k] = v.clone();
    }
    out["events"] = json!(run.events);
    out
}
