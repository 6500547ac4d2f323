#!/usr/bin/env python3
"""Compare two builds of libcortex.so on the same model, in one run (alternating rounds):
the native C benchmark (bench/bench_model.c: cx_model_step_into, no Python in the loop)
on a random PassThrough(LSTM) stack, d 256, 2 layers, T = 128. For checking that a
change did not slow the step and sequence paths. Numpy only; not a test.

    python3 scripts/bench_libs.py OLD_LIB NEW_LIB [--threads 2] [--rounds 9]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import ort_lstm  # noqa: E402


def build(lib):
    exe = os.path.join(tempfile.mkdtemp(prefix="cortex-bench-"), "bench_model")
    subprocess.run(["cc", "-O2", "-std=c99", "-I", os.path.join(ROOT, "include"), os.path.join(ROOT, "bench/bench_model.c"),
                    lib, "-Wl,-rpath," + os.path.dirname(os.path.abspath(lib)), "-o", exe], check=True)
    return exe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    exes = {"old": build(args.old), "new": build(args.new)}
    model = tempfile.mkdtemp(prefix="cortex-lstm-")
    ort_lstm.write_random_stack(model, d=256, layers=2)
    runs = {k: [] for k in exes}
    for _ in range(args.rounds):
        for k, exe in exes.items():
            out = subprocess.run([exe, model, str(args.threads), "128"], check=True, capture_output=True, text=True).stdout
            runs[k].append(json.loads(out))
    print(f"{args.threads} threads, medians of {args.rounds} alternating rounds\n")
    print("| measure | old | new | new / old |")
    print("|---|---|---|---|")
    for key in runs["new"][0]:
        old, new = (statistics.median(r[key] for r in runs[k]) for k in ("old", "new"))
        print(f"| {key} | {old:.4g} | {new:.4g} | {new / old:.3f} |")


if __name__ == "__main__":
    main()
