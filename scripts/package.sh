#!/usr/bin/env bash
# Builds the Debian package, target/debian/kylin-gateway_<version>_<arch>.deb
# (install and run it as docs/operations.md says).
#
#   scripts/package.sh                  # from a profile-guided build: 7-19%
#                                       # less CPU per request; bench/pgo.sh,
#                                       # about 30 minutes on 2 cores
#   PGO=no scripts/package.sh           # from the plain release build
#   PGO_BIN=target/pgo/release/kylin-gateway scripts/package.sh
#                                       # from a profile-guided build made
#                                       # before (by bench/pgo.sh)
#
# Needs cargo-deb (`cargo install cargo-deb`); the profile-guided build also
# needs what bench/pgo.sh does: rustup's llvm-tools, nginx, wrk, h2load and
# openssl, since it trains the gateway under load before building it again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null; then
    echo "package: cargo-deb is not installed: cargo install cargo-deb" >&2
    exit 1
fi

if [ "${PGO:-yes}" = no ]; then
    cargo deb -p kylin-gateway
    exit
fi
bin=${PGO_BIN:-}
if [ -z "$bin" ]; then
    bin=$(bench/pgo.sh | tail -n 1)
fi
if [ ! -x "$bin" ]; then
    echo "package: no profile-guided gateway at $bin" >&2
    exit 1
fi
# cargo-deb packages release/kylin-gateway of the target directory (the
# asset in gateway/Cargo.toml): give it one of its own, so that the plain
# build in target/release stays as it is.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
stage=$target_dir/package
mkdir -p "$stage/release" "$target_dir/debian"
cp "$bin" "$stage/release/kylin-gateway"
CARGO_TARGET_DIR=$stage cargo deb -p kylin-gateway --no-build --output "$target_dir/debian/"
