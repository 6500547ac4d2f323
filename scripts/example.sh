#!/usr/bin/env bash
# README command 1: install what is missing, build libcortex, then stream the bundled
# LSTM stack (examples/models/lstm_stack) from C and from Python, then run a trained
# delayed-recall model (examples/models/tasks) step by step and score it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2 >/dev/null
echo "== C: examples/c/stream.c =="
./build/examples/cortex_stream examples/models/lstm_stack 4 2000
echo
echo "== Python: examples/python/stream.py =="
scripts/python_env.sh >/dev/null
.venv/bin/python examples/python/stream.py examples/models/lstm_stack --batch 4 --steps 2000
echo
echo "== Python: examples/python/delayed_recall.py (a trained memory model on its task) =="
.venv/bin/python examples/python/delayed_recall.py
