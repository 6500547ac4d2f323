"""Memory that survives a process restart: a transformer with a Cortex GDN sidecar reads
six key-value pairs and a long stretch of filler in one process, saves its session to a
SQLite store and exits; a second process loads the session and answers questions about
the pairs, which neither its own context nor any KV cache holds any more.

The model is examples/models/kv_sidecar (trained by scripts/train_kv_sidecar.py): a tiny
Qwen2 host that attends to its last 64 tokens only, and a GDN sidecar on its first layer,
run by libcortex through cortex_swift.hf.attach_sidecar. Needs torch and transformers.

    python examples/python/sidecar_recall.py                  # both phases, in two processes
    python examples/python/sidecar_recall.py read  --db s.db --gap 1000 --seed 3
    python examples/python/sidecar_recall.py answer --db s.db --seed 3
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers

import cortex_swift as cx
from cortex_swift import longctx_tasks as tasks
from cortex_swift.hf import attach_sidecar

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "examples", "models", "kv_sidecar")


def load(db):
    host = transformers.Qwen2ForCausalLM.from_pretrained(os.path.join(MODEL, "host")).eval()
    return attach_sidecar(host, cx.load(os.path.join(MODEL, "sidecar")), store=cx.SessionStore(db))


def pairs(seed):
    """The six pairs and the filler of one episode (the same for both processes)."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(tasks.N_SYMBOLS, size=6, replace=False) + tasks.SYMBOL
    values = rng.integers(tasks.SYMBOL, tasks.SYMBOL + tasks.N_SYMBOLS, size=6)
    return keys, values, rng


def read(db, session, gap, seed, chunk=256):
    """Process 1: read the pairs, then `gap` filler tokens, `chunk` tokens per call
    (a stream: each call's host attention sees only that call), then save the session."""
    keys, values, rng = pairs(seed)
    stream = np.concatenate([np.stack([np.full(6, tasks.STORE), keys, values], 1).reshape(-1),
                             rng.integers(tasks.SYMBOL, tasks.SYMBOL + tasks.N_SYMBOLS, size=gap)])
    model = load(db)
    with torch.no_grad():
        for i, s in enumerate(range(0, len(stream), chunk)):
            model(torch.from_numpy(stream[None, s:s + chunk]), session_id=session, reset_session=i == 0)
    model.save_session(session)
    shown = ", ".join(f"{k - tasks.SYMBOL}->{v - tasks.SYMBOL}" for k, v in zip(keys, values))
    print(f"[pid {os.getpid()}] read 6 pairs ({shown}) then {gap} filler tokens in {len(stream)} tokens; "
          f"saved session {session!r} ({model.sessions[session].memory_bytes} bytes of state)")


def answer(db, session, seed):
    """Process 2: for each key, ask [QUERY, key, ANSWER] on a fork of the stored session
    (and on a fresh session, the control) and compare with the stored value."""
    keys, values, _ = pairs(seed)
    model = load(db)
    stored = model.get_session(session, batch=1)  # loaded from the store
    right = {"stored session": 0, "fresh session (control)": 0}
    with torch.no_grad():
        for n, (k, v) in enumerate(zip(keys, values)):
            q = torch.tensor([[tasks.QUERY, k, tasks.ANSWER]])
            model.sessions[f"q{n}"] = stored.fork(f"q{n}")
            got = model(q, session_id=f"q{n}").logits[0, -1].argmax().item()
            ctrl = model(q, session_id=f"control{n}", reset_session=True).logits[0, -1].argmax().item()
            right["stored session"] += got == v
            right["fresh session (control)"] += ctrl == v
            print(f"[pid {os.getpid()}] key {k - tasks.SYMBOL:2d}: stored value {v - tasks.SYMBOL:2d}, "
                  f"answer {got - tasks.SYMBOL:2d} {'ok' if got == v else 'WRONG'} (fresh session: {ctrl - tasks.SYMBOL})")
    print(f"[pid {os.getpid()}] " + ", ".join(f"{k}: {n}/6 right" for k, n in right.items()))
    return right["stored session"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", nargs="?", choices=["read", "answer"])
    ap.add_argument("--db")
    ap.add_argument("--session", default="episode")
    ap.add_argument("--gap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    if args.phase == "read":
        return read(args.db, args.session, args.gap, args.seed)
    if args.phase == "answer":
        return answer(args.db, args.session, args.seed)
    # Both phases, each in its own process: nothing but the store's file passes between them.
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "sessions.db")
        common = ["--db", db, "--session", args.session, "--seed", str(args.seed)]
        subprocess.run([sys.executable, __file__, "read", "--gap", str(args.gap)] + common, check=True)
        subprocess.run([sys.executable, __file__, "answer"] + common, check=True)


if __name__ == "__main__":
    main()
