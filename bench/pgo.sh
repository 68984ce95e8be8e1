#!/usr/bin/env bash
# A profile-guided (PGO) release build of the gateway, to measure what PGO
# would give against the plain release build (bench/ab.sh, instructions.sh).
# Builds an instrumented gateway, trains it on this bench's own load (GET
# and Kylin query POSTs through a gateway without a plugin and one with
# query-affinity; HTTP/1.1 in plaintext and over TLS, and HTTP/2 over TLS),
# merges the profiles and builds again with them. Prints
# the optimised binary's path; both builds have target dirs of their own
# (target/pgo-train, target/pgo), so the normal release build is untouched.
#
#   bench/pgo.sh                            # two release builds, ~30 min on 2 cores
#   POST=yes NGINX=yes bench/ab.sh target/release/kylin-gateway target/pgo/release/kylin-gateway
#
# Needs rustup's llvm-tools component (an llvm-profdata that reads rustc's
# LLVM's profiles; Debian's is older), nginx (Debian nginx-light), wrk,
# h2load (Debian nghttp2-client), openssl and curl. Stops what it started
# (by pid) on exit.
set -euo pipefail

TRAIN=${TRAIN:-5s}

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/kgw-pgo.XXXXXX)
# shellcheck source=bench/common.sh
. "$root/bench/common.sh"

need wrk
need nginx
need curl
need h2load
need openssl
sysroot=$(rustc --print sysroot)
profdata=$(find "$sysroot/lib/rustlib" -name llvm-profdata -type f | head -1)
if [ -z "$profdata" ]; then
    echo "bench: rustc's llvm-profdata is missing: rustup component add llvm-tools" >&2
    exit 1
fi
profiles=$work/profiles

build() {
    local target_dir=$1 flags=$2
    echo "building kylin-gateway (release, $target_dir, RUSTFLAGS=$flags)..." >&2
    RUSTFLAGS=$flags cargo build --release -p kylin-gateway \
        --manifest-path "$root/Cargo.toml" --target-dir "$target_dir" >&2
}

# Loads the gateway at plaintext port $1 and TLS port $2 with GET and the
# query POST: HTTP/1.1 (wrk) on both, HTTP/2 (h2load, ALPN) over TLS.
train_load() {
    local http_port=$1 https_port=$2 post url
    for post in no yes; do
        unset REQUEST_PATH
        POST=$post choose_request
        for url in "http://127.0.0.1:$http_port$REQUEST_PATH" "https://127.0.0.1:$https_port$REQUEST_PATH"; do
            expect_2xx "gateway" -k "$url" "${probe_args[@]}"
            wrk -t1 -c16 -d"$TRAIN" "${wrk_script[@]}" "$url" >"$work/wrk.txt"
            check_wrk "gateway" "$work/wrk.txt"
        done
        h2load -c16 -m4 -D "${TRAIN%s}" "${h2load_body[@]}" "https://127.0.0.1:$https_port$REQUEST_PATH" >"$work/h2load.txt"
        check_h2load "$work/h2load.txt"
    done
}

# Runs target $1 (BIN or BIN+affinity, see target_bin) in front of the
# backend on port $2, with a plaintext and a TLS listener, under
# train_load's load, then stops it gracefully so that it writes its profile.
train() {
    local target=$1 node_port=$2 http_port https_port pid
    http_port=$(free_port)
    https_port=$(free_port)
    target_config "$target" "$work/gateway.toml" "$http_port" "$(free_port)" "$node_port"
    serve_tls "$work/gateway.toml" "$work/tls.pem" "$work/tls.key" "$https_port"
    RUST_LOG=warn "$(target_bin "$target")" --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
    pid=$!
    wait_port "$http_port"
    wait_port "$https_port"
    train_load "$http_port" "$https_port"
    kill -TERM "$pid"
    wait "$pid" || true
}

self_signed_cert
build "$root/target/pgo-train" "-Cprofile-generate=$profiles"
node_port=$(free_port)
start_nginx "$node_port"
wait_port "$node_port"
train "$root/target/pgo-train/release/kylin-gateway" "$node_port"
train "$root/target/pgo-train/release/kylin-gateway+affinity" "$node_port"
"$profdata" merge -o "$work/merged.profdata" "$profiles"
build "$root/target/pgo" "-Cprofile-use=$work/merged.profdata"
echo "$root/target/pgo/release/kylin-gateway"
