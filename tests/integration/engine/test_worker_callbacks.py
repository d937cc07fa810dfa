"""Waits and callbacks: the inbox records answers, the worker rolls them up, deadlines end waits.

A step hands out its ``ctx.token`` and waits for keys ``a`` and ``b``; the test plays the external
party with ``store.deliver`` and drives the worker with ``apply_callbacks``, ``sweep_deadlines`` and
``tick``, on the fake clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest

from tenure import (
    Advance,
    Backoff,
    CallbackStatus,
    Delivery,
    Event,
    Fail,
    InvalidArgument,
    Kind,
    Receipt,
    Resource,
    RetryLater,
    Role,
    State,
    StepContext,
    Steps,
    TenureError,
    Wait,
    Worker,
)
from tenure.engine.outcome import Outcome
from tenure.store.inbox import CallbackRow, token_hash
from tenure.store.protocol import EngineStore
from tests.kinds_for_tests import ticket_kind as shared_ticket_kind
from tests.store_support import FakeClock

WAIT_FOR = timedelta(minutes=10)
MICRO = timedelta(microseconds=1)


def ticket_kind(name: str = "ticket") -> Kind:
    return shared_ticket_kind(name, wait_for=WAIT_FOR)


ticket = ticket_kind()


class Asker:
    """The step: hands out its token and waits for ``keys``; blocks on ``gate`` first when given one."""

    def __init__(
        self, keys: Sequence[str] = ("a", "b"), *, on_retry: str | None = "again", gate: threading.Event | None = None
    ) -> None:
        self.keys = list(keys)
        self.on_retry = on_retry
        self.gate = gate
        self.tokens: list[str] = []
        self.keys_used: list[str] = []
        self.handed_out = threading.Event()
        self.__name__ = "asker"

    def __call__(self, resource: Resource, ctx: StepContext) -> Outcome:
        self.tokens.append(ctx.token)
        self.keys_used.append(ctx.idempotency_key)
        self.handed_out.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        return Wait(
            "ask", self.keys, on_done="answered", on_failed="refused", on_retry=self.on_retry, data_key="answers"
        )


def make_worker(store: EngineStore, step: Asker, *, kind: Kind = ticket, name: str = "cb-worker") -> Worker:
    steps = Steps()
    steps.add(kind, "todo", step)
    return Worker(store, steps, name=name, rand=lambda: 1.0)


def waiting(store: EngineStore, step: Asker | None = None) -> tuple[Worker, Asker, Resource, str]:
    """A worker, its step, and a resource waiting in ``awaiting`` for the step's latest token."""
    asker = step or Asker()
    worker = make_worker(store, asker)
    r = store.create("ticket")
    assert worker.tick() == 1
    r = store.get(r.id)
    assert r.state == "awaiting"
    return worker, asker, r, asker.tokens[-1]


def rows(store: EngineStore, token: str) -> list[CallbackRow]:
    return store.callbacks(token_hash(token))


def events(store: EngineStore, resource_id: str) -> list[str]:
    return [e.event for e in store.journal(resource_id)]


#: A work state that asks for one key or finishes at once (``finish``), with a retry limit.
LIMITED = Backoff(max_attempts=3, base=timedelta(seconds=1), cap=timedelta(seconds=10), jitter=0)
LEASE = timedelta(seconds=30)

asking = Kind(
    "asking",
    initial="todo",
    states=[
        State("todo", 1, Role.WORK, on_failure="fail", retry=LIMITED),
        State("awaiting", 2, Role.WAIT, deadline=WAIT_FOR, on_deadline="expire"),
        State("done", 10, Role.FINAL),
        State("failed", 11, Role.FINAL),
        State("expired", 12, Role.FINAL),
    ],
    events=[
        Event("ask", "todo", "awaiting"),
        Event("finish", "todo", "done"),
        Event("answered", "awaiting", "done"),
        Event("refused", "awaiting", "failed"),
        Event("expire", "awaiting", "expired"),
        Event("fail", "todo", "failed"),
    ],
)

AskingStep = Callable[[Resource, StepContext], Outcome]


def asking_worker(store: EngineStore, step: AskingStep, *, batch: int = 100) -> Worker:
    steps = Steps()
    steps.add(asking, "todo", step)
    return Worker(store, steps, name="asking-worker", batch=batch, rand=lambda: 1.0)


