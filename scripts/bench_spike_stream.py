#!/usr/bin/env python3
"""Benchmark streaming decoding: per 50 ms stride, the paged stream
(`SpikeDecoder.stream().step`, keys/values computed only for the stride's new events)
against decoding the whole 600 ms window from scratch, in Cortex and in PyTorch
(cortex_swift.torch_spike, the same weights), on the same machine and threads.

    CORTEX_LIBRARY=<libcortex.so> .venv-ref/bin/python scripts/bench_spike_stream.py [--threads 2] [--model DIR]

Data: cortex_swift.spike_data, 256 neurons (~1000 events per window, ~85 per stride).
Model: --model (default examples/models/spike_xs, else a random XS decoder). Latency:
median over 400 strides after 24 warm-up strides (the window is full by then).
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
from cortex_swift import spike_data as sd  # noqa: E402
from cortex_swift import torch_spike  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=os.path.join(ROOT, "examples", "models", "spike_xs"))
    ap.add_argument("--strides", type=int, default=400)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cx.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp()
    if not os.path.exists(os.path.join(args.model, "config.json")):
        torch.manual_seed(0)
        cx.export(torch_spike.SpikeDecoder(torch_spike.XS), os.path.join(tmp, "xs"))
        args.model = os.path.join(tmp, "xs")
    dec = cx.load(args.model)
    # The PyTorch reference with the same (dequantised, if INT8) weights: export the
    # Cortex model's float32 view by loading the file's state dict.
    ref = torch_spike.SpikeDecoder(dec.config)
    ref.load_state_dict(torch_spike.load_state_dict(args.model), strict=True)
    ref.eval()

    s = sd.simulate(seed=0, neurons=256, seconds=(args.strides + 40) * 0.05 + 1, recording=2)
    warm, n = 24, args.strides
    strides, windows = [], []
    for k in range(warm + n):
        block = s.counts[10 * k:10 * (k + 1)]
        t_idx, n_idx = np.nonzero(block)
        strides.append((n_idx, t_idx, np.minimum(block[t_idx, n_idx], 7)))
        start = 10 * (k + 1) - 120             # the same window from scratch
        win = s.counts[max(0, start):10 * (k + 1)]
        wt, wn = np.nonzero(win)
        windows.append((wn, wt + (max(0, start) - start), np.minimum(win[wt, wn], 7)))

    # Each path in its own loop (PyTorch's OpenMP workers spin after a call and would
    # slow whatever runs right after them).
    def timed(fn):
        out, ts = [], []
        for k in range(warm + n):
            t0 = time.perf_counter()
            out.append(fn(k))
            if k >= warm:
                ts.append(time.perf_counter() - t0)
        return np.array(out), ts
    stream = dec.stream()
    y_stream, t_stream = timed(lambda k: stream.step(*strides[k]))
    y_decode, t_decode = timed(lambda k: dec.decode_requests([windows[k]])[0])
    with torch.no_grad():
        y_torch, t_torch = timed(lambda k: ref(*torch_spike.pack([windows[k]]))[0].numpy())
    worst = max(float(np.abs(y_stream - y_decode).max()), float(np.abs(y_decode - y_torch).max()))
    med = lambda a: 1e3 * float(np.median(a))  # noqa: E731
    events = np.mean([len(np.nonzero(s.counts[10 * k - 110:10 * (k + 1)])[0]) for k in range(warm, warm + 50)])
    print(f"model {args.model} ({dec.info['weights']['linear']} linears), threads {args.threads}, "
          f"~{events:.0f} events per window, {n} strides")
    print(f"  Cortex stream step (paged)     {med(t_stream):7.2f} ms")
    print(f"  Cortex decode of the window    {med(t_decode):7.2f} ms   stream / decode = {med(t_stream) / med(t_decode):.2f}")
    print(f"  PyTorch forward of the window  {med(t_torch):7.2f} ms   stream / PyTorch = {med(t_stream) / med(t_torch):.2f}")
    print(f"  page memory per stream: {stream.info['page_bytes'] / 2**20:.2f} MiB ({stream.info['pages']} pages in use); "
          f"max |difference| stream/decode/PyTorch {worst:.1e}")


if __name__ == "__main__":
    main()
