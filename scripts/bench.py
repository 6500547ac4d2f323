#!/usr/bin/env python3
"""Benchmark Cortex against the PyTorch reference (cortexcore 0.1.6) on this machine.

    .venv-ref/bin/python scripts/bench.py [--core lstm|cconv|agalite|slstm|mlstm|xl|axon] [--threads 2]
                                          [--d-hidden 256] [--layers 2] [--seq-len 128]
                                          [--cell-json '{"use_axon_layer": true}'] [--no-torch]

Both sides use the same thread count (torch.set_num_threads / cx_set_num_threads)
and the same model: a CortexStack of PassThrough(<core>) blocks exported from the live
PyTorch module (cortexcore's default options per core). PyTorch runs eagerly
(TORCHDYNAMO_DISABLE=1: AGaLiTe would otherwise torch.compile per shape). Cortex is timed natively through the C ABI (bench/bench_model.c,
cx_model_step_into: no Python in the loop) and, when the cortex_swift package is
importable, through the Python wrapper. Not a test: it prints a Markdown table for
BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timeit(fn, min_time=0.5, warmup=20):
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        t = time.perf_counter()
        if t - t0 >= min_time:
            return (t - t0) / n


def torch_numbers(stack, d, seq_len):
    import torch

    out = {}
    with torch.no_grad():
        for B in (1, 32):
            x = torch.randn(B, d)
            st = [stack.init_state(batch=B, dtype=torch.float32)]

            def step():
                _, st[0] = stack.step(x, st[0])

            out[f"step_b{B}_ms"] = 1e3 * timeit(step)
        for B in (1, 32):
            x = torch.randn(B, seq_len, d)
            s = timeit(lambda: stack(x, None), min_time=1.0, warmup=3)
            out[f"seq_b{B}_tok_s"] = B * seq_len / s
    return out


def build_native():
    """bench/bench_model.c against CORTEX_LIBRARY when set (a prebuilt libcortex.so, e.g. on
    a machine without Swift), else against a fresh scripts/build_lib.sh build."""
    lib = os.environ.get("CORTEX_LIBRARY") or subprocess.run(
        [os.path.join(ROOT, "scripts/build_lib.sh")], check=True, capture_output=True, text=True).stdout.strip()
    exe = os.path.join(tempfile.mkdtemp(prefix="cortex-bench-"), "bench_model")
    subprocess.run(["cc", "-O2", "-std=c99", "-I", os.path.join(ROOT, "include"),
                    os.path.join(ROOT, "bench/bench_model.c"), lib, "-Wl,-rpath," + os.path.dirname(lib),
                    "-o", exe], check=True)
    return exe


def cortex_native(exe, model_dir, threads, seq_len):
    res = subprocess.run([exe, model_dir, str(threads), str(seq_len)], check=True, capture_output=True, text=True)
    return json.loads(res.stdout)


def median_of(runs):
    """Per-key median over several runs (this VM's timings vary ±20% run to run)."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def cortex_python(model_dir, d):
    if importlib.util.find_spec("cortex_swift") is None:
        return None
    import numpy as np
    import cortex_swift as cx

    out = {}
    model = cx.load(model_dir)
    for B in (1, 32):
        x = np.random.randn(B, d).astype(np.float32)
        st = model.init_state(batch=B)
        out[f"step_b{B}_ms"] = 1e3 * timeit(lambda: model.step(x, st))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d-hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--core", default="lstm", choices=["lstm", "cconv", "agalite", "slstm", "mlstm", "xl", "axon", "auto"],
                    help="a stack of --layers PassThrough(core) blocks, or 'auto': the seed's default stack "
                         "(build_cortex_auto_config, AXMS Columns, --layers layers)")
    ap.add_argument("--cell-json", default="{}", help="extra cell config fields, e.g. '{\"chunk_size\": 256}'")
    ap.add_argument("--no-torch", action="store_true", help="time Cortex only (e.g. to compare two Cortex paths)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    from cortex.config import (AGaLiTeCellConfig, AxonConfig, CausalConv1dConfig, CortexStackConfig, LSTMCellConfig,
                               PassThroughBlockConfig, XLCellConfig, mLSTMCellConfig, sLSTMCellConfig)
    from cortex.stacks import CortexStack

    cell = {"lstm": LSTMCellConfig, "cconv": CausalConv1dConfig, "agalite": AGaLiTeCellConfig,
            "slstm": sLSTMCellConfig, "mlstm": mLSTMCellConfig, "xl": XLCellConfig, "axon": AxonConfig,
            "auto": None}[args.core]
    extra = json.loads(args.cell_json)

    spec = importlib.util.spec_from_file_location("cx_export", os.path.join(ROOT, "bindings/python/cortex_swift/export.py"))
    cx_export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cx_export)

    torch.manual_seed(0)
    d = args.d_hidden
    if cell is None:
        from cortex.stacks.auto import build_cortex_auto_config
        cfg = build_cortex_auto_config(d_hidden=d, num_layers=args.layers)
    else:
        cfg = CortexStackConfig(d_hidden=d, blocks=[PassThroughBlockConfig(cell=cell(**extra)) for _ in range(args.layers)])
    stack = CortexStack(cfg).eval()
    exe = build_native()
    with tempfile.TemporaryDirectory() as tmp:
        cx_export.export(stack, tmp)
        natives, refs, wraps = [], [], []
        for _ in range(args.rounds):  # alternate, so both sides see the same machine
            natives.append(cortex_native(exe, tmp, args.threads, args.seq_len))
            if not args.no_torch:
                refs.append(torch_numbers(stack, d, args.seq_len))
            w = cortex_python(tmp, d)
            if w:
                wraps.append(w)
    native = median_of(natives)
    ref = median_of(refs) if refs else None
    wrapped = median_of(wraps) if wraps else None

    print(f"{args.core} {args.cell_json} stack d_hidden={d}, {args.layers} layers, T={args.seq_len}, {args.threads} threads, "
          f"torch {torch.__version__}, median of {args.rounds} alternating rounds\n")
    print("| measure | PyTorch (cortexcore) | Cortex (C ABI) | Cortex speed-up | Cortex (Python wrapper) |")
    print("|---|---|---|---|---|")
    for k, unit, better in (("step_b1_ms", "ms/step", "lower"), ("step_b32_ms", "ms/step", "lower"),
                            ("seq_b1_tok_s", "tokens/s", "higher"), ("seq_b32_tok_s", "tokens/s", "higher")):
        c = native[k]
        r = ref[k] if ref else float("nan")
        ratio = r / c if better == "lower" else c / r
        w = f"{wrapped[k]:.4f}" if wrapped and k in wrapped else "–"
        fmt = "{:.4f}" if unit == "ms/step" else "{:,.0f}"
        print(f"| {k} ({unit}) | {fmt.format(r)} | {fmt.format(c)} | {ratio:.2f}× | {w} |")


if __name__ == "__main__":
    main()
