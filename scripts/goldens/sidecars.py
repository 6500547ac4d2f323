"""The memory-sidecar golden group: the gated delta rule kernel (flash-linear-attention),
the GDN and fast-weight layers and whole sidecar models (Cortex's PyTorch reference)."""
from __future__ import annotations

import os

import torch

from common import FastWeightSidecarLayer, GDNSidecarLayer, cx_export, golden_path, group, torch_sidecars, write_cases


def gdn_layer_goldens():
    """A GDN hybrid sidecar layer (GDNSidecarLayer above): sequence and step mode, state
    carried across calls past the window, batch 2, and the zero-initialised output."""
    torch.manual_seed(111)
    D, H, K, W = 24, 2, 8, 6
    layer = GDNSidecarLayer(D, H, K, window=W).eval()
    g = torch.Generator().manual_seed(112)
    B = 2
    h = torch.randn(B, 9, D, generator=g)
    with torch.no_grad():
        y0, _ = layer(h, layer.init_state(B))
    assert y0.abs().max().item() == 0.0, "a fresh sidecar (zero o_proj) outputs exactly zero"
    with torch.no_grad():
        layer.o_proj.weight.normal_(0, 0.3)
        layer.a_proj.weight.mul_(3)
        for c in (layer.conv_q, layer.conv_k, layer.conv_v):
            c.weight.mul_(2)
    tensors = {f"weights/{k}": v for k, v in layer.state_dict().items()}
    with torch.no_grad():
        y, st = layer(h, layer.init_state(B))
        h2 = torch.randn(B, 5, D, generator=g)
        y2, st2 = layer(h2, st)
        ys, s = [], layer.init_state(B)
        for t in range(h.shape[1]):
            yt, s = layer(h[:, t:t + 1], s)
            ys.append(yt)
    print(f"  gdn layer: step vs sequence {(torch.cat(ys, 1) - y).abs().max().item():.2e}")
    tensors.update({"seq/h": h, "seq/y": y, "carry/h": h2, "carry/y": y2})
    for name, state in (("seq", st), ("carry", st2)):
        for k, v in state.items():
            tensors[f"{name}/state/{k}"] = v
    write_cases(golden_path("sidecars", "gdn_layer"),
                {"bindings/python/cortex_swift/torch_sidecars.py": "GDNSidecarLayer"}, 1e-5,
                {"seq": "9 tokens from a fresh state (window 6 rolls)", "carry": "5 more tokens from the 'seq' state"},
                tensors, config={"d_model": D, "n_heads": H, "head_dim": K, "window": W, "conv": 4})


