"""Attach a Cortex sidecar to a PyTorch decoder from `transformers` (Qwen2, LLaMA,
Mistral and other models whose decoder layers have `input_layernorm` and `self_attn`).

    import cortex_swift as cx
    from cortex_swift.hf import attach_sidecar

    model = attach_sidecar(hf_model, cx.load("sidecar_dir"), store=cx.SessionStore("s.db"))
    out = model(input_ids, session_id="chat_001", reset_session=True)    # turn 1
    out = model(next_ids, session_id="chat_001")                         # turn 2 remembers turn 1
    model.save_session("chat_001")                                       # persists across processes

Wiring: in every hooked layer, h <- h + Attn(LN1 h) + Sidecar(LN1 h),
then the MLP. Two forward hooks per layer do it without touching the model's code: one
on `input_layernorm` hands its output (the normalised hidden states) to Cortex, one on
`self_attn` adds the sidecar's output to the attention's. Tensors cross by DLPack
without copies (float32 CPU tensors; other dtypes are converted by Cortex on the way in
and back to the model's dtype on the way out).

Sessions: `session_id` names the memory a call reads and advances; a new id starts fresh
(or resumes from the store when it holds that id); `reset_session=True` clears it first.
Every call advances the session by the call's tokens, so prefill then token-by-token
decoding with the model's KV cache equals one call over the whole text.
"""
from __future__ import annotations

import torch

from . import _sidecar


def _decoder_layers(model):
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise TypeError(f"attach_sidecar: cannot find the decoder layers of a {type(model).__name__}")


class SidecarAttachment(torch.nn.Module):
    """A host model with a Cortex sidecar attached (see the module docstring)."""

    def __init__(self, model, sidecar: "_sidecar.Sidecar", store: "_sidecar.SessionStore | None" = None):
        super().__init__()
        self.model = model
        self.sidecar = sidecar
        self.store = store
        self.sessions: dict = {}
        self.session = None  # the session of the call in progress
        self.enabled = True
        layers = _decoder_layers(model)
        d = sidecar.config["d_model"]
        hidden = getattr(getattr(model, "config", None), "hidden_size", d)
        if hidden != d:
            raise ValueError(f"the sidecar's d_model is {d}, the model's hidden size {hidden}")
        self._handles = []
        self._pending = {}
        for index in sidecar.layers:
            if index >= len(layers):
                raise ValueError(f"the sidecar hooks layer {index}; the model has {len(layers)} layers")
            layer = layers[index]
            if not hasattr(layer, "input_layernorm") or not hasattr(layer, "self_attn"):
                raise TypeError(f"layer {index} ({type(layer).__name__}) has no input_layernorm/self_attn")
            self._handles.append(layer.input_layernorm.register_forward_hook(self._norm_hook(index)))
            self._handles.append(layer.self_attn.register_forward_hook(self._attn_hook(index)))

    def _norm_hook(self, index):
        def hook(module, args, normed):
            if self.enabled and self.session is not None:
                x = normed.detach()
                if x.dtype != torch.float32:
                    x = x.float()
                y = self.sidecar.forward(index, x.contiguous(), self.session)
                self._pending[index] = torch.from_dlpack(y).to(normed.dtype)
        return hook

    def _attn_hook(self, index):
        def hook(module, args, output):
            extra = self._pending.pop(index, None)
            if extra is None:
                return output
            if isinstance(output, tuple):
                return (output[0] + extra,) + tuple(output[1:])
            return output + extra
        return hook

    def get_session(self, session_id: str, batch: int, fresh: bool = False):
        """The session `session_id` for `batch` streams: held here, else from the store,
        else new. fresh: a new, empty session at `batch` whatever was held under the id
        (a reset may change the batch)."""
        if fresh:
            old = self.sessions.pop(session_id, None)
            if old is not None:
                old.close()
            s = self.sidecar.new_session(session_id, batch=batch)
            self.sessions[session_id] = s
            return s
        s = self.sessions.get(session_id)
        if s is None and self.store is not None:
            try:
                s = self.store.load(session_id, self.sidecar)
            except KeyError:  # cx.NotFound
                s = None
        if s is None:
            s = self.sidecar.new_session(session_id, batch=batch)
        if s.batch != batch:
            raise ValueError(f"session {session_id!r} holds {s.batch} streams, the input has {batch}")
        self.sessions[session_id] = s
        return s

    def forward(self, input_ids=None, *args, session_id: str | None = None, reset_session: bool = False, **kwargs):
        """The model's forward with session `session_id` (None: the sidecar is off for
        this call)."""
        if session_id is None:
            self.session = None
        else:
            batch = (input_ids if input_ids is not None else kwargs["inputs_embeds"]).shape[0]
            self.session = self.get_session(session_id, batch, fresh=reset_session)
        try:
            return self.model(input_ids, *args, **kwargs)
        finally:
            self.session = None
            self._pending.clear()

    def save_session(self, session_id: str) -> None:
        if self.store is None:
            raise ValueError("no store: attach_sidecar(..., store=cx.SessionStore(path))")
        self.store.save(self.sessions[session_id])

    def delete_session(self, session_id: str) -> None:
        s = self.sessions.pop(session_id, None)
        if s is not None:
            s.close()
        if self.store is not None:
            self.store.delete(session_id)

    def detach(self):
        """Remove the hooks; returns the original model."""
        for h in self._handles:
            h.remove()
        self._handles = []
        return self.model


def attach_sidecar(model, sidecar, store=None) -> SidecarAttachment:
    """Hook `sidecar` (a cx.Sidecar) into `model`'s decoder layers; see the module docstring."""
    return SidecarAttachment(model, sidecar, store)
