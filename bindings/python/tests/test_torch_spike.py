"""The spike decoder against its PyTorch reference at the published XS size (too large
for committed goldens), and INT8 export: a decoder exported with weight_format="int8"
loads in Cortex bitwise equal to quantising at load. Needs torch (skipped in CI)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cortex_swift as cx  # noqa: E402
from cortex_swift import torch_spike  # noqa: E402


def requests(seed, counts):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 512, c), rng.integers(0, 1024, c), rng.integers(0, 8, c)) for c in counts]


def test_xs_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = torch_spike.SpikeDecoder(torch_spike.XS).eval()
    assert torch_spike.parameter_count(torch_spike.XS) == 4_828_936
    dec = cx.load(cx.export(model, str(tmp_path / "xs")))
    n, t, v, o = torch_spike.pack(requests(1, [300, 0, 17, 1000]))
    with torch.no_grad():
        want = model(n, t, v, o).numpy()
    got = np.from_dlpack(dec.decode(n.numpy(), t.numpy(), v.numpy(), o.numpy()))
    err = float(np.abs(got - want).max())
    print(f"[spike XS] Cortex vs PyTorch: max abs error {err:.2e} (|y| max {np.abs(want).max():.3f})")
    assert err <= 1e-4 * max(1.0, float(np.abs(want).max()))


def test_int8_export_equals_int8_load(tmp_path):
    torch.manual_seed(1)
    cfg = dict(torch_spike.XS, num_layers=2, num_latents=32)
    model = torch_spike.SpikeDecoder(cfg).eval()
    q_dir = cx.export(model, str(tmp_path / "int8"), weight_format="int8")
    f_dir = cx.export(model, str(tmp_path / "fp32"))
    a, b = cx.load(q_dir), cx.load(f_dir, weight_format="int8")
    assert a.info["weights"] == b.info["weights"] and a.info["weights"]["linear"] == "int8"
    import os
    assert os.path.getsize(os.path.join(q_dir, "model.safetensors")) < 0.5 * os.path.getsize(os.path.join(f_dir, "model.safetensors"))
    ev = [x.numpy() for x in torch_spike.pack(requests(2, [50, 120]))]
    assert np.array_equal(np.from_dlpack(a.decode(*ev)), np.from_dlpack(b.decode(*ev)))
    with pytest.raises(ValueError, match="weight_format"):
        cx.export(model, str(tmp_path / "bad"), weight_format="int4")
