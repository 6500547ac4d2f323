"""PyTorch modules of Cortex's memory sidecars: the reference the golden
tests check the Swift runtime against, and what a sidecar is trained with before
`cx.export` writes it for Cortex. Needs torch (not imported by `cortex_swift` itself).

No package implements these sidecars as the seeds describe them (their published code
is not the delta rule, and its fast weights never move), so this is the seeds' math
written plainly, one token at a time (`forward`). `GDNSidecarLayer.forward_parallel`
is the same function for training (whole sequences from a fresh state, vectorised and
differentiable, the delta rule in chunkwise form: `chunk_gated_delta_rule`).

    model = SidecarModel("gdn", d_model=256, layers=[2, 5], n_heads=4, head_dim=32)
    y, state = model.layers["2"](h, model.layers["2"].init_state(B))
    cx.export(model, "dir")      # "architecture": "cortex_sidecar"
"""
from __future__ import annotations

import torch


class GDNSidecarLayer(torch.nn.Module):
    """PyTorch reference of the hybrid Gated-DeltaNet sidecar layer (no package
    implements it; this is the math of the design, written plainly):

        q, k, v = SiLU(ShortConv1d_4(W_q h)), SiLU(ShortConv1d_4(W_k h)), SiLU(ShortConv1d_4(W_v h))
        α = σ(W_α h + b_α)  (b_α initialised to +2: persistence),  g = log α,  β = σ(W_β h)
        delta rule per head on (L2-normalised q, k, v), scale K^-1/2:
            S ← α S;  S ← S + β (v − S k) kᵀ;  o_Δ = S (scale·q̂)
        sliding-window attention per head over the last W tokens (itself included), on the
        un-normalised q, k:  o_W = softmax_j((q·k_j)/√K) v_j
        m = σ(W_m h + b_m);  o = m·o_Δ + (1 − m)·o_W;  y = W_o [o_heads]   (W_o zero-initialised)

    State: the raw projections of the last 3 tokens (the convs' windows), S [H, K, K], and
    the keys/values of the last W − 1 tokens with a count of how many are valid."""

    def __init__(self, d_model, n_heads, head_dim, window=128, conv=4):
        super().__init__()
        self.H, self.K, self.W, self.C = n_heads, head_dim, window, conv
        HK = n_heads * head_dim
        self.q_proj = torch.nn.Linear(d_model, HK, bias=False)
        self.k_proj = torch.nn.Linear(d_model, HK, bias=False)
        self.v_proj = torch.nn.Linear(d_model, HK, bias=False)
        self.a_proj = torch.nn.Linear(d_model, n_heads)
        self.b_proj = torch.nn.Linear(d_model, n_heads, bias=False)
        self.mix_proj = torch.nn.Linear(d_model, n_heads)
        self.conv_q = torch.nn.Conv1d(HK, HK, conv, groups=HK, bias=False)
        self.conv_k = torch.nn.Conv1d(HK, HK, conv, groups=HK, bias=False)
        self.conv_v = torch.nn.Conv1d(HK, HK, conv, groups=HK, bias=False)
        self.o_proj = torch.nn.Linear(HK, d_model, bias=False)
        with torch.no_grad():
            self.a_proj.bias.fill_(2.0)
            self.o_proj.weight.zero_()

    def init_state(self, B):
        HK = self.H * self.K
        return {"conv_q": torch.zeros(B, self.C - 1, HK), "conv_k": torch.zeros(B, self.C - 1, HK),
                "conv_v": torch.zeros(B, self.C - 1, HK), "S": torch.zeros(B, self.H, self.K, self.K),
                "win_k": torch.zeros(B, self.W - 1, HK), "win_v": torch.zeros(B, self.W - 1, HK),
                "win_n": torch.zeros(B)}

    def _conv(self, conv, x, window):  # x [B, T, HK], window [B, C-1, HK] of raw inputs
        full = torch.cat([window, x], 1)
        y = torch.nn.functional.conv1d(full.transpose(1, 2), conv.weight, groups=full.shape[-1]).transpose(1, 2)
        return torch.nn.functional.silu(y), full[:, -(self.C - 1):]

    def forward(self, h, state):
        """h [B, T, D] -> y [B, T, D], new state (one token at a time inside: the reference)."""
        import torch.nn.functional as F
        B, T, _ = h.shape
        H, K, W = self.H, self.K, self.W
        st = {k: v.clone() for k, v in state.items()}
        q, st["conv_q"] = self._conv(self.conv_q, self.q_proj(h), st["conv_q"])
        k, st["conv_k"] = self._conv(self.conv_k, self.k_proj(h), st["conv_k"])
        v, st["conv_v"] = self._conv(self.conv_v, self.v_proj(h), st["conv_v"])
        alpha = torch.sigmoid(self.a_proj(h))
        beta = torch.sigmoid(self.b_proj(h))
        mix = torch.sigmoid(self.mix_proj(h))
        qh, kh, vh = (t.view(B, T, H, K) for t in (q, k, v))
        qn, kn = F.normalize(qh, dim=-1), F.normalize(kh, dim=-1)
        out = torch.zeros(B, T, H, K)
        S = st["S"]
        for t in range(T):
            for b in range(B):
                for i in range(H):
                    S[b, i] = alpha[b, t, i] * S[b, i]
                    err = vh[b, t, i] - S[b, i].T @ kn[b, t, i]          # S [K_key, V]
                    S[b, i] = S[b, i] + beta[b, t, i] * torch.outer(kn[b, t, i], err)
                    o_delta = S[b, i].T @ (qn[b, t, i] * K ** -0.5)
                    # window: the last W-1 cached tokens that are valid, then this call's
                    n = int(st["win_n"][b])
                    keys = torch.cat([st["win_k"][b, W - 1 - n:].view(-1, H, K)[:, i], kh[b, :t + 1, i]], 0)[-W:]
                    vals = torch.cat([st["win_v"][b, W - 1 - n:].view(-1, H, K)[:, i], vh[b, :t + 1, i]], 0)[-W:]
                    p = torch.softmax(keys @ qh[b, t, i] / K ** 0.5, 0)
                    o_win = p @ vals
                    out[b, t, i] = mix[b, t, i] * o_delta + (1 - mix[b, t, i]) * o_win
        st["S"] = S
        for b in range(B):  # roll the window: the last W-1 of [cache; this call]
            n = int(st["win_n"][b])
            allk = torch.cat([st["win_k"][b, W - 1 - n:], k[b]], 0)[-(W - 1):]
            allv = torch.cat([st["win_v"][b, W - 1 - n:], v[b]], 0)[-(W - 1):]
            st["win_k"][b].zero_(); st["win_v"][b].zero_()
            st["win_k"][b, W - 1 - allk.shape[0]:] = allk
            st["win_v"][b, W - 1 - allv.shape[0]:] = allv
            st["win_n"][b] = allk.shape[0]
        return self.o_proj(out.reshape(B, T, H * K)), st

    def forward_parallel(self, h, chunk: int = 64):
        """The same function as `forward` from a fresh state, vectorised and
        differentiable (for training): causal convs as padded conv1d, the delta rule in
        chunkwise form (`chunk_gated_delta_rule`), window attention as a banded mask."""
        import torch.nn.functional as F
        B, T, _ = h.shape
        H, K, W = self.H, self.K, self.W

        def conv(c, x):
            x = F.pad(x.transpose(1, 2), (self.C - 1, 0))
            return F.silu(F.conv1d(x, c.weight, groups=x.shape[1])).transpose(1, 2)

        q, k, v = (conv(c, p(h)).view(B, T, H, K).transpose(1, 2)
                   for c, p in ((self.conv_q, self.q_proj), (self.conv_k, self.k_proj), (self.conv_v, self.v_proj)))
        a = self.a_proj(h).transpose(1, 2)                      # [B, H, T]
        beta = torch.sigmoid(self.b_proj(h)).transpose(1, 2)
        mix = torch.sigmoid(self.mix_proj(h)).transpose(1, 2).unsqueeze(-1)
        o_delta = chunk_gated_delta_rule(F.normalize(q, dim=-1) * K ** -0.5, F.normalize(k, dim=-1), v,
                                         beta, F.logsigmoid(a), chunk)
        # Window attention in query blocks of W: a block's keys are the W - 1 tokens
        # before it and its own (memory O(T·W), not O(T²)).
        i = torch.arange(T)
        o_win = []
        for s in range(0, T, W):
            e, ks = min(T, s + W), max(0, s - W + 1)
            band = (i[None, ks:e] <= i[s:e, None]) & (i[None, ks:e] > i[s:e, None] - W)
            o_win.append(F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, ks:e], v[:, :, ks:e], attn_mask=band))
        o_win = torch.cat(o_win, 2)
        out = mix * o_delta + (1 - mix) * o_win                 # [B, H, T, K]
        return self.o_proj(out.transpose(1, 2).reshape(B, T, H * K))


