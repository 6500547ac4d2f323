"""Parity with cortexcore 0.1.6 on the LSTM stack goldens, through the Python API.
Tolerance: max |error| <= 1e-5 * max(1, max |reference|), fp32."""
import numpy as np
import pytest

import cortex_swift as cx
from conftest import Golden, assert_close


@pytest.fixture()
def golden(any_golden):
    return any_golden


@pytest.fixture()
def model(golden):
    with cx.load(golden.model_dir) as m:
        yield m


def check_state(state, golden, case):
    want = golden.state(case)
    assert set(want) == {s["name"] for s in state.model.info["state"]}
    for path, value in want.items():
        assert_close(np.from_dlpack(state.get(path)), value, f"{case} state {path}")


def warm_state(model, golden):
    """The init state of the reset cases is the final state of 'seq' (run from zero)."""
    _, s = model.forward(golden.t["seq/x"], **golden.route(golden.t["seq/x"]))
    for path, value in golden.state("resets_seq", "init").items():
        assert_close(np.from_dlpack(s.get(path)), value, f"init {path}")
    return s


def test_sequence(model, golden):
    y, s = model.forward(golden.t["seq/x"], **golden.route(golden.t["seq/x"]))
    assert_close(np.from_dlpack(y), golden.t["seq/y"], "seq y")
    check_state(s, golden, "seq")


def test_step(model, golden):
    x = golden.t["step/x"]
    s = model.init_state(batch=x.shape[0])
    ys = [np.from_dlpack(model.step(x[:, t], s, **golden.route(x))[0]) for t in range(x.shape[1])]
    assert_close(np.stack(ys, 1), golden.t["step/y"], "step y")
    check_state(s, golden, "step")


def test_step_equals_sequence(model, golden):
    """Step == sequence where the reference's own paths agree; where they do not (XL),
    Cortex must reproduce the reference's gap (each path has its own golden)."""
    x = golden.t["seq/x"]
    y, _ = model.forward(x, **golden.route(x))
    s = model.init_state(batch=x.shape[0])
    ys = np.stack([np.from_dlpack(model.step(x[:, t], s, **golden.route(x))[0]) for t in range(x.shape[1])], 1)
    ref_gap = float(np.abs(golden.t["step/y"] - golden.t["seq/y"]).max())
    if ref_gap <= 1e-5 * max(1.0, float(np.abs(golden.t["seq/y"]).max())):
        assert_close(ys, np.from_dlpack(y), "step == sequence")
    else:
        gap = float(np.abs(ys - np.from_dlpack(y)).max())
        print(f"[golden] reference step/sequence gap {ref_gap:.4f}, Cortex's {gap:.4f}")
        assert abs(gap - ref_gap) <= 1e-4 * max(1.0, ref_gap)


def test_resets_sequence(model, golden):
    s = warm_state(model, golden)
    y, s = model.forward(golden.t["resets_seq/x"], s, resets=golden.t["resets_seq/resets"])
    assert_close(np.from_dlpack(y), golden.t["resets_seq/y"], "resets seq y")
    check_state(s, golden, "resets_seq")


def test_resets_step(model, golden):
    s = warm_state(model, golden)
    x, r = golden.t["resets_step/x"], golden.t["resets_step/resets"]
    ys = [np.from_dlpack(model.step(x[:, t], s, resets=r[:, t], **golden.route(x))[0]) for t in range(x.shape[1])]
    assert_close(np.stack(ys, 1), golden.t["resets_step/y"], "resets step y")
    check_state(s, golden, "resets_step")


def test_row_resets_in_sequence_mode(model, golden):
    s = warm_state(model, golden)
    y, s = model.forward(golden.t["rows_seq/x"], s, resets=golden.t["rows_seq/resets"])
    assert_close(np.from_dlpack(y), golden.t["rows_seq/y"], "[B] resets seq y")
    check_state(s, golden, "rows_seq")


def test_state_carried_across_calls(model, golden):
    ya, s = model.forward(golden.t["carry/xa"], **golden.route(golden.t["carry/xa"]))
    yb, s = model.forward(golden.t["carry/xb"], s)
    assert_close(np.from_dlpack(ya), golden.t["carry/ya"], "carry first call")
    assert_close(np.from_dlpack(yb), golden.t["carry/yb"], "carry second call")
    check_state(s, golden, "carry")


def test_batch_one(model, golden):
    y, s = model.forward(golden.t["b1/x"], **golden.route(golden.t["b1/x"]))
    assert_close(np.from_dlpack(y), golden.t["b1/y"], "batch 1 y")
    check_state(s, golden, "b1")


def test_rerouted_streams():
    """Routed adapters: the streams change slots between two calls."""
    golden = Golden("routed")
    with cx.load(golden.model_dir) as model:
        _rerouted(model, golden)


def test_routed_adapters_need_route_ids():
    golden = Golden("routed")
    x = golden.t["seq/x"]
    with cx.load(golden.model_dir) as model:
        assert model.info["routed_adapter"] == {"num_slots": 4, "rank": 2, "scale": 1.5, "require_route_ids": True}
        s = model.init_state(batch=3)
        with pytest.raises(cx.InvalidArgument, match="route ids"):
            model.forward(x, s)
        with pytest.raises(cx.InvalidArgument, match=r"\[0, 4\)"):
            model.forward(x, s, route_ids=[0, 4, 1])
        with pytest.raises(cx.DTypeError, match="integer"):
            s.set_route_ids(np.array([0.0, 1.0, 2.0]))
        with pytest.raises(cx.ShapeError):
            s.set_route_ids([0, 1])
        assert s.route_ids is None, "failed calls leave the state unbound"
        y, _ = model.forward(x, s, route_ids=np.array([1, 3, 0], dtype=np.int32))
        assert s.route_ids == [1, 3, 0]
        assert_close(np.from_dlpack(y), golden.t["seq/y"], "routed seq y (int32 ids)")
        with pytest.raises(cx.ShapeError):  # a failed call keeps the ids it had
            model.forward(x[:, :, :3], s, route_ids=[0, 0, 0])
        assert s.route_ids == [1, 3, 0]
    with cx.load(Golden("lstm_stack").model_dir) as plain:
        with pytest.raises(cx.InvalidArgument, match="no routed adapters"):
            plain.init_state(batch=1).set_route_ids([0])


def _rerouted(model, golden):
    xa = golden.t["reroute/xa"]
    ya, s = model.forward(xa, route_ids=golden.t["reroute/ids_a"].astype(np.int64))
    yb, s = model.forward(golden.t["reroute/xb"], s, route_ids=golden.t["reroute/ids_b"].astype(np.int64))
    assert s.route_ids == [int(v) for v in golden.t["reroute/ids_b"]]
    assert_close(np.from_dlpack(ya), golden.t["reroute/ya"], "reroute first call")
    assert_close(np.from_dlpack(yb), golden.t["reroute/yb"], "reroute second call")
    check_state(s, golden, "reroute")
