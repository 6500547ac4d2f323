#!/usr/bin/env bash
# README command 2: every test. Swift (XCTest) against the goldens, the fuzzer for a
# bounded number of runs, the concurrency tests under ThreadSanitizer, the C tests
# (ctest), then the Python tests (pytest).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/deps.sh
log="$(mktemp)"
echo "== swift test =="
swift test >"$log" 2>&1 || { tail -n 100 "$log"; exit 1; }
grep -E '^\[(golden|kernels|threads)\]' "$log" || true   # measured max errors
grep -E 'Executed [0-9]+ tests' "$log" | tail -n 1
echo "== ABI drift: cortex.h vs the Swift exports =="
# Every @_cdecl signature as written in Sources/CortexABI against the header (no extra
# build); c.exports (ctest) then checks the built library's symbol table.
python3 scripts/check_abi.py --swift Sources/CortexABI
echo "== ThreadSanitizer: ConcurrencyTests, ThreadCountTests, ServingTests =="
swift test --sanitize=thread --filter "ConcurrencyTests|ThreadCountTests|ServingTests" --scratch-path .build-tsan >"$log" 2>&1 || { tail -n 60 "$log"; exit 1; }
grep -E '^\[threads\]|Executed [0-9]+ tests' "$log" | tail -n 2
echo "== fuzz (libFuzzer + ASan, bounded) =="
scripts/fuzz.sh "${CORTEX_FUZZ_RUNS:-20000}"
echo "== C tests (ctest) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2 >/dev/null
ctest --test-dir build --output-on-failure
echo "== Python tests (pytest) =="
scripts/python_env.sh
swift build --product cortex-serve >/dev/null          # the server test_serve.py drives
# PostgreSQL on loopback for the scale-out tests (Ray + shared session store); they
# must run here, not skip.
export CORTEX_PG_URL="$(scripts/pg_local.sh start)" CORTEX_REQUIRE_SCALEOUT=1
trap 'scripts/pg_local.sh stop' EXIT
CORTEX_SERVE="$root/.build/debug/cortex-serve" .venv/bin/python -m pytest -q bindings/python/tests
