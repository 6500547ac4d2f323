"""The Perceiver spike decoder through the Python wrapper: the goldens from the
PyTorch reference (cortex_swift.torch_spike), packed vs per-request input, integer
dtypes and strides, and bad input refused with the state of the model unchanged."""
import os

import numpy as np
import pytest

import cortex_swift as cx
from conftest import EXAMPLE_MODEL, GOLDENS, assert_close, read_safetensors

DIR = os.path.join(GOLDENS, "spike", "decoder_small")


@pytest.fixture(scope="module")
def dec():
    return cx.load(os.path.join(DIR, "model"))


@pytest.fixture(scope="module")
def cases():
    return read_safetensors(os.path.join(DIR, "cases.safetensors"))


def packed(cases, name):
    """The golden's events as int64 (goldens store every tensor as float32; ids are exact)."""
    return [cases[f"{name}/{k}"].astype(np.int64) for k in ("neuron_id", "time_bin", "value", "offsets")]


@pytest.mark.parametrize("name", ["batch", "empty", "long"])
def test_goldens(dec, cases, name):
    y = np.from_dlpack(dec.decode(*packed(cases, name)))
    assert_close(y, cases[f"{name}/velocity"], f"spike decoder {name}")


def test_is_a_spike_decoder(dec):
    assert isinstance(dec, cx.SpikeDecoder)
    assert dec.info["architecture"] == "spike_decoder" and dec.config["behavior_dim"] == 3
    assert not isinstance(dec, cx.Model) and not hasattr(dec, "init_state")  # stateless


def test_requests_and_dtypes(dec, cases):
    n, t, v, o = packed(cases, "batch")
    want = cases["batch/velocity"]
    reqs = [(n[o[b]:o[b + 1]], t[o[b]:o[b + 1]], v[o[b]:o[b + 1]]) for b in range(len(o) - 1)]
    assert reqs[1][0].size == 0
    assert_close(dec.decode_requests(reqs), want, "decode_requests")
    # int32 / uint8 / int16 inputs and strided views read the same ids.
    got = np.from_dlpack(dec.decode(n.astype(np.int32), t.astype(np.int16), v.astype(np.uint8), o.astype(np.int32)))
    assert np.array_equal(got, np.from_dlpack(dec.decode(n, t, v, o)))
    wide = np.stack([n, n], 1)[:, 0]  # stride 2
    assert not wide.flags.c_contiguous
    assert np.array_equal(np.from_dlpack(dec.decode(wide, t, v, o)), got)
    # Lists (and empty lists) work.
    assert np.from_dlpack(dec.decode([], [], [], [0, 0])).shape == (1, 3)


def test_bad_input(dec, cases):
    n, t, v, o = packed(cases, "batch")
    with pytest.raises(cx.InvalidArgument, match="max_neurons"):
        dec.decode(np.where(np.arange(n.size) == 3, 40, n), t, v, o)
    with pytest.raises(cx.InvalidArgument, match="spike_value_buckets"):
        dec.decode(n, t, -v - 1, o)
    with pytest.raises(cx.InvalidArgument, match="end at the event count"):
        dec.decode(n, t, v, o[:-1])
    with pytest.raises(cx.ShapeError, match="one length"):
        dec.decode(n[:-1], t, v, o)
    with pytest.raises(cx.DTypeError, match="integer"):
        dec.decode(n.astype(np.float32), t, v, o)
    with pytest.raises(cx.ShapeError, match="1-D"):
        dec.decode(n.reshape(1, -1), t, v, o)
    # After all that, the decoder answers as before.
    assert_close(np.from_dlpack(dec.decode(n, t, v, o)), cases["batch/velocity"], "after bad input")


def test_other_models_refuse_decode(cases):
    stack = cx.load(EXAMPLE_MODEL)
    n, t, v, o = packed(cases, "batch")
    from cortex_swift._spike import SpikeDecoder
    with pytest.raises(cx.Unsupported, match="spike_decoder"):
        SpikeDecoder.decode(stack, n, t, v, o)


