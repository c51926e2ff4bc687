//! The `ward-relay` binary against a temporary data directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

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

/// `audit verify`'s output, exactly (spec/09, "`verify`", AUD-22): three
/// lines on success; one line on standard error and status 1 for a file
/// shorter than the magic and for a head with a bad version byte.
#[test]
fn audit_verify_prints_its_summary_or_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(
        &data,
        &["admin", "user", "add", "dr.okafor", "--role", "nurse"],
    );
    let export = dir.path().join("audit.export");
    let export_arg = export.to_str().unwrap();
    ok(&data, &["audit", "export", "--out", export_arg]);
    ok(
        &data,
        &["admin", "user", "add", "dr.adeyemi", "--role", "nurse"],
    );
    ok(&data, &["audit", "export", "--out", export_arg]);

    let bytes = std::fs::read(&export).unwrap();
    let log = ward_audit::verify_export(&bytes, None).unwrap();
    assert_eq!((log.size(), log.heads().len()), (2, 2));
    let expected = format!(
        "verified {export_arg}: 2 entries, 2 signed tree heads\n\
         relay key  {}\n\
         last root  {} (tree size 2, signed {})\n",
        hex::encode(log.relay_key()),
        hex::encode(log.root()),
        ward_relay::admin::Utc(log.latest_head().timestamp_ms),
    );
    assert_eq!(ok(&data, &["audit", "verify", export_arg]), expected);

    let refused = |bytes: &[u8]| {
        std::fs::write(&export, bytes).unwrap();
        let out = ward_relay(&data, &["audit", "verify", export_arg]);
        assert!(out.stdout.is_empty(), "{out:?}");
        fails(&data, &["audit", "verify", export_arg])
    };
    assert_eq!(
        refused(b"Ward"),
        format!(
            "ward-relay: error: {export_arg}: verification FAILED: decoding failed: input is truncated\n"
        )
    );
    let mut bad_head = bytes.clone();
    let last_head = bad_head.len() - ward_audit::SignedTreeHead::ENCODED_LEN;
    bad_head[last_head] = 0x02;
    assert_eq!(
        refused(&bad_head),
        format!(
            "ward-relay: error: {export_arg}: verification FAILED: decoding failed: unsupported version byte 0x02\n"
        )
    );
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

/// `key value` lines, in order.
/// spec/08, "Stateless resets": `serve` refuses a stateless-reset key file
/// of another length, one other users may access, and a configured one that
/// does not exist, each with one line naming the file, and replaces none.
#[cfg(unix)]
#[test]
fn serve_refuses_a_bad_stateless_reset_key_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&data, &["admin", "user", "list"]);
    let key = data.join(ward_relay::keys::RESET_KEY_FILE);
    let write = |bytes: &[u8], mode: u32| {
        std::fs::write(&key, bytes).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let serve = ["serve", "--bind", "127.0.0.1:0"];

    write(&[7; 31], 0o600);
    let line = fails(&data, &serve);
    assert!(line.contains(&key.display().to_string()), "{line}");
    assert!(line.contains("exactly 32 bytes, this one 31"), "{line}");
    assert_eq!(std::fs::read(&key).unwrap(), [7; 31]);

    write(&[7; 32], 0o644);
    let line = fails(&data, &serve);
    assert!(line.contains(&key.display().to_string()), "{line}");
    assert!(
        line.contains("accessible to other users (mode 644)"),
        "{line}"
    );
    assert!(line.contains("chmod 600"), "{line}");
    assert_eq!(std::fs::read(&key).unwrap(), [7; 32]);

    // A configured key file is never created.
    let missing = dir.path().join("shared-reset.key");
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "stateless_reset_key_file = {:?}\n",
            missing.display().to_string()
        ),
    )
    .unwrap();
    let line = fails(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--bind",
            "127.0.0.1:0",
        ],
    );
    assert!(line.contains("shared-reset.key"), "{line}");
    assert!(line.contains("no stateless reset key file"), "{line}");
    assert!(!missing.exists());
}

/// Every file under `dir` with its permission bits, after checking that
/// every directory under it is mode 0700.
#[cfg(unix)]
fn file_modes(dir: &Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", entry.path().display());
            out.extend(file_modes(&entry.path()));
        } else {
            out.push((entry.path().display().to_string(), mode));
        }
    }
    out.sort();
    out
}

