#!/usr/bin/env python3
"""Benchmark the memory sidecars at D = 1024, 16 heads (head dim 64; r = 16 for
fast weights), one hooked layer, batch 1, against PyTorch on the same machine and threads.

    CORTEX_LIBRARY=<libcortex.so> .venv-ref/bin/python scripts/bench_sidecars.py [--threads 2] [--tokens 100000]

Measures, per sidecar kind:
  - step: ms per decode token (Cortex; PyTorch: the reference module's own token loop,
    cortex_swift.torch_sidecars, and a head-vectorised PyTorch step);
  - the host's plain attention cost at the same size for scale: a decode step of
    q/k/v/o projections + attention over 2,048 cached tokens (PyTorch SDPA);
  - sequence throughput at T = 512 and 4096: Cortex chunkwise (one call) vs recurrent
    (T step calls); PyTorch vectorised (GDN: fla's naive chunk delta rule + blocked window
    attention; fast weights: a token loop over heads-batched tensors);
  - memory: the session's bytes and the process RSS before and after --tokens tokens.
Needs torch and fla-core (the reference venv).
"""
import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
import cortex_swift as cx  # noqa: E402
from cortex_swift import torch_sidecars as ts  # noqa: E402

D, H, K, R = 1024, 16, 64, 16


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def torch_gdn_sequence(layer, h):
    """GDNSidecarLayer over a whole sequence from a fresh state, vectorised."""
    from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule

    B, T, _ = h.shape
    W = layer.W

    def conv(c, x):
        return F.silu(F.conv1d(F.pad(x.transpose(1, 2), (layer.C - 1, 0)), c.weight, groups=x.shape[-1]).transpose(1, 2))

    q, k, v = conv(layer.conv_q, layer.q_proj(h)), conv(layer.conv_k, layer.k_proj(h)), conv(layer.conv_v, layer.v_proj(h))
    g = F.logsigmoid(layer.a_proj(h))
    beta, mix = torch.sigmoid(layer.b_proj(h)), torch.sigmoid(layer.mix_proj(h))
    qh, kh, vh = (t.view(B, T, H, K) for t in (q, k, v))
    od, _ = naive_chunk_gated_delta_rule(F.normalize(qh, dim=-1), F.normalize(kh, dim=-1), vh, g, beta, chunk_size=64)
    # Window attention in query blocks of W: keys from the previous and this block.
    qb, kb, vb = (t.transpose(1, 2) for t in (qh, kh, vh))  # [B, H, T, K]
    ow = torch.empty_like(qb)
    pos = torch.arange(T)
    for s in range(0, T, W):
        e, ks = min(T, s + W), max(0, s - W + 1)
        sc = qb[:, :, s:e] @ kb[:, :, ks:e].transpose(-1, -2) / math.sqrt(K)
        i, j = pos[s:e, None], pos[None, ks:e]
        sc = sc.masked_fill((j > i) | (j <= i - W), float("-inf"))
        ow[:, :, s:e] = torch.softmax(sc, -1) @ vb[:, :, ks:e]
    o = mix.unsqueeze(-1) * od + (1 - mix.unsqueeze(-1)) * ow.transpose(1, 2)
    return layer.o_proj(o.reshape(B, T, H * K))


def torch_fw_sequence(layer, h, sig):
    """FastWeightSidecarLayer, a token loop over heads-batched tensors (gate mode)."""
    B, T, _ = h.shape
    q, k, v = (p(h).view(B, T, H, K) for p in (layer.q_proj, layer.k_proj, layer.v_proj))
    gates = torch.sigmoid(layer.ctrl2(torch.tanh(layer.ctrl1(sig))))
    a = torch.sigmoid(layer.alpha_proj(h)) * (gates[..., 0] * gates[..., 1] * layer.alpha_max).unsqueeze(-1)
    st = layer.init_state(B)
    U, V = st["U"], st["V"]
    out = torch.empty(B, T, H, K)
    for t in range(T):
        U = U * layer.gamma
        V = V * layer.gamma
        kt, vt, qt, at = k[:, t], v[:, t], q[:, t], a[:, t, :, None, None]
        ku = torch.einsum("bhdr,bhd->bhr", U, kt)
        U = U + at * kt.unsqueeze(-1) * ku.unsqueeze(-2)
        V = V + at * ku.unsqueeze(-1) * vt.unsqueeze(-2)
        U = U - layer.beta * U.clamp(-1, 1)
        V = V - layer.beta * V.clamp(-1, 1)
        yf = torch.einsum("bhrd,bhr->bhd", V, torch.einsum("bhdr,bhd->bhr", U, qt))
        gl = torch.sigmoid(layer.gate(torch.cat([qt, kt, yf], -1)))
        out[:, t] = gl * yf + (1 - gl) * vt
    return layer.o_proj(out.reshape(B, T, H * K))


