"""Scale-out: Cortex sessions served by a pool of Ray actors, memory kept in PostgreSQL.

    import ray, cortex_swift.scaleout as so
    ray.init()
    dep = so.Deployment("examples/models/lstm_stack", "postgresql://...", replicas=2)
    outputs, stats = dep.client().run({"s1": x1, "s2": x2})   # x: [chunks, T, D_in] per session

The pieces:
- PostgresSessionStore: one row per session holding the same blob bytes as the SQLite
  store (State.to_bytes / Session.to_bytes: magic, version, model fingerprint,
  checksum), the session's step count, the state before its last step with a hash of
  that step's input (to answer a retried step after a crash), and a lease (owner, expiry).
- Replica: a Ray actor with one loaded model and the sessions it currently owns in
  memory. Requests are queued by deadline and run in batches (earliest deadline first,
  at most max_batch, waiting at most max_wait for company unless a deadline is near: the
  policy of cortex-serve's BatchScheduler); each batch ends with one store transaction
  that checkpoints its sessions.
- Deployment: starts the replicas and routes a session to one of them by rendezvous
  hashing over the live replicas, so a session stays where its memory is (affinity)
  while that replica lives; when it dies its sessions rehash to the others, which
  resume them from the store.
- Client: streams chunks for many sessions, one request in flight per session.

Exactly-once steps. A request names the step index it applies to (0, 1, ...). A
replica applies it only when its copy of the session is at that index; the retry of a
step it already applied returns the stored output (`duplicate`), and a request past its
copy is refused with `resume_from` so the client replays what is missing. A checkpoint
is fenced: it commits only while the replica holds the lease and the stored step count is
the one it loaded, so two replicas never both advance a session, and a replica that lost
its lease drops its copy.

Checkpoints (`checkpoint_every`): 1 (the default) stores the state after every call, so a
replica's death loses nothing: a step is acknowledged only once stored. With N > 1 a
step is acknowledged before it is stored; replies carry `durable` (the stored step
count) and the client keeps the inputs after it. When a replica dies, up to N - 1 steps
per session are lost from the store and replayed by the client from those inputs (the
replayed outputs are bitwise the first ones: the computation is deterministic). A client
that does not keep inputs loses them.
"""
from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import os
import socket
import time
import uuid

import numpy as np

_NOW = "extract(epoch from clock_timestamp())"

SCHEMA = """
CREATE TABLE IF NOT EXISTS cortex_sessions (
    id          text PRIMARY KEY,
    fingerprint text NOT NULL,              -- model fingerprint (also inside the blob)
    blob        bytea NOT NULL,             -- State.to_bytes / Session.to_bytes
    steps       bigint NOT NULL,            -- steps applied to the stored state
    prev_blob   bytea,                      -- the state before step steps-1 (retries)
    last_input  bigint,                     -- hash of step steps-1's input
    owner       text,                       -- replica holding the lease
    lease_until double precision NOT NULL DEFAULT 0,
    updated     double precision NOT NULL
) WITH (toast_tuple_target = 8160, fillfactor = 50)"""
# toast_tuple_target: a row of a few KB stays in its page instead of going through TOAST
# (a state blob is rarely compressible); fillfactor 50: updates find room in the same
# page (HOT, no index write). Together ~1.6x cheaper checkpoints than the defaults here.


class StoreError(Exception):
    """The store refused or failed an operation."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (the replica retries with back-off)."""


class LeaseHeld(StoreError):
    """Another replica holds the session's lease."""


