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
#   bench/proxy.sh                      # 5 slices of 2 s per target, 2 threads,
#                                       # 64 connections
#   DURATION=1s SLICES=8 CONNECTIONS=32 bench/proxy.sh
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
# Each target is measured in SLICES runs of DURATION, interleaved: one
# slice of every target, in a new shuffled order, then the next. A stall of
# the machine (the hypervisor, a kernel thread on the proxy's core) then
# falls on every target alike instead of on the one that ran at the time;
# latency percentiles are over all of a target's requests (wrk's latency
# histograms, summed), CPU and requests/s over all of its slices.
#
# Needs nginx (Debian nginx-light) and wrk; installs haproxy with apt-get if
# it is missing and we are root. Starts everything on 127.0.0.1 with its own
# temp dir, and stops what it started (by pid) on exit.
set -euo pipefail

DURATION=${DURATION:-2s}
SLICES=${SLICES:-5}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
PIN=${PIN:-no}
# The proxies are measured one after the other in a shuffled order, a new
# one per slice: in rounds 98-109 the slot right after nginx measured worse
# in 9 of 12 rounds, whichever gateway build was in it.
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
# wrk's latency histogram (microseconds, count), and the slice's requests and
# duration, to the file WRK_HISTOGRAM names: the slices are summed later.
cat >>"$work/post.lua" <<'EOF'
done = function(summary, latency, requests)
    local out = assert(io.open(os.getenv("WRK_HISTOGRAM"), "w"))
    out:write("requests ", summary.requests, " duration_us ", summary.duration, "\n")
    for i = 1, #latency do
        local value, count = latency(i)
        out:write(value, " ", count, "\n")
    end
    out:close()
end
EOF

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
    WRK_HISTOGRAM=/dev/null "${on_load_cpu[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$work/post.lua" \
        "$url" >"$work/warmup-$name.txt"
    check_wrk "$name (warm-up)" "$work/warmup-$name.txt"
}

