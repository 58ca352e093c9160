#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine with only the Rust toolchain
# and npm: the build fetches the embedded ClickHouse engine with npm, and
# cargo-nextest (every test in its own process: one engine per process) is
# installed if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v npm >/dev/null || { echo "npm is required: the build fetches the embedded ClickHouse engine with it" >&2; exit 1; }
# The HTML report and the dashboard are checked in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium for the report test…" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
            || echo "could not install chromium: the browser tests will fail (BILTEN_SKIP_BROWSER_TESTS=1 skips them knowingly)" >&2
    else
        echo "no chromium (apt-get install chromium): the browser tests will fail (BILTEN_SKIP_BROWSER_TESTS=1 skips them knowingly)" >&2
    fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest…" >&2
    cargo install cargo-nextest --locked
fi
# Every file made from the event schema's declaration is what it makes
# (schema/src/lib.rs; `cargo xtask codegen` writes them).
cargo xtask codegen --check
# The built-in plugins' own unit tests, natively (their workspace is apart).
cargo test --quiet --manifest-path plugins/Cargo.toml --target-dir target/plugins-host
# Fault-injection tests need the failpoints compiled in.
status=0
cargo nextest run --workspace --no-fail-fast --features bilten-analytics/failpoints "$@" || status=$?
# The end-to-end tests again on the `clickhouse` backend, against a second
# server's ClickHouse HTTP interface: the real protocol, the real engine.
# Backups run as the store's backup user, on its `backups` disk. Left out:
# the checks of the store's own directories (tiers, file modes), which on
# this backend belong to the other server.
echo "the end-to-end tests again, on the clickhouse backend…" >&2
BILTEN_TEST_BACKEND=clickhouse cargo nextest run --workspace --no-fail-fast \
    --features bilten-analytics/failpoints \
    -E '(binary(ingest) | binary(views) | binary(dashboard) | binary(migrations) | binary(hardening) | binary(retention) | binary(ops) | binary(plugins) | binary(router) | binary(segment) | binary(tracker) | binary(clients_js) | binary(backups)) and not (test(tier_directories) | test(readable_by_the_owner_only))' \
    "$@" || status=$?
exit $status
