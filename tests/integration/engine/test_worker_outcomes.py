"""What a step's outcome does to its resource, applied by a worker on both stores.

Each test runs one step through ``worker.tick()`` with the fake clock, then reads the row, the journal
and the wait the write opened.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from tenure import (
    Advance,
    Backoff,
    Event,
    Fail,
    InvalidSteps,
    Kind,
    Resource,
    RetryLater,
    Role,
    State,
    StepContext,
    Steps,
    Wait,
    Worker,
)
from tenure.engine.outcome import Outcome
from tenure.store.inbox import WaitRow, token_hash
from tenure.store.protocol import EngineStore, StepStore
from tests.store_support import FakeClock

WAIT_FOR = timedelta(minutes=10)

chore = Kind(
    "chore",
    initial="todo",
    states=[
        State("todo", 1, Role.WORK, on_failure="fail", retry=Backoff(max_attempts=3, jitter=0)),
        State("awaiting", 2, Role.WAIT, deadline=WAIT_FOR, on_deadline="expire"),
        State("held", 3, Role.REST),
        State("done", 10, Role.FINAL),
        State("failed", 11, Role.FINAL),
        State("rejected", 12, Role.FINAL),
        State("expired", 13, Role.FINAL),
    ],
    events=[
        Event("finish", "todo", "done"),
        Event("fail", "todo", "failed"),
        Event("reject", "todo", "rejected"),
        Event("ask", "todo", "awaiting"),
        Event("hold", "todo", "held"),
        Event("answered", "awaiting", "done"),
        Event("refused", "awaiting", "failed"),
        Event("expire", "awaiting", "expired"),
        Event("release", "held", "done"),
    ],
)

StepFn = Callable[[Resource, StepContext], Any]

#: What a step may return, as the refusal of anything else names it.
EXPECTED_OUTCOMES = "Advance, Wait, RetryLater, Fail (or, in a rest state, Reconcile)"


def worker_for(store: EngineStore, step: StepFn, *, name: str = "w-1") -> Worker:
    steps = Steps()
    steps.add(chore, "todo", step)
    return Worker(store, steps, name=name, rand=lambda: 1.0)


def returning(outcome: object, name: str = "do_it") -> StepFn:
    def step(resource: Resource, ctx: StepContext) -> Any:
        return outcome

    step.__name__ = name
    return step


def events(store: EngineStore, resource_id: str) -> list[str]:
    return [e.event for e in store.journal(resource_id)]


# --- advance -------------------------------------------------------------------------------------


def test_advance_fires_its_event_merging_data_and_journals_step_attempt_and_worker(
    store: EngineStore, clock: FakeClock
) -> None:
    worker = worker_for(store, returning(Advance("finish", {"answer": 42}, {"note": "quick"})))
    r = store.create("chore", {"size": 1}, data={"keep": "me"})

    assert worker.tick() == 1

    after = store.get(r.id)
    assert (after.state, after.version, after.error, after.attempts) == ("done", 2, None, 0)
    assert dict(after.data) == {"keep": "me", "answer": 42}
    assert (after.claim_token, after.claimed_by, after.claim_expires_at) == (None, None, None)
    assert after.next_attempt_at is None
    last = store.journal(r.id)[-1]
    assert (last.version, last.event, last.from_state, last.to_state, last.actor) == (
        2,
        "finish",
        "todo",
        "done",
        "w-1",
    )
    assert dict(last.detail) == {"step": "do_it", "attempt": 1, "worker": "w-1", "note": "quick"}
    assert last.at == clock.now
    assert worker.stats.advanced == 1
    assert worker.tick() == 0, "a resource that left its work state is not claimed again"


def test_the_step_sees_the_claimed_resource_and_a_fresh_context(store: EngineStore) -> None:
    seen: list[tuple[str, int, str, str, int, str]] = []

    def look(resource: Resource, ctx: StepContext) -> Outcome:
        assert ctx.claim.resource == resource
        assert not ctx.lost.is_set()
        assert not ctx.token_issued, "a token is made only when the step asks for it"
        token = ctx.token
        assert ctx.token_issued
        assert ctx.token == token, "one token per attempt, however often it is read"
        assert isinstance(ctx.store, StepStore)
        for beyond in ("fire", "fire_claimed", "claim", "set_desired_state", "retry_later", "mark_settled"):
            assert not hasattr(ctx.store, beyond), f"step code must not reach store.{beyond}"
        seen.append((resource.id, resource.version, ctx.worker, token, ctx.attempt, ctx.idempotency_key))
        return Advance("finish")

    worker = worker_for(store, look, name="looker")
    first, second = store.create("chore"), store.create("chore")

    assert worker.tick() == 2

    by_id = {s[0]: s for s in seen}
    assert set(by_id) == {first.id, second.id}
    for rid in (first.id, second.id):
        _, version, name, token, attempt, key = by_id[rid]
        assert (version, name, attempt, key) == (1, "looker", 1, f"{rid}@1")
        assert len(token) >= 32
    assert by_id[first.id][3] != by_id[second.id][3], "every attempt gets its own token"


def test_reading_the_token_opens_a_provisional_wait_and_not_reading_it_opens_none(store: EngineStore) -> None:
    tokens: list[str] = []
    provisional: list[object] = []

    def reads(resource: Resource, ctx: StepContext) -> Outcome:
        tokens.append(ctx.token)
        provisional.append(store.wait(token_hash(ctx.token)))
        return Advance("finish")

    def ignores(resource: Resource, ctx: StepContext) -> Outcome:
        provisional.append(store.current_wait(resource.id, resource.version))
        return Advance("finish")

    reading, ignoring = worker_for(store, reads), worker_for(store, ignores)
    reader = store.create("chore")
    reading.tick()
    (token,) = tokens
    (wait,) = provisional
    assert isinstance(wait, WaitRow)
    assert (wait.resource_id, wait.version, wait.state, wait.keys, wait.deadline) == (reader.id, 1, "todo", (), None)
    assert wait.provisional
    assert store.get(reader.id).state == "done"
    assert store.wait(token_hash(token)) == wait, "the step advanced: the provisional wait was never completed"
    assert store.current_wait(reader.id, 2) is None

    provisional.clear()
    ignorer = store.create("chore")
    ignoring.tick()
    assert provisional == [None]
    assert store.current_wait(ignorer.id, 1) is None
    assert store.get(ignorer.id).state == "done"


# --- wait ----------------------------------------------------------------------------------------


def test_wait_enters_the_wait_state_and_opens_a_wait_for_the_steps_token(store: EngineStore, clock: FakeClock) -> None:
    tokens: list[str] = []

    def hand_out(resource: Resource, ctx: StepContext) -> Outcome:
        tokens.append(ctx.token)
        return Wait(
            "ask",
            ["left", "right"],
            on_done="answered",
            on_failed="refused",
            data_key="answers",
            data={"asked": True},
            detail={"via": "test"},
        )

    worker = worker_for(store, hand_out)
    r = store.create("chore")

    assert worker.tick() == 1

    after = store.get(r.id)
    assert (after.state, after.version, after.next_attempt_at) == ("awaiting", 2, None)
    assert after.deadline == clock.now + WAIT_FOR
    assert dict(after.data) == {"asked": True}
    (token,) = tokens
    wait = store.wait(token_hash(token))
    assert wait is not None
    assert (wait.resource_id, wait.version, wait.state, wait.keys) == (r.id, 2, "awaiting", ("left", "right"))
    assert not wait.provisional, "entering the wait state completed the wait the token opened"
    assert dict(wait.rules) == {"done": "answered", "failed": "refused", "retry": None, "data_key": "answers"}
    assert wait.deadline == after.deadline
    assert store.current_wait(r.id, 2) == wait
    assert store.wait(token_hash("some other token")) is None
    last = store.journal(r.id)[-1]
    assert (last.event, last.to_state) == ("ask", "awaiting")
    assert dict(last.detail) == {
        "step": "hand_out",
        "attempt": 1,
        "worker": "w-1",
        "via": "test",
        "awaiting": ["left", "right"],
    }
    assert worker.stats.waited == 1
    assert worker.tick() == 0, "a waiting resource is not claimed"


# --- fail ----------------------------------------------------------------------------------------


def test_fail_fires_the_states_failure_event_with_the_error(store: EngineStore) -> None:
    worker = worker_for(store, returning(Fail("the disk is full", data={"disk": "sda"})))
    r = store.create("chore")

    assert worker.tick() == 1

    after = store.get(r.id)
    assert (after.state, after.error, after.attempts) == ("failed", "the disk is full", 0)
    assert dict(after.data) == {"disk": "sda"}
    last = store.journal(r.id)[-1]
    assert (last.event, last.from_state, last.to_state, last.actor) == ("fail", "todo", "failed", "w-1")
    assert dict(last.detail) == {"step": "do_it", "attempt": 1, "worker": "w-1", "error": "the disk is full"}
    assert worker.stats.failed == 1


def test_fail_with_a_named_event_fires_that_event(store: EngineStore) -> None:
    worker = worker_for(store, returning(Fail("not wanted", event="reject")))
    r = store.create("chore")

    worker.tick()

    after = store.get(r.id)
    assert (after.state, after.error) == ("rejected", "not wanted")
    assert events(store, r.id) == ["@create", "reject"]


def test_a_long_error_is_cut_to_4000_characters(store: EngineStore) -> None:
    worker = worker_for(store, returning(Fail("x" * 5000)))
    r = store.create("chore")

    worker.tick()

    assert store.get(r.id).error == "x" * 4000


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        pytest.param(Fail("the disk is full"), "the disk is full", id="fail"),
        pytest.param(None, "step do_it returned None; a step returns " + EXPECTED_OUTCOMES, id="non-outcome"),
        pytest.param(Fail("x" * 5000), "x" * 4000, id="cut-like-the-row"),
    ],
)
def test_the_failure_is_journaled_with_its_error(store: EngineStore, outcome: object, error: str) -> None:
    """The row's error is cleared by the next write; the journal keeps it, exactly as the row had it."""
    worker = worker_for(store, returning(outcome))
    r = store.create("chore")

    worker.tick()

    after = store.get(r.id)
    assert after.error == error
    last = store.journal(r.id)[-1]
    assert (last.event, last.version) == ("fail", after.version)
    assert dict(last.detail) == {"step": "do_it", "attempt": 1, "worker": "w-1", "error": error}


