#!/usr/bin/env bash
# Instructions per plugin call for each variant of gateway/benches/plugin_abi.rs,
# counted by callgrind as the difference between two runs of different
# lengths (so compiling and instantiating the probe cancel out). Runs
# without the pooling allocator: valgrind cannot reserve its address space,
# so the probes' memories are bounds-checked here.
#
#   bench/plugin_abi.sh                     # every variant
#   bench/plugin_abi.sh push-body pull-body
#
# Needs valgrind.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
command -v valgrind >/dev/null || { echo "bench: valgrind is not installed" >&2; exit 1; }
work=$(mktemp -d /tmp/kgw-abi.XXXXXX)
trap 'rm -rf "$work"' EXIT

cd "$root"
(cd plugins && cargo build --release --target wasm32-wasip2 --quiet)
# One build: its JSON messages name the bench's executable; compiler errors
# still reach stderr.
bench=$(cargo build --release --quiet -p kylin-gateway --bench plugin_abi \
    --message-format=json-render-diagnostics |
    sed -n 's/.*"executable":"\([^"]*plugin_abi[^"]*\)".*/\1/p' | tail -1)

instructions() { # VARIANT CALLS
    UNPOOLED=1 ONLY=$1 N=$2 valgrind --tool=callgrind \
        --callgrind-out-file="$work/$1-$2.out" "$bench" >/dev/null 2>"$work/$1-$2.log"
    sed -n 's/^summary: //p' "$work/$1-$2.out"
}

[ $# -gt 0 ] || set -- push-empty pull-empty push-body pull-body push-empty-sync
short=2000 long=12000
for variant in "$@"; do
    a=$(instructions "$variant" $short)
    b=$(instructions "$variant" $long)
    printf '%-18s %7d instructions per call\n' "$variant" $(((b - a) / (long - short)))
done
