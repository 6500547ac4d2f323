"""Model and State: thin owners of cx_model_t / cx_state_t handles."""
from __future__ import annotations

import ctypes
import json
import os

from . import _ffi
from ._lib import Handle, check, lib, size_query
from ._tensor import Input, NoInput, Tensor

_NAN_POLICIES = {"propagate": _ffi.CX_NAN_PROPAGATE, "reject": _ffi.CX_NAN_REJECT}


class State(Handle):
    """Recurrent state of `batch` streams. Used by one thread at a time (a concurrent
    call raises Busy); forward/step advance it in place."""

    _free = "cx_state_free"

    def __init__(self, handle, model: "Model"):
        super().__init__(handle)
        self.model = model

    @property
    def batch(self) -> int:
        b = ctypes.c_int64()
        check(lib.cx_state_batch(self.handle, ctypes.byref(b)))
        return b.value

    def reset(self, mask=None) -> "State":
        """Zero the rows where `mask` ([B], bool/int/float) is non-zero; all rows if None."""
        with (Input(mask, mask=True) if mask is not None else NoInput()) as m:
            check(lib.cx_state_reset(self.handle, m.view))
        return self

    def clone(self) -> "State":
        out = ctypes.c_void_p()
        check(lib.cx_state_clone(self.handle, ctypes.byref(out)))
        return State(out, self.model)

    def set_route_ids(self, ids) -> "State":
        """Bind stream b to routed-adapter slot ids[b] ([B] integers) for the calls that
        follow; None unbinds. (model.forward(..., route_ids=...) does this per call.)"""
        with (Input(ids, mask=True) if ids is not None else NoInput()) as v:
            check(lib.cx_state_set_route_ids(self.handle, v.view))
        return self

    @property
    def route_ids(self):
        """The bound route ids as a list, or None when unbound."""
        b = self.batch
        buf = (ctypes.c_int64 * b)()
        is_set = ctypes.c_int32()
        check(lib.cx_state_get_route_ids(self.handle, buf, b, ctypes.byref(is_set)))
        return list(buf) if is_set.value else None

    def get(self, path: str) -> Tensor:
        """A copy of one state tensor, e.g. "PassThroughBlock_0.LSTMCell.h" ([B, ...])."""
        out = ctypes.c_void_p()
        check(lib.cx_state_get_tensor(self.handle, path.encode(), ctypes.byref(out)))
        return Tensor(out)

    def set(self, path: str, value) -> "State":
        """Overwrite one state tensor (exact shape [B, ...]; numpy, torch or any DLPack
        producer). Use it to import a PyTorch state: flatten the reference's TensorDict
        to these paths (see model.info["state"])."""
        with Input(value) as v:
            check(lib.cx_state_set_tensor(self.handle, path.encode(), v.view))
        return self

    def to_dict(self) -> dict:
        """Every state tensor as a numpy array, by path."""
        import numpy as np

        return {s["name"]: np.from_dlpack(self.get(s["name"])) for s in self.model.info["state"]}

    def to_bytes(self) -> bytes:
        """Serialise (magic, version, model fingerprint, checksum, tensors)."""
        return size_query(lib.cx_state_to_bytes, self.handle)

    def save(self, path) -> None:
        check(lib.cx_state_save(self.handle, os.fsencode(path)))

    def __repr__(self):
        return "cortex_swift.State(closed)" if self.closed else f"cortex_swift.State(batch={self.batch})"


class BaseModel(Handle):
    """What every kind of loaded model has (immutable, shareable across threads): its
    info, dims and an INT8 copy. `cx.load` returns the kind's own class: Model (a memory
    stack), LanguageModel, Sidecar or SpikeDecoder; each has only its kind's calls."""

    _free = "cx_model_free"

    _source = None  # how it was loaded, for quantize()

    def quantize(self, scheme: str = "int8") -> "BaseModel":
        """The same model with INT8 nn.Linear weights (a new model; this one is unchanged),
        reloaded from the directory it came from (for a model built from memory, call
        load_from_memory(..., weight_format="int8"): its bytes are not kept)."""
        if scheme != "int8":
            raise ValueError(f"scheme must be 'int8', got {scheme!r}")
        if self._source is None:
            raise ValueError("quantize: this model was not loaded from a directory; use "
                             "cx.load_from_memory(config, weights, weight_format='int8')")
        path, nan_policy, check_weights, srht = self._source
        return load(path, nan_policy=nan_policy, weight_format="int8", check_weights=check_weights, srht=srht)

    @property
    def info(self) -> dict:
        """Architecture, config, parameter count, fingerprint, state layout, BLAS in use,
        and the nn.Linear weights' format and bytes ("weights")."""
        return json.loads(size_query(lib.cx_model_info_json, self.handle).rstrip(b"\0"))

    def _dims(self):
        din, dout = ctypes.c_int64(), ctypes.c_int64()
        check(lib.cx_model_dims(self.handle, ctypes.byref(din), ctypes.byref(dout)))
        return din.value, dout.value

    @property
    def d_in(self) -> int:
        return self._dims()[0]

    @property
    def d_out(self) -> int:
        return self._dims()[1]

    def __repr__(self):
        if self.closed:
            return f"cortex_swift.{type(self).__name__}(closed)"
        info = self.info
        return f"cortex_swift.{type(self).__name__}({info['architecture']}, d_in={info['d_in']}, parameters={info['parameters']})"


