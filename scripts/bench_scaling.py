#!/usr/bin/env python3
"""How Cortex scales with cores, side by side with PyTorch and ONNX Runtime at the same
thread count, in one run.

    CORTEX_LIBRARY=<libcortex.so> python3 scripts/bench_scaling.py [--threads 1,2,4,8,16]
        [--workloads lstm,axms,mythos] [--json out.json]

Workloads (2-layer stacks of width 256, T = 128; OpenMythos GQA as in bench_mythos.py):
- lstm: PassThrough(LSTM) stack. Sequence B=32 (tokens/s), step B=1 and B=32 (ms).
  ONNX Runtime runs the same math (an ONNX graph of LSTM nodes + LayerNormalization from
  the exported weights, scripts/ort_lstm.py; checked against the cortexcore stack) when
  onnxruntime and onnx are importable.
- axms: cortexcore's default auto stack (AXMS Columns). Sequence B=32, step B=1 and B=32.
- mythos: OpenMythos GQA (3M). Prefill of 128 tokens at B=8 (ms), decode at B=1 (tokens/s).

Cortex's stack numbers come from bench/bench_model.c (the C ABI, no Python), one process
per measurement; PyTorch (eager, cortexcore / open-mythos) and ONNX Runtime run in this
process with torch.set_num_threads / intra_op_num_threads = the same count. Prints
Markdown tables; --json keeps every number (scripts/plot_scaling.py draws them). Not a
test.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))

import bench  # noqa: E402  (scripts/bench.py: timeit, build_native)
import ort_lstm  # noqa: E402


def timeit(fn, min_time=0.4, warmup=3):
    return bench.timeit(fn, min_time=min_time, warmup=warmup)


def cortex_measure(exe, model_dir, threads, what, seq_len):
    out = subprocess.run([exe, model_dir, str(threads), str(seq_len), what], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)[what]


def stack_module(kind, d, layers):
    from cortex.config import CortexStackConfig, LSTMCellConfig, PassThroughBlockConfig
    from cortex.stacks import CortexStack

    torch.manual_seed(0)
    if kind == "lstm":
        cfg = CortexStackConfig(d_hidden=d, blocks=[PassThroughBlockConfig(cell=LSTMCellConfig()) for _ in range(layers)])
    else:
        from cortex.stacks.auto import build_cortex_auto_config

        cfg = build_cortex_auto_config(d_hidden=d, num_layers=layers)
    return CortexStack(cfg).eval()


def torch_stack(stack, d, seq_len, measures):
    out = {}
    with torch.no_grad():
        for m in measures:
            B = 32 if m.endswith("32") else 1
            if m.startswith("step"):
                x = torch.randn(B, d)
                st = [stack.init_state(batch=B, dtype=torch.float32)]

                def step():
                    _, st[0] = stack.step(x, st[0])

                out[m] = 1e3 * timeit(step, warmup=10)
            else:
                x = torch.randn(B, seq_len, d)
                out[m] = B * seq_len / timeit(lambda: stack(x, None), warmup=2)
    return out


def ort_stack(model_dir, stack, d, seq_len, threads, measures):
    """ONNX Runtime on the same math (scripts/ort_lstm.py), checked against the stack."""
    s = ort_lstm.session(model_dir, threads)
    x = torch.randn(2, 5, d)
    with torch.no_grad():
        err = float(np.abs(stack(x, None)[0].numpy() - ort_lstm.run(s, x.numpy())[0]).max())
    assert err < 1e-4, f"the ONNX graph differs from the cortexcore stack by {err}"
    return ort_lstm.timings(s, seq_len, measures, timeit)


def run_stack(kind, args, exe, results):
    measures = ["seq32", "step1", "step32"]
    stack = stack_module(kind, args.d_hidden, args.layers)
    spec = importlib.util.spec_from_file_location("cx_export", os.path.join(ROOT, "bindings/python/cortex_swift/export.py"))
    cx_export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cx_export)
    with tempfile.TemporaryDirectory() as tmp:
        cx_export.export(stack, tmp)
        ort = kind == "lstm" and importlib.util.find_spec("onnxruntime") is not None
        for n in args.threads:
            torch.set_num_threads(n)
            rounds = {"cortex": [], "pytorch": [], "onnxruntime": []}
            for _ in range(args.rounds):  # alternating, medians kept
                rounds["cortex"].append({m: cortex_measure(exe, tmp, n, m, args.seq_len) for m in measures})
                rounds["pytorch"].append(torch_stack(stack, args.d_hidden, args.seq_len, measures))
                if ort:
                    rounds["onnxruntime"].append(ort_stack(tmp, stack, args.d_hidden, args.seq_len, n, measures))
            row = {"threads": n, **{side: bench.median_of(r) for side, r in rounds.items() if r}}
            results.setdefault(kind, []).append(row)
            print(f"  {kind} {n} threads: {json.dumps(row)}", file=sys.stderr, flush=True)


def run_mythos(args, results):
    import cortex_swift as cx
    import bench_mythos
    from open_mythos.main import OpenMythos

    torch.manual_seed(0)
    model = OpenMythos(bench_mythos.config("gqa")).eval()
    with tempfile.TemporaryDirectory() as tmp:
        cx.export(model, tmp)
        lm = cx.load(tmp)

        pytorch, cortex = bench_mythos.sides(model, lm)

        for n in args.threads:
            torch.set_num_threads(n)
            cx.set_num_threads(n)
            rounds = {"pytorch": [], "cortex": []}
            for _ in range(args.rounds):
                for side, (pre, dec) in (("pytorch", pytorch), ("cortex", cortex)):
                    p8, _ = bench_mythos.bench(pre, dec, 8, repeats=5)
                    _, d1 = bench_mythos.bench(pre, dec, 1, repeats=1)
                    rounds[side].append({"prefill8_ms": p8, "decode1_tok_s": d1})
            row = {"threads": n, **{side: bench.median_of(r) for side, r in rounds.items()}}
            results.setdefault("mythos", []).append(row)
            print(f"  mythos {n} threads: {json.dumps(row)}", file=sys.stderr, flush=True)


def cx_kernels(cx):
    """The ISA of Cortex's own kernels and OpenBLAS's core, from a loaded model's info."""
    info = cx.load(os.path.join(ROOT, "examples/models/lstm_stack")).info
    return info.get("blas", {})


