"""Shared helpers: the repository's goldens, read with a tiny safetensors reader."""
import json
import os
import struct

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
GOLDENS = os.path.join(ROOT, "Tests", "goldens")
EXAMPLE_MODEL = os.path.join(ROOT, "examples", "models", "lstm_stack")

_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4"}


def read_safetensors(path):
    """{name: np.ndarray} for a safetensors file (float and int32/int64 dtypes; test helper)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, d in header.items():
        if name == "__metadata__":
            continue
        b, e = d["data_offsets"]
        out[name] = np.frombuffer(data[base + b:base + e], dtype=_DTYPES[d["dtype"]]).reshape(d["shape"]).copy()
    return out


class Golden:
    def __init__(self, name):
        self.dir = os.path.join(GOLDENS, name)
        self.model_dir = os.path.join(self.dir, "model")
        self.t = read_safetensors(os.path.join(self.dir, "cases.safetensors"))
        with open(os.path.join(self.dir, "manifest.json")) as f:
            self.manifest = json.load(f)

    def route(self, x):
        """{"route_ids": ids} for a golden with routed adapters (the ids the reference ran
        with for x's batch size), else {}."""
        ids = self.manifest.get("route_ids", {}).get(str(np.asarray(x).shape[0]))
        return {"route_ids": ids} if ids is not None else {}

    def state(self, case, sub="state"):
        prefix = f"{case}/{sub}/"
        return {k[len(prefix):]: v for k, v in self.t.items() if k.startswith(prefix)}


def assert_close(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    tol = 1e-5 * max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    print(f"[golden] {what}: max abs error {err:.3e} (tolerance {tol:.3e})")
    assert err <= tol, f"{what}: max abs error {err} > {tol}"


# Stack goldens (OpenMythos goldens live under mythos/ and have their own tests).
GOLDEN_NAMES = sorted(n for n in os.listdir(GOLDENS) if os.path.isdir(os.path.join(GOLDENS, n)) and n not in ("mythos", "sidecars", "spike"))


@pytest.fixture(scope="session")
def golden():
    """The LSTM stack golden (the API tests are written against its sizes)."""
    return Golden("lstm_stack")


@pytest.fixture(scope="session", params=GOLDEN_NAMES)
def any_golden(request):
    """Every model folder under Tests/goldens."""
    return Golden(request.param)
