"""Retries: failed attempts are journaled, scheduled by the state's backoff, and limited exactly.

The fake clock and a fixed ``rand`` make every delay exact; ``worker.tick()`` runs what is due now and
``clock.advance`` moves time, so the schedule is checked to the microsecond without waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import pytest

from tenure import (
    Advance,
    Backoff,
    Event,
    Fail,
    Fatal,
    Kind,
    Resource,
    Retryable,
    RetryLater,
    Role,
    State,
    StepContext,
    Steps,
    Worker,
)
from tenure.engine.outcome import Outcome
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock

MICRO = timedelta(microseconds=1)


def flaky_kind(policy: Backoff) -> Kind:
    return Kind(
        "flaky",
        initial="todo",
        states=[
            State("todo", 1, Role.WORK, on_failure="give_up", retry=policy),
            State("done", 2, Role.FINAL),
            State("failed", 3, Role.FINAL),
        ],
        events=[Event("finish", "todo", "done"), Event("give_up", "todo", "failed")],
    )


@dataclass
class Call:
    attempt: int
    version: int
    attempts_on_row: int
    idempotency_key: str


class Script:
    """A step that plays its ``plan`` in order (raising exceptions, returning outcomes), then ``then``."""

    def __init__(
        self, plan: Sequence[BaseException | Outcome] = (), then: BaseException | Outcome | None = None
    ) -> None:
        self.plan = list(plan)
        self.then: BaseException | Outcome = Advance("finish") if then is None else then
        self.calls: list[Call] = []
        self.__name__ = "flaky_step"

    def __call__(self, resource: Resource, ctx: StepContext) -> Outcome:
        self.calls.append(Call(ctx.attempt, resource.version, resource.attempts, ctx.idempotency_key))
        n = len(self.calls)
        todo = self.plan[n - 1] if n <= len(self.plan) else self.then
        if isinstance(todo, BaseException):
            raise todo
        return todo


def failing(n: int) -> list[BaseException | Outcome]:
    return [RuntimeError(f"flaky {i}") for i in range(1, n + 1)]


def make_worker(
    store: EngineStore,
    kind: Kind,
    step: Script,
    *,
    rand: float = 1.0,
    retry_on: Sequence[type[BaseException]] = (Exception,),
    fatal_on: Sequence[type[BaseException]] = (),
) -> Worker:
    steps = Steps()
    steps.add(kind, "todo", step, retry_on=retry_on, fatal_on=fatal_on)
    return Worker(store, steps, name="retrier", rand=lambda: rand)


def events(store: EngineStore, resource_id: str) -> list[str]:
    return [e.event for e in store.journal(resource_id)]


def drive_to_the_end(
    worker: Worker, store: EngineStore, clock: FakeClock, resource_id: str, *, limit: int = 50
) -> None:
    """Tick, and jump the clock to the next attempt, until the resource leaves ``todo``."""
    for _ in range(limit):
        worker.tick()
        r = store.get(resource_id)
        if r.state != "todo":
            return
        assert r.next_attempt_at is not None
        clock.now = max(clock.now, r.next_attempt_at)
    pytest.fail(f"{resource_id} still in todo after {limit} ticks")


# --- the schedule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rand", "delays"),
    [
        pytest.param(1.0, [2.0, 4.0, 5.0, 5.0], id="no-jitter-taken"),
        pytest.param(0.0, [1.0, 2.0, 2.5, 2.5], id="full-jitter-taken"),
    ],
)
def test_a_raising_step_is_retried_on_a_growing_capped_backoff_then_succeeds(
    store: EngineStore, clock: FakeClock, rand: float, delays: list[float]
) -> None:
    kind = flaky_kind(Backoff(max_attempts=6, base=timedelta(seconds=2), cap=timedelta(seconds=5), jitter=0.5))
    step = Script(failing(4))
    worker = make_worker(store, kind, step, rand=rand)
    r = store.create("flaky")
    expected_retries: list[tuple[int, str, str]] = []

    for failed, seconds in enumerate(delays, start=1):
        assert worker.tick() == 1
        now = clock.now
        delay = timedelta(seconds=seconds)
        after = store.get(r.id)
        assert (after.state, after.attempts, after.error) == ("todo", failed, f"RuntimeError: flaky {failed}")
        assert after.next_attempt_at == now + delay
        assert after.claim_token is None
        expected_retries.append((failed, f"RuntimeError: flaky {failed}", (now + delay).isoformat()))
        assert worker.tick() == 0, "not due before its time"
        clock.advance(delay - MICRO)
        assert worker.tick() == 0, "not due a microsecond early"
        clock.advance(MICRO)

    assert worker.tick() == 1
    final = store.get(r.id)
    assert (final.state, final.attempts, final.error) == ("done", 0, None)

    journal = store.journal(r.id)
    assert [e.event for e in journal] == ["@create", "@retry", "@retry", "@retry", "@retry", "finish"]
    retries = [e for e in journal if e.event == "@retry"]
    assert [(e.from_state, e.to_state, e.actor) for e in retries] == [("todo", "todo", "retrier")] * 4
    assert [(e.detail["attempt"], e.detail["error"], e.detail["next_attempt_at"]) for e in retries] == (
        expected_retries
    )
    assert [e.version for e in journal] == [1, 2, 3, 4, 5, 6]
    assert journal[-1].detail["attempt"] == 5

    assert [c.attempt for c in step.calls] == [1, 2, 3, 4, 5]
    assert [c.attempts_on_row for c in step.calls] == [0, 1, 2, 3, 4]
    assert {c.idempotency_key for c in step.calls} == {f"{r.id}@1"}, "one key for every attempt of one stay"
    assert (worker.stats.retried, worker.stats.advanced, worker.stats.failed) == (4, 1, 0)


@pytest.mark.parametrize("max_attempts", [1, 2, 4])
def test_the_limit_is_exactly_max_attempts_runs_then_the_failure_event(
    store: EngineStore, clock: FakeClock, max_attempts: int
) -> None:
    kind = flaky_kind(Backoff(max_attempts=max_attempts, base=timedelta(seconds=1), jitter=0))
    step = Script(then=RuntimeError("still broken"))
    worker = make_worker(store, kind, step)
    r = store.create("flaky")

    drive_to_the_end(worker, store, clock, r.id)

    after = store.get(r.id)
    assert after.state == "failed"
    assert after.error == f"gave up after {max_attempts} attempts: RuntimeError: still broken"
    assert len(step.calls) == max_attempts
    journal = store.journal(r.id)
    assert [e.event for e in journal] == ["@create", *["@retry"] * (max_attempts - 1), "give_up"]
    assert dict(journal[-1].detail) == {
        "step": "flaky_step",
        "attempt": max_attempts,
        "worker": "retrier",
        "error": f"gave up after {max_attempts} attempts: RuntimeError: still broken",
    }
    assert (worker.stats.retried, worker.stats.failed) == (max_attempts - 1, 1)
    clock.advance(timedelta(days=1))
    assert worker.tick() == 0
    assert len(step.calls) == max_attempts


def test_without_delay_the_retries_run_back_to_back_until_idle(store: EngineStore) -> None:
    kind = flaky_kind(Backoff(max_attempts=4, base=timedelta(0), cap=timedelta(0)))
    step = Script(then=ConnectionError("refused"))
    worker = make_worker(store, kind, step)
    r = store.create("flaky")

    assert worker.run_until_idle() == 4

    after = store.get(r.id)
    assert (after.state, after.error) == ("failed", "gave up after 4 attempts: ConnectionError: refused")
    assert events(store, r.id) == ["@create", "@retry", "@retry", "@retry", "give_up"]


def test_a_success_after_retries_resets_attempts_and_the_error(store: EngineStore, clock: FakeClock) -> None:
    kind = flaky_kind(Backoff(max_attempts=3, base=timedelta(seconds=1), jitter=0))
    step = Script([RuntimeError("once"), RuntimeError("twice")], then=Advance("finish", {"ok": True}))
    worker = make_worker(store, kind, step)
    r = store.create("flaky")

    drive_to_the_end(worker, store, clock, r.id)

    after = store.get(r.id)
    assert (after.state, after.attempts, after.error, dict(after.data)) == ("done", 0, None, {"ok": True})
    assert len(step.calls) == 3, "the last allowed attempt may still succeed"


# --- what is retried and what fails at once ------------------------------------------------------


class Permanent(Exception):
    pass


@pytest.mark.parametrize(
    ("raised", "retry_on", "fatal_on", "error"),
    [
        pytest.param(Fatal("disk on fire"), (Exception,), (), "Fatal: disk on fire", id="Fatal"),
        pytest.param(Fatal(), (Exception,), (), "Fatal", id="Fatal-without-message"),
        pytest.param(Permanent("bad input"), (Exception,), (Permanent,), "Permanent: bad input", id="fatal_on"),
        pytest.param(KeyError("x"), (Exception,), (LookupError,), "KeyError: 'x'", id="fatal_on-a-base-class"),
        pytest.param(ValueError("nope"), (ConnectionError,), (), "ValueError: nope", id="not-in-retry_on"),
        pytest.param(Permanent("both"), (Exception,), (Permanent,), "Permanent: both", id="fatal-wins-over-retry"),
        pytest.param(Fatal("told so"), (Fatal,), (), "Fatal: told so", id="Fatal-even-if-retry_on-names-it"),
    ],
)
def test_fatal_errors_fail_at_once_without_a_retry(
    store: EngineStore,
    raised: BaseException,
    retry_on: tuple[type[BaseException], ...],
    fatal_on: tuple[type[BaseException], ...],
    error: str,
) -> None:
    kind = flaky_kind(Backoff(max_attempts=5, jitter=0))
    step = Script(then=raised)
    worker = make_worker(store, kind, step, retry_on=retry_on, fatal_on=fatal_on)
    r = store.create("flaky")

    assert worker.tick() == 1

    after = store.get(r.id)
    assert (after.state, after.error) == ("failed", error)
    assert events(store, r.id) == ["@create", "give_up"]
    assert len(step.calls) == 1
    assert worker.stats.retried == 0


def test_an_error_named_in_retry_on_is_retried(store: EngineStore) -> None:
    kind = flaky_kind(Backoff(max_attempts=5, jitter=0))
    step = Script(then=ConnectionResetError("reset"))
    worker = make_worker(store, kind, step, retry_on=(ConnectionError,))
    r = store.create("flaky")

    worker.tick()

    after = store.get(r.id)
    assert (after.state, after.attempts, after.error) == ("todo", 1, "ConnectionResetError: reset")


def test_retryable_delay_overrides_the_backoff(store: EngineStore, clock: FakeClock) -> None:
    kind = flaky_kind(Backoff(max_attempts=3, base=timedelta(seconds=1), jitter=0))
    step = Script([Retryable("rate limited", delay=timedelta(seconds=42)), Retryable("again")])
    worker = make_worker(store, kind, step)
    r = store.create("flaky")

    worker.tick()
    after = store.get(r.id)
    assert (after.attempts, after.error) == (1, "Retryable: rate limited")
    assert after.next_attempt_at == clock.now + timedelta(seconds=42)
    assert store.journal(r.id)[-1].detail["next_attempt_at"] == (clock.now + timedelta(seconds=42)).isoformat()

    clock.advance(timedelta(seconds=42))
    worker.tick()
    after = store.get(r.id)
    assert (after.attempts, after.error) == (2, "Retryable: again")
    assert after.next_attempt_at == clock.now + timedelta(seconds=2), "no delay given: the backoff's"

    clock.advance(timedelta(seconds=2))
    worker.tick()
    assert store.get(r.id).state == "done"


def test_retry_later_keeps_its_data_and_counts_against_the_limit(store: EngineStore, clock: FakeClock) -> None:
    kind = flaky_kind(Backoff(max_attempts=2, base=timedelta(seconds=1), jitter=0))
    step = Script(
        [
            RetryLater("half done", delay=timedelta(seconds=7), data={"progress": 50}),
            RetryLater("nearly", data={"progress": 90}),
        ]
    )
    worker = make_worker(store, kind, step)
    r = store.create("flaky", data={"name": "x"})

    worker.tick()
    after = store.get(r.id)
    assert (after.error, after.attempts, dict(after.data)) == ("half done", 1, {"name": "x", "progress": 50})
    assert after.next_attempt_at == clock.now + timedelta(seconds=7)

    clock.advance(timedelta(seconds=7))
    worker.tick()
    after = store.get(r.id)
    assert (after.state, after.error) == ("failed", "gave up after 2 attempts: nearly")
    assert dict(after.data) == {"name": "x", "progress": 90}, "the last attempt's data is kept with the failure"


def test_a_returned_fail_is_not_retried(store: EngineStore) -> None:
    kind = flaky_kind(Backoff(max_attempts=5))
    step = Script(then=Fail("no point"))
    worker = make_worker(store, kind, step)
    r = store.create("flaky")

    worker.tick()

    assert (store.get(r.id).state, len(step.calls)) == ("failed", 1)


#: Three attempts, one second apart at first; no jitter.
LIMIT = Backoff(max_attempts=3, base=timedelta(seconds=1), cap=timedelta(seconds=10), jitter=0)
LEASE = timedelta(seconds=30)


def test_an_oversized_retry_delay_does_not_loop(store: EngineStore, clock: FakeClock) -> None:
    step = Script(then=Retryable("come back much later", delay=timedelta.max))
    worker = make_worker(store, flaky_kind(LIMIT), step)
    store.create("flaky")

    # A retry due at once, forever, would end in TenureError "still busy after 30 rounds".
    worker.run_until_idle(max_rounds=30)

    assert len(step.calls) == 1


# --- attempts the step never finished ------------------------------------------------------------


def test_takeovers_count_against_the_retry_budget(store: EngineStore, clock: FakeClock) -> None:
    """A step that kills every worker that runs it: each holder claims the resource and dies without
    writing anything; once its lease is over the next worker takes the claim over. Each takeover counts
    the dead holder's attempt, so when the budget is spent the next taker gives up instead of running
    the step again, and a resource with one death fewer still gets its last attempt."""
    step = Script()  # the step a live worker would run: it finishes
    worker = make_worker(store, flaky_kind(LIMIT), step)
    seen: dict[str, list[tuple[bool, int]]] = {}

    def claim_and_die(n: int) -> None:
        # A worker claims whatever is due (the resources whose holder died), then dies itself.
        for claim in store.claim(f"doomed-{n}", [("flaky", "todo")], limit=10, lease=LEASE):
            seen.setdefault(claim.resource.id, []).append((claim.takeover, claim.resource.attempts))
        clock.advance(LEASE + timedelta(seconds=1))  # the holder died: its claim expires

    doomed = store.create("flaky")
    claim_and_die(0)
    spared = store.create("flaky")  # dies once less than `doomed`
    for n in range(1, LIMIT.max_attempts):
        claim_and_die(n)

    # Claimed fresh once, then taken over: every takeover counted the attempt its holder died in.
    assert seen == {
        doomed.id: [(False, 0), (True, 1), (True, 2)],
        spared.id: [(False, 0), (True, 1)],
    }

    worker.run_until_idle()

    gave_up = store.get(doomed.id)
    assert gave_up.state == "failed"
    assert gave_up.error == (
        f"gave up after {LIMIT.max_attempts} attempts: every worker that ran it died or stalled past its lease"
    )
    assert events(store, doomed.id) == ["@create", "give_up"]
    # The step ran once, for `spared`'s last attempt; never again for `doomed`, whose budget was spent.
    assert [(c.attempt, c.attempts_on_row) for c in step.calls] == [(LIMIT.max_attempts, LIMIT.max_attempts - 1)]
    assert (store.get(spared.id).state, events(store, spared.id)) == ("done", ["@create", "finish"])
    assert (worker.stats.failed, worker.stats.advanced) == (1, 1)


def test_an_engine_error_backs_off_and_ends_in_the_failure_event(store: EngineStore, clock: FakeClock) -> None:
    worker = make_worker(store, flaky_kind(LIMIT), Script())
    r = store.create("flaky")
    real = store.fire_claimed

    def fire_claimed(claim: object, event: str, **kwargs: object) -> Resource:
        if event == "finish":
            raise RuntimeError("a bug between the step and its write")
        return real(claim, event, **kwargs)  # type: ignore[arg-type]

    store.fire_claimed = fire_claimed  # type: ignore[method-assign]

    worker.run_until_idle()
    after = store.get(r.id)
    assert (after.state, after.attempts, worker.stats.engine_errors) == ("todo", 1, 1)
    assert after.error is not None
    assert "engine error: RuntimeError: a bug between the step and its write" in after.error
    assert after.next_attempt_at is not None
    assert after.next_attempt_at > clock.now

    for _ in range(LIMIT.max_attempts):
        clock.advance(LIMIT.cap)
        worker.run_until_idle()

    assert store.get(r.id).state == "failed"
    assert worker.stats.engine_errors == LIMIT.max_attempts


# --- the schedule is in the row ------------------------------------------------------------------


def test_the_schedule_survives_a_new_worker_on_a_new_store_object(
    store: EngineStore, clock: FakeClock, open_engine_store: Callable[..., EngineStore]
) -> None:
    kind = flaky_kind(Backoff(max_attempts=3, base=timedelta(seconds=30), jitter=0))
    first = Script(failing(1))
    store.register(kind)
    r = store.create("flaky")
    make_worker(store, kind, first).tick()
    r = store.get(r.id)
    assert (r.attempts, r.next_attempt_at) == (1, clock.now + timedelta(seconds=30))

    again = open_engine_store([kind], clock=clock)
    second = Script()
    worker = make_worker(again, kind, second)
    assert worker.tick() == 0, "the new worker reads the schedule from the row"
    clock.advance(timedelta(seconds=30) - MICRO)
    assert worker.tick() == 0
    clock.advance(MICRO)
    assert worker.tick() == 1

    assert [(c.attempt, c.attempts_on_row, c.idempotency_key) for c in second.calls] == [(2, 1, f"{r.id}@1")]
    assert again.get(r.id).state == "done"
    assert events(again, r.id) == ["@create", "@retry", "finish"]


# --- error text the database cannot keep ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "state", "event", "error"),
    [
        pytest.param(RuntimeError("bad\x00byte"), "todo", "@retry", "RuntimeError: bad\\x00byte", id="retried"),
        pytest.param(Retryable("bad\x00byte"), "todo", "@retry", "Retryable: bad\\x00byte", id="retryable"),
        pytest.param(Fatal("bad\x00byte"), "failed", "give_up", "Fatal: bad\\x00byte", id="fatal"),
        pytest.param(Fail("bad\x00byte"), "failed", "give_up", "bad\\x00byte", id="returned-fail"),
        pytest.param(
            RetryLater("bad\x00byte"),
            "todo",
            "@retry",
            "bad\\x00byte",
            id="returned-retry-later",
        ),
    ],
)
def test_an_error_message_with_nul_is_recorded_escaped(
    store: EngineStore, raised: BaseException | Outcome, state: str, event: str, error: str
) -> None:
    """NUL cannot be stored (PostgreSQL refuses it): it is kept as the four characters \\x00."""
    kind = flaky_kind(Backoff(max_attempts=3))
    worker = make_worker(store, kind, Script(then=raised))
    r = store.create("flaky")

    assert worker.tick() == 1

    after = store.get(r.id)
    assert (after.state, after.error, after.claim_token) == (state, error, None)
    last = store.journal(r.id)[-1]
    assert (last.event, last.detail["error"]) == (event, error)


def test_a_nul_in_the_last_attempts_error_is_escaped_in_the_failure(store: EngineStore) -> None:
    kind = flaky_kind(Backoff(max_attempts=2, base=timedelta(0), cap=timedelta(0)))
    worker = make_worker(store, kind, Script(then=RuntimeError("bad\x00byte")))
    r = store.create("flaky")

    assert worker.run_until_idle() == 2

    after = store.get(r.id)
    assert (after.state, after.error) == ("failed", "gave up after 2 attempts: RuntimeError: bad\\x00byte")
    assert [(e.event, e.detail.get("error")) for e in store.journal(r.id)] == [
        ("@create", None),
        ("@retry", "RuntimeError: bad\\x00byte"),
        ("give_up", "gave up after 2 attempts: RuntimeError: bad\\x00byte"),
    ]
