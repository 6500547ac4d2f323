"""PyTorch reference of the Perceiver spike decoder: what the golden
tests check Cortex against and what a decoder is trained with before `cx.export`
writes it. Needs torch (not imported by `cortex_swift` itself).

Plain torch, written from the architecture of the seed's published code
(github peterajhgraham/cortex-engine, `cortex/models/`), with the same config fields
and the same `state_dict()` keys, so its checkpoints load too:

    token_e   = neuron_emb[neuron_id] + time_emb[time_bin] + value_emb[value]      [E, Dh]
    latents   = x0 + out_proj(MHA(q_proj(LN_q x0), kv_proj(LN_kv tokens)))   x0 [L, D] learned;
                one request's latents attend to that request's events only
    N blocks  : x += out_proj(MHA(qkv_proj(LN_attn x)));  x += W2 GELU(W1 LN_mlp x)   (pre-LN)
    z         = LN_final(x)
    behaviour : k, v = kv_proj(LN_head z);  y_o = w_out · MHA(q_proj(query_o), k, v)  [B, behavior_dim]

Every Linear has no bias; LayerNorms have eps 1e-5; GELU is exact (erf); attention
scales by head_dim^-1/2. Heads: `cross_attn_heads` for the latent cross-attention,
`num_heads` for the self-attention blocks and the behaviour head (head width
latent_dim / heads). `masked_spike_head` (an auxiliary pretraining head) is kept for
state_dict compatibility; the decoder's output does not use it.

A request with no events: its cross-attention has nothing to attend to and adds zero
(torch >= 2.5 gives zero for a fully masked row), so its output is the decoder's
prediction from the learned latents alone: a defined row, never missing or NaN.

Events are packed without padding: `neuron_id`, `time_bin`, `value` [E] (int64) and
`offsets` [B + 1] (request b owns events offsets[b]:offsets[b+1]).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

XS = dict(hidden_dim=256, num_layers=5, num_heads=4, head_dim=64, mlp_ratio=4.0, num_latents=128, latent_dim=256,
          cross_attn_heads=4, max_neurons=512, max_time_bins=1024, spike_value_buckets=8, behavior_dim=2)
S = dict(XS, hidden_dim=512, num_layers=7, num_heads=8, num_latents=256, latent_dim=512, cross_attn_heads=8)
M = dict(XS, hidden_dim=768, num_layers=11, num_heads=12, num_latents=384, latent_dim=768, cross_attn_heads=12)


def _heads(x, h):  # [..., T, h*d] -> [..., h, T, d]
    return x.unflatten(-1, (h, -1)).transpose(-3, -2)


def _merge(x):  # [..., h, T, d] -> [..., T, h*d]
    return x.transpose(-3, -2).flatten(-2)


class _Tokenizer(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.neuron_emb = torch.nn.Embedding(c["max_neurons"], c["hidden_dim"])
        self.time_emb = torch.nn.Embedding(c["max_time_bins"], c["hidden_dim"])
        self.value_emb = torch.nn.Embedding(c["spike_value_buckets"], c["hidden_dim"])
        for e in (self.neuron_emb, self.time_emb, self.value_emb):
            torch.nn.init.normal_(e.weight, std=0.02)

    def forward(self, neuron_id, time_bin, value):
        return self.neuron_emb(neuron_id) + self.time_emb(time_bin) + self.value_emb(value)


class _CrossAttention(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        D, Dh = c["latent_dim"], c["hidden_dim"]
        self.heads = c["cross_attn_heads"]
        self.q_proj = torch.nn.Linear(D, D, bias=False)
        self.kv_proj = torch.nn.Linear(Dh, 2 * D, bias=False)
        self.out_proj = torch.nn.Linear(D, D, bias=False)
        self.norm_q = torch.nn.LayerNorm(D)
        self.norm_kv = torch.nn.LayerNorm(Dh)

    def forward(self, latents, tokens, mask):  # [B, L, D], [B, E, Dh], [B, E] (True: an event)
        q = _heads(self.q_proj(self.norm_q(latents)), self.heads)
        k, v = (_heads(t, self.heads) for t in self.kv_proj(self.norm_kv(tokens)).chunk(2, -1))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        # A request without events: a fully masked row attends to nothing (zero).
        out = torch.where(mask.any(-1)[:, None, None, None], out, torch.zeros_like(out))
        return latents + self.out_proj(_merge(out))


class _Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        D = c["latent_dim"]
        self.heads = c["num_heads"]
        self.qkv_proj = torch.nn.Linear(D, 3 * D, bias=False)
        self.out_proj = torch.nn.Linear(D, D, bias=False)
        self.norm_attn = torch.nn.LayerNorm(D)
        self.norm_mlp = torch.nn.LayerNorm(D)
        hidden = int(D * c.get("mlp_ratio", 4.0))
        self.mlp = torch.nn.Sequential(torch.nn.Linear(D, hidden, bias=False), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, D, bias=False))

    def forward(self, x):
        q, k, v = (_heads(t, self.heads) for t in self.qkv_proj(self.norm_attn(x)).chunk(3, -1))
        x = x + self.out_proj(_merge(F.scaled_dot_product_attention(q, k, v)))
        return x + self.mlp(self.norm_mlp(x))


class _Encoder(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.latents = torch.nn.Parameter(torch.randn(c["num_latents"], c["latent_dim"]) * 0.02)
        self.cross_attn = _CrossAttention(c)
        self.self_attn_blocks = torch.nn.ModuleList(_Block(c) for _ in range(c["num_layers"]))
        self.final_norm = torch.nn.LayerNorm(c["latent_dim"])

    def forward(self, tokens, mask):
        x = self.cross_attn(self.latents.expand(tokens.shape[0], -1, -1), tokens, mask)
        for block in self.self_attn_blocks:
            x = block(x)
        return self.final_norm(x)


class _BehaviorHead(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        D = c["latent_dim"]
        self.heads = c["num_heads"]
        self.query = torch.nn.Parameter(torch.randn(c["behavior_dim"], D) * 0.02)
        self.q_proj = torch.nn.Linear(D, D, bias=False)
        self.kv_proj = torch.nn.Linear(D, 2 * D, bias=False)
        self.out_proj = torch.nn.Linear(D, 1, bias=False)
        self.norm = torch.nn.LayerNorm(D)

    def forward(self, z):  # [B, L, D] -> [B, behavior_dim]
        q = _heads(self.q_proj(self.query).expand(z.shape[0], -1, -1), self.heads)
        k, v = (_heads(t, self.heads) for t in self.kv_proj(self.norm(z)).chunk(2, -1))
        return self.out_proj(_merge(F.scaled_dot_product_attention(q, k, v))).squeeze(-1)


class _MaskedSpikeHead(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.proj = torch.nn.Linear(c["latent_dim"], c["spike_value_buckets"])


class SpikeDecoder(torch.nn.Module):
    """The Perceiver spike decoder; `config` holds the fields of XS/S/M above (the
    reference's CortexConfig; fields it ignores at inference may be present)."""

    def __init__(self, config: dict):
        super().__init__()
        c = dict(config)
        if c["latent_dim"] % c["num_heads"] or c["latent_dim"] % c["cross_attn_heads"]:
            raise ValueError("latent_dim must be a multiple of num_heads and of cross_attn_heads")
        self.config = c
        self.tokenizer = _Tokenizer(c)
        self.encoder = _Encoder(c)
        self.behavior_head = _BehaviorHead(c)
        if c.get("use_masked_spike_head", True):
            self.masked_spike_head = _MaskedSpikeHead(c)

    def forward(self, neuron_id, time_bin, value, offsets):
        """Packed events [E] and offsets [B + 1] -> hand velocity [B, behavior_dim]."""
        B = offsets.numel() - 1
        counts = offsets[1:] - offsets[:-1]
        E_max = max(int(counts.max()), 1) if B else 1
        tokens = self.tokenizer(neuron_id, time_bin, value)                    # [E, Dh]
        request = torch.repeat_interleave(torch.arange(B), counts)
        slot = torch.arange(neuron_id.numel()) - offsets[:-1][request]
        padded = tokens.new_zeros(B, E_max, tokens.shape[-1])
        padded[request, slot] = tokens
        mask = torch.zeros(B, E_max, dtype=torch.bool)
        mask[request, slot] = True
        return self.behavior_head(self.encoder(padded, mask))


def pack(requests):
    """[(neuron_id, time_bin, value) arrays per request] -> the packed tensors and offsets."""
    import numpy as np
    counts = [len(r[0]) for r in requests]
    offsets = torch.tensor([0] + list(np.cumsum(counts)), dtype=torch.int64)
    cols = [torch.as_tensor(np.concatenate([np.asarray(r[i], dtype=np.int64) for r in requests]) if requests
                            else np.zeros(0, np.int64)) for i in range(3)]
    return cols[0], cols[1], cols[2], offsets


def parameter_count(config: dict) -> int:
    """XS 4,828,936; S 24,800,776; M 83,514,632 (the published sizes)."""
    return sum(p.numel() for p in SpikeDecoder(config).parameters())


def load_state_dict(directory: str) -> dict:
    """The state dict in `directory/model.safetensors` (a cx.export directory), with INT8
    linears (`<name>.weight_int8` + `<name>.weight_scale`) dequantised to `<name>.weight`
    = q · scale per output row: the float32 weights Cortex's INT8 kernels compute with."""
    import os

    from safetensors.torch import load_file
    raw = load_file(os.path.join(directory, "model.safetensors"))
    out = {}
    for k, v in raw.items():
        if k.endswith(".weight_int8"):
            name = k[:-len(".weight_int8")]
            out[name + ".weight"] = v.float() * raw[name + ".weight_scale"].float()[:, None]
        elif not k.endswith(".weight_scale"):
            out[k] = v
    return out