def test_only_failures_journal_an_error(store: EngineStore) -> None:
    worker = worker_for(store, returning(Advance("finish", detail={"note": "fine"})))
    r = store.create("chore")

    worker.tick()

    assert [("error" in e.detail) for e in store.journal(r.id)] == [False, False]


# --- outcomes the worker refuses -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "problem"),
    [
        pytest.param(None, "step do_it returned None; a step returns " + EXPECTED_OUTCOMES, id="none"),
        pytest.param("finish", "step do_it returned 'finish'; a step returns", id="a-string"),
        pytest.param(
            Advance("no_such_event"),
            "step do_it asked to fire 'no_such_event': not allowed in state 'todo' "
            "(allowed: finish, fail, reject, ask, hold)",
            id="unknown-event",
        ),
        pytest.param(
            Advance("answered"),
            "step do_it asked to fire 'answered': not allowed in state 'todo'",
            id="event-of-another-state",
        ),
        pytest.param(
            Fail("it broke", event="answered"),
            "it broke (and its failure event 'answered': not allowed in state 'todo'",
            id="failure-event-not-allowed",
        ),
        pytest.param(
            Wait("hold", ["k"], on_done="release", on_failed="release"),
            "step do_it asked to wait: event 'hold' leads to 'held', a rest state, not a wait state",
            id="wait-into-a-rest-state",
        ),
        pytest.param(
            Wait("finish", ["k"], on_done="answered", on_failed="refused"),
            "step do_it asked to wait: event 'finish' leads to 'done', a final state, not a wait state",
            id="wait-into-a-final-state",
        ),
        pytest.param(
            Wait("nowhere", ["k"], on_done="answered", on_failed="refused"),
            "step do_it asked to wait: event 'nowhere' not allowed in state 'todo'",
            id="wait-event-not-allowed",
        ),
        pytest.param(
            Wait("ask", [], on_done="answered", on_failed="refused"),
            "step do_it asked to wait: it awaits no keys",
            id="wait-for-nothing",
        ),
        pytest.param(
            Wait("ask", ["k"], on_done="finish", on_failed="refused"),
            "step do_it asked to wait: on_done event 'finish' does not leave 'awaiting'",
            id="wait-done-event-not-from-the-wait-state",
        ),
        pytest.param(
            Wait("ask", ["k"], on_done="answered", on_failed="refused", on_retry="release"),
            "step do_it asked to wait: on_retry event 'release' does not leave 'awaiting'",
            id="wait-retry-event-not-from-the-wait-state",
        ),
    ],
)
def test_an_outcome_the_kind_cannot_apply_ends_in_the_failure_event_naming_the_problem(
    store: EngineStore, outcome: object, problem: str
) -> None:
    worker = worker_for(store, returning(outcome))
    r = store.create("chore")

    assert worker.tick() == 1

    after = store.get(r.id)
    assert after.state == "failed"
    assert after.error is not None
    assert problem in after.error, after.error
    assert events(store, r.id) == ["@create", "fail"]
    assert store.current_wait(r.id, after.version) is None, "a refused wait opens no wait"
    assert (worker.stats.failed, worker.stats.advanced, worker.stats.waited) == (1, 0, 0)


