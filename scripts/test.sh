#!/usr/bin/env bash
# The test suite, as README.md gives it to a newcomer and as CI runs it.
# Installs what it needs; builds once and runs every test of the workspace,
# including the check that spec/vectors/ is current.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked
