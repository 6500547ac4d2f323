#!/usr/bin/env python3
"""Cortex against ONNX Runtime on the LSTM stack, at the same thread count, in one run;
needs no torch (the ONNX graph is built from the weights, scripts/ort_lstm.py).

    CORTEX_LIBRARY=<libcortex.so> python3 scripts/bench_ort.py [--threads 2] [--d-hidden 256]
        [--layers 2] [--seq-len 128] [--rounds 3] [--model DIR]

Without --model, a random 2-layer stack of width 256 (nn.LSTM's initialisation) is
written to a temporary folder. Checks that both give the same outputs (1e-4), then
times step B=1, step B=32 (ms) and sequence B=1, B=32 (tokens/s): Cortex through the C
ABI (bench/bench_model.c, caller buffers), ONNX Runtime through its Python API (one
`run` per step; its Python overhead is a few microseconds). Medians of alternating
rounds. Prints a Markdown table. Not a test.
"""
import argparse
import os
import statistics
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))

import bench  # noqa: E402  (scripts/bench.py: timeit, build_native, cortex_native)
import ort_lstm  # noqa: E402

MEASURES = (("step_b1_ms", "ms/step", "lower"), ("step_b32_ms", "ms/step", "lower"),
            ("seq_b1_tok_s", "tokens/s", "higher"), ("seq_b32_tok_s", "tokens/s", "higher"))


# bench_model.c's measure names, and the keys bench.cortex_native reports them under.
KEYS = {"step1": "step_b1_ms", "step32": "step_b32_ms", "seq1": "seq_b1_tok_s", "seq32": "seq_b32_tok_s"}


def ort_numbers(sess, seq_len):
    t = ort_lstm.timings(sess, seq_len, list(KEYS), bench.timeit)
    return {KEYS[k]: v for k, v in t.items()}


def check_same(model_dir, sess, d):
    import cortex_swift as cx

    x = np.random.default_rng(1).standard_normal((3, 17, d)).astype(np.float32)
    y, _ = cx.load(model_dir).forward(x)
    err = float(np.abs(np.from_dlpack(y) - ort_lstm.run(sess, x)[0]).max())
    assert err < 1e-4, f"ONNX Runtime and Cortex differ by {err}"
    return err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d-hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model")
    args = ap.parse_args()
    import onnxruntime

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or os.path.join(tmp, "lstm")
        if not args.model:
            ort_lstm.write_random_stack(model, args.d_hidden, args.layers)
        sess = ort_lstm.session(model, args.threads)
        err = check_same(model, sess, sess.cortex_d)
        layers, d = sess.cortex_layers, sess.cortex_d
        del sess
        exe = bench.build_native()
        cx_runs, ort_runs = [], []
        for _ in range(args.rounds):
            # A session per round, gone before Cortex runs: ONNX Runtime's workers spin
            # after each run and would take the cores from the Cortex process.
            cx_runs.append(bench.cortex_native(exe, model, args.threads, args.seq_len))
            sess = ort_lstm.session(model, args.threads)
            ort_runs.append(ort_numbers(sess, args.seq_len))
            del sess
    c = {k: statistics.median(r[k] for r in cx_runs) for k, _, _ in MEASURES}
    o = {k: statistics.median(r[k] for r in ort_runs) for k, _, _ in MEASURES}
    print(f"LSTM stack d_hidden={d}, {layers} layers, T={args.seq_len}, {args.threads} threads, "
          f"onnxruntime {onnxruntime.__version__}; outputs agree to {err:.1e}; median of {args.rounds} alternating rounds\n")
    print("| measure | ONNX Runtime | Cortex (C ABI) | Cortex / ONNX Runtime |")
    print("|---|---|---|---|")
    for k, unit, better in MEASURES:
        ratio = o[k] / c[k] if better == "lower" else c[k] / o[k]
        fmt = "{:.4f}" if unit == "ms/step" else "{:,.0f}"
        print(f"| {k} ({unit}) | {fmt.format(o[k])} | {fmt.format(c[k])} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
