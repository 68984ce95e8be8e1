#!/usr/bin/env bash
# Hostile clients against kylin-gateway, nginx (reverse proxy) and HAProxy
# side by side, each in front of the same nginx "Kylin node", each with a
# 5 s limit on a request head and on a stalled body (gateway:
# header_read_timeout_ms, body_read_timeout_ms; nginx: client_header_timeout,
# client_body_timeout; HAProxy: timeout http-request, timeout client).
# Prints one table row per attack and proxy; docs/reliability.md quotes it.
#
#   bench/attacks.sh                   # about 4 minutes
#   CONNECTIONS=500 bench/attacks.sh   # a lighter run
#
# Attacks: slowloris and slow POST (Debian's slowhttptest, trickling every
# 10 s), a flood of idle connections, an oversized head, ambiguous framing
# (Content-Length with Transfer-Encoding: chunked, a smuggling attempt).
# For each: whether a normal request was answered during the attack, how
# many of the attacker's connections the proxy still held after the
# limit, and for the gateway its peak open files and resident memory.
# Needs nginx, haproxy, slowhttptest, curl, python3.
set -euo pipefail

CONNECTIONS=${CONNECTIONS:-1000}
LIMIT_S=5

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/kgw-attacks.XXXXXX)
# shellcheck source=bench/common.sh
. "$root/bench/common.sh"

for tool in nginx haproxy slowhttptest curl python3; do need "$tool"; done
gateway_bin=${GATEWAY_BIN:-$(release_gateway)}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

node_port=$(free_port)
gateway_port=$(free_port)
admin_port=$(free_port)
nginx_proxy_port=$(free_port)
haproxy_port=$(free_port)

start_nginx "$node_port"
start_nginx_proxy "$nginx_proxy_port" "$node_port"
nginx_proxy_pid=$!
# Both timeouts at LIMIT_S, as for the others (appended to its http block).
sed -i "s|keepalive_requests 1000000;|keepalive_requests 1000000;\n    client_header_timeout ${LIMIT_S}s;\n    client_body_timeout ${LIMIT_S}s;\n    large_client_header_buffers 4 64k;|" \
    "$work/nginx-proxy/nginx.conf"
kill "$nginx_proxy_pid" && wait "$nginx_proxy_pid" 2>/dev/null || true
nginx -p "$work/nginx-proxy" -c "$work/nginx-proxy/nginx.conf" 2>"$work/nginx-proxy/stderr.log" &
pids+=($!)
nginx_proxy_pid=$!

gateway_config "$work/gateway.toml" "$gateway_port" "$admin_port" "$node_port"
cat >>"$work/gateway.toml" <<EOF
[limits]
header_read_timeout_ms = $((LIMIT_S * 1000))
body_read_timeout_ms = $((LIMIT_S * 1000))
EOF
RUST_LOG=error "$gateway_bin" --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
pids+=($!)
gateway_pid=$!

cat >"$work/haproxy.cfg" <<EOF
global
    maxconn 60000
defaults
    mode http
    timeout connect 1s
    timeout client ${LIMIT_S}s
    timeout http-request ${LIMIT_S}s
    timeout server 30s
    option http-keep-alive
frontend attacks
    bind 127.0.0.1:$haproxy_port
    default_backend kylin
backend kylin
    server node 127.0.0.1:$node_port
EOF
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)
haproxy_pid=$!

for port in "$node_port" "$gateway_port" "$nginx_proxy_port" "$haproxy_port"; do wait_port "$port"; done
targets=(kylin-gateway:$gateway_port:$gateway_pid nginx:$nginx_proxy_port:$nginx_proxy_pid
    haproxy:$haproxy_port:$haproxy_pid)

# Open connections of a process to its listening port (its side of them).
held() { # pid port
    local pid=$1 port=$2
    ss -Htn state established "( sport = :$port )" 2>/dev/null | wc -l
}
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# A normal request during the attack: status and time.
probe() { # port
    curl -s -o /dev/null -m 5 -w '%{http_code} in %{time_total}s' "http://127.0.0.1:$1/kylin/api/projects" ||
        echo "no answer in 5 s"
}

# Samples the gateway's open files and RSS every 0.5 s into $work/peak-$1.
watch_gateway() { # label
    local label=$1
    (
        max_fd=0 max_rss=0
        while kill -0 "$gateway_pid" 2>/dev/null; do
            f=$(fds "$gateway_pid") r=$(rss_kib "$gateway_pid")
            [ "$f" -gt "$max_fd" ] && max_fd=$f
            [ "$r" -gt "$max_rss" ] && max_rss=$r
            echo "$max_fd $max_rss" >"$work/peak-$label"
            sleep 0.5
        done
    ) &
    echo $!
}

