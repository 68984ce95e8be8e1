#!/usr/bin/env bash
# Starts one standalone ZooKeeper (Debian's `zookeeper` package) on
# 127.0.0.1:PORT with its data in DIR, waits until `srvr` reports a mode,
# and prints the server's pid on stdout (logs go to DIR/zookeeper.log).
# Stop it with `kill PID`. Installs the package if the jar is missing.
#
# Usage: scripts/zk-standalone.sh PORT DIR [TICK_MS]
set -euo pipefail

port=${1:?usage: zk-standalone.sh PORT DIR [TICK_MS]}
dir=${2:?usage: zk-standalone.sh PORT DIR [TICK_MS]}
tick=${3:-2000}
jar=/usr/share/java/zookeeper.jar

if [ ! -f "$jar" ]; then
    flock /tmp/kylin-gateway-tests-zookeeper-install.lock \
        sh -c "test -f $jar || (apt-get update && apt-get install -y zookeeper)" >&2
fi

mkdir -p "$dir/data"
dir=$(cd "$dir" && pwd)
cat > "$dir/zoo.cfg" <<CFG
tickTime=$tick
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
maxSessionTimeout=$((tick * 20))
admin.enableServer=false
4lw.commands.whitelist=*
CFG

java -Xmx256m -cp "$jar:/usr/share/java/slf4j-simple.jar" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
    >>"$dir/zookeeper.log" 2>&1 </dev/null &
pid=$!

srvr() {
    # bash's /dev/tcp: no nc needed.
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf srvr >&3 && cat <&3" 2>/dev/null || true
}

for _ in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "zookeeper exited; see $dir/zookeeper.log" >&2
        tail -20 "$dir/zookeeper.log" >&2
        exit 1
    fi
    if srvr | grep -q '^Mode: '; then
        echo "$pid"
        exit 0
    fi
    sleep 0.1
done
echo "zookeeper on port $port not serving after 30 s; see $dir/zookeeper.log" >&2
kill "$pid" 2>/dev/null || true
exit 1
