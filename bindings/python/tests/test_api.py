"""The Python API around the goldens: states, bytes, files, inputs, errors, threads."""
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import cortex_swift as cx
from conftest import EXAMPLE_MODEL, ROOT


@pytest.fixture()
def model(golden):
    with cx.load(golden.model_dir) as m:
        yield m


def test_module_surface():
    assert cx.abi_version() == 1
    assert cx.__version__.count(".") == 2
    cx.set_num_threads(2)
    assert cx.get_num_threads() >= 1


def test_info(model):
    info = model.info
    assert info["architecture"] == "cortex_stack"
    assert info["d_in"] == model.d_in == 24 and model.d_out == 24
    assert [s["name"] for s in info["state"]][:2] == ["PassThroughBlock_0.LSTMCell.h", "PassThroughBlock_0.LSTMCell.c"]
    assert info["parameters"] > 0 and len(info["fingerprint"]) == 16
    assert info["blas"]["kernels"] in ("AVX-512", "AVX2+FMA", "portable C")


def test_state_bytes_round_trip_continues_identically(model, golden):
    _, s = model.forward(golden.t["carry/xa"])
    s2 = model.state_from_bytes(s.to_bytes())
    a, _ = model.forward(golden.t["carry/xb"], s)
    b, _ = model.forward(golden.t["carry/xb"], s2)
    assert np.array_equal(np.from_dlpack(a), np.from_dlpack(b))


def test_state_file_round_trip(model, golden, tmp_path):
    _, s = model.forward(golden.t["carry/xa"])
    s.save(tmp_path / "s.bin")
    s2 = model.load_state(tmp_path / "s.bin")
    assert s2.to_bytes() == s.to_bytes()
    with pytest.raises(cx.CortexIOError):
        model.load_state(tmp_path / "missing.bin")