def table(kind, rows):
    if kind == "mythos":
        keys = [("prefill8_ms", "prefill 128 tokens, B=8 (ms)", "lower"), ("decode1_tok_s", "decode B=1 (tokens/s)", "higher")]
    else:
        keys = [("seq32", "sequence B=32 (tokens/s)", "higher"), ("step1", "step B=1 (ms)", "lower"),
                ("step32", "step B=32 (ms)", "lower")]
    peers = [p for p in ("pytorch", "onnxruntime") if p in rows[0]]
    base = {k: rows[0]["cortex"][k] for k, _, _ in keys}
    print(f"\n### {kind}\n")
    head = "| threads | measure | Cortex | " + " | ".join(f"{p} | Cortex / {p}" for p in peers) + " | Cortex efficiency vs 1 thread |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        for k, label, better in keys:
            c = r["cortex"][k]
            cells = []
            for p in peers:
                v = r[p][k]
                ratio = c / v if better == "higher" else v / c
                cells.append(f"{v:,.4g} | {ratio:.2f}×")
            speed = c / base[k] if better == "higher" else base[k] / c
            eff = speed / (r["threads"] / rows[0]["threads"])
            print(f"| {r['threads']} | {label} | {c:,.4g} | " + " | ".join(cells) + f" | {100 * eff:.0f}% |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2,4,8,16")
    ap.add_argument("--workloads", default="lstm,axms,mythos")
    ap.add_argument("--d-hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds per thread count; medians kept")
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    import cortex_swift as cx

    results = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "cortex_kernels": cx_kernels(cx),
                           "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")}}
    work = args.workloads.split(",")
    exe = bench.build_native() if {"lstm", "axms"} & set(work) else None
    for kind in work:
        t0 = time.time()
        if kind == "mythos":
            run_mythos(args, results)
        else:
            run_stack("lstm" if kind == "lstm" else "auto", args, exe, results)
        print(f"  {kind}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        if args.json:  # after every workload, so a run cut short keeps what it measured
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    m = results["machine"]
    print(f"{m['cpu']}, {m['cpus']} CPUs, torch {m['torch']}, Cortex kernels {m['cortex_kernels']}; "
          f"d_hidden {args.d_hidden}, {args.layers} layers, T={args.seq_len}, median of {args.rounds} round(s)")
    for kind in ("lstm", "auto", "mythos"):
        if kind in results:
            table(kind, results[kind])


if __name__ == "__main__":
    main()