class Model(BaseModel):
    """A memory stack: recurrent states, sequence and step mode."""

    def init_state(self, batch: int) -> State:
        """A fresh zero state for `batch` streams."""
        out = ctypes.c_void_p()
        check(lib.cx_state_create(self.handle, int(batch), ctypes.byref(out)))
        return State(out, self)

    def state_from_bytes(self, blob: bytes) -> State:
        """Rebuild a state saved by State.to_bytes (refused if from another model)."""
        blob = bytes(blob)
        out = ctypes.c_void_p()
        check(lib.cx_state_from_bytes(self.handle, blob, len(blob), ctypes.byref(out)))
        return State(out, self)

    def load_state(self, path) -> State:
        out = ctypes.c_void_p()
        check(lib.cx_state_load(self.handle, os.fsencode(path), ctypes.byref(out)))
        return State(out, self)

    def _run(self, fn, x, state, resets, route_ids):
        with Input(x) as xin:
            if state is None:
                shape = xin.shape
                if not shape:
                    raise ValueError("x must have a batch dimension")
                state = self.init_state(shape[0])
            elif not isinstance(state, State):
                raise TypeError(f"state must be a cortex_swift.State or None, not {type(state).__name__}")
            previous = None
            if route_ids is not None:
                previous = (state.route_ids,)
                state.set_route_ids(route_ids)
            try:
                with (Input(resets, mask=True) if resets is not None else NoInput()) as r:
                    y = ctypes.c_void_p()
                    check(fn(self.handle, state.handle, xin.view, r.view, ctypes.byref(y)))
            except BaseException:
                if previous is not None:  # a failed call leaves the state as it was
                    state.set_route_ids(previous[0])
                raise
        return Tensor(y), state

    def forward(self, x, state: State | None = None, resets=None, route_ids=None):
        """Sequence mode. x: [B, T, D]; resets: None, [B, T] or [B] (rows reset before the
        first step); route_ids: [B] adapter slots for a stack with routed adapters (they
        stay bound to the state for later calls; see State.set_route_ids). Returns
        (y [B, T, D], state), advancing `state` in place."""
        return self._run(lib.cx_model_forward, x, state, resets, route_ids)

    def step(self, x, state: State | None = None, resets=None, route_ids=None):
        """Step mode. x: [B, D]; resets: None or [B]; route_ids as in forward.
        Returns (y [B, D], state)."""
        return self._run(lib.cx_model_step, x, state, resets, route_ids)

    __call__ = forward


def auto_stack_config(recipe: dict | None = None, **fields) -> dict:
    """cortexcore's `build_cortex_auto_config` in Cortex: the config.json document of a
    Column stack for a recipe (d_hidden, num_layers, pattern, layers, custom_map, router,
    post_norm, compile_blocks, overrides), e.g.
    `cx.auto_stack_config(d_hidden=64, pattern="AXMS", overrides=[{"cell_type": "xl", "mem_len": 64}])`.
    Its "config" equals cortexcore's model_dump for the same recipe."""
    text = json.dumps({**(recipe or {}), **fields}).encode()
    return json.loads(size_query(lib.cx_config_auto_stack, text, len(text)).rstrip(b"\0"))


