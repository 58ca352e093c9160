#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine with only the Rust toolchain
# and npm: the build fetches the embedded ClickHouse engine with npm, and
# cargo-nextest (every test in its own process: one engine per process) is
# installed if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v npm >/dev/null || { echo "npm is required: the build fetches the embedded ClickHouse engine with it" >&2; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest…" >&2
    cargo install cargo-nextest --locked
fi
# Fault-injection tests need the failpoints compiled in.
exec cargo nextest run --workspace --no-fail-fast --features bilten-analytics/failpoints "$@"
