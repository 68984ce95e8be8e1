#!/usr/bin/env bash
# Proxy overhead on loopback: wrk against nginx directly, through
# nginx as a reverse proxy (upstream keep-alive), through
# kylin-gateway (release build), through kylin-gateway with its access
# log on, with the query-affinity plugin deciding every query, and through
# HAProxy, with the same wrk
# settings; prints requests/s and latency, and each as a ratio to direct.
# Fails (exit 1) if any request to any target is not answered 2xx: errors
# are not throughput.
#
#   bench/proxy.sh                      # 10 s per target, 2 threads, 64 connections
#   DURATION=5s CONNECTIONS=32 bench/proxy.sh
#   GATEWAY_BIN=path BASELINE_BIN=path bench/proxy.sh   # a given build, and
#                                       # another one as a "baseline" row
#   VARIANT_TOML=$'[runtime]\nkind = "current-thread"' bench/proxy.sh
#                                       # the same build with more config, as
#                                       # a "variant" row
#   ORDER=fixed bench/proxy.sh          # the proxies measured in the order
#                                       # of the table, not shuffled
#   PIN=yes bench/proxy.sh              # the issue's shape: every proxy on
#                                       # CPU 0 (so one gateway serving
#                                       # thread, one HAProxy thread, one
#                                       # nginx process), the backend and wrk
#                                       # on CPU 1; also reports how much of
#                                       # CPU 0 other tasks and the
#                                       # hypervisor took during each run
#
# Needs nginx (Debian nginx-light) and wrk; installs haproxy with apt-get if
# it is missing and we are root. Starts everything on 127.0.0.1 with its own
# temp dir, and stops what it started (by pid) on exit.
set -euo pipefail

DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
PIN=${PIN:-no}
# The proxies are measured one after the other in a shuffled order: in
# rounds 98-109 the slot right after nginx measured worse in 9 of 12
# rounds, whichever gateway build was in it.
ORDER=${ORDER:-shuffled}
# A Kylin query (POST with a JSON body): the class routing plugins see.
REQUEST_PATH=${REQUEST_PATH:-/kylin/api/query}

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/kgw-bench.XXXXXX)
# shellcheck source=bench/common.sh
. "$root/bench/common.sh"

need wrk
need nginx
need curl
if ! command -v haproxy >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y haproxy >/dev/null
    else
        echo "bench: haproxy is not installed (apt-get install haproxy)" >&2
        exit 1
    fi
fi

gateway_bin=${GATEWAY_BIN:-$(release_gateway)}

if [ "$PIN" = yes ]; then
    need taskset
    on_proxy_cpu=(taskset -c 0)
    on_load_cpu=(taskset -c 1)
fi

nginx_port=$(free_port)
gateway_port=$(free_port)
admin_port=$(free_port)
plugin_port=$(free_port)
plugin_admin_port=$(free_port)
haproxy_port=$(free_port)
nginx_proxy_port=$(free_port)
baseline_port=$(free_port)
baseline_admin_port=$(free_port)
variant_port=$(free_port)
log_port=$(free_port)
log_admin_port=$(free_port)
variant_admin_port=$(free_port)

start_nginx "$nginx_port"
start_nginx_proxy "$nginx_proxy_port" "$nginx_port"
nginx_proxy_pid=$!
gateway_config "$work/gateway.toml" "$gateway_port" "$admin_port" "$nginx_port"
# Access logs off for every proxy: HAProxy below logs nothing either.
RUST_LOG=warn "${on_proxy_cpu[@]}" "$gateway_bin" --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
pids+=($!)
gateway_pid=$!

# Another build of the gateway (BASELINE_BIN), measured in the same run.
baseline_pid=0
if [ -n "${BASELINE_BIN:-}" ]; then
    gateway_config "$work/baseline.toml" "$baseline_port" "$baseline_admin_port" "$nginx_port"
    RUST_LOG=warn "${on_proxy_cpu[@]}" "$BASELINE_BIN" --config "$work/baseline.toml" >"$work/baseline.log" 2>&1 &
    pids+=($!)
    baseline_pid=$!
fi

# The same build with more config (VARIANT_TOML), measured in the same run.
variant_pid=0
if [ -n "${VARIANT_TOML:-}" ]; then
    gateway_config "$work/variant.toml" "$variant_port" "$variant_admin_port" "$nginx_port"
    printf '%s\n' "$VARIANT_TOML" >>"$work/variant.toml"
    RUST_LOG=warn "${on_proxy_cpu[@]}" "$gateway_bin" --config "$work/variant.toml" >"$work/variant.log" 2>&1 &
    pids+=($!)
    variant_pid=$!
fi

# The same gateway with its access log on (operators run with it on),
# written to a file as a service manager would.
gateway_config "$work/gateway-log.toml" "$log_port" "$log_admin_port" "$nginx_port"
RUST_LOG=warn,access=info "${on_proxy_cpu[@]}" "$gateway_bin" --config "$work/gateway-log.toml" \
    >"$work/gateway-access.log" 2>&1 &
pids+=($!)
log_pid=$!

# The same gateway with the query-affinity plugin deciding every query.
gateway_config "$work/gateway-plugin.toml" "$plugin_port" "$plugin_admin_port" "$nginx_port"
add_plugin "$work/gateway-plugin.toml" "$PLUGIN"
RUST_LOG=warn "${on_proxy_cpu[@]}" "$gateway_bin" --config "$work/gateway-plugin.toml" >"$work/gateway-plugin.log" 2>&1 &
pids+=($!)
plugin_pid=$!

write_post_lua "$work/post.lua"

start_haproxy "$haproxy_port" "$nginx_port" 30 300
haproxy_pid=$!

