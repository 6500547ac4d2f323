#!/usr/bin/env bash
# Build libcortex.so (release, Swift standard library linked statically, so the
# library needs only libc, libstdc++, libm and OpenBLAS at run time) and print its path.
# Used by CMakeLists.txt, the Python package's setup.py, the benchmarks and CI.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scratch="${CORTEX_SCRATCH:-$root/.build-static}"
swift build --package-path "$root" -c release --product cortex \
  -Xswiftc -static-stdlib --scratch-path "$scratch" >&2
echo "$scratch/release/libcortex.so"
