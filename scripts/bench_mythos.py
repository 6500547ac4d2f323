#!/usr/bin/env python3
"""Benchmark OpenMythos: Cortex (through the Python wrapper, cx.LanguageModel) against
open-mythos 0.5.0 (PyTorch eager, torch.no_grad) on the same machine and threads.

    .venv-ref/bin/python scripts/bench_mythos.py [--attn gqa|mla] [--threads 2]

Both run the same weights (cx.export of the live module). Measures: prefill of 128
tokens (ms, from an empty cache) and decode (tokens/s: one token per call per sequence
through the KV cache, after the prefill) at B = 1 and B = 8. Needs a library built with
scripts/build_lib.sh (CORTEX_LIBRARY) or the package installed in this venv.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))


def config(attn):
    from open_mythos.main import MythosConfig

    return MythosConfig(vocab_size=4096, dim=256, n_heads=8, n_kv_heads=2, max_seq_len=512, max_loop_iters=4,
                        prelude_layers=1, coda_layers=1, attn_type=attn, n_experts=8, n_shared_experts=1,
                        n_experts_per_tok=2, expert_dim=128, kv_lora_rank=64, q_lora_rank=128, qk_rope_head_dim=16,
                        qk_nope_head_dim=32, v_head_dim=32, lora_rank=8)


def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench(prefill, decode_step, B, prompt_len=128, decode_tokens=32, repeats=15):
    """prefill(ids) -> cache; decode_step(cache, ids, pos)."""
    ids = np.random.randint(0, 4096, size=(B, prompt_len)).astype(np.int64)
    prefill(ids)  # warm-up
    p = timed(lambda: prefill(ids), repeats)

    def run_decode():
        cache = prefill(ids)
        t = time.perf_counter()
        for i in range(decode_tokens):
            decode_step(cache, ids[:, i:i + 1], prompt_len + i)
        return time.perf_counter() - t

    run_decode()
    d = statistics.median(run_decode() for _ in range(3))
    return 1e3 * p, B * decode_tokens / d


def sides(model, lm):
    """(prefill, decode) for open-mythos `model` (PyTorch eager, no_grad) and for Cortex's
    `lm` of the same weights: prefill(ids) -> cache, decode(cache, ids, pos)."""
    def t_prefill(ids):
        cache = {}
        with torch.no_grad():
            model(torch.from_numpy(ids), kv_cache=cache, start_pos=0)
        return cache

    def t_decode(cache, ids, pos):
        with torch.no_grad():
            model(torch.from_numpy(ids), kv_cache=cache, start_pos=pos)

    def c_prefill(ids):
        cache = lm.new_cache(ids.shape[0])
        lm.forward(ids, cache=cache)
        return cache

    def c_decode(cache, ids, pos):
        lm.forward(ids, cache=cache)

    return (t_prefill, t_decode), (c_prefill, c_decode)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attn", default="gqa", choices=["gqa", "mla"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import cortex_swift as cx
    from open_mythos.main import OpenMythos

    cx.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = OpenMythos(config(args.attn)).eval()
    params = sum(p.numel() for n, p in model.named_parameters() if n != "head.weight")
    with tempfile.TemporaryDirectory() as tmp:
        cx.export(model, tmp)
        lm = cx.load(tmp)

        (t_prefill, t_decode), (c_prefill, c_decode) = sides(model, lm)

        print(f"OpenMythos {args.attn}: dim 256, 8 heads (2 KV), 8 experts top-2 (+1 shared), 4 loops, vocab 4096, "
              f"1 prelude + 1 coda, {params / 1e6:.2f}M parameters; {args.threads} threads, torch {torch.__version__}\n")
        print("| measure | PyTorch (open-mythos) | Cortex | Cortex speed-up |")
        print("|---|---|---|---|")
        for B in (1, 8):
            tp, td = bench(t_prefill, t_decode, B)
            cp, cd = bench(c_prefill, c_decode, B)
            print(f"| prefill 128 tokens, B={B} (ms) | {tp:.2f} | {cp:.2f} | {tp / cp:.2f}× |")
            print(f"| decode, B={B} (tokens/s) | {td:,.0f} | {cd:,.0f} | {cd / td:.2f}× |")


if __name__ == "__main__":
    main()
