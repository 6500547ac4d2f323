"""Memory sidecars through the Python wrapper: whole-model goldens from the
PyTorch reference (cortex_swift.torch_sidecars), sessions (save/resume, fork, reset,
bytes), plasticity signals and segments, the SQLite store (TTL, LRU, crash safety),
and bad input."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import cortex_swift as cx
from conftest import GOLDENS, assert_close, read_safetensors
from cortex_swift.export import write_safetensors

KINDS = ("gdn", "fast_weight")
CALLS = ("seq1", "step1", "step2", "step3", "seq2")


class SidecarGolden:
    def __init__(self, kind):
        self.dir = os.path.join(GOLDENS, "sidecars", f"model_{kind}")
        self.t = read_safetensors(os.path.join(self.dir, "cases.safetensors"))
        with open(os.path.join(self.dir, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.model = cx.load(os.path.join(self.dir, "model"))

    def run(self, session, calls=CALLS, check=True):
        """The golden's calls on `session` (checked against the reference); returns the outputs."""
        outs = []
        for name in calls:
            for layer in self.model.layers:
                y = np.from_dlpack(self.model.forward(layer, self.t[f"{name}/{layer}/h"], session,
                                                      signals=self.t.get(f"{name}/{layer}/signals")))
                if check:
                    assert_close(y, self.t[f"{name}/{layer}/y"], f"{name} layer {layer}")
                outs.append(y)
            if f"{name}/losses" in self.t:
                session.observe(losses=self.t[f"{name}/losses"])
                if check:
                    assert_close(session.signals, self.t[f"{name}/signals_after"], f"{name} signals")
        return outs


@pytest.fixture(scope="module", params=KINDS)
def golden(request):
    return SidecarGolden(request.param)


def test_golden_calls_and_final_state(golden):
    s = golden.model.new_session("g", batch=2)
    golden.run(s)
    names = ("U", "V") if golden.model.config["kind"] == "fast_weight" else ("conv_q", "conv_k", "conv_v", "S",
                                                                             "win_k", "win_v", "win_n")
    for layer in golden.model.layers:
        for n in names:
            want = golden.t[f"final/{layer}/{n}"]
            assert_close(s.get(layer, n).numpy(), want.reshape(want.shape[0], -1), f"final layer {layer} {n}")
    assert s.tokens == 9 + 3 + 5


def test_fast_weights_move(golden):
    if golden.model.config["kind"] != "fast_weight":
        pytest.skip("fast weights only")
    s = golden.model.new_session("m", batch=2)
    u0 = s.get(1, "U").numpy()
    golden.run(s, check=False)
    moved = float(np.abs(s.get(1, "U").numpy() - u0).max())
    print(f"|U - U0| max {moved:.3f}")
    assert moved > 1e-2


def test_fresh_sidecar_outputs_exactly_zero(golden, tmp_path):
    """o_proj is zero-initialised: a fresh sidecar changes nothing (but its memory moves)."""
    w = read_safetensors(os.path.join(golden.dir, "model", "model.safetensors"))
    w = {k: (np.zeros_like(v) if k.endswith("o_proj.weight") else v) for k, v in w.items()}
    write_safetensors(str(tmp_path / "w.safetensors"), w)
    with open(os.path.join(golden.dir, "model", "config.json")) as f:
        config = json.load(f)
    m = cx.load_from_memory(config, str(tmp_path / "w.safetensors"))
    s = m.new_session("z", batch=2)
    for layer in m.layers:
        y = np.from_dlpack(m.forward(layer, golden.t[f"seq1/{layer}/h"], s))
        assert y.shape == (2, 9, 24) and np.all(y == 0.0)


def test_step_equals_sequence(golden):
    """A sequence in one call equals the same tokens one step at a time (chunkwise vs recurrent)."""
    m = golden.model
    a, b = m.new_session("a", batch=2), m.new_session("b", batch=2)
    h = golden.t["seq1/1/h"]
    seq = np.from_dlpack(m.forward(1, h, a))
    steps = np.stack([np.from_dlpack(m.forward(1, h[:, t], b)) for t in range(h.shape[1])], 1)
    assert_close(steps, seq, "step vs sequence")
    assert_close(b.get(1, m.config["kind"] == "gdn" and "S" or "U").numpy(),
                 a.get(1, m.config["kind"] == "gdn" and "S" or "U").numpy(), "state step vs sequence")


