#!/usr/bin/env bash
# Create .venv (reusing the system numpy/pytest) and install cortex_swift into it,
# built against this checkout's libcortex.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[ -x .venv/bin/python ] || python3 -m venv --system-site-packages .venv
# The scale-out layer's engine and database client (test_scaleout.py, examples/python/scaleout.py).
.venv/bin/python -c "import ray, psycopg" 2>/dev/null || .venv/bin/pip install -q "ray==2.*" "psycopg[binary]==3.*"
log="$(mktemp)"
lib="$(scripts/build_lib.sh 2>"$log")" || { cat "$log"; exit 1; }
CORTEX_LIBRARY="$lib" .venv/bin/pip install -q --force-reinstall --no-deps ./bindings/python
