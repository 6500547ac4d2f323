"""INT8 weights through the Python wrapper: cx.load(..., weight_format="int8") and
model.quantize("int8") for a stack, an OpenMythos model and the spike decoder; the
weights' bytes shrink about 4x, outputs stay close to float32 (errors printed), states
move between the float32 and INT8 loads of one file, bad options are refused."""
import os

import numpy as np
import pytest

import cortex_swift as cx
from conftest import GOLDENS, read_safetensors


def test_stack_int8_close_and_states_move():
    path = os.path.join(GOLDENS, "scaffolds_up", "model")
    fp, q = cx.load(path), cx.load(path, weight_format="int8")
    assert fp.info["weights"]["linear"] == "float32" and q.info["weights"]["linear"] == "int8"
    assert q.info["weights"]["linear_bytes"] < 0.34 * fp.info["weights"]["linear_bytes"]
    assert q.info["fingerprint"] == fp.info["fingerprint"]
    x = np.sin(np.arange(2 * 9 * fp.d_in, dtype=np.float32) * 0.37).reshape(2, 9, fp.d_in)
    y_fp, s_fp = fp.forward(x)
    y_q, s_q = q.forward(x)
    y_fp, y_q = np.from_dlpack(y_fp), np.from_dlpack(y_q)
    err = float(np.abs(y_fp - y_q).max())
    print(f"[int8] scaffolds_up: max |INT8 - float32| = {err:.3e} (|y| max {np.abs(y_fp).max():.2f})")
    assert 0 < err < 0.05 * max(1.0, float(np.abs(y_fp).max()))
    # A float32 state continues in the INT8 model (and the other way).
    moved = q.state_from_bytes(s_fp.to_bytes())
    y1, _ = q.forward(x, moved)
    y2, _ = q.forward(x, s_q)
    assert np.abs(np.from_dlpack(y1) - np.from_dlpack(y2)).max() < 0.05


def test_quantize_mythos_and_decoder():
    lm = cx.load(os.path.join(GOLDENS, "mythos", "gqa", "model"))
    lm8 = lm.quantize("int8")
    assert isinstance(lm8, cx.LanguageModel) and lm8.info["weights"]["linear"] == "int8"
    ids = np.arange(10, dtype=np.int64).reshape(1, 10) * 7 % lm.info["config"]["vocab_size"]
    a, b = np.from_dlpack(lm.forward(ids)), np.from_dlpack(lm8.forward(ids))
    err = float(np.abs(a - b).max())
    print(f"[int8] mythos gqa: max |INT8 - float32| logit error {err:.3e}")
    assert 0 < err < 0.01 * max(1.0, float(np.abs(a).max()))
    d = os.path.join(GOLDENS, "spike", "decoder_small")
    dec = cx.load(os.path.join(d, "model"))
    dec8 = dec.quantize()
    c = read_safetensors(os.path.join(d, "cases.safetensors"))
    ev = [c[f"batch/{k}"].astype(np.int64) for k in ("neuron_id", "time_bin", "value", "offsets")]
    a, b = np.from_dlpack(dec.decode(*ev)), np.from_dlpack(dec8.decode(*ev))
    print(f"[int8] spike decoder: max |INT8 - float32| = {np.abs(a - b).max():.3e}")
    assert 0 < np.abs(a - b).max() < 0.01


def test_bad_options():
    path = os.path.join(GOLDENS, "scaffolds_up", "model")
    with pytest.raises(ValueError, match="weight_format"):
        cx.load(path, weight_format="int4")
    with pytest.raises(ValueError, match="scheme"):
        cx.load(path).quantize("fp8")
    with open(os.path.join(path, "config.json")) as f:
        text = f.read()
    m = cx.load_from_memory(text, os.path.join(path, "model.safetensors"), weight_format="int8")
    assert m.info["weights"]["linear"] == "int8"
    with pytest.raises(ValueError, match="load_from_memory"):
        m.quantize()
