//! `PreKeyMessage::decode` on arbitrary bytes.
//!
//! A pre-key message is the first thing a device parses from a stranger, and
//! it is parsed before any key agreement, so it must never panic. What it
//! accepts must round-trip: the fields are compared through the public
//! accessors, and the fields without one (the KEM ciphertext and the inner
//! ratchet message) through the stability of the encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_core::{MessageKind, PreKeyMessage};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = PreKeyMessage::decode(data) else {
        return;
    };
    assert_eq!(
        MessageKind::of(data),
        Ok(MessageKind::PreKey),
        "a decodable pre-key message has another kind"
    );
    let encoded = message.encode();
    let again = PreKeyMessage::decode(&encoded).expect("a re-encoded pre-key message must decode");
    assert_eq!(again.identity(), message.identity(), "identity changed");
    assert_eq!(
        again.signed_prekey_id(),
        message.signed_prekey_id(),
        "signed prekey id changed"
    );
    assert_eq!(
        again.one_time_prekey_id(),
        message.one_time_prekey_id(),
        "one-time prekey id changed"
    );
    assert_eq!(again.base_key(), message.base_key(), "base key changed");
    assert_eq!(again.encode(), encoded, "encoding is not stable");
});