def test_resume_from_bytes_is_identical(golden):
    """Save after two calls, restore into a new session: the rest is bitwise equal to an
    uninterrupted run (signals and segmenter included)."""
    m = golden.model
    whole = golden.run(m.new_session("w", batch=2), check=False)
    s = m.new_session("r", batch=2)
    first = golden.run(s, CALLS[:2], check=False)
    blob = s.to_bytes()
    s.close()
    r = m.session_from_bytes(blob)
    assert r.id == "r" and r.batch == 2
    rest = golden.run(r, CALLS[2:], check=False)
    for a, b in zip(whole, first + rest):
        assert np.array_equal(a, b)
    assert m.session_from_bytes(blob, id="other").id == "other"


def test_fork_and_reset(golden):
    m = golden.model
    s = m.new_session("s", batch=2)
    golden.run(s, CALLS[:2], check=False)
    f = s.fork("f")
    assert f.id == "f" and f.to_bytes() != s.to_bytes()  # the id differs; the memory is equal
    ya = np.from_dlpack(m.forward(1, golden.t["seq2/1/h"], s))
    yb = np.from_dlpack(m.forward(1, golden.t["seq2/1/h"], f))
    assert np.array_equal(ya, yb)
    # Resetting one stream gives exactly a fresh stream.
    s.reset(mask=np.array([0, 1], dtype=np.int32))
    fresh = m.new_session("x", batch=2)
    h = golden.t["seq1/1/h"]
    y_reset = np.from_dlpack(m.forward(1, h, s))
    y_fresh = np.from_dlpack(m.forward(1, h, fresh))
    assert np.array_equal(y_reset[1], y_fresh[1])
    assert not np.array_equal(y_reset[0], y_fresh[0])


def test_memory_is_constant_in_tokens(golden):
    m = golden.model
    s = m.new_session("c", batch=1)
    before = s.memory_bytes
    blob_before = len(s.to_bytes())
    h = np.random.default_rng(0).standard_normal((1, 64, 24)).astype(np.float32)
    for _ in range(20):
        for layer in m.layers:
            m.forward(layer, h, s)
    assert s.tokens == 20 * 64
    assert s.memory_bytes == before
    assert len(s.to_bytes()) - blob_before < 256  # only the counters' digits grow


