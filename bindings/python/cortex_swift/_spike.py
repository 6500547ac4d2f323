"""Spike decoders (seed 003's Perceiver decoder): packed spike events in, hand velocity out."""
from __future__ import annotations

import ctypes
from contextlib import ExitStack

import numpy as np

from ._lib import check, lib
from ._model import Model
from ._tensor import Input, Tensor


def _ints(x):
    """Integer arrays pass as they are (DLPack, any integer dtype); lists become int64."""
    return x if hasattr(x, "__dlpack__") else np.asarray(x, dtype=np.int64).reshape(-1)


class SpikeDecoder(Model):
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
            check(lib.cx_decode(self.handle, *views, ctypes.byref(y)))
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

    def step(self, *args, **kwargs):
        raise TypeError("a spike_decoder model is stateless: use decode(neuron_ids, time_bins, values, offsets)")

    def init_state(self, batch: int):
        raise TypeError("a spike_decoder model is stateless: use decode(neuron_ids, time_bins, values, offsets)")

    def __repr__(self):
        c = self.config
        return (f"cortex_swift.SpikeDecoder(latents={c.get('num_latents')}x{c.get('latent_dim')}, "
                f"layers={c.get('num_layers')}, outputs={c.get('behavior_dim')})")
