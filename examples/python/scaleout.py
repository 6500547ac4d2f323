#!/usr/bin/env python3
"""Serve Cortex sessions on Ray replicas with a shared PostgreSQL session store.

    scripts/pg_local.sh start          # prints a database URL (or use your own server)
    .venv/bin/python examples/python/scaleout.py examples/models/lstm_stack postgresql://... \
        --replicas 2 --sessions 200 --chunks 10

Starts a local Ray cluster (or joins one: --address auto), the replicas, and a client
that streams random chunks for many sessions; then shows where the sessions live, what
the store holds, and that every session resumes from the store in a new deployment.
"""
import argparse

import numpy as np
import ray

import cortex_swift as cx
from cortex_swift import scaleout as so


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("db")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--checkpoint-every", type=int, default=1)
    ap.add_argument("--address", default=None, help="an existing Ray cluster ('auto'); default: start one here")
    args = ap.parse_args()

    ray.init(address=args.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    m = cx.load(args.model)
    rng = np.random.default_rng(0)
    ids = [f"user-{i:04d}" for i in range(args.sessions)]
    first = {s: rng.standard_normal((args.chunks, args.T, m.d_in)).astype(np.float32) for s in ids}
    store = so.PostgresSessionStore(args.db)
    store.drop_all()

    with so.Deployment(args.model, args.db, replicas=args.replicas, checkpoint_every=args.checkpoint_every) as dep:
        out, stats = dep.client().run(first)
        lat = np.array(stats["latencies"]) * 1e3
        print(f"{args.sessions} sessions x {args.chunks} chunks of {args.T} steps on {args.replicas} replicas: "
              f"{stats['requests'] / stats['seconds']:.0f} requests/s, p50 {np.percentile(lat, 50):.1f} ms, "
              f"p99 {np.percentile(lat, 99):.1f} ms")
        for name, info in dep.info().items():
            print(f"  {name} ({info['owner']}): {info['sessions']} sessions, {info['applied']} steps, "
                  f"{info['batches']} batches, {1e3 * info['save_seconds'] / max(1, info['checkpoints']):.2f} ms per checkpoint")
    # Leaving the block stored what the replicas held and released the leases.
    print(f"store: {store.count()} sessions")

    # A new deployment (other processes) resumes every session where it stopped.
    more = {s: rng.standard_normal((2, args.T, m.d_in)).astype(np.float32) for s in ids}
    with so.Deployment(args.model, args.db, replicas=args.replicas, checkpoint_every=args.checkpoint_every) as dep2:
        out2, _ = dep2.client().run(more, start_steps={s: args.chunks for s in ids})
    s = ids[0]
    state = m.init_state(1)
    cx.set_num_threads(1)
    ref = [np.from_dlpack(m.forward(c[None], state)[0])[0] for c in np.concatenate([first[s], more[s]])]
    same = np.array_equal(np.concatenate([out[s], out2[s]]), np.stack(ref))
    print(f"{s}: outputs across both deployments equal one process running it alone: {same}")
    ray.shutdown()


if __name__ == "__main__":
    main()
