//! The `ward-relay` binary against a temporary data directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

fn ward_relay(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ward-relay"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

/// Runs a command that must succeed; returns its standard output.
fn ok(data: &Path, args: &[&str]) -> String {
    let out = ward_relay(data, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with status 1 and one line on standard
/// error; returns that line.
fn fails(data: &Path, args: &[&str]) -> String {
    let out = ward_relay(data, args);
    assert_eq!(out.status.code(), Some(1), "{args:?} did not fail: {out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("ward-relay: error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn administer_then_export_and_verify_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let added = ok(
        &data,
        &["admin", "user", "add", "dr.okafor", "--role", "nurse"],
    );
    assert_eq!(added.trim(), "created user dr.okafor with role nurse");
    // --data-dir is accepted after the subcommand too.
    let listed = Command::new(env!("CARGO_BIN_EXE_ward-relay"))
        .args(["admin", "user", "list", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("dr.okafor") && listed.contains("nurse"),
        "{listed}"
    );

    // The token is printed once, on standard output, in the specified form.
    let out = ward_relay(
        &data,
        &["admin", "token", "issue", "dr.okafor", "--valid-hours", "2"],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let tokens: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("ward-enroll-"))
        .collect();
    assert_eq!(tokens.len(), 1, "{stdout}");
    let token = tokens[0];
    assert_eq!(token.len(), "ward-enroll-".len() + 64);
    assert!(ward_relay::keys::is_enrollment_token(token), "{token}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(token));

    let devices = ok(&data, &["admin", "device", "list", "dr.okafor"]);
    assert_eq!(devices.trim(), "dr.okafor has no devices");
    let queues = ok(&data, &["admin", "queue", "show", "dr.okafor"]);
    assert_eq!(queues.trim(), "dr.okafor has no active devices");

    // Export: a head is signed first, so the export verifies.
    let export = dir.path().join("audit.export");
    let export_arg = export.to_str().unwrap();
    let exported = ok(&data, &["audit", "export", "--out", export_arg]);
    assert!(
        exported.contains("2 entries, 1 signed tree heads"),
        "{exported}"
    );
    let relay_key = exported
        .lines()
        .find_map(|l| l.strip_prefix("relay key  "))
        .unwrap()
        .to_owned();
    assert_eq!(relay_key.len(), 64);
    // The token is in no file of the data directory or the export.
    for entry in std::fs::read_dir(&data).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
    }

    // Verify, against the data directory's key and against the given key.
    let verified = ok(&data, &["audit", "verify", export_arg]);
    assert!(verified.starts_with("verified "), "{verified}");
    assert!(verified.contains("2 entries"), "{verified}");
    assert!(verified.contains("last root  "), "{verified}");
    let elsewhere = dir.path().join("elsewhere");
    ok(
        &elsewhere,
        &["audit", "verify", export_arg, "--relay-key", &relay_key],
    );
    let wrong_key = "11".repeat(32);
    let line = fails(
        &data,
        &["audit", "verify", export_arg, "--relay-key", &wrong_key],
    );
    assert!(line.contains("verification FAILED"), "{line}");
    // Without a key in the data directory, one must be given.
    let line = fails(&elsewhere, &["audit", "verify", export_arg]);
    assert!(line.contains("--relay-key"), "{line}");

    // One flipped byte in an entry: verification fails.
    let mut bytes = std::fs::read(&export).unwrap();
    // magic (11) || version (1) || relay key (32) || count (8) || u16 length
    let first_entry = 11 + 1 + 32 + 8 + 2;
    bytes[first_entry + 4] ^= 0x01;
    std::fs::write(&export, &bytes).unwrap();
    let line = fails(&data, &["audit", "verify", export_arg]);
    assert!(line.contains("verification FAILED"), "{line}");
}

#[test]
fn failures_are_one_line_and_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&data, &["admin", "user", "add", "alice", "--role", "nurse"]);

    let line = fails(&data, &["admin", "user", "add", "alice", "--role", "nurse"]);
    assert!(line.contains("already exists"), "{line}");
    fails(
        &data,
        &["admin", "user", "add", "bob", "--role", "no spaces"],
    );
    fails(&data, &["admin", "user", "add", "", "--role", "nurse"]);
    let line = fails(&data, &["admin", "token", "issue", "nobody"]);
    assert!(line.contains("not found"), "{line}");
    fails(
        &data,
        &["admin", "token", "issue", "alice", "--valid-hours", "0"],
    );
    fails(&data, &["admin", "device", "list", "nobody"]);
    let line = fails(&data, &["admin", "device", "revoke", "abc"]);
    assert!(line.contains("64 hexadecimal digits"), "{line}");
    let line = fails(&data, &["admin", "device", "revoke", &"00".repeat(32)]);
    assert!(line.contains("not found"), "{line}");
    fails(
        &data,
        &[
            "audit",
            "verify",
            dir.path().join("missing").to_str().unwrap(),
        ],
    );

    // A configuration file with an unknown field.
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, "[limits]\nmax_frame = 1\n").unwrap();
    let line = fails(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "admin",
            "user",
            "list",
        ],
    );
    assert!(line.contains("relay.toml"), "{line}");

    // A usage error is clap's, with status 2.
    let out = ward_relay(&data, &["admin", "user", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_example_configuration_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/ward-relay.example.toml");
    let listed = ok(
        &dir.path().join("data"),
        &["--config", example, "admin", "user", "list"],
    );
    assert_eq!(listed.trim(), "no users");
}

#[cfg(unix)]
#[test]
fn serve_prints_its_address_and_pinned_fingerprint_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward-relay"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let rest = line
        .trim_end()
        .strip_prefix("ward-relay listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let (addr, fingerprint) = rest
        .split_once(", certificate sha256 fingerprint ")
        .unwrap();
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert_ne!(addr.port(), 0);

    // The fingerprint is SHA-256 of the generated certificate's DER.
    let pem = std::fs::read(data.join(ward_relay::tls::CERT_FILE)).unwrap();
    use rustls_pki_types::pem::PemObject as _;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    assert_eq!(fingerprint, hex::encode(Sha256::digest(der.as_ref())));
    assert!(data.join(ward_relay::keys::AUDIT_KEY_FILE).exists());

    // A client pinned to it completes the handshake.
    let pin = ward_relay::tls::parse_fingerprint(fingerprint).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let config = ward_client::pinned_client_config(pin, ward_client::ALPN).unwrap();
        let connection = client
            .connect_with(config, addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        connection.close(0u32.into(), b"");
        client.wait_idle().await;
    });

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
