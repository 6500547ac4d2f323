"""Loading libcortex, errors, and the PyCapsule calls DLPack needs."""
from __future__ import annotations

import ctypes
import os

from . import _ffi

_HERE = os.path.dirname(os.path.abspath(__file__))


def _library_path() -> str:
    env = os.environ.get("CORTEX_LIBRARY")
    if env:
        return env
    bundled = os.path.join(_HERE, "libcortex.so")
    if os.path.exists(bundled):
        return bundled
    raise ImportError("cortex_swift: libcortex.so not found (set CORTEX_LIBRARY or reinstall the package)")


lib = _ffi.bind(ctypes.CDLL(_library_path()))
if lib.cx_abi_version() != _ffi.CX_ABI_VERSION:
    raise ImportError(f"cortex_swift: libcortex ABI {lib.cx_abi_version()} does not match the bindings' "
                      f"ABI {_ffi.CX_ABI_VERSION}; rebuild the package")


# ----------------------------------------------------------------- errors --

class CortexError(Exception):
    """A failed Cortex call; the message is the library's cx_last_error()."""

    status = _ffi.CX_STATUS_INTERNAL


def _error_class(name, status, *bases):
    return type(name, (CortexError, *bases), {"status": status, "__module__": "cortex_swift"})


InvalidArgument = _error_class("InvalidArgument", _ffi.CX_STATUS_INVALID_ARGUMENT, ValueError)
HandleError = _error_class("HandleError", _ffi.CX_STATUS_INVALID_HANDLE, ValueError)
ShapeError = _error_class("ShapeError", _ffi.CX_STATUS_SHAPE_MISMATCH, ValueError)
DTypeError = _error_class("DTypeError", _ffi.CX_STATUS_DTYPE_MISMATCH, TypeError)
DeviceError = _error_class("DeviceError", _ffi.CX_STATUS_DEVICE_MISMATCH, ValueError)
CortexIOError = _error_class("CortexIOError", _ffi.CX_STATUS_IO_ERROR, OSError)
ParseError = _error_class("ParseError", _ffi.CX_STATUS_PARSE_ERROR, ValueError)
Unsupported = _error_class("Unsupported", _ffi.CX_STATUS_UNSUPPORTED, NotImplementedError)
MissingTensor = _error_class("MissingTensor", _ffi.CX_STATUS_MISSING_TENSOR, KeyError)
StateMismatch = _error_class("StateMismatch", _ffi.CX_STATUS_STATE_MISMATCH, ValueError)
BufferTooSmall = _error_class("BufferTooSmall", _ffi.CX_STATUS_BUFFER_TOO_SMALL, ValueError)
CortexMemoryError = _error_class("CortexMemoryError", _ffi.CX_STATUS_OUT_OF_MEMORY, MemoryError)
NanInput = _error_class("NanInput", _ffi.CX_STATUS_NAN_INPUT, ValueError)
Busy = _error_class("Busy", _ffi.CX_STATUS_BUSY, RuntimeError)
NotFound = _error_class("NotFound", _ffi.CX_STATUS_NOT_FOUND, KeyError)

_BY_STATUS = {c.status: c for c in (InvalidArgument, HandleError, ShapeError, DTypeError, DeviceError,
                                    CortexIOError, ParseError, Unsupported, MissingTensor, StateMismatch,
                                    BufferTooSmall, CortexMemoryError, NanInput, Busy, NotFound)}


def check(status: int) -> None:
    """Raise the exception matching a non-zero cx_status, with the C message."""
    if status != _ffi.CX_STATUS_OK:
        message = lib.cx_last_error().decode("utf-8", "replace")
        raise _BY_STATUS.get(status, CortexError)(message)


def size_query(fn, *args) -> bytes:
    """Call a size-query/copy function (cap 0 for the size, then the copy)."""
    needed = ctypes.c_size_t(0)
    status = fn(*args, None, 0, ctypes.byref(needed))
    if status != _ffi.CX_STATUS_BUFFER_TOO_SMALL:
        check(status)
    buf = ctypes.create_string_buffer(needed.value)
    check(fn(*args, buf, needed.value, ctypes.byref(needed)))
    return buf.raw[: needed.value]


class Handle:
    """An owned C handle with idempotent close(), `with` support and a shutdown-safe __del__."""

    _free = None  # name of the cx_*_free function

    def __init__(self, handle: ctypes.c_void_p):
        self._handle = handle

    @property
    def handle(self) -> ctypes.c_void_p:
        if not self._handle:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._handle

    @property
    def closed(self) -> bool:
        return not self._handle

    def close(self) -> None:
        h, self._handle = self._handle, None
        if h and lib is not None:
            getattr(lib, self._free)(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


# ---------------------------------------------------------------- capsules --
# Prototypes take the capsule as c_void_p where a destructor calls them: typing a
# destructor argument as py_object crashes (the object is being destroyed).

_api = ctypes.pythonapi
capsule_new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(
    ("PyCapsule_New", _api))
capsule_get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", _api))
capsule_get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(("PyCapsule_GetName", _api))
capsule_set_name = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_SetName", _api))
_is_valid_raw = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(("PyCapsule_IsValid", _api))
_get_pointer_raw = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", _api))

# Names must outlive the capsules (they hold a char* to them): module constants.
VERSIONED = b"dltensor_versioned"
LEGACY = b"dltensor"
USED_VERSIONED = b"used_dltensor_versioned"
USED_LEGACY = b"used_dltensor"


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _capsule_destructor(capsule):
    """An export nobody consumed: call its deleter (a consumer renames it to used_*)."""
    for name, struct in ((VERSIONED, _ffi.DLManagedTensorVersioned), (LEGACY, _ffi.DLManagedTensor)):
        if _is_valid_raw(capsule, name):
            ptr = _get_pointer_raw(capsule, name)
            if ptr:
                managed = ctypes.cast(ptr, ctypes.POINTER(struct)).contents
                if managed.deleter:
                    managed.deleter(ptr)
            return


CAPSULE_DESTRUCTOR = ctypes.cast(_capsule_destructor, ctypes.c_void_p)
