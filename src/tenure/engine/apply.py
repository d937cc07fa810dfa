"""A step's attempt, ended: what the step returned or raised, written as fenced writes on its claim.

:func:`call_step` reads the step's return value, or the exception it raised, as an
:class:`~tenure.engine.outcome.Outcome`. :class:`OutcomeWriter` writes that outcome through the
claim: an event fired (``Advance``), a wait opened (``Wait``), a later attempt scheduled within the
state's backoff (``RetryLater``), or the failure event (``Fail``, and a retry whose budget is
spent). An outcome the kind cannot take (an event the state does not allow, a wait that leads
nowhere) is the step's failure, never a write of something invalid. Every write holds only while
the claim does: a worker that lost its claim has its write refused with
:class:`~tenure.errors.ClaimLost`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tenure.engine.logs import about, log
from tenure.engine.outcome import Advance, Fail, Fatal, Outcome, Reconcile, Retryable, RetryLater, Wait
from tenure.engine.stats import WorkerStats
from tenure.engine.steps import Registered, StepContext
from tenure.errors import TransitionNotAllowed
from tenure.machine import Kind, Role, State
from tenure.rules import error_text, printable
from tenure.store.claims import WaitPlan
from tenure.store.inbox import token_hash
from tenure.store.model import Resource
from tenure.store.protocol import EngineStore

__all__ = ["MAX_RETRY_DELAY", "OutcomeWriter", "call_step", "describe"]

_OUTCOMES = (Advance, Wait, RetryLater, Fail, Reconcile)

#: The longest explicit delay a step may ask for before its next attempt.
MAX_RETRY_DELAY = timedelta(days=30)


def call_step(reg: Registered, ctx: StepContext) -> Outcome:
    """Run the step of the claimed resource; what it raised, or a wrong return value, as an outcome.

    An exception is a retry when the step's registration says so (``retry_on`` and not
    ``fatal_on``), a failure otherwise; :class:`~tenure.engine.outcome.Fatal` and
    :class:`~tenure.engine.outcome.Retryable` say which themselves.
    """
    r = ctx.claim.resource
    try:
        outcome = reg.step(r, ctx)
    except Fatal as exc:
        return Fail(describe(exc))
    except Retryable as exc:
        return RetryLater(describe(exc), exc.delay)
    except Exception as exc:
        if isinstance(exc, reg.fatal_on) or not isinstance(exc, reg.retry_on):
            return Fail(describe(exc))
        log.info("step %s of %s raised %s", reg.name, r.id, describe(exc), extra=about(r))
        return RetryLater(describe(exc))
    if not isinstance(outcome, _OUTCOMES):
        expected = "Advance, Wait, RetryLater, Fail (or, in a rest state, Reconcile)"
        return Fail(f"step {reg.name} returned {outcome!r}; a step returns {expected}")
    return outcome


def describe(exc: BaseException) -> str:
    """``exc`` as one printable line: its type, and its message if it has one."""
    text = printable(str(exc).strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class OutcomeWriter:
    """Writes the outcomes of a worker's steps to ``store``, as ``worker``, counting them in ``stats``.

    ``rand`` draws the jitter of backoff delays (a number in [0, 1)). ``hold`` says, for a kind and
    the state an event leads to, how long the worker keeps its claim into that state to run the
    next step at once (None: it lets the claim go with the write).
    """

    def __init__(
        self,
        store: EngineStore,
        stats: WorkerStats,
        *,
        worker: str,
        rand: Callable[[], float],
        hold: Callable[[Kind, str], timedelta | None] = lambda kind, state: None,
    ) -> None:
        self.store = store
        self.stats = stats
        self.worker = worker
        self._rand = rand
        self._hold = hold

    def apply(
        self, reg: Registered, state: State, ctx: StepContext, outcome: Outcome, *, chain: bool = False
    ) -> Resource | None:
        """Write ``outcome`` of the step ``reg`` in ``state`` through the claim of ``ctx``.

        With ``chain``, an event into a state whose step this worker runs keeps the claim (see
        ``hold``). Returns the resource as written by an event (carrying the claim token if it kept
        the claim), None for a retry scheduled or a wish given up.

        Raises :class:`~tenure.errors.ClaimLost` when the claim no longer holds, and
        :class:`~tenure.errors.InvalidSpec` or :class:`~tenure.errors.InvalidArgument` when the
        outcome's data cannot be stored.
        """
        claim, r, store = ctx.claim, ctx.claim.resource, self.store
        detail = {"step": reg.name, "attempt": ctx.attempt, "worker": self.worker}
        kind = reg.kind
        if isinstance(outcome, Reconcile):  # the worker acts on it for rest states; elsewhere it is a bug
            outcome = Fail(f"step {reg.name} answered Reconcile in {state.role.value} state {r.state!r}")
        if isinstance(outcome, Advance):
            problem = _event_problem(kind, r.state, outcome.event)
            if problem is None:
                try:
                    after = store.fire_claimed(
                        claim,
                        outcome.event,
                        data=outcome.data,
                        actor=self.worker,
                        detail={**detail, **outcome.detail},
                        hold=self._held(kind, r.state, outcome.event, chain),
                    )
                    self.stats.advanced += 1
                    return after
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
                        claim, outcome.event, data=outcome.data, actor=self.worker, detail=waiting, wait=plan
                    )
                    self.stats.waited += 1
                    return None
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
                    actor=self.worker,
                )
                self.stats.retried += 1
                return None
            outcome = Fail(f"gave up after {failed} attempts: {outcome.error}", data=outcome.data)
        return self._fail(reg, state, ctx, outcome, detail, chain=chain)

    def _held(self, kind: Kind, state: str, event: str, chain: bool) -> timedelta | None:
        """How long a write firing ``event`` from ``state`` keeps the claim (None: it lets it go)."""
        return self._hold(kind, kind.target(state, event)) if chain else None

    def _fail(
        self, reg: Registered, state: State, ctx: StepContext, outcome: Fail, detail: dict[str, Any], *, chain: bool
    ) -> Resource | None:
        """Write a step's failure for good: its event (or the state's own), or, at rest, the wish given up."""
        claim, r, store, kind = ctx.claim, ctx.claim.resource, self.store, reg.kind
        if state.role is Role.REST and outcome.event is None:
            # A rest state's step only ever serves a wish to leave: when it fails for good, the wish
            # is given up (recorded, the generation observed) and the resource stays where it rests.
            error = f"desired state {r.desired_state!r} not reached: step {reg.name} failed: {outcome.error}"
            store.give_up_desired(claim, error=error_text(error), actor=self.worker)
            self.stats.failed += 1
            return None
        event = outcome.event or state.on_failure
        assert state.on_failure is not None, "steps of work states are registered only with an on_failure"
        assert event is not None
        problem = _event_problem(kind, r.state, event)
        if problem is not None:
            outcome, event = Fail(f"{outcome.error} (and its failure event {event!r}: {problem})"), state.on_failure
        error = error_text(outcome.error)
        try:
            after = store.fire_claimed(
                claim,
                event,
                data=outcome.data,
                error=error,
                actor=self.worker,
                detail=detail,
                hold=self._held(kind, r.state, event, chain),
            )
        except TransitionNotAllowed as exc:
            if event == state.on_failure:
                raise  # kind validation keeps the state's own failure event unguarded
            # A guard refused the step's chosen failure event: the state's own one always goes.
            error = error_text(f"{outcome.error} (and its failure event {event!r}: {exc.reason or exc})")
            after = store.fire_claimed(
                claim,
                state.on_failure,
                data=outcome.data,
                error=error,
                actor=self.worker,
                detail=detail,
                hold=self._held(kind, r.state, state.on_failure, chain),
            )
        self.stats.failed += 1
        return after

    def record_engine_error(self, reg: Registered | None, ctx: StepContext, exc: Exception) -> None:
        """Count a bug in the engine while it ran the claimed step ``reg`` as a failed attempt.

        So the resource backs off and ends in its failure event instead of looping. When not even
        that can be written, it comes back after the longest backoff, or is released at the least.
        """
        r = ctx.claim.resource
        error = f"engine error: {describe(exc)}"
        state = reg.kind.state(r.state) if reg is not None else None
        try:
            if reg is not None and state is not None:
                self.apply(reg, state, ctx, RetryLater(error))
                return
        except Exception:
            log.exception("worker %s: could not record the engine error on %s", self.worker, r.id, extra=about(r))
        # Not even the failure could be recorded: come back after the longest backoff, not at once.
        cap = state.backoff.cap if state is not None else timedelta(minutes=5)
        try:
            self.store.retry_later(
                ctx.claim,
                error=error_text(error),
                at=self.store.now() + cap,
                attempts=r.attempts + 1,
                actor=self.worker,
            )
        except Exception:
            with contextlib.suppress(Exception):
                self.store.release(ctx.claim)


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
