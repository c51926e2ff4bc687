//! The sender-key decoders (spec/13) on arbitrary bytes: group messages
//! decrypted by a member of the fixture chain, distributions, and both
//! kinds of chain state.
//!
//! A group message comes from any member of a group, or from the relay: every
//! byte is hostile. Nothing may panic, and:
//!
//! - a message that fails to decrypt leaves the member's chain as it was;
//!   one that opens does not open a second time (SK-6, SK-7);
//! - a distribution that decodes re-encodes to a fixed point, and a member
//!   made from it reads what the chain's owner would send (SK-14);
//! - a chain state that loads stores again to a fixed point and stays usable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_core::{Error, ReceivedChain, SenderChain, SenderKeyDistribution, SenderKeyMessage};

fn message(data: &[u8]) {
    let Ok(message) = SenderKeyMessage::decode(data) else {
        return;
    };
    let mut member = ward_fuzz::member_chain();
    let before = member.to_bytes();
    match member.decrypt(&message) {
        Ok(_) => assert_eq!(
            member.decrypt(&message),
            Err(Error::DuplicateOrExpired),
            "a message opened twice"
        ),
        Err(_) => assert_eq!(
            member.to_bytes()[..],
            before[..],
            "failed decrypt changed state"
        ),
    }
}

fn distribution(data: &[u8]) {
    let Ok(distribution) = SenderKeyDistribution::decode(data) else {
        return;
    };
    let encoded = distribution.encode();
    let again = SenderKeyDistribution::decode(&encoded).expect("an encoded distribution decodes");
    assert_eq!(
        again.encode()[..],
        encoded[..],
        "encode/decode is not a fixed point"
    );
    let member = ReceivedChain::from_distribution(&distribution);
    assert_eq!(member.iteration(), distribution.iteration());
}

fn states(data: &[u8]) {
    if let Ok(mut own) = SenderChain::from_bytes(data) {
        let stored = own.to_bytes();
        let restored = SenderChain::from_bytes(&stored).expect("a stored chain loads again");
        assert_eq!(
            restored.to_bytes()[..],
            stored[..],
            "save/load is not a fixed point"
        );
        let mut member = ReceivedChain::from_distribution(&own.distribution());
        if let Ok(wire) = own.encrypt(b"fuzz") {
            let message = SenderKeyMessage::decode(&wire).expect("own output decodes");
            assert_eq!(member.decrypt(&message).as_deref(), Ok(&b"fuzz"[..]));
        }
    }
    if let Ok(mut member) = ReceivedChain::from_bytes(data) {
        let stored = member.to_bytes();
        let restored = ReceivedChain::from_bytes(&stored).expect("a stored chain loads again");
        assert_eq!(
            restored.to_bytes()[..],
            stored[..],
            "save/load is not a fixed point"
        );
        let (_, messages) = ward_fuzz::sender_chain();
        for wire in &messages {
            let message = SenderKeyMessage::decode(wire).expect("fixture decodes");
            let before = member.to_bytes();
            if member.decrypt(&message).is_err() {
                assert_eq!(
                    member.to_bytes()[..],
                    before[..],
                    "failed decrypt changed state"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    message(data);
    distribution(data);
    states(data);
});