class PostgresSessionStore:
    """Session rows in PostgreSQL (psycopg 3). Not thread-safe: one per replica.

    After a connection failure, calls fail fast with StoreUnavailable until the next
    reconnect attempt, which backs off from 0.1 s to 5 s."""

    def __init__(self, url: str, *, connect_timeout: float = 3.0):
        self.url = url
        self.connect_timeout = connect_timeout
        self._conn = None
        self._backoff = 0.0
        self._next_try = 0.0
        self._last_error = ""

    # -- connection -------------------------------------------------------------------
    def _connection(self):
        import psycopg

        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        now = time.monotonic()
        if now < self._next_try:
            raise StoreUnavailable(f"database unreachable (next attempt in {self._next_try - now:.1f} s): "
                                   f"{self._last_error}")
        try:
            conn = psycopg.connect(self.url, connect_timeout=max(1, int(self.connect_timeout)))
            with conn.transaction():
                conn.execute(SCHEMA)
        except psycopg.Error as e:
            self._backoff = min(5.0, max(0.1, self._backoff * 2))
            self._next_try = time.monotonic() + self._backoff
            self._last_error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StoreUnavailable(f"database unreachable: {self._last_error}") from None
        self._conn, self._backoff, self._next_try = conn, 0.0, 0.0
        return conn

    def _run(self, body):
        """body(conn) inside one transaction; psycopg errors become StoreErrors."""
        import psycopg

        conn = self._connection()
        try:
            with conn.transaction():
                return body(conn)
        except psycopg.OperationalError as e:
            self._last_error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self._next_try = time.monotonic() + 0.1
            raise StoreUnavailable(f"database unreachable: {self._last_error}") from None
        except psycopg.Error as e:
            raise StoreError(f"database error: {str(e).strip()}") from None

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- sessions ---------------------------------------------------------------------
    def create(self, sid: str, owner: str, lease: float, fingerprint: str, blob: bytes) -> bool:
        """Store a new session at step 0, leased to `owner`. False if the id exists."""
        def body(c):
            cur = c.execute(
                f"INSERT INTO cortex_sessions (id, fingerprint, blob, steps, owner, lease_until, updated) "
                f"VALUES (%s, %s, %s, 0, %s, {_NOW} + %s, {_NOW}) ON CONFLICT (id) DO NOTHING",
                (sid, fingerprint, blob, owner, lease))
            return cur.rowcount == 1
        return self._run(body)

    def claim(self, sid: str, owner: str, lease: float, dead_owners=()):
        """Take the lease of session `sid` (free, expired, already ours, or held by an
        owner known to be dead) and return (fingerprint, blob, steps, prev_blob, last_input);
        None if no such session; LeaseHeld if another live owner holds it."""
        def body(c):
            row = c.execute(
                f"UPDATE cortex_sessions SET owner = %s, lease_until = {_NOW} + %s "
                f"WHERE id = %s AND (owner IS NULL OR owner = %s OR lease_until < {_NOW} OR owner = ANY(%s)) "
                f"RETURNING fingerprint, blob, steps, prev_blob, last_input",
                (owner, lease, sid, owner, list(dead_owners))).fetchone()
            if row is not None:
                return (row[0], bytes(row[1]), int(row[2]), None if row[3] is None else bytes(row[3]), row[4])
            held = c.execute(f"SELECT owner, lease_until - {_NOW} FROM cortex_sessions WHERE id = %s",
                             (sid,)).fetchone()
            if held is None:
                return None
            raise LeaseHeld(f"session '{sid}' is leased by {held[0]} for {max(0.0, held[1]):.1f} s more")
        return self._run(body)

    def save_many(self, owner: str, lease: float, items) -> set:
        """Checkpoint sessions in one transaction. items: (id, blob, steps, expected_steps,
        prev_blob, last_input). A row is written only if `owner` holds its lease and it is at
        `expected_steps`; returns the ids written (the others were fenced out)."""
        items = list(items)
        if not items:
            return set()

        def body(c):
            rows = c.execute(
                f"UPDATE cortex_sessions AS s SET blob = v.blob, steps = v.steps, prev_blob = v.prev, "
                f"last_input = v.h, lease_until = {_NOW} + %s, updated = {_NOW} "
                f"FROM unnest(%s::text[], %s::bytea[], %s::bigint[], %s::bigint[], %s::bytea[], %s::bigint[]) "
                f"AS v(id, blob, steps, expected, prev, h) "
                f"WHERE s.id = v.id AND s.owner = %s AND s.steps = v.expected RETURNING s.id",
                (lease, *[[i[j] for i in items] for j in range(6)], owner)).fetchall()
            return {r[0] for r in rows}
        return self._run(body)

    def renew(self, owner: str, lease: float, ids) -> set:
        """Extend the leases `owner` still holds among `ids`; returns those ids."""
        def body(c):
            rows = c.execute(f"UPDATE cortex_sessions SET lease_until = {_NOW} + %s "
                             f"WHERE owner = %s AND id = ANY(%s) RETURNING id", (lease, owner, list(ids))).fetchall()
            return {r[0] for r in rows}
        return self._run(body)

    def release(self, owner: str, ids=None) -> int:
        """Give up leases (all of `owner`'s when ids is None)."""
        def body(c):
            if ids is None:
                return c.execute("UPDATE cortex_sessions SET owner = NULL, lease_until = 0 WHERE owner = %s",
                                 (owner,)).rowcount
            return c.execute("UPDATE cortex_sessions SET owner = NULL, lease_until = 0 WHERE owner = %s "
                             "AND id = ANY(%s)", (owner, list(ids))).rowcount
        return self._run(body)

    def get(self, sid: str):
        """(blob, steps, owner) of a session, or None."""
        row = self._run(lambda c: c.execute("SELECT blob, steps, owner FROM cortex_sessions WHERE id = %s",
                                            (sid,)).fetchone())
        return None if row is None else (bytes(row[0]), int(row[1]), row[2])

    def count(self) -> int:
        return int(self._run(lambda c: c.execute("SELECT count(*) FROM cortex_sessions").fetchone()[0]))

    def drop_all(self) -> None:
        self._run(lambda c: c.execute("DELETE FROM cortex_sessions"))


