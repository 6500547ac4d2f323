#!/usr/bin/env bash
# Install the Debian packages Cortex needs when they are missing (root, as on CI).
set -euo pipefail
need=()
for p in libopenblas-dev libdlpack-dev libsqlite3-dev cmake postgresql; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
