#!/usr/bin/env bash
# The gateway's user-space instructions per proxied request, counted by
# valgrind's callgrind on a release build after a warm-up: a measure that the
# other load on a shared machine does not disturb, unlike req/s (proxy.sh).
# Kernel time (syscalls, wakeups) is not counted.
#
#   bench/instructions.sh                     # the build of this tree
#   bench/instructions.sh OLD_BIN NEW_BIN     # compare given binaries
#   DURATION=8s GATEWAY_LOG=info bench/instructions.sh
#   SEPARATE_THREADS=yes GATEWAY_LOG=info bench/instructions.sh
#                                             # also per thread: serving
#                                             # threads vs the access log's
#   POST=yes bench/instructions.sh BIN BIN+affinity
#                                             # a Kylin query POST; the
#                                             # second with query-affinity
#
# Needs valgrind, nginx (Debian nginx-light), wrk and curl. Fails (exit 1)
# if any request is not answered 2xx. Stops what it started
# (by pid) on exit.
set -euo pipefail

DURATION=${DURATION:-8s}
GATEWAY_LOG=${GATEWAY_LOG:-warn}
SEPARATE_THREADS=${SEPARATE_THREADS:-no}

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/kgw-instr.XXXXXX)
# shellcheck source=bench/common.sh
. "$root/bench/common.sh"

for tool in valgrind callgrind_control wrk nginx curl; do need "$tool"; done

binaries=("$@")
if [ ${#binaries[@]} = 0 ]; then
    binaries=("$(release_gateway)")
fi

# One line per thread that ran while counting (callgrind's
# --separate-threads files), named by a function only it runs: the serving
# threads (Proxy::handle), the access log's thread (access_log::, after
# inlining too), or other.
per_thread() {
    local requests=$1 file role
    shift
    for file in "$@"; do
        if grep -q 'Proxy::handle' "$file"; then
            role="serving thread"
        elif grep -q 'access_log::' "$file"; then
            role="access log thread"
        else
            role="other thread"
        fi
        awk -v r="$role" -v f="${file##*.}" -v n="$requests" \
            '/^totals:/ { printf "    %-20s %-6s %9.0f instructions/request\n", r, f, $2 / n }' "$file"
    done
}

nginx_port=$(free_port)
start_nginx "$nginx_port"
wait_port "$nginx_port"

choose_request
echo "$request_method $REQUEST_PATH, wrk -t1 -c8 -d$DURATION after a 2 s warm-up, RUST_LOG=$GATEWAY_LOG"
for target in "${binaries[@]}"; do
    bin=$(target_bin "$target")
    gateway_port=$(free_port)
    admin_port=$(free_port)
    target_config "$target" "$work/gateway.toml" "$gateway_port" "$admin_port" "$nginx_port"
    out="$work/callgrind.out"
    rm -f "$out"*
    # Instrumentation starts after the warm-up: start-up and pool filling
    # are not counted. Fair scheduling: the gateway's threads hand work to
    # each other (the log writers), and valgrind's default lock can starve
    # one of them until wrk times out.
    RUST_LOG=$GATEWAY_LOG valgrind --tool=callgrind --instr-atstart=no --fair-sched=yes \
        --separate-threads="$SEPARATE_THREADS" \
        --callgrind-out-file="$out" "$bin" --config "$work/gateway.toml" \
        >"$work/gateway.log" 2>"$work/valgrind.log" &
    pid=$!
    pids+=($pid)
    wait_port "$gateway_port"
    url="http://127.0.0.1:$gateway_port$REQUEST_PATH"
    # Instructions per *proxied* request: every request must succeed, or
    # the count would divide by errors. wrk does not count 3xx as errors,
    # hence one request checked first.
    expect_2xx "$target" "$url" "${probe_args[@]}"
    wrk -t1 -c8 -d2s "${wrk_script[@]}" "$url" >"$work/warmup.txt"
    check_wrk "$target (warm-up)" "$work/warmup.txt"
    callgrind_control -i on "$pid" >/dev/null 2>&1
    wrk -t1 -c8 -d"$DURATION" "${wrk_script[@]}" "$url" >"$work/wrk.txt"
    callgrind_control -i off "$pid" >/dev/null 2>&1
    check_wrk "$target" "$work/wrk.txt"
    requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    instructions=$(awk '/^totals:/ {s += $2} END {print s}' "$out"*)
    awk -v b="$target" -v i="$instructions" -v n="$requests" \
        'BEGIN { printf "%-50s %8d requests %9.0f instructions/request\n", b, n, i / n }'
    if [ "$SEPARATE_THREADS" = yes ]; then
        per_thread "$requests" "$out"*
    fi
done