/// Asserts that every file under `data` is mode 0600 and that `names`
/// are among them.
#[cfg(unix)]
fn assert_all_private(data: &Path, names: &[&str]) {
    let files = file_modes(data);
    for (file, mode) in &files {
        assert_eq!(*mode, 0o600, "{file} is mode {mode:o}");
    }
    for name in names {
        let path = data.join(name).display().to_string();
        assert!(files.iter().any(|(f, _)| *f == path), "{name} in {files:?}");
    }
}

/// spec/10, "Encryption and storage at rest": every file the relay writes
/// in its data directory is mode 0600, SQLite's `-wal` and `-shm` files
/// included, without a umask; files an earlier version left mode 0644 are
/// restricted when the relay opens them again.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_in_the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    use ward_relay::{keys, storage::DATABASE_FILE, tls};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let wal = format!("{DATABASE_FILE}-wal");
    let shm = format!("{DATABASE_FILE}-shm");
    let all = [
        DATABASE_FILE,
        &wal,
        &shm,
        tls::CERT_FILE,
        tls::KEY_FILE,
        keys::AUDIT_KEY_FILE,
        keys::RESET_KEY_FILE,
    ];

    // The administration tool creates the directory and the database.
    common::admin(&data, &["user", "add", "a", "--role", "nurse"]);
    assert_all_private(&data, &[DATABASE_FILE]);

    // A running relay that wrote through its WAL.
    let token = common::cli_token(&data, "a");
    let identity = ward_core::IdentityKeyPair::generate(&mut ward_core::os_rng());
    let relay = common::RelayProcess::spawn(&data, common::ANY_PORT);
    let connection = relay.connect().await;
    connection.enroll(&token, &identity).await.unwrap();
    assert_all_private(&data, &all);
    connection.close().await;
    // Killed: the -wal and -shm files stay behind.
    relay.kill();
    assert_all_private(&data, &all);

    // What an earlier version left: everything but the keys mode 0644.
    for name in [DATABASE_FILE, &wal, &shm, tls::CERT_FILE] {
        let path = data.join(name);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let relay = common::RelayProcess::spawn(&data, common::ANY_PORT);
    let connection = relay.connect().await;
    connection.authenticate(&identity).await.unwrap();
    assert_all_private(&data, &all);

    // An export the administrator writes into the directory, beside the
    // running relay.
    let export = data.join("audit.export");
    ok(
        &data,
        &["audit", "export", "--out", export.to_str().unwrap()],
    );
    assert_all_private(&data, &["audit.export"]);
    connection.close().await;
    relay.kill();
    assert_all_private(&data, &all);
}

fn fields(output: &str) -> Vec<(&str, &str)> {
    output
        .lines()
        .map(|line| line.split_once(' ').unwrap_or_else(|| panic!("{line:?}")))
        .collect()
}

/// The one value of `key`.
fn field<'a>(output: &'a str, key: &str) -> &'a str {
    let values: Vec<&str> = fields(output)
        .into_iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values.len(), 1, "{key} in {output}");
    values[0]
}

fn hash(text: &str) -> ward_audit::Hash {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).unwrap();
    out
}

/// The `proof` lines, in order.
fn proof(output: &str) -> Vec<ward_audit::Hash> {
    fields(output)
        .into_iter()
        .filter(|(k, _)| *k == "proof")
        .map(|(_, v)| hash(v))
        .collect()
}

/// Exports (signing a head over everything) and returns the relay key.
fn export_head(data: &Path, export: &Path) -> String {
    let exported = ok(
        data,
        &["audit", "export", "--out", export.to_str().unwrap()],
    );
    exported
        .lines()
        .find_map(|l| l.strip_prefix("relay key  "))
        .unwrap()
        .to_owned()
}

