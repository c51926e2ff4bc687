//! `PreKeyBundle::decode` on arbitrary bytes.
//!
//! A relay hands bundles to clients, so every byte of one is attacker
//! controlled. Decoding must never panic, and whatever it accepts must
//! survive a round trip: a client that re-publishes or caches a bundle must
//! get back the same keys it verified.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_core::PreKeyBundle;

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = PreKeyBundle::decode(data) else {
        return;
    };
    let encoded = bundle.encode();
    let again = PreKeyBundle::decode(&encoded).expect("a re-encoded bundle must decode");
    assert_eq!(again.identity(), bundle.identity(), "identity changed");
    assert_eq!(
        again.signed_prekeys(),
        bundle.signed_prekeys(),
        "signed prekeys changed"
    );
    assert_eq!(
        again.one_time_prekey(),
        bundle.one_time_prekey(),
        "one-time prekey changed"
    );
    // The input need not be canonical protobuf, but our own encoding must be:
    // encoding what we decoded from it gives the same bytes again.
    assert_eq!(again.encode(), encoded, "encoding is not stable");
});
