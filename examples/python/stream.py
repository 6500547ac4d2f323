#!/usr/bin/env python3
"""Stream a bundled memory stack step by step from Python, then resume from a saved state.

    python examples/python/stream.py [MODEL_DIR] [--batch 4] [--steps 2000]
"""
import argparse
import os
import time

import numpy as np

import cortex_swift as cx

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=os.path.join(HERE, "..", "models", "lstm_stack"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()

    with cx.load(args.model) as model:
        info = model.info
        print(f"cortex_swift {cx.__version__}: {info['architecture']} d={model.d_in}, "
              f"{info['parameters']} parameters, BLAS core {info['blas']['core']}")
        B, D = args.batch, model.d_in
        t = np.arange(D, dtype=np.float32)
        state = model.init_state(batch=B)
        start = time.perf_counter()
        for step in range(args.steps):
            x = np.sin(0.01 * step + 0.1 * t)[None, :].repeat(B, 0).astype(np.float32)
            y, state = model.step(x, state)
        elapsed = time.perf_counter() - start
        y = np.from_dlpack(y)
        print(f"after {args.steps} steps: y[0, :4] = {np.round(y[0, :4], 5).tolist()}")
        print(f"{args.steps / elapsed:,.0f} steps/s ({B} streams, {B * args.steps / elapsed:,.0f} tokens/s) through Python")

        # Memory persists: save it, restore it, and the stream continues identically.
        blob = state.to_bytes()
        restored = model.state_from_bytes(blob)
        x = np.ones((B, D), np.float32)
        a, _ = model.step(x, state)
        b, _ = model.step(x, restored)
        same = np.array_equal(np.from_dlpack(a), np.from_dlpack(b))
        print(f"state blob: {len(blob)} bytes; restored stream continues identically: {same}")


if __name__ == "__main__":
    main()
