"""The worker: claims due resources, runs their steps, applies outcomes, sweeps deadlines and callbacks.

One loop per worker, a thread pool for the steps, and a heartbeat thread that renews the claims of
the steps still running. Everything a worker writes is fenced: a claimed resource is written only
while the claim (token and version) still holds, so a worker that stalled past its claim's expiry,
or whose resource a client moved on, has its late write refused. Several workers in several
processes (and, on PostgreSQL, on several hosts) share one database safely.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from tenure.engine.outcome import Advance, Fail, Fatal, Outcome, Retryable, RetryLater, Wait
from tenure.engine.reconcile import Reconciled, Reconciler, rest_pairs
from tenure.engine.rollup import roll_up
from tenure.engine.steps import Registered, StepContext, Steps
from tenure.errors import (
    ClaimLost,
    Conflict,
    InvalidArgument,
    InvalidSpec,
    ResourceNotFound,
    StoreUnavailable,
    TenureError,
    TransitionNotAllowed,
)
from tenure.machine import Kind, Role, State
from tenure.rules import error_text, printable
from tenure.store.claims import Claim, WaitPlan
from tenure.store.inbox import CallbackRow, token_hash
from tenure.store.model import Resource
from tenure.store.protocol import EngineStore

__all__ = ["STEP_BUCKETS", "Worker", "WorkerStats"]

log = logging.getLogger("tenure.engine")

_OUTCOMES = (Advance, Wait, RetryLater, Fail)

#: While busy, the longest a worker claims without reading its agenda (callbacks, deadlines, sleep).
_REPLAN = 0.25

#: Upper bounds (seconds) of the step-duration histogram.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

#: The longest explicit delay a step may ask for before its next attempt.
MAX_RETRY_DELAY = timedelta(days=30)


@dataclass
class WorkerStats:
    """Counters of what a worker did (read them; they only grow)."""

    rounds: int = 0
    claimed: int = 0
    takeovers: int = 0
    advanced: int = 0
    waited: int = 0
    retried: int = 0
    failed: int = 0
    claims_lost: int = 0
    deadlines_fired: int = 0
    callbacks_applied: int = 0
    callbacks_superseded: int = 0
    store_errors: int = 0
    engine_errors: int = 0
    #: Events fired towards a desired state, and desired states given up on.
    reconciled: int = 0
    desired_given_up: int = 0
    #: How long the most recent steps took (the last 1024).
    step_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=1024), repr=False)
    #: Steps run and their total time; with step_buckets, a histogram of step durations.
    steps_run: int = 0
    step_seconds_total: float = 0.0
    #: How many steps took at most STEP_BUCKETS[i] seconds (cumulative, as Prometheus wants them).
    step_buckets: list[int] = field(default_factory=lambda: [0] * len(STEP_BUCKETS), repr=False)

    def record_step(self, seconds: float) -> None:
        self.step_seconds.append(seconds)
        self.steps_run += 1
        self.step_seconds_total += seconds
        for i, bound in enumerate(STEP_BUCKETS):
            if seconds <= bound:
                self.step_buckets[i] += 1


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Worker:
    """Runs the ``steps`` of resources in ``store``.

    ``concurrency`` steps run at once; a claim lasts ``lease`` and is renewed every ``heartbeat``
    while its step runs. Idle, the worker sleeps until the next thing it knows to be due, a
    notification that work appeared, or ``poll_interval`` at most.
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
    ) -> None:
        if concurrency < 1:
            raise InvalidArgument("concurrency", "must be at least 1", concurrency)
        if lease <= timedelta(0):
            raise InvalidArgument("lease", "must be a positive duration", lease)
        self.store = store
        self.steps = steps
        for kind in steps.kinds.values():
            store.register(kind)
        self.name = name or default_worker_name()
        self.concurrency = concurrency
        self.lease = lease
        self.heartbeat = heartbeat or lease / 3
        self._poll_interval = poll_interval
        self.batch = batch
        self._rand = rand
        self.stats = WorkerStats()
        # Resting resources are due only while a desired state is pending: the reconcile takes those.
        self._due = sorted({*steps.due(), *rest_pairs(store.kinds.values())})
        self._reconciler = Reconciler(store, actor=self.name)
        self._kinds = sorted(store.kinds)
        self._poll = 5.0
        self._planned_at = -_REPLAN
        self._inflight: dict[str, tuple[Claim, StepContext]] = {}
        self._lock = threading.Lock()
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
        pause = 0.05
        try:
            while not self._stopping.is_set():
                seen = self.store.signal.seq
                try:
                    sleep = self._round()
                    pause = 0.05
                except (StoreUnavailable, OSError) as exc:
                    self.stats.store_errors += 1
                    log.warning("worker %s: store unavailable (%s); retrying in %.2fs", self.name, exc, pause)
                    self._stopping.wait(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                except Exception:
                    # A bug must not kill the worker silently: say so, back off, and go on.
                    self.stats.engine_errors += 1
                    log.exception("worker %s: unexpected error in its loop; retrying in %.2fs", self.name, pause)
                    self._stopping.wait(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                if sleep > 0:
                    self.store.signal.wait(seen, sleep)
        finally:
            self._drain()
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
        upcoming = [t for t in (agenda.step, agenda.claim_expiry, agenda.deadline) if t is not None and t > now]
        if not upcoming:
            return self._poll
        return min(self._poll, (min(upcoming) - now).total_seconds())

    def tick(self) -> int:
        """Run one pass synchronously and wait for the steps it started; returns how much it did.

        For tests and scripts that drive the engine step by step.
        """
        done = self.apply_callbacks() + self.sweep_deadlines()
        claims = self.store.claim(self.name, self._due, limit=self.batch, lease=self.lease) if self._due else []
        for claim in claims:
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
        self.stats.claimed += 1
        self.stats.takeovers += claim.takeover
        # Counted as in flight from now, not from when a pool thread picks it up: the loop must not
        # claim more than it can run, and the heartbeat must renew it while it queues.
        ctx = self._context(claim)
        future: Future[None] = self._pool.submit(self._run, claim, ctx)
        future.add_done_callback(lambda _f: self.store.signal.notify())

    # --- one step ------------------------------------------------------------------------------

    def _context(self, claim: Claim) -> StepContext:
        r = claim.resource
        ctx = StepContext(
            worker=self.name,
            claim=claim,
            attempt=r.attempts + 1,
            store=self.store,
            kind=self.store.kind(r.kind),
            now=self.store.now,
        )
        with self._lock:
            self._inflight[claim.token] = (claim, ctx)
        return ctx

    def run_claim(self, claim: Claim) -> None:
        """Run the step of a claimed resource and apply its outcome (never raises for step errors)."""
        self._run(claim, self._context(claim))

    def _run(self, claim: Claim, ctx: StepContext) -> None:
        r = claim.resource
        try:
            reg = self.steps.get(r.kind, r.state)
            if reg is None and not ctx.lost.is_set() and self._reconciler.handles(r):
                done = self._reconciler.reconcile(claim)
                self.stats.reconciled += done is Reconciled.MOVED
                self.stats.desired_given_up += done is Reconciled.GAVE_UP
                return
            if reg is None or ctx.lost.is_set():
                self.store.release(claim)
                return
            state = reg.kind.state(r.state)
            spent = state.backoff.max_attempts
            if claim.takeover and r.attempts >= spent:
                # Each holder before died or stalled past its lease mid-step (a crash the step
                # causes, say): those were attempts too, and the budget is spent.
                why = "every worker that ran it died or stalled past its lease"
                self._apply(reg, state, ctx, Fail(f"gave up after {r.attempts} attempts: {why}"))
                return
            started = time.perf_counter()
            outcome = self._call(reg, ctx)
            self.stats.record_step(time.perf_counter() - started)
            if self._stopping.is_set() and ctx.lost.is_set():
                return
            try:
                self._apply(reg, state, ctx, outcome)
            except (InvalidSpec, InvalidArgument) as exc:
                # The outcome itself cannot be stored (data that is not JSON, say): that is the
                # step's failure, recorded without the offending data.
                self._apply(reg, state, ctx, Fail(f"step {reg.name} ended in an outcome that cannot be stored: {exc}"))
        except ClaimLost as exc:
            self.stats.claims_lost += 1
            log.info("worker %s: %s", self.name, exc, extra=_about(r))
            # A write that leaves claims alone (a new desired state) moved the version: the token
            # still holds the row, so hand it back now instead of leaving it due only at expiry.
            with contextlib.suppress(TenureError):
                self.store.release(claim)
        except ResourceNotFound:
            log.warning("worker %s: resource %s vanished", self.name, r.id, extra=_about(r))
        except StoreUnavailable as exc:
            # The outcome is lost with the connection; the claim expires and the step runs again.
            self.stats.store_errors += 1
            log.warning("worker %s: could not record the outcome for %s: %s", self.name, r.id, exc, extra=_about(r))
        except Exception as exc:
            # A bug in the engine (step errors never get here): say so, and count it as a failed
            # attempt, so that it backs off and ends in the failure event instead of looping.
            self.stats.engine_errors += 1
            log.exception("worker %s: unexpected error running %s", self.name, r.id, extra=_about(r))
            self._recover(ctx, exc)
        finally:
            with self._lock:
                self._inflight.pop(claim.token, None)

    def _recover(self, ctx: StepContext, exc: Exception) -> None:
        r = ctx.claim.resource
        error = f"engine error: {_describe(exc)}"
        reg = self.steps.get(r.kind, r.state)
        state = reg.kind.state(r.state) if reg is not None else None
        try:
            if reg is not None and state is not None:
                self._apply(reg, state, ctx, RetryLater(error))
                return
        except Exception:
            log.exception("worker %s: could not record the engine error on %s", self.name, r.id, extra=_about(r))
        # Not even the failure could be recorded: come back after the longest backoff, not at once.
        cap = state.backoff.cap if state is not None else timedelta(minutes=5)
        try:
            self.store.retry_later(
                ctx.claim, error=error_text(error), at=self.store.now() + cap, attempts=r.attempts + 1, actor=self.name
            )
        except Exception:
            with contextlib.suppress(Exception):
                self.store.release(ctx.claim)

    def _call(self, reg: Registered, ctx: StepContext) -> Outcome:
        r = ctx.claim.resource
        try:
            outcome = reg.step(r, ctx)
        except Fatal as exc:
            return Fail(_describe(exc))
        except Retryable as exc:
            return RetryLater(_describe(exc), exc.delay)
        except Exception as exc:
            if isinstance(exc, reg.fatal_on) or not isinstance(exc, reg.retry_on):
                return Fail(_describe(exc))
            log.info("step %s of %s raised %s", reg.name, r.id, _describe(exc), extra=_about(r))
            return RetryLater(_describe(exc))
        if not isinstance(outcome, _OUTCOMES):
            return Fail(f"step {reg.name} returned {outcome!r}; a step returns Advance, Wait, RetryLater or Fail")
        return outcome

    def _apply(self, reg: Registered, state: State, ctx: StepContext, outcome: Outcome) -> None:
        claim, r, store = ctx.claim, ctx.claim.resource, self.store
        detail = {"step": reg.name, "attempt": ctx.attempt, "worker": self.name}
        kind = reg.kind
        if isinstance(outcome, Advance):
            problem = _event_problem(kind, r.state, outcome.event)
            if problem is None:
                try:
                    store.fire_claimed(
                        claim, outcome.event, data=outcome.data, actor=self.name, detail={**detail, **outcome.detail}
                    )
                    self.stats.advanced += 1
                    return
                except TransitionNotAllowed as exc:  # a guard refused it
                    problem = exc.reason or str(exc)
            outcome = Fail(f"step {reg.name} asked to fire {outcome.event!r}: {problem}")
        if isinstance(outcome, Wait):
            problem = _wait_problem(kind, r.state, outcome)
            if problem is None:
                plan = WaitPlan(token_hash(ctx.token), tuple(outcome.keys), outcome.rules())
                waiting = {**detail, **outcome.detail, "awaiting": list(outcome.keys)}
                try:
                    store.fire_claimed(
                        claim, outcome.event, data=outcome.data, actor=self.name, detail=waiting, wait=plan
                    )
                    self.stats.waited += 1
                    return
                except TransitionNotAllowed as exc:  # a guard refused it
                    problem = f"event {outcome.event!r}: {exc.reason or exc}"
            outcome = Fail(f"step {reg.name} asked to wait: {problem}")
        if isinstance(outcome, RetryLater):
            failed = r.attempts + 1
            policy = state.backoff
            if failed < policy.max_attempts:
                delay = outcome.delay if outcome.delay is not None else policy.delay(failed, self._rand())
                # An explicit delay is the step's call, within reason: never negative, never past
                # what a timestamp can hold.
                delay = min(max(delay, timedelta(0)), MAX_RETRY_DELAY)
                store.retry_later(
                    claim,
                    error=error_text(outcome.error),
                    at=store.now() + delay,
                    attempts=failed,
                    data=outcome.data,
                    actor=self.name,
                )
                self.stats.retried += 1
                return
            outcome = Fail(f"gave up after {failed} attempts: {outcome.error}", data=outcome.data)
        event = outcome.event or state.on_failure
        assert state.on_failure is not None, "steps are registered only for states with on_failure"
        assert event is not None
        problem = _event_problem(kind, r.state, event)
        if problem is not None:
            outcome, event = Fail(f"{outcome.error} (and its failure event {event!r}: {problem})"), state.on_failure
        error = error_text(outcome.error)
        try:
            store.fire_claimed(claim, event, data=outcome.data, error=error, actor=self.name, detail=detail)
        except TransitionNotAllowed as exc:
            if event == state.on_failure:
                raise  # kind validation keeps the state's own failure event unguarded
            # A guard refused the step's chosen failure event: the state's own one always goes.
            error = error_text(f"{outcome.error} (and its failure event {event!r}: {exc.reason or exc})")
            store.fire_claimed(claim, state.on_failure, data=outcome.data, error=error, actor=self.name, detail=detail)
        self.stats.failed += 1

    # --- callbacks and deadlines ---------------------------------------------------------------

    def apply_callbacks(self) -> int:
        """Apply callbacks that were recorded but not yet acted on; returns how many were settled."""
        pending = self.store.unsettled(self._kinds, limit=self.batch)
        by_wait: dict[str, list[CallbackRow]] = {}
        for cb in pending:
            by_wait.setdefault(cb.token_hash, []).append(cb)
        return sum(self._settle(hashed, rows) for hashed, rows in by_wait.items())

    def _settle(self, hashed: str, rows: list[CallbackRow]) -> int:
        """Apply the unsettled callbacks ``rows`` of one wait; returns how many were settled."""
        seqs = [cb.seq for cb in rows]
        store = self.store
        wait = store.wait(hashed)
        resource = store.find(wait.resource_id) if wait else None
        if wait is None or resource is None:
            store.mark_settled(seqs, "dropped: the wait no longer exists")
            return len(seqs)
        if resource.version != wait.version:
            # Counted only where this call settled them: another worker may have applied them (and
            # so moved the resource on) in the meantime.
            superseded = store.mark_settled(
                seqs, f"superseded: the resource moved on to state {resource.state!r} at version {resource.version}"
            )
            self.stats.callbacks_superseded += superseded
            return len(seqs)
        if wait.provisional:
            return 0  # the step that handed out the token still runs: applied once it waits
        # When the unsettled rows answer every awaited key, they are all the answers there can be.
        complete = set(wait.keys) <= {cb.key for cb in rows}
        if not complete:
            # Read them all: answers recorded earlier count, and answers that arrived since the
            # batch was read are used (so settled) by this same decision.
            answers = store.callbacks(hashed)
            seqs = [cb.seq for cb in answers if cb.applied_at is None]
            if not seqs:
                return 0  # another worker settled them meanwhile
        else:
            answers = rows
        unawaited = [cb.seq for cb in answers if cb.seq in seqs and cb.key not in wait.keys]
        if unawaited:
            # Early answers (sent while the step ran) for keys the step did not end up waiting for.
            store.mark_settled(unawaited, f"ignored: not awaited (the wait awaits {', '.join(wait.keys)})")
            seqs = [seq for seq in seqs if seq not in unawaited]
            if not seqs:
                return len(unawaited)
        decision = roll_up(wait, answers, resource.data)
        if decision.event is None:
            store.mark_settled(seqs, f"recorded; still waiting for {', '.join(decision.missing)}")
            return len(seqs) + len(unawaited)
        try:
            store.fire_settling(
                resource,
                decision.event,
                seqs,
                result=f"applied: fired {decision.event}",
                data=decision.data,
                error=decision.error,
                actor=self.name,
                detail={"callbacks": seqs},
            )
            self.stats.callbacks_applied += len(seqs)
        except Conflict:
            return 0  # the resource moved on meanwhile; the next pass settles these as superseded
        except TenureError as exc:
            store.mark_settled(seqs, f"refused: {exc}")
        return len(seqs) + len(unawaited)

    def sweep_deadlines(self) -> int:
        """Fire the deadline event of every resource whose wait outlived its deadline.

        Answers already in the inbox win over the deadline: they are applied first, and the
        deadline fires only if they do not decide the wait (keeping what they said in the data).
        """
        fired = 0
        for r in self.store.expired_waits(self._kinds, limit=self.batch):
            try:
                fired += self._expire(r)
            except (Conflict, ResourceNotFound):
                continue  # answered, or swept by another worker, in the meantime
            except (StoreUnavailable, OSError):
                raise
            except Exception:
                # One resource must not hold up the deadlines of the others.
                self.stats.engine_errors += 1
                log.exception("worker %s: could not fire the deadline of %s", self.name, r.id, extra=_about(r))
        self.stats.deadlines_fired += fired
        return fired

    def _expire(self, r: Resource) -> int:
        state = self.store.kind(r.kind).state(r.state)
        if state.role is not Role.WAIT or state.on_deadline is None:
            return 0
        data = None
        wait = self.store.current_wait(r.id, r.version)
        if wait is not None and not wait.provisional:
            answers = self.store.callbacks(wait.token_hash)
            unsettled = [cb for cb in answers if cb.applied_at is None]
            if unsettled and self._settle(wait.token_hash, unsettled):
                now = self.store.find(r.id)
                if now is None or now.version != r.version:
                    return 0  # the answers decided the wait
            if answers:
                # Partial answers are kept: a retry then asks again only for what is missing.
                data = roll_up(wait, answers, r.data).data
        deadline = r.deadline.isoformat() if r.deadline else "?"
        self.store.fire(
            r,
            state.on_deadline,
            data=data,
            error=f"no answer in state {r.state!r} before its deadline ({deadline})",
            actor=self.name,
            detail={"deadline": deadline},
        )
        return 1

    # --- heartbeats and shutdown ---------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = self.heartbeat.total_seconds()
        while not self._stopped.wait(interval):
            self.renew_claims()

    def renew_claims(self) -> None:
        """Renew the claims of running steps; flag the ones that were lost."""
        with self._lock:
            running = dict(self._inflight)
        if not running:
            return
        try:
            held = self.store.renew(list(running), lease=self.lease)
        except StoreUnavailable as exc:
            log.warning("worker %s: could not renew claims: %s", self.name, exc)
            return
        except Exception:
            # The heartbeat must outlive a surprise: without it every long step is taken over.
            self.stats.engine_errors += 1
            log.exception("worker %s: unexpected error renewing claims", self.name)
            return
        for token, (claim, ctx) in running.items():
            if token not in held and not ctx.lost.is_set():
                ctx.lost.set()
                log.info("worker %s lost its claim on %s", self.name, claim.resource.id, extra=_about(claim.resource))

    def _drain(self) -> None:
        pool = self._pool
        if pool is None:
            return
        timeout = getattr(self, "_stop_timeout", 30.0)
        deadline = time.monotonic() + timeout
        while self._inflight and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            left = list(self._inflight.values())
        for claim, ctx in left:
            # Still running: hand it back. Its late write is refused, since the release drops the token.
            ctx.lost.set()
            with contextlib.suppress(StoreUnavailable):
                self.store.release(claim)
        pool.shutdown(wait=False, cancel_futures=True)


def _about(r: Resource) -> dict[str, str]:
    return {"resource_id": r.id, "kind": r.kind}


def _describe(exc: BaseException) -> str:
    text = printable(str(exc).strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _event_problem(kind: Kind, state: str, event: str) -> str | None:
    if kind.allows(state, event):
        return None
    return f"not allowed in state {state!r} (allowed: {', '.join(kind.allowed_events(state)) or 'none'})"


def _wait_problem(kind: Kind, state: str, wait: Wait) -> str | None:
    problem = _event_problem(kind, state, wait.event)
    if problem is not None:
        return f"event {wait.event!r} {problem}"
    target = kind.state(kind.target(state, wait.event))
    if target.role is not Role.WAIT:
        return f"event {wait.event!r} leads to {target.name!r}, a {target.role.value} state, not a wait state"
    if not wait.keys:
        return "it awaits no keys"
    for rule, event in (("on_done", wait.on_done), ("on_failed", wait.on_failed), ("on_retry", wait.on_retry)):
        if event is not None and not kind.allows(target.name, event):
            return f"{rule} event {event!r} does not leave {target.name!r}"
    return None
