"""Scale-out on Ray with a shared PostgreSQL session store (cortex_swift.scaleout).

Needs ray and psycopg (scripts/python_env.sh installs them) and PostgreSQL (Debian's
postgresql; scripts/pg_local.sh starts a server on loopback, CORTEX_PG_URL names it).
scripts/test.sh sets CORTEX_REQUIRE_SCALEOUT=1 so that CI fails instead of skipping.
"""
import os
import pathlib
import subprocess
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
STACK = str(ROOT / "examples/models/lstm_stack")
SIDECAR = str(ROOT / "examples/models/kv_sidecar/sidecar")
OTHER = str(ROOT / "examples/models/tasks/majority/model")
REQUIRED = os.environ.get("CORTEX_REQUIRE_SCALEOUT") == "1"


def _need(module):
    try:
        return __import__(module)
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip(f"{module} is not installed (scripts/python_env.sh installs it)")


ray = _need("ray")
_need("psycopg")
import cortex_swift as cx  # noqa: E402
from cortex_swift import scaleout as so  # noqa: E402


@pytest.fixture(scope="module")
def pg_url():
    url = os.environ.get("CORTEX_PG_URL")
    if not url:
        try:
            url = subprocess.run([str(ROOT / "scripts/pg_local.sh"), "start"], check=True, capture_output=True,
                                 text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError) as e:
            if REQUIRED:
                raise
            pytest.skip(f"no PostgreSQL: {e}")
    return url


@pytest.fixture()
def store(pg_url):
    s = so.PostgresSessionStore(pg_url)
    s.drop_all()
    yield s
    s.close()


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def alone(model_dir, inputs):
    """Each session run alone in this process (1 thread, as the replicas), chunk by chunk."""
    cx.set_num_threads(1)
    try:
        m = cx.load(model_dir)
        out = {}
        for s, x in inputs.items():
            if isinstance(m, cx.Sidecar):
                sess = m.new_session(s, 1)
                out[s] = np.stack([np.from_dlpack(m.forward(m.layers[0], c[None], sess))[0] for c in x])
            else:
                st = m.init_state(1)
                out[s] = np.stack([np.from_dlpack(m.forward(c[None], st)[0])[0] for c in x])
        return out
    finally:
        cx.set_num_threads(0)


def chunks(n_sessions, n_chunks, T, D, seed=0, prefix="s"):
    rng = np.random.default_rng(seed)
    return {f"{prefix}{i:03d}": rng.standard_normal((n_chunks, T, D)).astype(np.float32) for i in range(n_sessions)}


def same(a, b):
    return set(a) == set(b) and all(np.array_equal(a[s], b[s]) for s in a)


def test_store_leases_and_fencing(store):
    m = cx.load(STACK)
    blob = m.init_state(1).to_bytes()
    assert store.create("a", "r0", 10.0, "fp", blob)
    assert not store.create("a", "r1", 10.0, "fp", blob)               # exists
    with pytest.raises(so.LeaseHeld, match="leased by r0"):
        store.claim("a", "r1", 10.0)
    assert store.claim("zzz", "r1", 10.0) is None                      # unknown
    # Fenced checkpoints: only the owner, only from the expected step count.
    assert store.save_many("r1", 10.0, [("a", blob, 1, 0, None, None)]) == set()
    assert store.save_many("r0", 10.0, [("a", blob, 1, 5, None, None)]) == set()
    assert store.save_many("r0", 10.0, [("a", blob, 1, 0, b"prev", 7)]) == {"a"}
    assert store.get("a")[1:] == (1, "r0")
    # A replica known to be dead loses its lease at once; then its checkpoint is refused.
    fp, got, steps, prev, h = store.claim("a", "r1", 10.0, dead_owners=["r0"])
    assert (got, steps, prev, h) == (blob, 1, b"prev", 7)
    assert store.save_many("r0", 10.0, [("a", blob, 2, 1, None, None)]) == set()
    # An expired lease is free.
    assert store.create("b", "r0", -1.0, "fp", blob)
    assert store.claim("b", "r1", 10.0)[2] == 0
    assert store.renew("r1", 10.0, ["a", "b", "zzz"]) == {"a", "b"}
    assert store.release("r1") == 2
    assert store.claim("a", "r2", 10.0)[2] == 1