# ------------------------------------------------------------------------------------
# The model side: what a "session" is for each kind of Cortex model.

class _Sessions:
    """What a session is for one kind of Cortex model: new / from_bytes / to_bytes /
    apply(session, request) -> output rows."""

    def __init__(self, model):
        self.model = model
        self.fingerprint = model.info["fingerprint"]

    def to_bytes(self, s) -> bytes:
        return s.to_bytes()

    @staticmethod
    def _chunk(request, shape: str) -> np.ndarray:
        """The request's x as float32 [T, D] (one session's chunk)."""
        x = np.ascontiguousarray(request["x"], dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"x: expected {shape} for one session, got shape {list(x.shape)}")
        return x


class _StackSessions(_Sessions):
    """Recurrent memory stacks: a session is a State of one stream; a request is a chunk
    x [T, D_in] (sequence mode), its output y [T, D_out]."""

    def new(self, sid):
        return self.model.init_state(1)

    def from_bytes(self, sid, blob):
        return self.model.state_from_bytes(blob)

    def apply(self, s, request) -> np.ndarray:
        y, _ = self.model.forward(self._chunk(request, "[T, D_in]")[None], s)
        return np.from_dlpack(y)[0].copy()


class _SidecarSessions(_Sessions):
    """Sidecars: a session is a sidecar Session (batch 1); a request is one hooked layer's
    hidden states {"layer": l, "x": h [T, D]}, its output the sidecar's [T, D]."""

    def __init__(self, model):
        super().__init__(model)
        self.default_layer = model.layers[0]

    def new(self, sid):
        return self.model.new_session(sid, 1)

    def from_bytes(self, sid, blob):
        return self.model.session_from_bytes(blob, sid)

    def apply(self, s, request) -> np.ndarray:
        h = self._chunk(request, "[T, D]")
        out = self.model.forward(int(request.get("layer", self.default_layer)), h[None], s)
        return np.from_dlpack(out)[0].copy()


def _sessions_for(model):
    from ._sidecar import Sidecar

    return _SidecarSessions(model) if isinstance(model, Sidecar) else _StackSessions(model)


class _Held:
    """A session a replica owns: its state, step counts, and for retries of the last
    step: its output (once computed here) or the state before it and its input's hash."""
    __slots__ = ("obj", "steps", "durable", "last_output", "prev", "last_input", "lease_until")

    def __init__(self, obj, steps, prev, last_input, lease_until):
        self.obj, self.steps, self.durable = obj, steps, steps
        self.last_output, self.prev, self.last_input = None, prev, last_input
        self.lease_until = lease_until


def _input_hash(req) -> int:
    """64-bit hash of a request's input (signed, for a bigint column)."""
    x = np.ascontiguousarray(req["x"], dtype=np.float32)
    d = hashlib.blake2b(x.tobytes(), digest_size=8, person=str(req.get("layer", "")).encode()[:16])
    d.update(str(x.shape).encode())
    return int.from_bytes(d.digest(), "little", signed=True)


