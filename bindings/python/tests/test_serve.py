"""cortex-serve as a client sees it, on loopback: the real
executable (CORTEX_SERVE, else .build/debug/cortex-serve) serving the golden spike decoder
and the example LSTM stack. Answers equal the Python binding's; batching, deadlines,
back-pressure, graceful shutdown, metrics; bad input gets a 4xx with a message and the
server keeps serving; and a fuzzing pass over the HTTP endpoint and the binary body."""
import http.client
import json
import os
import random
import signal
import socket
import struct
import subprocess
import threading
import time

import numpy as np
import pytest

import cortex_swift as cx
from conftest import EXAMPLE_MODEL, GOLDENS, ROOT

DECODER = os.path.join(GOLDENS, "spike", "decoder_small", "model")   # max_neurons 40, 120 bins, 3 outputs


def serve_binary():
    path = os.environ.get("CORTEX_SERVE") or os.path.join(ROOT, ".build", "debug", "cortex-serve")
    if not os.path.exists(path):
        pytest.fail(f"cortex-serve not built at {path} (swift build --product cortex-serve, or set CORTEX_SERVE)")
    return path


class Server:
    """A cortex-serve process on a free port; its structured log is kept."""

    def __init__(self, model, *args):
        self.proc = subprocess.Popen([serve_binary(), "--model", model, "--port", "0", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        for line in self.proc.stderr:
            self.log.append(json.loads(line))
            if self.log[-1]["event"] == "listening":
                self.port = int(self.log[-1]["port"])
                break
        else:
            raise RuntimeError(f"cortex-serve did not start: {self.log}")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.log.append(json.loads(line))

    def request(self, method, path, body=None, headers=None, timeout=30):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        ctype = r.getheader("content-type", "")
        return r.status, (json.loads(data) if data and ctype.startswith("application/json") else data), dict(r.getheaders())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self._reader.join(timeout=5)
        return self.proc.returncode

    def metric(self, name, **labels):
        _, text, _ = self.request("GET", "/metrics")
        total = 0.0
        for line in text.decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(f'{k}="{v}"' in line for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def server():
    s = Server(DECODER)
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def dec():
    return cx.load(DECODER)


def window(rng, n=30):
    return rng.integers(0, 40, n), rng.integers(0, 120, n), rng.integers(1, 8, n)


def body(**tensors):
    """The binary tensor body: int32 for integer arrays, float32 for float arrays."""
    out = bytearray(b"CXTB") + struct.pack("<HH", 1, len(tensors))
    for name, a in tensors.items():
        a = np.asarray(a)
        code, fmt = (3, "<f4") if a.dtype.kind == "f" else (1, "<i4")
        out += struct.pack("<B", len(name)) + name.encode() + struct.pack("<BB", code, a.ndim)
        out += struct.pack(f"<{a.ndim}q", *a.shape) + a.astype(fmt).tobytes()
    return bytes(out)


def parse_body(data):
    assert data[:4] == b"CXTB"
    _, count = struct.unpack("<HH", data[4:8])
    i, out = 8, {}
    for _ in range(count):
        n = data[i]
        name = data[i + 1:i + 1 + n].decode()
        i += 1 + n
        code, rank = data[i], data[i + 1]
        i += 2
        shape = struct.unpack(f"<{rank}q", data[i:i + 8 * rank])
        i += 8 * rank
        size = int(np.prod(shape)) if shape else 1
        assert code == 3
        out[name] = np.frombuffer(data[i:i + 4 * size], "<f4").reshape(shape)
        i += 4 * size
    assert i == len(data)
    return out


def test_health_ready_model_and_metrics(server):
    assert server.request("GET", "/healthz")[:2] == (200, {"status": "ok"})
    assert server.request("GET", "/readyz")[:2] == (200, {"ready": True})
    status, info, _ = server.request("GET", "/v1/model")
    assert status == 200 and info["architecture"] == "spike_decoder"
    status, text, headers = server.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = text.decode()
    for family in ("cortex_http_requests_total", "cortex_request_duration_seconds", "cortex_batch_size",
                   "cortex_queue_depth", "cortex_deadline_misses_total", "cortex_rejected_total"):
        assert f"# TYPE {family} " in text
    assert 'cortex_http_requests_total{route="/healthz",status="200"}' in text


def test_decode_json_and_binary_equal_the_binding(server, dec):
    rng = np.random.default_rng(0)
    wins = [window(rng, n) for n in (30, 0, 75)]
    ref = dec.decode_requests(wins)
    status, out, headers = server.request("POST", "/v1/decode", {
        "requests": [{"neuron_ids": n.tolist(), "time_bins": t.tolist(), "values": v.tolist()} for n, t, v in wins]})
    assert status == 200 and out["deadline_missed"] is False and headers["x-deadline-missed"] == "0"
    np.testing.assert_allclose(np.array(out["velocity"]), ref, rtol=0, atol=1e-6)
    # One window at the top level.
    status, out, _ = server.request("POST", "/v1/decode", dict(zip(("neuron_ids", "time_bins", "values"),
                                                                  (a.tolist() for a in wins[2]))))
    np.testing.assert_allclose(np.array(out["velocity"])[0], ref[2], atol=1e-6)
    # Binary in, binary out; packed with offsets.
    n, t, v = (np.concatenate(c) for c in zip(*wins))
    offsets = np.cumsum([0] + [len(w[0]) for w in wins])
    status, data, headers = server.request("POST", "/v1/decode", body(neuron_ids=n, time_bins=t, values=v, offsets=offsets),
                                           {"Content-Type": "application/x-cortex-tensors",
                                            "Accept": "application/x-cortex-tensors"})
    assert status == 200 and headers["content-type"] == "application/x-cortex-tensors"
    np.testing.assert_allclose(parse_body(data)["velocity"], ref, atol=1e-6)


def test_concurrent_requests_are_batched_and_each_gets_its_answer(dec):
    s = Server(DECODER, "--max-wait-ms", "30", "--max-batch", "16")
    try:
        rng = np.random.default_rng(1)
        wins = [window(rng, int(rng.integers(0, 60))) for _ in range(24)]
        ref = dec.decode_requests(wins)
        out = [None] * len(wins)

        def go(i):
            n, t, v = wins[i]
            out[i] = s.request("POST", "/v1/decode", {"neuron_ids": n.tolist(), "time_bins": t.tolist(), "values": v.tolist()})

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(wins))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert all(o[0] == 200 for o in out)
        got = np.array([o[1]["velocity"][0] for o in out])
        np.testing.assert_allclose(got, ref, atol=1e-6)
        batches = s.metric("cortex_batch_size_count", kind="decode")
        mean = s.metric("cortex_batch_size_sum", kind="decode") / batches
        print(f"[serve] 24 concurrent requests in {batches:.0f} batches (mean size {mean:.1f})")
        assert batches < 24 and mean > 1
    finally:
        assert s.stop() == 0


def test_streams_equal_the_binding(server, dec):
    rng = np.random.default_rng(2)
    local = {k: dec.stream() for k in ("a", "b")}
    worst = 0.0
    for k in range(15):
        for sid in ("a", "b"):
            m = int(rng.integers(0, 20))
            ev = (rng.integers(0, 40, m), rng.integers(0, 10, m), rng.integers(1, 8, m))
            status, out, _ = server.request("POST", f"/v1/streams/test-{sid}/step",
                                            dict(zip(("neuron_ids", "time_bins", "values"), (a.tolist() for a in ev))))
            assert status == 200 and out["bins"] == 10 * (k + 1)
            worst = max(worst, float(np.abs(np.array(out["velocity"]) - local[sid].step(*ev)).max()))
    print(f"[serve] streams vs the binding's SpikeStream: max abs difference {worst:.2e}")
    assert worst <= 1e-6
    # Custom geometry, then delete.
    status, out, _ = server.request("POST", "/v1/streams/geo", {"window_bins": 40, "stride_bins": 5})
    assert status == 201 and out["window_bins"] == 40
    assert server.request("POST", "/v1/streams/geo", {})[0] == 422            # exists
    status, out, _ = server.request("POST", "/v1/streams/geo/step", {"neuron_ids": [1], "time_bins": [5], "values": [1]})
    assert status == 422 and "stride_bins" in out["error"]
    assert server.request("DELETE", "/v1/streams/geo")[0] == 204
    assert server.request("DELETE", "/v1/streams/geo")[0] == 404


def test_recurrent_sessions_batched_across_sessions_equal_the_binding():
    s = Server(EXAMPLE_MODEL, "--max-wait-ms", "20")
    try:
        model = cx.load(EXAMPLE_MODEL)
        d = model.d_in
        rng = np.random.default_rng(3)
        states = {sid: model.init_state(1) for sid in ("s1", "s2", "s3")}
        worst = 0.0
        for k in range(6):
            xs = {sid: rng.standard_normal(d).astype(np.float32) for sid in states}
            reset = k == 3
            res = {}

            def go(sid):
                res[sid] = s.request("POST", f"/v1/sessions/{sid}/step", {"x": xs[sid].tolist(), "reset": reset and sid == "s2"})

            threads = [threading.Thread(target=go, args=(sid,)) for sid in states]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            for sid, st in states.items():
                resets = np.array([reset and sid == "s2"])
                y = np.from_dlpack(model.step(xs[sid][None], st, resets=resets)[0])[0]
                assert res[sid][0] == 200, res[sid]
                worst = max(worst, float(np.abs(np.array(res[sid][1]["y"]) - y).max()))
        print(f"[serve] 3 recurrent sessions (batched) vs the binding: max abs difference {worst:.2e}; "
              f"batches {s.metric('cortex_batch_size_count', kind='session'):.0f} for 18 steps")
        assert worst <= 1e-5
        status, out, _ = s.request("POST", "/v1/sessions/s1/step", {"x": [1.0]})
        assert status == 422 and "expected" in out["error"]
        assert s.request("DELETE", "/v1/sessions/s1")[0] == 204
        assert s.request("POST", "/v1/decode", {"neuron_ids": [], "time_bins": [], "values": []})[0] == 404
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("payload,headers,status,message", [
    (b"{bad json", {}, 400, "invalid JSON"),
    (b"[1, 2]", {}, 400, "JSON object"),
    (json.dumps({"neuron_ids": [40], "time_bins": [0], "values": [1]}).encode(), {}, 422, "event 0: neuron_id 40"),
    (json.dumps({"neuron_ids": [1], "time_bins": [120], "values": [1]}).encode(), {}, 422, "max_time_bins"),
    (json.dumps({"neuron_ids": [1], "time_bins": [0], "values": [-1]}).encode(), {}, 422, "value -1"),
    (json.dumps({"neuron_ids": [1.5], "time_bins": [0], "values": [1]}).encode(), {}, 422, "integer"),
    (json.dumps({"neuron_ids": [1, 2], "time_bins": [0], "values": [1]}).encode(), {}, 422, "one length"),
    (json.dumps({"requests": []}).encode(), {}, 422, "requests"),
    (json.dumps({"neuron_ids": [1], "time_bins": [0], "values": [1], "deadline_ms": -1}).encode(), {}, 422, "deadline_ms"),
    (b"CXTB\x01\x00\x01\x00", {"Content-Type": "application/x-cortex-tensors"}, 400, "truncated"),
    (b"NOPE", {"Content-Type": "application/x-cortex-tensors"}, 400, "magic"),
    (body(neuron_ids=np.array([1.0]), time_bins=np.array([0]), values=np.array([1])),
     {"Content-Type": "application/x-cortex-tensors"}, 422, "float32"),
    (json.dumps({"neuron_ids": [1], "time_bins": [0], "values": [1]}).encode(), {"X-Deadline-Ms": "soon"}, 400, "X-Deadline-Ms"),
])
def test_bad_requests_get_a_4xx_with_a_message(server, payload, headers, status, message):
    got, out, _ = server.request("POST", "/v1/decode", payload, headers)
    assert got == status and message in out["error"], out
    assert server.request("GET", "/healthz")[0] == 200


def test_routes_methods_and_sizes(server):
    assert server.request("GET", "/nope")[0] == 404
    status, out, headers = server.request("GET", "/v1/decode")
    assert status == 405 and headers["allow"] == "POST"
    assert server.request("POST", "/v1/sessions/x/step", {"x": [1.0]})[0] == 404     # not a recurrent model
    status, out, _ = server.request("POST", "/v1/streams/" + "x" * 200 + "/step", {})
    assert status == 422 and "session id" in out["error"]
    small = Server(DECODER, "--max-body-mb", "1")
    try:
        status, out, _ = small.request("POST", "/v1/decode", b"{" + b" " * (2 << 20) + b"}")
        assert status == 413
        assert small.request("GET", "/healthz")[0] == 200
    finally:
        small.stop()


def test_deadlines_are_reported_and_counted(server):
    before = server.metric("cortex_deadline_misses_total")
    status, out, headers = server.request("POST", "/v1/decode", {"neuron_ids": [1], "time_bins": [0], "values": [1],
                                                                 "deadline_ms": 0})
    assert status == 200 and out["deadline_missed"] is True and headers["x-deadline-missed"] == "1"
    status, out, _ = server.request("POST", "/v1/decode", {"neuron_ids": [1], "time_bins": [0], "values": [1]},
                                    {"X-Deadline-Ms": "60000"})
    assert status == 200 and out["deadline_missed"] is False
    assert server.metric("cortex_deadline_misses_total") == before + 1


def test_a_full_queue_answers_429_and_recovers():
    s = Server(DECODER, "--max-queue", "2", "--max-wait-ms", "300", "--max-batch", "64")
    try:
        results = []
        lock = threading.Lock()

        def go():
            r = s.request("POST", "/v1/decode", {"neuron_ids": [1], "time_bins": [0], "values": [1]})
            with lock:
                results.append(r)

        threads = [threading.Thread(target=go) for _ in range(10)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        codes = sorted(r[0] for r in results)
        assert codes.count(200) >= 2 and codes.count(429) >= 1 and set(codes) <= {200, 429}, codes
        rejected = [r for r in results if r[0] == 429]
        assert "queue is full" in rejected[0][1]["error"] and rejected[0][2]["retry-after"] == "1"
        assert s.metric("cortex_rejected_total", reason="queue_full") == codes.count(429)
        assert s.request("POST", "/v1/decode", {"neuron_ids": [1], "time_bins": [0], "values": [1]})[0] == 200
    finally:
        assert s.stop() == 0


def test_graceful_shutdown_finishes_in_flight_requests():
    s = Server(DECODER, "--max-wait-ms", "500", "--max-batch", "64")
    results = []

    def go():
        try:
            results.append(s.request("POST", "/v1/decode", {"neuron_ids": [1, 2], "time_bins": [0, 1], "values": [1, 1]})[0])
        except Exception as e:   # noqa: BLE001 - recorded, asserted below
            results.append(repr(e))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for th in threads:
        th.start()
    time.sleep(0.2)                 # queued, waiting for company (max-wait 500 ms)
    s.proc.send_signal(signal.SIGTERM)
    for th in threads:
        th.join()
    assert s.proc.wait(timeout=30) == 0
    assert results == [200] * 8, results
    events = [e["event"] for e in s.log]
    assert "draining" in events and events[-1] == "stopped"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2)


def read_reply(sock, until_close):
    """The bytes the server sends: until it closes, or (until_close False) until one whole
    response (its Content-Length) has arrived."""
    reply = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return reply
        reply += chunk
        head, sep, rest = reply.partition(b"\r\n\r\n")
        if sep and not until_close:
            length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
            if len(rest) >= length:
                return reply


def test_a_half_closed_client_still_gets_its_answer(server, dec):
    """A client that sends a whole request, then shutdown(SHUT_WR), gets the response
    (it got 0 bytes while the request was still served)."""
    n, t, v = window(np.random.default_rng(5), 10)
    payload = json.dumps({"neuron_ids": n.tolist(), "time_bins": t.tolist(), "values": v.tolist()}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/decode HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        sock.shutdown(socket.SHUT_WR)
        reply = read_reply(sock, until_close=True)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    out = json.loads(reply.partition(b"\r\n\r\n")[2])
    np.testing.assert_allclose(np.array(out["velocity"])[0], dec.decode_requests([(n, t, v)])[0], atol=1e-6)


def test_a_silent_or_short_request_is_closed_after_the_idle_timeout():
    """A body shorter than its Content-Length, and a connection that sends nothing, are
    closed after --idle-timeout-s (they stayed open forever), counted in the metrics;
    the server keeps answering meanwhile."""
    srv = Server(os.path.join(ROOT, "examples", "models", "lstm_stack"), "--idle-timeout-s", "1")
    try:
        t0 = time.time()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as short, \
                socket.create_connection(("127.0.0.1", srv.port), timeout=10) as silent:
            short.sendall(b"POST /v1/sessions/a/step HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"x\": [")
            assert srv.request("GET", "/healthz")[0] == 200
            assert short.recv(100) == b"" and silent.recv(100) == b""  # closed by the server
        waited = time.time() - t0
        assert 0.9 < waited < 5, waited
        assert srv.metric("cortex_idle_timeouts_total") >= 2
    finally:
        srv.stop()


def test_fuzz_http_endpoint_and_binary_body(server, dec):
    """Random bytes, broken HTTP, and valid requests with mutated bodies and headers:
    every answer is a 4xx or a 200 (never a 5xx, never a hang), and the server keeps
    answering correctly."""
    rng = random.Random(7)
    n, t, v = window(np.random.default_rng(4), 20)
    valid_json = json.dumps({"neuron_ids": n.tolist(), "time_bins": t.tolist(), "values": v.tolist()}).encode()
    valid_bin = body(neuron_ids=n, time_bins=t, values=v)
    statuses = {}

    def raw(data, half_close):
        """Send; read the reply. Broken HTTP is half-closed (the server answers 400 or
        closes); well-framed requests keep the connection open until the reply is read."""
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            reply = read_reply(sock, until_close=half_close)
        if reply:
            code = int(reply.split(b" ", 2)[1])
            statuses[code] = statuses.get(code, 0) + 1
            assert code < 500, reply[:300]
        else:
            assert half_close, "a well-framed request got no answer"

    def mutate(b):
        b = bytearray(b)
        for _ in range(rng.randint(1, 8)):
            op = rng.random()
            i = rng.randrange(len(b)) if b else 0
            if op < 0.4 and b:
                b[i] = rng.randrange(256)
            elif op < 0.7:
                b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            elif b:
                del b[i:i + rng.randint(1, 16)]
        return bytes(b)

    for k in range(400):
        kind = k % 4
        if kind == 0:
            raw(bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))), True)
        elif kind == 1:
            raw(mutate(b"POST /v1/decode HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(valid_json) + valid_json), True)
        else:
            payload, ctype = (valid_json, "application/json") if kind == 2 else (valid_bin, "application/x-cortex-tensors")
            p = mutate(payload)
            path = rng.choice(["/v1/decode", "/v1/streams/fuzz/step", "/v1/decode?x=1"])
            raw(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (path.encode(), ctype.encode(), len(p)) + p,
                False)
    print(f"[serve fuzz] 400 inputs, statuses {dict(sorted(statuses.items()))}")
    assert statuses.get(400, 0) > 0 and statuses.get(422, 0) > 0
    status, out, _ = server.request("POST", "/v1/decode", valid_json)
    assert status == 200
    np.testing.assert_allclose(np.array(out["velocity"])[0], dec.decode_requests([(n, t, v)])[0], atol=1e-6)


def test_open_mythos_generation_equals_the_binding():
    d = os.path.join(GOLDENS, "mythos", "gqa", "model")
    s = Server(d)
    try:
        m = cx.load(d)
        rng = np.random.default_rng(6)
        V = m.info["config"]["vocab_size"]
        for kwargs in ({}, {"temperature": 0.8, "top_k": 5, "seed": 3}):
            prompt = rng.integers(0, V, 5)
            status, out, _ = s.request("POST", "/v1/generate", {"ids": prompt.tolist(), "max_new_tokens": 6, "n_loops": 3, **kwargs})
            assert status == 200, out
            want = m.generate(prompt[None], 6, n_loops=3, **kwargs)[0, 5:]
            assert out["tokens"] == want.tolist()
        # ids [B, T], as lm.generate takes them: one row of tokens per sequence.
        prompts = rng.integers(0, V, (3, 4))
        status, out, _ = s.request("POST", "/v1/generate", {"ids": prompts.tolist(), "max_new_tokens": 5, "n_loops": 2})
        assert status == 200, out
        assert out["tokens"] == m.generate(prompts, 5, n_loops=2)[:, 4:].tolist()
        status, out, _ = s.request("POST", "/v1/generate", {"ids": [[1, 2], [3]], "max_new_tokens": 2})
        assert status == 422 and "one length" in out["error"], out
        status, out, _ = s.request("POST", "/v1/generate", {"ids": [[1], [V]], "max_new_tokens": 2})
        assert status == 422 and "ids[1][0]" in out["error"], out
        status, out, _ = s.request("POST", "/v1/generate", {"ids": [V], "max_new_tokens": 2})
        assert status == 422 and "vocab_size" in out["error"]
        assert s.request("POST", "/v1/generate", {"ids": [1], "max_new_tokens": 0})[0] == 422
    finally:
        assert s.stop() == 0


def test_sidecar_sessions_equal_the_binding():
    d = os.path.join(GOLDENS, "sidecars", "model_gdn", "model")
    s = Server(d)
    try:
        sc = cx.load(d)
        D = sc.info["config"]["d_model"]
        local = sc.new_session("local")
        rng = np.random.default_rng(8)
        worst = 0.0
        for k in range(4):
            h = rng.standard_normal((3, D)).astype(np.float32)
            layer = sc.layers[k % 2]
            status, out, _ = s.request("POST", "/v1/sessions/conv/forward", {"layer": layer, "h": h.tolist()})
            assert status == 200, out
            want = np.from_dlpack(sc.forward(layer, h[None], local))[0]
            worst = max(worst, float(np.abs(np.array(out["y"]) - want).max()))
        print(f"[serve] sidecar session over HTTP vs the binding: max abs difference {worst:.2e}")
        assert worst <= 1e-6
        status, out, _ = s.request("POST", "/v1/sessions/conv/forward", {"layer": 0, "h": [[0.0] * D]})
        assert status == 422 and "no sidecar" in out["error"]
        assert s.request("DELETE", "/v1/sessions/conv")[0] == 204
    finally:
        assert s.stop() == 0


def test_http_abuse_leaves_the_server_up_and_healthz_fast():
    """Against the real server, side by side: four 7.9 MB uploads, a half-closed client, a
    body shorter than its Content-Length, a client trickling its head byte by byte,
    non-finite inputs (JSON and binary), retried steps, route edges, then SIGTERM in the
    middle of an upload. Meanwhile /healthz is probed every 5 ms on a kept-alive
    connection: the server must stay up, and every probe must answer within 50 ms (large
    bodies are parsed off the event loop; they stalled /healthz for up to 1.7 s)."""
    srv = Server(EXAMPLE_MODEL, "--idle-timeout-s", "2", "--request-timeout-s", "3", "--drain-timeout-s", "10")
    d = cx.load(EXAMPLE_MODEL).d_in
    big = json.dumps({"x": [0.123456789] * 600_000}).encode()          # ~7.9 MB, wrong length: 422 once parsed
    assert 7_000_000 < len(big) < 8 << 20
    latencies, stop, failures = [], threading.Event(), []

    def probe():
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                c.request("GET", "/healthz")
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    failures.append(r.status)
            except Exception as e:  # noqa: BLE001 - a failed probe is a failure of the test
                failures.append(repr(e))
                c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.005)

    def raw(data, *, shutdown=False, until_close=False, timeout=20):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as sock:
            sock.sendall(data)
            if shutdown:
                sock.shutdown(socket.SHUT_WR)
            return read_reply(sock, until_close=until_close or shutdown)

    def post(path, payload, ctype="application/json"):
        return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
            path.encode(), ctype.encode(), len(payload)) + payload

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        uploads = {}

        def upload(i):
            uploads[i] = srv.request("POST", f"/v1/sessions/big{i}/step", big, timeout=60)[:2]

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        # Half-close after a whole request: answered.
        x = json.dumps({"x": [0.5] * d}).encode()
        assert raw(post("/v1/sessions/half/step", x), shutdown=True).startswith(b"HTTP/1.1 200")
        # A body shorter than its Content-Length: closed by the idle timeout, no answer.
        t0 = time.time()
        assert raw(b"POST /v1/sessions/a/step HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"x\": [") == b""
        assert 1.5 < time.time() - t0 < 6
        # A head trickled a byte every 0.4 s (never idle 2 s): 408 at the 3 s request timeout.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as slow:
            t0, reply = time.time(), b""
            for ch in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 30:
                try:
                    slow.send(bytes([ch]))
                except OSError:
                    break
                time.sleep(0.4)
                if time.time() - t0 > 4:
                    break
            reply = read_reply(slow, until_close=True)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
        assert 2.5 < time.time() - t0 < 6
        # Non-finite inputs: 422 naming the value, and the session is not poisoned.
        status, out, _ = srv.request("POST", "/v1/sessions/nan/step", {"x": [1e308] * d})
        assert status == 422 and "x[0]" in out["error"], out
        nan_body = body(x=np.full(d, np.nan, np.float32))
        status, out, _ = srv.request("POST", "/v1/sessions/nan/step", nan_body, {"Content-Type": "application/x-cortex-tensors"})
        assert status == 422, out
        status, out, _ = srv.request("POST", "/v1/sessions/nan/step", {"x": [0.5] * d})
        assert status == 200 and all(np.isfinite(out["y"]))
        # Retried steps: the same index answers from memory, a gap is 409 naming the index.
        first = srv.request("POST", "/v1/sessions/retry/step", {"x": [0.25] * d, "step": 0})[1]
        again = srv.request("POST", "/v1/sessions/retry/step", {"x": [0.25] * d, "step": 0})[1]
        assert again["repeated"] is True and again["y"] == first["y"]
        status, out, _ = srv.request("POST", "/v1/sessions/retry/step", {"x": [0.25] * d, "step": 5})
        assert status == 409 and "1" in out["error"], out
        # Route edges: a longer path deletes nothing.
        assert srv.request("POST", "/v1/sessions/victim/step", {"x": [0.5] * d})[0] == 200
        assert srv.request("DELETE", "/v1/sessions/victim/a/b")[0] == 404
        assert srv.request("DELETE", "/v1//sessions/victim")[0] == 404
        assert srv.request("DELETE", "/v1/sessions/victim")[0] == 204
        for th in threads:
            th.join()
        assert all(r[0] == 422 and "expected" in r[1]["error"] for r in uploads.values()), uploads
        stop.set()
        prober.join()
        # SIGTERM in the middle of an upload: the rest arrives 0.5 s later and is answered 503.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as late:
            request = post("/v1/sessions/late/step", x)
            late.sendall(request[:-5])
            time.sleep(0.2)
            srv.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            late.sendall(request[-5:])
            reply = read_reply(late, until_close=False)
        assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
    finally:
        stop.set()
        prober.join()
        code = srv.stop()
    worst = max(latencies)
    print(f"[serve abuse] {len(latencies)} /healthz probes: median {1e3 * float(np.median(latencies)):.2f} ms, "
          f"max {1e3 * worst:.2f} ms")
    assert code == 0 and failures == []
    assert worst < 0.050, f"/healthz took {1e3 * worst:.1f} ms"


