#!/usr/bin/env bash
# Fuzz ward-core, the message content, the relay frames and the audit log for a bounded time:
# scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# Builds every cargo-fuzz target in fuzz/ once (`cargo fuzz list`: every
# [[bin]] of fuzz/Cargo.toml but seed_corpus), replays the saved crash
# inputs under fuzz/regressions/<target>/, then fuzzes each target in turn
# (one at a time: the targets are CPU bound and the machines have few cores)
# from a seed corpus generated here. Prints executions and coverage per
# target and exits non-zero if any target crashed or any regression input
# still fails. Crash inputs land in fuzz/artifacts/<target>/.
#
# Needs a nightly toolchain (cargo-fuzz uses sanitizer flags) and
# cargo-fuzz, which scripts/tools.sh installs if missing (from rustup and
# crates.io, the only network it reaches).
set -euo pipefail

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

# The nightly toolchain and cargo-fuzz, installed if missing.
"$root/scripts/tools.sh" fuzz

# Every build and run must use the same flags, or `cargo fuzz run` rebuilds.
# Debug assertions turn integer overflow in ward-core into a crash.
build_flags=(--debug-assertions)

# Inputs longer than the largest valid encoding (about 1.5 KB for a bundle or
# pre-key message, a few KB for a session with skipped keys) only slow the
# fuzzer down; the model's 64 operations fit in well under 1 KB. Relay frames
# of a few KB reach every message type (with a few envelopes or bundles); an
# audit entry is at most 402 bytes and an export of a dozen entries and
# heads fits in 8 KB.
declare -A max_len=(
    [prekey_bundle]=4096
    [prekey_message]=4096
    [device_identity]=2048
    [session_state]=8192
    [sender_key]=4096
    [group]=8192
    [role_schedule]=4096
    [message_kind_and_decrypt]=4096
    [ratchet_model]=1024
    [relay_frame]=8192
    [content]=8192
    [audit_entry]=8192
)
# libFuzzer grows its length limit slowly from small inputs; at the few dozen
# executions per second of the model that would keep it at two or three
# operations for the whole run.
declare -A extra_flags=(
    [ratchet_model]="-len_control=0"
)

echo "== building fuzz targets"
cargo +nightly fuzz build "${build_flags[@]}"
# seed_corpus is a bin of the fuzz crate but not a target (see below).
mapfile -t targets < <(cargo +nightly fuzz list | grep -vx seed_corpus)

# Valid encodings sit behind signatures and AEAD tags the fuzzer cannot
# forge, so seed each corpus with some. Deterministic and idempotent: the
# same seed files are rewritten on every run, next to what fuzzing added.
echo "== writing seed corpus"
# Built above with the targets' flags, so it cost no second build.
host="$(rustc +nightly -vV | sed -n 's/^host: //p')"
"${CARGO_TARGET_DIR:-$root/fuzz/target}/$host/release/seed_corpus" corpus

logs="$root/fuzz/target/fuzz-logs"
mkdir -p "$logs"
failed=()

# Saved crash inputs first: a known bug still present should be reported
# even if the fuzzer does not happen to find it again this time.
shopt -s nullglob
for dir in "$root"/fuzz/regressions/*/; do
    target="$(basename "$dir")"
    for input in "$dir"*; do
        [[ -f "$input" ]] || continue
        name="${target}/$(basename "$input")"
        if cargo +nightly fuzz run "${build_flags[@]}" "$target" "$input" \
            -- -rss_limit_mb=2048 -timeout=60 >"$logs/regression.log" 2>&1; then
            echo "regression $name: passes"
        else
            echo "regression $name: STILL FAILS"
            grep -m1 -E "panicked at|ERROR: " "$logs/regression.log" | sed 's/^/    /' || true
            failed+=("regression $name")
        fi
    done
done
shopt -u nullglob

printf '\n%-26s %12s %9s %8s %8s  %s\n' target executions exec/s cov ft result
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="$logs/$target.log"
    status=0
    # The outer timeout only guards against a harness that never starts;
    # libFuzzer's -timeout catches a single input that hangs.
    timeout "$((seconds + 600))" \
        cargo +nightly fuzz run "${build_flags[@]}" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" \
        -rss_limit_mb=2048 \
        -max_len="${max_len[$target]:-4096}" \
        -timeout=30 \
        -print_final_stats=1 \
        ${extra_flags[$target]:-} \
        >"$log" 2>&1 || status=$?

    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    # The last status line libFuzzer printed (DONE on a clean finish).
    last="$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -1 || true)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    if [[ $status -eq 0 ]]; then
        result=ok
    else
        result="CRASH (exit $status)"
        failed+=("$target")
    fi
    printf '%-26s %12s %9s %8s %8s  %s\n' "$target" "${execs:-?}" "${rate:-?}" \
        "${cov:-?}" "${ft:-?}" "$result"
    if [[ $status -ne 0 ]]; then
        grep -m1 -E "panicked at|ERROR: |==ERROR" "$log" | sed 's/^/    /' || true
        grep -E "Test unit written to" "$log" | sed 's/^/    /' || true
        echo "    full log: $log"
    fi
done

if ((${#failed[@]})); then
    echo
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo
echo "all targets ran ${seconds}s without a crash"