class KeyAsker:
    """A step that hands out its token and waits for key ``a``; remembers each resource's token."""

    __name__ = "key_asker"

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}

    def __call__(self, resource: Resource, ctx: StepContext) -> Outcome:
        self.tokens[resource.id] = ctx.token
        return Wait("ask", ["a"], on_done="answered", on_failed="refused")


# --- answers roll up ------------------------------------------------------------------------------


def test_every_key_done_fires_on_done_with_the_answers_under_the_data_key(store: EngineStore, clock: FakeClock) -> None:
    worker, _, r, token = waiting(store)

    first = store.deliver(r.id, token, "a", "done", data={"url": "u-a"})
    second = store.deliver(r.id, token, "b", CallbackStatus.DONE, data={"url": "u-b"})

    assert (first.delivery, second.delivery) == (Delivery.ACCEPTED, Delivery.ACCEPTED)
    assert first.accepted
    assert first.seq is not None
    assert second.seq is not None
    assert store.get(r.id).state == "awaiting", "delivering touches only the inbox"
    assert [cb.seq for cb in store.unsettled(["ticket"])] == [first.seq, second.seq]
    assert store.unsettled(["job"]) == [], "the inbox is read per kind"

    assert worker.apply_callbacks() == 2

    after = store.get(r.id)
    assert (after.state, after.error, after.version) == ("done", None, r.version + 1)
    assert dict(after.data) == {
        "answers": {
            "a": {"status": "done", "data": {"url": "u-a"}, "error": None},
            "b": {"status": "done", "data": {"url": "u-b"}, "error": None},
        }
    }
    last = store.journal(r.id)[-1]
    assert (last.event, last.from_state, last.to_state, last.actor) == ("answered", "awaiting", "done", "cb-worker")
    assert dict(last.detail) == {"callbacks": [first.seq, second.seq]}
    assert [(cb.key, cb.result, cb.applied_at) for cb in rows(store, token)] == [
        ("a", "applied: fired answered", clock.now),
        ("b", "applied: fired answered", clock.now),
    ]
    assert store.unsettled(["ticket"]) == []
    assert worker.stats.callbacks_applied == 2
    assert worker.apply_callbacks() == 0


def test_tick_applies_callbacks_too(store: EngineStore) -> None:
    worker, _, r, token = waiting(store)
    store.deliver(r.id, token, "a", "done")
    store.deliver(r.id, token, "b", "done")

    assert worker.tick() == 2

    assert store.get(r.id).state == "done"


def test_partial_answers_keep_waiting_and_are_settled_as_still_waiting(store: EngineStore) -> None:
    worker, _, r, token = waiting(store)

    store.deliver(r.id, token, "a", "done", data={"n": 1})
    assert worker.apply_callbacks() == 1

    still = store.get(r.id)
    assert (still.state, still.version) == ("awaiting", r.version), "a partial answer writes nothing to the resource"
    assert [(cb.key, cb.result) for cb in rows(store, token)] == [("a", "recorded; still waiting for b")]
    assert store.unsettled(["ticket"]) == []
    assert worker.apply_callbacks() == 0

    store.deliver(r.id, token, "b", "done", data={"n": 2})
    assert worker.apply_callbacks() == 1

    after = store.get(r.id)
    assert after.state == "done"
    assert {k: v["data"] for k, v in after.data["answers"].items()} == {"a": {"n": 1}, "b": {"n": 2}}
    assert [(cb.key, cb.result) for cb in rows(store, token)] == [
        ("a", "recorded; still waiting for b"),
        ("b", "applied: fired answered"),
    ]


def test_a_failed_answer_fires_on_failed_at_once(store: EngineStore) -> None:
    worker, _, r, token = waiting(store)

    store.deliver(r.id, token, "a", "failed", error="quota exceeded")
    assert worker.apply_callbacks() == 1

    after = store.get(r.id)
    assert (after.state, after.error) == ("failed", "a: quota exceeded")
    assert after.data["answers"] == {"a": {"status": "failed", "data": {}, "error": "quota exceeded"}}
    assert events(store, r.id)[-1] == "refused"
    late = store.deliver(r.id, token, "b", "done")
    assert late.delivery is Delivery.REFUSED
    assert "superseded" in late.reason


