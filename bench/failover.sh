#!/usr/bin/env bash
# Job-engine failover through the gateway: real ZooKeeper, simulated Kylin
# nodes, several clients sending job requests back to back while the leader
# is stopped cleanly (SIGTERM), then crashed (SIGKILL), RUNS times over.
# Prints per failover the gap until the new leader answered and the failed
# requests, then the worst case; exits 1 if any request failed.
#
#   bench/failover.sh                   # 5 runs, node session 4000 ms, 6 clients
#   RUNS=20 SESSION_MS=2000 CLIENTS=9 bench/failover.sh
#
# A crash is only noticed when the dead node's ZooKeeper session expires,
# so its gap is about SESSION_MS (the test ZooKeeper caps sessions at 4 s;
# Kylin asks for 60-120 s, capped by the server at 20 x tickTime).
# Needs what scripts/setup.sh installs (ZooKeeper).
set -euo pipefail

RUNS=${RUNS:-5}
SESSION_MS=${SESSION_MS:-4000}
CLIENTS=${CLIENTS:-6}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
echo "building kylin-gateway, kylin-sim and the failover driver (release)..." >&2
cargo build --release --quiet -p kylin-gateway -p kylin-gateway-tests --bins --example failover
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
exec "$target_dir/release/examples/failover" "$RUNS" "$SESSION_MS" "$CLIENTS"
