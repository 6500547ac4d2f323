#!/usr/bin/env python3
"""Cortex when other processes share the cores: steps/s of examples/c/stream.c (the C
ABI, one state stepped in a loop) alone, then while busy processes compete for every
core, per batch size and Cortex thread count.

    CORTEX_LIBRARY=<libcortex.so> python3 scripts/bench_contention.py [--threads 2,4]
        [--batches 4,32] [--competitors N] [--seconds 2] [--model examples/models/lstm_stack]

A competitor is a Python busy loop that ends by itself after the measurement's time
budget (bounded: every run stops by itself). The loaded run takes the step count the
idle run did in --seconds and is cut off after 10x that time (reported as "<" a rate).
Prints a Markdown table: idle and loaded steps/s, loaded / idle. Not a test.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_stream(lib):
    exe = os.path.join(tempfile.mkdtemp(prefix="cortex-contention-"), "cortex_stream")
    subprocess.run(["cc", "-O2", "-std=c99", "-I", os.path.join(ROOT, "include"), os.path.join(ROOT, "examples/c/stream.c"),
                    lib, "-Wl,-rpath," + os.path.dirname(os.path.abspath(lib)), "-lm", "-o", exe], check=True)
    return exe


def stream_rate(exe, model, batch, steps, threads, timeout):
    env = dict(os.environ, CORTEX_NUM_THREADS=str(threads))
    try:
        out = subprocess.run([exe, model, str(batch), str(steps)], env=env, check=True, capture_output=True, text=True,
                             timeout=timeout).stdout
    except subprocess.TimeoutExpired:
        return None
    return float(re.search(r": ([0-9.]+) steps/s", out).group(1))


def busy(until):
    while time.time() < until:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="2")
    ap.add_argument("--batches", default="4,32")
    ap.add_argument("--competitors", type=int, default=os.cpu_count(), help="busy processes (default: one per CPU)")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--model", default=os.path.join(ROOT, "examples/models/lstm_stack"))
    ap.add_argument("--library", default=os.environ.get("CORTEX_LIBRARY"))
    args = ap.parse_args()
    lib = args.library or subprocess.run([os.path.join(ROOT, "scripts/build_lib.sh")], check=True, capture_output=True,
                                         text=True).stdout.strip()
    exe = build_stream(lib)
    print(f"{os.cpu_count()} CPUs, {args.competitors} busy competitors, model {os.path.relpath(args.model, ROOT)}, "
          f"library {lib}\n")
    print("| batch | Cortex threads | idle (steps/s) | loaded (steps/s) | loaded / idle |")
    print("|---|---|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            probe = stream_rate(exe, args.model, batch, 200, threads, 60)
            steps = max(100, int(probe * args.seconds))
            idle = stream_rate(exe, args.model, batch, steps, threads, 60)
            limit = 10 * args.seconds
            until = time.time() + limit + 5
            procs = [mp.Process(target=busy, args=(until,)) for _ in range(args.competitors)]
            for p in procs:
                p.start()
            time.sleep(0.3)  # let them occupy the cores
            loaded = stream_rate(exe, args.model, batch, steps, threads, limit)
            for p in procs:
                p.terminate()
                p.join()
            shown = f"{loaded:,.0f}" if loaded else f"< {steps / limit:,.0f}"
            ratio = f"{loaded / idle:.0%}" if loaded else f"< {steps / limit / idle:.1%}"
            print(f"| {batch} | {threads} | {idle:,.0f} | {shown} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
