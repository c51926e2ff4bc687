//! `MessageKind::of` and `Session::decrypt` on arbitrary bytes, in live
//! sessions.
//!
//! Everything a peer or the relay sends ends up here, so this is the core's
//! main attack surface. Decryption must never panic, must fail atomically
//! (a rejected message leaves the session byte for byte unchanged, or a
//! forger could desynchronise it), and must never accept the same message
//! twice.
#![no_main]

use std::cell::RefCell;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ward_core::{Error, MessageKind, Session};

/// Built once: the handshake and conversation behind them cost far more than
/// one fuzz iteration should.
fn snapshots() -> &'static [ward_fuzz::Snapshot] {
    static SNAPSHOTS: OnceLock<Vec<ward_fuzz::Snapshot>> = OnceLock::new();
    SNAPSHOTS.get_or_init(ward_fuzz::snapshots)
}

thread_local! {
    /// Loaded sessions, one per snapshot, each known to be exactly in its
    /// snapshot's state. Loading costs an X25519 base-point multiplication,
    /// several times the cost of rejecting a typical input under
    /// instrumentation, so a session is reused for as long as inputs fail
    /// against it: a failure is asserted to leave its bytes equal to the
    /// snapshot (and the bytes hold every field but the derived ratchet
    /// public key), so every input still starts from the snapshot state and
    /// a crash replays from its input alone. A success changes the session,
    /// which is then dropped and loaded afresh for the next input.
    static LOADED: RefCell<Vec<Option<Session>>> = const { RefCell::new(Vec::new()) };
}

fn load(snapshot: &ward_fuzz::Snapshot) -> Session {
    let session = Session::from_bytes(&snapshot.session).expect("snapshot loads");
    assert!(
        session.to_bytes()[..] == snapshot.session[..],
        "{}: snapshot does not store back to itself",
        snapshot.name
    );
    session
}

fuzz_target!(|data: &[u8]| {
    let kind = MessageKind::of(data);
    let snapshots = snapshots();

    LOADED.with_borrow_mut(|loaded| {
        loaded.resize_with(snapshots.len(), || None);
        // Every input goes to every snapshot: each state takes different
        // paths (no sending chain yet, pending pre-key, skipped keys), and
        // the seeds of one are mutation bases for the others.
        for (slot, snapshot) in loaded.iter_mut().zip(snapshots) {
            let mut session = slot.take().unwrap_or_else(|| load(snapshot));
            match session.decrypt(data) {
                Err(e) => {
                    assert!(
                        session.to_bytes()[..] == snapshot.session[..],
                        "{}: failed decrypt ({e:?}) changed the session",
                        snapshot.name
                    );
                    if let Err(kind_error) = kind {
                        assert_eq!(e, kind_error, "decrypt and MessageKind disagree");
                    }
                    *slot = Some(session);
                }
                Ok(_) => {
                    assert!(kind.is_ok(), "decrypted a message of no known kind");
                    let after = session.to_bytes();
                    assert_eq!(
                        session.decrypt(data).err(),
                        Some(Error::DuplicateOrExpired),
                        "{}: a replay was not refused as one",
                        snapshot.name
                    );
                    assert!(
                        session.to_bytes()[..] == after[..],
                        "{}: a refused replay changed the session",
                        snapshot.name
                    );
                }
            }
        }
    });
});