def _load_options(nan_policy: str, weight_format: str, check_weights: bool = False, srht: str = "config"):
    if nan_policy not in _NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {sorted(_NAN_POLICIES)}, got {nan_policy!r}")
    if weight_format not in ("float32", "int8"):
        raise ValueError(f"weight_format must be 'float32' or 'int8', got {weight_format!r}")
    opts = lib.cx_load_default_options()
    opts.nan_policy = _NAN_POLICIES[nan_policy]
    if srht not in ("config", "cpu_reference"):
        raise ValueError(f"srht must be 'config' or 'cpu_reference', got {srht!r}")
    opts.flags = (_ffi.CX_LOAD_INT8_WEIGHTS if weight_format == "int8" else 0) | \
        (_ffi.CX_LOAD_CHECK_WEIGHTS if check_weights else 0) | \
        (_ffi.CX_LOAD_SRHT_CPU_REFERENCE if srht == "cpu_reference" else 0)
    return opts


def load_from_memory(config, weights, *, nan_policy: str = "propagate", weight_format: str = "float32",
                     check_weights: bool = False, srht: str = "config") -> BaseModel:
    """A model from a config.json document (dict or text) and model.safetensors contents
    (bytes, or a path to the file), e.g. `cx.load_from_memory(cx.auto_stack_config(...), "w.safetensors")`.
    weight_format="int8": nn.Linear weights held as INT8; check_weights, srht: see `load`."""
    opts = _load_options(nan_policy, weight_format, check_weights, srht)
    text = (json.dumps(config) if isinstance(config, dict) else str(config)).encode()
    if not isinstance(weights, (bytes, bytearray)):
        with open(weights, "rb") as f:
            weights = f.read()
    out = ctypes.c_void_p()
    check(lib.cx_model_load_from_memory(text, len(text), bytes(weights), len(weights), ctypes.byref(opts), ctypes.byref(out)))
    return _wrap(out)


def evaluate_task(path, *, source: str = "testset", samples: int = 1000, seed: int = 0) -> dict:
    """Score a trained task model directory (scripts/train_tasks.py) on its synthetic task:
    on the exported test set (source="testset": also PyTorch's accuracy and the max logit
    difference) or on `samples` fresh sequences from Cortex's generator (source="generated")."""
    opts = {"source": source} if source == "testset" else {"source": source, "samples": samples, "seed": seed}
    raw = size_query(lib.cx_task_evaluate, os.fsencode(path), json.dumps(opts).encode())
    return json.loads(raw.rstrip(b"\0"))


def load(path, *, nan_policy: str = "propagate", weight_format: str = "float32", check_weights: bool = False,
         srht: str = "config") -> BaseModel:
    """Load a model directory (config.json + model.safetensors).
    nan_policy: "propagate" (default) or "reject" (NaN/Inf inputs raise NanInput).
    weight_format: "float32" (default) or "int8": every nn.Linear weight held as INT8, symmetric
    per output channel, products computed from the INT8 values (embeddings, norms, convs
    and recurrent kernels stay float32). Same fingerprint: states move between the two.
    check_weights: refuse weights holding NaN or infinity (ParseError naming the tensor).
    srht: "config" (default: each Axon config's own transform, the true Walsh-Hadamard
    unless it says "cortex_srht": "cpu_reference") or "cpu_reference": every Axon SRHT
    computes cortexcore's CPU butterfly, as a model trained with cortexcore on CPU saw."""
    opts = _load_options(nan_policy, weight_format, check_weights, srht)
    out = ctypes.c_void_p()
    check(lib.cx_model_load(os.fsencode(path), ctypes.byref(opts), ctypes.byref(out)))
    m = _wrap(out)
    m._source = (os.fspath(path), nan_policy, check_weights, srht)
    return m


def _wrap(handle) -> BaseModel:
    """The class of the model's kind (cx_model_kind): Model (a memory stack),
    LanguageModel (OpenMythos), Sidecar or SpikeDecoder."""
    kind = ctypes.c_int32()
    status = lib.cx_model_kind(handle, ctypes.byref(kind))
    if status != 0:
        lib.cx_model_free(handle)
        check(status)
    if kind.value == _ffi.CX_KIND_LANGUAGE_MODEL:
        from ._lm import LanguageModel as cls
    elif kind.value == _ffi.CX_KIND_SIDECAR:
        from ._sidecar import Sidecar as cls
    elif kind.value == _ffi.CX_KIND_SPIKE_DECODER:
        from ._spike import SpikeDecoder as cls
    elif kind.value == _ffi.CX_KIND_STACK:
        cls = Model
    else:
        lib.cx_model_free(handle)
        raise RuntimeError(f"cortex_swift: this library returned an unknown model kind {kind.value}; update cortex_swift")
    return cls(handle)