row() { printf '| %-14s | %-13s | %-22s | %-34s | %s |\n' "$@"; }

echo "| attack         | proxy         | normal request during  | attacker's connections held        | gateway peak |"
echo "|---|---|---|---|---|"

slow_attack() { # name, slowhttptest mode flags
    local name=$1
    shift
    for target in "${targets[@]}"; do
        IFS=: read -r proxy port pid <<<"$target"
        local watcher=0 peak=""
        [ "$proxy" = kylin-gateway ] && watcher=$(watch_gateway "$name")
        slowhttptest "$@" -c "$CONNECTIONS" -r 500 -i 10 -l 25 -x 24 -p 3 \
            -u "http://127.0.0.1:$port/kylin/api/query" -g -o "$work/$name-$proxy" \
            >"$work/$name-$proxy.out" 2>&1 &
        local attacker=$!
        sleep 3
        local during
        during=$(probe "$port")
        # Past the limit plus a tick of each proxy's timer wheel.
        sleep $((LIMIT_S + 4))
        local still
        still=$(held "$pid" "$port")
        wait "$attacker" || true
        local connected
        connected=$(awk -F, 'NR > 1 && $4 + 0 > m { m = $4 + 0 } END { print m + 0 }' "$work/$name-$proxy.csv" 2>/dev/null || echo "?")
        if [ "$watcher" != 0 ]; then
            kill "$watcher" 2>/dev/null || true
            read -r f r <"$work/peak-$name"
            peak="$f fds, $((r / 1024)) MiB RSS"
        fi
        row "$name" "$proxy" "$during" "peak $connected, $still after $((LIMIT_S + 7)) s" "$peak"
    done
}

slow_attack slowloris -H
slow_attack "slow POST" -B -s 100000

# A flood of idle connections that send nothing.
for target in "${targets[@]}"; do
    IFS=: read -r proxy port pid <<<"$target"
    python3 - "$port" "$CONNECTIONS" >"$work/flood-$proxy.out" 2>&1 <<'PY' &
import socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(count):
    try:
        held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
    except OSError:
        pass
print(len(held), flush=True)
time.sleep(15)
PY
    flooder=$!
    sleep 2
    during=$(probe "$port")
    sleep $((LIMIT_S + 4))
    still=$(held "$pid" "$port")
    peak=""
    [ "$proxy" = kylin-gateway ] && peak="$(fds "$gateway_pid") fds, $(($(rss_kib "$gateway_pid") / 1024)) MiB RSS"
    kill "$flooder" 2>/dev/null || true
    wait "$flooder" 2>/dev/null || true
    row "idle flood" "$proxy" "$during" "$(head -1 "$work/flood-$proxy.out") opened, $still after $((LIMIT_S + 6)) s" "$peak"
done

# An oversized head (100 KiB header): status, and whether the node saw it.
big=$(head -c 102400 /dev/zero | tr '\0' 'x')
for target in "${targets[@]}"; do
    IFS=: read -r proxy port pid <<<"$target"
    status=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -H "X-Big: $big" "http://127.0.0.1:$port/kylin/api/projects" || echo "closed")
    row "100 KiB head" "$proxy" "$(probe "$port")" "answered $status" ""
done

# Content-Length and Transfer-Encoding together, a second request hidden
# in the body: what the client gets back, and whether the connection
# stays open for the smuggled request.
for target in "${targets[@]}"; do
    IFS=: read -r proxy port pid <<<"$target"
    answer=$(python3 - "$port" <<'PY'
import socket, sys
port = int(sys.argv[1])
smuggled = b"GET /kylin/api/smuggled HTTP/1.1\r\nHost: g\r\n\r\n"
body = b"0\r\n\r\n" + smuggled
head = (b"POST /kylin/api/query HTTP/1.1\r\nHost: g\r\nContent-Length: %d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" % len(body))
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(head + body)
got = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
except socket.timeout:
    pass
statuses = [line.split(b" ")[1].decode() for line in got.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
print(f"{len(statuses)} answer(s) {'/'.join(statuses)}, then {'closed' if not chunk else 'left open'}")
PY
    ) || answer="error"
    row "CL + TE" "$proxy" "$(probe "$port")" "$answer" ""
done
