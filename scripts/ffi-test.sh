#!/usr/bin/env bash
# The mobile bindings, end to end: builds ward-client-ffi (debug cdylib) and
# ward-relay, generates the Python, Kotlin and Swift bindings with the
# crate's own uniffi-bindgen, then runs against a relay on 127.0.0.1:
#   - crates/client-ffi/tests/python/test_ffi.py, the FFI's full test;
#   - crates/client-ffi/tests/kotlin/SmokeTest.kt, compiled with the
#     Kotlin bindings and run on the JVM (enroll, send, receive, listener,
#     an on-call role and a reply in its thread, a care team, typed errors).
# Swift bindings are generated and checked to be there, so they cannot rot;
# they cannot be compiled on Linux. Needs Rust; installs what else is missing
# (python3, a JDK and Debian's libjna-java with apt-get; the Kotlin compiler
# from npm, pinned by crates/client-ffi/tests/kotlin/package-lock.json).
#
#   bash scripts/ffi-test.sh        (honours CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
out="$target_dir/ffi-bindings"
# The test build leaves the cdylib in deps/ (only `cargo build` copies it
# up a level).
case "$(uname -s)" in
    Darwin) lib="$target_dir/debug/deps/libward_client_ffi.dylib" ;;
    *) lib="$target_dir/debug/deps/libward_client_ffi.so" ;;
esac

missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v java >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -f /usr/share/java/jna.jar ] || missing+=(libjna-java)
if ((${#missing[@]})); then
    echo "== installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== no unsafe code of our own in crates/client-ffi"
if grep -rnw --include='*.rs' 'unsafe' crates/client-ffi/src crates/client-ffi/tests \
    | grep -vE '^[^:]+:[0-9]+:\s*//'; then
    echo "ffi-test: crates/client-ffi must not contain unsafe code" >&2
    exit 1
fi

echo "== building ward-client-ffi (cdylib + uniffi-bindgen) and ward-relay"
# The test build has them all (the `cli` feature included): reusing it means
# nothing is compiled twice when CI has just run the tests.
scripts/test.sh --no-run --quiet
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

echo "== kotlin smoke test on the JVM against a relay on 127.0.0.1"
kotlin_dir="$target_dir/kotlin-smoke"
mkdir -p "$kotlin_dir"
cp crates/client-ffi/tests/kotlin/package.json crates/client-ffi/tests/kotlin/package-lock.json "$kotlin_dir/"
(cd "$kotlin_dir" && npm ci --prefer-offline --no-audit --no-fund --silent)
kotlin_lib="$kotlin_dir/node_modules/kotlin-compiler/lib"
classpath="/usr/share/java/jna.jar:$kotlin_lib/kotlinx-coroutines-core-jvm.jar"
"$kotlin_dir/node_modules/kotlin-compiler/bin/kotlinc" -nowarn -cp "$classpath" \
    "$out/kotlin/uniffi/ward_client_ffi/ward_client_ffi.kt" \
    crates/client-ffi/tests/kotlin/SmokeTest.kt \
    -d "$kotlin_dir/smoke.jar"
WARD_RELAY="$target_dir/debug/ward-relay" timeout 300 java \
    -Djna.library.path="$(dirname "$lib")" \
    -cp "$kotlin_dir/smoke.jar:$kotlin_lib/kotlin-stdlib.jar:$classpath" SmokeTestKt