def test_a_retry_answer_fires_on_retry_and_the_step_runs_again_with_a_new_token(store: EngineStore) -> None:
    worker, asker, r, token = waiting(store)

    store.deliver(r.id, token, "a", "done", data={"made": "bucket"})
    store.deliver(r.id, token, "b", "retry", error="busy")
    assert worker.apply_callbacks() == 2

    back = store.get(r.id)
    assert (back.state, back.error) == ("todo", "b: busy")
    assert back.data["answers"]["a"] == {"status": "done", "data": {"made": "bucket"}, "error": None}
    assert back.data["answers"]["b"]["status"] == "retry"

    assert worker.tick() == 1
    assert len(asker.tokens) == 2
    new_token = asker.tokens[-1]
    assert new_token != token
    assert asker.keys_used[0] != asker.keys_used[1], "a new stay in the work state has a new idempotency key"
    assert store.get(r.id).state == "awaiting"
    assert events(store, r.id) == ["@create", "ask", "again", "ask"]

    assert store.deliver(r.id, token, "b", "done").delivery is Delivery.REFUSED, "the old wait is over"
    assert store.deliver(r.id, new_token, "a", "done").accepted
    assert store.deliver(r.id, new_token, "b", "done").accepted
    worker.apply_callbacks()
    assert store.get(r.id).state == "done"


def test_a_retry_answer_without_a_retry_event_fires_on_failed(store: EngineStore) -> None:
    worker, _, r, token = waiting(store, Asker(on_retry=None))

    store.deliver(r.id, token, "a", "retry", error="busy")
    store.deliver(r.id, token, "b", "done")
    worker.apply_callbacks()

    after = store.get(r.id)
    assert (after.state, after.error) == ("failed", "a: busy")


def test_answers_newer_than_the_batch_are_settled_by_the_decision_they_made(
    store: EngineStore, clock: FakeClock
) -> None:
    tokens: dict[str, str] = {}

    def ask_two(resource: Resource, ctx: StepContext) -> Outcome:
        tokens[resource.id] = ctx.token
        return Wait("ask", ["a", "b"], on_done="answered", on_failed="refused")

    worker = asking_worker(store, ask_two, batch=1)
    r = store.create("asking")
    worker.run_until_idle()
    for key in ("a", "b"):
        assert store.deliver(r.id, tokens[r.id], key, "done").accepted

    assert worker.apply_callbacks() == 2  # the batch held only "a"; "b" decided it too

    assert store.get(r.id).state == "done"
    results = [cb.result for cb in store.callbacks(token_hash(tokens[r.id]))]
    assert results == ["applied: fired answered", "applied: fired answered"]
    assert worker.stats.callbacks_superseded == 0


# --- what the inbox refuses ------------------------------------------------------------------------


def test_a_duplicate_delivery_is_idempotent_and_a_different_answer_is_refused(store: EngineStore) -> None:
    worker, _, r, token = waiting(store)

    first = store.deliver(r.id, token, "a", "done", data={"url": "u"})
    again = store.deliver(r.id, token, "a", "done", data={"url": "u"})
    assert again.delivery is Delivery.DUPLICATE
    assert again.accepted
    assert again.seq == first.seq
    assert again.reason == "already recorded (not applied yet)"
    other = store.deliver(r.id, token, "a", "done", data={"url": "elsewhere"})
    assert other.delivery is Delivery.REFUSED
    assert not other.accepted
    assert other.reason == "a different answer for 'a' was already recorded"
    assert len(rows(store, token)) == 1

    store.deliver(r.id, token, "b", "done")
    worker.apply_callbacks()
    assert store.get(r.id).state == "done"

    after = store.deliver(r.id, token, "a", "done", data={"url": "u"})
    assert after.delivery is Delivery.DUPLICATE
    assert after.reason == "already recorded (applied: applied: fired answered)"
    assert worker.apply_callbacks() == 0
    assert events(store, r.id) == ["@create", "ask", "answered"]


