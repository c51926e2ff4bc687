#!/usr/bin/env bash
# What CI needs beyond a Rust toolchain, installed if missing, so that
# `.ci/run` passes on a machine with nothing else (and an empty CARGO_HOME):
#
#   scripts/tools.sh [fetch] [toolchain] [deny] [fuzz]     (no argument: all four)
#
#   fetch  every crate of Cargo.lock and fuzz/Cargo.lock, for every platform
#          (the offline cargo-deny check reads them all; a build on Linux
#          never downloads the Windows or macOS ones)
#   toolchain  the no_std build's rustup target, clippy and rustfmt
#   deny   cargo-deny, pinned
#   fuzz   a nightly toolchain and cargo-fuzz, pinned
#
# The Debian packages of the binding tests are installed by
# scripts/ffi-test.sh, which needs them; nothing here needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned so that every machine runs the same checks; raise by hand.
CARGO_DENY_VERSION=0.20.2
CARGO_FUZZ_VERSION=0.13.2
NO_STD_TARGET=thumbv7em-none-eabihf

# The tools are run a few times per CI and never timed: built without LTO
# and with parallel codegen, cargo-deny compiles in a fraction of its
# release profile's time (fat LTO, one codegen unit).
quick_install() {
    CARGO_PROFILE_RELEASE_LTO=false \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
        cargo install --locked --quiet "$@"
}

# Whether `cargo <sub> --version` prints `<version>` (an external
# subcommand may live in $CARGO_HOME/bin, off PATH: ask cargo).
has_version() {
    local toolchain="$1" sub="$2" version="$3"
    cargo $toolchain "$sub" --version 2>/dev/null | grep -qF "$version"
}

fetch() {
    echo "== fetching the crates of Cargo.lock and fuzz/Cargo.lock (every platform)"
    cargo fetch --locked --quiet
    (cd fuzz && cargo fetch --locked --quiet)
}

toolchain() {
    # clippy and rustfmt come with rustup's default profile, not its minimal one.
    for component in clippy rustfmt; do
        if ! rustup component list --installed | grep -q "^$component"; then
            rustup component add "$component"
        fi
    done
    if ! rustup target list --installed | grep -qx "$NO_STD_TARGET"; then
        echo "== installing the rustup target $NO_STD_TARGET"
        rustup target add "$NO_STD_TARGET"
    fi
}

deny() {
    if ! has_version "" deny "$CARGO_DENY_VERSION"; then
        echo "== installing cargo-deny $CARGO_DENY_VERSION"
        quick_install cargo-deny --version "$CARGO_DENY_VERSION" --force
    fi
}

fuzz() {
    if ! cargo +nightly --version >/dev/null 2>&1; then
        echo "== installing a nightly toolchain (cargo-fuzz needs sanitizer flags)"
        rustup toolchain install nightly --profile minimal
    fi
    if ! has_version +nightly fuzz "$CARGO_FUZZ_VERSION"; then
        echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
        quick_install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --force
    fi
}

if (($# == 0)); then
    set -- fetch toolchain deny fuzz
fi
for what in "$@"; do
    case "$what" in
        fetch | toolchain | deny | fuzz) "$what" ;;
        *)
            echo "usage: $0 [fetch] [toolchain] [deny] [fuzz]" >&2
            exit 2
            ;;
    esac
done