def attention_step_ms(context=2048, repeats=50):
    """The host's plain attention at the same size: one decode token, 4 projections +
    SDPA over `context` cached keys (PyTorch)."""
    proj = [torch.nn.Linear(D, D, bias=False) for _ in range(4)]
    kc, vc = torch.randn(1, H, context + 1, K), torch.randn(1, H, context + 1, K)  # preallocated cache
    x = torch.randn(1, 1, D)

    def step():
        q, k, v = (p(x).view(1, 1, H, K).transpose(1, 2) for p in proj[:3])
        kc[:, :, context:] = k
        vc[:, :, context:] = v
        o = F.scaled_dot_product_attention(q, kc, vc)
        return proj[3](o.transpose(1, 2).reshape(1, 1, D))

    with torch.no_grad():
        step()
        return 1e3 * timed(lambda: [step() for _ in range(repeats)]) / repeats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=100_000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cx.set_num_threads(args.threads)
    print(f"D={D}, {H} heads x {K}, r={R}; batch 1; {args.threads} threads; torch {torch.__version__}\n")
    attn = attention_step_ms()
    print(f"host attention decode step (PyTorch, context 2048): {attn:.3f} ms\n")
    rng = np.random.default_rng(0)
    for kind, opts in (("gdn", {}), ("fast_weight", {"rank": R})):
        torch.manual_seed(0)
        model = ts.SidecarModel(kind, D, [0], H, K, **opts).eval()
        with torch.no_grad():
            for layer in model.layers.values():
                layer.o_proj.weight.normal_(0, 0.02)
        layer = model.layers["0"]
        with tempfile.TemporaryDirectory() as tmp:
            cx.export(model, tmp)
            sc = cx.load(tmp)
        print(f"## {kind}")
        # step
        s = sc.new_session("step")
        x = rng.standard_normal((1, D)).astype(np.float32)
        for _ in range(20):
            sc.forward(0, x, s)
        n = 200
        c_step = 1e3 * timed(lambda: [sc.forward(0, x, s) for _ in range(n)]) / n
        with torch.no_grad():
            st = layer.init_state(1)
            ht = torch.from_numpy(x).view(1, 1, D)
            sig = torch.zeros(1, 1, 4)
            ref = (lambda: layer(ht, st)) if kind == "gdn" else (lambda: layer(ht, sig, st))
            t_step = 1e3 * timed(lambda: [ref() for _ in range(10)]) / 10
            if kind == "gdn":
                t_vec = None
            else:
                t_vec = 1e3 * timed(lambda: torch_fw_sequence(layer, ht, sig), 5)
        vec = f", PyTorch heads-batched step {t_vec:.3f} ms" if t_vec else ""
        print(f"step: Cortex {c_step:.3f} ms/token ({c_step / attn:.2f}x the host attention step); "
              f"PyTorch reference loop {t_step:.2f} ms{vec}")
        # sequences
        for T in (512, 4096):
            h = rng.standard_normal((1, T, D)).astype(np.float32)
            s1 = sc.new_session("seq")
            sc.forward(0, h, s1)
            c_seq = timed(lambda: sc.forward(0, h, sc.new_session("seq")), 2)
            c_rec = c_step * T / 1e3
            with torch.no_grad():
                ht = torch.from_numpy(h)
                if kind == "gdn":
                    t_seq = timed(lambda: torch_gdn_sequence(layer, ht), 2)
                else:
                    t_seq = timed(lambda: torch_fw_sequence(layer, ht, torch.zeros(1, T, 4)), 1)
            print(f"T={T}: Cortex chunkwise {T / c_seq:,.0f} tok/s, recurrent {T / c_rec:,.0f} tok/s "
                  f"({c_rec / c_seq:.1f}x); PyTorch vectorised {T / t_seq:,.0f} tok/s (Cortex {t_seq / c_seq:.1f}x)")
        # memory over many tokens
        s = sc.new_session("long")
        chunk = rng.standard_normal((1, 4096, D)).astype(np.float32)
        sc.forward(0, chunk, s)
        sc.forward(0, chunk, s)  # the second call merges the scratch arena's blocks (one-time)
        before_bytes, before_rss, blob0 = s.memory_bytes, rss_mb(), len(s.to_bytes())
        t0 = time.perf_counter()
        while s.tokens < args.tokens:
            sc.forward(0, chunk, s)
        el = time.perf_counter() - t0
        print(f"memory: session {before_bytes / 1e6:.3f} MB at 8,192 tokens, {s.memory_bytes / 1e6:.3f} MB at "
              f"{s.tokens:,} tokens; saved blob {blob0 / 1e6:.3f} -> {len(s.to_bytes()) / 1e6:.3f} MB; "
              f"process RSS {before_rss:.0f} -> {rss_mb():.0f} MB ({(s.tokens - 4096) / el:,.0f} tok/s)\n")


if __name__ == "__main__":
    main()