def fast_weight_goldens():
    """Fast-weight sidecar layers (FastWeightSidecarLayer above), gate and two-way mixing:
    a sequence from the seeded initial state (surprise/uncertainty signals that trip the
    guard on some tokens), a carried second call, batch 2, exact zero output at init."""
    out = golden_path("sidecars", "fast_weights")
    tensors, configs = {}, {}
    for mode in ("gate", "two_way"):
        torch.manual_seed(121 if mode == "gate" else 122)
        D, H, d, r = 20, 2, 8, 3
        layer = FastWeightSidecarLayer(D, H, d, r, two_way=(mode == "two_way"), alpha_max=0.5).eval()
        g = torch.Generator().manual_seed(123)
        B, T = 2, 7
        h = torch.randn(B, T, D, generator=g)
        sig = torch.randn(B, T, 4, generator=g) * 1.5
        with torch.no_grad():
            y0, _ = layer(h, sig, layer.init_state(B))
            assert y0.abs().max().item() == 0.0
            layer.o_proj.weight.normal_(0, 0.3)
            layer.q_proj.weight.mul_(3); layer.k_proj.weight.mul_(3); layer.v_proj.weight.mul_(3)
            y, st = layer(h, sig, layer.init_state(B))
            h2, sig2 = torch.randn(B, 4, D, generator=g), torch.randn(B, 4, 4, generator=g) * 1.5
            y2, st2 = layer(h2, sig2, st)
        moved = (st["U"] - layer.init_state(B)["U"]).abs().max().item()
        print(f"  fast weights ({mode}): |U - U0| max {moved:.3e}, guard tripped on "
              f"{int((sig[..., 1] > 2.0).sum())} tokens")
        for k, v in layer.state_dict().items():
            tensors[f"{mode}/weights/{k}"] = v
        tensors.update({f"{mode}/seq/h": h, f"{mode}/seq/signals": sig, f"{mode}/seq/y": y,
                        f"{mode}/seq/state/U": st["U"], f"{mode}/seq/state/V": st["V"],
                        f"{mode}/carry/h": h2, f"{mode}/carry/signals": sig2, f"{mode}/carry/y": y2,
                        f"{mode}/carry/state/U": st2["U"], f"{mode}/carry/state/V": st2["V"]})
        configs[mode] = {"d_model": D, "n_heads": H, "head_dim": d, "rank": r, "gamma": 0.95, "beta": 0.01,
                         "alpha_max": 0.5, "two_way": mode == "two_way", "guard": 2.0, "controller_hidden": 8}
    write_cases(out, {"bindings/python/cortex_swift/torch_sidecars.py": "FastWeightSidecarLayer"}, 1e-5,
                {f"{m}/{c}": d for m in configs for c, d in (("seq", "7 tokens from the seeded initial U"),
                                                             ("carry", "4 more tokens from the 'seq' state"))},
                tensors, configs=configs)


def sidecar_model_goldens():
    """Whole sidecar models (torch_sidecars.SidecarModel, two hooked layers, batch 2)
    exported with cx.export, and a session's calls through them: a sequence per layer,
    three decode steps per layer, another sequence; every layer's final state. GDN with
    window 6 and chunk 4 (windows roll and chunks split inside the calls); fast weights
    with the controller fed by the plasticity signals of per-token losses (the same
    losses the tests pass to observe, one observe per step) and explicit signals in the
    first call."""
    for kind in ("gdn", "fast_weight"):
        torch.manual_seed(131 if kind == "gdn" else 132)
        D, B = 24, 2
        if kind == "gdn":
            model = torch_sidecars.SidecarModel("gdn", D, [1, 3], 2, 8, window=6, chunk=4).eval()
        else:
            model = torch_sidecars.SidecarModel("fast_weight", D, [1, 3], 2, 8, rank=3, alpha_max=0.5,
                                                signal_period=16).eval()
        with torch.no_grad():
            for layer in model.layers.values():
                layer.o_proj.weight.normal_(0, 0.3)
        out = golden_path("sidecars", f"model_{kind}")
        cx_export.export(model, os.path.join(out, "model"))
        g = torch.Generator().manual_seed(133)
        states = {k: l.init_state(B) for k, l in model.layers.items()}
        signals = [torch_sidecars.PlasticitySignals(period=16) for _ in range(B)]
        current = torch.zeros(B, 4)
        tensors, cases = {}, {}
        steps = [("seq1", 9), ("step1", 0), ("step2", 0), ("step3", 0), ("seq2", 5)]
        for name, T in steps:
            for key, layer in model.layers.items():
                h = torch.randn(B, max(T, 1), D, generator=g)
                sig = current.unsqueeze(1).expand(B, h.shape[1], 4).contiguous()
                if kind == "fast_weight" and name == "seq1":
                    sig = torch.randn(B, T, 4, generator=g)  # explicit signals in the first call
                    tensors[f"{name}/{key}/signals"] = sig
                with torch.no_grad():
                    if kind == "gdn":
                        y, states[key] = layer(h, states[key])
                    else:
                        y, states[key] = layer(h, sig, states[key])
                tensors[f"{name}/{key}/h"] = h if T else h[:, 0]
                tensors[f"{name}/{key}/y"] = y if T else y[:, 0]
            if kind == "fast_weight" and not T:
                # After each decode step the host observes its loss (then the next step uses it).
                losses = torch.rand(B, generator=g, dtype=torch.float64) * 4
                tensors[f"{name}/losses"] = losses.float()
                current = torch.tensor([signals[b].update(float(losses.float()[b])) for b in range(B)],
                                       dtype=torch.float32)
                tensors[f"{name}/signals_after"] = current
            cases[name] = f"{'a sequence of ' + str(T) if T else 'one decode step of'} tokens per layer"
        for key, st in states.items():
            for k, v in st.items():
                tensors[f"final/{key}/{k}"] = v
        write_cases(out, {"bindings/python/cortex_swift/torch_sidecars.py": "SidecarModel"}, 1e-5, cases, tensors,
                    order=[n for n, _ in steps], layers=model.config["layers"])


