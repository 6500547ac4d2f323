#!/usr/bin/env python3
"""Scale-out benchmark: sessions streamed through 1 and 2 Ray replicas with the
PostgreSQL session store (cortex_swift.scaleout), against the same sessions run in
one process without Ray or a database.

    CORTEX_PG_URL=$(scripts/pg_local.sh start) .venv/bin/python scripts/bench_scaleout.py

Reports chunk requests/s and time steps/s, the 2-vs-1 ratio, request latency p50/p99
(client send to reply), and the store's write cost (seconds in checkpoint transactions
per stored step, measured in the replicas).
"""
import argparse
import multiprocessing as mp
import os
import pathlib
import time

import numpy as np
import ray

import cortex_swift as cx
from cortex_swift import scaleout as so

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _writer(url, w, n, q):
    st = so.PostgresSessionStore(url)
    blob = os.urandom(1100)           # the LSTM stack's state blob is ~1.1 KB
    ids = [f"w{w}-{i}" for i in range(32)]
    for i in ids:
        st.create(i, f"o{w}", 1000, "fp", blob)
    t = time.perf_counter()
    for k in range(n):
        assert len(st.save_many(f"o{w}", 1000, [(i, blob, k + 1, k, blob, 5) for i in ids])) == 32
    q.put((n * 32, time.perf_counter() - t))


def store_capacity(url):
    """Checkpoint transactions (32 sessions each) from 1-8 concurrent writer processes."""
    for p in (1, 2, 4, 8):
        so.PostgresSessionStore(url).drop_all()
        q = mp.Queue()
        ps = [mp.Process(target=_writer, args=(url, w, 100, q)) for w in range(p)]
        for x in ps:
            x.start()
        for x in ps:
            x.join()
        res = [q.get() for _ in ps]
        rate = sum(r[0] for r in res) / max(r[1] for r in res)
        print(f"store only, {p} writer(s): {rate:7.0f} session checkpoints/s ({rate / 32:.0f} transactions/s)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "examples/models/lstm_stack"))
    ap.add_argument("--db", default=os.environ.get("CORTEX_PG_URL"))
    ap.add_argument("--sessions", type=int, default=128)
    ap.add_argument("--chunks", type=int, default=12)
    ap.add_argument("--T", type=int, default=128, help="time steps per request")
    ap.add_argument("--checkpoint-every", type=int, default=1)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=32, help="requests per call")
    ap.add_argument("--store-capacity", action="store_true", help="measure the store alone and exit")
    args = ap.parse_args()
    if not args.db:
        ap.error("--db or CORTEX_PG_URL is required (scripts/pg_local.sh start)")
    if args.store_capacity:
        return store_capacity(args.db)

    m = cx.load(args.model)
    rng = np.random.default_rng(0)
    inputs = {f"b{i:04d}": rng.standard_normal((args.chunks, args.T, m.d_in)).astype(np.float32)
              for i in range(args.sessions)}
    n_req = args.sessions * args.chunks

    cx.set_num_threads(1)
    t0 = time.perf_counter()
    for x in inputs.values():
        st = m.init_state(1)
        for c in x:
            m.forward(c[None], st)
    base = time.perf_counter() - t0
    print(f"model {pathlib.Path(args.model).name}, {args.sessions} sessions x {args.chunks} requests of T={args.T}, "
          f"checkpoint every {args.checkpoint_every}")
    print(f"in-process, 1 thread, no Ray, no store: {n_req / base:9.0f} requests/s ({n_req * args.T / base:.0f} steps/s)")

    ray.init(num_cpus=max(args.replicas), include_dashboard=False, log_to_driver=False, configure_logging=False)
    store = so.PostgresSessionStore(args.db)
    rates = {}
    for r in args.replicas:
        store.drop_all()
        with so.Deployment(args.model, args.db, replicas=r, checkpoint_every=args.checkpoint_every) as dep:
            client = dep.client(batch=args.batch)
            warm = {s: x[:2] for s, x in inputs.items()}       # sessions created, leases taken
            client.run(warm)
            rest = {s: x[2:] for s, x in inputs.items()}
            _, st = client.run(rest, start_steps={s: 2 for s in inputs})
            info = dep.info()
        n = sum(len(x) for x in rest.values())
        lat = np.array(st["latencies"]) * 1e3
        save = sum(i["save_seconds"] for i in info.values())
        saved = sum(i["saved_steps"] for i in info.values())
        batches = sum(i["batches"] for i in info.values())
        rates[r] = n / st["seconds"]
        print(f"{r} replica(s): {rates[r]:9.0f} requests/s ({rates[r] * args.T:.0f} steps/s), latency p50 "
              f"{np.percentile(lat, 50):.1f} ms p99 {np.percentile(lat, 99):.1f} ms, {batches} batches, store "
              f"{1e6 * save / max(1, saved):.0f} us per stored request ({1e3 * save / max(1, batches):.2f} ms "
              f"per batch transaction)")
    if 1 in rates and 2 in rates:
        print(f"2 replicas vs 1: {rates[2] / rates[1]:.2f}x")
    ray.shutdown()


if __name__ == "__main__":
    main()
