//! Writes a small seed corpus for every target: valid encodings that the
//! fuzzer could not find on its own, since each sits behind signatures, KEM
//! keys or AEAD tags. The inputs come from the same deterministic fixtures
//! the targets use, so for instance the messages seeded for
//! `message_kind_and_decrypt` really decrypt in its sessions.
//!
//! Usage: `cargo run --release --example seed_corpus -- CORPUS_DIR`

use std::fs;
use std::path::Path;

use rand_core::Rng;
use ward_fuzz::{fixed_device, handshake, snapshots};

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = root.join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(format!("seed-{name}")), bytes)
}

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus".to_owned());
    let root = Path::new(&root);

    let device = fixed_device();
    write(root, "prekey_bundle", "with-one-time", &device.bundle(true))?;
    write(
        root,
        "prekey_bundle",
        "without-one-time",
        &device.bundle(false),
    )?;

    let identity = device.identity.public();
    write(
        root,
        "device_identity",
        "identity-proto",
        &identity.encode(),
    )?;
    write(
        root,
        "device_identity",
        "identity-fixed",
        &identity.to_bytes(),
    )?;
    write(
        root,
        "device_identity",
        "signed-prekeys",
        &device.signed.public().encode(),
    )?;
    write(
        root,
        "device_identity",
        "one-time-prekey",
        &device.one_time[0].public().encode(),
    )?;

    for (name, with_one_time) in [("with-one-time", true), ("without-one-time", false)] {
        let hs = handshake(1, with_one_time);
        write(root, "prekey_message", name, &hs.first)?;
        write(
            root,
            "prekey_bundle",
            &format!("handshake-{name}"),
            &hs.bundle,
        )?;
    }

    for snapshot in snapshots() {
        write(root, "session_state", snapshot.name, &snapshot.session)?;
        for (i, message) in snapshot.incoming.iter().enumerate() {
            let name = format!("{}-{i}", snapshot.name);
            write(root, "message_kind_and_decrypt", &name, message)?;
            // Pre-key messages are also the other target's input.
            if message.first() == Some(&ward_core::format::PREKEY_MESSAGE) {
                write(root, "prekey_message", &name, message)?;
            }
        }
    }
    // Any bytes are a valid scenario; these just start the fuzzer with long
    // conversations instead of growing them from nothing.
    let mut rng = ward_fuzz::rng(0x0de1);
    for i in 0..8 {
        let mut scenario = vec![0u8; 64 + 64 * i];
        rng.fill_bytes(&mut scenario);
        if i == 0 {
            // A seed that runs a real handshake rather than a stored one
            // (see FRESH_EVERY in the target): 0x2a2a..2a is 42 mod 64.
            scenario[..8].fill(0x2a);
        }
        write(root, "ratchet_model", &format!("random-{i}"), &scenario)?;
    }

    println!("seed corpus written under {}", root.display());
    Ok(())
}
