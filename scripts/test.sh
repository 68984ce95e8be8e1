#!/usr/bin/env bash
# Runs every check and test, after setting the machine up (scripts/setup.sh).
# This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# A clean CI clone builds once: incremental state would only cost disk (GBs).
if [[ "${CI:-}" == "true" ]]; then
  export CARGO_INCREMENTAL=0
fi

# cargo-deb: tests/tests/deploy_files.rs packages a build with
# scripts/package.sh, the documented way to install the gateway.
if ! command -v cargo-deb >/dev/null; then
  echo "setup: installing cargo-deb (for the packaging test)"
  cargo install cargo-deb --locked --version 3.8.0 --quiet
fi

echo "== format and lints"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)
cargo clippy --workspace --all-targets --quiet -- -D warnings
# --all-targets: the plugins' unit tests are linted too, not only their
# library code.
(cd plugins && cargo clippy --target wasm32-wasip2 --all-targets --quiet -- -D warnings)

echo "== build"
cargo build --workspace --bins --quiet

echo "== tests"
cargo test --workspace
# plugins/ is its own workspace (excluded above): its guest unit tests (pure
# helpers of query-affinity and maintenance-window) run on the host target.
(cd plugins && cargo test --workspace)
