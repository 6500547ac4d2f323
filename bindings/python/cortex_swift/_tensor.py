"""DLPack in and out: Cortex tensors as Python objects, Python arrays as Cortex inputs."""
from __future__ import annotations

import ctypes

import numpy as np

from . import _ffi
from ._lib import (CAPSULE_DESTRUCTOR, LEGACY, USED_LEGACY, USED_VERSIONED, VERSIONED, Handle, capsule_get_name,
                   capsule_get_pointer, capsule_new, capsule_set_name, check, lib)


class Tensor(Handle):
    """A float32 tensor produced by Cortex (immutable). Zero-copy to numpy, torch or
    any DLPack consumer: ``np.from_dlpack(t)``, ``torch.from_dlpack(t)``. Every export
    keeps the memory alive on its own, so exports outlive this object, the state and
    the model."""

    _free = "cx_tensor_free"

    def _view(self) -> _ffi.DLTensor:
        view = ctypes.POINTER(_ffi.DLTensor)()
        check(lib.cx_tensor_view(self.handle, ctypes.byref(view)))
        return view.contents

    @property
    def shape(self) -> tuple:
        v = self._view()
        return tuple(v.shape[i] for i in range(v.ndim))

    @property
    def dtype(self):
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return self._view().ndim

    def __dlpack_device__(self):
        return (_ffi.kDLCPU, 0)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """Export as a DLPack capsule: versioned (1.x) when the consumer accepts
        ``max_version >= (1, 0)``, legacy otherwise. ``copy=True`` is refused: Cortex
        never writes an output again, so the zero-copy export is already private."""
        if dl_device is not None and tuple(dl_device) != (_ffi.kDLCPU, 0):
            raise BufferError(f"cortex_swift tensors live on the CPU, not device {dl_device}")
        if copy:
            raise BufferError("cortex_swift: copy=True is not supported; the zero-copy export is never reused")
        if not self._handle:
            raise BufferError("cortex_swift.Tensor is closed")
        if max_version is not None and tuple(max_version)[0] >= 1:
            out = ctypes.POINTER(_ffi.DLManagedTensorVersioned)()
            check(lib.cx_tensor_to_dlpack(self._handle, ctypes.byref(out)))
            return capsule_new(ctypes.cast(out, ctypes.c_void_p), VERSIONED, CAPSULE_DESTRUCTOR)
        out = ctypes.POINTER(_ffi.DLManagedTensor)()
        check(lib.cx_tensor_to_dlpack_legacy(self._handle, ctypes.byref(out)))
        return capsule_new(ctypes.cast(out, ctypes.c_void_p), LEGACY, CAPSULE_DESTRUCTOR)

    def numpy(self) -> np.ndarray:
        """A zero-copy numpy view."""
        return np.from_dlpack(self)

    def __array__(self, dtype=None, copy=None):
        a = np.from_dlpack(self)
        return a.astype(dtype) if dtype is not None else a

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"cortex_swift.Tensor(shape={self.shape}, dtype=float32)" if self._handle else "cortex_swift.Tensor(closed)"


class Input:
    """A borrowed view of a Python array for one call: takes the producer's DLPack
    capsule, hands its ownership to Cortex (cx_tensor_from_dlpack*), and exposes the
    DLTensor pointer. Use as a context manager; the handle is freed on exit."""

    def __init__(self, x, *, mask: bool = False):
        self.handle = ctypes.c_void_p()
        self.obj = x
        if not hasattr(x, "__dlpack__"):
            x = np.asarray(x, dtype=None if mask else np.float32)
            if mask and x.dtype == np.bool_:
                x = x.astype(np.uint8)
            if not mask and x.dtype != np.float32:
                x = x.astype(np.float32)
        self.keep = x
        capsule = self._capsule(x, mask)
        name = capsule_get_name(capsule)
        if name == VERSIONED:
            ptr = capsule_get_pointer(capsule, VERSIONED)
            capsule_set_name(capsule, USED_VERSIONED)  # Cortex owns it from here on, whatever happens
            check(lib.cx_tensor_from_dlpack(ctypes.cast(ptr, ctypes.POINTER(_ffi.DLManagedTensorVersioned)),
                                            ctypes.byref(self.handle)))
        elif name == LEGACY:
            ptr = capsule_get_pointer(capsule, LEGACY)
            capsule_set_name(capsule, USED_LEGACY)
            check(lib.cx_tensor_from_dlpack_legacy(ctypes.cast(ptr, ctypes.POINTER(_ffi.DLManagedTensor)),
                                                   ctypes.byref(self.handle)))
        else:
            raise TypeError(f"cortex_swift: __dlpack__ returned a capsule named {name!r}")
        view = ctypes.POINTER(_ffi.DLTensor)()
        check(lib.cx_tensor_view(self.handle, ctypes.byref(view)))
        self.view = view

    @staticmethod
    def _capsule(x, mask):
        try:
            return x.__dlpack__(max_version=(1, 0))
        except TypeError:  # producers that predate DLPack 1.0 keywords
            return x.__dlpack__()
        except BufferError:
            # e.g. bool arrays on older numpy, or read-only data a producer won't lend
            a = np.asarray(x)
            a = a.astype(np.uint8 if mask and a.dtype == np.bool_ else a.dtype, copy=True)
            return a.__dlpack__()

    @property
    def shape(self) -> tuple:
        v = self.view.contents
        return tuple(v.shape[i] for i in range(v.ndim))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.handle:
            lib.cx_tensor_free(self.handle)
            self.handle = ctypes.c_void_p()


class NoInput:
    """Stands in for an absent optional tensor (NULL pointer)."""

    view = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass
