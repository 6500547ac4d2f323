#!/usr/bin/env python3
"""Generate the golden files every test suite (Swift, C, Python) checks.

Reference: cortexcore 0.1.6 (PyPI `cortexcore`, imported as `cortex`), run on CPU in
fp32 with torch 2.11. Needs the reference venv (see README, "Regenerating goldens");
CI never runs this: its outputs are committed under Tests/goldens/.

For each model it writes a model directory (config.json + model.safetensors, via
cortex_swift.export, i.e. the module's own state_dict) and `cases.safetensors` with
inputs and the reference's outputs, plus `manifest.json` describing every case.
Cases:
  seq            sequence mode from a zero state, resets=None (nn.LSTM fused path)
  step           the reference's step() T times from a zero state (step path)
  resets_seq     sequence mode with a [B, T] reset mask, from a non-zero state
  resets_step    step mode with [B] resets per step, same data (step path)
  carry          two sequence calls, state carried from the first to the second
  rows_seq       [B]-shaped resets in sequence mode = "reset before the first step"
                 (the reference LSTM rejects [B] there; expected output comes from the
                 equivalent [B, T] mask with only t = 0 set — Cortex's documented meaning)
  b1             batch 1
Every case stores the final state under "<case>/state/<path>".

Models: lstm_stack (two LSTM blocks, biased and not), cconv_depthwise (CausalConv1d,
kernel 4 with bias and kernel 2 without), cconv_mixing (channel mixing, kernels 3 and 5,
and a kernel-0 identity), agalite (2 heads/eta 3/r 2, and 3 heads/eta 2/r 1/eps 1e-4),
slstm (2 heads with a kernel-4 conv, 3 heads without; recurrence, biases and norm
weights perturbed, since the reference initialises the recurrence to zero), mlstm
(chunk 4 so T=9 runs chunkwise with resets inside chunks, and a chunk-64 block; the
'resets_seq' and 'resets_step' cases then differ in the reference itself), xl (mem_len 3
and 6, head_dim 5, with and without biases; its step and sequence paths differ in the
reference even without resets, so 'step' and 'seq' hold different outputs); axon (five
AxonCell blocks: the default untraced linear input map, SRHT with and without permutation,
full rank, no mixing; identity/SiLU/tanh/ReLU), axon_srht_cpu (the SRHT through
cortexcore's CPU butterfly, loaded with "cortex_srht": "cpu_reference"), slstm_axon,
mlstm_axon and xl_axon (use_axon_layer / use_axon_qkv with AxonLayer's defaults and
with an explicit axon config).

Scaffolds: scaffolds_up (PreUp around LSTM and mLSTM, PreUpGated around sLSTM, PostUp
around a conv, PostUpGated around AGaLiTe), scaffolds_adapter (Adapters around PreUp,
PassThrough(XL) and PostUp(Axon)), column (three experts with top-k prior and token
refinement, a single expert, two experts without refinement), auto_axms (the seed's default
four-expert stack, cortexcore's auto builder with "AXMS", at 2 layers); parameters the reference initialises to zero
or near zero (adapter up/gate, router, mixer, alphas) are perturbed so they matter.
auto_configs.json: recipes and the config cortexcore's build_cortex_auto_config returns.

SRHT: cortexcore's CPU `_fwht_` computes [a+b, a] instead of [a+b, a-b] (it writes
through aliased views). Every golden except axon_srht_cpu is made with `_fwht_` patched to the true
Walsh-Hadamard butterfly below (what the CUDA kernel computes, and Cortex's default).

For the CausalConv1d models every sequence call passes an
explicit [B, T] reset mask (zeros where none is wanted): cortexcore's fast path drops
the carried window otherwise; Cortex always honours it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys

# AGaLiTe's discounted sum is always torch.compile'd; eager mode gives identical output
# without a ~17 s compile.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_FORMAT = 1



def _load(name, path):
    """A module of the Python package by file (importing cortex_swift would load libcortex)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cx_export = _load("cx_export", "bindings/python/cortex_swift/export.py")
# The sidecars' PyTorch reference (no package implements them).
torch_sidecars = _load("torch_sidecars", "bindings/python/cortex_swift/torch_sidecars.py")
GDNSidecarLayer, FastWeightSidecarLayer = torch_sidecars.GDNSidecarLayer, torch_sidecars.FastWeightSidecarLayer


def flat_state(td, prefix=""):
    out = {}
    for k in td.keys():
        v = td.get(k)
        name = f"{prefix}{k}"
        if hasattr(v, "keys"):
            out.update(flat_state(v, name + "."))
        else:
            out[name] = v
    return out


def build_stack(d_hidden: int, cells: list, seed: int):
    """A CortexStack of PassThrough blocks around `cells` (cortexcore cell configs)."""
    from cortex.config import CortexStackConfig, PassThroughBlockConfig
    from cortex.stacks import CortexStack

    torch.manual_seed(seed)
    cfg = CortexStackConfig(d_hidden=d_hidden, blocks=[PassThroughBlockConfig(cell=c) for c in cells], post_norm=True)
    stack = CortexStack(cfg).eval()
    # Non-trivial LayerNorm parameters, so the test sees them.
    with torch.no_grad():
        stack.norm.weight.uniform_(0.5, 1.5)
        stack.norm.bias.uniform_(-0.2, 0.2)
    return stack


# Set per model: pass explicit all-zero [B, T] resets in sequence calls, because some
# reference cells (CausalConv1d) ignore the carried state on their fast path otherwise;
# with a mask they take the exact per-step path.
EXPLICIT_RESETS = False


# Set per model with routed adapters: the route ids of every call, by batch size (the
# tests bind the same ids to their states; the manifest records them).
ROUTE_IDS = None


def routing(batch, ids=None):
    if ids is not None:
        return {"route_ids": torch.tensor(ids)}
    return {"route_ids": torch.tensor(ROUTE_IDS[str(batch)])} if ROUTE_IDS else {}


