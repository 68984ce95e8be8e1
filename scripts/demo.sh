#!/usr/bin/env bash
# The demo: a real ZooKeeper, three simulated Kylin nodes (two `all`, one
# `query`) registered and campaigning exactly as Curator does, and the gateway
# with the query-affinity plugin in front. It shows where queries and jobs go,
# then stops the job-engine leader and shows jobs following the new one.
# Everything it starts is stopped on exit. `scripts/demo.sh --once` exits after
# the tour instead of serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

once=false
[ "${1:-}" = "--once" ] && once=true

zk_port=${DEMO_ZK_PORT:-21810}
http_port=${DEMO_HTTP_PORT:-17070}
admin_port=${DEMO_ADMIN_PORT:-17071}
node_ports=(${DEMO_NODE_PORTS:-17081 17082 17083})
modes=(all all query)
dir=.demo
zk_pid=
node_pids=()
gateway_pid=

alive() { for pid in "$@"; do kill -0 "$pid" 2>/dev/null && echo "$pid"; done; true; }

# Stops PIDS with SIGTERM and waits for them until STEPS x 50 ms have
# passed; returns with the survivors still running.
stop_within() {
  local steps=$1; shift
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq 1 "$steps"); do
    [ -z "$(alive "$@")" ] && return 0
    sleep 0.05
  done
}

# Everything the demo started is gone within 2 s, whatever reached which
# process first (Ctrl-C sends SIGINT to the whole process group: ZooKeeper
# may already be dying while a node still tries to deregister from it, which
# the node gives up on only after seconds). The nodes and the gateway go
# first, while ZooKeeper can still take their deregistrations; then
# ZooKeeper (its JVM takes most of a second); whatever is left after at
# most 1.7 s is killed.
cleanup() {
  trap - EXIT INT TERM
  local everything=("${node_pids[@]}" $gateway_pid $zk_pid)
  [ ${#everything[@]} -gt 0 ] || return 0
  stop_within 16 "${node_pids[@]}" $gateway_pid
  stop_within 18 $zk_pid
  local left
  left=$(alive "${everything[@]}")
  if [ -n "$left" ]; then
    echo "== killing what did not stop in time: $(echo $left)" >&2
    kill -KILL $left 2>/dev/null || true
  fi
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

scripts/setup.sh
# The first build takes about 15 minutes on 2 cores: show cargo's progress
# when someone is watching.
quiet=(--quiet)
[ -t 1 ] && quiet=()
echo "== building (release; the first build takes ~10 min on 2 cores)"
cargo build --release "${quiet[@]}" -p kylin-gateway -p kylin-gateway-tests --bins

rm -rf "$dir" && mkdir -p "$dir"
echo "== ZooKeeper on 127.0.0.1:$zk_port"
zk_pid=$(scripts/zk-standalone.sh "$zk_port" "$dir/zk")

for i in 0 1 2; do
  name="node$((i + 1))-${modes[$i]}"
  target/release/kylin-sim --zk "127.0.0.1:$zk_port" --layout kylin-3.1 --mode "${modes[$i]}" \
    --name "$name" --port "${node_ports[$i]}" --session-timeout-ms 10000 \
    >"$dir/$name.out" 2>"$dir/$name.log" &
  node_pids+=("$!")
  for _ in $(seq 1 200); do grep -q READY "$dir/$name.out" 2>/dev/null && break; sleep 0.05; done
  echo "== Kylin node $name on 127.0.0.1:${node_ports[$i]} (mode ${modes[$i]})"
done

cat >"$dir/gateway.toml" <<TOML
[listen]
http = "127.0.0.1:$http_port"
admin = "127.0.0.1:$admin_port"

[discovery]
kind = "zookeeper"
connect = "127.0.0.1:$zk_port"
metadata_prefix = "kylin_metadata"
layout = "auto"
session_timeout_ms = 10000

[routing]
job_hold_ms = 15000

[[plugins]]
name = "affinity"
path = "$PWD/plugins/target/wasm32-wasip2/release/query_affinity.wasm"
config = '{"hash": "project+sql"}'
on_error = "fallback"
TOML

echo "== kylin-gateway on 127.0.0.1:$http_port (admin 127.0.0.1:$admin_port)"
RUST_LOG=${RUST_LOG:-info} target/release/kylin-gateway --config "$dir/gateway.toml" >"$dir/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 1 200); do
  curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break
  sleep 0.05
done

gw="http://127.0.0.1:$http_port/kylin/api"
node_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["node"])'; }
query() {
  curl -s -X POST "$gw/query" -H 'Content-Type: application/json' \
    -d "{\"project\":\"$1\",\"sql\":\"$2\"}" | node_of
}

echo
echo "== the cluster as the gateway sees it (GET /admin/nodes)"
curl -s "http://127.0.0.1:$admin_port/admin/nodes" | python3 -m json.tool
echo
echo "== the same SQL for the same project lands on the same node (query-affinity plugin)"
for _ in 1 2 3; do echo "  select count(*) from kylin_sales  -> $(query learn_kylin 'select count(*) from kylin_sales')"; done
echo "== different queries spread"
for t in kylin_sales kylin_account kylin_country kylin_cal_dt; do echo "  select * from $t  -> $(query learn_kylin "select * from $t")"; done
echo "== a cube build goes to the job-engine leader"
leader=$(curl -s -X PUT "$gw/cubes/kylin_sales_cube/build" -d '{"buildType":"BUILD"}' | node_of)
echo "  PUT /cubes/kylin_sales_cube/build -> $leader"

leader_address() {
  curl -s "http://127.0.0.1:$admin_port/admin/leader" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])'
}
old_leader=$(leader_address)
echo "== stopping the leader ($leader, $old_leader) with SIGTERM"
for i in 0 1 2; do
  if [ "node$((i + 1))-${modes[$i]}" = "$leader" ]; then kill -TERM "${node_pids[$i]}"; fi
done
for _ in $(seq 1 500); do [ "$(leader_address)" != "$old_leader" ] && break; sleep 0.01; done
echo "  the gateway now names $(leader_address) as the leader"
echo "  PUT /cubes/kylin_sales_cube/build -> $(curl -s -X PUT "$gw/cubes/kylin_sales_cube/build" -d '{}' | node_of)"

echo
echo "Status page: http://127.0.0.1:$admin_port/   metrics: http://127.0.0.1:$admin_port/metrics"
echo "Logs in $dir/."
if ! $once; then
  echo "Serving; Ctrl-C stops everything."
  wait "$gateway_pid" || true
fi
