"""Memory sidecars: per-layer forward, sessions and the SQLite store."""
from __future__ import annotations

import ctypes
import json
import os

from . import _ffi
from ._lib import Handle, check, lib, size_query
from ._model import BaseModel
from ._tensor import Input, NoInput, Tensor


def _opt(x, *, mask=False):
    return Input(x, mask=mask) if x is not None else NoInput()


class Session(Handle):
    """The memory of one conversation (or `batch` parallel streams) across every hooked
    layer: fixed size, constant in the tokens seen. One thread at a time (a concurrent
    call raises Busy); a failed call leaves it unchanged."""

    _free = "cx_session_free"

    def __init__(self, handle, model: "Sidecar"):
        super().__init__(handle)
        self.model = model

    def _info(self):
        b, t, n = ctypes.c_int64(), ctypes.c_int64(), ctypes.c_int64()
        check(lib.cx_session_info(self.handle, ctypes.byref(b), ctypes.byref(t), ctypes.byref(n)))
        return b.value, t.value, n.value

    @property
    def id(self) -> str:
        return size_query(lib.cx_session_id, self.handle).rstrip(b"\0").decode()

    @property
    def batch(self) -> int:
        return self._info()[0]

    @property
    def tokens(self) -> int:
        """Tokens seen (the most of any stream, counted at the first hooked layer)."""
        return self._info()[1]

    @property
    def memory_bytes(self) -> int:
        """Bytes of memory the session holds (constant in the tokens seen)."""
        return self._info()[2]

    def reset(self, mask=None) -> "Session":
        """Fresh memory, signals and segments for the streams where mask ([B]) is non-zero; all if None."""
        with _opt(mask, mask=True) as m:
            check(lib.cx_session_reset(self.handle, m.view))
        return self

    def fork(self, id: str) -> "Session":
        """A deep copy named `id`; this session is unchanged."""
        out = ctypes.c_void_p()
        check(lib.cx_session_fork(self.handle, id.encode(), ctypes.byref(out)))
        return Session(out, self.model)

    def to_bytes(self) -> bytes:
        return size_query(lib.cx_session_to_bytes, self.handle)

    def get(self, layer: int, name: str) -> Tensor:
        """A copy of one state tensor of a hooked layer ([B, n]): GDN conv_q, conv_k,
        conv_v, S, win_k, win_v, win_n; fast weights U, V."""
        out = ctypes.c_void_p()
        check(lib.cx_session_get_state(self.handle, int(layer), name.encode(), ctypes.byref(out)))
        return Tensor(out)

    def observe(self, logits=None, tokens=None, losses=None, rewards=None) -> "Session":
        """One token of plasticity signals per stream (fast weights): losses [B], or
        logits [B, V] with the tokens [B] that followed (loss = −log p[token]); the
        entropy of the logits is the uncertainty. Sets the controller input of the next
        tokens and feeds the segmenter."""
        with _opt(logits) as lg, _opt(tokens, mask=True) as tk, _opt(losses) as ls, _opt(rewards) as rw:
            check(lib.cx_session_observe(self.handle, lg.view, tk.view, ls.view, rw.view))
        return self

    @property
    def signals(self) -> Tensor:
        """The controller input of each stream's next tokens, [B, 4]:
        [surprise, uncertainty, reward, phase]."""
        out = ctypes.c_void_p()
        check(lib.cx_session_signals(self.handle, ctypes.byref(out)))
        return Tensor(out)

    def segments(self, stream: int = 0) -> list:
        """Closed segments of a stream (the latest 64): dicts with start, end (token
        indices), h_mean and h_var ([L·D]), delta_u and delta_v (every layer's U, V change)."""
        n = ctypes.c_int64()
        check(lib.cx_session_segment_count(self.handle, int(stream), ctypes.byref(n)))
        out = []
        for i in range(n.value):
            a, b = ctypes.c_int64(), ctypes.c_int64()
            hs = [ctypes.c_void_p() for _ in range(4)]
            check(lib.cx_session_segment(self.handle, int(stream), i, ctypes.byref(a), ctypes.byref(b),
                                         *(ctypes.byref(h) for h in hs)))
            t = [Tensor(h).numpy() for h in hs]
            out.append({"start": a.value, "end": b.value, "h_mean": t[0], "h_var": t[1], "delta_u": t[2],
                        "delta_v": t[3]})
        return out

    def __repr__(self):
        if self.closed:
            return "cortex_swift.Session(closed)"
        return f"cortex_swift.Session(id={self.id!r}, batch={self.batch}, tokens={self.tokens})"


