"""Export a live cortexcore module to a Cortex model directory.

Pure Python + torch (imported lazily); it does not need libcortex, so the golden
script can use it before the library is built.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Any, Dict

FORMAT_VERSION = 1

# cortexcore classes Cortex can represent, by architecture. Anything else is refused
# with its class name rather than exported into a directory Cortex cannot load.
_SUPPORTED_BLOCKS = {"PassThroughBlock", "PreUpBlock", "PreUpGatedBlock", "PostUpBlock", "PostUpGatedBlock",
                     "AdapterBlock", "ColumnBlock"}
_SUPPORTED_CELLS = {"LSTMCell", "CausalConv1d", "AGaLiTeCell", "sLSTMCell", "mLSTMCell", "XLCell", "AxonCell"}


def _check_block(block: Any, where: str) -> None:
    bname = type(block).__name__
    if bname not in _SUPPORTED_BLOCKS:
        raise TypeError(f"cx.export: {where} is a {bname}; supported: {sorted(_SUPPORTED_BLOCKS)}")
    if bname == "AdapterBlock":
        _check_block(block.wrapped_block, where + ".wrapped_block")
        return
    if bname == "ColumnBlock":
        for i, expert in enumerate(block.experts):
            _check_block(expert, f"{where}.experts.{i}")
        return
    cname = type(block.cell).__name__
    if cname not in _SUPPORTED_CELLS:
        raise TypeError(f"cx.export: {where} holds a {cname}; supported: {sorted(_SUPPORTED_CELLS)}")


def _check_stack(module: Any) -> None:
    for i, block in enumerate(module.blocks):
        _check_block(block, f"block {i}")


def write_safetensors(path: str, tensors: Dict[str, Any]) -> None:
    """Write tensors (torch or numpy) as safetensors, in the given order: float32, except
    int8 numpy arrays, which stay I8 (INT8 weights)."""
    import numpy as np

    header: Dict[str, Any] = {}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        if hasattr(t, "detach"):
            t = t.detach().to("cpu").float().contiguous().numpy()
        int8 = isinstance(t, np.ndarray) and t.dtype == np.int8
        t = np.asarray(t, dtype="i1" if int8 else "<f4")
        a = np.ascontiguousarray(t).reshape(t.shape)  # keep 0-d scalars 0-d
        data = a.tobytes()
        header[name] = {"dtype": "I8" if int8 else "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def quantize_linears(module: Any, tensors: Dict[str, Any]) -> Dict[str, Any]:
    """Replace every nn.Linear weight of `module` in its state dict `tensors` by
    `<name>.weight_int8` (I8) and `<name>.weight_scale` (F32): symmetric per output
    channel, scale = max(max|row| / 127, 1e-8), q = clamp(round(w / scale), ±127) with
    torch's round half to even, all in float32 — the bytes Cortex's own INT8 load makes."""
    import torch

    out = dict(tensors)
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear):
            key = f"{name}.weight"
            w = tensors[key].detach().to("cpu").float()
            scale = (w.abs().amax(1) / 127).clamp(min=1e-8)
            q = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
            rebuilt = {}
            for k, v in out.items():  # keep the state dict's order
                if k == key:
                    rebuilt[f"{name}.weight_int8"] = q.numpy()
                    rebuilt[f"{name}.weight_scale"] = scale
                else:
                    rebuilt[k] = v
            out = rebuilt
    return out


def _export_configured(module: Any, directory: str, architecture: str, weight_format: str = "float32") -> str:
    """A module that carries its config as a dict (`module.config`) and whose
    state_dict Cortex reads as is: cortex_swift.torch_sidecars.SidecarModel (U0
    included) and cortex_swift.torch_spike.SpikeDecoder."""
    os.makedirs(directory, exist_ok=True)
    doc = {"format": "cortex", "format_version": FORMAT_VERSION, "architecture": architecture,
           "config": dict(module.config)}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    tensors = dict(module.state_dict())
    if weight_format == "int8":
        tensors = quantize_linears(module, tensors)
    write_safetensors(os.path.join(directory, "model.safetensors"), tensors)
    return directory


def _export_mythos(module: Any, directory: str) -> str:
    """OpenMythos: config.json from its MythosConfig, the state dict without the complex
    RoPE buffers (recomputed from the config) and without head.weight when it is tied to
    embed.weight (Cortex ties them back)."""
    import dataclasses

    config = dataclasses.asdict(module.cfg)
    tensors = {}
    embed = module.embed.weight
    for name, t in module.state_dict().items():
        if name in ("freqs_cis", "freqs_cis_mla"):
            continue
        if name == "head.weight" and t.data_ptr() == embed.data_ptr():
            continue
        if t.is_complex():
            raise TypeError(f"cx.export: {name} is complex; Cortex reads real tensors only")
        tensors[name] = t
    os.makedirs(directory, exist_ok=True)
    doc = {"format": "cortex", "format_version": FORMAT_VERSION, "architecture": "open_mythos", "config": config}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    write_safetensors(os.path.join(directory, "model.safetensors"), tensors)
    return directory


def export(module: Any, directory: str, weight_format: str = "float32") -> str:
    """Write `module` (a cortexcore CortexStack, an open-mythos OpenMythos, a
    cortex_swift.torch_sidecars.SidecarModel or a cortex_swift.torch_spike.SpikeDecoder) as
    `directory/config.json` and `directory/model.safetensors`. Returns the directory.
    weight_format="int8" (sidecars, spike decoders): nn.Linear weights saved as INT8
    (`quantize_linears`), about a quarter of the bytes; Cortex loads them as INT8."""
    cls = type(module).__name__
    if weight_format not in ("float32", "int8"):
        raise ValueError(f"weight_format must be 'float32' or 'int8', got {weight_format!r}")
    if weight_format == "int8" and cls not in ("SidecarModel", "SpikeDecoder"):
        raise ValueError(f"cx.export: weight_format='int8' is written for SidecarModel and SpikeDecoder; load a "
                         f"{cls} with cx.load(dir, weight_format='int8') instead")
    if cls == "OpenMythos":
        return _export_mythos(module, str(directory))
    if cls == "SidecarModel":
        return _export_configured(module, str(directory), "cortex_sidecar", weight_format)
    if cls == "SpikeDecoder":
        return _export_configured(module, str(directory), "spike_decoder", weight_format)
    if cls != "CortexStack":
        raise TypeError(f"cx.export: cannot represent a {cls}; supported: CortexStack, OpenMythos, SidecarModel, "
                        "SpikeDecoder")
    _check_stack(module)
    # Routed adapters are represented through the config's `routed_adapter`; adapters
    # injected some other way (apply_routed_adapter_ on a block) are not in it.
    ra = getattr(module.cfg, "routed_adapter", None)
    if ra is None or not getattr(ra, "enabled", False):
        for name, sub in module.named_modules():
            if type(sub).__name__.startswith("RoutedAdapter"):
                raise TypeError(f"cx.export: {name} is a {type(sub).__name__} but the stack config has no "
                                "routed_adapter; build the stack with CortexStackConfig(routed_adapter=...)")
    config = json.loads(module.cfg.model_dump_json())
    os.makedirs(directory, exist_ok=True)
    doc = {"format": "cortex", "format_version": FORMAT_VERSION, "architecture": "cortex_stack", "config": config}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    write_safetensors(os.path.join(directory, "model.safetensors"), dict(module.state_dict()))
    return directory
