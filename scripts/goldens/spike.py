"""The Perceiver spike decoder golden group (Cortex's PyTorch reference of the design)."""
from __future__ import annotations

import os

import torch

from common import _load, cx_export, golden_path, group, write_cases


@group("spike")
def spike():
    """The Perceiver spike decoder: cortex_swift.torch_spike.SpikeDecoder
    (plain torch, the published model's architecture and state_dict keys; no package
    implements it). A small config with every head count and width different
    (hidden 24 / latent 32, 4 self-attention heads, 2 cross-attention heads, mlp_ratio
    2.5, 3 outputs), trained-looking weights (LayerNorm affines perturbed), and cases:
    a batch of 5 requests with 7, 0, 40, 1 and 13 events (an empty request in the middle;
    events unsorted, neurons repeating), one empty request alone, and one request of
    300 events. The XS-size check lives with the trained XS model (too large for goldens)."""
    # By file: importing the cortex_swift package would load libcortex.
    torch_spike = _load("torch_spike", "bindings/python/cortex_swift/torch_spike.py")

    torch.manual_seed(151)
    cfg = dict(hidden_dim=24, num_layers=2, num_heads=4, head_dim=6, mlp_ratio=2.5, num_latents=8, latent_dim=32,
               cross_attn_heads=2, max_neurons=40, max_time_bins=120, spike_value_buckets=8, behavior_dim=3,
               use_masked_spike_head=True, dropout=0.0, dtype="float32", use_kernels=False)
    model = torch_spike.SpikeDecoder(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith("latents") or name.endswith("query"):
                p.mul_(25)  # N(0, 0.5): latents that differ visibly
    out = golden_path("spike", "decoder_small")
    cx_export.export(model, os.path.join(out, "model"))
    g = torch.Generator().manual_seed(152)

    def request(n):
        return (torch.randint(0, 40, (n,), generator=g), torch.randint(0, 120, (n,), generator=g),
                torch.randint(0, 8, (n,), generator=g))

    tensors, cases = {}, {}
    for name, counts, what in (("batch", [7, 0, 40, 1, 13], "5 requests, the second with no events"),
                               ("empty", [0], "one request with no events"),
                               ("long", [300], "one request of 300 events")):
        n_id, t_id, v_id, offsets = torch_spike.pack([tuple(x.numpy() for x in request(c)) for c in counts])
        with torch.no_grad():
            y = model(n_id, t_id, v_id, offsets)
        tensors.update({f"{name}/neuron_id": n_id, f"{name}/time_bin": t_id, f"{name}/value": v_id,
                        f"{name}/offsets": offsets, f"{name}/velocity": y})
        cases[name] = what
    write_cases(out, {"bindings/python/cortex_swift/torch_spike.py": "SpikeDecoder"}, 1e-4, cases, tensors,
                layout="events packed: neuron_id, time_bin, value [E] int64; offsets [B + 1]; velocity [B, behavior_dim]")
