//! Loading a group's state (spec/14, "State at rest"), which a client does
//! for every group message it receives: a group with a full history of
//! `MAX_GROUP_HISTORY` kept changes.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p ward-core --bench group_state
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

use core::hint::black_box;
use core::time::Duration;
use std::collections::BTreeMap;

use criterion::Criterion;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use ward_core::{GroupAction, GroupState, IdentityKeyPair};

fn main() {
    let mut c = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let admin = IdentityKeyPair::generate(&mut rng);
    let (mut state, _) =
        GroupState::create(&admin, "nurse.diaz", [7; 16], "4 West", BTreeMap::new(), 0).unwrap();
    for n in 0..ward_core::limits::MAX_GROUP_HISTORY {
        let change = state
            .propose(&admin, GroupAction::Rename(format!("4 West ({n})")), 0)
            .unwrap();
        state.apply(&change).unwrap();
    }
    let bytes = state.to_bytes();
    println!("group state with a full history: {} B", bytes.len());
    c.bench_function("group_state/load_full_history", |b| {
        b.iter(|| GroupState::from_bytes(black_box(&bytes)).unwrap());
    });
    c.final_summary();
}
