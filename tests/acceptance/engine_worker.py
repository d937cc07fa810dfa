"""The worker process that ``test_engine_chaos.py`` kills, stops, starves of its database and lies to.

Usage::

    python -m tests.acceptance.engine_worker URL --name NAME --stats PATH [options]   # from the project's root

It opens the store at ``URL`` (PostgreSQL), builds the ``transfer`` kind with short deadlines and a
short backoff (:func:`chaos_kind`), the transfer steps driving one provisioner plug-in,
:class:`Recorder`, for the definition type ``rec`` (data plane included), and runs a
:class:`~tenure.engine.Worker` until SIGTERM (or SIGINT) asks it to stop. Its stats go to ``PATH``
as JSON once its signal handlers are installed (it is ready: SIGTERM stops it cleanly from then on),
every ``--stats-every`` seconds, and once more when it has stopped (``"final": true``), so a worker
that is SIGKILLed leaves its last dump behind. Beside the worker's counters the stats name the claims
whose outcome it could not write (:class:`ClaimTrouble`: lost, or the database away), by resource and
version. A worker whose parent (the test) is gone stops by
itself, so a test that died leaves no worker behind.

The recorder writes every effect it applies to the table ``chaos_effects`` (:data:`EFFECTS_DDL`;
it and :data:`GATES_DDL` are created by the test) *before* it answers, in a transaction of its own:
what a worker did is on record even when the worker dies before the transition that would follow
commits. A row names the resource, the definition, the action, the resource version the step was
claimed at, the worker, the correlation token of the attempt (so the test can call back, late or
twice) and the answer. The unique key (resource, definition, action, claim version, worker) lets
several workers apply one step (at-least-once, after a crash or a lost claim) but never one worker
twice.

How a definition behaves is read from its ``spec``:

``provision`` / ``deprovision`` / ``start``: ``"ok"`` (default)
    done at once (``"never"``: pending, never calls back; ``"async"``: pending, the test calls back;
    ``"fail"``: raises, which the step treats as retryable; ``"fatal"``: answers failed);
``pause``
    sleep up to that many seconds after recording the effect (widens the window in which a kill
    leaves an applied effect without its transition);
``gate`` (a name), ``gate_action`` (default ``"provision"``)
    after recording the effect, wait until the test opens the gate (inserts the name into
    ``chaos_gates``), but only as the first worker to apply it at that claim version (one that
    takes the step over does not wait).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from tenure import ClaimLost, StoreUnavailable, open_store
from tenure.engine import Outcome, Resource, StepContext, Steps, Worker
from tenure.engine.provision import ProvisionRequest, ProvisionResult
from tenure.engine.steps import Step
from tenure.kinds.transfer import transfer_kind, transfer_steps
from tenure.machine import Backoff, Kind
from tenure.store.claims import Claim

__all__ = [
    "EFFECTS_DDL",
    "EXIT_CLEAN",
    "EXIT_ERROR",
    "GATES_DDL",
    "KIND_NAME",
    "PLUGIN",
    "TROUBLE",
    "ClaimTrouble",
    "Recorder",
    "chaos_kind",
    "chaos_steps",
    "main",
]

KIND_NAME = "transfer"
#: The definition type (and data plane) the recorder serves.
PLUGIN = "rec"
EXIT_CLEAN = 0
EXIT_ERROR = 4

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS chaos_effects (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resource_id   text NOT NULL,
    definition_id text NOT NULL,
    action        text NOT NULL,
    -- the resource version the step was claimed at (a claim does not bump the version)
    version       bigint NOT NULL,
    -- the provisioner's attempt count for the definition (ProvisionRequest.attempt)
    attempt       integer NOT NULL,
    worker        text NOT NULL,
    pid           integer NOT NULL,
    token         text NOT NULL,
    answer        text NOT NULL,
    at            timestamptz NOT NULL,
    UNIQUE (resource_id, definition_id, action, version, worker)
)
"""

GATES_DDL = "CREATE TABLE IF NOT EXISTS chaos_gates (name text PRIMARY KEY)"

_RECORD = """
WITH prior AS (
    SELECT count(*) AS n FROM chaos_effects
    WHERE resource_id = %(rid)s AND definition_id = %(did)s AND action = %(action)s AND version = %(version)s
)
INSERT INTO chaos_effects (resource_id, definition_id, action, version, attempt, worker, pid, token, answer, at)
VALUES (%(rid)s, %(did)s, %(action)s, %(version)s, %(attempt)s, %(worker)s, %(pid)s, %(token)s, %(answer)s, %(at)s)
RETURNING seq, (SELECT n FROM prior)
"""

_ANSWERS = {"ok": "done", "never": "pending", "async": "pending", "fail": "retry", "fatal": "failed"}


def chaos_kind(*, deadline: float, retry: Backoff) -> Kind:
    """The transfer kind as the workers (and the test) build it: one deadline, one retry policy."""
    return transfer_kind(request_deadline=timedelta(seconds=deadline), retry=retry, name=KIND_NAME)