def _error(req, message, retry, **extra):
    return {"session": req["session"], "step": req["step"], "error": message, "retry": retry, **extra}


class Replica:
    """One model replica (use as a Ray actor: ray.remote(Replica)). `submit` takes a list
    of requests {"session", "step", "x", "deadline" (seconds from now, optional),
    "layer" (sidecars)} and returns one result per request, in order: {"session",
    "step", "y", "steps", "durable", "duplicate"} or {"session", "step", "error",
    "retry", ["resume_from"]}."""

    def __init__(self, model_dir: str, db_url: str, name: str = "replica", *, checkpoint_every: int = 1,
                 lease: float = 10.0, max_batch: int = 64, max_wait: float = 0.002, threads: int = 1,
                 default_budget: float = 1.0):
        import cortex_swift as cx

        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be >= 1")
        cx.set_num_threads(threads)
        self.model = cx.load(model_dir)
        self.kind = _sessions_for(self.model)
        self.owner = f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.store = PostgresSessionStore(db_url)
        self.checkpoint_every, self.lease = checkpoint_every, lease
        self.max_batch, self.max_wait, self.default_budget = max_batch, max_wait, default_budget
        self.sessions: dict[str, _Held] = {}
        self._queue: list = []
        self._order = itertools.count()
        self._wake: asyncio.Event | None = None
        self._worker = None
        self._running = False
        self._batch_seconds = 0.0   # EWMA of a batch's run time
        self.counters = {"applied": 0, "duplicates": 0, "batches": 0, "checkpoints": 0, "save_seconds": 0.0,
                         "saved_steps": 0, "errors": 0, "claims": 0}

    # -- Ray-facing API -----------------------------------------------------------------
    async def submit(self, requests, dead_owners=()):
        if self._worker is None:
            self._wake = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._batches())
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures = []
        for r in requests:
            f = loop.create_future()
            deadline = now + float(r.get("deadline") or self.default_budget)
            heapq.heappush(self._queue, (deadline, next(self._order), r, tuple(dead_owners), f))
            futures.append(f)
        self._wake.set()
        return list(await asyncio.gather(*futures))

    def info(self) -> dict:
        return {"owner": self.owner, "pid": os.getpid(), "sessions": len(self.sessions), **self.counters}

    async def release_all(self) -> int:
        """Store every held session and give up the leases (a graceful shutdown), after
        the queued requests ran."""
        while self._queue or self._running:
            await asyncio.sleep(0.01)

        def release():
            self._checkpoint(list(self.sessions), force=True)
            n = self.store.release(self.owner)
            self.sessions.clear()
            return n
        return await asyncio.to_thread(release)

    # -- batching (earliest deadline first) ---------------------------------------------
    async def _batches(self):
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            # Wait up to max_wait for company, unless the earliest deadline would be missed.
            slack = self._queue[0][0] - time.monotonic() - self._batch_seconds
            wait = min(self.max_wait, max(0.0, slack))
            if len(self._queue) < self.max_batch and wait > 0:
                await asyncio.sleep(wait)
            batch = [heapq.heappop(self._queue) for _ in range(min(self.max_batch, len(self._queue)))]
            t0 = time.monotonic()
            self._running = True
            try:
                results = await asyncio.to_thread(self._run_batch, [(b[2], b[3]) for b in batch])
            except Exception as e:  # never leave a caller waiting
                results = [_error(b[2], f"replica failure: {type(e).__name__}: {e}", True) for b in batch]
            finally:
                self._running = False
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (time.monotonic() - t0)
            for b, res in zip(batch, results):
                if not b[4].done():
                    b[4].set_result(res)

    # -- one batch (worker thread) ------------------------------------------------------
    def _run_batch(self, items):
        self.counters["batches"] += 1
        results: list = [None] * len(items)
        self._renew([r["session"] for r, _ in items])
        touched = []
        for i, (req, dead) in enumerate(items):
            try:
                results[i] = self._step(req, dead)
                if results[i].get("error") is None and not results[i]["duplicate"]:
                    touched.append(i)
            except Exception as e:
                results[i] = _error(req, f"{type(e).__name__}: {e}", isinstance(e, StoreUnavailable))
        # One transaction checkpoints every session due (every call by default).
        failed = self._checkpoint(sorted({items[i][0]["session"] for i in touched}))
        for i in touched:
            sid = items[i][0]["session"]
            if sid in failed:
                results[i] = _error(items[i][0], failed[sid], True)
            else:
                held = self.sessions.get(sid)
                results[i]["durable"] = min(held.durable, results[i]["steps"]) if held else results[i]["steps"]
        self.counters["errors"] += sum(1 for r in results if r.get("error"))
        return results

    def _renew(self, ids):
        """Extend leases that are past half their time; drop sessions whose lease is gone."""
        now = time.time()
        due = [s for s in set(ids) if s in self.sessions and self.sessions[s].lease_until - now < self.lease / 2]
        if not due:
            return
        try:
            kept = self.store.renew(self.owner, self.lease, due)
        except StoreError:
            return  # the checkpoint (fenced) decides; the request errors there if needed
        for s in due:
            if s in kept:
                self.sessions[s].lease_until = now + self.lease
            else:
                self.sessions.pop(s, None)

    def _acquire(self, req, dead) -> _Held:
        sid, step = req["session"], int(req["step"])
        self.counters["claims"] += 1
        row = self.store.claim(sid, self.owner, self.lease, dead)
        if row is None:
            if step != 0:
                raise LookupError(f"unknown session '{sid}': no stored state to resume step {step} from")
            obj = self.kind.new(sid)
            if not self.store.create(sid, self.owner, self.lease, self.kind.fingerprint, self.kind.to_bytes(obj)):
                row = self.store.claim(sid, self.owner, self.lease, dead)   # created meanwhile elsewhere
            else:
                return _Held(obj, 0, None, None, time.time() + self.lease)
            if row is None:
                raise LookupError(f"session '{sid}' vanished while being created")
        fingerprint, blob, steps, prev, last_input = row
        try:
            obj = self.kind.from_bytes(sid, blob)
        except Exception as e:
            self.store.release(self.owner, [sid])
            raise ValueError(f"session '{sid}': stored state refused ({e}); it was saved by model "
                             f"{fingerprint}, this replica runs {self.kind.fingerprint}") from None
        return _Held(obj, steps, prev, last_input, time.time() + self.lease)

    def _step(self, req, dead):
        sid, step = req["session"], int(req["step"])
        held = self.sessions.get(sid)
        if held is None or step > held.steps:
            try:
                held = self._acquire(req, dead)
            except LeaseHeld as e:
                return _error(req, str(e), True)
            self.sessions[sid] = held
        if step == held.steps:
            h = _input_hash(req)
            before = self.kind.to_bytes(held.obj) if self._will_checkpoint(held) else None
            y = self.kind.apply(held.obj, req)
            held.steps += 1
            held.last_output, held.prev, held.last_input = y, before, h
            self.counters["applied"] += 1
            return {"session": sid, "step": step, "y": y, "steps": held.steps, "durable": held.durable,
                    "duplicate": False}
        if step == held.steps - 1:
            # A retry of the last step (its reply was lost): the same output again, from
            # memory, or recomputed from the stored state before it (deterministic).
            if held.last_input is not None and held.last_input != _input_hash(req):
                return _error(req, f"session '{sid}': step {step} was applied with another input", False)
            y = held.last_output
            if y is None and held.prev is not None:
                y = self.kind.apply(self.kind.from_bytes(sid, held.prev), req)
            if y is not None:
                self.counters["duplicates"] += 1
                return {"session": sid, "step": step, "y": y, "steps": held.steps, "durable": held.durable,
                        "duplicate": True}
        if step > held.steps:
            return _error(req, f"session '{sid}' is at step {held.steps}: replay from there", True,
                          resume_from=held.steps)
        return _error(req, f"session '{sid}' is at step {held.steps}; step {step} was applied before", False)

    def _will_checkpoint(self, held) -> bool:
        return held.steps + 1 - held.durable >= self.checkpoint_every

    def _checkpoint(self, ids, force=False) -> dict:
        """Store the sessions in `ids` that are due; returns {id: error} for the ones not
        stored (their copy is dropped: the store's state is the truth)."""
        due = [s for s in ids if s in self.sessions and
               (force or self.sessions[s].steps - self.sessions[s].durable >= self.checkpoint_every)]
        if not due:
            return {}
        items = []
        for s in due:
            h = self.sessions[s]
            # h.prev is the state before the latest step, or None when it was not kept.
            items.append((s, self.kind.to_bytes(h.obj), h.steps, h.durable, h.prev, h.last_input))
        t0 = time.perf_counter()
        try:
            saved = self.store.save_many(self.owner, self.lease, items)
        except StoreError as e:
            saved, why = set(), str(e)
        else:
            why = "lease lost: another replica took the session; retry"
        self.counters["save_seconds"] += time.perf_counter() - t0
        self.counters["checkpoints"] += 1
        failed = {}
        for s in due:
            h = self.sessions[s]
            if s in saved:
                self.counters["saved_steps"] += h.steps - h.durable
                h.durable = h.steps
                h.lease_until = time.time() + self.lease
            else:
                failed[s] = why
                self.sessions.pop(s, None)
        return failed


