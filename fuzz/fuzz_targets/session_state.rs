//! `Session::from_bytes` on arbitrary bytes.
//!
//! Session state comes from the caller's own encrypted store, so it is
//! trusted not to be malicious, but it can be corrupted or written by another
//! version; loading it must fail cleanly, not panic. Whatever loads must
//! store again to the same bytes (a session that drifts on every save/load
//! cycle would eventually lose keys), and must be usable without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_core::Session;

fuzz_target!(|data: &[u8]| {
    let Ok(session) = Session::from_bytes(data) else {
        return;
    };
    // The input may be non-canonical protobuf, so only our own encoding is
    // required to be a fixed point.
    let stored = session.to_bytes();
    let mut restored = Session::from_bytes(&stored).expect("stored session must load again");
    assert_eq!(
        restored.to_bytes()[..],
        stored[..],
        "save/load is not a fixed point"
    );
    assert_eq!(restored.local_identity(), session.local_identity());
    assert_eq!(restored.remote_identity(), session.remote_identity());
    assert_eq!(restored.base_key(), session.base_key());
    assert_eq!(restored.is_initiator(), session.is_initiator());
    assert_eq!(restored.skipped_key_count(), session.skipped_key_count());

    // Errors are expected from an inconsistent state; panics and partial
    // updates are not ("every method that fails leaves it unchanged").
    let mut rng = ward_fuzz::rng(0);
    let before = restored.to_bytes();
    let sent = restored.encrypt(&mut rng, b"fuzz");
    if sent.is_err() {
        assert_eq!(
            restored.to_bytes()[..],
            before[..],
            "failed encrypt changed state"
        );
    }

    // Feeding the session its own output drives decryption through whatever
    // chains and skipped keys the input described.
    if let Ok(bytes) = sent {
        let before = restored.to_bytes();
        if restored.decrypt(&bytes).is_err() {
            assert_eq!(
                restored.to_bytes()[..],
                before[..],
                "failed decrypt changed state"
            );
        }
    }
});
