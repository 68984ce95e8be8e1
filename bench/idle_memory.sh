#!/usr/bin/env bash
# Memory per idle keep-alive client connection, the same way for nginx (as
# a proxy), HAProxy and gateway builds: WARM connections each answered once
# and kept, the proxy's resident set read, then IDLE more answered once and
# kept idle, read again; the growth divided by IDLE. Twice per proxy: in a
# burst (all IDLE within a second or two), and in WAVES waves WAVE_PAUSE
# seconds apart, as a BI tool's pool fills over time (the gateway releases
# an idle connection's buffers after limits.idle_release_ms, 1 s; in a
# burst they are all held at once, and the allocator keeps that peak mapped). The
# waves are the procedure of tests/tests/core_idle_memory.rs, here for the
# other proxies too.
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
WAVES=${WAVES:-10}
WAVE_PAUSE=${WAVE_PAUSE:-2.5}
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

# Opens $3 warm-up connections to port $2, then $4 more in $6 waves $7 s
# apart, one request each, answers read whole, all kept open; prints the
# resident set of pid $1 in KiB before and after the $4.
cat >"$work/idle.py" <<'PY'
import socket, sys, time
pid, port, warm, idle, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
waves, pause = int(sys.argv[6]), float(sys.argv[7])
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
time.sleep(pause)
before = settled()
for wave in range(waves):
    kept += [served_once() for _ in range(idle // waves)]
    time.sleep(pause)
after = settled()
print(before, after)
PY

# One measurement: "burst" or "waves" ($4).
measure_once() {
    local name=$1 pid=$2 port=$3 shape=$4 waves=1 before after
    [ "$shape" = waves ] && waves=$WAVES
    read -r before after < <(python3 "$work/idle.py" "$pid" "$port" "$WARM" "$IDLE" "$REQUEST_PATH" "$waves" "$WAVE_PAUSE")
    awk -v n="$name" -v s="$shape" -v b="$before" -v a="$after" -v i="$IDLE" \
        'BEGIN { printf "%-50s %-5s RSS %7d -> %7d KiB  %6.2f KiB per idle connection\n", n, s, b, a, (a - b) / i }'
}

# Starts $1 ("nginx", "haproxy" or a gateway binary) on port $2 in front
# of the nginx backend; sets started_pid.
start_proxy() {
    case $1 in
    nginx) start_nginx_proxy "$2" "$nginx_port" ;;
    haproxy) start_haproxy "$2" "$nginx_port" 60 60 ;;
    *)
        gateway_config "$work/gateway.toml" "$2" "$(free_port)" "$nginx_port"
        RUST_LOG=${GATEWAY_LOG:-warn} "$1" --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
        pids+=($!)
        ;;
    esac
    started_pid=$!
}

# Measures $2 (see start_proxy), named $1, in a burst and in waves, each
# on a freshly started process.
measure() {
    local name=$1 proxy=$2 port shape
    for shape in burst waves; do
        port=$(free_port)
        start_proxy "$proxy" "$port"
        wait_port "$port"
        expect_2xx "$name" "http://127.0.0.1:$port$REQUEST_PATH"
        measure_once "$name" "$started_pid" "$port" "$shape"
        kill "$started_pid"
        wait "$started_pid" 2>/dev/null || true
    done
}

nginx_port=$(free_port)
start_nginx "$nginx_port"
wait_port "$nginx_port"

echo "$IDLE idle keep-alive connections after $WARM warm-up ones, one GET $REQUEST_PATH each; waves: $WAVES, $WAVE_PAUSE s apart; load average $(cut -d' ' -f1-3 /proc/loadavg)"

measure "nginx as proxy" nginx
measure "HAProxy" haproxy
for bin in "${binaries[@]}"; do
    measure "$bin" "$bin"
done
