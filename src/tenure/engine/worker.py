"""The worker: claims due resources, runs their steps, applies outcomes, sweeps deadlines and callbacks.

One loop per worker, a thread pool for the steps, and a heartbeat thread that renews the claims of
the steps still running. Everything a worker writes is fenced: a claimed resource is written only
while the claim (token and version) still holds, so a worker that stalled past its claim's expiry,
or whose resource a client moved on, has its late write refused. Several workers in several
processes (and, on PostgreSQL, on several hosts) share one database safely.

This module is the loop that ties the parts together: what a step's outcome writes is
:mod:`tenure.engine.apply`; callbacks and deadlines are :mod:`tenure.engine.waits`; the claims in
flight and their renewal are :mod:`tenure.engine.heartbeat`; the counters are
:mod:`tenure.engine.stats`.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

from tenure.engine.apply import OutcomeWriter, call_step
from tenure.engine.guard import RoundGuard
from tenure.engine.heartbeat import InFlight
from tenure.engine.housekeeping import Housekeeping
from tenure.engine.logs import about, log
from tenure.engine.outcome import Fail, Reconcile
from tenure.engine.reconcile import Reconciled, Reconciler, rest_triples
from tenure.engine.stats import STEP_BUCKETS, WorkerStats
from tenure.engine.steps import StepContext, Steps
from tenure.engine.stepstore import StepStoreView
from tenure.engine.waits import WaitSettler
from tenure.errors import (
    ClaimLost,
    InvalidArgument,
    InvalidSpec,
    ResourceNotFound,
    StoreUnavailable,
    TenureError,
)
from tenure.machine import Kind, Role
from tenure.machine.graph import next_hop
from tenure.store.claims import Claim, Due
from tenure.store.desired import desire_pending
from tenure.store.model import Resource
from tenure.store.protocol import EngineStore
from tenure.store.retention import RetentionPolicy

__all__ = ["STEP_BUCKETS", "Worker", "WorkerStats"]

#: While busy, the longest a worker claims without reading its agenda (callbacks, deadlines, sleep).
_REPLAN = 0.25

#: The most steps one claim runs in a row (each step's write carrying the claim into the next work
#: state) before the resource goes back to the queue, so that a long chain does not starve the rest.
_CHAIN = 32


def default_worker_name() -> str:
    """``host:pid:random``: unique among the workers sharing a database."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Worker:
    """Runs the ``steps`` of resources in ``store``.

    ``concurrency`` steps run at once; a claim lasts ``lease`` and is renewed every ``heartbeat``
    while its step runs. Idle, the worker sleeps until the next thing it knows to be due, a
    notification that work appeared, or ``poll_interval`` at most. Now and then, between passes, it
    prunes finished resources' history by ``retention`` (None: keeps everything) and refreshes the
    database's statistics (see :mod:`tenure.engine.housekeeping`).
    """

    def __init__(
        self,
        store: EngineStore,
        steps: Steps,
        *,
        name: str | None = None,
        concurrency: int = 4,
        lease: timedelta = timedelta(seconds=30),
        heartbeat: timedelta | None = None,
        poll_interval: float | None = None,
        batch: int = 100,
        rand: Callable[[], float] = random.random,
        retention: RetentionPolicy | None = None,
    ) -> None:
        if concurrency < 1:
            raise InvalidArgument("concurrency", "must be at least 1", concurrency)
        if lease <= timedelta(0):
            raise InvalidArgument("lease", "must be a positive duration", lease)
        self.store = store
        # What step code gets: the few things a step may do with the store, not the store itself.
        self._step_store = StepStoreView(store)
        self.steps = steps
        for kind in steps.all_kinds:
            store.register(kind)
        self.name = name or default_worker_name()
        self.concurrency = concurrency
        self.lease = lease
        self.heartbeat = heartbeat or lease / 3
        self._poll_interval = poll_interval
        self.batch = batch
        self.stats = WorkerStats()
        # Resting resources are due only while a desired state is pending: the reconcile takes those.
        # Claimed by version: a worker must not take resources of a kind version it does not load.
        loaded = [k for name in store.kinds for k in store.kind_versions(name)]
        self._due: list[Due] = sorted({*steps.due_by_version(), *rest_triples(loaded)})
        self._reconciler = Reconciler(store, actor=self.name)
        self._kinds = sorted(store.kinds)
        self._outcomes = OutcomeWriter(store, self.stats, worker=self.name, rand=rand, hold=self._hold)
        self._waits = WaitSettler(store, self.stats, worker=self.name, kinds=self._kinds)
        self._inflight = InFlight(store, self.stats, worker=self.name)
        self.housekeeping = Housekeeping(store, retention, who=f"worker {self.name}")
        self._poll = 5.0
        self._planned_at = -_REPLAN
        self._callbacks_seen = store.signal.callbacks
        self._stop_timeout = 30.0
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # --- running -------------------------------------------------------------------------------

    def start(self) -> Worker:
        """Run the loop in a background thread (stop it with :meth:`stop`)."""
        self._thread = threading.Thread(target=self.run, name=f"tenure-worker-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop claiming, let running steps finish for up to ``timeout`` seconds, release the rest."""
        self._stop_timeout = timeout
        self._stopping.set()
        self.store.signal.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout + 5)

    def request_stop(self) -> None:
        """Ask the loop to stop (safe from a signal handler); :meth:`run` returns once drained."""
        self._stopping.set()
        self.store.signal.notify()

    @property
    def stopping(self) -> bool:
        """Whether the worker was asked to stop."""
        return self._stopping.is_set()

    def run(self) -> None:
        """The worker loop; returns after :meth:`stop` once in-flight steps are finished or released."""
        listener = self.store.listen()
        self._poll = self._poll_interval if self._poll_interval is not None else (5.0 if listener else 1.0)
        if listener is not None:
            listener.connected.wait(5.0)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"tenure-step-{self.name}")
        beat = threading.Thread(target=self._heartbeat_loop, name=f"tenure-heartbeat-{self.name}", daemon=True)
        beat.start()
        log.info("worker %s started: %d steps, concurrency %d", self.name, len(self.steps), self.concurrency)
        guard = RoundGuard(f"worker {self.name}", self.stats, self._stopping, log)
        try:
            while not self._stopping.is_set():
                seen = self.store.signal.seq
                sleep = guard.run(self._round)
                if sleep is not None and sleep > 0:
                    self.store.signal.wait(seen, sleep)
        finally:
            self._drain()
            self.housekeeping.close()
            self._stopped.set()
            log.info("worker %s stopped", self.name)

    def _round(self) -> float:
        """One pass: callbacks, deadlines, then claims for the free slots.

        Returns how long the loop may sleep before the next pass (0: go again at once). One query
        (the agenda) says what is due, so an idle pass costs one query.
        """
        self.stats.rounds += 1
        store = self.store
        free = min(self.concurrency - len(self._inflight), self.batch)
        since = time.monotonic() - self._planned_at
        if store.signal.callbacks != self._callbacks_seen:
            # A callback arrived through this process: apply it now, busy or not, rather than at
            # the next re-plan (a data plane's answer should move its transfer at once).
            self._callbacks_seen = store.signal.callbacks
            self.apply_callbacks()
        if since < _REPLAN:
            # Busy: the agenda was read a moment ago. Claim straight away (one query per pass), or
            # with every slot taken just wait for a step to finish (it bumps the signal); callbacks,
            # deadlines and the sleep time are looked at again within _REPLAN either way.
            if free <= 0:
                return _REPLAN - since
            if self._due:
                claims = store.claim(self.name, self._due, limit=free, lease=self.lease)
                for claim in claims:
                    self._submit(claim)
                if claims:
                    return 0.0 if len(claims) == free else _REPLAN
        agenda = store.agenda(self._due, self._kinds)
        self._planned_at = time.monotonic()
        now = store.now()
        worked = 0
        if agenda.callback is not None:
            worked += self.apply_callbacks()
        if agenda.deadline is not None and agenda.deadline <= now:
            worked += self.sweep_deadlines()
        if agenda.use_expiry is not None and agenda.use_expiry <= now:
            worked += self.sweep_uses()
        if self.housekeeping.due():
            # Now and then (minutes apart, or a second while catching up): a few short transactions.
            self.housekeeping.run()
        if free > 0 and agenda.claims_due(now):
            claims = store.claim(self.name, self._due, limit=free, lease=self.lease)
            for claim in claims:
                self._submit(claim)
            if claims and len(claims) == free:
                return 0.0  # a full batch: more may be due
        if worked:
            return 0.0
        if free <= 0:
            return _REPLAN  # a finishing step bumps the signal; callbacks and deadlines go on meanwhile
        if agenda.step is not None and agenda.step <= now:
            # Steps were due but others took them: the agenda did not say when held claims expire
            # (a claim takes expired ones over on the way), so look again soon rather than at the poll.
            return _REPLAN
        upcoming = [
            t
            for t in (agenda.step, agenda.claim_expiry, agenda.deadline, agenda.use_expiry)
            if t is not None and t > now
        ]
        if not upcoming:
            return self._poll
        return min(self._poll, (min(upcoming) - now).total_seconds())

    def tick(self) -> int:
        """Run one pass synchronously and wait for the steps it started; returns how much it did.

        For tests and scripts that drive the engine step by step.
        """
        done = self.apply_callbacks() + self.sweep_deadlines() + self.sweep_uses()
        claims = self.store.claim(self.name, self._due, limit=self.batch, lease=self.lease) if self._due else []
        for claim in claims:
            self._count(claim)
            self.run_claim(claim)
        return done + len(claims)

    def run_until_idle(self, *, max_rounds: int = 10_000) -> int:
        """Tick until a pass finds nothing to do now; returns the total done."""
        total = 0
        for _ in range(max_rounds):
            done = self.tick()
            total += done
            if not done:
                return total
        raise InvalidArgument("max_rounds", f"was too few: still busy after {max_rounds} rounds", max_rounds)

    def _submit(self, claim: Claim) -> None:
        assert self._pool is not None
        self._count(claim)
        # Counted as in flight from now, not from when a pool thread picks it up: the loop must not
        # claim more than it can run, and the heartbeat must renew it while it queues.
        ctx = self._context(claim)
        future: Future[None] = self._pool.submit(self._run, claim, ctx)
        future.add_done_callback(lambda _f: self.store.signal.notify())

    def _count(self, claim: Claim) -> None:
        self.stats.claimed += 1
        self.stats.takeovers += claim.takeover

    # --- one step ------------------------------------------------------------------------------

    def _context(self, claim: Claim) -> StepContext:
        r = claim.resource
        ctx = StepContext(
            worker=self.name,
            claim=claim,
            attempt=r.attempts + 1,
            store=self._step_store,
            kind=self.store.kind_of(r),
            now=self.store.now,
        )
        self._inflight.add(claim, ctx)
        return ctx

    def run_claim(self, claim: Claim) -> None:
        """Run the step of a claimed resource and apply its outcome (never raises for step errors).

        When the outcome leads to another work state with a step here, that step runs next under
        the same claim (at most a chain of 32), as the worker loop does.
        """
        self._run(claim, self._context(claim))

    def _hold(self, kind: Kind, state: str) -> timedelta | None:
        """How long to keep a claim into ``state`` of ``kind``: a lease when its step runs here next.

        Decided as the write is made: a worker asked to stop meanwhile lets the claim go with it.
        """
        if self._stopping.is_set() or kind.state(state).role is not Role.WORK:
            return None
        if self.steps.get(kind.name, state, version=kind.version) is None:
            return None
        return self.lease

    def _run(self, claim: Claim, ctx: StepContext) -> None:
        """Run the claimed resource's step, and the steps its writes keep the claim for, one after another."""
        try:
            for hop in range(_CHAIN):
                held = self._attempt(claim, ctx, chain=hop + 1 < _CHAIN)
                if held is None or held.claim_token != claim.token:
                    return
                claim = Claim(held)
                if self._stopping.is_set():
                    # Asked to stop since the write kept the claim: hand the next step to whoever comes.
                    with contextlib.suppress(TenureError):
                        self.store.release(claim)
                    return
                self.stats.chained += 1
                ctx = self._context(claim)
        finally:
            self._inflight.discard(claim.token)

    def _attempt(self, claim: Claim, ctx: StepContext, *, chain: bool) -> Resource | None:
        """One step and its outcome's write; the resource as written when the write kept the claim."""
        r = claim.resource
        try:
            reg = self.steps.of(r)
            if reg is not None and ctx.kind.state(r.state).role is Role.REST and not self._leaves(ctx.kind, r):
                # A rest state's step runs only to leave it on the way to a desired state. With no
                # wish left, or none that can be reached, the reconcile releases or gives up.
                reg = None
            if reg is None and not ctx.lost.is_set() and self._reconciler.handles(r):
                done = self._reconciler.reconcile(claim)
                self.stats.reconciled += done is Reconciled.MOVED
                self.stats.desired_given_up += done is Reconciled.GAVE_UP
                return None
            if reg is None or ctx.lost.is_set():
                self.store.release(claim)
                return None
            state = reg.kind.state(r.state)
            spent = state.backoff.max_attempts
            if claim.takeover and r.attempts >= spent:
                # Each holder before died or stalled past its lease mid-step (a crash the step
                # causes, say): those were attempts too, and the budget is spent.
                why = "every worker that ran it died or stalled past its lease"
                failed = Fail(f"gave up after {r.attempts} attempts: {why}")
                return self._outcomes.apply(reg, state, ctx, failed, chain=chain)
            started = time.perf_counter()
            outcome = call_step(reg, ctx)
            self.stats.record_step(time.perf_counter() - started)
            if self._stopping.is_set() and ctx.lost.is_set():
                return None
            if isinstance(outcome, Reconcile) and state.role is Role.REST and not ctx.lost.is_set():
                done = self._reconciler.reconcile(claim)
                self.stats.reconciled += done is Reconciled.MOVED
                self.stats.desired_given_up += done is Reconciled.GAVE_UP
                return None
            try:
                return self._outcomes.apply(reg, state, ctx, outcome, chain=chain)
            except (InvalidSpec, InvalidArgument) as exc:
                # The outcome itself cannot be stored (data that is not JSON, say): that is the
                # step's failure, recorded without the offending data.
                failure = Fail(f"step {reg.name} ended in an outcome that cannot be stored: {exc}")
                return self._outcomes.apply(reg, state, ctx, failure, chain=chain)
        except ClaimLost as exc:
            self.stats.claims_lost += 1
            log.info("worker %s: %s", self.name, exc, extra=about(r))
            # A write that leaves claims alone (a new desired state) moved the version: the token
            # still holds the row, so hand it back now instead of leaving it due only at expiry.
            with contextlib.suppress(TenureError):
                self.store.release(claim)
        except ResourceNotFound:
            log.warning("worker %s: resource %s vanished", self.name, r.id, extra=about(r))
        except StoreUnavailable as exc:
            # The outcome is lost with the connection; the claim expires and the step runs again.
            self.stats.store_errors += 1
            log.warning("worker %s: could not record the outcome for %s: %s", self.name, r.id, exc, extra=about(r))
            if chain:
                # The write may have committed, keeping the claim into the next state, with only its
                # answer lost: should the database be back, hand the row back now, not after a lease
                # and an attempt counted against it. By token: right whichever way the write went.
                with contextlib.suppress(TenureError):
                    self.store.release(claim)
        except Exception as exc:
            # A bug in the engine (step errors never get here): say so, and count it as a failed
            # attempt, so that it backs off and ends in the failure event instead of looping.
            self.stats.engine_errors += 1
            log.exception("worker %s: unexpected error running %s", self.name, r.id, extra=about(r))
            self._outcomes.record_engine_error(self.steps.of(r), ctx, exc)
        return None

    @staticmethod
    def _leaves(kind: Kind, r: Resource) -> bool:
        """Whether a desired state asks ``r`` to leave its rest state, by a way that exists."""
        return (
            desire_pending(r) and r.desired_state is not None and next_hop(kind, r.state, r.desired_state) is not None
        )

    # --- callbacks and deadlines ---------------------------------------------------------------

    def apply_callbacks(self) -> int:
        """Apply callbacks that were recorded but not yet acted on; returns how many were settled."""
        return self._waits.apply_callbacks(limit=self.batch)

    def sweep_deadlines(self) -> int:
        """Fire the deadline event of every resource whose wait outlived its deadline.

        Answers already in the inbox win over the deadline: they are applied first, and the
        deadline fires only if they do not decide the wait (keeping what they said in the data).
        """
        return self._waits.sweep_deadlines(limit=self.batch)

    def sweep_uses(self) -> int:
        """Remove the parties' uses that expired, journaled, starting a teardown that waited for them."""
        return len(self.store.expire_uses(self._kinds, actor=self.name, limit=self.batch))

    # --- heartbeats and shutdown ---------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = self.heartbeat.total_seconds()
        while not self._stopped.wait(interval):
            self.renew_claims()

    def renew_claims(self) -> None:
        """Renew the claims of running steps; flag the ones that were lost."""
        self._inflight.renew(self.lease)

    def _drain(self) -> None:
        pool = self._pool
        if pool is None:
            return
        deadline = time.monotonic() + self._stop_timeout
        while self._inflight and time.monotonic() < deadline:
            time.sleep(0.01)
        for claim, ctx in self._inflight.held():
            # Still running: hand it back. Its late write is refused, since the release drops the token.
            ctx.lost.set()
            with contextlib.suppress(StoreUnavailable):
                self.store.release(claim)
        pool.shutdown(wait=False, cancel_futures=True)