def test_unknown_tokens_keys_and_statuses_are_refused(store: EngineStore) -> None:
    _, _, r, token = waiting(store)
    other = store.create("ticket")

    wrong = store.deliver(r.id, "not-the-token", "a", "done")
    assert (wrong.delivery, wrong.reason) == (Delivery.REFUSED, "unknown correlation token for this resource")
    elsewhere = store.deliver(other.id, token, "a", "done")
    assert (elsewhere.delivery, elsewhere.reason) == (Delivery.REFUSED, "unknown correlation token for this resource")
    unknown_key = store.deliver(r.id, token, "c", "done")
    assert (unknown_key.delivery, unknown_key.reason) == (Delivery.REFUSED, "'c' is not awaited; expected one of a, b")
    with pytest.raises(InvalidArgument, match="status"):
        store.deliver(r.id, token, "a", "maybe")
    assert rows(store, token) == []


def test_a_callback_after_the_resource_moved_on_is_refused_as_superseded(store: EngineStore) -> None:
    _, _, r, token = waiting(store)
    store.fire(r.id, "cancel", actor="client")

    receipt = store.deliver(r.id, token, "a", "done")

    assert receipt.delivery is Delivery.REFUSED
    assert receipt.reason == (
        f"the attempt this token was issued for has been superseded (it waited in state 'awaiting' at version "
        f"{r.version}; the resource is now in state 'cancelled' at version {r.version + 1})"
    )
    assert rows(store, token) == []


def test_a_callback_accepted_before_the_resource_moved_on_is_settled_as_superseded(store: EngineStore) -> None:
    worker, _, r, token = waiting(store)
    store.deliver(r.id, token, "a", "done")
    store.deliver(r.id, token, "b", "done")
    store.fire(r.id, "cancel", actor="client")

    assert worker.apply_callbacks() == 2

    after = store.get(r.id)
    assert (after.state, after.version) == ("cancelled", r.version + 1)
    results = {cb.result for cb in rows(store, token)}
    assert results == {f"superseded: the resource moved on to state 'cancelled' at version {r.version + 1}"}
    assert worker.stats.callbacks_superseded == 2
    assert worker.stats.callbacks_applied == 0
    assert events(store, r.id) == ["@create", "ask", "cancel"]


# --- callbacks and claims -------------------------------------------------------------------------