#[test]
fn heads_and_proofs_are_printed_verified_and_checked_without_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let export = dir.path().join("audit.export");

    // Two entries, a head of size 2; three more, a head of size 5.
    ok(&data, &["admin", "user", "add", "alice", "--role", "nurse"]);
    ok(&data, &["admin", "token", "issue", "alice"]);
    let relay_key = export_head(&data, &export);
    ok(&data, &["admin", "user", "add", "bob", "--role", "nurse"]);
    ok(&data, &["admin", "token", "issue", "bob"]);
    ok(
        &data,
        &["admin", "user", "add", "carol", "--role", "doctor"],
    );
    assert_eq!(export_head(&data, &export), relay_key);
    let key = ward_audit::VerifyingKey::from_bytes(&hash(&relay_key)).unwrap();

    // The entries as exported, to check the proofs against independently.
    let exported = ward_audit::Export::decode(&std::fs::read(&export).unwrap()).unwrap();
    let leaves: Vec<ward_audit::Hash> = exported
        .entries
        .iter()
        .map(|e| ward_audit::leaf_hash(&e.encode()))
        .collect();
    assert_eq!(leaves.len(), 5);

    // heads: one line per head, oldest first, five fields.
    let heads = ok(&data, &["audit", "heads"]);
    let lines: Vec<Vec<&str>> = heads
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .collect();
    assert_eq!(lines.len(), 2, "{heads}");
    let mut signed = Vec::new();
    for (line, size) in lines.iter().zip([2u64, 5]) {
        assert_eq!(line.len(), 5, "{line:?}");
        let head = ward_audit::SignedTreeHead::decode(&hex::decode(line[4]).unwrap()).unwrap();
        let verified = *head.verify(&key).unwrap();
        assert_eq!(line[0], size.to_string());
        assert_eq!(verified.tree_size, size);
        assert_eq!(line[1], verified.timestamp_ms.to_string());
        assert!(line[2].ends_with('Z') && line[2].contains('T'), "{line:?}");
        assert_eq!(line[3], hex::encode(verified.root));
        assert_eq!(
            verified.root,
            ward_audit::merkle::root_from_leaf_hashes(&leaves[..size as usize])
        );
        signed.push(line[4].to_owned());
    }
    assert_eq!(
        exported
            .heads
            .iter()
            .map(|h| hex::encode(h.encode()))
            .collect::<Vec<_>>(),
        signed
    );

    // prove-inclusion of entry 0 against the latest head.
    let out = ok(&data, &["audit", "prove-inclusion", "--index", "0"]);
    let keys: Vec<&str> = fields(&out).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "index",
            "tree-size",
            "leaf-hash",
            "root",
            "signed-head",
            "proof",
            "proof",
            "proof"
        ],
        "{out}"
    );
    assert_eq!(field(&out, "index"), "0");
    assert_eq!(field(&out, "tree-size"), "5");
    assert_eq!(field(&out, "signed-head"), signed[1]);
    let leaf = hash(field(&out, "leaf-hash"));
    let root = hash(field(&out, "root"));
    assert_eq!(leaf, leaves[0]);
    let latest = ward_audit::SignedTreeHead::decode(&hex::decode(&signed[1]).unwrap()).unwrap();
    assert_eq!(root, latest.verify(&key).unwrap().root);
    ward_audit::verify_inclusion(&leaf, 0, 5, &proof(&out), &root).unwrap();

    // At a size no head has: no signed-head line; the root is the entries'.
    let out = ok(
        &data,
        &["audit", "prove-inclusion", "--index", "3", "--size", "4"],
    );
    assert!(!out.contains("signed-head"), "{out}");
    let root = hash(field(&out, "root"));
    assert_eq!(
        root,
        ward_audit::merkle::root_from_leaf_hashes(&leaves[..4])
    );
    ward_audit::verify_inclusion(&leaves[3], 3, 4, &proof(&out), &root).unwrap();

    // prove-consistency from the first head's size to the latest head.
    let out = ok(&data, &["audit", "prove-consistency", "--from", "2"]);
    assert_eq!(field(&out, "from-size"), "2");
    assert_eq!(field(&out, "to-size"), "5");
    assert_eq!(field(&out, "from-head"), signed[0]);
    assert_eq!(field(&out, "to-head"), signed[1]);
    let path = proof(&out);
    assert!(!path.is_empty());
    ward_audit::verify_consistency(
        2,
        5,
        &hash(field(&out, "from-root")),
        &hash(field(&out, "to-root")),
        &path,
    )
    .unwrap();
    let proof_arg = path.iter().map(hex::encode).collect::<Vec<_>>().join(",");

    // check-consistency: the auditor's side, with no data directory.
    let nowhere = dir.path().join("nowhere");
    let check = |old: &str, new: &str, proof: &str, key: &str| {
        ward_relay(
            &nowhere,
            &[
                "audit",
                "check-consistency",
                "--old-head",
                old,
                "--new-head",
                new,
                "--proof",
                proof,
                "--relay-key",
                key,
            ],
        )
    };
    let out = check(&signed[0], &signed[1], &proof_arg, &relay_key);
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.starts_with("consistent: tree size 2 ") && line.contains(" tree size 5 "),
        "{line}"
    );
    assert!(
        !nowhere.exists(),
        "check-consistency touched a data directory"
    );
    // The proof hashes may also be given one --proof each.
    let mut args = vec![
        "audit",
        "check-consistency",
        "--old-head",
        &signed[0],
        "--new-head",
        &signed[1],
        "--relay-key",
        &relay_key,
    ];
    let hexes: Vec<String> = path.iter().map(hex::encode).collect();
    for h in &hexes {
        args.extend(["--proof", h.as_str()]);
    }
    ok(&nowhere, &args);
    // A head is consistent with itself, with an empty proof.
    let out = check(&signed[1], &signed[1], "", &relay_key);
    assert!(out.status.success(), "{out:?}");

    // Each failure: status 1, one line, saying what is wrong.
    let failure = |out: Output| {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("ward-relay: error: "), "{stderr}");
        stderr
    };
    // A flipped proof byte.
    let mut flipped = proof_arg.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let line = failure(check(
        &signed[0],
        &signed[1],
        std::str::from_utf8(&flipped).unwrap(),
        &relay_key,
    ));
    assert!(
        line.contains("NOT consistent") && line.contains("consistency proof does not verify"),
        "{line}"
    );
    // A missing proof hash.
    let short = hexes[1..].join(",");
    let line = failure(check(&signed[0], &signed[1], &short, &relay_key));
    assert!(line.contains("NOT consistent"), "{line}");
    // The heads swapped.
    let line = failure(check(&signed[1], &signed[0], &proof_arg, &relay_key));
    assert!(line.contains("swapped"), "{line}");
    // Another relay's key.
    let other = hex::encode(
        ward_audit::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .to_bytes(),
    );
    let line = failure(check(&signed[0], &signed[1], &proof_arg, &other));
    assert!(
        line.contains("old head: signature does not verify under the relay key"),
        "{line}"
    );
    // A head altered (one byte of its root).
    let mut altered = hex::decode(&signed[1]).unwrap();
    altered[20] ^= 1;
    let line = failure(check(
        &signed[0],
        &hex::encode(altered),
        &proof_arg,
        &relay_key,
    ));
    assert!(
        line.contains("new head: signature does not verify"),
        "{line}"
    );
    // Malformed arguments.
    let line = failure(check("zz", &signed[1], &proof_arg, &relay_key));
    assert!(
        line.contains("old head: expected hexadecimal digits"),
        "{line}"
    );
    let line = failure(check(&signed[0][..200], &signed[1], &proof_arg, &relay_key));
    assert!(
        line.contains("old head: not an encoded signed tree head"),
        "{line}"
    );
    let line = failure(check(&signed[0], &signed[1], "abcd", &relay_key));
    assert!(line.contains("proof hash 0"), "{line}");
    let line = failure(check(&signed[0], &signed[1], &proof_arg, "xyz"));
    assert!(line.contains("invalid relay key"), "{line}");
    assert!(!nowhere.exists());
}

