#!/usr/bin/env bash
# The mobile bindings, end to end: builds ward-client-ffi (debug cdylib) and
# ward-relay, generates the Python, Kotlin and Swift bindings with the
# crate's own uniffi-bindgen (Kotlin and Swift are only generated and
# checked to be there, so they cannot rot; they are compiled elsewhere),
# and runs crates/client-ffi/tests/python/test_ffi.py against a relay on
# 127.0.0.1. Needs Rust; installs python3 with apt-get if it is missing.
#
#   bash scripts/ffi-test.sh        (honours CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
out="$target_dir/ffi-bindings"
case "$(uname -s)" in
    Darwin) lib="$target_dir/debug/libward_client_ffi.dylib" ;;
    *) lib="$target_dir/debug/libward_client_ffi.so" ;;
esac

if ! command -v python3 >/dev/null 2>&1; then
    echo "== installing python3"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3 >/dev/null
fi

echo "== no unsafe code of our own in crates/client-ffi"
if grep -rnw --include='*.rs' 'unsafe' crates/client-ffi/src crates/client-ffi/tests \
    | grep -vE '^[^:]+:[0-9]+:\s*//'; then
    echo "ffi-test: crates/client-ffi must not contain unsafe code" >&2
    exit 1
fi

echo "== building ward-client-ffi (cdylib + uniffi-bindgen) and ward-relay"
# One build with the same features for the library and the bindgen, so
# nothing is compiled twice.
cargo build -p ward-client-ffi --features cli -p ward-relay --bin ward-relay --bin uniffi-bindgen --lib
bindgen="$target_dir/debug/uniffi-bindgen"

echo "== generating bindings into $out"
rm -rf "$out"
for language in python kotlin swift; do
    "$bindgen" generate --library "$lib" --language "$language" --no-format \
        --out-dir "$out/$language" >/dev/null
done
require() {
    local found
    found="$(find "$out/$1" -type f -name "$2" -size +0 | head -n 1)"
    if [ -z "$found" ]; then
        echo "ffi-test: no non-empty $2 generated in $out/$1" >&2
        exit 1
    fi
}
require python ward_client_ffi.py
require kotlin '*.kt'
require swift ward_client_ffi.swift
require swift ward_client_ffiFFI.h
require swift ward_client_ffiFFI.modulemap
cp "$lib" "$out/python/"

echo "== python test against a relay on 127.0.0.1"
WARD_FFI_BINDINGS="$out/python" WARD_RELAY="$target_dir/debug/ward-relay" \
    timeout 300 python3 -B crates/client-ffi/tests/python/test_ffi.py