run_wrk() { # one slice; its histogram to $work/hist-NAME-SLICE.txt
    local name=$1 port=$2 slice=$3
    WRK_HISTOGRAM="$work/hist-$name-$slice.txt" "${on_load_cpu[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" \
        -d"$DURATION" --latency -s "$work/post.lua" "http://127.0.0.1:$port$REQUEST_PATH" >"$work/wrk-$name-$slice.txt"
    check_wrk "$name (slice $slice)" "$work/wrk-$name-$slice.txt"
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

# Requests/s, p50 and p99 (ms) over all the slices' histograms of a target.
pooled_latency() {
    local files=("$work"/hist-"$1"-*.txt) requests duration_us
    read -r requests duration_us < <(awk '$1 == "requests" {r += $2; d += $4} END {print r, d}' "${files[@]}")
    grep -hv '^requests' "${files[@]}" | sort -n -k1,1 | awk -v r="$requests" -v d="$duration_us" '
        { value[NR] = $1; count[NR] = $2; total += $2 }
        END {
            for (i = 1; i <= NR; i++) {
                seen += count[i]
                if (p50 == "" && seen >= total * 0.50) p50 = value[i]
                if (p99 == "" && seen >= total * 0.99) p99 = value[i]
            }
            printf "%.0f %.3f %.3f\n", r / (d / 1e6), p50 / 1000, p99 / 1000
        }'
}

# The proxies in a new shuffled order for each slice; `direct` (the backend
# alone) always first.
slice_order() {
    local rest=("${targets[@]:1}")
    if [ "$ORDER" = shuffled ]; then
        mapfile -t rest < <(printf '%s\n' "${rest[@]}" | shuf)
    fi
    printf '%s\n' "${targets[0]}" "${rest[@]}"
}

declare -A ticks requests others_ticks stolen_ticks
for target in "${targets[@]}"; do
    IFS=: read -r name port pid <<<"$target"
    echo "wrk: warming up $name..." >&2
    warm_up "$name" "$port"
    ticks[$name]=0 requests[$name]=0 others_ticks[$name]=0 stolen_ticks[$name]=0
done

orders=()
for slice in $(seq "$SLICES"); do
    mapfile -t measured < <(slice_order)
    orders+=("$(printf '%s\n' "${measured[@]}" | cut -d: -f1 | paste -sd' ')")
    for target in "${measured[@]}"; do
        IFS=: read -r name port pid <<<"$target"
        echo "wrk: $name, slice $slice of $SLICES ($DURATION, $THREADS threads, $CONNECTIONS connections)..." >&2
        before=0
        if [ "$pid" != 0 ]; then before=$(cpu_ticks "$pid"); fi
        read -r core_busy core_stolen < <(proxy_core_ticks)
        run_wrk "$name" "$port" "$slice"
        read -r core_busy_after core_stolen_after < <(proxy_core_ticks)
        spent=0
        if [ "$pid" != 0 ]; then spent=$(($(cpu_ticks "$pid") - before)); fi
        ticks[$name]=$((ticks[$name] + spent))
        requests[$name]=$((requests[$name] + $(awk '$1 == "requests" {print $2}' "$work/hist-$name-$slice.txt")))
        # Pinned, CPU 0 is the proxy's alone in principle: what else ran
        # there (kernel threads, other processes) and what the hypervisor
        # took during the slice stall the proxy, and show in its p99.
        others_ticks[$name]=$((others_ticks[$name] + core_busy_after - core_busy - spent))
        stolen_ticks[$name]=$((stolen_ticks[$name] + core_stolen_after - core_stolen))
    done
done

declare -A rps p50 p99 cpu_us others_ms stolen_ms
for target in "${targets[@]}"; do
    IFS=: read -r name port pid <<<"$target"
    read -r rps[$name] p50[$name] p99[$name] < <(pooled_latency "$name")
    # The proxy's own CPU time per request.
    if [ "$pid" != 0 ]; then
        cpu_us[$name]=$(awk -v t="${ticks[$name]}" -v hz="$(getconf CLK_TCK)" -v n="${requests[$name]}" \
            'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    else
        cpu_us[$name]=-
    fi
    if [ "$PIN" = yes ] && [ "$pid" != 0 ]; then
        others_ms[$name]=$(ticks_to_ms "${others_ticks[$name]}")
        stolen_ms[$name]=$(ticks_to_ms "${stolen_ticks[$name]}")
    else
        others_ms[$name]=- stolen_ms[$name]=-
    fi
done

echo
echo "POST $REQUEST_PATH on loopback, wrk -t$THREADS -c$CONNECTIONS, $SLICES interleaved slices of $DURATION per target, $(nproc) CPUs, pinned: $PIN"
echo "measured in these orders, one line per slice:"
printf '  %s\n' "${orders[@]}"
echo "ratios: req/s, p50 and p99 to direct nginx; proxy CPU per request to nginx as a proxy"
echo "latency percentiles: over all of a target's slices"
if [ "$PIN" = yes ]; then
    echo "others_ms, stolen_ms: CPU 0's time during the measured slices spent on other tasks, and taken by the hypervisor"
fi
printf '%-17s %12s %9s %10s %9s %10s %9s %12s %9s %9s %9s\n' target req/s ratio p50_ms ratio p99_ms ratio proxy_cpu_us ratio others_ms stolen_ms
for target in "${targets[@]}"; do
    name=${target%%:*}
    awk -v n="$name" -v r="${rps[$name]}" -v dr="${rps[direct]}" -v cpu="${cpu_us[$name]}" \
        -v ncpu="${cpu_us[nginx]}" -v o="${others_ms[$name]}" -v st="${stolen_ms[$name]}" \
        -v a="${p50[$name]}" -v da="${p50[direct]}" -v b="${p99[$name]}" -v db="${p99[direct]}" \
        'BEGIN { printf "%-17s %12.0f %9.2f %10.3f %9.2f %10.3f %9.2f %12s %9s %9s %9s\n", n, r, r / dr, a, a / da, b, b / db, cpu, (cpu == "-" ? "-" : sprintf("%.2f", cpu / ncpu)), o, st }'
done