def gdn_kernel_goldens():
    """The gated delta rule kernel of the GDN sidecar, against the canonical
    reference: flash-linear-attention's `fla/ops/gated_delta_rule/naive.py`
    (`naive_recurrent_gated_delta_rule`, `naive_chunk_gated_delta_rule`, chunk 64), on
    L2-normalised q/k, β = σ(·), g = logσ(·) (≤ 0), a non-zero initial state, T = 150
    (not a multiple of the chunk) and a second call carrying the state."""
    import torch.nn.functional as F
    from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule

    g = torch.Generator().manual_seed(101)
    B, T, H, K, V = 2, 150, 2, 32, 24
    q = F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1)
    k = F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1)
    v = torch.randn(B, T, H, V, generator=g)
    beta = torch.sigmoid(torch.randn(B, T, H, generator=g))
    gate = F.logsigmoid(torch.randn(B, T, H, generator=g) + 2.0)
    s0 = 0.3 * torch.randn(B, H, K, V, generator=g)
    o_rec, s_rec = naive_recurrent_gated_delta_rule(q, k, v, beta, gate, initial_state=s0, output_final_state=True)
    o_chk, s_chk = naive_chunk_gated_delta_rule(q, k, v, gate, beta, chunk_size=64, initial_state=s0,
                                                output_final_state=True)
    print(f"  fla naive recurrent vs chunk: {(o_rec - o_chk).abs().max().item():.2e}")
    # A second call from the first's final state (state carried across calls).
    q2, k2 = F.normalize(torch.randn(B, 70, H, K, generator=g), dim=-1), F.normalize(torch.randn(B, 70, H, K, generator=g), dim=-1)
    v2, b2 = torch.randn(B, 70, H, V, generator=g), torch.sigmoid(torch.randn(B, 70, H, generator=g))
    g2 = F.logsigmoid(torch.randn(B, 70, H, generator=g) + 2.0)
    o2, s2 = naive_recurrent_gated_delta_rule(q2, k2, v2, b2, g2, initial_state=s_rec, output_final_state=True)
    tensors = {"gdn/q": q, "gdn/k": k, "gdn/v": v, "gdn/beta": beta, "gdn/g": gate, "gdn/s0": s0,
               "gdn/o_recurrent": o_rec, "gdn/s_recurrent": s_rec, "gdn/o_chunk": o_chk, "gdn/s_chunk": s_chk,
               "gdn2/q": q2, "gdn2/k": k2, "gdn2/v": v2, "gdn2/beta": b2, "gdn2/g": g2, "gdn2/o": o2, "gdn2/s": s2}
    write_cases(golden_path("sidecars", "gdn_kernel"), "fla-core", 1e-5,
                {"gdn": "T = 150 from s0: fla's naive recurrent and chunk (64) outputs and final states",
                 "gdn2": "70 more tokens from the recurrent final state"},
                tensors, layout="q, k [B, T, H, K]; v [B, T, H, V]; beta, g [B, T, H]; states [B, H, K, V]; scale K^-1/2")


@group("sidecars")
def sidecars():
    gdn_kernel_goldens()
    gdn_layer_goldens()
    fast_weight_goldens()
    sidecar_model_goldens()