def chunk_gated_delta_rule(q, k, v, beta, g, chunk: int = 64):
    """The gated delta rule from S = 0, in the chunkwise (WY/UT) form, plain torch and
    differentiable. q, k, v [B, H, T, K] (q already scaled, q and k normalised), beta
    and g = log α [B, H, T]. Per token: S ← αS; S += β k (v − Sᵀk)ᵀ; o = Sᵀq.

    Within a chunk, with Γ_ij = exp(G_i − G_j) (G the cumulative log-decay), the updates
    solve the unit lower-triangular system (I + tril₋₁(diag(β) K Kᵀ ⊙ Γ)) U = ...; u and w
    below are its solutions for the values and for the decayed keys, so a chunk needs one
    triangular solve and a few matrix products, and chunks pass only S along."""
    B, H, T, K = q.shape
    pad = (-T) % chunk
    if pad:  # zero keys, values and β, zero log-decay: padded tokens change nothing
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        beta, g = (torch.nn.functional.pad(t, (0, pad)) for t in (beta, g))
    n = (T + pad) // chunk
    q, k, v = (t.reshape(B, H, n, chunk, K) for t in (q, k, v))
    beta, G = beta.reshape(B, H, n, chunk), g.reshape(B, H, n, chunk).cumsum(-1)
    lower = torch.ones(chunk, chunk, dtype=torch.bool).tril()
    decay = (G[..., :, None] - G[..., None, :]).masked_fill(~lower, float("-inf")).exp()
    kb = k * beta[..., None]
    eye = torch.eye(chunk)
    A = ((kb @ k.transpose(-1, -2)) * decay).masked_fill(lower.logical_not().logical_or(eye.bool()), 0)
    T_inv = torch.linalg.solve_triangular(A + eye, eye.expand_as(A), upper=False, unitriangular=True)
    u = T_inv @ (v * beta[..., None])
    w = T_inv @ (kb * G.exp()[..., None])
    intra = (q @ k.transpose(-1, -2)) * decay
    S = q.new_zeros(B, H, K, v.shape[-1])
    outs = []
    for c in range(n):
        v_new = u[:, :, c] - w[:, :, c] @ S
        outs.append((q[:, :, c] * G[:, :, c].exp()[..., None]) @ S + intra[:, :, c] @ v_new)
        last = G[:, :, c, -1:]
        S = S * last.exp()[..., None] + (k[:, :, c] * (last - G[:, :, c]).exp()[..., None]).transpose(-1, -2) @ v_new
    return torch.stack(outs, 2).reshape(B, H, n * chunk, -1)[:, :, :T]


