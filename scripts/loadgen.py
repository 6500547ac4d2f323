#!/usr/bin/env python3
"""Load generator for cortex-serve: closed-loop clients on loopback, each on
one keep-alive HTTP/1.1 connection (asyncio, no third-party client), sending spike
windows to /v1/decode (or one stride per request to /v1/streams/{client}/step).

    python3 scripts/loadgen.py --url http://127.0.0.1:8080 --concurrency 1,8,64 --seconds 10
    python3 scripts/loadgen.py --serve .build/release/cortex-serve --model examples/models/spike_xs \\
        --concurrency 1,8,64 --compare-unbatched        # starts the server itself (and a max-batch 1 twin)

Windows come from `cortex_swift.spike_data` (numpy only; 256 Poisson neurons, 600 ms
windows of 5 ms bins, ~1000 events each), encoded once, JSON or the binary tensor body.
Reports per concurrency: requests/s, p50/p95/p99 latency, failures (non-200 or
connection errors), deadline misses (X-Deadline-Missed) and the server's mean batch size
(from /metrics). --json FILE writes the results.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))


def spike_windows(count: int, neurons: int = 256, seed: int = 1):
    """`count` windows (neuron_ids, time_bins, values) from a synthetic recording; loaded
    without importing cortex_swift's native library."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("spike_data", os.path.join(ROOT, "bindings/python/cortex_swift/spike_data.py"))
    sd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sd)
    s = sd.simulate(seed=0, neurons=neurons, seconds=max(2.0, 0.05 * count + 1.0), recording=seed)
    ev, _ = sd.windows(s)
    return ev[:count]


def tensor_body(tensors) -> bytes:
    """The binary body (TensorBody): 'CXTB', version 1, named int32 tensors."""
    out = bytearray(b"CXTB") + struct.pack("<HH", 1, len(tensors))
    for name, arr in tensors:
        n = name.encode()
        out += struct.pack("<B", len(n)) + n + struct.pack("<BB", 1, 1) + struct.pack("<q", len(arr))
        out += struct.pack(f"<{len(arr)}i", *[int(x) for x in arr])
    return bytes(out)


def request_bytes(host: str, path: str, body: bytes, binary: bool, deadline_ms: float | None) -> bytes:
    ctype = "application/x-cortex-tensors" if binary else "application/json"
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    if deadline_ms is not None:
        head += f"X-Deadline-Ms: {deadline_ms}\r\n"
    return (head + "\r\n").encode() + body


async def read_response(reader):
    line = await reader.readline()
    if not line:
        raise ConnectionError("connection closed")
    status = int(line.split()[1])
    length, missed = 0, False
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b""):
            break
        k, _, v = h.decode().partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v)
        elif k == "x-deadline-missed":
            missed = v.strip() == "1"
    body = await reader.readexactly(length)
    return status, missed, body


async def client(i, host, port, make_request, stop_at, stats):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        stats["errors"].append(str(e))
        return
    k = 0
    while time.perf_counter() < stop_at:
        payload = make_request(i, k)
        k += 1
        t0 = time.perf_counter()
        try:
            writer.write(payload)
            await writer.drain()
            status, missed, _ = await read_response(reader)
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
            stats["errors"].append(str(e))
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                return
            continue
        stats["latency"].append(time.perf_counter() - t0)
        stats["status"][status] = stats["status"].get(status, 0) + 1
        stats["missed"] += int(missed)
    writer.close()


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def scrape(url):
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    def total(name):
        return sum(float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))
    return total("cortex_batch_size_sum"), total("cortex_batch_size_count")


def run_level(url, concurrency, seconds, make_request, warmup=1.0):
    u = urllib.parse.urlparse(url)
    host, port = u.hostname, u.port
    s0, c0 = scrape(url)
    stats = {"latency": [], "status": {}, "errors": [], "missed": 0}

    async def main():
        # Warm-up (not measured), then the measured run.
        warm = {"latency": [], "status": {}, "errors": [], "missed": 0}
        end = time.perf_counter() + warmup
        await asyncio.gather(*(client(i, host, port, make_request, end, warm) for i in range(concurrency)))
        nonlocal s0, c0
        s0, c0 = scrape(url)
        t0 = time.perf_counter()
        end = t0 + seconds
        await asyncio.gather(*(client(i, host, port, make_request, end, stats) for i in range(concurrency)))
        return time.perf_counter() - t0

    elapsed = asyncio.run(main())
    s1, c1 = scrape(url)
    lat = sorted(stats["latency"])
    ok = stats["status"].get(200, 0)
    failures = len(stats["errors"]) + sum(v for k, v in stats["status"].items() if k != 200)
    return {
        "concurrency": concurrency, "requests": len(lat), "ok": ok, "failures": failures,
        "throughput": ok / elapsed, "p50_ms": 1e3 * percentile(lat, 50), "p95_ms": 1e3 * percentile(lat, 95),
        "p99_ms": 1e3 * percentile(lat, 99), "deadline_misses": stats["missed"],
        "mean_batch": (s1 - s0) / (c1 - c0) if c1 > c0 else float("nan"),
        "statuses": stats["status"], "errors": stats["errors"][:3],
    }