def _never(subject: object) -> bool:
    """A guard that always refuses."""
    return False


#: ``chore``'s work state with one more way out, ``blocked``, that a guard always refuses.
gated = Kind(
    "gated",
    initial="todo",
    states=[
        State("todo", 1, Role.WORK, on_failure="fail", retry=Backoff(max_attempts=3, jitter=0)),
        State("done", 10, Role.FINAL),
        State("failed", 11, Role.FINAL),
    ],
    events=[
        Event("finish", "todo", "done"),
        Event("blocked", "todo", "done", guard=_never),
        Event("fail", "todo", "failed"),
    ],
)


def test_a_step_whose_event_a_guard_refuses_is_not_rerun_forever(store: EngineStore, clock: FakeClock) -> None:
    calls: list[int] = []

    def step(resource: Resource, ctx: StepContext) -> Outcome:
        calls.append(ctx.attempt)
        return Advance("blocked")

    steps = Steps()
    steps.add(gated, "todo", step)
    worker = Worker(store, steps, name="w-1", rand=lambda: 1.0)
    r = store.create("gated")

    # A step re-run at once, forever, would end in TenureError "still busy after 30 rounds".
    worker.run_until_idle(max_rounds=30)

    assert len(calls) <= 3
    assert store.get(r.id).state != "todo" or store.get(r.id).attempts > 0
    after = store.get(r.id)
    assert (calls, after.state) == ([1], "failed"), "the refusal is the step's failure, not a reason to run again"
    assert after.error is not None
    assert "asked to fire 'blocked'" in after.error, after.error