def test_foreign_and_damaged_blobs_are_refused(model, golden):
    s = model.init_state(batch=3)
    blob = s.to_bytes()
    with cx.load(EXAMPLE_MODEL) as other:
        with pytest.raises(cx.StateMismatch, match="model"):
            other.state_from_bytes(blob)
    with pytest.raises(cx.ParseError):
        model.state_from_bytes(blob[:-1])
    damaged = bytearray(blob)
    damaged[len(blob) // 2] ^= 0x5A
    with pytest.raises(cx.CortexError):
        model.state_from_bytes(bytes(damaged))


def test_a_retrained_model_refuses_the_old_state(model, golden, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(golden.model_dir, d)
    raw = bytearray((d / "model.safetensors").read_bytes())
    raw[-1] ^= 0x01  # one weight bit differs: another model
    (d / "model.safetensors").write_bytes(bytes(raw))
    with cx.load(d) as m2:
        with pytest.raises(cx.StateMismatch):
            m2.state_from_bytes(model.init_state(batch=1).to_bytes())


def test_input_dtypes_are_converted(model, golden):
    x = golden.t["seq/x"]
    want = np.from_dlpack(model.forward(x)[0])
    np.testing.assert_array_equal(np.from_dlpack(model.forward(x.astype(np.float64))[0]), want)
    y16 = np.from_dlpack(model.forward(x.astype(np.float16))[0])
    y16_ref = np.from_dlpack(model.forward(x.astype(np.float16).astype(np.float32))[0])
    np.testing.assert_array_equal(y16, y16_ref)
    np.testing.assert_array_equal(np.from_dlpack(model.forward(x.tolist())[0]), want)
    with pytest.raises(cx.DTypeError):
        model.forward(x.astype(np.int32))


def test_strided_and_offset_inputs(model, golden):
    x = golden.t["seq/x"]
    want = np.from_dlpack(model.forward(x)[0])
    transposed = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)  # non-contiguous view
    assert not transposed.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(np.from_dlpack(model.forward(transposed)[0]), want)
    big = np.zeros((x.shape[0] + 1, x.shape[1], x.shape[2] * 2), np.float32)
    big[1:, :, ::2] = x
    view = big[1:, :, ::2]  # byte offset and a feature stride of 2
    np.testing.assert_array_equal(np.from_dlpack(model.forward(view)[0]), want)


def test_zero_length_sequence(model):
    s = model.init_state(batch=2)
    before = s.to_bytes()
    y, s = model.forward(np.zeros((2, 0, 24), np.float32), s)
    assert y.shape == (2, 0, 24)
    assert s.to_bytes() == before


@pytest.mark.parametrize("kind", [bool, np.uint8, np.int64, np.float32])
def test_reset_mask_dtypes(model, golden, kind):
    x, r = golden.t["resets_seq/x"], golden.t["resets_seq/resets"]
    want = np.from_dlpack(model.forward(x, resets=r)[0])
    got = np.from_dlpack(model.forward(x, resets=r.astype(kind))[0])
    np.testing.assert_array_equal(got, want)


def test_state_reset(model, golden):
    _, s = model.forward(golden.t["seq/x"])
    s.reset(np.array([True, False, False]))
    h = np.from_dlpack(s.get("PassThroughBlock_0.LSTMCell.h"))
    assert not h[0].any() and h[1].any()
    s.reset()
    assert not np.from_dlpack(s.get("PassThroughBlock_0.LSTMCell.c")).any()


def test_rejected_calls_change_nothing(model, golden):
    _, s = model.forward(golden.t["seq/x"])
    before = s.to_bytes()
    bad = [
        (cx.ShapeError, lambda: model.forward(np.zeros((2, 4, 24), np.float32), s)),      # batch
        (cx.ShapeError, lambda: model.forward(np.zeros((3, 4, 23), np.float32), s)),      # features
        (cx.ShapeError, lambda: model.step(np.zeros((3, 4, 24), np.float32), s)),         # rank
        (cx.ShapeError, lambda: model.forward(np.zeros((3, 4, 24), np.float32), s, resets=np.zeros((3, 5)))),
        (cx.DTypeError, lambda: model.step(np.zeros((3, 24), np.int64), s)),
        (cx.DTypeError, lambda: model.step(np.zeros((3, 24), np.complex64), s)),
        (cx.ShapeError, lambda: s.reset(np.zeros(4))),
    ]
    for exc, call in bad:
        with pytest.raises(exc) as info:
            call()
        assert str(info.value).startswith("[cx_"), str(info.value)
        assert s.to_bytes() == before, f"{exc.__name__} call changed the state"


def test_nan_policy(golden):
    x = golden.t["seq/x"].copy()
    x[1, 2, 3] = np.nan
    with cx.load(golden.model_dir, nan_policy="reject") as strict:
        s = strict.init_state(batch=3)
        before = s.to_bytes()
        with pytest.raises(cx.NanInput, match="non-finite"):
            strict.forward(x, s)
        assert s.to_bytes() == before
    with cx.load(golden.model_dir) as lenient:
        y, _ = lenient.forward(x)
        assert np.isnan(np.from_dlpack(y)[1]).any()
    with pytest.raises(ValueError):
        cx.load(golden.model_dir, nan_policy="maybe")


def test_check_weights_and_typed_config(tmp_path, golden):
    """check_weights refuses a NaN weight by name; a wrong-typed config field is refused
    by path; a field the reference ignores loads and is listed in the info."""
    import json
    d = tmp_path / "m"
    shutil.copytree(golden.model_dir, d)
    raw = (d / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    name, entry = next((k, v) for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    at = 8 + n + entry["data_offsets"][0]
    (d / "model.safetensors").write_bytes(raw[:at] + np.float32(np.nan).tobytes() + raw[at + 4:])
    cx.load(d).close()
    with pytest.raises(cx.ParseError, match=f"tensor '{name}' holds nan at flat index 0"):
        cx.load(d, check_weights=True)
    cx.load(golden.model_dir, check_weights=True).close()
    doc = json.loads((d / "config.json").read_text())
    doc["config"]["blocks"][0]["cell"]["num_layers"] = "2"
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(cx.ParseError, match=r"blocks\[0\]\.cell\.num_layers must be an integer"):
        cx.load(d)
    doc["config"]["blocks"][0]["cell"]["num_layers"] = 1
    doc["config"]["experiment"] = "x"
    (d / "config.json").write_text(json.dumps(doc))
    with cx.load(d) as m:
        assert m.info["ignored_config_fields"] == ["experiment"]


def test_model_wide_srht_switch():
    """srht="cpu_reference" makes every Axon SRHT compute the CPU reference's butterfly:
    the axon_srht_cpu golden, its config stripped of cortex_srht, matches with the switch
    and not without it."""
    import json
    from conftest import GOLDENS, read_safetensors
    d = os.path.join(GOLDENS, "axon_srht_cpu")
    doc = json.load(open(os.path.join(d, "model", "config.json")))
    for block in doc["config"]["blocks"]:
        block["cell"].pop("cortex_srht")
    t = read_safetensors(os.path.join(d, "cases.safetensors"))
    weights = os.path.join(d, "model", "model.safetensors")
    errs = {}
    for srht in ("config", "cpu_reference"):
        m = cx.load_from_memory(doc, weights, srht=srht)
        y, _ = m.forward(t["seq/x"])
        errs[srht] = float(np.abs(np.from_dlpack(y) - t["seq/y"]).max())
    print(f"[srht] axon_srht_cpu, plain config: {errs}")
    assert errs["cpu_reference"] < 1e-5 < errs["config"]
    with pytest.raises(ValueError):
        cx.load_from_memory(doc, weights, srht="gpu")


def test_load_errors(tmp_path, golden):
    with pytest.raises(cx.CortexIOError):
        cx.load(tmp_path / "nope")
    d = tmp_path / "bad"
    shutil.copytree(golden.model_dir, d)
    text = (d / "config.json").read_text().replace('"cell_type": "lstm"', '"cell_type": "mystery"')
    (d / "config.json").write_text(text)
    with pytest.raises(cx.Unsupported, match="mystery"):
        cx.load(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(cx.ParseError):
        cx.load(d)


def test_closed_handles_raise(golden):
    m = cx.load(golden.model_dir)
    s = m.init_state(batch=3)
    y, _ = m.forward(golden.t["seq/x"], s)
    m.close()
    m.close()  # idempotent
    with pytest.raises(ValueError):
        m.init_state(batch=1)
    # The state keeps the model alive inside the library; outputs outlive everything.
    assert s.batch == 3
    s.close()
    arr = np.from_dlpack(y)
    y.close()
    assert arr.shape == (3, 9, 24) and np.isfinite(arr).all()
    with pytest.raises(ValueError):
        s.to_bytes()


def test_threads_two_states_one_model(model, golden):
    x = golden.t["seq/x"]
    want = np.from_dlpack(model.forward(x)[0])
    errors = []

    def work():
        try:
            for _ in range(20):
                y, _ = model.forward(x)
                if not np.array_equal(np.from_dlpack(y), want):
                    errors.append("mismatch")
        except Exception as e:  # pragma: no cover
            errors.append(repr(e))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_shared_state_is_refused_not_corrupted(model, golden):
    x = golden.t["seq/x"]
    s = model.init_state(batch=3)
    outcomes = []

    def work():
        for _ in range(50):
            try:
                model.forward(x, s)
                outcomes.append("ok")
            except cx.Busy:
                outcomes.append("busy")

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 100 and "ok" in outcomes


def test_generated_declarations_are_fresh():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_ctypes.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _child_forward(model_dir, x, queue):
    import cortex_swift as cxc
    with cxc.load(model_dir) as m:
        y, _ = m.forward(x)
        queue.put(np.from_dlpack(y).copy())


def test_forked_child_runs_without_the_worker_thread(model, golden):
    """Cortex's worker thread does not survive fork(); a child must still compute (alone)."""
    import multiprocessing as mp

    x = golden.t["seq/x"]
    want = np.from_dlpack(model.forward(x)[0])  # starts the worker in the parent
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_forward, args=(golden.model_dir, x, q))
    p.start()
    got = q.get(timeout=60)
    p.join(timeout=60)
    assert p.exitcode == 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_state_set_imports_a_reference_state(model, golden):
    """Importing the reference's 'seq' final state by path continues exactly like the
    reference ('resets_seq' starts from that state)."""
    s = model.init_state(batch=3)
    for path, value in golden.state("resets_seq", "init").items():
        s.set(path, value.astype(np.float64))  # any float dtype converts
    y, _ = model.forward(golden.t["resets_seq/x"], s, resets=golden.t["resets_seq/resets"])
    np.testing.assert_allclose(np.from_dlpack(y), golden.t["resets_seq/y"], rtol=0, atol=1e-5)
    assert set(s.to_dict()) == {st["name"] for st in model.info["state"]}
    before = s.to_bytes()
    with pytest.raises(cx.ShapeError):
        s.set("PassThroughBlock_0.LSTMCell.h", np.zeros((3, 24), np.float32))  # missing the layer axis
    with pytest.raises(cx.InvalidArgument, match="no state tensor"):
        s.set("nope", np.zeros(3, np.float32))
    assert s.to_bytes() == before
