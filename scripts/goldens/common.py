"""What every golden group shares: the reference's setup, stack builders, the cases of a
stack golden, the golden file writers and the group registry (see make_goldens.py)."""
from __future__ import annotations

import importlib.util
import json
import os

# AGaLiTe's discounted sum is always torch.compile'd; eager mode gives identical output
# without a ~17 s compile.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN_FORMAT = 1
# Where goldens are written: Tests/goldens, or CORTEX_GOLDENS_OUT (to compare a fresh run
# with the committed files).
OUT = os.environ.get("CORTEX_GOLDENS_OUT") or os.path.join(ROOT, "Tests", "goldens")


def golden_path(*parts):
    return os.path.join(OUT, *parts)


# The groups make_goldens.py can run, by name, in registration order.
GROUPS: dict = {}


def group(name: str):
    """Register a golden group: `@group("xl") def xl(): ...`."""
    def register(fn):
        GROUPS[name] = fn
        return fn
    return register


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


class Runner:
    """Calls a stack as a golden needs. explicit_resets: pass all-zero [B, T] resets in
    sequence calls, because some reference cells (CausalConv1d, and the convs inside
    sLSTM and mLSTM) ignore the carried state on their fast path otherwise; with a mask
    they take the exact per-step path. route_ids: with routed adapters, the route ids
    of every call by batch size (the tests bind the same ids; the manifest records them)."""

    def __init__(self, stack, explicit_resets=False, route_ids=None):
        self.stack, self.explicit_resets, self.route_ids = stack, explicit_resets, route_ids

    def routing(self, batch, ids=None):
        if ids is not None:
            return {"route_ids": torch.tensor(ids)}
        return {"route_ids": torch.tensor(self.route_ids[str(batch)])} if self.route_ids else {}

    def seq(self, x, state, resets=None, ids=None):
        if resets is None and self.explicit_resets:
            resets = torch.zeros(x.shape[0], x.shape[1])
        with torch.no_grad():
            return self.stack(x, state, resets=resets, **self.routing(x.shape[0], ids))

    def steps(self, x, state, resets=None):
        ys = []
        with torch.no_grad():
            for t in range(x.shape[1]):
                r = None if resets is None else resets[:, t]
                y, state = self.stack.step(x[:, t], state, resets=r, **self.routing(x.shape[0]))
                ys.append(y)
        return torch.stack(ys, 1), state


def make_cases(run: Runner, d: int, seed: int):
    stack, route_ids = run.stack, run.route_ids
    run_seq = lambda x, state, resets=None, ids=None: run.seq(x, state, resets, ids)  # noqa: E731
    run_steps = lambda x, state, resets=None: run.steps(x, state, resets)  # noqa: E731
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
    y, st = run_seq(x, None)
    put("seq", "sequence mode from a zero state", {"x": x}, {"y": y}, st)
    warm = st

    ys, sts = run_steps(x, stack.init_state(batch=B, dtype=torch.float32))
    put("step", "step mode T times from a zero state", {"x": x}, {"y": ys}, sts)
    print(f"  reference step vs sequence: max |diff| = {(ys - y).abs().max().item():.3e}")

    x2 = torch.randn(B, T, d, generator=g)
    resets = torch.zeros(B, T)
    resets[0, 3] = 1
    resets[1, 0] = 1
    resets[1, 6] = 1
    resets[2, 8] = 1
    init = {k: v.clone() for k, v in flat_state(warm).items()}
    y, st = run_seq(x2, warm.clone(), resets=resets)
    put("resets_seq", "sequence mode with [B,T] resets from the 'seq' final state",
        {"x": x2, "resets": resets, **{f"init/{k}": v for k, v in init.items()}}, {"y": y}, st)
    ys, sts = run_steps(x2, warm.clone(), resets=resets)
    put("resets_step", "step mode with [B] resets per step from the 'seq' final state",
        {"x": x2, "resets": resets, **{f"init/{k}": v for k, v in init.items()}}, {"y": ys}, sts)

    xa, xb = torch.randn(B, 5, d, generator=g), torch.randn(B, 4, d, generator=g)
    ya, sa = run_seq(xa, None)
    yb, sb = run_seq(xb, sa)
    put("carry", "two sequence calls; the state of the first feeds the second",
        {"xa": xa, "xb": xb}, {"ya": ya, "yb": yb}, sb)

    rows = torch.tensor([1.0, 0.0, 1.0])
    full = torch.zeros(B, T)
    full[:, 0] = rows
    y, st = run_seq(x2, warm.clone(), resets=full)
    put("rows_seq", "[B] resets in sequence mode: reset those rows before the first step",
        {"x": x2, "resets": rows, **{f"init/{k}": v for k, v in init.items()}}, {"y": y}, st)

    x1 = torch.randn(1, 6, d, generator=g)
    y, st = run_seq(x1, None)
    put("b1", "batch 1, sequence mode", {"x": x1}, {"y": y}, st)

    if route_ids:
        # Streams change slots between two calls (caches built under the old slot must
        # not be reused); and single steps (T = 1 applies the adapters the reference
        # skips on flattened sequence inputs) then a sequence call, under other ids.
        ida, idb = route_ids[str(B)], route_ids["reroute"]
        ya, sa = run_seq(xa, None, ids=ida)
        yb, sb = run_seq(xb, sa, ids=idb)
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


def write_golden(name: str, stack, d: int, seed: int, explicit_resets: bool = False, route_ids=None):
    """A stack golden folder: the model and every case of `make_cases` (see Runner)."""
    out = golden_path(name)
    cx_export.export(stack, os.path.join(out, "model"))
    cases, tensors = make_cases(Runner(stack, explicit_resets, route_ids), d, seed)
    write_cases(out, "cortexcore", 1e-5, cases, tensors, **({"route_ids": route_ids} if route_ids else {}))


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
    path = golden_path(name, "model", "config.json")
    with open(path) as f:
        doc = json.load(f)
    for block in doc["config"]["blocks"]:
        block["cell"][field] = value
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
