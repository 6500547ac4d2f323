#!/usr/bin/env bash
# Build libcortex.so (release, Swift standard library linked statically, so the
# library needs only libc, libstdc++, libm and OpenBLAS at run time) and print its path.
# Used by CMakeLists.txt, the Python package's setup.py, the benchmarks and CI.
#
# The library exports exactly the functions of include/cortex.h, versioned CORTEX_<ABI>
# (a linker version script made from the header; everything else, the Swift runtime
# included, is local), and its SONAME is libcortex.so.<ABI major>. A symlink of that
# name is made beside it, for programs linked against it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scratch="${CORTEX_SCRATCH:-$root/.build-static}"
abi="$(sed -n 's/^#define CX_ABI_VERSION \([0-9][0-9]*\).*/\1/p' "$root/include/cortex.h")"
mkdir -p "$scratch"
map="$scratch/cortex.map"
python3 "$root/scripts/check_abi.py" --version-script "$abi" > "$map.new"
cmp -s "$map.new" "$map" 2>/dev/null && rm "$map.new" || mv "$map.new" "$map"
swift build --package-path "$root" -c release --product cortex \
  -Xswiftc -static-stdlib -Xlinker "--version-script=$map" -Xlinker "-soname=libcortex.so.$abi" \
  --scratch-path "$scratch" >&2
ln -sf libcortex.so "$scratch/release/libcortex.so.$abi"
echo "$scratch/release/libcortex.so"