class FastWeightSidecarLayer(torch.nn.Module):
    """PyTorch reference of the low-rank fast-weight sidecar layer (its published
    code never moves the fast weights; this is the math the seed's text gives). Per
    head, U [d, r], V [r, d]; per token, with α_eff = σ(W_α h)·m_gate·write_scale·α_max:

        U, V ← γU, γV;   k_u = Uᵀk;   U += α_eff k k_uᵀ;   V += α_eff k_u vᵀ
        U −= β·clamp(U, −1, 1);   V −= β·clamp(V, −1, 1)
        y_fast = Vᵀ(Uᵀq)                      (never forming UV; the seed writes V·(Uᵀq))
        y = σ(g)·y_fast + (1 − σ(g))·v,  g = w_g·[q; k; y_fast] + b_g      (gate mode)
        or y = w₀v + w₁y_fast, w = softmax(qᵀk/√d, qᵀy_fast/√d)            (two-way mode)
        out = W_o [y_heads]   (W_o zero-initialised)

    Controller: [m_gate, write_scale] = σ(W₂ tanh(W₁ [surprise, uncertainty, reward,
    phase] + b₁) + b₂), write_scale capped at 0.5 when uncertainty > guard. U starts from a
    fixed seeded orthonormal basis / √r (`U0`, a buffer in the state dict): from zero,
    k_u = Uᵀk = 0 and every write vanishes."""

    def __init__(self, d_model, n_heads, head_dim, rank, gamma=0.95, beta=0.01, alpha_max=0.05, two_way=False,
                 guard=2.0, ctrl_hidden=8):
        super().__init__()
        self.H, self.d, self.r = n_heads, head_dim, rank
        self.gamma, self.beta, self.alpha_max, self.two_way, self.guard = gamma, beta, alpha_max, two_way, guard
        Hd = n_heads * head_dim
        self.q_proj = torch.nn.Linear(d_model, Hd, bias=False)
        self.k_proj = torch.nn.Linear(d_model, Hd, bias=False)
        self.v_proj = torch.nn.Linear(d_model, Hd, bias=False)
        self.alpha_proj = torch.nn.Linear(d_model, n_heads)
        self.gate = torch.nn.Linear(3 * head_dim, 1)
        self.ctrl1 = torch.nn.Linear(4, ctrl_hidden)
        self.ctrl2 = torch.nn.Linear(ctrl_hidden, 2)
        self.o_proj = torch.nn.Linear(Hd, d_model, bias=False)
        g = torch.Generator().manual_seed(1234)
        basis = torch.linalg.qr(torch.randn(n_heads, head_dim, rank, generator=g))[0]  # orthonormal columns
        self.register_buffer("U0", basis / rank ** 0.5)
        with torch.no_grad():
            self.o_proj.weight.zero_()

    def init_state(self, B):
        return {"U": self.U0.unsqueeze(0).repeat(B, 1, 1, 1), "V": torch.zeros(B, self.H, self.r, self.d)}

    def forward(self, h, signals, state):
        B, T, _ = h.shape
        H, d = self.H, self.d
        U, V = state["U"].clone(), state["V"].clone()
        q, k, v = (p(h).view(B, T, H, d) for p in (self.q_proj, self.k_proj, self.v_proj))
        gates = torch.sigmoid(self.ctrl2(torch.tanh(self.ctrl1(signals))))  # [B, T, 2]
        m_gate, ws = gates[..., 0], gates[..., 1]
        ws = torch.where(signals[..., 1] > self.guard, torch.clamp(ws, max=0.5), ws)
        a = torch.sigmoid(self.alpha_proj(h)) * (m_gate * ws * self.alpha_max).unsqueeze(-1)  # [B, T, H]
        out = torch.zeros(B, T, H, d)
        for t in range(T):
            for b in range(B):
                for i in range(H):
                    U[b, i] *= self.gamma
                    V[b, i] *= self.gamma
                    ku = U[b, i].T @ k[b, t, i]
                    U[b, i] += a[b, t, i] * torch.outer(k[b, t, i], ku)
                    V[b, i] += a[b, t, i] * torch.outer(ku, v[b, t, i])
                    U[b, i] -= self.beta * torch.clamp(U[b, i], -1, 1)
                    V[b, i] -= self.beta * torch.clamp(V[b, i], -1, 1)
                    y_fast = V[b, i].T @ (U[b, i].T @ q[b, t, i])
                    if self.two_way:
                        s = torch.stack([q[b, t, i] @ k[b, t, i], q[b, t, i] @ y_fast]) / d ** 0.5
                        w = torch.softmax(s, 0)
                        out[b, t, i] = w[0] * v[b, t, i] + w[1] * y_fast
                    else:
                        gl = torch.sigmoid(self.gate(torch.cat([q[b, t, i], k[b, t, i], y_fast])))[0]
                        out[b, t, i] = gl * y_fast + (1 - gl) * v[b, t, i]
        return self.o_proj(out.reshape(B, T, H * d)), {"U": U, "V": V}


