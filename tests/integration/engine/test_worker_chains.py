"""Chains: a step's write keeps the claim into the next work state, and the same worker runs that step next.

A resource going through several work states is claimed once: each write carries the claim (same
token, a fresh lease) into the next state when this worker runs its step, so no other worker can take
it in between and no claim statement is spent per step. A chain ends at a state the worker has no
step for, a wait or rest state, after 32 steps (others get their turn), or when the worker stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from tenure import Advance, Event, Kind, Resource, Role, State, StepContext, Steps, Worker
from tenure.engine.outcome import Outcome
from tenure.errors import ClaimLost
from tenure.store.claims import Claim
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock, all_journal

pytestmark = pytest.mark.timeout(120)

Eventually = Callable[[Callable[[], object], str], None]
Gate = Callable[[], threading.Event]

#: Three work states in a row, then a rest state, then done; ``cancel`` is the client's way out.
pipeline = Kind(
    "pipeline",
    initial="fetch",
    states=[
        State("fetch", 1, Role.WORK, on_failure="fail"),
        State("build", 2, Role.WORK, on_failure="fail"),
        State("ship", 3, Role.WORK, on_failure="fail"),
        State("shipped", 4, Role.REST),
        State("failed", 5, Role.FINAL),
        State("cancelled", 6, Role.FINAL),
        State("retired", 7, Role.FINAL),
    ],
    events=[
        Event("fetched", "fetch", "build"),
        Event("built", "build", "ship"),
        Event("sent", "ship", "shipped"),
        Event("retire", "shipped", "retired"),
        Event("fail", ["fetch", "build", "ship"], "failed"),
        Event("cancel", ["fetch", "build", "ship"], "cancelled"),
    ],
)

#: Two work states that hand the resource to each other forever.
loop = Kind(
    "loop",
    initial="ping",
    states=[
        State("ping", 1, Role.WORK, on_failure="stop"),
        State("pong", 2, Role.WORK, on_failure="stop"),
        State("stopped", 3, Role.FINAL),
    ],
    events=[
        Event("to_pong", "ping", "pong"),
        Event("to_ping", "pong", "ping"),
        Event("stop", ["ping", "pong"], "stopped"),
    ],
)

NEXT = {"fetch": "fetched", "build": "built", "ship": "sent", "ping": "to_pong", "pong": "to_ping"}


class Stepper:
    """Advances every state it runs in; records (resource, state, claim token); may block on a gate per state."""

    def __init__(self, hold: dict[str, threading.Event] | None = None) -> None:
        self.hold = dict(hold or {})
        self.calls: list[tuple[str, str, str]] = []
        self.entered: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.__name__ = "stepper"

    def __call__(self, resource: Resource, ctx: StepContext) -> Outcome:
        with self._lock:
            self.calls.append((resource.id, resource.state, ctx.claim.token))
            self.entered.setdefault(resource.state, threading.Event()).set()
        gate = self.hold.get(resource.state)
        if gate is not None:
            assert gate.wait(30), "the test never opened the gate"
        return Advance(NEXT[resource.state])

    def reached(self, state: str) -> threading.Event:
        with self._lock:
            return self.entered.setdefault(state, threading.Event())


def steps_for(kind: Kind, step: Stepper, states: tuple[str, ...]) -> Steps:
    steps = Steps()
    for state in states:
        steps.add(kind, state, step)
    return steps


WORK = ("fetch", "build", "ship")


def test_a_resource_runs_its_work_states_one_after_another_under_one_claim(
    store: EngineStore,
) -> None:
    store.register(pipeline)
    step = Stepper()
    worker = Worker(store, steps_for(pipeline, step, WORK), name="w")
    r = store.create("pipeline")

    worker.tick()

    after = store.get(r.id)
    assert after.state == "shipped"
    assert after.claim_token is None
    assert after.claimed_by is None
    assert after.claim_expires_at is None
    assert after.next_attempt_at is None, "a rest state is not due"
    assert [(rid, state) for rid, state, _ in step.calls] == [(r.id, "fetch"), (r.id, "build"), (r.id, "ship")]
    assert len({token for _, _, token in step.calls}) == 1, "one claim, one token, for the whole chain"
    assert worker.stats.claimed == 1
    assert worker.stats.chained == 2
    assert worker.stats.advanced == 3
    journal = all_journal(store, r.id)
    assert [(e.version, e.event, e.from_state, e.to_state) for e in journal] == [
        (1, "@create", None, "fetch"),
        (2, "fetched", "fetch", "build"),
        (3, "built", "build", "ship"),
        (4, "sent", "ship", "shipped"),
    ]
    assert {e.actor for e in journal[1:]} == {"w"}


def test_a_chained_state_is_held_so_no_other_worker_takes_it(
    store: EngineStore, clock: FakeClock, in_thread: Callable[[Callable[[], object]], threading.Thread], gate: Gate
) -> None:
    store.register(pipeline)
    release = gate()
    step = Stepper(hold={"build": release})
    first = Worker(store, steps_for(pipeline, step, WORK), name="first", lease=timedelta(seconds=30))
    other = Stepper()
    second = Worker(store, steps_for(pipeline, other, WORK), name="second")
    r = store.create("pipeline")

    runner = in_thread(first.tick)
    assert step.reached("build").wait(10)

    held = store.get(r.id)
    assert (held.state, held.claimed_by, held.claim_token) == ("build", "first", step.calls[0][2])
    assert held.next_attempt_at is not None
    assert held.next_attempt_at <= clock()
    assert held.claim_expires_at == clock() + timedelta(seconds=30)
    assert second.tick() == 0, "a held resource is not claimed by another worker"
    assert other.calls == []

    release.set()
    runner.join(10)
    assert store.get(r.id).state == "shipped"
    assert other.calls == []


def test_a_worker_keeps_no_claim_into_a_state_whose_step_it_does_not_run(store: EngineStore) -> None:
    store.register(pipeline)
    fetcher, builder = Stepper(), Stepper()
    w1 = Worker(store, steps_for(pipeline, fetcher, ("fetch",)), name="fetcher")
    w2 = Worker(store, steps_for(pipeline, builder, ("build", "ship")), name="builder")
    r = store.create("pipeline")

    w1.tick()

    moved = store.get(r.id)
    assert moved.state == "build"
    assert moved.claim_token is None, "the claim went with the write"
    assert w1.stats.chained == 0
    w2.tick()
    assert store.get(r.id).state == "shipped"
    assert [state for _, state, _ in builder.calls] == ["build", "ship"]
    assert w2.stats.claimed == 1
    assert w2.stats.chained == 1


def test_a_chain_ends_after_32_steps_and_the_resource_queues_behind_those_due_before(
    store: EngineStore, clock: FakeClock
) -> None:
    store.register(loop)
    step = Stepper()
    worker = Worker(store, steps_for(loop, step, ("ping", "pong")), name="w", batch=1)
    older = store.create("loop")
    clock.advance()
    newer = store.create("loop")
    clock.advance()

    worker.tick()

    assert [rid for rid, _, _ in step.calls] == [older.id] * 32
    first = store.get(older.id)
    assert first.version == 33
    assert first.state == "ping"
    assert first.claim_token is None, "the 32nd step's write let the claim go"
    assert first.next_attempt_at == clock(), "due again, from now"
    assert worker.stats.claimed == 1
    assert worker.stats.chained == 31

    worker.tick()

    assert [rid for rid, _, _ in step.calls[32:]] == [newer.id] * 32, "the one due before goes first"


def test_a_stopping_worker_lets_the_claim_go_with_its_write(store: EngineStore) -> None:
    store.register(pipeline)
    step = Stepper()
    worker = Worker(store, steps_for(pipeline, step, WORK), name="w")
    r = store.create("pipeline")
    worker.request_stop()

    worker.tick()

    after = store.get(r.id)
    assert (after.state, after.claim_token) == ("build", None)
    assert after.next_attempt_at is not None, "due for whoever comes next"
    assert [state for _, state, _ in step.calls] == ["fetch"]


def test_a_stop_asked_while_a_step_runs_lets_the_claim_go_with_that_steps_write(
    real_store: EngineStore, gate: Gate, in_thread: Callable[[Callable[[], object]], threading.Thread]
) -> None:
    real_store.register(pipeline)
    release = gate()
    step = Stepper(hold={"fetch": release})
    worker = Worker(real_store, steps_for(pipeline, step, WORK), name="w", poll_interval=0.05).start()
    r = real_store.create("pipeline")
    assert step.reached("fetch").wait(10)

    worker.request_stop()
    release.set()
    stopping = in_thread(lambda: worker.stop(timeout=10))
    stopping.join(15)

    after = real_store.get(r.id)
    assert (after.state, after.claim_token) == ("build", None)
    assert after.next_attempt_at is not None, "due for whoever comes next"
    assert [state for _, state, _ in step.calls] == ["fetch"]


def test_a_client_event_during_a_chained_step_refuses_its_outcome(
    real_store: EngineStore, start_worker: Callable[[Worker], Worker], gate: Gate, eventually: Eventually
) -> None:
    real_store.register(pipeline)
    release = gate()
    step = Stepper(hold={"build": release})
    worker = start_worker(Worker(real_store, steps_for(pipeline, step, WORK), name="w", poll_interval=0.05))
    r = real_store.create("pipeline")
    assert step.reached("build").wait(10)

    real_store.fire(r.id, "cancel")
    release.set()

    eventually(lambda: worker.stats.claims_lost == 1, "the chained step's write was refused")
    after = real_store.get(r.id)
    assert after.state == "cancelled"
    assert [e.event for e in all_journal(real_store, r.id)] == ["@create", "fetched", "cancel"]


def test_a_chained_claim_is_renewed_by_the_heartbeat(
    real_store: EngineStore,
    open_engine_store: Callable[..., EngineStore],
    start_worker: Callable[[Worker], Worker],
    gate: Gate,
    eventually: Eventually,
) -> None:
    real_store.register(pipeline)
    release = gate()
    step = Stepper(hold={"build": release})
    lease = timedelta(milliseconds=300)
    first = start_worker(
        Worker(
            real_store,
            steps_for(pipeline, step, WORK),
            name="first",
            lease=lease,
            heartbeat=timedelta(milliseconds=50),
            poll_interval=0.05,
        )
    )
    r = real_store.create("pipeline")
    assert step.reached("build").wait(10)
    other = Stepper()
    second = start_worker(
        Worker(open_engine_store([pipeline]), steps_for(pipeline, other, WORK), name="second", poll_interval=0.05)
    )
    ends = time.monotonic() + 4 * lease.total_seconds()
    while time.monotonic() < ends:  # several leases long, with the other worker looking for work
        time.sleep(0.05)
    assert real_store.get(r.id).claimed_by == "first"

    release.set()

    eventually(lambda: real_store.get(r.id).state == "shipped", "the chain went on to the end")
    assert other.calls == []
    assert second.stats.takeovers == 0
    assert first.stats.claims_lost == 0


# --- the store's side: fire_claimed(hold=...) -----------------------------------------------------


def test_a_held_write_keeps_the_token_and_a_dead_holder_is_taken_over_after_the_lease(
    store: EngineStore, clock: FakeClock
) -> None:
    store.register(pipeline)
    r = store.create("pipeline")
    (claim,) = store.claim("dead", [("pipeline", "fetch"), ("pipeline", "build")], lease=timedelta(seconds=30))
    seq = store.signal.seq

    held = store.fire_claimed(claim, "fetched", hold=timedelta(seconds=10))

    assert (held.state, held.claim_token, held.claimed_by) == ("build", claim.token, "dead")
    assert held.claim_expires_at == clock() + timedelta(seconds=10)
    assert store.get(r.id) == held, "the row is what the write returned"
    assert store.signal.seq == seq, "a held row wakes no worker: none could take it"
    assert store.claim("other", [("pipeline", "build")], lease=timedelta(seconds=30)) == []

    clock.advance(timedelta(seconds=11))
    (taken,) = store.claim("other", [("pipeline", "build")], lease=timedelta(seconds=30))

    assert taken.takeover
    assert taken.resource.attempts == 1, "the dead holder's attempt counts"
    assert taken.token != claim.token
    with pytest.raises(ClaimLost):
        store.fire_claimed(Claim(held), "built")


def test_a_write_into_a_rest_or_final_state_never_holds(store: EngineStore) -> None:
    store.register(pipeline)
    r = store.create("pipeline")
    claims = [("pipeline", s) for s in WORK]
    for event in ("fetched", "built"):
        (claim,) = store.claim("w", claims, lease=timedelta(seconds=30))
        store.fire_claimed(claim, event)
    (claim,) = store.claim("w", claims, lease=timedelta(seconds=30))

    rested = store.fire_claimed(claim, "sent", hold=timedelta(seconds=30))

    assert rested.state == "shipped"
    assert rested.claim_token is None
    assert store.get(r.id).claim_token is None