def start_server(binary, model, port, extra):
    proc = subprocess.Popen([binary, "--model", model, "--port", str(port)] + extra,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if '"listening"' in line:
            return proc
        if '"error"' in line:
            break
    proc.kill()
    raise RuntimeError(f"cortex-serve did not start: {line}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--serve", help="start this cortex-serve binary (with --model) instead of using --url")
    ap.add_argument("--model", default=os.path.join(ROOT, "examples", "models", "spike_xs"))
    ap.add_argument("--server-args", default="", help="extra cortex-serve arguments")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--endpoint", choices=["decode", "stream"], default="decode")
    ap.add_argument("--body", choices=["json", "binary"], default="binary")
    ap.add_argument("--deadline-ms", type=float, default=None)
    ap.add_argument("--windows", type=int, default=64, help="distinct windows cycled through")
    ap.add_argument("--neurons", type=int, default=256)
    ap.add_argument("--compare-unbatched", action="store_true", help="also run a --max-batch 1 server (needs --serve)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    windows = spike_windows(args.windows, args.neurons)
    binary = args.body == "binary"
    if args.endpoint == "decode":
        bodies = [tensor_body([("neuron_ids", n), ("time_bins", t), ("values", v)]) if binary else
                  json.dumps({"neuron_ids": n.tolist(), "time_bins": t.tolist(), "values": v.tolist()}).encode()
                  for n, t, v in windows]
    else:  # one 50 ms stride of events per request: the last 10 bins of each window
        bodies = []
        for n, t, v in windows:
            m = t >= 110
            cols = (n[m], t[m] - 110, v[m])
            bodies.append(tensor_body(list(zip(("neuron_ids", "time_bins", "values"), cols))) if binary else
                          json.dumps({"neuron_ids": cols[0].tolist(), "time_bins": cols[1].tolist(),
                                      "values": cols[2].tolist()}).encode())
    events = sum(len(w[0]) for w in windows) / len(windows)

    def runs(url):
        u = urllib.parse.urlparse(url)
        host = f"{u.hostname}:{u.port}"
        def make(i, k):
            path = "/v1/decode" if args.endpoint == "decode" else f"/v1/streams/client{i}/step"
            return request_bytes(host, path, bodies[(i * 7 + k) % len(bodies)], binary, args.deadline_ms)
        out = []
        for c in (int(x) for x in args.concurrency.split(",")):
            r = run_level(url, c, args.seconds, make)
            out.append(r)
            print(f"  c={c:3d}: {r['throughput']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p95 {r['p95_ms']:7.2f} ms  "
                  f"p99 {r['p99_ms']:7.2f} ms  failures {r['failures']}  deadline misses {r['deadline_misses']}  "
                  f"mean batch {r['mean_batch']:.1f}", flush=True)
        return out

    results = {"endpoint": args.endpoint, "body": args.body, "events_per_request": events, "runs": {}}
    configs = [("batched", args.server_args.split())]
    if args.compare_unbatched:
        configs.append(("unbatched", args.server_args.split() + ["--max-batch", "1"]))
    for name, extra in configs:
        proc = None
        url = args.url
        if args.serve:
            port = 18000 + os.getpid() % 1000
            proc = start_server(args.serve, args.model, port, extra)
            url = f"http://127.0.0.1:{port}"
        print(f"{name} ({' '.join(extra) or 'defaults'}): {args.endpoint}, {args.body} bodies, ~{events:.0f} events per request")
        try:
            results["runs"][name] = runs(url)
        finally:
            if proc:
                proc.terminate()
                proc.wait(timeout=30)
    if args.compare_unbatched:
        for b, u in zip(results["runs"]["batched"], results["runs"]["unbatched"]):
            print(f"  c={b['concurrency']:3d}: batched / unbatched throughput = {b['throughput'] / u['throughput']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
