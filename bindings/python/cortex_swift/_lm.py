"""Language models (open-mythos' OpenMythos): logits, KV caches and generation."""
from __future__ import annotations

import ctypes

from . import _ffi
from ._lib import Handle, check, lib, size_query
from ._model import BaseModel
from ._tensor import Input, Tensor


class Cache(Handle):
    """KV cache of `batch` sequences, in 64-token pages; grows with the tokens it sees (up
    to max_seq_len); fork() branches it copy-on-write. One thread at a time (a
    concurrent call raises Busy)."""

    _free = "cx_cache_free"

    def __init__(self, handle, model: "LanguageModel"):
        super().__init__(handle)
        self.model = model

    def _info(self):
        b, p = ctypes.c_int64(), ctypes.c_int64()
        check(lib.cx_cache_info(self.handle, ctypes.byref(b), ctypes.byref(p)))
        return b.value, p.value

    @property
    def batch(self) -> int:
        return self._info()[0]

    @property
    def position(self) -> int:
        """Tokens seen: start_pos + T of the latest call."""
        return self._info()[1]

    def to_bytes(self) -> bytes:
        return size_query(lib.cx_cache_to_bytes, self.handle)

    def fork(self) -> "Cache":
        """A cache continuing from the same tokens, sharing this one's KV pages
        copy-on-write (no copy until the branches write; then only the pages written)."""
        out, shared = ctypes.c_void_p(), ctypes.c_int64()
        check(lib.cx_cache_fork(self.handle, ctypes.byref(out), ctypes.byref(shared)))
        c = Cache(out, self.model)
        c.pages_shared = shared.value
        return c

    def __repr__(self):
        return "cortex_swift.Cache(closed)" if self.closed else f"cortex_swift.Cache(batch={self.batch}, position={self.position})"


def _options(n_loops, temperature, top_k, seed, eos_token):
    o = lib.cx_generate_default_options()
    o.n_loops = 0 if n_loops is None else int(n_loops)
    o.temperature = float(temperature)
    o.top_k = int(top_k)
    o.seed = int(seed) & ((1 << 64) - 1)
    o.eos_token = -1 if eos_token is None else int(eos_token)
    return o


class LanguageModel(BaseModel):
    """An open_mythos model: token ids in, logits out.

        logits = model.forward(ids)                                  # [B, T, vocab]
        cache = model.new_cache(batch=B)
        logits = model.forward(prompt, cache=cache)                  # prefill
        logits = model.forward(next_ids, cache=cache)                # decode (start_pos = cache.position)
        tokens = model.generate(prompt, 32, temperature=0.8, top_k=40, seed=1)
        for step in model.stream(prompt, 32): ...
    """

    def new_cache(self, batch: int) -> Cache:
        out = ctypes.c_void_p()
        check(lib.cx_cache_create(self.handle, int(batch), ctypes.byref(out)))
        return Cache(out, self)

    def cache_from_bytes(self, blob: bytes) -> Cache:
        blob = bytes(blob)
        out = ctypes.c_void_p()
        check(lib.cx_cache_from_bytes(self.handle, blob, len(blob), ctypes.byref(out)))
        return Cache(out, self)

    def forward(self, ids, n_loops: int | None = None, cache: Cache | None = None, start_pos: int | None = None):
        """Logits [B, T, vocab] of token ids [B, T]. n_loops: recurrent depth (None:
        max_loop_iters; deeper extrapolates). cache: appended to (every loop runs).
        start_pos: position of ids[:, 0] (None: the cache's position, or 0)."""
        if n_loops is not None and int(n_loops) <= 0:
            raise ValueError(f"n_loops must be >= 1, got {n_loops}")
        if cache is not None and not isinstance(cache, Cache):
            raise TypeError(f"cache must be a cortex_swift.Cache or None, not {type(cache).__name__}")
        with Input(ids, mask=True) as x:
            y = ctypes.c_void_p()
            check(lib.cx_model_forward_tokens(self.handle, x.view, 0 if n_loops is None else int(n_loops),
                                    cache.handle if cache is not None else None,
                                    -1 if start_pos is None else int(start_pos), ctypes.byref(y)))
        return Tensor(y)

    __call__ = forward

    def generate(self, ids, max_new_tokens: int, *, n_loops: int | None = None, temperature: float = 0.0,
                 top_k: int = 0, seed: int = 0, eos_token: int | None = None):
        """Token ids [B, T + max_new_tokens] (numpy int64): the prompt, then generated
        tokens. temperature 0 is greedy; otherwise top-k + temperature sampling with a
        seeded SplitMix64 (same seed, same tokens). Sequences that emit eos_token stop
        (padded with it); generation ends when all have."""
        import numpy as np

        with Input(ids, mask=True) as x:
            B, T = x.shape
            out = (ctypes.c_int64 * (B * (T + int(max_new_tokens))))()
            done = ctypes.c_int64()
            opts = _options(n_loops, temperature, top_k, seed, eos_token)
            check(lib.cx_model_generate(self.handle, x.view, int(max_new_tokens), ctypes.byref(opts),
                                  _ffi.cx_token_callback(), None, out, len(out), ctypes.byref(done)))
        return np.frombuffer(out, dtype=np.int64).reshape(B, T + int(max_new_tokens)).copy()

    def stream(self, ids, max_new_tokens: int | None = None, *, n_loops: int | None = None,
               temperature: float = 0.0, top_k: int = 0, seed: int = 0, eos_token: int | None = None):
        """Yield each step's new tokens ([B] numpy int64), one forward per step, until
        max_new_tokens (None: until every sequence emitted eos_token or the cache is full)."""
        import numpy as np

        gen = ctypes.c_void_p()
        opts = _options(n_loops, temperature, top_k, seed, eos_token)
        with Input(ids, mask=True) as x:
            B = x.shape[0]
            check(lib.cx_generator_create(self.handle, x.view, ctypes.byref(opts), ctypes.byref(gen)))
        try:
            tokens = (ctypes.c_int64 * B)()
            done = ctypes.c_int32()
            n = 0
            while max_new_tokens is None or n < max_new_tokens:
                check(lib.cx_generator_next(gen, tokens, B, ctypes.byref(done)))
                n += 1
                yield np.frombuffer(tokens, dtype=np.int64).copy()
                if done.value:
                    return
        finally:
            lib.cx_generator_free(gen)

    def __repr__(self):
        if self.closed:
            return "cortex_swift.LanguageModel(closed)"
        c = self.info["config"]
        return f"cortex_swift.LanguageModel(open_mythos, {c.get('attn_type')}, dim={c.get('dim')}, vocab={c.get('vocab_size')})"
