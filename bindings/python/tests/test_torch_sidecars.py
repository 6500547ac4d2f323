"""The PyTorch sidecar modules' training path (cortex_swift.torch_sidecars): the
vectorised, differentiable `forward_parallel` equals the token-by-token reference, and
its chunkwise delta rule equals fla's naive recurrence. Needs torch (skipped in CI);
fla is optional."""
import pytest

torch = pytest.importorskip("torch")

from cortex_swift import torch_sidecars as ts  # noqa: E402


def test_forward_parallel_equals_reference():
    torch.manual_seed(0)
    layer = ts.GDNSidecarLayer(24, 2, 8, window=16)
    torch.nn.init.normal_(layer.o_proj.weight, std=0.3)  # zero-initialised: make the output non-trivial
    h = torch.randn(2, 150, 24)                           # 150: the last chunk is partial
    with torch.no_grad():
        ref, _ = layer(h, layer.init_state(2))
        par = layer.forward_parallel(h, chunk=64)
    err = (ref - par).abs().max().item()
    print(f"forward_parallel vs forward: max abs error {err:.2e} (|y| max {ref.abs().max().item():.2f})")
    assert err < 1e-5 * max(1.0, ref.abs().max().item())


def test_forward_parallel_has_gradients():
    torch.manual_seed(1)
    layer = ts.GDNSidecarLayer(16, 2, 8, window=8)
    torch.nn.init.normal_(layer.o_proj.weight, std=0.3)
    layer.forward_parallel(torch.randn(3, 70, 16), chunk=16).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("chunk", [16, 64])
def test_chunk_rule_equals_fla_recurrence(chunk):
    naive = pytest.importorskip("fla.ops.gated_delta_rule.naive")
    torch.manual_seed(2)
    B, H, T, K = 2, 3, 200, 16
    norm = torch.nn.functional.normalize
    q, k = norm(torch.randn(B, T, H, K), dim=-1), norm(torch.randn(B, T, H, K), dim=-1)
    v, beta = torch.randn(B, T, H, K), torch.rand(B, T, H)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H) + 2)
    ref, _ = naive.naive_recurrent_gated_delta_rule(q, k, v, beta, g, scale=K ** -0.5)
    t = lambda x: x.transpose(1, 2)
    out = t(ts.chunk_gated_delta_rule(t(q) * K ** -0.5, t(k), t(v), t(beta), t(g), chunk))
    err = (ref - out).abs().max().item()
    print(f"chunk {chunk} vs fla naive recurrence (T={T}): max abs error {err:.2e}")
    assert err < 1e-5 * max(1.0, ref.abs().max().item())
