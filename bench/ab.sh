#!/usr/bin/env bash
# Two or more gateway builds (and, with NGINX=yes, nginx as a proxy) under
# load at the same time, so that every build meets the same machine: on a
# shared VM the steal time changes from one second to the next, and builds
# measured one after the other (bench/proxy.sh) differ by more than most
# changes do. Each build gets its own wrk (-t1 -c32, GET) for the same
# DURATION; its user and kernel CPU time per request is read from
# /proc/PID/stat. Prints one line per round; compare builds within a line.
#
#   bench/ab.sh BASE NEW                  # two builds, pinned (PIN=yes)
#   ROUNDS=6 DURATION=6s bench/ab.sh A B C
#   NGINX=yes bench/ab.sh BUILD           # against nginx on the same core
#   bench/ab.sh BASE BASE                 # an A/A run: the method's noise
#   POST=yes bench/ab.sh BIN BIN+affinity # a Kylin query POST; the second
#                                         # with the query-affinity plugin
#   POST=yes bench/ab.sh BIN+affinity BIN+plugin=plugins/target/wasm32-wasip2/release/misbehave.wasm
#                                         # query-affinity against a plugin
#                                         # that does nothing
#   TLS=yes bench/ab.sh FAT PGO           # through the gateways' TLS
#                                         # listeners (wrk keeps its
#                                         # connections: record encryption,
#                                         # few handshakes); not with NGINX=yes
#   H2=yes TLS=yes bench/ab.sh FAT PGO    # HTTP/2 (h2load -c32 -m1, ALPN;
#                                         # h2c without TLS); not with
#                                         # NGINX=yes
#
# With PIN=yes (the default) every proxy shares CPU 0 and wrk and the
# backend CPU 1, so the builds also compete for one core: fine for an A/B
# of builds, not the issue's one-proxy shape (bench/proxy.sh is).
# Needs nginx (Debian nginx-light) and wrk (with H2=yes h2load, Debian
# nghttp2-client); stops what it started on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-6s}
PIN=${PIN:-yes}

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/kgw-ab.XXXXXX)
# shellcheck source=bench/common.sh
. "$root/bench/common.sh"

need wrk
need nginx
choose_request
scheme=http
if [ "${H2:-no}" = yes ]; then
    if [ "${NGINX:-no}" = yes ]; then
        echo "bench/ab.sh: H2=yes measures gateways only, not with NGINX=yes" >&2
        exit 2
    fi
    need h2load
fi
if [ "${TLS:-no}" = yes ]; then
    if [ "${NGINX:-no}" = yes ]; then
        echo "bench/ab.sh: TLS=yes measures gateways only, not with NGINX=yes" >&2
        exit 2
    fi
    need openssl
    scheme=https
    self_signed_cert
fi
if [ $# = 0 ]; then
    echo "usage: bench/ab.sh GATEWAY_BIN [GATEWAY_BIN...]" >&2
    exit 2
fi
if [ "$PIN" = yes ]; then
    need taskset
    on_proxy_cpu=(taskset -c 0)
    on_load_cpu=(taskset -c 1)
fi

backend=$(free_port)
start_nginx "$backend"
wait_port "$backend"

names=() ports=() procs=()
if [ "${NGINX:-no}" = yes ]; then
    port=$(free_port)
    start_nginx_proxy "$port" "$backend"
    names+=(nginx) ports+=("$port") procs+=($!)
    wait_port "$port"
fi
build=0
for target in "$@"; do
    n=${#names[@]}
    build=$((build + 1))
    port=$(free_port)
    bin=$(target_bin "$target")
    target_config "$target" "$work/gateway-$n.toml" "$port" "$(free_port)" "$backend"
    if [ "$scheme" = https ]; then
        serve_tls "$work/gateway-$n.toml" "$work/tls.pem" "$work/tls.key"
    fi
    RUST_LOG=warn "${on_proxy_cpu[@]}" "$bin" --config "$work/gateway-$n.toml" \
        >"$work/gateway-$n.log" 2>&1 &
    pids+=($!)
    names+=("b$build") ports+=("$port") procs+=($!)
    echo "b$build: $target"
    wait_port "$port"
done
load_tool="wrk -t1 -c32 -d$DURATION"
[ "${H2:-no}" = yes ] && load_tool="h2load -c32 -m1 -D ${DURATION%s}"
echo "$request_method $scheme $REQUEST_PATH, $load_tool per target, all at once, pinned: $PIN"

cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

# Starts one wrk (or h2load) per target at once; waits for them all.
load_all() {
    local duration=$1 prefix=$2 k url load=()
    for k in "${!ports[@]}"; do
        url="$scheme://127.0.0.1:${ports[$k]}$REQUEST_PATH"
        if [ "${H2:-no}" = yes ]; then
            "${on_load_cpu[@]}" h2load -c32 -m1 -D "${duration%s}" "${h2load_body[@]}" "$url" \
                >"$work/$prefix-$k.txt" &
        else
            "${on_load_cpu[@]}" wrk -t1 -c32 -d"$duration" "${wrk_script[@]}" "$url" \
                >"$work/$prefix-$k.txt" &
        fi
        load=("${load[@]}" $!)
    done
    wait "${load[@]}"
}

# Checks the load tool's output $2 for target $1 and prints its requests.
requests_done() {
    if [ "${H2:-no}" = yes ]; then
        check_h2load "$2"
        awk '/^requests:/ {print $8}' "$2"
    else
        check_wrk "$1" "$2"
        awk '/requests in/ {print $1}' "$2"
    fi
}

hz=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
    load_all 1s warmup
    declare -a user0 kernel0
    for k in "${!procs[@]}"; do read -r "user0[$k]" "kernel0[$k]" < <(cpu_ticks "${procs[$k]}"); done
    load_all "$DURATION" wrk
    line="round $round:"
    for k in "${!procs[@]}"; do
        requests=$(requests_done "${names[$k]}" "$work/wrk-$k.txt")
        read -r user kernel < <(cpu_ticks "${procs[$k]}")
        line+=$(awk -v n="${names[$k]}" -v u=$((user - user0[k])) -v s=$((kernel - kernel0[k])) \
            -v hz="$hz" -v q="$requests" 'BEGIN {
                printf " %s %d req, user %.2f + kernel %.2f = %.2f us/req |",
                    n, q, u / hz * 1e6 / q, s / hz * 1e6 / q, (u + s) / hz * 1e6 / q }')
    done
    echo "$line"
done