wait_port "$nginx_port"
wait_port "$gateway_port"
wait_port "$plugin_port"
wait_port "$haproxy_port"
wait_port "$nginx_proxy_port"
targets=(direct:$nginx_port:0 nginx:$nginx_proxy_port:$nginx_proxy_pid
    kylin-gateway:$gateway_port:$gateway_pid)
if [ "$baseline_pid" != 0 ]; then
    wait_port "$baseline_port"
    targets+=(baseline:$baseline_port:$baseline_pid)
fi
if [ "$variant_pid" != 0 ]; then
    wait_port "$variant_port"
    targets+=(variant:$variant_port:$variant_pid)
fi
wait_port "$log_port"
targets+=(gateway+log:$log_port:$log_pid gateway+affinity:$plugin_port:$plugin_pid
    haproxy:$haproxy_port:$haproxy_pid)

warm_up() {
    local name=$1 port=$2
    local url="http://127.0.0.1:$port$REQUEST_PATH"
    # One request first: wrk does not count 3xx as errors.
    expect_2xx "$name" -X POST -H 'Content-Type: application/json' --data "$query_body" "$url"
    # A short warm-up fills connection pools; it is not measured, but it
    # must not fail either.
    "${on_load_cpu[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$work/post.lua" "$url" >"$work/warmup-$name.txt"
    check_wrk "$name (warm-up)" "$work/warmup-$name.txt"
}

run_wrk() {
    local name=$1 port=$2
    "${on_load_cpu[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/post.lua" \
        "http://127.0.0.1:$port$REQUEST_PATH" >"$work/wrk-$name.txt"
    check_wrk "$name" "$work/wrk-$name.txt"
}

to_ms() { # wrk latency (e.g. 512.00us, 1.20ms, 1.01s) → milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
        else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
        else print v }'
}

cpu_ticks() { # user + system clock ticks of a process
    awk '{print $14 + $15}' "/proc/$1/stat"
}

proxy_core_ticks() { # busy and stolen clock ticks of the proxy's CPU (0)
    awk '$1 == "cpu0" {print $2 + $3 + $4 + $7 + $8, $9}' /proc/stat
}

ticks_to_ms() {
    awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", t * 1000 / hz }'
}

# `direct` (the backend alone) first; the proxies after it, shuffled.
measured=("${targets[@]:1}")
if [ "$ORDER" = shuffled ]; then
    mapfile -t measured < <(printf '%s\n' "${measured[@]}" | shuf)
fi
measured=("${targets[0]}" "${measured[@]}")
order=$(printf '%s\n' "${measured[@]}" | cut -d: -f1 | paste -sd' ')

declare -A rps p50 p99 cpu_us others_ms stolen_ms
for target in "${measured[@]}"; do
    IFS=: read -r name port pid <<<"$target"
    echo "wrk: $name ($DURATION, $THREADS threads, $CONNECTIONS connections)..." >&2
    warm_up "$name" "$port"
    before=0
    if [ "$pid" != 0 ]; then before=$(cpu_ticks "$pid"); fi
    read -r core_busy core_stolen < <(proxy_core_ticks)
    run_wrk "$name" "$port"
    read -r core_busy_after core_stolen_after < <(proxy_core_ticks)
    out="$work/wrk-$name.txt"
    # The proxy's own CPU time per request.
    if [ "$pid" != 0 ]; then
        ticks=$(($(cpu_ticks "$pid") - before))
        requests=$(awk '/requests in/ {print $1}' "$out")
        cpu_us[$name]=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$requests" \
            'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    else
        ticks=0
        cpu_us[$name]=-
    fi
    # Pinned, CPU 0 is the proxy's alone in principle: what else ran there
    # (kernel threads, other processes) and what the hypervisor took during
    # the run stall the proxy, and show in its p99.
    if [ "$PIN" = yes ] && [ "$pid" != 0 ]; then
        others_ms[$name]=$(ticks_to_ms $((core_busy_after - core_busy - ticks)))
        stolen_ms[$name]=$(ticks_to_ms $((core_stolen_after - core_stolen)))
    else
        others_ms[$name]=- stolen_ms[$name]=-
    fi
    rps[$name]=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p50[$name]=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    p99[$name]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
done

echo
echo "POST $REQUEST_PATH on loopback, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $(nproc) CPUs, pinned: $PIN"
echo "measured in this order: $order"
echo "ratios: req/s, p50 and p99 to direct nginx; proxy CPU per request to nginx as a proxy"
if [ "$PIN" = yes ]; then
    echo "others_ms, stolen_ms: CPU 0's time during the measured run spent on other tasks, and taken by the hypervisor"
fi
printf '%-17s %12s %9s %10s %9s %10s %9s %12s %9s %9s %9s\n' target req/s ratio p50_ms ratio p99_ms ratio proxy_cpu_us ratio others_ms stolen_ms
for target in "${targets[@]}"; do
    name=${target%%:*}
    awk -v n="$name" -v r="${rps[$name]}" -v dr="${rps[direct]}" -v cpu="${cpu_us[$name]}" \
        -v ncpu="${cpu_us[nginx]}" -v o="${others_ms[$name]}" -v st="${stolen_ms[$name]}" \
        -v a="${p50[$name]}" -v da="${p50[direct]}" -v b="${p99[$name]}" -v db="${p99[direct]}" \
        'BEGIN { printf "%-17s %12.0f %9.2f %10.3f %9.2f %10.3f %9.2f %12s %9s %9s %9s\n", n, r, r / dr, a, a / da, b, b / db, cpu, (cpu == "-" ? "-" : sprintf("%.2f", cpu / ncpu)), o, st }'
done