def test_a_callback_delivered_while_the_step_holds_its_claim_is_accepted_and_applied_later(
    store: EngineStore,
    clock: FakeClock,
    gate: Callable[[], threading.Event],
    in_thread: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    """Reading ``ctx.token`` opens a provisional wait: an answer faster than the step is kept for later."""
    asker = Asker(keys=["a", "b"], gate=gate())
    worker = make_worker(store, asker)
    r = store.create("ticket")
    running = in_thread(worker.tick)
    assert asker.handed_out.wait(10)
    held = store.get(r.id)
    assert (held.state, held.claimed_by) == ("todo", "cb-worker")
    token = asker.tokens[0]

    try:
        receipt = store.deliver(r.id, token, "a", "done", data={"fast": True})
        again = store.deliver(r.id, token, "a", "done", data={"fast": True})
        other = store.deliver(r.id, token, "a", "done", data={"fast": False})
        # The step still runs: nothing is applied or settled yet, however often the inbox is read.
        assert Worker(store, Steps(), name="bystander").apply_callbacks() == 0
        assert [(cb.key, cb.applied_at, cb.result) for cb in rows(store, token)] == [("a", None, None)]
        assert store.get(r.id).version == held.version
    finally:
        assert asker.gate is not None
        asker.gate.set()
        running.join(10)
    assert (receipt.delivery, receipt.reason) == (Delivery.ACCEPTED, "")
    assert receipt.seq is not None
    assert (again.delivery, again.seq) == (Delivery.DUPLICATE, receipt.seq)
    assert (other.delivery, other.reason) == (Delivery.REFUSED, "a different answer for 'a' was already recorded")

    waiting_now = store.get(r.id)
    assert (waiting_now.state, waiting_now.claim_token) == ("awaiting", None)
    wait = store.wait(token_hash(token))
    assert wait is not None
    assert (wait.version, wait.state, wait.keys) == (waiting_now.version, "awaiting", ("a", "b"))
    assert wait.deadline == clock.now + WAIT_FOR
    assert [cb.seq for cb in store.unsettled(["ticket"])] == [receipt.seq]

    assert worker.apply_callbacks() == 1
    assert [(cb.key, cb.result) for cb in rows(store, token)] == [("a", "recorded; still waiting for b")]
    assert store.get(r.id).state == "awaiting"
    assert store.deliver(r.id, token, "c", "done").delivery is Delivery.REFUSED, "the wait now knows its keys"
    assert store.deliver(r.id, token, "b", "done").accepted
    assert worker.apply_callbacks() == 1

    after = store.get(r.id)
    assert after.state == "done"
    assert after.data["answers"]["a"]["data"] == {"fast": True}
    assert events(store, r.id) == ["@create", "ask", "answered"]
    assert worker.stats.callbacks_applied == 1


def test_a_callback_that_alone_completes_the_wait_is_applied_by_the_next_pass(
    store: EngineStore,
    gate: Callable[[], threading.Event],
    in_thread: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    asker = Asker(keys=["a"], gate=gate())
    worker = make_worker(store, asker)
    r = store.create("ticket")
    running = in_thread(worker.tick)
    assert asker.handed_out.wait(10)
    try:
        assert store.deliver(r.id, asker.tokens[0], "a", "failed", error="too fast").accepted
    finally:
        assert asker.gate is not None
        asker.gate.set()
        running.join(10)
    assert store.get(r.id).state == "awaiting"

    assert worker.tick() == 1

    after = store.get(r.id)
    assert (after.state, after.error) == ("failed", "a: too fast")
    assert events(store, r.id) == ["@create", "ask", "refused"]


@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        pytest.param(Fail("changed its mind"), "failed", id="fail"),
        pytest.param(RetryLater("later"), "todo", id="retry-later"),
    ],
)
def test_a_callback_for_a_step_that_ended_without_waiting_is_settled_as_superseded(
    store: EngineStore, outcome: Outcome, state: str
) -> None:
    tokens: list[str] = []
    receipts: list[Receipt] = []

    def hands_out_then_gives_up(resource: Resource, ctx: StepContext) -> Outcome:
        tokens.append(ctx.token)
        receipts.append(store.deliver(resource.id, ctx.token, "a", "done"))
        return outcome

    steps = Steps()
    steps.add(ticket, "todo", hands_out_then_gives_up)
    worker = Worker(store, steps, name="quitter", rand=lambda: 1.0)
    r = store.create("ticket")

    assert worker.tick() == 1

    (receipt,) = receipts
    assert receipt.accepted
    after = store.get(r.id)
    assert (after.state, after.version) == (state, r.version + 1)
    assert worker.apply_callbacks() == 1
    assert [(cb.key, cb.result) for cb in rows(store, tokens[0])] == [
        ("a", f"superseded: the resource moved on to state {state!r} at version {after.version}")
    ]
    assert worker.stats.callbacks_superseded == 1
    late = store.deliver(r.id, tokens[0], "b", "done")
    assert late.delivery is Delivery.REFUSED
    assert "superseded" in late.reason
    assert store.get(r.id).version == after.version