def run_seq(stack, x, state, resets=None, ids=None):
    if resets is None and EXPLICIT_RESETS:
        resets = torch.zeros(x.shape[0], x.shape[1])
    with torch.no_grad():
        return stack(x, state, resets=resets, **routing(x.shape[0], ids))


def run_steps(stack, x, state, resets=None):
    ys = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            r = None if resets is None else resets[:, t]
            y, state = stack.step(x[:, t], state, resets=r, **routing(x.shape[0]))
            ys.append(y)
    return torch.stack(ys, 1), state


def make_cases(stack, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    B, T = 3, 9
    cases = {}
    tensors = {}

    def put(case, desc, inputs, outputs, state):
        cases[case] = {"description": desc, "inputs": sorted(inputs), "outputs": sorted(outputs)}
        for k, v in {**inputs, **outputs}.items():
            tensors[f"{case}/{k}"] = v
        for k, v in flat_state(state).items():
            tensors[f"{case}/state/{k}"] = v

    x = torch.randn(B, T, d, generator=g)
    y, st = run_seq(stack, x, None)
    put("seq", "sequence mode from a zero state", {"x": x}, {"y": y}, st)
    warm = st

    ys, sts = run_steps(stack, x, stack.init_state(batch=B, dtype=torch.float32))
    put("step", "step mode T times from a zero state", {"x": x}, {"y": ys}, sts)
    print(f"  reference step vs sequence: max |diff| = {(ys - y).abs().max().item():.3e}")

    x2 = torch.randn(B, T, d, generator=g)
    resets = torch.zeros(B, T)
    resets[0, 3] = 1
    resets[1, 0] = 1
    resets[1, 6] = 1
    resets[2, 8] = 1
    init = {k: v.clone() for k, v in flat_state(warm).items()}
    y, st = run_seq(stack, x2, warm.clone(), resets=resets)
    put("resets_seq", "sequence mode with [B,T] resets from the 'seq' final state",
        {"x": x2, "resets": resets, **{f"init/{k}": v for k, v in init.items()}}, {"y": y}, st)
    ys, sts = run_steps(stack, x2, warm.clone(), resets=resets)
    put("resets_step", "step mode with [B] resets per step from the 'seq' final state",
        {"x": x2, "resets": resets, **{f"init/{k}": v for k, v in init.items()}}, {"y": ys}, sts)

    xa, xb = torch.randn(B, 5, d, generator=g), torch.randn(B, 4, d, generator=g)
    ya, sa = run_seq(stack, xa, None)
    yb, sb = run_seq(stack, xb, sa)
    put("carry", "two sequence calls; the state of the first feeds the second",
        {"xa": xa, "xb": xb}, {"ya": ya, "yb": yb}, sb)

    rows = torch.tensor([1.0, 0.0, 1.0])
    full = torch.zeros(B, T)
    full[:, 0] = rows
    y, st = run_seq(stack, x2, warm.clone(), resets=full)
    put("rows_seq", "[B] resets in sequence mode: reset those rows before the first step",
        {"x": x2, "resets": rows, **{f"init/{k}": v for k, v in init.items()}}, {"y": y}, st)

    x1 = torch.randn(1, 6, d, generator=g)
    y, st = run_seq(stack, x1, None)
    put("b1", "batch 1, sequence mode", {"x": x1}, {"y": y}, st)

    if ROUTE_IDS:
        # Streams change slots between two calls (caches built under the old slot must
        # not be reused); and single steps (T = 1 applies the adapters the reference
        # skips on flattened sequence inputs) then a sequence call, under other ids.
        ida, idb = ROUTE_IDS[str(B)], ROUTE_IDS["reroute"]
        ya, sa = run_seq(stack, xa, None, ids=ida)
        yb, sb = run_seq(stack, xb, sa, ids=idb)
        put("reroute", f"two sequence calls, route ids {ida} then {idb}",
            {"xa": xa, "xb": xb, "ids_a": torch.tensor(ida, dtype=torch.float32),
             "ids_b": torch.tensor(idb, dtype=torch.float32)}, {"ya": ya, "yb": yb}, sb)
    return cases, tensors


def write_cases(out: str, reference, tolerance: float, cases: dict, tensors: dict, **extra):
    """cases.safetensors and manifest.json of a golden folder. `reference`: the PyPI
    package the outputs come from, or a description (our own PyTorch reference)."""
    from importlib.metadata import version

    os.makedirs(out, exist_ok=True)
    cx_export.write_safetensors(os.path.join(out, "cases.safetensors"), tensors)
    manifest = {
        "golden_format": GOLDEN_FORMAT,
        "reference": {**({reference: version(reference)} if isinstance(reference, str) else reference),
                      "torch": torch.__version__},
        "tolerance": {"max_abs_relative_to_scale": tolerance,
                      "note": f"max |cortex - reference| <= {tolerance:.0e} * max(1, max |reference|)".replace("e-0", "e-")},
        "cases": cases,
        **extra,
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"wrote {out}: {len(cases)} cases, {len(tensors)} tensors")


def write_golden(name: str, stack, d: int, seed: int):
    out = os.path.join(ROOT, "Tests", "goldens", name)
    cx_export.export(stack, os.path.join(out, "model"))
    cases, tensors = make_cases(stack, d, seed)
    write_cases(out, "cortexcore", 1e-5, cases, tensors, **({"route_ids": ROUTE_IDS} if ROUTE_IDS else {}))


def _true_fwht_(x_2d):
    """The Walsh-Hadamard butterfly cortexcore's CPU `_fwht_` means to compute."""
    N, H = x_2d.shape
    h = 1
    while h < H:
        v = x_2d.view(N, -1, 2, h)
        a, b = v[:, :, 0, :].clone(), v[:, :, 1, :].clone()
        v[:, :, 0, :] = a + b
        v[:, :, 1, :] = a - b
        h *= 2
    return x_2d


def use_true_fwht(enabled: bool):
    import cortex.kernels.pytorch.srht as srht
    if not hasattr(srht, "_cpu_fwht_"):
        srht._cpu_fwht_ = srht._fwht_
    srht._fwht_ = _true_fwht_ if enabled else srht._cpu_fwht_


def perturb(stack, names, suffixes=(), scale=0.3):
    """Add noise to parameters whose name contains any of `names` or ends with one of
    `suffixes` (the reference zeroes several at init, which would hide them from the test)."""
    with torch.no_grad():
        for name, p in stack.named_parameters():
            if any(n in name for n in names) or name.endswith(tuple(suffixes)):
                p.add_(scale * torch.randn_like(p))


def set_config_field(name: str, field: str, value):
    """Add a Cortex-only field to every cell of an exported golden's config.json."""
    path = os.path.join(ROOT, "Tests", "goldens", name, "model", "config.json")
    with open(path) as f:
        doc = json.load(f)
    for block in doc["config"]["blocks"]:
        block["cell"][field] = value
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def axon_goldens():
    """Axon cores, and AxonLayer inside sLSTM, mLSTM and XL (d_hidden 16: a power of two,
    so AxonLayer's defaults take the SRHT)."""
    global EXPLICIT_RESETS
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

    EXPLICIT_RESETS = True  # the sLSTM and mLSTM convs
    stack = build_stack(16, [
        sLSTMCellConfig(num_heads=2, conv1d_kernel_size=4, use_axon_layer=True),
        sLSTMCellConfig(num_heads=4, conv1d_kernel_size=0, use_axon_layer=True,
                        axon_layer_config=AxonConfig(use_fullrank_rtu=True)),
    ], seed=43)
    perturb(stack, ["recurrent_kernel", "cell.bias", "outnorm"])
    write_golden("slstm_axon", stack, 16, seed=44)

    stack = build_stack(16, [
        mLSTMCellConfig(num_heads=2, chunk_size=4, conv1d_kernel_size=4, use_axon_layer=True, use_axon_qkv=True),
        mLSTMCellConfig(num_heads=4, chunk_size=64, conv1d_kernel_size=3, use_axon_qkv=True,
                        axon_qkv_config=AxonConfig(use_untraced_linear=True)),
    ], seed=45)
    perturb(stack, ["gate", "outnorm"])
    write_golden("mlstm_axon", stack, 16, seed=46)

    stack = build_stack(16, [
        XLCellConfig(n_heads=2, mem_len=3, use_axon_qkv=True),
        XLCellConfig(n_heads=2, head_dim=6, mem_len=5, use_bias=False, use_axon_qkv=True,
                     axon_qkv_config=AxonConfig(use_untraced_linear=False)),
    ], seed=47)
    perturb(stack, ["o_proj.bias"], suffixes=(".u", ".v"))
    write_golden("xl_axon", stack, 16, seed=48)
    EXPLICIT_RESETS = False

    # The reference's CPU butterfly, reproduced by "cortex_srht": "cpu_reference".
    use_true_fwht(False)
    stack = build_stack(16, [AxonConfig(activation="silu", use_untraced_linear=False, use_srht=True),
                             AxonConfig(use_untraced_linear=False, use_srht=True, srht_permute=False)], seed=49)
    write_golden("axon_srht_cpu", stack, 16, seed=50)
    set_config_field("axon_srht_cpu", "cortex_srht", "cpu_reference")
    use_true_fwht(True)


def build_blocks(d_hidden: int, blocks: list, seed: int):
    """A CortexStack of arbitrary block configs (scaffolds, adapters, columns)."""
    from cortex.config import CortexStackConfig
    from cortex.stacks import CortexStack

    torch.manual_seed(seed)
    stack = CortexStack(CortexStackConfig(d_hidden=d_hidden, blocks=blocks, post_norm=True)).eval()
    with torch.no_grad():
        stack.norm.weight.uniform_(0.5, 1.5)
        stack.norm.bias.uniform_(-0.2, 0.2)
    return stack


def scaffold_goldens():
    """Every scaffold (cortexcore block) around several cores, adapters and columns."""
    global EXPLICIT_RESETS
    from cortex.config import (AdapterBlockConfig, AGaLiTeCellConfig, AxonConfig, CausalConv1dConfig,
                               ColumnBlockConfig, LSTMCellConfig, PassThroughBlockConfig, PostUpBlockConfig,
                               PostUpGatedBlockConfig, PreUpBlockConfig, PreUpGatedBlockConfig, RouterConfig,
                               XLCellConfig, mLSTMCellConfig, sLSTMCellConfig)

    use_true_fwht(True)
    EXPLICIT_RESETS = True  # convs inside
    # PreUp around an LSTM (activated input) and an mLSTM (raw input, the reference's
    # rule); PreUpGated around an sLSTM without input activation; PostUp around a conv;
    # PostUpGated around AGaLiTe.
    stack = build_blocks(16, [
        PreUpBlockConfig(cell=LSTMCellConfig(), proj_factor=2.0),
        PreUpBlockConfig(cell=mLSTMCellConfig(num_heads=2, chunk_size=4), proj_factor=1.5),
        PreUpGatedBlockConfig(cell=sLSTMCellConfig(num_heads=2, conv1d_kernel_size=2), proj_factor=1.0,
                              activate_cell_input=False, gru_bias=1.0),
        PostUpBlockConfig(cell=CausalConv1dConfig(kernel_size=3), proj_factor=1.5),
        PostUpGatedBlockConfig(cell=AGaLiTeCellConfig(n_heads=2, eta=2, r=1), proj_factor=2.0),
    ], seed=61)
    perturb(stack, ["learnable_skip", "recurrent_kernel", "gate", "outnorm", ".bg"])
    write_golden("scaffolds_up", stack, 16, seed=62)

    # Adapters (zero-initialised up projection and gate: perturbed) around three scaffolds.
    stack = build_blocks(16, [
        AdapterBlockConfig(base_block=PreUpBlockConfig(cell=LSTMCellConfig()), bottleneck=8,
                           per_channel_gate=True, activation="silu"),
        AdapterBlockConfig(base_block=PassThroughBlockConfig(cell=XLCellConfig(n_heads=2, mem_len=3)),
                           bottleneck=4, activation="gelu"),
        AdapterBlockConfig(base_block=PostUpBlockConfig(cell=AxonConfig()), bottleneck=4, activation="relu"),
        AdapterBlockConfig(base_block=PreUpGatedBlockConfig(cell=CausalConv1dConfig(kernel_size=3), proj_factor=1.5),
                           bottleneck=6, per_channel_gate=True, activation="gelu"),
        AdapterBlockConfig(base_block=PostUpGatedBlockConfig(cell=AGaLiTeCellConfig(n_heads=2, eta=2, r=1)),
                           bottleneck=5, activation="silu"),
    ], seed=63)
    perturb(stack, [".up.", "learnable_skip", "router.", "e_mixer.", "alpha_"], suffixes=(".gate", ".u", ".v"))
    write_golden("scaffolds_adapter", stack, 16, seed=64)

    # Columns: three experts with top-2 prior and token refinement; a single expert (the
    # pass-through path); two experts, no refinement, 1/d_key scaling, unrestricted top-1.
    stack = build_blocks(16, [
        ColumnBlockConfig(experts=[PassThroughBlockConfig(cell=LSTMCellConfig()),
                                   PreUpBlockConfig(cell=mLSTMCellConfig(num_heads=2, chunk_size=4)),
                                   PostUpBlockConfig(cell=sLSTMCellConfig(num_heads=2))],
                          router=RouterConfig(top_k=2, whisper_lambda=0.3, temperature=0.7, d_key=8, d_key_local=6)),
        ColumnBlockConfig(experts=[PassThroughBlockConfig(cell=AxonConfig())]),
        ColumnBlockConfig(experts=[PassThroughBlockConfig(cell=CausalConv1dConfig(kernel_size=2)),
                                   PassThroughBlockConfig(cell=AGaLiTeCellConfig(n_heads=2))],
                          router=RouterConfig(whisper_lambda=0.0, use_sqrt_scale=False, restrict_to_topk=False, top_k=1)),
        # Four experts: top-3 prior, uncentred refinement. (An mLSTM here, fed PreUpGated's
        # raw branch with resets inside chunks, was ill-conditioned in fp32: cortexcore
        # itself differed from its float64 run by 8.7e-5, Cortex by 5.6e-5 — more than the
        # 1e-5 tolerance — so the sLSTM takes its place; mLSTM in PreUp(Gated) is covered
        # by scaffolds_up, column and auto_axms.)
        ColumnBlockConfig(experts=[PassThroughBlockConfig(cell=AxonConfig(activation="silu")),
                                   PostUpGatedBlockConfig(cell=XLCellConfig(n_heads=2, mem_len=4)),
                                   PreUpGatedBlockConfig(cell=sLSTMCellConfig(num_heads=2, conv1d_kernel_size=2)),
                                   PostUpBlockConfig(cell=CausalConv1dConfig(kernel_size=3, channel_mixing=True))],
                          router=RouterConfig(top_k=3, whisper_lambda=0.5, center_refine=False, local_temperature=2.0,
                                              temperature=1.3)),
    ], seed=65)
    perturb(stack, ["router.", "refiner.", "e_mixer.", "alpha_", "head.", "gate", "outnorm", "recurrent_kernel"])
    write_golden("column", stack, 16, seed=66)
    EXPLICIT_RESETS = False


def routed_goldens():
    """Routed adapters (cortexcore's RoutedAdapterLinear / RoutedAdapterHeadwiseLinearExpand)
    on every kind of Linear: scaffold projections (flattened in sequence mode, so the
    reference adapts them only at T = 1), GRU gates, sLSTM's headwise gates, mLSTM's
    gates, XL's q/k/v/r/o (r per stream) with its key/value cache, AGaLiTe, Axon, the
    Adapter scaffold and a Column's router (per-slot prior), mixer, refiner and head."""
    global EXPLICIT_RESETS, ROUTE_IDS
    from cortex.config import (AdapterBlockConfig, AGaLiTeCellConfig, AxonConfig, ColumnBlockConfig, LSTMCellConfig,
                               PassThroughBlockConfig, PostUpGatedBlockConfig, PreUpBlockConfig, PreUpGatedBlockConfig,
                               RoutedAdapterConfig, RouterConfig, XLCellConfig, mLSTMCellConfig, sLSTMCellConfig)
    from cortex.stacks import CortexStack
    from cortex.config import CortexStackConfig

    use_true_fwht(True)
    EXPLICIT_RESETS = True
    ROUTE_IDS = {"3": [1, 3, 0], "1": [2], "reroute": [3, 3, 1]}
    torch.manual_seed(81)
    # post_norm off: the Column's outputs reach ~40, and the final LayerNorm would scale
    # fp32 rounding (reference vs its own float64 run: 2.4e-5 in step mode) past the
    # 1e-5 tolerance; without it errors are measured against the outputs' own scale.
    cfg = CortexStackConfig(d_hidden=16, post_norm=False, routed_adapter=RoutedAdapterConfig(num_slots=4, rank=2, alpha=3.0),
                            blocks=[
        PreUpGatedBlockConfig(cell=sLSTMCellConfig(num_heads=2, conv1d_kernel_size=2), proj_factor=1.5),
        PassThroughBlockConfig(cell=XLCellConfig(n_heads=2, mem_len=3)),
        PostUpGatedBlockConfig(cell=AGaLiTeCellConfig(n_heads=2, eta=2, r=1)),
        AdapterBlockConfig(base_block=PreUpBlockConfig(cell=mLSTMCellConfig(num_heads=2, chunk_size=4)), bottleneck=4),
        ColumnBlockConfig(experts=[PassThroughBlockConfig(cell=AxonConfig()),
                                   PassThroughBlockConfig(cell=LSTMCellConfig()),
                                   PassThroughBlockConfig(cell=XLCellConfig(n_heads=2, mem_len=2, use_axon_qkv=True))],
                          router=RouterConfig(top_k=2, whisper_lambda=0.4, d_key=8)),
    ])
    stack = CortexStack(cfg).eval()
    with torch.no_grad():
        for name, p in stack.named_parameters():  # adapter_B starts at zero
            if name.endswith("adapter_B"):
                p.normal_(0, 0.15)
    # The router's keys and context start near zero: scale them so the per-slot prior
    # (and its top-2 choice) differs between slots.
    perturb(stack, ["router.", "refiner.", "e_mixer.", "alpha_", "gate", "outnorm", "recurrent_kernel", ".up."],
            suffixes=(".u", ".v"))
    with torch.no_grad():
        blk = stack.blocks[4]
        blk.router.keys.mul_(40)
        blk.router.context.mul_(3)
        from cortex.routed_adapter import use_route_ids
        with use_route_ids(torch.arange(4)):
            print("  per-slot router prior:", torch.softmax(blk.router.global_logits(), -1).numpy().round(3).tolist())
    write_golden("routed", stack, 16, seed=82)
    ROUTE_IDS = None
    EXPLICIT_RESETS = False


# Recipes for the auto-stack builder (Swift: AutoStack.config; C: cx_config_auto_stack),
# each checked against cortexcore's own builder.
AUTO_RECIPES = [
    {"d_hidden": 32},
    {"d_hidden": 64, "num_layers": 3, "pattern": ["AX", "M^S^", "L C Ag"]},
    {"d_hidden": 32, "num_layers": 1, "pattern": "Q,X^,Q^",
     "custom_map": {"Q": {"block_type": "preup", "proj_factor": 1.5, "cell": {"cell_type": "mlstm", "num_heads": 2}}},
     "router": {"top_k": 2, "temperature": 0.7}},
    {"d_hidden": 48, "num_layers": 2, "pattern": "XS", "post_norm": False,
     "overrides": [{"cell_type": "xl", "mem_len": 64}, {"block_type": "postup_gated", "proj_factor": 2.0}]},
    {"d_hidden": 32, "pattern": "AMC", "compile_blocks": False,
     "overrides": [{"config_type": "router", "top_k": 1}, {"cell_type": "axon", "activation": "silu"},
                   {"cell_type": "cconv", "kernel_size": 2}]},
    {"d_hidden": 32, "num_layers": 2, "router": {"d_key": 16, "temperature": 0.7},
     "layers": [[{"cell_type": "axon"}, {"cell_type": "xl", "core": {"mem_len": 64, "use_axon_qkv": True}}],
                [{"cell_type": "mlstm", "core": {"num_heads": 8, "chunk_size": 32}},
                 {"cell_type": "xl", "scaffold": {"block_type": "postup", "proj_factor": 2.0}, "core": {"mem_len": 16}},
                 {"cell_type": "slstm", "scaffold": {"gru_bias": 1.0}}]],
     "overrides": [{"cell_type": "xl", "n_heads": 2}]},
    {"d_hidden": 32, "num_layers": 1, "pattern": "XM", "routed_adapter": {"num_slots": 8, "rank": 2, "alpha": 0.5}},
    {"d_hidden": 16, "layers": [[{"block_type": "passthrough", "cell": {"cell_type": "lstm"}},
                                 {"block_type": "postup", "cell": {"cell_type": "axon", "use_srht": True}}]],
     "router": {"whisper_lambda": 0.0}},
]


def reference_auto_config(recipe):
    """cortexcore's config for a recipe, through its own builder (or, for the seed's
    explicit `layers`, Column configs built by hand)."""
    from cortex.blocks.registry import get_block_config_class
    from cortex.cells.registry import get_cell_config_class
    from cortex.config import ColumnBlockConfig, CortexStackConfig, RouterConfig
    from cortex.stacks.auto import build_cortex_auto_config

    def block(j):
        if "block_type" in j:
            return get_block_config_class(j["block_type"]).model_validate(j)
        # The seed's cell shorthand: the cell type's default block (the token table), with
        # core fields on its cell and scaffold fields on the block.
        from cortex.registry import block_config_for_token
        token = {"axon": "A", "xl": "X", "mlstm": "M", "slstm": "S", "lstm": "L", "cconv": "C", "agalite": "Ag"}[j["cell_type"]]
        base = block_config_for_token(token)
        cell = type(base.cell)(**{**base.cell.model_dump(), **j.get("core", {})})
        sc = dict(j.get("scaffold", {}))
        cls = get_block_config_class(sc.pop("block_type")) if "block_type" in sc else type(base)
        fields = {} if cls is not type(base) else base.model_dump(exclude={"cell"})
        return cls(**{**fields, **sc, "cell": cell})

    router = RouterConfig(**recipe["router"]) if "router" in recipe else None
    overrides = []
    for o in recipe.get("overrides", []):
        fields = {k: v for k, v in o.items() if k not in ("cell_type", "block_type", "config_type")}
        if o.get("config_type") == "router":
            overrides.append(RouterConfig(**fields))
        elif "cell_type" in o:
            overrides.append(get_cell_config_class(o["cell_type"])(**fields))
        else:
            overrides.append(get_block_config_class(o["block_type"])(**fields))
    if "layers" in recipe:
        from cortex.stacks.auto import _apply_overrides_model
        blocks = [ColumnBlockConfig(experts=[block(b) for b in layer], router=router or RouterConfig())
                  for layer in recipe["layers"]]
        if overrides:
            blocks = [_apply_overrides_model(b, overrides) for b in blocks]
        cfg = CortexStackConfig(d_hidden=recipe["d_hidden"], blocks=blocks)
        return json.loads(cfg.model_dump_json())
    kwargs = {k: recipe[k] for k in ("num_layers", "pattern", "post_norm", "compile_blocks") if k in recipe}
    if "routed_adapter" in recipe:
        from cortex.config import RoutedAdapterConfig
        kwargs["routed_adapter"] = RoutedAdapterConfig(**recipe["routed_adapter"])
    cfg = build_cortex_auto_config(
        d_hidden=recipe["d_hidden"], router=router, override_global_configs=overrides or None,
        custom_map={k: block(v) for k, v in recipe["custom_map"].items()} if "custom_map" in recipe else None,
        **kwargs)
    return json.loads(cfg.model_dump_json())


def auto_goldens():
    """auto_configs.json (recipe -> cortexcore's config) and auto_axms, a built stack."""
    from cortex.stacks import CortexStack
    from cortex.stacks.auto import build_cortex_auto_config

    cases = [{"recipe": r, "config": reference_auto_config(r)} for r in AUTO_RECIPES]
    path = os.path.join(ROOT, "Tests", "goldens", "auto_configs.json")
    with open(path, "w") as f:
        json.dump({"reference": "cortexcore 0.1.6 build_cortex_auto_config", "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {path}: {len(cases)} recipes")

    global EXPLICIT_RESETS
    use_true_fwht(True)
    EXPLICIT_RESETS = True
    torch.manual_seed(71)
    stack = CortexStack(build_cortex_auto_config(d_hidden=16, num_layers=2, pattern="AXMS")).eval()
    with torch.no_grad():
        stack.norm.weight.uniform_(0.5, 1.5)
        stack.norm.bias.uniform_(-0.2, 0.2)
    perturb(stack, ["router.", "refiner.", "e_mixer.", "alpha_", "gate", "outnorm", "recurrent_kernel"],
            suffixes=(".u", ".v"))
    write_golden("auto_axms", stack, 16, seed=72)
    EXPLICIT_RESETS = False


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


def mythos_goldens():
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
        out = os.path.join(ROOT, "Tests", "goldens", "mythos", name)
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


def gdn_layer_goldens():
    """A GDN hybrid sidecar layer (GDNSidecarLayer above): sequence and step mode, state
    carried across calls past the window, batch 2, and the zero-initialised output."""
    torch.manual_seed(111)
    D, H, K, W = 24, 2, 8, 6
    layer = GDNSidecarLayer(D, H, K, window=W).eval()
    g = torch.Generator().manual_seed(112)
    B = 2
    h = torch.randn(B, 9, D, generator=g)
    with torch.no_grad():
        y0, _ = layer(h, layer.init_state(B))
    assert y0.abs().max().item() == 0.0, "a fresh sidecar (zero o_proj) outputs exactly zero"
    with torch.no_grad():
        layer.o_proj.weight.normal_(0, 0.3)
        layer.a_proj.weight.mul_(3)
        for c in (layer.conv_q, layer.conv_k, layer.conv_v):
            c.weight.mul_(2)
    tensors = {f"weights/{k}": v for k, v in layer.state_dict().items()}
    with torch.no_grad():
        y, st = layer(h, layer.init_state(B))
        h2 = torch.randn(B, 5, D, generator=g)
        y2, st2 = layer(h2, st)
        ys, s = [], layer.init_state(B)
        for t in range(h.shape[1]):
            yt, s = layer(h[:, t:t + 1], s)
            ys.append(yt)
    print(f"  gdn layer: step vs sequence {(torch.cat(ys, 1) - y).abs().max().item():.2e}")
    tensors.update({"seq/h": h, "seq/y": y, "carry/h": h2, "carry/y": y2})
    for name, state in (("seq", st), ("carry", st2)):
        for k, v in state.items():
            tensors[f"{name}/state/{k}"] = v
    write_cases(os.path.join(ROOT, "Tests", "goldens", "sidecars", "gdn_layer"),
                {"bindings/python/cortex_swift/torch_sidecars.py": "GDNSidecarLayer"}, 1e-5,
                {"seq": "9 tokens from a fresh state (window 6 rolls)", "carry": "5 more tokens from the 'seq' state"},
                tensors, config={"d_model": D, "n_heads": H, "head_dim": K, "window": W, "conv": 4})


def fast_weight_goldens():
    """Fast-weight sidecar layers (FastWeightSidecarLayer above), gate and two-way mixing:
    a sequence from the seeded initial state (surprise/uncertainty signals that trip the
    guard on some tokens), a carried second call, batch 2, exact zero output at init."""
    out = os.path.join(ROOT, "Tests", "goldens", "sidecars", "fast_weights")
    tensors, configs = {}, {}
    for mode in ("gate", "two_way"):
        torch.manual_seed(121 if mode == "gate" else 122)
        D, H, d, r = 20, 2, 8, 3
        layer = FastWeightSidecarLayer(D, H, d, r, two_way=(mode == "two_way"), alpha_max=0.5).eval()
        g = torch.Generator().manual_seed(123)
        B, T = 2, 7
        h = torch.randn(B, T, D, generator=g)
        sig = torch.randn(B, T, 4, generator=g) * 1.5
        with torch.no_grad():
            y0, _ = layer(h, sig, layer.init_state(B))
            assert y0.abs().max().item() == 0.0
            layer.o_proj.weight.normal_(0, 0.3)
            layer.q_proj.weight.mul_(3); layer.k_proj.weight.mul_(3); layer.v_proj.weight.mul_(3)
            y, st = layer(h, sig, layer.init_state(B))
            h2, sig2 = torch.randn(B, 4, D, generator=g), torch.randn(B, 4, 4, generator=g) * 1.5
            y2, st2 = layer(h2, sig2, st)
        moved = (st["U"] - layer.init_state(B)["U"]).abs().max().item()
        print(f"  fast weights ({mode}): |U - U0| max {moved:.3e}, guard tripped on "
              f"{int((sig[..., 1] > 2.0).sum())} tokens")
        for k, v in layer.state_dict().items():
            tensors[f"{mode}/weights/{k}"] = v
        tensors.update({f"{mode}/seq/h": h, f"{mode}/seq/signals": sig, f"{mode}/seq/y": y,
                        f"{mode}/seq/state/U": st["U"], f"{mode}/seq/state/V": st["V"],
                        f"{mode}/carry/h": h2, f"{mode}/carry/signals": sig2, f"{mode}/carry/y": y2,
                        f"{mode}/carry/state/U": st2["U"], f"{mode}/carry/state/V": st2["V"]})
        configs[mode] = {"d_model": D, "n_heads": H, "head_dim": d, "rank": r, "gamma": 0.95, "beta": 0.01,
                         "alpha_max": 0.5, "two_way": mode == "two_way", "guard": 2.0, "controller_hidden": 8}
    write_cases(out, {"bindings/python/cortex_swift/torch_sidecars.py": "FastWeightSidecarLayer"}, 1e-5,
                {f"{m}/{c}": d for m in configs for c, d in (("seq", "7 tokens from the seeded initial U"),
                                                             ("carry", "4 more tokens from the 'seq' state"))},
                tensors, configs=configs)


def sidecar_model_goldens():
    """Whole sidecar models (torch_sidecars.SidecarModel, two hooked layers, batch 2)
    exported with cx.export, and a session's calls through them: a sequence per layer,
    three decode steps per layer, another sequence; every layer's final state. GDN with
    window 6 and chunk 4 (windows roll and chunks split inside the calls); fast weights
    with the controller fed by the plasticity signals of per-token losses (the same
    losses the tests pass to observe, one observe per step) and explicit signals in the
    first call."""
    for kind in ("gdn", "fast_weight"):
        torch.manual_seed(131 if kind == "gdn" else 132)
        D, B = 24, 2
        if kind == "gdn":
            model = torch_sidecars.SidecarModel("gdn", D, [1, 3], 2, 8, window=6, chunk=4).eval()
        else:
            model = torch_sidecars.SidecarModel("fast_weight", D, [1, 3], 2, 8, rank=3, alpha_max=0.5,
                                                signal_period=16).eval()
        with torch.no_grad():
            for layer in model.layers.values():
                layer.o_proj.weight.normal_(0, 0.3)
        out = os.path.join(ROOT, "Tests", "goldens", "sidecars", f"model_{kind}")
        cx_export.export(model, os.path.join(out, "model"))
        g = torch.Generator().manual_seed(133)
        states = {k: l.init_state(B) for k, l in model.layers.items()}
        signals = [torch_sidecars.PlasticitySignals(period=16) for _ in range(B)]
        current = torch.zeros(B, 4)
        tensors, cases = {}, {}
        steps = [("seq1", 9), ("step1", 0), ("step2", 0), ("step3", 0), ("seq2", 5)]
        for name, T in steps:
            for key, layer in model.layers.items():
                h = torch.randn(B, max(T, 1), D, generator=g)
                sig = current.unsqueeze(1).expand(B, h.shape[1], 4).contiguous()
                if kind == "fast_weight" and name == "seq1":
                    sig = torch.randn(B, T, 4, generator=g)  # explicit signals in the first call
                    tensors[f"{name}/{key}/signals"] = sig
                with torch.no_grad():
                    if kind == "gdn":
                        y, states[key] = layer(h, states[key])
                    else:
                        y, states[key] = layer(h, sig, states[key])
                tensors[f"{name}/{key}/h"] = h if T else h[:, 0]
                tensors[f"{name}/{key}/y"] = y if T else y[:, 0]
            if kind == "fast_weight" and not T:
                # After each decode step the host observes its loss (then the next step uses it).
                losses = torch.rand(B, generator=g, dtype=torch.float64) * 4
                tensors[f"{name}/losses"] = losses.float()
                current = torch.tensor([signals[b].update(float(losses.float()[b])) for b in range(B)],
                                       dtype=torch.float32)
                tensors[f"{name}/signals_after"] = current
            cases[name] = f"{'a sequence of ' + str(T) if T else 'one decode step of'} tokens per layer"
        for key, st in states.items():
            for k, v in st.items():
                tensors[f"final/{key}/{k}"] = v
        write_cases(out, {"bindings/python/cortex_swift/torch_sidecars.py": "SidecarModel"}, 1e-5, cases, tensors,
                    order=[n for n, _ in steps], layers=model.config["layers"])


def gdn_kernel_goldens():
    """The gated delta rule kernel of the GDN sidecar, against the canonical
    reference: flash-linear-attention's `fla/ops/gated_delta_rule/naive.py`
    (`naive_recurrent_gated_delta_rule`, `naive_chunk_gated_delta_rule`, chunk 64), on
    L2-normalised q/k, β = σ(·), g = logσ(·) (≤ 0), a non-zero initial state, T = 150
    (not a multiple of the chunk) and a second call carrying the state."""
    import torch.nn.functional as F
    from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule

    g = torch.Generator().manual_seed(101)
    B, T, H, K, V = 2, 150, 2, 32, 24
    q = F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1)
    k = F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1)
    v = torch.randn(B, T, H, V, generator=g)
    beta = torch.sigmoid(torch.randn(B, T, H, generator=g))
    gate = F.logsigmoid(torch.randn(B, T, H, generator=g) + 2.0)
    s0 = 0.3 * torch.randn(B, H, K, V, generator=g)
    o_rec, s_rec = naive_recurrent_gated_delta_rule(q, k, v, beta, gate, initial_state=s0, output_final_state=True)
    o_chk, s_chk = naive_chunk_gated_delta_rule(q, k, v, gate, beta, chunk_size=64, initial_state=s0,
                                                output_final_state=True)
    print(f"  fla naive recurrent vs chunk: {(o_rec - o_chk).abs().max().item():.2e}")
    # A second call from the first's final state (state carried across calls).
    q2, k2 = F.normalize(torch.randn(B, 70, H, K, generator=g), dim=-1), F.normalize(torch.randn(B, 70, H, K, generator=g), dim=-1)
    v2, b2 = torch.randn(B, 70, H, V, generator=g), torch.sigmoid(torch.randn(B, 70, H, generator=g))
    g2 = F.logsigmoid(torch.randn(B, 70, H, generator=g) + 2.0)
    o2, s2 = naive_recurrent_gated_delta_rule(q2, k2, v2, b2, g2, initial_state=s_rec, output_final_state=True)
    tensors = {"gdn/q": q, "gdn/k": k, "gdn/v": v, "gdn/beta": beta, "gdn/g": gate, "gdn/s0": s0,
               "gdn/o_recurrent": o_rec, "gdn/s_recurrent": s_rec, "gdn/o_chunk": o_chk, "gdn/s_chunk": s_chk,
               "gdn2/q": q2, "gdn2/k": k2, "gdn2/v": v2, "gdn2/beta": b2, "gdn2/g": g2, "gdn2/o": o2, "gdn2/s": s2}
    write_cases(os.path.join(ROOT, "Tests", "goldens", "sidecars", "gdn_kernel"), "fla-core", 1e-5,
                {"gdn": "T = 150 from s0: fla's naive recurrent and chunk (64) outputs and final states",
                 "gdn2": "70 more tokens from the recurrent final state"},
                tensors, layout="q, k [B, T, H, K]; v [B, T, H, V]; beta, g [B, T, H]; states [B, H, K, V]; scale K^-1/2")


