//! The group decoders (spec/14) on arbitrary bytes: signed membership
//! changes applied to the fixture group, welcomes, and group states.
//!
//! Changes and welcomes come from other members over pairwise sessions, so
//! a malicious member controls every byte. Nothing may panic, and:
//!
//! - a change that decodes re-encodes to the same bytes' meaning: decoding
//!   its own encoding gives the same change;
//! - applying a change either fails and leaves the group as it was, or moves
//!   it to a new epoch whose head every device would compute alike;
//! - a state that loads stores again to a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_core::{GroupChange, GroupState};

fn change(data: &[u8]) {
    let Ok(change) = GroupChange::decode(data) else {
        return;
    };
    let again = GroupChange::decode(change.to_bytes()).expect("its own bytes decode");
    assert_eq!(again, change, "decode is not stable");
    let (mut group, _) = ward_fuzz::group();
    let before = group.to_bytes();
    match group.apply(&change) {
        Ok(_) => {
            let (mut twin, _) = ward_fuzz::group();
            twin.apply(&change)
                .expect("the same change applies to the same group");
            assert_eq!(twin.head(), group.head(), "heads differ");
        }
        Err(_) => assert_eq!(
            group.to_bytes()[..],
            before[..],
            "failed apply changed state"
        ),
    }
}

fn welcome(data: &[u8]) {
    let identity = ward_fuzz::group_member(1);
    let from = *ward_fuzz::group_member(0).public().signing_key();
    if let Ok(group) = GroupState::from_welcome(&identity, &ward_fuzz::group_user(1), &from, data) {
        assert!(group.is_member(), "a welcome that loads lists its receiver");
        let again = GroupState::from_welcome(
            &identity,
            &ward_fuzz::group_user(1),
            &from,
            &group.welcome(),
        )
        .expect("a welcome of a joined group loads");
        assert_eq!(again.head(), group.head());
    }
}

fn state(data: &[u8]) {
    let Ok(group) = GroupState::from_bytes(data) else {
        return;
    };
    let stored = group.to_bytes();
    let restored = GroupState::from_bytes(&stored).expect("a stored group loads again");
    assert_eq!(
        restored.to_bytes()[..],
        stored[..],
        "save/load is not a fixed point"
    );
}

fuzz_target!(|data: &[u8]| {
    change(data);
    welcome(data);
    state(data);
});