def test_an_early_callback_for_a_key_the_step_then_does_not_await_is_not_reported_as_applied(
    store: EngineStore,
    gate: Callable[[], threading.Event],
    in_thread: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    asker = Asker(keys=["a"], gate=gate())
    worker = make_worker(store, asker)
    r = store.create("ticket")
    running = in_thread(worker.tick)
    assert asker.handed_out.wait(10)
    token = asker.tokens[0]
    try:
        stray = store.deliver(r.id, token, "z", "done")
        store.deliver(r.id, token, "a", "done")
    finally:
        assert asker.gate is not None
        asker.gate.set()
        running.join(10)
    assert stray.accepted, "while provisional, the wait cannot know which keys it will await"

    worker.apply_callbacks()

    assert store.get(r.id).state == "done"
    results = {cb.key: cb.result for cb in rows(store, token)}
    assert results["a"] == "applied: fired answered"
    assert results["z"] is not None
    assert "not awaited" in results["z"], results["z"]


def test_callbacks_are_accepted_whoever_holds_other_resources(
    store: EngineStore,
    gate: Callable[[], threading.Event],
    in_thread: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    """A worker busy with a blocked step does not stop the inbox taking answers for another resource."""
    worker, _, r, token = waiting(store)
    blocked = Asker(gate=gate())
    busy = make_worker(store, blocked, name="busy")
    other = store.create("ticket")
    running = in_thread(busy.tick)
    assert blocked.handed_out.wait(10)
    assert store.get(other.id).claimed_by == "busy"

    assert store.deliver(r.id, token, "a", "done").accepted
    assert store.deliver(r.id, token, "b", "done").accepted
    assert worker.apply_callbacks() == 2
    assert store.get(r.id).state == "done"

    assert blocked.gate is not None
    blocked.gate.set()
    running.join(10)
    assert store.get(other.id).state == "awaiting"


def test_a_worker_leaves_the_callbacks_of_kinds_it_does_not_know_to_the_workers_that_do(
    store: EngineStore, clock: FakeClock, open_engine_store: Callable[..., EngineStore]
) -> None:
    worker, _, r, token = waiting(store)
    stranger_kind = ticket_kind("stranger")
    stranger_store = open_engine_store([stranger_kind], clock=clock)
    stranger = make_worker(stranger_store, Asker(), kind=stranger_kind, name="stranger")
    store.deliver(r.id, token, "a", "done")
    store.deliver(r.id, token, "b", "done")

    stranger.tick()
    worker.tick()

    after = store.get(r.id)
    assert after.state == "done", [cb.result for cb in rows(store, token)]


def test_early_callbacks_of_a_running_step_do_not_starve_other_waits(store: EngineStore, clock: FakeClock) -> None:
    asker = KeyAsker()
    worker = asking_worker(store, asker, batch=2)
    waiting_one = store.create("asking")
    worker.run_until_idle()
    assert store.get(waiting_one.id).state == "awaiting"

    # Another worker is running the step of `busy`, which handed out its token; answers come early.
    busy = store.create("asking")
    (claim,) = store.claim("other-worker", [("asking", "todo")], limit=1, lease=LEASE)
    store.open_wait(claim.resource, token_hash("early-token"))
    for key in ("x", "y"):
        assert store.deliver(busy.id, "early-token", key, "done").accepted

    assert store.deliver(waiting_one.id, asker.tokens[waiting_one.id], "a", "done").accepted
    for _ in range(3):
        worker.tick()

    assert store.get(waiting_one.id).state == "done"


# --- deadlines ------------------------------------------------------------------------------------


def test_the_deadline_fires_on_deadline_when_no_answer_comes_and_later_answers_are_refused(
    store: EngineStore, clock: FakeClock
) -> None:
    worker, _, r, token = waiting(store)
    assert r.deadline == clock.now + WAIT_FOR

    clock.advance(WAIT_FOR - MICRO)
    assert worker.sweep_deadlines() == 0
    assert worker.tick() == 0
    clock.advance(MICRO)
    assert worker.sweep_deadlines() == 1

    after = store.get(r.id)
    deadline = r.deadline.isoformat()
    assert (after.state, after.deadline) == ("expired", None)
    assert after.error == f"no answer in state 'awaiting' before its deadline ({deadline})"
    last = store.journal(r.id)[-1]
    assert (last.event, last.actor, dict(last.detail)) == (
        "expire",
        "cb-worker",
        {"deadline": deadline, "error": after.error},
    )
    assert worker.stats.deadlines_fired == 1
    assert worker.sweep_deadlines() == 0

    late = store.deliver(r.id, token, "a", "done")
    assert late.delivery is Delivery.REFUSED
    assert "superseded" in late.reason
    assert worker.apply_callbacks() == 0
    assert store.get(r.id).state == "expired"


def test_a_partly_answered_wait_still_ends_at_its_deadline(store: EngineStore, clock: FakeClock) -> None:
    worker, _, r, token = waiting(store)
    store.deliver(r.id, token, "a", "done")
    worker.tick()

    clock.advance(WAIT_FOR)
    assert worker.tick() == 1

    assert store.get(r.id).state == "expired"


def test_answers_recorded_before_the_deadline_win_over_it(store: EngineStore, clock: FakeClock) -> None:
    worker, _, r, token = waiting(store)
    store.deliver(r.id, token, "a", "done")
    store.deliver(r.id, token, "b", "done")
    clock.advance(WAIT_FOR + timedelta(seconds=1))

    worker.tick()

    assert store.get(r.id).state == "done", "a pass applies the inbox before it sweeps the deadlines"
    assert events(store, r.id) == ["@create", "ask", "answered"]
    assert worker.stats.deadlines_fired == 0


def test_answers_recorded_before_the_deadline_win_over_it_whatever_the_batch_size(
    store: EngineStore, clock: FakeClock
) -> None:
    asker = KeyAsker()
    worker = asking_worker(store, asker, batch=1)
    first, second = store.create("asking"), store.create("asking")
    worker.run_until_idle()
    assert {store.get(first.id).state, store.get(second.id).state} == {"awaiting"}

    for r in (first, second):
        receipt = store.deliver(r.id, asker.tokens[r.id], "a", "done")
        assert receipt.delivery.value == "accepted"
    clock.advance(WAIT_FOR + timedelta(seconds=1))

    worker.run_until_idle()

    assert (store.get(first.id).state, store.get(second.id).state) == ("done", "done")


def test_a_deadline_that_cannot_fire_does_not_stop_other_work(store: EngineStore, clock: FakeClock) -> None:
    worker = asking_worker(store, lambda r, ctx: Advance("finish"))
    stuck = store.create("asking")
    store.fire(stuck, "ask")  # a client moves it to the wait state (a deadline is set)
    clock.advance(WAIT_FOR + timedelta(seconds=1))
    fresh = store.create("asking")
    deadline_write = store.fire_settling  # the engine's unfenced write on a snapshot, which fires deadlines
    calls: list[str] = []

    def fire(resource: object, event: str, callbacks: object, **kwargs: object) -> object:
        calls.append(event)
        if event == "expire":
            raise TenureError("a bug in firing the deadline")
        return deadline_write(resource, event, callbacks, **kwargs)  # type: ignore[arg-type]

    store.fire_settling = fire  # type: ignore[method-assign]

    worker.tick()

    assert calls == ["expire"]
    assert store.get(fresh.id).state == "done", "a resource unrelated to the stuck wait must still advance"
    assert worker.stats.engine_errors == 1


def test_a_deadline_swept_by_two_workers_fires_once(
    store: EngineStore, clock: FakeClock, open_engine_store: Callable[..., EngineStore]
) -> None:
    worker, asker, r, _ = waiting(store)
    other = make_worker(open_engine_store([ticket], clock=clock), asker, name="other")
    clock.advance(WAIT_FOR)

    fired = worker.sweep_deadlines() + other.sweep_deadlines()

    assert fired == 1
    assert events(store, r.id) == ["@create", "ask", "expire"]


def test_a_waiting_resource_is_moved_on_by_its_answers_not_a_step(store: EngineStore) -> None:
    """No step runs in a wait state: ticks leave it alone until its answers come."""
    worker, asker, r, token = waiting(store)
    for _ in range(3):
        assert worker.tick() == 0
    assert len(asker.tokens) == 1
    store.deliver(r.id, token, "a", "done")
    store.deliver(r.id, token, "b", "done")
    worker.tick()
    assert store.get(r.id).state == "done"


def test_a_worker_with_every_slot_busy_still_applies_callbacks(
    store: EngineStore, eventually: Callable[[Callable[[], object], str], None]
) -> None:
    # One resource waits for its answers; another holds the running worker's only slot with a gated step.
    _, _, waiting_one, token = waiting(store)
    gate = threading.Event()
    busy = Asker(gate=gate)
    steps = Steps()
    steps.add(ticket, "todo", busy)
    busy_worker = Worker(store, steps, name="busy", concurrency=1, rand=lambda: 1.0)
    held = store.create("ticket")
    busy_worker.start()
    try:
        assert busy.handed_out.wait(10), "the gated step never started"
        store.deliver(waiting_one.id, token, "a", "done")
        store.deliver(waiting_one.id, token, "b", "done")
        eventually(lambda: store.get(waiting_one.id).state == "done", "the callbacks moved the waiting resource")
        assert store.get(held.id).state == "todo", "the gated step still holds the only slot"
    finally:
        gate.set()
        busy_worker.stop()