class Sidecar(BaseModel):
    """A "cortex_sidecar" model: the sidecars of a host transformer's hooked layers.

        sidecar = cx.load(dir)
        session = sidecar.new_session("chat_001")
        out = sidecar.forward(layer, h, session)      # h: [B, T, D] or [B, D]; add out to the layer
    """

    @property
    def config(self) -> dict:
        return self.info["config"]

    @property
    def layers(self) -> list:
        """The host layer indices that have a sidecar."""
        return list(self.config["layers"])

    def new_session(self, id: str, batch: int = 1) -> Session:
        out = ctypes.c_void_p()
        check(lib.cx_session_create(self.handle, id.encode(), int(batch), ctypes.byref(out)))
        return Session(out, self)

    def session_from_bytes(self, blob: bytes, id: str | None = None) -> Session:
        blob = bytes(blob)
        out = ctypes.c_void_p()
        check(lib.cx_session_from_bytes(self.handle, blob, len(blob), None if id is None else id.encode(),
                                        ctypes.byref(out)))
        return Session(out, self)

    def forward(self, layer: int, h, session: Session, signals=None, out=None):
        """The sidecar output of host layer `layer` for its normalised hidden states h
        ([B, T, D], or [B, D] for one decode step), advancing the session. signals:
        explicit controller inputs [B, T, 4] / [B, 4] (fast weights; None: what observe
        set). out: an optional float32 array of h's shape to write into (returned)."""
        with Input(h) as x, _opt(signals) as s:
            if out is not None:
                with Input(out) as y:
                    check(lib.cx_model_forward_sidecar_into(self.handle, int(layer), x.view, session.handle, s.view, y.view))
                return out
            res = ctypes.c_void_p()
            check(lib.cx_model_forward_sidecar(self.handle, int(layer), x.view, session.handle, s.view, ctypes.byref(res)))
        return Tensor(res)


class SessionStore(Handle):
    """Sessions persisted in one SQLite file (WAL): save/load by id, list, TTL expiry and
    a size cap with LRU eviction. A save is one transaction (a process killed mid-save
    leaves the previous session). Thread-safe; several processes may share the file.

        store = cx.SessionStore("sessions.db", ttl=3600, max_bytes=1 << 30)
        store.save(session); session = store.load("chat_001", sidecar)
    """

    _free = "cx_store_free"

    def __init__(self, path, *, ttl: float = 0.0, max_bytes: int = 0):
        opts = lib.cx_store_default_options()
        opts.ttl_seconds = float(ttl)
        opts.max_bytes = int(max_bytes)
        out = ctypes.c_void_p()
        check(lib.cx_store_create(os.fsencode(path), ctypes.byref(opts), ctypes.byref(out)))
        super().__init__(out)
        self.path = os.fspath(path)

    def save(self, session: Session) -> None:
        check(lib.cx_store_save(self.handle, session.handle))

    def load(self, id: str, sidecar: Sidecar) -> Session:
        """The saved session (NotFound when absent or expired; StateMismatch when another
        sidecar saved it)."""
        out = ctypes.c_void_p()
        check(lib.cx_store_load(self.handle, sidecar.handle, id.encode(), ctypes.byref(out)))
        return Session(out, sidecar)

    def delete(self, id: str) -> bool:
        existed = ctypes.c_int32()
        check(lib.cx_store_delete(self.handle, id.encode(), ctypes.byref(existed)))
        return bool(existed.value)

    def list(self) -> list:
        """Live sessions, most recently used first: dicts with id, bytes, fingerprint,
        updated and accessed (seconds since the epoch)."""
        return json.loads(size_query(lib.cx_store_list_json, self.handle).rstrip(b"\0"))

    def __contains__(self, id: str) -> bool:
        return any(e["id"] == id for e in self.list())

    def purge_expired(self) -> int:
        n = ctypes.c_int64()
        check(lib.cx_store_purge_expired(self.handle, ctypes.byref(n)))
        return n.value

    def __repr__(self):
        return "cortex_swift.SessionStore(closed)" if self.closed else f"cortex_swift.SessionStore({self.path!r})"