class SidecarModel(torch.nn.Module):
    """The sidecars of the hooked layers of one host transformer: an `nn.ModuleDict`
    keyed by host layer index (state_dict keys `layers.<i>.<...>`, what Cortex loads).
    `config` is the JSON `cx.export` writes (see Sources/Cortex/Sidecars/SidecarConfig.swift)."""

    def __init__(self, kind: str, d_model: int, layers, n_heads: int, head_dim: int, **options):
        super().__init__()
        if kind not in ("gdn", "fast_weight"):
            raise ValueError(f"kind must be 'gdn' or 'fast_weight', got {kind!r}")
        self.config = {"kind": kind, "d_model": d_model, "layers": [int(i) for i in layers], "n_heads": n_heads,
                       "head_dim": head_dim, **options}
        if kind == "gdn":
            make = lambda: GDNSidecarLayer(d_model, n_heads, head_dim, window=options.get("window", 128),
                                           conv=options.get("conv", 4))
        else:
            make = lambda: FastWeightSidecarLayer(
                d_model, n_heads, head_dim, options["rank"], gamma=options.get("gamma", 0.95),
                beta=options.get("beta", 0.01), alpha_max=options.get("alpha_max", 0.05),
                two_way=options.get("two_way", False), guard=options.get("uncertainty_guard", 2.0),
                ctrl_hidden=options.get("controller_hidden", 8))
        self.layers = torch.nn.ModuleDict({str(i): make() for i in self.config["layers"]})


class PlasticitySignals:
    """The fast-weight sidecar's inference-time controller inputs for one stream (float64):
    ema = d·ema + (1 − d)·loss (starting at the first loss), surprise = loss − ema,
    uncertainty = entropy of the host's softmax, phase = sin(2π·step/period)."""

    def __init__(self, period: float = 1024.0, decay: float = 0.99):
        self.period, self.decay, self.ema, self.step = period, decay, None, 0

    def update(self, loss: float, uncertainty: float = 0.0, reward: float = 0.0):
        import math
        self.ema = loss if self.ema is None else self.decay * self.ema + (1 - self.decay) * loss
        phase = math.sin(2 * math.pi * self.step / self.period)
        self.step += 1
        return [loss - self.ema, uncertainty, reward, phase]
