"""cortex_swift.hf: a Cortex sidecar hooked into a transformers decoder (Qwen2, built
locally from a config, nothing downloaded), against the same sidecar in PyTorch
(cortex_swift.torch_sidecars). Needs torch and transformers (skipped in CI)."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import cortex_swift as cx  # noqa: E402
from conftest import GOLDENS, read_safetensors  # noqa: E402
from cortex_swift import torch_sidecars  # noqa: E402
from cortex_swift.export import write_safetensors  # noqa: E402
from cortex_swift.hf import attach_sidecar  # noqa: E402

SIDE = os.path.join(GOLDENS, "sidecars", "model_gdn", "model")


def qwen(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(vocab_size=64, hidden_size=24, intermediate_size=48, num_hidden_layers=4,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    return transformers.Qwen2ForCausalLM(cfg).eval()


def torch_sidecar():
    with open(os.path.join(SIDE, "config.json")) as f:
        c = json.load(f)["config"]
    m = torch_sidecars.SidecarModel(c.pop("kind"), c.pop("d_model"), c.pop("layers"), c.pop("n_heads"),
                                    c.pop("head_dim"), **c)
    w = read_safetensors(os.path.join(SIDE, "model.safetensors"))
    m.load_state_dict({k: torch.from_numpy(v) for k, v in w.items()})
    return m.eval()


def torch_hooks(model, side, B):
    """The wiring in plain PyTorch: h <- h + Attn(LN1 h) + Sidecar(LN1 h)."""
    states = {k: l.init_state(B) for k, l in side.layers.items()}
    pending = {}
    for key, layer in side.layers.items():
        dec = model.model.layers[int(key)]

        def norm_hook(mod, args, out, key=key, layer=layer):
            y, states[key] = layer(out, states[key])
            pending[key] = y

        def attn_hook(mod, args, out, key=key):
            return (out[0] + pending.pop(key),) + tuple(out[1:])

        dec.input_layernorm.register_forward_hook(norm_hook)
        dec.self_attn.register_forward_hook(attn_hook)


def test_matches_pytorch_wiring():
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(3))
    ref_model = qwen()
    torch_hooks(ref_model, torch_sidecar(), 2)
    with torch.no_grad():
        want = ref_model(ids).logits
    model = attach_sidecar(qwen(), cx.load(SIDE))
    with torch.no_grad():
        got = model(ids, session_id="a").logits
        plain = model(ids).logits  # session_id None: sidecar off
        base = qwen()(ids).logits
    err = (got - want).abs().max().item()
    print(f"[hf] Cortex sidecar in Qwen2 vs PyTorch sidecar: max logit error {err:.2e}")
    assert err < 1e-5 * max(1.0, want.abs().max().item())
    assert torch.equal(plain, base)
    assert (got - base).abs().max().item() > 1e-3  # the sidecar does something


def test_fresh_sidecar_changes_nothing(tmp_path):
    w = read_safetensors(os.path.join(SIDE, "model.safetensors"))
    w = {k: (np.zeros_like(v) if k.endswith("o_proj.weight") else v) for k, v in w.items()}
    write_safetensors(str(tmp_path / "w.safetensors"), w)
    with open(os.path.join(SIDE, "config.json")) as f:
        fresh = cx.load_from_memory(json.load(f), str(tmp_path / "w.safetensors"))
    ids = torch.randint(0, 64, (1, 9))
    model = attach_sidecar(qwen(), fresh)
    with torch.no_grad():
        assert torch.equal(model(ids, session_id="z").logits, qwen()(ids).logits)


def test_prefill_then_decode_equals_one_call():
    """With the model's KV cache, prefill + token-by-token decoding in one session gives
    the logits of a single call over the whole sequence."""
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(5))
    model = attach_sidecar(qwen(), cx.load(SIDE))
    with torch.no_grad():
        full = model(ids, session_id="full").logits
        out = model(ids[:, :7], session_id="inc", use_cache=True)
        logits, past = [out.logits], out.past_key_values
        for t in range(7, 12):
            out = model(ids[:, t:t + 1], session_id="inc", past_key_values=past, use_cache=True)
            logits.append(out.logits)
            past = out.past_key_values
    err = (torch.cat(logits, 1) - full).abs().max().item()
    print(f"[hf] prefill + decode vs one call: {err:.2e}")
    assert err < 1e-5 * max(1.0, full.abs().max().item())


def test_session_persists_across_restart(tmp_path):
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(6))
    store = cx.SessionStore(tmp_path / "s.db")
    a = attach_sidecar(qwen(), cx.load(SIDE), store=store)
    with torch.no_grad():
        whole = a(ids, session_id="chat", reset_session=True).logits
        a(ids[:, :6], session_id="turns", reset_session=True)
    a.save_session("turns")
    del a
    b = attach_sidecar(qwen(), cx.load(SIDE), store=cx.SessionStore(tmp_path / "s.db"))  # a new "process"
    with torch.no_grad():
        # Turn 2 without the KV cache: the model sees only the new tokens, the sidecar
        # remembers turn 1; compare with a torch run of the same two turns.
        second = b(ids[:, 6:], session_id="turns").logits
    ref = qwen()
    torch_hooks(ref, torch_sidecar(), 1)
    with torch.no_grad():
        ref(ids[:, :6])
        want = ref(ids[:, 6:]).logits
    assert (second - want).abs().max().item() < 1e-5 * max(1.0, want.abs().max().item())
    assert not torch.allclose(second, whole[:, 6:])  # no KV cache: the host forgot turn 1, only the sidecar remembers
    b.detach()


def test_a_reset_recreates_the_session_at_the_inputs_batch():
    """reset_session=True with another batch than the id held: a fresh session at the
    input's batch (it was refused: "holds 2 streams, the input has 1"); without a reset
    the mismatch is still refused."""
    ids = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(8))
    a = attach_sidecar(qwen(), cx.load(SIDE))
    with torch.no_grad():
        a(ids, session_id="chat_001", reset_session=True)
        one = a(ids[:1], session_id="chat_001", reset_session=True).logits
        fresh = attach_sidecar(qwen(), cx.load(SIDE))(ids[:1], session_id="x", reset_session=True).logits
        with pytest.raises(ValueError, match="holds 1 streams, the input has 2"):
            a(ids, session_id="chat_001")
    assert a.sessions["chat_001"].batch == 1
    assert torch.equal(one, fresh)
    a.detach()


DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "python", "sidecar_recall.py")


def test_recall_demo_across_processes():
    """examples/python/sidecar_recall.py: the trained sidecar recalls pairs read by
    another process, through the store only; a fresh session does not."""
    import re
    import subprocess
    import sys
    out = subprocess.run([sys.executable, DEMO, "--gap", "1000", "--seed", "3"], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}).stdout
    print(out)
    stored = int(re.search(r"stored session: (\d)/6", out).group(1))
    fresh = int(re.search(r"fresh session \(control\): (\d)/6", out).group(1))
    assert stored >= 5 and fresh <= 2
