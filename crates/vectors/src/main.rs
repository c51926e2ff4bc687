//! `cargo run -p ward-vectors --bin gen-vectors [--check]`: writes (or, with
//! `--check`, compares) every file in `spec/vectors/`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors");
    let mut stale = 0;
    for (name, value) in ward_vectors::all() {
        let path = dir.join(name);
        let text = ward_vectors::render(&value);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                eprintln!("stale: {}", path.display());
                stale += 1;
            }
        } else if let Err(e) = std::fs::write(&path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", path.display());
        }
    }
    if stale > 0 {
        eprintln!(
            "{stale} vector file(s) differ: run `cargo run -p ward-vectors --bin gen-vectors`"
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