def test_many_sessions_two_replicas_bitwise_then_failover(cluster, store, pg_url):
    D = cx.load(STACK).d_in
    inputs = chunks(120, 6, 8, D)
    more = chunks(120, 6, 8, D, seed=1)          # steps 6..11 of the same sessions
    full = alone(STACK, {s: np.concatenate([inputs[s], more[s]]) for s in inputs})
    want = {s: y[:6] for s, y in full.items()}
    with so.Deployment(STACK, pg_url, replicas=2) as dep:
        out, stats = dep.client().run(inputs)
        info = dep.info()
        print(f"[scaleout] 120 sessions x 6 chunks on 2 replicas: {stats['applied']} steps, "
              f"sessions per replica {[i['sessions'] for i in info.values()]}, claims {[i['claims'] for i in info.values()]}")
        assert same(out, want), "outputs differ from each session run alone"
        assert stats["applied"] == 720 and stats["duplicates"] == 0 and stats["retries"] == 0
        assert sum(i["claims"] for i in info.values()) == 120, "each session is claimed once (affinity)"
        assert all(i["sessions"] > 20 for i in info.values()), "both replicas serve sessions"

        # The same sessions go on (steps 6..11); r0 is killed after a third of the replies.
        want2 = {s: y[6:] for s, y in full.items()}
        killed = []

        def kill(st):
            if not killed and st["replies"] >= 240:
                dep.kill("r0")
                killed.append(st["replies"])
        out2, stats2 = dep.client().run(more, start_steps={s: 6 for s in more}, on_result=kill)
        print(f"[scaleout] failover: killed r0 after {killed[0]} replies; {stats2['applied']} new steps, "
              f"{stats2['duplicates']} duplicates answered from the store, {stats2['retries']} retries, "
              f"{stats2['failovers']} failover")
        assert killed and stats2["failovers"] == 1
        assert same(out2, want2), "outputs after failover differ from each session run alone"
        for s in more:   # zero lost or duplicated steps: every session stored at exactly 12
            assert store.get(s)[1] == 12, (s, store.get(s)[1])
        assert dep.live == {"r1"}


def test_checkpoint_every_n_replays_lost_steps(cluster, store, pg_url):
    D = cx.load(STACK).d_in
    inputs = chunks(24, 12, 4, D, seed=2)
    want = alone(STACK, inputs)
    with so.Deployment(STACK, pg_url, replicas=2, checkpoint_every=4) as dep:
        killed = []

        on_r1 = [s for s in inputs if dep.route(s) == "r1"]

        def stored_steps(s):  # a session with no checkpoint yet has none stored
            row = store.get(s)
            return 0 if row is None else row[1]

        def kill(st):
            # Kill r1 while one of its sessions has answered 1-2 steps past its stored
            # state, so that even its step in flight cannot reach the next checkpoint (at a
            # fixed reply count r1 could be at a checkpoint, or done).
            if killed or st["replies"] < 40:
                return
            if any(st["next"][s] < 12 and 0 < st["next"][s] - stored_steps(s) <= 2 for s in on_r1):
                dep.kill("r1")
                killed.append(st["replies"])
        out, stats = dep.client(batch=8).run(inputs, on_result=kill)
        print(f"[scaleout] checkpoint every 4: killed r1 after {killed[0]} replies, {stats['replayed']} steps replayed "
              f"(outputs bitwise as before), {stats['retries']} retries")
        assert same(out, want)
        assert stats["replayed"] > 0, "the dead replica's unsaved steps are replayed"
        dep.shutdown()   # the survivor stores what it holds
        for s in inputs:
            assert store.get(s)[1] == 12


def test_sidecar_sessions(cluster, store, pg_url):
    D = cx.load(SIDECAR).d_in
    inputs = chunks(8, 3, 5, D, seed=3, prefix="chat")
    with so.Deployment(SIDECAR, pg_url, replicas=2) as dep:
        out, stats = dep.client().run(inputs)
        assert same(out, alone(SIDECAR, inputs))
        assert stats["applied"] == 24


