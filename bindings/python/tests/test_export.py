"""cx.export from a live cortexcore module (needs torch and cortexcore: skipped in CI,
run in the reference venv)."""
import numpy as np
import pytest

import cortex_swift as cx


def test_export_then_load_matches_the_module(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("cortex")
    from cortex.config import CortexStackConfig, LSTMCellConfig, PassThroughBlockConfig
    from cortex.stacks import CortexStack

    torch.manual_seed(3)
    stack = CortexStack(CortexStackConfig(d_hidden=16, blocks=[PassThroughBlockConfig(cell=LSTMCellConfig())] * 2)).eval()
    _assert_export_runs_as_the_module(stack, torch.randn(2, 7, 16), tmp_path, "export round trip")


def _assert_export_runs_as_the_module(stack, x, tmp_path, what):
    """Export `stack`, load it in Cortex and compare sequence outputs on `x`."""
    import torch

    cx.export(stack, tmp_path / "m")
    with torch.no_grad():
        want, _ = stack(x, None)
    with cx.load(tmp_path / "m") as m:
        y, _ = m.forward(x)
    err = float(np.abs(np.from_dlpack(y) - want.numpy()).max())
    print(f"[golden] {what}: max abs error {err:.3e}")
    assert err <= 1e-5 * max(1.0, float(want.abs().max()))


def test_export_refuses_what_cortex_cannot_represent(tmp_path):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="Linear"):
        cx.export(torch.nn.Linear(2, 2), tmp_path / "x")


def test_export_routed_adapters(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("cortex")
    from cortex.config import (CortexStackConfig, PassThroughBlockConfig, PreUpBlockConfig, RoutedAdapterConfig,
                               sLSTMCellConfig, XLCellConfig)
    from cortex.stacks import CortexStack

    torch.manual_seed(4)
    stack = CortexStack(CortexStackConfig(
        d_hidden=8, blocks=[PreUpBlockConfig(cell=sLSTMCellConfig(num_heads=2)),
                            PassThroughBlockConfig(cell=XLCellConfig(n_heads=2, mem_len=3))],
        routed_adapter=RoutedAdapterConfig(num_slots=3, rank=2, alpha=3.0))).eval()
    with torch.no_grad():  # adapter_B starts at zero: make the adapters matter
        for name, p in stack.named_parameters():
            if name.endswith("adapter_B"):
                p.normal_(0, 0.5)
    cx.export(stack, tmp_path / "r")
    x, ids = torch.randn(2, 5, 8), torch.tensor([2, 0])
    with torch.no_grad():
        want, _ = stack(x, None, route_ids=ids)
    with cx.load(tmp_path / "r") as m:
        with pytest.raises(cx.CortexError, match="route ids"):
            m.forward(x)
        y, st = m.forward(x, route_ids=ids)
        assert st.route_ids == [2, 0]
    err = float(np.abs(np.from_dlpack(y) - want.numpy()).max())
    print(f"[golden] export with routed adapters: max abs error {err:.3e}")
    assert err <= 1e-5 * max(1.0, float(want.abs().max()))


def test_export_handles_scaffolds_and_columns(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("cortex")
    from cortex.stacks import CortexStack
    from cortex.stacks.auto import build_cortex_auto_config

    torch.manual_seed(5)
    stack = CortexStack(build_cortex_auto_config(d_hidden=16, num_layers=1, pattern="L C Ag")).eval()
    _assert_export_runs_as_the_module(stack, torch.randn(2, 6, 16), tmp_path, "export of an auto-built Column stack")


def test_export_open_mythos(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("open_mythos")
    from open_mythos.main import MythosConfig, OpenMythos

    torch.manual_seed(6)
    model = OpenMythos(MythosConfig(vocab_size=64, dim=32, n_heads=4, n_kv_heads=2, max_seq_len=16, max_loop_iters=2,
                                    prelude_layers=1, coda_layers=1, attn_type="gqa", n_experts=4,
                                    n_shared_experts=1, n_experts_per_tok=2, expert_dim=16, lora_rank=2)).eval()
    cx.export(model, tmp_path / "lm")
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        want = model(ids).numpy()
    with cx.load(tmp_path / "lm") as m:
        assert isinstance(m, cx.LanguageModel)
        got = np.from_dlpack(m.forward(ids))
    err = float(np.abs(got - want).max())
    print(f"[golden] export of OpenMythos: max abs error {err:.3e}")
    assert err <= 1e-4 * max(1.0, float(np.abs(want).max()))
