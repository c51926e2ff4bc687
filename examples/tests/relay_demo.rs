//! The README's first command runs: `relay-demo` starts a relay, its
//! devices talk through it, their care team gets a message, the on-call
//! role is handed over at a shift change, and the audit log verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn the_relay_demo_runs_to_the_end() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_relay-demo"))
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = demo.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            demo.kill().unwrap();
            panic!("relay-demo did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap();
    assert!(status.success(), "relay-demo failed:\n{out}");
    for expected in [
        "four devices enrolled",
        "[4 West] rn.lindqvist: URGENT Bed 9: fall, no injury, please assess",
        "-> cardiology-oncall: held by dr.okafor now",
        "<- [cardiology-oncall, thread of rn.lindqvist] dr.okafor: Coming. ECG please",
        "handed cardiology-oncall to dr.haddad: 2 thread messages",
        "<- cardiology-oncall, handed over by dr.okafor:",
        "rn.lindqvist: URGENT Bed 4: chest pain, troponin pending",
        "-> cardiology-oncall: held by dr.haddad now",
        "Haddad's phone       <- [cardiology-oncall, thread of rn.lindqvist] rn.lindqvist: Bed 4: troponin 0.9",
        "(verified)",
    ] {
        assert!(out.contains(expected), "no {expected:?} in:\n{out}");
    }
}
