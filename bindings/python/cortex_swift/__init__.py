"""cortex_swift: Python bindings of Cortex, a runtime for recurrent memory models.

    import cortex_swift as cx
    model = cx.load("dir")                                  # config.json + model.safetensors
    y, state = model.forward(x, state=None, resets=None)    # x: [B, T, H]
    y_t, state = model.step(x_t, state, resets=None)        # x_t: [B, H]
    blob = state.to_bytes(); state2 = model.state_from_bytes(blob)
    np.from_dlpack(y); torch.from_dlpack(y)                 # zero-copy out

    lm = cx.load("mythos_dir")                              # "architecture": "open_mythos"
    logits = lm.forward(ids, n_loops=None, cache=None)      # ids: [B, T] integers
    tokens = lm.generate(ids, 32, temperature=0.8, top_k=40, seed=1)

    sidecar = cx.load("sidecar_dir")                        # "architecture": "cortex_sidecar"
    store = cx.SessionStore("sessions.db")                  # SQLite, WAL
    session = sidecar.new_session("chat_001")               # or store.load("chat_001", sidecar)
    out = sidecar.forward(layer, h, session)                # h: [B, T, D]; h += attn + out
    store.save(session)

    dec = cx.load("decoder_dir")                            # "architecture": "spike_decoder"
    v = dec.decode(neuron_ids, time_bins, values, offsets)  # packed events [E], offsets [B + 1] -> [B, 2]

A thin layer over the C ABI in include/cortex.h (declarations generated into _ffi.py).
Inputs are anything with __dlpack__ (numpy, torch, ...) or array-likes; float64,
float16 and bfloat16 are converted to float32 by the library, never reinterpreted.
"""
from ._lib import (Busy, BufferTooSmall, CortexError, CortexIOError, CortexMemoryError, DeviceError, DTypeError,
                   HandleError, InvalidArgument, MissingTensor, NanInput, ParseError, ShapeError, StateMismatch,
                   NotFound, Unsupported, check, lib)
from ._lm import Cache, LanguageModel
from ._model import BaseModel, Model, State, auto_stack_config, evaluate_task, load, load_from_memory
from ._sidecar import Session, SessionStore, Sidecar
from ._spike import SpikeDecoder, SpikeStream
from ._tensor import Tensor
from .export import export

__version__ = lib.cx_version_string().decode()


def abi_version() -> int:
    """The C ABI version of the loaded libcortex."""
    return lib.cx_abi_version()


def set_num_threads(n: int) -> None:
    """Threads Cortex splits work over (its own pool; OpenBLAS runs single-threaded inside).

    n >= 1 sets the count (at most 512); n <= 0 restores the default: CORTEX_NUM_THREADS
    if set, else the CPUs this process may use (affinity mask, cgroup CPU quota).
    Results are bitwise the same for any count. Safe to call from any thread."""
    check(lib.cx_set_num_threads(int(n)))


def get_num_threads() -> int:
    return lib.cx_get_num_threads()


__all__ = ["load", "load_from_memory", "auto_stack_config", "evaluate_task", "export", "BaseModel", "Model", "State", "Tensor",
           "LanguageModel", "Cache", "Sidecar", "Session", "SessionStore", "SpikeDecoder", "SpikeStream", "abi_version", "set_num_threads", "get_num_threads",
           "CortexError", "InvalidArgument", "HandleError", "ShapeError", "DTypeError", "DeviceError",
           "CortexIOError", "ParseError", "Unsupported", "MissingTensor", "StateMismatch", "BufferTooSmall",
           "CortexMemoryError", "NanInput", "Busy", "NotFound", "__version__"]