def test_stream_equals_decoding_each_window(dec):
    """A 600 ms / 50 ms stream (120 / 10 bins) vs decode() on each window's events with
    time_bin = bin - window start: within 1e-5; pages recycled and bounded; a refused
    stride changes nothing; reset starts over."""
    rng = np.random.default_rng(5)
    s = dec.stream(window_bins=120, stride_bins=10, max_window_events=3000)
    history = []                                         # (absolute bin, neuron, value)
    worst, pages = 0.0, 0
    for k in range(40):
        n = 0 if 15 <= k < 28 else int(rng.integers(10, 150))   # a silent stretch empties the window
        ev = (rng.integers(0, 40, n), rng.integers(0, 10, n), rng.integers(1, 8, n))
        y = s.step(ev[0].astype(np.int32), ev[1].astype(np.uint8), ev[2])     # any integer dtype
        history += [(10 * k + t, a, v) for a, t, v in zip(ev[0], ev[1], ev[2])]
        start = 10 * (k + 1) - 120
        win = [(a, b - start, v) for b, a, v in history if b >= start]
        ref = dec.decode_requests([tuple(np.array(c, dtype=np.int64) for c in zip(*win)) if win else ((), (), ())])[0]
        worst = max(worst, float(np.abs(y - ref).max() / max(1.0, np.abs(ref).max())))
        info = s.info
        assert info["bins"] == 10 * (k + 1) and info["events"] == len(win)
        pages = max(pages, info["pages"])
    print(f"[spike stream] 40 strides vs decode per window: max rel error {worst:.2e}; pages <= {pages}")
    assert worst <= 1e-5
    assert s.info["page_bytes"] <= (3000 // 64 + 2) * 64 * 2 * 32 * 4   # bounded by max_window_events
    before = s.info
    with pytest.raises(cx.InvalidArgument, match="time_bin 10 is outside"):
        s.step([1], [10], [1])
    with pytest.raises(cx.InvalidArgument, match="max_window_events"):
        s.step(np.zeros(3001, np.int64), np.zeros(3001, np.int64), np.ones(3001, np.int64))
    assert s.info == before
    s.reset()
    assert s.info["bins"] == 0 and s.info["events"] == 0 and s.info["pages"] == 0
    np.testing.assert_allclose(s.step(), dec.decode_requests([((), (), ())])[0], atol=1e-6)
    s.close()
    with pytest.raises(ValueError):
        s.step()


def test_stream_options_are_checked(dec):
    with pytest.raises(cx.InvalidArgument, match="window_bins"):
        dec.stream(window_bins=121)                          # past max_time_bins (120)
    with pytest.raises(cx.InvalidArgument, match="stride_bins"):
        dec.stream(window_bins=20, stride_bins=21)
    with pytest.raises(cx.InvalidArgument, match="max_window_events"):
        dec.stream(max_window_events=0)


def test_trained_xs_decodes_a_held_out_recording():
    """examples/models/spike_xs (scripts/train_spike_decoder.py, INT8 weights) on a
    recording it never saw (the same 256 neurons, new reaches: recording=1), every
    window of its first 40 s. The script reports R² 0.974 on 2 minutes of it (the Wiener
    filter 0.972; docs/spike_decoder.md). Its two outputs are two predictions: the model it
    replaced, whose latents had collapsed, gave x = y (correlation 0.99999999999996)."""
    import json

    from cortex_swift import spike_data as sd
    from conftest import ROOT
    path = os.path.join(ROOT, "examples", "models", "spike_xs")
    dec = cx.load(path)
    assert dec.info["weights"]["linear"] == "int8" and dec.info["parameters"] == 4_828_936
    with open(os.path.join(path, "target.json")) as f:
        norm = json.load(f)
    s = sd.simulate(seed=0, neurons=256, seconds=40, recording=1)
    events, y = sd.windows(s)
    pred = dec.decode_requests(events) * np.asarray(norm["velocity_std"]) + np.asarray(norm["velocity_mean"])
    score = sd.r2(pred, y)
    corr = float(np.corrcoef(pred[:, 0], pred[:, 1])[0, 1])
    print(f"[spike XS] trained decoder, held-out recording: R² {score:.3f} ({len(events)} windows), corr(x, y) {corr:.3f}")
    assert score >= 0.9
    assert abs(corr) < 0.5 and not np.allclose(pred[:, 0], pred[:, 1])
