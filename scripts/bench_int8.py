#!/usr/bin/env python3
"""Benchmark INT8 weights against float32, in Cortex and against PyTorch on the
same machine and threads: step latency at batch 1 (and 8) for memory-bound models, weight
bytes, and the output error INT8 costs.

    CORTEX_LIBRARY=<libcortex.so> .venv-ref/bin/python scripts/bench_int8.py [--threads 2]

Models (random weights, PyTorch init; exported with cx.export into a temporary folder):
  - a d_hidden 256 cortexcore stack of 4 PreUp blocks (proj factor 2) around sLSTM /
    mLSTM / XL / CausalConv1d cells: one decode step (T = 1) per call;
  - the spike decoder at XS and S (cortex_swift.torch_spike; XS 4.8M, S 24.8M
    parameters): one request of 300 events, and 8 requests of 300.
Latency: best of 5 runs of 200 calls (decoders: 20), per call. Needs torch and cortexcore.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
import cortex_swift as cx  # noqa: E402
from cortex_swift import torch_spike  # noqa: E402


def best(fn, calls, repeats=5):
    fn()
    t = float("inf")
    for _ in range(repeats):
        s = time.perf_counter()
        for _ in range(calls):
            fn()
        t = min(t, (time.perf_counter() - s) / calls)
    return t * 1e3


def stack_case(tmp):
    from cortex.config import (CausalConv1dConfig, CortexStackConfig, PreUpBlockConfig, XLCellConfig,
                               mLSTMCellConfig, sLSTMCellConfig)
    from cortex.stacks import CortexStack

    torch.manual_seed(0)
    cfg = CortexStackConfig(d_hidden=256, post_norm=True, blocks=[
        PreUpBlockConfig(cell=sLSTMCellConfig(num_heads=4), proj_factor=2.0),
        PreUpBlockConfig(cell=mLSTMCellConfig(num_heads=4), proj_factor=2.0),
        PreUpBlockConfig(cell=XLCellConfig(n_heads=4, mem_len=64), proj_factor=2.0),
        PreUpBlockConfig(cell=CausalConv1dConfig(kernel_size=4), proj_factor=2.0)])
    stack = CortexStack(cfg).eval()
    d = cx.export(stack, os.path.join(tmp, "stack"))
    rows = []
    x = np.random.default_rng(0).standard_normal((1, 1, 256)).astype(np.float32)
    outs = {}
    for fmt in ("float32", "int8"):
        m = cx.load(d, weight_format=fmt)
        state = m.init_state(1)
        outs[fmt] = np.from_dlpack(m.forward(x, state)[0]).copy()
        ms = best(lambda: m.forward(x, state), 200)
        rows.append((fmt, ms, m.info["weights"]["linear_bytes"]))
    err = float(np.abs(outs["int8"] - outs["float32"]).max())
    with torch.no_grad():
        st = stack.init_state(batch=1, device="cpu", dtype=torch.float32)
        xt = torch.from_numpy(x[:, 0])
        torch_ms = best(lambda: stack.step(xt, st), 200)
    return rows, err, torch_ms, float(np.abs(outs["float32"]).max())


def decoder_case(tmp, name, cfg, batch):
    torch.manual_seed(1)
    model = torch_spike.SpikeDecoder(cfg).eval()
    d = cx.export(model, os.path.join(tmp, name))
    rng = np.random.default_rng(2)
    reqs = [(rng.integers(0, 137, 300), rng.integers(0, 120, 300), rng.integers(1, 8, 300)) for _ in range(batch)]
    n, t, v, o = (x.numpy() for x in torch_spike.pack(reqs))
    rows, outs = [], {}
    for fmt in ("float32", "int8"):
        m = cx.load(d, weight_format=fmt)
        outs[fmt] = np.from_dlpack(m.decode(n, t, v, o)).copy()
        rows.append((fmt, best(lambda: m.decode(n, t, v, o), 20), m.info["weights"]["linear_bytes"]))
    tn, tt, tv, to = (torch.from_numpy(a) for a in (n, t, v, o))
    with torch.no_grad():
        ref = model(tn, tt, tv, to).numpy()
        torch_ms = best(lambda: model(tn, tt, tv, to), 20)
    err = float(np.abs(outs["int8"] - outs["float32"]).max())
    parity = float(np.abs(outs["float32"] - ref).max())
    return rows, err, torch_ms, parity, float(np.abs(ref).max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cx.set_num_threads(args.threads)
    print(f"threads {args.threads}, torch {torch.__version__}, libcortex {cx.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        rows, err, torch_ms, scale = stack_case(tmp)
        (_, f_ms, f_b), (_, q_ms, q_b) = rows
        print(f"stack d=256 (4 PreUp x2 blocks), B=1 step: float32 {f_ms:.3f} ms, int8 {q_ms:.3f} ms "
              f"(int8/fp32 {q_ms / f_ms:.2f}); PyTorch {torch_ms:.3f} ms; linear weights {f_b / 1e6:.2f} -> "
              f"{q_b / 1e6:.2f} MB; max |int8 - fp32| {err:.2e} (|y| max {scale:.2f})")
        for name, cfg in (("XS", torch_spike.XS), ("S", torch_spike.S)):
            for batch in (1, 8):
                rows, err, torch_ms, parity, scale = decoder_case(tmp, name, cfg, batch)
                (_, f_ms, f_b), (_, q_ms, q_b) = rows
                print(f"decoder {name}, B={batch} x 300 events: float32 {f_ms:.2f} ms, int8 {q_ms:.2f} ms "
                      f"(int8/fp32 {q_ms / f_ms:.2f}); PyTorch fp32 {torch_ms:.2f} ms (Cortex fp32 speed-up "
                      f"{torch_ms / f_ms:.1f}x); linear weights {f_b / 1e6:.1f} -> {q_b / 1e6:.1f} MB; "
                      f"max |int8 - fp32| {err:.1e}, |Cortex - PyTorch| fp32 {parity:.1e} (|y| max {scale:.2f})")


if __name__ == "__main__":
    main()
