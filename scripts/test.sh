#!/usr/bin/env bash
# The test suite, as README.md gives it to a newcomer and as CI runs it.
# Builds once and runs every test of the workspace, including the check that
# spec/vectors/ is current. Extra arguments go to `cargo test`: CI and
# scripts/ffi-test.sh pass `--no-run` to build exactly what the tests use,
# with the same features, so that nothing is compiled twice.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --all-features --locked "$@"