NOT_JSON = {1, 2}


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param(Advance("finish", {"when": NOT_JSON}), id="advance-data"),
        pytest.param(Advance("finish", detail={"when": NOT_JSON}), id="advance-detail"),
        pytest.param(Fail("broken", data={"when": NOT_JSON}), id="fail-data"),
        pytest.param(
            Wait("ask", ["k"], on_done="answered", on_failed="refused", data={"when": NOT_JSON}), id="wait-data"
        ),
        pytest.param(RetryLater("later", data={"when": NOT_JSON}), id="retry-later-data"),
    ],
)
def test_outcome_data_that_is_not_json_ends_in_the_failure_event(store: EngineStore, outcome: Outcome) -> None:
    worker = worker_for(store, returning(outcome))
    r = store.create("chore", data={"keep": "me"})

    assert worker.tick() == 1

    after = store.get(r.id)
    assert (after.state, after.claim_token, after.claimed_by) == ("failed", None, None)
    assert after.error is not None
    assert after.error.startswith("step do_it ended in an outcome that cannot be stored: "), after.error
    assert "must be JSON-serialisable" in after.error
    assert "{1, 2}" not in after.error, "the error names the problem, not the data"
    assert dict(after.data) == {"keep": "me"}, "none of the outcome's data is stored"
    assert events(store, r.id) == ["@create", "fail"]
    last = store.journal(r.id)[-1]
    assert dict(last.detail) == {"step": "do_it", "attempt": 1, "worker": "w-1", "error": after.error}
    assert store.current_wait(r.id, after.version) is None
    assert (worker.stats.failed, worker.stats.advanced, worker.stats.waited, worker.stats.retried) == (1, 0, 0, 0)
    assert worker.tick() == 0


def test_steps_are_registered_only_for_work_and_rest_states_with_a_failure_event() -> None:
    no_failure = Kind(
        "bare",
        initial="todo",
        states=[State("todo", 1, Role.WORK), State("done", 2, Role.FINAL)],
        events=[Event("finish", "todo", "done")],
    )
    steps = Steps()
    with pytest.raises(InvalidSteps) as caught:
        steps.add(chore, "awaiting", returning(Advance("answered")))
    assert caught.value.problems == ("chore/awaiting is a wait state; steps run only in work and rest states",)
    with pytest.raises(InvalidSteps, match="declares no on_failure event"):
        steps.add(no_failure, "todo", returning(Advance("finish")))
    with pytest.raises(InvalidSteps, match="has no state 'nope'"):
        steps.add(chore, "nope", returning(Advance("finish")))
    steps.add(chore, "todo", returning(Advance("finish"), "first"))
    with pytest.raises(InvalidSteps, match="already runs step first"):
        steps.add(chore, "todo", returning(Advance("finish"), "second"))
    assert steps.due() == [("chore", "todo")]
