#!/usr/bin/env bash
# Runs Strait's test suite: formatting, lints, then every crate's unit, table and
# end-to-end tests (real gateway processes, echo backends and TLS on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
mkdir -p target
set +e
cargo test --workspace --locked 2>&1 | tee target/test-output.log
status=${PIPESTATUS[0]}
set -e
# One total for the whole workspace (cargo prints one line per test binary).
awk '/^test result:/ {p += $4; f += $6} END {printf "%d passed, %d failed\n", p, f}' target/test-output.log
exit "$status"