# ------------------------------------------------------------------------------------
# Routing, failover and the client.

def _rank(replica: str, sid: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{replica}\0{sid}".encode(), digest_size=8).digest(), "little")


class Deployment:
    """N Replica actors on the current Ray cluster (ray.init first) and the routing table.

    `resources`: Ray options per replica (default one CPU each)."""

    def __init__(self, model_dir: str, db_url: str, replicas: int = 2, *, checkpoint_every: int = 1,
                 lease: float = 10.0, max_batch: int = 64, max_wait: float = 0.002, threads: int = 1,
                 num_cpus: float = 1.0, env: dict | None = None):
        import ray

        self.model_dir, self.db_url = os.path.abspath(model_dir), db_url
        actor = ray.remote(Replica)
        runtime_env = {"env_vars": dict(env or {})}
        for k in ("CORTEX_LIBRARY", "PYTHONPATH"):
            if k in os.environ:
                runtime_env["env_vars"].setdefault(k, os.environ[k])
        self.handles = {}
        for i in range(replicas):
            name = f"r{i}"
            self.handles[name] = actor.options(num_cpus=num_cpus, max_concurrency=64, runtime_env=runtime_env).remote(
                self.model_dir, db_url, name, checkpoint_every=checkpoint_every, lease=lease, max_batch=max_batch,
                max_wait=max_wait, threads=threads)
        infos = ray.get([h.info.remote() for h in self.handles.values()])
        self.owners = {name: info["owner"] for name, info in zip(self.handles, infos)}
        self.live = set(self.handles)
        self.dead_owners: list[str] = []

    def route(self, sid: str) -> str:
        """The live replica a session goes to (rendezvous hashing: only the sessions of a
        replica that dies move)."""
        if not self.live:
            raise RuntimeError("no live replicas")
        return max(self.live, key=lambda r: _rank(r, sid))

    def mark_dead(self, name: str) -> None:
        if name in self.live:
            self.live.discard(name)
            self.dead_owners.append(self.owners[name])

    def kill(self, name: str) -> None:
        """Kill a replica's process (a crash, for tests); the client notices on its next call."""
        import ray

        ray.kill(self.handles[name], no_restart=True)

    def info(self) -> dict:
        import ray

        return {n: ray.get(self.handles[n].info.remote()) for n in sorted(self.live)}

    def shutdown(self) -> None:
        import ray

        for n in list(self.live):
            try:
                ray.get(self.handles[n].release_all.remote())
            except Exception:
                pass
            ray.kill(self.handles[n], no_restart=True)
        self.live.clear()

    def client(self, **kw) -> "Client":
        return Client(self, **kw)

    def __enter__(self) -> "Deployment":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


class Client:
    """Streams chunks for many sessions through a Deployment, one request in flight per
    session, at most `inflight` calls per replica, each with up to `batch` requests."""

    def __init__(self, deployment: Deployment, *, batch: int = 64, inflight: int = 2, deadline: float = 1.0,
                 max_retries: int = 200):
        self.dep, self.batch, self.inflight = deployment, batch, inflight
        self.deadline, self.max_retries = deadline, max_retries

    def run(self, inputs: dict, *, start_steps: dict | None = None, on_result=None, layers: dict | None = None):
        """inputs: {session: [chunks, T, D]} (step k of a session is its chunk k, applied
        at step start_steps.get(session, 0) + k). on_result(stats) is called after every
        reply (tests kill replicas from it). Returns ({session: [chunks, T, D_out]}, stats)."""
        import ray

        start_steps = start_steps or {}
        base = {s: int(start_steps.get(s, 0)) for s in inputs}
        nxt = {s: 0 for s in inputs}                  # next chunk to send
        outputs = {s: [None] * len(x) for s, x in inputs.items()}
        ready = [s for s in inputs if len(inputs[s])]
        pending: dict = {}                            # ref -> (replica, [(session, chunk, sent_at)])
        per_replica = {r: 0 for r in self.dep.handles}
        retries = {s: 0 for s in inputs}
        stats = {"requests": 0, "applied": 0, "duplicates": 0, "replayed": 0, "retries": 0, "failovers": 0,
                 "latencies": [], "replies": 0, "next": nxt}    # next: chunks answered per session (live)
        t_start = time.perf_counter()

        def dispatch():
            by_replica: dict = {}
            waiting = []
            for s in ready:
                by_replica.setdefault(self.dep.route(s), []).append(s)
            for r, sessions in by_replica.items():
                while sessions and per_replica[r] < self.inflight:
                    group, sessions = sessions[:self.batch], sessions[self.batch:]
                    now = time.perf_counter()
                    reqs = []
                    for s in group:
                        k = nxt[s]
                        req = {"session": s, "step": base[s] + k, "x": inputs[s][k], "deadline": self.deadline}
                        if layers is not None:
                            req["layer"] = layers[s][k]
                        reqs.append(req)
                    ref = self.dep.handles[r].submit.remote(reqs, list(self.dep.dead_owners))
                    pending[ref] = (r, [(s, nxt[s], now) for s in group])
                    per_replica[r] += 1
                    stats["requests"] += len(group)
                waiting.extend(sessions)
            ready[:] = waiting

        dispatch()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            r, sent = pending.pop(ref)
            per_replica[r] -= 1
            try:
                results = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError):
                if r in self.dep.live:
                    self.dep.mark_dead(r)
                    stats["failovers"] += 1
                # Resend to the session's new replica: it resumes from the store and
                # answers a step it already has as a duplicate, or asks for a replay
                # (resume_from) of steps that were not stored.
                for s, k, _ in sent:
                    ready.append(s)
                dispatch()
                continue
            now = time.perf_counter()
            for (s, k, t0), res in zip(sent, results):
                stats["replies"] += 1
                if res.get("error") is not None:
                    retries[s] += 1
                    stats["retries"] += 1
                    if not res["retry"] or retries[s] > self.max_retries:
                        raise RuntimeError(f"session {s} step {base[s] + k}: {res['error']}")
                    if "resume_from" in res:
                        nxt[s] = max(0, min(nxt[s], res["resume_from"] - base[s]))
                    ready.append(s)
                    continue
                retries[s] = 0
                stats["latencies"].append(now - t0)
                y = np.asarray(res["y"])
                if outputs[s][k] is not None:
                    stats["replayed"] += 1
                    if not np.array_equal(outputs[s][k], y):
                        raise RuntimeError(f"session {s} step {base[s] + k}: a replayed step gave another output")
                else:
                    outputs[s][k] = y
                    stats["applied"] += 0 if res["duplicate"] else 1
                stats["duplicates"] += 1 if res["duplicate"] else 0
                nxt[s] = k + 1
                if nxt[s] < len(inputs[s]):
                    ready.append(s)
            if on_result is not None:
                on_result(stats)
            if any(retries[s] for s in ready):
                time.sleep(0.05)   # back off while leases expire or the database returns
            dispatch()
        stats["seconds"] = time.perf_counter() - t_start
        return {s: np.stack(v) if v else np.zeros((0,)) for s, v in outputs.items()}, stats