#[test]
fn proof_requests_out_of_range_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // No head yet: nothing listed; a default size is refused.
    assert_eq!(ok(&data, &["audit", "heads"]), "");
    let line = fails(&data, &["audit", "prove-inclusion", "--index", "0"]);
    assert!(line.contains("no signed tree head"), "{line}");
    let line = fails(&data, &["audit", "prove-consistency", "--from", "0"]);
    assert!(line.contains("no signed tree head"), "{line}");

    ok(&data, &["admin", "user", "add", "alice", "--role", "nurse"]);
    let export = dir.path().join("audit.export");
    export_head(&data, &export);

    // A one-entry tree: no proof hashes, the root is the leaf hash.
    let out = ok(&data, &["audit", "prove-inclusion", "--index", "0"]);
    assert!(proof(&out).is_empty(), "{out}");
    assert_eq!(field(&out, "leaf-hash"), field(&out, "root"));

    for index in ["1", "18446744073709551615"] {
        let line = fails(&data, &["audit", "prove-inclusion", "--index", index]);
        assert!(
            line.contains(&format!("entry index {index} is out of range")),
            "{line}"
        );
    }
    let line = fails(
        &data,
        &["audit", "prove-inclusion", "--index", "0", "--size", "2"],
    );
    assert!(line.contains("tree size 2 is out of range"), "{line}");
    let line = fails(
        &data,
        &["audit", "prove-inclusion", "--index", "0", "--size", "0"],
    );
    assert!(line.contains("out of range"), "{line}");
    let line = fails(&data, &["audit", "prove-consistency", "--from", "2"]);
    assert!(line.contains("larger than 1"), "{line}");
    let line = fails(
        &data,
        &["audit", "prove-consistency", "--from", "0", "--to", "9"],
    );
    assert!(line.contains("tree size 9 is out of range"), "{line}");

    // The edges: from the empty tree, and from a tree to itself.
    let out = ok(&data, &["audit", "prove-consistency", "--from", "0"]);
    assert_eq!(
        field(&out, "from-root"),
        hex::encode(ward_audit::EMPTY_ROOT)
    );
    assert!(
        !out.contains("from-head") && proof(&out).is_empty(),
        "{out}"
    );
    let out = ok(&data, &["audit", "prove-consistency", "--from", "1"]);
    assert_eq!(field(&out, "from-head"), field(&out, "to-head"));
    assert!(proof(&out).is_empty(), "{out}");

    // A usage error (a negative index) is clap's, with status 2.
    let out = ward_relay(&data, &["audit", "prove-inclusion", "--index", "-1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_tampered_store_is_refused_not_proved() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&data, &["admin", "user", "add", "alice", "--role", "nurse"]);
    ok(&data, &["admin", "user", "add", "bob", "--role", "nurse"]);
    export_head(&data, &dir.path().join("audit.export"));
    ok(&data, &["audit", "prove-inclusion", "--index", "1"]);

    // Rewrite entry 0 behind the relay's back (alice becomes alicf): the
    // leaf hashes and the signed head still describe the old entry.
    let db = rusqlite::Connection::open(data.join(ward_relay::storage::DATABASE_FILE)).unwrap();
    db.execute_batch("DROP TRIGGER audit_entries_no_update")
        .unwrap();
    let entry: Vec<u8> = db
        .query_row("SELECT entry FROM audit_entries WHERE seq = 0", [], |row| {
            row.get(0)
        })
        .unwrap();
    let at = entry.windows(5).position(|w| w == b"alice").unwrap();
    let mut changed = entry.clone();
    changed[at + 4] = b'f';
    db.execute(
        "UPDATE audit_entries SET entry = ?1 WHERE seq = 0",
        [&changed],
    )
    .unwrap();
    drop(db);

    for args in [
        &["audit", "prove-inclusion", "--index", "1"][..],
        &["audit", "prove-inclusion", "--index", "0", "--size", "1"],
        &["audit", "prove-consistency", "--from", "1"],
    ] {
        let line = fails(&data, args);
        assert!(line.contains("does not check out"), "{args:?}: {line}");
    }
}

#[test]
fn device_wipe_records_a_pending_wipe_and_audits_it() {
    use ward_relay::storage::{SqliteStorage, Storage, StorageConfig};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(
        &data,
        &["admin", "user", "add", "dr.okafor", "--role", "nurse"],
    );
    let unknown = fails(&data, &["admin", "device", "wipe", &"00".repeat(32)]);
    assert!(unknown.contains("device not found"), "{unknown}");
    let malformed = fails(&data, &["admin", "device", "wipe", "abcd"]);
    assert!(malformed.contains("64 hexadecimal digits"), "{malformed}");

    // A device, enrolled as the relay would enroll it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let identity = ward_core::IdentityKeyPair::generate(&mut ward_core::os_rng());
    let device = {
        let storage = SqliteStorage::open(&data, StorageConfig::default()).unwrap();
        let (_token, hash) = ward_relay::keys::new_enrollment_token();
        let user = ward_audit::UserId::new("dr.okafor").unwrap();
        storage
            .issue_enrollment_token(&hash, &user, None, now, now + 3_600_000)
            .unwrap();
        storage
            .redeem_enrollment_token(&hash, identity.public(), now)
            .unwrap()
            .key
    };
    let hex_key = device.to_string();
    let out = ok(&data, &["admin", "device", "wipe", &hex_key]);
    assert!(
        out.starts_with(&format!("wipe pending for device {hex_key} of dr.okafor")),
        "{out}"
    );
    let twice = fails(&data, &["admin", "device", "wipe", &hex_key]);
    assert!(twice.contains("pending wipe already exists"), "{twice}");

    // Pending, audited, and nothing revoked.
    let storage = SqliteStorage::open(&data, StorageConfig::default()).unwrap();
    assert!(storage.wipe_pending(&device).unwrap());
    assert!(storage.get_device(&device).unwrap().is_active());
    let key = ward_relay::keys::load_or_create_audit_key(&data).unwrap();
    let entries = storage
        .export_audit(&ward_audit::VerifyingKey::from(&key))
        .unwrap()
        .entries;
    let wipes: Vec<_> = entries
        .iter()
        .filter(|e| e.detail.as_ref().is_some_and(|d| d.as_str() == "wipe"))
        .collect();
    assert_eq!(wipes.len(), 1);
    assert_eq!(wipes[0].kind, ward_audit::EventKind::AdminAction);
    assert_eq!(wipes[0].target_device, device.audit_id());
    assert!(
        !entries
            .iter()
            .any(|e| e.kind == ward_audit::EventKind::Revocation)
    );
}
