#!/usr/bin/env bash
# Memory per idle keep-alive client connection, the same way for nginx (as
# a proxy), HAProxy and gateway builds: WARM connections each answered once
# and kept, the proxy's resident set read, then IDLE more answered once and
# kept idle, read again; the growth divided by IDLE. The same procedure as
# tests/tests/core_idle_memory.rs, here for the other proxies too.
#
#   bench/idle_memory.sh                  # the release build of this tree
#   bench/idle_memory.sh BIN [BIN...]     # given gateway binaries
#   IDLE=3000 bench/idle_memory.sh
#
# Needs nginx (Debian nginx-light), haproxy, python3 and curl. Stops what it
# started (by pid) on exit.
set -euo pipefail

IDLE=${IDLE:-2000}
WARM=${WARM:-200}
REQUEST_PATH=${REQUEST_PATH:-/kylin/api/projects}

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/kgw-idle.XXXXXX)
# shellcheck source=bench/common.sh
. "$root/bench/common.sh"

for tool in nginx haproxy python3 curl; do need "$tool"; done
if [ "$(ulimit -Sn)" -lt $((2 * (IDLE + WARM) + 100)) ]; then
    ulimit -Sn "$(ulimit -Hn)"
fi

binaries=("$@")
if [ ${#binaries[@]} = 0 ]; then
    binaries=("$(release_gateway)")
fi

# Opens $3 connections to port $2, one request each, answers read whole,
# all kept open; prints the resident set of pid $1 in KiB before and after.
cat >"$work/idle.py" <<'PY'
import socket, sys, time
pid, port, warm, idle, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()

def rss():
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

def settled():
    last = rss()
    for _ in range(10):
        time.sleep(0.3)
        now = rss()
        if now == last:
            break
        last = now
    return last

def served_once():
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += s.recv(65536)
    return s

kept = [served_once() for _ in range(warm)]
before = settled()
kept += [served_once() for _ in range(idle)]
after = settled()
print(before, after)
PY

measure() {
    local name=$1 pid=$2 port=$3 before after
    expect_2xx "$name" "http://127.0.0.1:$port$REQUEST_PATH"
    read -r before after < <(python3 "$work/idle.py" "$pid" "$port" "$WARM" "$IDLE" "$REQUEST_PATH")
    awk -v n="$name" -v b="$before" -v a="$after" -v i="$IDLE" \
        'BEGIN { printf "%-50s RSS %7d -> %7d KiB  %6.2f KiB per idle connection\n", n, b, a, (a - b) / i }'
}

nginx_port=$(free_port)
start_nginx "$nginx_port"
wait_port "$nginx_port"

echo "$IDLE idle keep-alive connections after $WARM warm-up ones, one GET $REQUEST_PATH each; load average $(cut -d' ' -f1-3 /proc/loadavg)"

proxy_port=$(free_port)
start_nginx_proxy "$proxy_port" "$nginx_port"
nginx_proxy_pid=$!
wait_port "$proxy_port"
measure "nginx as proxy" "$nginx_proxy_pid" "$proxy_port"
kill "$nginx_proxy_pid"

haproxy_port=$(free_port)
start_haproxy "$haproxy_port" "$nginx_port" 60 60
haproxy_pid=$!
wait_port "$haproxy_port"
measure "HAProxy" "$haproxy_pid" "$haproxy_port"
kill "$haproxy_pid"

for bin in "${binaries[@]}"; do
    gateway_port=$(free_port)
    admin_port=$(free_port)
    gateway_config "$work/gateway.toml" "$gateway_port" "$admin_port" "$nginx_port"
    RUST_LOG=${GATEWAY_LOG:-warn} "$bin" --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
    pid=$!
    pids+=($pid)
    wait_port "$gateway_port"
    measure "$bin" "$pid" "$gateway_port"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done