def test_bad_requests_get_clear_errors(cluster, store, pg_url):
    D = cx.load(STACK).d_in
    x = chunks(1, 1, 2, D, seed=4, prefix="u")
    with so.Deployment(STACK, pg_url, replicas=1) as dep:
        with pytest.raises(RuntimeError, match="unknown session 'u000'"):
            dep.client().run(x, start_steps={"u000": 3})
        # A state saved by another model.
        other = cx.load(OTHER)
        assert store.create("alien", "nobody", -1.0, other.info["fingerprint"], other.init_state(1).to_bytes())
        with pytest.raises(RuntimeError, match="stored state refused .*saved by model"):
            dep.client().run({"alien": x["u000"]}, start_steps={"alien": 0})
        # Wrong input shape: an error for that request, the replica stays up.
        with pytest.raises(RuntimeError, match="expected \\[T, D_in\\]"):
            dep.client().run({"v": np.zeros((1, D), np.float32)[None, None]})
        assert dep.info()["r0"]["errors"] >= 3


def test_database_unreachable(cluster):
    D = cx.load(STACK).d_in
    with so.Deployment(STACK, "postgresql://cortex@127.0.0.1:9/cortex", replicas=1) as dep:
        with pytest.raises(RuntimeError, match="database unreachable"):
            dep.client(max_retries=3).run(chunks(2, 1, 2, D, prefix="d"))
        assert dep.info()["r0"]["errors"] >= 3      # still answering


def test_retried_step_after_a_crash_is_answered_once(store, pg_url):
    """In-process replicas (no Ray): A stores step 1 and 'dies' before replying; B, told A
    is dead, answers the retry of step 1 from the stored state before it, bitwise."""
    D = cx.load(STACK).d_in
    x = chunks(1, 3, 4, D, seed=5, prefix="d")["d000"]
    a = so.Replica(STACK, pg_url, "A")
    b = so.Replica(STACK, pg_url, "B")
    req = lambda k, xk=None: ({"session": "d000", "step": k, "x": x[k] if xk is None else xk}, ())
    ra = a._run_batch([req(0), req(1)])
    assert [r["steps"] for r in ra] == [1, 2] and all(r["durable"] == r["steps"] for r in ra)
    with pytest.raises(so.LeaseHeld):
        store.claim("d000", b.owner, 10.0)
    dead = (a.owner,)
    rb = b._run_batch([({"session": "d000", "step": 1, "x": x[1]}, dead)])[0]
    assert rb["duplicate"] and np.array_equal(rb["y"], ra[1]["y"]), rb
    bad = b._run_batch([({"session": "d000", "step": 1, "x": x[0]}, dead)])[0]
    assert "applied with another input" in bad["error"] and not bad["retry"]
    gap = b._run_batch([({"session": "d000", "step": 5, "x": x[2]}, dead)])[0]
    assert gap["resume_from"] == 2 and gap["retry"]
    assert b._run_batch([({"session": "d000", "step": 2, "x": x[2]}, dead)])[0]["steps"] == 3
    # A's copy is stale now: its checkpoint is fenced out and it lets the session go.
    stale = a._run_batch([req(2)])[0]
    assert "leased by" in stale["error"] or "lease lost" in stale["error"], stale
    assert store.get("d000")[1:] == (3, b.owner)
    want = alone(STACK, {"d000": x})["d000"]
    assert np.array_equal(np.stack([ra[0]["y"], ra[1]["y"], b.sessions["d000"].last_output]), want)


def test_replica_reconnects_when_the_database_returns(cluster, store, pg_url):
    """The database goes away mid-service: requests fail with a clear error, the replica
    stays up, and once the server is back the same replica serves the same sessions."""
    pg = str(ROOT / "scripts/pg_local.sh")
    if subprocess.run([pg, "start"], capture_output=True, text=True).stdout.strip() != pg_url:
        pytest.skip("the database is not the one scripts/pg_local.sh manages")
    D = cx.load(STACK).d_in
    x = chunks(4, 3, 4, D, seed=6, prefix="p")
    want = alone(STACK, x)
    with so.Deployment(STACK, pg_url, replicas=1) as dep:
        out1, _ = dep.client().run({s: v[:1] for s, v in x.items()})
        subprocess.run([pg, "stop"], check=True)
        try:
            with pytest.raises(RuntimeError, match="database unreachable"):
                dep.client(max_retries=2).run({s: v[1:2] for s, v in x.items()}, start_steps={s: 1 for s in x})
        finally:
            subprocess.run([pg, "start"], check=True, capture_output=True)
        time.sleep(5.5)   # past the longest back-off
        out2, _ = dep.client().run({s: v[1:] for s, v in x.items()}, start_steps={s: 1 for s in x})
        got = {s: np.concatenate([out1[s], out2[s]]) for s in x}
        assert same(got, want)
        assert dep.info()["r0"]["errors"] >= 2