# --- which claim a provisioner call belongs to ------------------------------------------------------

_running = threading.local()


def _current() -> StepContext:
    ctx: StepContext | None = getattr(_running, "ctx", None)
    assert ctx is not None, "the recorder is only called from inside a step"
    return ctx


# --- the claims whose outcome this worker could not write ------------------------------------------


class ClaimTrouble:
    """This worker's claims whose outcome it did not write, each as (resource id, version claimed at).

    ``lost``: its fenced write was refused (:class:`~tenure.errors.ClaimLost`), or its heartbeat found
    the claim gone while the step ran; ``unwritten``: the database was away when it wrote the outcome
    (:class:`~tenure.errors.StoreUnavailable`). The test excuses a step applied by two live workers
    only when the one that did not commit has that very claim here, not any claim at all.
    """

    KINDS = ("lost", "unwritten")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[str, set[tuple[str, int]]] = {kind: set() for kind in self.KINDS}

    def note(self, kind: str, claim: Claim) -> None:
        with self._lock:
            self._claims[kind].add((claim.resource.id, claim.resource.version))

    def watch(self, store: Any) -> None:
        """Note every fenced write of ``store`` (a step's outcome, a retry) that fails for either reason."""
        for name in ("fire_claimed", "retry_later"):
            setattr(store, name, self._noting(getattr(store, name)))

    def _noting(self, write: Callable[..., Any]) -> Callable[..., Any]:
        def noted(claim: Claim, *args: Any, **kwargs: Any) -> Any:
            try:
                return write(claim, *args, **kwargs)
            except ClaimLost:
                self.note("lost", claim)
                raise
            except StoreUnavailable:
                self.note("unwritten", claim)
                raise

        return noted

    def report(self) -> dict[str, list[list[Any]]]:
        with self._lock:
            return {kind: sorted([rid, version] for rid, version in claims) for kind, claims in self._claims.items()}


#: The one worker of this process keeps its troubled claims here (they go to the stats file).
TROUBLE = ClaimTrouble()


def _remembering(step: Step) -> Step:
    """``step``, letting the provisioners it calls (in the same thread) see its StepContext, and noting
    the claim as lost when the heartbeat found it gone while the step ran."""

    def run(resource: Resource, ctx: StepContext) -> Outcome:
        _running.ctx = ctx
        try:
            return step(resource, ctx)
        finally:
            _running.ctx = None
            if ctx.lost.is_set():
                TROUBLE.note("lost", ctx.claim)

    run.__name__ = getattr(step, "__name__", type(step).__name__)
    return run


def chaos_steps(recorder: Recorder, *, kind: Kind, max_attempts: int) -> Steps:
    """The transfer steps with every provisioner type served by ``recorder``."""
    inner = transfer_steps({PLUGIN: recorder}, kind=kind, max_attempts=max_attempts)
    steps = Steps()
    for kind_name, state, version in inner.due_by_version():
        reg = inner.get(kind_name, state, version=version)
        assert reg is not None
        steps.add(reg.kind, state, _remembering(reg.step), retry_on=reg.retry_on, fatal_on=reg.fatal_on)
    return steps


class Recorder:
    """The provisioner plug-in: records each effect durably, then answers as the definition says."""

    def __init__(self, url: str, worker: str, *, size: int) -> None:
        self.worker = worker
        self.pid = os.getpid()
        self.pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, size),
            kwargs={"autocommit": True, "connect_timeout": 3},
            timeout=5.0,
            open=True,
            name=f"recorder-{worker}",
        )

    def close(self) -> None:
        self.pool.close()

    def _wait_for_gate(self, name: str, patience: float = 300.0) -> None:
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            with self.pool.connection() as conn:
                if conn.execute("SELECT 1 FROM chaos_gates WHERE name = %s", [name]).fetchone():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"gate {name!r} never opened")

    def provision(self, request: ProvisionRequest) -> ProvisionResult:
        return self._apply(request)

    def deprovision(self, request: ProvisionRequest) -> ProvisionResult:
        return self._apply(request)

    def start(self, request: ProvisionRequest) -> ProvisionResult:
        return self._apply(request)

    def _apply(self, request: ProvisionRequest) -> ProvisionResult:
        ctx = _current()
        spec: Mapping[str, Any] = request.definition.spec
        mode = str(spec.get(request.action, "ok"))
        answer = _ANSWERS[mode]
        params = {
            "rid": request.resource_id,
            "did": request.definition.id,
            "action": request.action,
            "version": ctx.claim.resource.version,
            "attempt": request.attempt,
            "worker": self.worker,
            "pid": self.pid,
            "token": request.token,
            "answer": answer,
            "at": datetime.now(UTC),
        }
        with self.pool.connection() as conn:
            row = conn.execute(_RECORD, params).fetchone()
        assert row is not None
        seq, prior = int(row[0]), int(row[1])
        gate = spec.get("gate")
        if gate and prior == 0 and request.action == spec.get("gate_action", "provision"):
            self._wait_for_gate(str(gate))
        pause = float(spec.get("pause", 0))
        if pause:
            time.sleep(random.uniform(0, pause))
        if mode == "fail":
            raise RuntimeError(f"boom: {request.action} of {request.definition.id} attempt {request.attempt}")
        if mode == "fatal":
            return ProvisionResult.failed(f"{request.definition.id} refused")
        if answer == "pending":
            return ProvisionResult.pending()
        return ProvisionResult.done({"effect": seq, "by": self.worker})


