#!/usr/bin/env bash
# The gateway's user-space instructions per proxied request, counted by
# valgrind's callgrind on a release build after a warm-up: a measure that the
# other load on a shared machine does not disturb, unlike req/s (proxy.sh).
# Kernel time (syscalls, wakeups) is not counted.
#
#   bench/instructions.sh                     # the build of this tree
#   bench/instructions.sh OLD_BIN NEW_BIN     # compare given binaries
#   DURATION=8s GATEWAY_LOG=info bench/instructions.sh
#
# Needs valgrind, nginx (Debian nginx-light) and wrk. Stops what it started
# (by pid) on exit.
set -euo pipefail

DURATION=${DURATION:-8s}
REQUEST_PATH=${REQUEST_PATH:-/kylin/api/projects}
GATEWAY_LOG=${GATEWAY_LOG:-warn}

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/kgw-instr.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

for tool in valgrind callgrind_control wrk nginx; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is not installed" >&2; exit 1; }
done

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "bench: nothing listens on port $1" >&2
    exit 1
}

binaries=("$@")
if [ ${#binaries[@]} = 0 ]; then
    echo "building kylin-gateway (release)..." >&2
    cargo build --release -p kylin-gateway --manifest-path "$root/Cargo.toml" >&2
    target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    binaries=("$target_dir/release/kylin-gateway")
fi

nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            default_type application/json;
            return 200 '{"code":"000","data":[{"name":"learn_kylin"}],"msg":""}';
        }
    }
}
EOF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx/stderr.log" &
pids+=($!)
wait_port "$nginx_port"

echo "GET $REQUEST_PATH, wrk -t1 -c8 -d$DURATION after a 2 s warm-up, RUST_LOG=$GATEWAY_LOG"
for bin in "${binaries[@]}"; do
    gateway_port=$(free_port)
    admin_port=$(free_port)
    cat >"$work/gateway.toml" <<EOF
[listen]
http = "127.0.0.1:$gateway_port"
admin = "127.0.0.1:$admin_port"
[discovery]
kind = "static"
[[discovery.nodes]]
address = "127.0.0.1:$nginx_port"
mode = "all"
leader = true
EOF
    out="$work/callgrind.out"
    rm -f "$out"*
    # Instrumentation starts after the warm-up: start-up and pool filling
    # are not counted.
    RUST_LOG=$GATEWAY_LOG valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$out" "$bin" --config "$work/gateway.toml" \
        >"$work/gateway.log" 2>"$work/valgrind.log" &
    pid=$!
    pids+=($pid)
    wait_port "$gateway_port"
    wrk -t1 -c8 -d2s "http://127.0.0.1:$gateway_port$REQUEST_PATH" >/dev/null
    callgrind_control -i on "$pid" >/dev/null 2>&1
    requests=$(wrk -t1 -c8 -d"$DURATION" "http://127.0.0.1:$gateway_port$REQUEST_PATH" |
        awk '/requests in/ {print $1}')
    callgrind_control -i off "$pid" >/dev/null 2>&1
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    instructions=$(awk '/^totals:/ {print $2}' "$out"*)
    awk -v b="$bin" -v i="$instructions" -v n="$requests" \
        'BEGIN { printf "%-50s %8d requests %9.0f instructions/request\n", b, n, i / n }'
done
