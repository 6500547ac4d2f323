"""One golden group per core (cortexcore 0.1.6 cells in PassThrough blocks), and the
Axon group (Axon cells, and AxonLayer inside sLSTM, mLSTM and XL)."""
from __future__ import annotations

import torch

from common import build_stack, group, perturb, set_config_field, use_true_fwht, write_golden


@group("lstm")
def lstm():
    """Two LSTM blocks, biased and not."""
    from cortex.config import LSTMCellConfig
    stack = build_stack(24, [LSTMCellConfig(bias=True), LSTMCellConfig(bias=False)], seed=1234)
    write_golden("lstm_stack", stack, 24, seed=99)


@group("cconv")
def cconv():
    """Depthwise (kernel 4 with bias, kernel 2 without) and channel mixing (kernels 3 and
    5, and a kernel-0 identity)."""
    from cortex.config import CausalConv1dConfig
    stack = build_stack(24, [CausalConv1dConfig(kernel_size=4), CausalConv1dConfig(kernel_size=2, causal_conv_bias=False)],
                        seed=21)
    write_golden("cconv_depthwise", stack, 24, seed=22, explicit_resets=True)
    stack = build_stack(16, [CausalConv1dConfig(kernel_size=3, channel_mixing=True),
                             CausalConv1dConfig(kernel_size=5, channel_mixing=True, causal_conv_bias=False),
                             CausalConv1dConfig(kernel_size=0)], seed=23)
    write_golden("cconv_mixing", stack, 16, seed=24, explicit_resets=True)


@group("agalite")
def agalite():
    from cortex.config import AGaLiTeCellConfig
    stack = build_stack(24, [AGaLiTeCellConfig(n_heads=2, eta=3, r=2),
                             AGaLiTeCellConfig(n_heads=3, eta=2, r=1, eps=1e-4)], seed=25)
    write_golden("agalite", stack, 24, seed=26)


@group("slstm")
def slstm():
    """sLSTM's conv drops its carried window on the fast path too: explicit resets."""
    from cortex.config import sLSTMCellConfig
    stack = build_stack(24, [sLSTMCellConfig(num_heads=2, conv1d_kernel_size=4),
                             sLSTMCellConfig(num_heads=3, conv1d_kernel_size=0)], seed=27)
    with torch.no_grad():  # the init zeroes the recurrence: make every weight matter
        for name, p in stack.named_parameters():
            if "recurrent_kernel" in name or name.endswith("cell.bias") or "outnorm" in name:
                p.add_(0.3 * torch.randn_like(p))
    write_golden("slstm", stack, 24, seed=28, explicit_resets=True)


@group("mlstm")
def mlstm():
    """chunk_size 4, so the 9-step cases take the chunkwise path (2 chunks + 1 step) with
    resets inside chunks; a second block (chunk 64) takes the stepwise path."""
    from cortex.config import mLSTMCellConfig
    stack = build_stack(24, [mLSTMCellConfig(num_heads=2, chunk_size=4, conv1d_kernel_size=4),
                             mLSTMCellConfig(num_heads=3, chunk_size=64, conv1d_kernel_size=2)], seed=29)
    with torch.no_grad():  # gate weights start at zero: make them matter
        for name, p in stack.named_parameters():
            if "gate" in name or "outnorm" in name:
                p.add_(0.3 * torch.randn_like(p))
    write_golden("mlstm", stack, 24, seed=30, explicit_resets=True)


@group("xl")
def xl():
    """Memory shorter than the sequences (it rolls), and a block whose heads do not tile
    d_model (head_dim 5) without biases; u and v start at zero, so perturb them."""
    from cortex.config import XLCellConfig
    stack = build_stack(24, [XLCellConfig(n_heads=2, mem_len=3),
                             XLCellConfig(n_heads=3, head_dim=5, mem_len=6, use_bias=False)], seed=31)
    with torch.no_grad():
        for name, p in stack.named_parameters():
            if name.endswith(".u") or name.endswith(".v") or name.endswith("proj.bias"):
                p.add_(0.3 * torch.randn_like(p))
    write_golden("xl", stack, 24, seed=32, explicit_resets=True)


@group("axon")
def axon():
    """Axon cores, and AxonLayer inside sLSTM, mLSTM and XL (d_hidden 16: a power of two,
    so AxonLayer's defaults take the SRHT)."""
    from cortex.config import AxonConfig, XLCellConfig, mLSTMCellConfig, sLSTMCellConfig

    use_true_fwht(True)
    stack = build_stack(16, [
        AxonConfig(),
        AxonConfig(activation="silu", use_untraced_linear=False, use_srht=True),
        AxonConfig(activation="tanh", use_fullrank_rtu=True, r_min=0.4, r_max=0.99),
        AxonConfig(activation="ReLU", use_untraced_linear=False, use_srht=True, srht_permute=False),
        AxonConfig(activation="identity", use_untraced_linear=False, max_phase=3.0),
    ], seed=41)
    write_golden("axon", stack, 16, seed=42)

    # The sLSTM and mLSTM convs: explicit resets.
    stack = build_stack(16, [
        sLSTMCellConfig(num_heads=2, conv1d_kernel_size=4, use_axon_layer=True),
        sLSTMCellConfig(num_heads=4, conv1d_kernel_size=0, use_axon_layer=True,
                        axon_layer_config=AxonConfig(use_fullrank_rtu=True)),
    ], seed=43)
    perturb(stack, ["recurrent_kernel", "cell.bias", "outnorm"])
    write_golden("slstm_axon", stack, 16, seed=44, explicit_resets=True)

    stack = build_stack(16, [
        mLSTMCellConfig(num_heads=2, chunk_size=4, conv1d_kernel_size=4, use_axon_layer=True, use_axon_qkv=True),
        mLSTMCellConfig(num_heads=4, chunk_size=64, conv1d_kernel_size=3, use_axon_qkv=True,
                        axon_qkv_config=AxonConfig(use_untraced_linear=True)),
    ], seed=45)
    perturb(stack, ["gate", "outnorm"])
    write_golden("mlstm_axon", stack, 16, seed=46, explicit_resets=True)

    stack = build_stack(16, [
        XLCellConfig(n_heads=2, mem_len=3, use_axon_qkv=True),
        XLCellConfig(n_heads=2, head_dim=6, mem_len=5, use_bias=False, use_axon_qkv=True,
                     axon_qkv_config=AxonConfig(use_untraced_linear=False)),
    ], seed=47)
    perturb(stack, ["o_proj.bias"], suffixes=(".u", ".v"))
    write_golden("xl_axon", stack, 16, seed=48, explicit_resets=True)

    # The reference's CPU butterfly, reproduced by "cortex_srht": "cpu_reference".
    use_true_fwht(False)
    stack = build_stack(16, [AxonConfig(activation="silu", use_untraced_linear=False, use_srht=True),
                             AxonConfig(use_untraced_linear=False, use_srht=True, srht_permute=False)], seed=49)
    write_golden("axon_srht_cpu", stack, 16, seed=50)
    set_config_field("axon_srht_cpu", "cortex_srht", "cpu_reference")
    use_true_fwht(True)