def spike_goldens():
    """The Perceiver spike decoder: cortex_swift.torch_spike.SpikeDecoder
    (plain torch, the published model's architecture and state_dict keys; no package
    implements it). A small config with every head count and width different
    (hidden 24 / latent 32, 4 self-attention heads, 2 cross-attention heads, mlp_ratio
    2.5, 3 outputs), trained-looking weights (LayerNorm affines perturbed), and cases:
    a batch of 5 requests with 7, 0, 40, 1 and 13 events (an empty request in the middle;
    events unsorted, neurons repeating), one empty request alone, and one request of
    300 events. The XS-size check lives with the trained XS model (too large for goldens)."""
    from cortex_swift import torch_spike

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
    out = os.path.join(ROOT, "Tests", "goldens", "spike", "decoder_small")
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


def main():
    global EXPLICIT_RESETS
    groups = {"auto": [auto_goldens], "axon": [axon_goldens], "scaffolds": [scaffold_goldens],
              "sidecars": [gdn_kernel_goldens, gdn_layer_goldens, fast_weight_goldens, sidecar_model_goldens], "mythos": [mythos_goldens],
              "routed": [routed_goldens], "spike": [spike_goldens]}
    if len(sys.argv) > 1:
        names = sys.argv[1].split(",")
        if any(n not in groups for n in names):
            raise SystemExit(f"unknown group in {names}; groups: {', '.join(groups)} (none: all)")
        torch.set_num_threads(1)
        for n in names:
            for make in groups[n]:
                make()
        return 0
    from cortex.config import (AGaLiTeCellConfig, CausalConv1dConfig, LSTMCellConfig, XLCellConfig, mLSTMCellConfig,
                               sLSTMCellConfig)

    torch.set_num_threads(1)
    stack = build_stack(24, [LSTMCellConfig(bias=True), LSTMCellConfig(bias=False)], seed=1234)
    write_golden("lstm_stack", stack, 24, seed=99)

    EXPLICIT_RESETS = True
    stack = build_stack(24, [CausalConv1dConfig(kernel_size=4), CausalConv1dConfig(kernel_size=2, causal_conv_bias=False)],
                        seed=21)
    write_golden("cconv_depthwise", stack, 24, seed=22)
    stack = build_stack(16, [CausalConv1dConfig(kernel_size=3, channel_mixing=True),
                             CausalConv1dConfig(kernel_size=5, channel_mixing=True, causal_conv_bias=False),
                             CausalConv1dConfig(kernel_size=0)], seed=23)
    write_golden("cconv_mixing", stack, 16, seed=24)
    EXPLICIT_RESETS = False

    stack = build_stack(24, [AGaLiTeCellConfig(n_heads=2, eta=3, r=2),
                             AGaLiTeCellConfig(n_heads=3, eta=2, r=1, eps=1e-4)], seed=25)
    write_golden("agalite", stack, 24, seed=26)

    EXPLICIT_RESETS = True  # sLSTM's conv drops its carried window on the fast path too
    stack = build_stack(24, [sLSTMCellConfig(num_heads=2, conv1d_kernel_size=4),
                             sLSTMCellConfig(num_heads=3, conv1d_kernel_size=0)], seed=27)
    with torch.no_grad():  # the init zeroes the recurrence: make every weight matter
        for name, p in stack.named_parameters():
            if "recurrent_kernel" in name or name.endswith("cell.bias") or "outnorm" in name:
                p.add_(0.3 * torch.randn_like(p))
    write_golden("slstm", stack, 24, seed=28)

    # mLSTM: chunk_size 4, so the 9-step cases take the chunkwise path (2 chunks + 1
    # step) with resets inside chunks; a second block (chunk 64) takes the stepwise path.
    stack = build_stack(24, [mLSTMCellConfig(num_heads=2, chunk_size=4, conv1d_kernel_size=4),
                             mLSTMCellConfig(num_heads=3, chunk_size=64, conv1d_kernel_size=2)], seed=29)
    with torch.no_grad():  # gate weights start at zero: make them matter
        for name, p in stack.named_parameters():
            if "gate" in name or "outnorm" in name:
                p.add_(0.3 * torch.randn_like(p))
    write_golden("mlstm", stack, 24, seed=30)

    # XL: memory shorter than the sequences (it rolls), and a block whose heads do not
    # tile d_model (head_dim 5) without biases; u and v start at zero, so perturb them.
    stack = build_stack(24, [XLCellConfig(n_heads=2, mem_len=3),
                             XLCellConfig(n_heads=3, head_dim=5, mem_len=6, use_bias=False)], seed=31)
    with torch.no_grad():
        for name, p in stack.named_parameters():
            if name.endswith(".u") or name.endswith(".v") or name.endswith("proj.bias"):
                p.add_(0.3 * torch.randn_like(p))
    write_golden("xl", stack, 24, seed=32)
    EXPLICIT_RESETS = False

    axon_goldens()
    scaffold_goldens()
    routed_goldens()
    auto_goldens()
    mythos_goldens()
    for make in groups["sidecars"] + groups["spike"]:
        make()

    # The small stack the README example streams (not a golden; just a bundled model).
    ex = build_stack(64, [LSTMCellConfig(), LSTMCellConfig()], seed=7)
    cx_export.export(ex, os.path.join(ROOT, "examples", "models", "lstm_stack"))
    print("wrote examples/models/lstm_stack")


if __name__ == "__main__":
    sys.exit(main())