def test_bad_input_changes_nothing(golden):
    m = golden.model
    s = m.new_session("bad", batch=2)
    golden.run(s, CALLS[:1], check=False)
    blob = s.to_bytes()
    h = golden.t["seq2/1/h"]
    with pytest.raises(cx.InvalidArgument, match="layer 2 has no sidecar"):
        m.forward(2, h, s)
    with pytest.raises(cx.ShapeError, match="expected"):
        m.forward(1, h[:, :, :5], s)
    with pytest.raises(cx.ShapeError):
        m.forward(1, h[:1], s)
    with pytest.raises(cx.DTypeError):
        m.forward(1, h.astype(np.int32), s)
    other = m.new_session("o", batch=1)
    with pytest.raises(cx.ShapeError):
        m.forward(1, h, other)
    if m.config["kind"] == "gdn":
        with pytest.raises(cx.Unsupported, match="controller"):
            m.forward(1, h, s, signals=np.zeros((2, 5, 4), np.float32))
        with pytest.raises(cx.Unsupported):
            s.observe(losses=np.ones(2, np.float32))
    else:
        with pytest.raises(cx.ShapeError, match="signals"):
            m.forward(1, h, s, signals=np.zeros((2, 4, 4), np.float32))
        with pytest.raises(cx.NanInput):
            m.forward(1, h, s, signals=np.full((2, 5, 4), np.nan, np.float32))
        with pytest.raises(cx.InvalidArgument, match="tokens"):
            s.observe(logits=np.zeros((2, 7), np.float32), tokens=np.array([1, 7]))
        with pytest.raises(cx.NanInput):
            s.observe(logits=np.full((2, 7), np.nan, np.float32), tokens=np.array([1, 2]))
        with pytest.raises(cx.InvalidArgument, match="needs losses"):
            s.observe()
        with pytest.raises(cx.ShapeError):
            s.observe(losses=np.ones(3, np.float32))
    with pytest.raises(cx.InvalidArgument, match="no state tensor"):
        s.get(1, "nope")
    with pytest.raises(cx.InvalidArgument, match="session id"):
        m.new_session("")
    with pytest.raises(cx.ParseError):
        m.session_from_bytes(blob[:-3])
    damaged = bytearray(blob)
    damaged[len(blob) // 2] ^= 1
    with pytest.raises(cx.ParseError, match="checksum"):
        m.session_from_bytes(bytes(damaged))
    assert s.to_bytes() == blob
    assert not isinstance(m, cx.Model) and not hasattr(m, "step")  # a sidecar runs per layer with a session


def test_session_of_another_sidecar_is_refused():
    gdn, fw = SidecarGolden("gdn"), SidecarGolden("fast_weight")
    s = gdn.model.new_session("x", batch=2)
    with pytest.raises(cx.StateMismatch, match="another model"):
        fw.model.forward(1, fw.t["seq2/1/h"], s)
    with pytest.raises(cx.StateMismatch, match="not this one"):
        fw.model.session_from_bytes(s.to_bytes())


def test_observe_from_logits_and_segments():
    """Loss −log softmax(logits)[token] and the entropy, then the segmenter: a loss spike
    opens a segment, a return to normal closes it; its h_mean is the mean of the hidden
    states the layers saw over it."""
    g = SidecarGolden("fast_weight")
    m = g.model
    s = m.new_session("seg", batch=1)
    logits = np.array([[2.0, 0.5, -1.0, 0.0]], np.float32)
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    s.observe(logits=logits, tokens=np.array([1]))
    sig = s.signals.numpy()[0]
    entropy = float(-(p * np.log(p)).sum())
    assert abs(sig[0]) < 1e-7 and abs(sig[1] - entropy) < 1e-5 and sig[2] == 0 and sig[3] == 0
    s.reset()
    rng = np.random.default_rng(1)
    losses = [1.0] * 5 + [5.0, 5.0, 4.0] + [0.5] * 3
    seen = []
    for t, loss in enumerate(losses):
        hs = {layer: rng.standard_normal((1, 24)).astype(np.float32) for layer in m.layers}
        for layer in m.layers:
            m.forward(layer, hs[layer], s)
        seen.append(np.concatenate([hs[layer][0] for layer in m.layers]))
        s.observe(losses=np.array([loss], np.float32), rewards=np.array([0.5], np.float32))
    assert abs(float(s.signals.numpy()[0, 2]) - 0.5) < 1e-7
    segs = s.segments(0)
    assert len(segs) == 1, segs
    seg = segs[0]
    print("segment", seg["start"], seg["end"])
    assert seg["start"] == 5 and seg["end"] == 8  # opens on the spike, closes when the loss drops below the EMA
    window = np.stack(seen[5:9])
    np.testing.assert_allclose(seg["h_mean"], window.mean(0), atol=1e-6)
    np.testing.assert_allclose(seg["h_var"], window.var(0), atol=1e-5)
    assert seg["delta_u"].shape == (2 * 2 * 8 * 3,) and np.abs(seg["delta_u"]).max() > 0
    # Segments survive a save/restore.
    r = m.session_from_bytes(s.to_bytes())
    assert r.segments(0)[0]["start"] == 5 and np.array_equal(r.segments(0)[0]["h_mean"], seg["h_mean"])


# ------------------------------------------------------------------ store --

def test_store_save_load_list_delete(tmp_path):
    g = SidecarGolden("gdn")
    m = g.model
    store = cx.SessionStore(tmp_path / "s.db")
    s = m.new_session("chat_001", batch=2)
    g.run(s, CALLS[:2], check=False)
    store.save(s)
    assert [e["id"] for e in store.list()] == ["chat_001"] and "chat_001" in store
    r = store.load("chat_001", m)
    assert r.to_bytes() == s.to_bytes()
    with pytest.raises(cx.NotFound, match="no session 'nope'"):
        store.load("nope", m)
    fw = SidecarGolden("fast_weight")
    accessed = store.list()[0]["accessed"]
    time.sleep(0.01)
    with pytest.raises(cx.StateMismatch):
        store.load("chat_001", fw.model)
    assert store.list()[0]["accessed"] == accessed  # a refused load renews nothing
    # Replace, then delete.
    g.run(s, CALLS[2:3], check=False)
    store.save(s)
    assert store.load("chat_001", m).to_bytes() == s.to_bytes()
    assert store.delete("chat_001") and not store.delete("chat_001")
    assert store.list() == []
    with pytest.raises(cx.CortexIOError):
        cx.SessionStore(tmp_path / "no_such_dir" / "s.db")


def test_store_resume_across_processes(tmp_path):
    """A session saved by one process resumes in another: the continuation is bitwise
    equal to an uninterrupted run."""
    g = SidecarGolden("fast_weight")
    db = tmp_path / "s.db"
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
        import cortex_swift as cx
        from test_sidecar import SidecarGolden, CALLS
        g = SidecarGolden("fast_weight")
        s = g.model.new_session("conv", batch=2)
        g.run(s, CALLS[:3], check=False)
        cx.SessionStore({str(db)!r}).save(s)
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    whole = g.run(g.model.new_session("w", batch=2), check=False)
    r = cx.SessionStore(db).load("conv", g.model)
    rest = g.run(r, CALLS[3:], check=False)
    for a, b in zip(whole[-len(rest):], rest):
        assert np.array_equal(a, b)


def test_store_ttl_and_lru(tmp_path):
    g = SidecarGolden("gdn")
    m = g.model
    store = cx.SessionStore(tmp_path / "ttl.db", ttl=0.6)
    store.save(m.new_session("old"))
    time.sleep(0.35)
    store.save(m.new_session("new"))
    store.load("old", m)  # an access renews it
    time.sleep(0.35)
    assert {e["id"] for e in store.list()} == {"old", "new"}
    time.sleep(0.4)
    with pytest.raises(cx.NotFound, match="expired"):
        store.load("new", m)
    assert store.list() == []
    # LRU: room for two blobs; the least recently used goes.
    size = len(m.new_session("a").to_bytes())
    lru = cx.SessionStore(tmp_path / "lru.db", max_bytes=int(2.5 * size))
    for i in ("a", "b"):
        lru.save(m.new_session(i))
        time.sleep(0.01)
    lru.load("a", m)  # b is now the least recently used
    time.sleep(0.01)
    lru.save(m.new_session("c"))
    assert sorted(e["id"] for e in lru.list()) == ["a", "c"]
    tiny = cx.SessionStore(tmp_path / "tiny.db", max_bytes=size // 2)
    with pytest.raises(cx.InvalidArgument, match="max_bytes"):
        tiny.save(m.new_session("big"))
    with pytest.raises(cx.InvalidArgument):
        cx.SessionStore(tmp_path / "x.db", ttl=-1)


def test_store_survives_kill_mid_save(tmp_path):
    """A writer saving ~2 MB sessions in a loop is killed (SIGKILL) at random moments,
    12 times: the database always opens, and the stored session is always exactly one
    that was completely saved: the one before the save in flight, or that one."""
    db = tmp_path / "crash.db"
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import cortex_swift as cx
        from test_sidecar import SidecarGolden
        g = SidecarGolden("gdn")
        store = cx.SessionStore({str(db)!r})
        s = g.model.new_session("victim", batch=512)
        h = np.zeros((512, 24), np.float32)
        k = int(sys.argv[1])
        while True:
            h[:] = k / 100
            g.model.forward(1, h, s)                     # every save differs
            sys.stdout.write(f"saving {{k}}\\n"); sys.stdout.flush()
            store.save(s)
            k += 1
    """)
    g = SidecarGolden("gdn")

    def expected(k0, n):  # the session after n steps of the process that started at k0
        s = g.model.new_session("victim", batch=512)
        h = np.zeros((512, 24), np.float32)
        for k in range(k0, k0 + n):
            h[:] = k / 100
            g.model.forward(1, h, s)
        return s.to_bytes()

    rng = np.random.default_rng(7)
    k0, in_flight_lost = 0, 0
    for _ in range(12):
        p = subprocess.Popen([sys.executable, "-c", script, str(k0)], stdout=subprocess.PIPE, text=True)
        target = k0 + int(rng.integers(1, 4))
        last = None
        for line in p.stdout:
            last = int(line.split()[1])
            if last >= target:
                break
        time.sleep(float(rng.uniform(0, 0.01)))  # inside save `last`, or just after it
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        store = cx.SessionStore(db)
        s = store.load("victim", g.model)
        n = s.tokens
        assert n in (last - k0, last - k0 + 1), (n, last, k0)
        assert s.to_bytes() == expected(k0, n)
        in_flight_lost += n == last - k0
        store.close()
        k0 = last + 1
    print(f"12 kills: the save in flight was lost {in_flight_lost} times, committed otherwise; no damage")


def test_long_sequence_in_pieces_equals_steps(golden):
    """T = 150 (several 64-query blocks, chunks and windows) in one call, in uneven pieces,
    and token by token: all equal (chunkwise vs recurrent, 1e-4 relative at this length)."""
    m = golden.model
    h = np.random.default_rng(3).standard_normal((2, 150, 24)).astype(np.float32)
    whole = np.from_dlpack(m.forward(3, h, m.new_session("a", batch=2)))
    s = m.new_session("b", batch=2)
    pieces = np.concatenate([np.from_dlpack(m.forward(3, h[:, a:b], s)) for a, b in ((0, 70), (70, 71), (71, 150))], 1)
    s = m.new_session("c", batch=2)
    steps = np.stack([np.from_dlpack(m.forward(3, h[:, t], s)) for t in range(150)], 1)
    for got, what in ((pieces, "pieces"), (steps, "steps")):
        err = float(np.abs(got - whole).max())
        print(f"[sidecar] T=150 {what} vs one call: {err:.2e}")
        assert err <= 1e-4 * max(1.0, float(np.abs(whole).max()))