def test_bearer_token_authentication(tmp_path):
    """--api-key / --api-key-file: every route but the health probes needs a listed
    bearer token; a missing or wrong one gets 401 with WWW-Authenticate, counted."""
    keys = tmp_path / "keys"
    keys.write_text("first-key\n\nsecond-key\n")
    srv = Server(EXAMPLE_MODEL, "--api-key-file", str(keys), "--api-key", "third-key")
    try:
        assert srv.request("GET", "/healthz")[0] == 200 and srv.request("GET", "/readyz")[0] == 200
        status, out, headers = srv.request("GET", "/v1/model")
        assert status == 401 and headers["www-authenticate"] == "Bearer" and "Bearer" in out["error"]
        for wrong in ("Bearer first-ke", "Bearer first-key2", "Basic Zmlyc3Qta2V5", "bearer", "Bearer "):
            assert srv.request("GET", "/v1/model", headers={"Authorization": wrong})[0] == 401, wrong
        assert srv.request("POST", "/v1/sessions/s/step", {"x": [0.0]})[0] == 401
        assert srv.request("DELETE", "/v1/sessions/s")[0] == 401
        for key in ("first-key", "second-key", "third-key"):
            assert srv.request("GET", "/v1/model", headers={"Authorization": f"Bearer {key}"})[0] == 200
        status, text, _ = srv.request("GET", "/metrics", headers={"Authorization": "bearer second-key"})
        assert status == 200 and 'cortex_rejected_total{reason="unauthorized"} 8' in text.decode()
    finally:
        assert srv.stop() == 0
    bad = subprocess.run([serve_binary(), "--model", EXAMPLE_MODEL, "--api-key-file", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2
