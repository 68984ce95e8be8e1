#!/usr/bin/env bash
# Installs what kylin-gateway's demo and tests need on a fresh Debian machine:
# ZooKeeper and the Curator jars (for the interop test), a JDK, Chromium
# (the status page's real-browser test), the
# wasm32-wasip2 target, and builds the example plugins. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(zookeeper libcurator-discovery-java libcurator-recipes-java libcurator-framework-java
          libcurator-client-java default-jdk-headless chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  echo "setup: installing ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

echo "setup: building example plugins (wasm32-wasip2)"
(cd plugins && cargo build --release --target wasm32-wasip2 --quiet)
