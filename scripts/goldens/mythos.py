"""The OpenMythos golden group (open-mythos 0.5.0)."""
from __future__ import annotations

import os

import torch

from common import cx_export, golden_path, group, write_cases


# OpenMythos (open-mythos 0.5.0, open_mythos.main): tiny configs for both attentions.
MYTHOS_CONFIGS = {
    "gqa": dict(vocab_size=256, dim=64, n_heads=4, n_kv_heads=2, max_seq_len=48, max_loop_iters=3,
                prelude_layers=1, coda_layers=1, attn_type="gqa", n_experts=4, n_shared_experts=1,
                n_experts_per_tok=2, expert_dim=32, act_threshold=0.9, rope_theta=10000.0, lora_rank=4),
    "mla": dict(vocab_size=300, dim=96, n_heads=3, n_kv_heads=3, max_seq_len=48, max_loop_iters=4,
                prelude_layers=2, coda_layers=1, attn_type="mla", kv_lora_rank=16, q_lora_rank=24,
                qk_rope_head_dim=8, qk_nope_head_dim=12, v_head_dim=16, n_experts=8, n_shared_experts=2,
                n_experts_per_tok=3, expert_dim=24, act_threshold=0.8, rope_theta=500000.0, lora_rank=6),
}


HALT_STD = {"gqa": 0.05, "mla": 0.05}
HALT_BIAS = {"gqa": 0.9, "mla": -1.6}


@group("mythos")
def mythos():
    """OpenMythos goldens: full-sequence logits (ACT halting some positions early, so the
    no-cache path exits before max_loop_iters), n_loops past max_loop_iters (LoRA scale
    clamped), prefill + token-by-token decode through the reference's own KV cache, a
    decode deeper than its prefill (loops whose cache is empty), and greedy generation
    (the reference's generate() always samples: greedy is its forward + argmax)."""
    from open_mythos.main import MythosConfig, OpenMythos

    for name, fields in MYTHOS_CONFIGS.items():
        torch.manual_seed(91 if name == "gqa" else 93)
        cfg = MythosConfig(**fields)
        model = OpenMythos(cfg).eval()
        with torch.no_grad():
            # Make every parameter matter: norms away from 1, LTI and LoRA away from their
            # init, a load-balancing bias that changes which experts are picked, and halting
            # logits spread so positions halt at different loops.
            for n, p in model.named_parameters():
                if n.endswith("norm.weight"):
                    p.uniform_(0.7, 1.3)
            rec = model.recurrent
            rec.injection.log_A.normal_(0, 0.5)
            rec.injection.log_dt.fill_(-0.3)
            rec.injection.B.uniform_(0.05, 0.3)
            rec.lora.scale.weight.normal_(0, 1.0)
            rec.lora.B.normal_(0, 0.2)
            rec.block.ffn.router_bias.normal_(0, 0.02)
            rec.block.ffn.router.weight.mul_(20)
            rec.act.halt.weight.normal_(0, HALT_STD[name])
            rec.act.halt.bias.fill_(HALT_BIAS[name])
        out = golden_path("mythos", name)
        cx_export.export(model, os.path.join(out, "model"))
        g = torch.Generator().manual_seed(7)
        B, T, V = 2, 10, cfg.vocab_size
        ids = torch.randint(0, V, (B, T), generator=g)
        tensors, cases = {}, {}

        def put(case, desc, inputs, outputs, **params):
            cases[case] = {"description": desc, **params}
            for k, v in {**inputs, **outputs}.items():
                tensors[f"{case}/{k}"] = v.float()

        # ACT bookkeeping of the full forward (which positions halted at which loop).
        halts = []
        orig_act = type(rec.act).forward

        def spy(self, h):
            p = orig_act(self, h)
            halts.append(p.detach().clone())
            return p

        type(rec.act).forward = spy
        with torch.no_grad():
            full = model(ids)
        type(rec.act).forward = orig_act
        cum = torch.zeros(B, T)
        halted_at = torch.full((B, T), -1)
        for t, p in enumerate(halts):
            cum = cum + p * (halted_at < 0).float()
            halted_at[(cum >= cfg.act_threshold) & (halted_at < 0)] = t
        print(f"  {name}: loops run {len(halts)} of {cfg.max_loop_iters}; halted at {halted_at.tolist()}")
        print("    p per loop:", [[round(v, 2) for v in p[0].tolist()] for p in halts])
        put("full", "logits of the whole sequence, no cache (ACT may exit early)", {"ids": ids}, {"logits": full},
            n_loops=None)

        deep = cfg.max_loop_iters + 2
        with torch.no_grad():
            y = model(ids, n_loops=deep)
        put("deep", f"n_loops = {deep} > max_loop_iters (depth extrapolation)", {"ids": ids}, {"logits": y},
            n_loops=deep)

        # Prefill P tokens, then one token at a time, through the reference's cache.
        P = 4
        cache = {}
        with torch.no_grad():
            parts = [model(ids[:, :P], kv_cache=cache, start_pos=0)]
            for t in range(P, T):
                parts.append(model(ids[:, t:t + 1], kv_cache=cache, start_pos=t))
        dec = torch.cat(parts, 1)
        print(f"  {name}: decode vs full: {(dec - full).abs().max().item():.2e} (full exits early: "
              f"{len(halts) < cfg.max_loop_iters})")
        put("decode", f"prefill {P} tokens, then decode one token per call with the KV cache",
            {"ids": ids}, {"logits": dec}, prefill=P, n_loops=None)

        # Prefill with 2 loops, decode with 3: loop 2's cache starts empty at decode.
        cache = {}
        with torch.no_grad():
            parts = [model(ids[:, :P], n_loops=2, kv_cache=cache, start_pos=0)]
            for t in range(P, P + 3):
                parts.append(model(ids[:, t:t + 1], n_loops=3, kv_cache=cache, start_pos=t))
        put("mixed_loops", "prefill with n_loops 2, decode 3 tokens with n_loops 3",
            {"ids": ids[:, :P + 3]}, {"logits": torch.cat(parts, 1)}, prefill=P, n_loops=[2, 3])

        # Greedy generation: the reference's generate() loop with argmax.
        prompt, new = ids[:, :5], 6
        cache, seq = {}, prompt
        with torch.no_grad():
            for step in range(new):
                cur, start = (seq, 0) if step == 0 else (seq[:, -1:], prompt.shape[1] + step - 1)
                logits = model(cur, n_loops=cfg.max_loop_iters, kv_cache=cache, start_pos=start)
                seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
        put("greedy", f"greedy generation of {new} tokens after a {prompt.shape[1]}-token prompt",
            {"prompt": prompt}, {"tokens": seq}, max_new_tokens=new, n_loops=cfg.max_loop_iters)

        write_cases(out, "open-mythos", 1e-4, cases, tensors)