# --- stats --------------------------------------------------------------------------------------


def _stats(worker: Worker, *, final: bool) -> dict[str, Any]:
    # Read field by field, not with asdict(): its deep copy iterates the step timings while the
    # worker's threads append to them (a "deque mutated during iteration" in the middle of a run).
    raw = {f.name: getattr(worker.stats, f.name) for f in fields(worker.stats)}
    stats: dict[str, Any] = {k: list(v) if isinstance(v, list) else v for k, v in raw.items() if k != "step_seconds"}
    stats["steps"] = len(raw["step_seconds"])
    # Writes shared commits: how many transactions carried how many writes (see tenure.store.groupcommit).
    group = getattr(worker.store.database, "group", None)
    if group is not None:
        stats["group_transactions"], stats["group_units"] = group.transactions, group.units
    listener = worker.store.listen()
    return {
        "name": worker.name,
        "pid": os.getpid(),
        "final": final,
        "stats": stats,
        "claims": TROUBLE.report(),
        "listener": None
        if listener is None
        else {"connects": listener.connects, "failures": listener.failures, "last_error": listener.last_error},
    }


def _dump(path: Path, worker: Worker, *, final: bool) -> None:
    """Write the stats atomically (a reader never sees half a file, a kill never leaves one)."""
    body = json.dumps(_stats(worker, final=final), sort_keys=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, path)


def _orphan_watch(parent: int, worker: Worker, done: threading.Event) -> None:
    """Stop the worker if the process that started it is gone (a test that died must leave no worker)."""
    while not done.wait(0.5):
        if os.getppid() != parent:
            worker.request_stop()
            return


def _dump_every(path: Path, worker: Worker, every: float, done: threading.Event) -> None:
    while not done.wait(every):
        try:
            _dump(path, worker, final=False)
        except OSError:
            continue


# --- the process --------------------------------------------------------------------------------


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="engine_worker", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--name", required=True)
    parser.add_argument("--stats", required=True, type=Path)
    parser.add_argument("--stats-every", type=float, default=0.2)
    parser.add_argument("--lease", type=float, default=2.0, help="claim lease in seconds")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--poll", type=float, default=1.0, help="longest idle sleep in seconds")
    parser.add_argument("--deadline", type=float, default=10.0, help="deadline of the *_requested states (s)")
    parser.add_argument("--max-attempts", type=int, default=5, help="ProvisionStep: asks per definition")
    parser.add_argument("--retry-max", type=int, default=8, help="Backoff.max_attempts of the work states")
    parser.add_argument("--retry-base", type=float, default=0.05)
    parser.add_argument("--retry-factor", type=float, default=2.0)
    parser.add_argument("--retry-cap", type=float, default=2.0)
    parser.add_argument("--retry-jitter", type=float, default=0.5)
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format=f"%(asctime)s {args.name} %(levelname)s %(message)s"
    )
    retry = Backoff(
        max_attempts=args.retry_max,
        base=timedelta(seconds=args.retry_base),
        factor=args.retry_factor,
        cap=timedelta(seconds=args.retry_cap),
        jitter=args.retry_jitter,
    )
    kind = chaos_kind(deadline=args.deadline, retry=retry)
    store = open_store(args.url, [kind])
    TROUBLE.watch(store)
    recorder = Recorder(args.url, args.name, size=args.concurrency + 1)
    worker = Worker(
        store,
        chaos_steps(recorder, kind=kind, max_attempts=args.max_attempts),
        name=args.name,
        concurrency=args.concurrency,
        lease=timedelta(seconds=args.lease),
        poll_interval=args.poll,
    )

    def stop(signum: int, frame: object) -> None:
        # request_stop takes the store signal's (non-reentrant) lock; a handler runs in the main
        # thread, which may hold that very lock inside worker.run(). Asking from another thread
        # cannot deadlock.
        threading.Thread(target=worker.request_stop, name="stop", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # The first stats file says the worker is ready: a SIGTERM from now on stops it cleanly.
    _dump(args.stats, worker, final=False)
    done = threading.Event()
    dumper = threading.Thread(
        target=_dump_every, args=(args.stats, worker, args.stats_every, done), name="stats", daemon=True
    )
    dumper.start()
    threading.Thread(target=_orphan_watch, args=(os.getppid(), worker, done), name="orphan", daemon=True).start()
    code = EXIT_CLEAN
    try:
        worker.run()
    except BaseException:
        traceback.print_exc()
        code = EXIT_ERROR
    finally:
        done.set()
        dumper.join(5)
        _dump(args.stats, worker, final=True)
        recorder.close()
        store.close()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
