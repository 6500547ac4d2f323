"""Spike decoders (the Perceiver decoder): packed spike events in, hand velocity out."""
from __future__ import annotations

import ctypes
from contextlib import ExitStack

import numpy as np

from ._lib import Handle, check, lib
from ._model import BaseModel
from ._tensor import Input, Tensor


def _ints(x):
    """Integer arrays pass as they are (DLPack, any integer dtype); lists become int64."""
    return x if hasattr(x, "__dlpack__") else np.asarray(x, dtype=np.int64).reshape(-1)


class SpikeDecoder(BaseModel):
    """A spike_decoder model: stateless, safe to share between threads.

        v = dec.decode(neuron_ids, time_bins, values, offsets)     # packed [E] + [B + 1] -> [B, 2]
        v = dec.decode_requests([(n0, t0, v0), (n1, t1, v1)])      # per-request arrays -> numpy [B, 2]
    """

    @property
    def config(self) -> dict:
        return self.info["config"]

    def decode(self, neuron_ids, time_bins, values, offsets) -> Tensor:
        """Velocity [B, behavior_dim] of packed events: request b owns events
        offsets[b]:offsets[b+1]. Ids outside the config's tables raise InvalidArgument."""
        with ExitStack() as stack:
            views = [stack.enter_context(Input(_ints(a), mask=True)).view
                     for a in (neuron_ids, time_bins, values, offsets)]
            y = ctypes.c_void_p()
            check(lib.cx_model_decode(self.handle, *views, ctypes.byref(y)))
        return Tensor(y)

    __call__ = decode

    def decode_requests(self, requests) -> np.ndarray:
        """Requests as (neuron_ids, time_bins, values) triples (a request may have no
        events); packs them and returns numpy [B, behavior_dim]."""
        cols = [[np.asarray(r[i], dtype=np.int64).reshape(-1) for r in requests] for i in range(3)]
        offsets = np.zeros(len(requests) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in cols[0]], out=offsets[1:])
        packed = [np.concatenate(c) if c else np.zeros(0, np.int64) for c in cols]
        return np.from_dlpack(self.decode(*packed, offsets)).copy()

    def stream(self, window_bins: int = 120, stride_bins: int = 10, max_window_events: int = 8192) -> "SpikeStream":
        """A sliding-window stream over this decoder (see SpikeStream)."""
        return SpikeStream(self, window_bins, stride_bins, max_window_events)

    def __repr__(self):
        c = self.config
        return (f"cortex_swift.SpikeDecoder(latents={c.get('num_latents')}x{c.get('latent_dim')}, "
                f"layers={c.get('num_layers')}, outputs={c.get('behavior_dim')})")


class SpikeStream(Handle):
    """Streaming decoding: one stride of events per step, the last window decoded after
    each. The window's cross-attention keys/values live in pages and are computed once
    per event; the result equals decode() on the window's events with time_bin = bin -
    window start. One thread at a time.

        s = dec.stream(window_bins=120, stride_bins=10)      # 600 ms window, 50 ms stride
        v = s.step(neuron_ids, time_bins, values)            # time_bins in [0, stride_bins) -> numpy [2]
    """

    _free = "cx_spike_stream_free"

    def __init__(self, decoder: SpikeDecoder, window_bins: int, stride_bins: int, max_window_events: int):
        opts = lib.cx_spike_stream_default_options()
        opts.window_bins, opts.stride_bins, opts.max_window_events = int(window_bins), int(stride_bins), int(max_window_events)
        out = ctypes.c_void_p()
        check(lib.cx_spike_stream_create(decoder.handle, ctypes.byref(opts), ctypes.byref(out)))
        super().__init__(out)
        self.decoder = decoder
        self.window_bins, self.stride_bins, self.max_window_events = int(window_bins), int(stride_bins), int(max_window_events)

    def step(self, neuron_ids=(), time_bins=(), values=()) -> np.ndarray:
        """Append one stride (time_bins relative to its start) and decode: numpy [behavior_dim]."""
        with ExitStack() as stack:
            views = [stack.enter_context(Input(_ints(a), mask=True)).view for a in (neuron_ids, time_bins, values)]
            y = ctypes.c_void_p()
            check(lib.cx_spike_stream_step(self.handle, *views, ctypes.byref(y)))
        return np.from_dlpack(Tensor(y)).reshape(-1).copy()

    def reset(self) -> None:
        check(lib.cx_spike_stream_reset(self.handle))

    @property
    def info(self) -> dict:
        """bins (seen so far), events (in the window), pages (in use), page_bytes (held)."""
        v = [ctypes.c_int64() for _ in range(4)]
        check(lib.cx_spike_stream_info(self.handle, *(ctypes.byref(x) for x in v)))
        return dict(zip(("bins", "events", "pages", "page_bytes"), (x.value for x in v)))
