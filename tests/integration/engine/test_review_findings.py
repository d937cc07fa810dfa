"""Defects found by reviewing the engine layer, one test each, kept so they stay fixed.

The tests drive the engine the way the other engine tests do: real stores of both dialects, the fake
clock, and ``tick``/``apply_callbacks``/``sweep_deadlines`` in the order a worker's round calls them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from store_support import FakeClock
from tenure import (
    Advance,
    Backoff,
    Event,
    InvalidKind,
    Kind,
    Resource,
    Retryable,
    Role,
    State,
    StepContext,
    Steps,
    TenureError,
    Wait,
    Worker,
)
from tenure.engine.outcome import Outcome
from tenure.engine.provision import MemoryProvisioner
from tenure.kinds.transfer import transfer_kind, transfer_steps
from tenure.store.core import StoreCore
from tenure.store.inbox import token_hash

WAIT_FOR = timedelta(minutes=10)
LEASE = timedelta(seconds=30)
POLICY = Backoff(max_attempts=3, base=timedelta(seconds=1), cap=timedelta(seconds=10), jitter=0)


@pytest.fixture
def store_url(reused_store_url: str) -> str:
    """One PostgreSQL database for the module (emptied per test); a fresh SQLite file per test."""
    return reused_store_url


def _never(subject: object) -> bool:
    """A guard that refuses (a kind may guard any event, including failure and deadline events)."""
    return False


#: A work state that asks and waits for one key; unguarded events only.
asking = Kind(
    "asking",
    initial="todo",
    states=[
        State("todo", 1, Role.WORK, on_failure="fail", retry=POLICY),
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

#: The same shape with a guard that refuses a step's event.
gated = Kind(
    "gated",
    initial="todo",
    states=[
        State("todo", 1, Role.WORK, on_failure="fail", retry=POLICY),
        State("awaiting", 2, Role.WAIT, deadline=WAIT_FOR, on_deadline="expire"),
        State("done", 10, Role.FINAL),
        State("failed", 11, Role.FINAL),
        State("expired", 12, Role.FINAL),
    ],
    events=[
        Event("ask", "todo", "awaiting"),
        Event("finish", "todo", "done"),
        Event("blocked", "todo", "done", guard=_never),
        Event("answered", "awaiting", "done"),
        Event("expire", "awaiting", "expired"),
        Event("give_up", "awaiting", "failed"),
        Event("fail", "todo", "failed"),
    ],
)

Step = Callable[[Resource, StepContext], Outcome]


def worker_for(store: StoreCore, kind: Kind, step: Step, *, batch: int = 100, name: str = "reviewer") -> Worker:
    steps = Steps()
    steps.add(kind, "todo", step)
    return Worker(store, steps, name=name, batch=batch, rand=lambda: 1.0)


class Asker:
    """A step that hands out its token and waits for key ``a``; remembers each resource's token."""

    __name__ = "asker"

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}

    def __call__(self, resource: Resource, ctx: StepContext) -> Outcome:
        self.tokens[resource.id] = ctx.token
        return Wait("ask", ["a"], on_done="answered", on_failed="refused")


# --- 1. a guard refusing the deadline event would leave the wait stuck -------------------------


def test_a_kind_cannot_guard_its_deadline_event() -> None:
    with pytest.raises(InvalidKind, match="must not be guarded"):
        Kind(
            "stuck",
            initial="todo",
            states=[
                State("todo", 1, Role.WORK, on_failure="fail"),
                State("awaiting", 2, Role.WAIT, deadline=WAIT_FOR, on_deadline="expire"),
                State("expired", 12, Role.FINAL),
            ],
            events=[
                Event("ask", "todo", "awaiting"),
                Event("fail", "todo", "expired"),
                Event("expire", "awaiting", "expired", guard=_never),
            ],
        )


def test_a_deadline_that_cannot_fire_does_not_stop_other_work(store: StoreCore, clock: FakeClock) -> None:
    worker = worker_for(store, gated, lambda r, ctx: Advance("finish"))
    stuck = store.create("gated")
    store.fire(stuck, "ask")  # a client moves it to the wait state (a deadline is set)
    clock.advance(WAIT_FOR + timedelta(seconds=1))
    fresh = store.create("gated")
    broken = store.fire
    calls: list[str] = []

    def fire(resource: object, event: str, **kwargs: object) -> object:
        calls.append(event)
        if event == "expire":
            raise TenureError("a bug in firing the deadline")
        return broken(resource, event, **kwargs)  # type: ignore[arg-type]

    store.fire = fire  # type: ignore[method-assign]

    worker.tick()

    assert calls == ["expire"]
    assert store.get(fresh.id).state == "done", "a resource unrelated to the stuck wait must still advance"
    assert worker.stats.engine_errors == 1


# --- 2. a guard refusing a step's event: an endless, immediate re-run --------------------------


def test_a_step_whose_event_a_guard_refuses_is_not_rerun_forever(store: StoreCore, clock: FakeClock) -> None:
    calls: list[int] = []

    def step(resource: Resource, ctx: StepContext) -> Outcome:
        calls.append(ctx.attempt)
        return Advance("blocked")

    worker = worker_for(store, gated, step)
    r = store.create("gated")

    worker.run_until_idle(max_rounds=30)  # today: TenureError "still busy after 30 rounds"

    assert len(calls) <= POLICY.max_attempts
    assert store.get(r.id).state != "todo" or store.get(r.id).attempts > 0


# --- 3. the deadline sweep throws away answers that arrived before the deadline -----------------


def test_callbacks_accepted_before_the_deadline_win_over_the_deadline(store: StoreCore, clock: FakeClock) -> None:
    asker = Asker()
    worker = worker_for(store, asking, asker, batch=1)
    first, second = store.create("asking"), store.create("asking")
    worker.run_until_idle()
    assert {store.get(first.id).state, store.get(second.id).state} == {"awaiting"}

    for r in (first, second):
        receipt = store.deliver(r.id, asker.tokens[r.id], "a", "done")
        assert receipt.delivery.value == "accepted"
    clock.advance(WAIT_FOR + timedelta(seconds=1))

    worker.run_until_idle()

    assert (store.get(first.id).state, store.get(second.id).state) == ("done", "done")


# --- 4. early callbacks on a running step block the whole inbox ----------------------------------


def test_early_callbacks_of_a_running_step_do_not_starve_other_waits(store: StoreCore, clock: FakeClock) -> None:
    asker = Asker()
    worker = worker_for(store, asking, asker, batch=2)
    waiting = store.create("asking")
    worker.run_until_idle()
    assert store.get(waiting.id).state == "awaiting"

    # Another worker is running the step of `busy`, which handed out its token; answers come early.
    busy = store.create("asking")
    (claim,) = store.claim("other-worker", [("asking", "todo")], limit=1, lease=LEASE)
    store.open_wait(claim.resource, token_hash("early-token"))
    for key in ("x", "y"):
        assert store.deliver(busy.id, "early-token", key, "done").accepted

    assert store.deliver(waiting.id, asker.tokens[waiting.id], "a", "done").accepted
    for _ in range(3):
        worker.tick()

    assert store.get(waiting.id).state == "done"


# --- 5. answers recorded while waiting are forgotten when the deadline re-asks ------------------


def test_a_deadline_re_ask_does_not_re_provision_a_definition_that_answered_done(
    store: StoreCore, clock: FakeClock
) -> None:
    deadline = timedelta(minutes=1)
    provisioner = MemoryProvisioner(asynchronous=True)
    kind = transfer_kind(request_deadline=deadline, retry=POLICY)
    worker = Worker(store, transfer_steps({"async": provisioner}, kind=kind), name="mover", rand=lambda: 1.0)
    spec = {"asset": "a-1", "resources": [{"id": "bucket", "type": "async"}, {"id": "queue", "type": "async"}]}
    r = store.create("transfer", spec)
    worker.run_until_idle()
    assert store.get(r.id).state == "provisioning_requested"

    token = provisioner.requests[-1].token
    assert store.deliver(r.id, token, "bucket", "done", data={"url": "s3://b"}).accepted
    worker.run_until_idle()  # recorded; still waiting for queue
    provisioner.requests.clear()
    clock.advance(deadline + timedelta(seconds=1))

    worker.run_until_idle()  # the deadline fires provision_timed_out; the step asks again

    assert store.get(r.id).state == "provisioning_requested"
    assert [q.definition.id for q in provisioner.requests] == ["queue"]


# --- 6. a step that kills its worker is taken over forever ---------------------------------------


def test_takeovers_count_against_the_retry_budget(store: StoreCore, clock: FakeClock) -> None:
    store.register(asking)
    r = store.create("asking")
    taken = []
    for i in range(POLICY.max_attempts + 2):
        claims = store.claim(f"doomed-{i}", [("asking", "todo")], limit=1, lease=LEASE)
        if not claims:
            break
        taken.append(claims[0])
        clock.advance(LEASE + timedelta(seconds=1))  # the holder died: its claim expires

    now = store.get(r.id)
    assert len(taken) <= POLICY.max_attempts or now.attempts > 0 or now.state != "todo"


# --- 7. an explicit retry delay too large for a datetime: an endless, immediate re-run -----------


def test_an_oversized_retry_delay_does_not_loop(store: StoreCore, clock: FakeClock) -> None:
    calls: list[int] = []

    def step(resource: Resource, ctx: StepContext) -> Outcome:
        calls.append(ctx.attempt)
        raise Retryable("come back much later", delay=timedelta.max)

    worker = worker_for(store, asking, step)
    store.create("asking")

    worker.run_until_idle(max_rounds=30)  # today: TenureError "still busy after 30 rounds"

    assert len(calls) == 1


# --- 8. one unexpected error ends the heartbeat for good ----------------------------------------


def test_the_heartbeat_survives_an_unexpected_error(
    real_store: StoreCore,
    start_worker: Callable[[Worker], Worker],
    gate: Callable[[], threading.Event],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renewals: list[float] = []
    real_renew = real_store.renew

    def flaky_renew(tokens: list[str], *, lease: timedelta) -> set[str]:
        renewals.append(time.monotonic())
        if len(renewals) == 1:
            raise RuntimeError("a driver error the store does not translate")
        return real_renew(tokens, lease=lease)

    monkeypatch.setattr(real_store, "renew", flaky_renew)
    release = gate()
    started = threading.Event()

    def step(resource: Resource, ctx: StepContext) -> Outcome:
        started.set()
        release.wait(5)
        return Advance("finish")

    worker = worker_for(real_store, asking, step)
    worker.heartbeat = timedelta(seconds=0.1)
    real_store.create("asking")
    start_worker(worker)
    assert started.wait(5)
    time.sleep(1.0)  # ten heartbeats
    release.set()

    assert len(renewals) >= 3, f"the heartbeat renewed {len(renewals)} time(s) in 1 s, then died"


# --- 9. an engine error counts as a failed attempt ----------------------------------------------


def test_an_engine_error_backs_off_and_ends_in_the_failure_event(store: StoreCore, clock: FakeClock) -> None:
    worker = worker_for(store, asking, lambda r, ctx: Advance("finish"))
    r = store.create("asking")
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

    for _ in range(POLICY.max_attempts):
        clock.advance(POLICY.cap)
        worker.run_until_idle()

    assert store.get(r.id).state == "failed"
    assert worker.stats.engine_errors == POLICY.max_attempts


# --- 10. answers to a provisional wait are bounded -----------------------------------------------


def test_a_running_step_takes_a_bounded_number_of_early_answers(store: StoreCore, clock: FakeClock) -> None:
    from tenure.store.inbox import MAX_EARLY_CALLBACKS

    store.register(asking)
    r = store.create("asking")
    (claim,) = store.claim("w", [("asking", "todo")], limit=1, lease=LEASE)
    store.open_wait(claim.resource, token_hash("t"))
    for i in range(MAX_EARLY_CALLBACKS):
        assert store.deliver(r.id, "t", f"k{i}", "done").delivery.value == "accepted"

    refused = store.deliver(r.id, "t", "one-more", "done")

    assert refused.delivery.value == "refused"
    assert f"{MAX_EARLY_CALLBACKS} answers were already recorded" in refused.reason
    assert store.deliver(r.id, "t", "k0", "done").delivery.value == "duplicate"


# --- 11. a decision uses, and settles, the answers that came after the batch was read ------------


def test_answers_newer_than_the_batch_are_settled_by_the_decision_they_made(store: StoreCore, clock: FakeClock) -> None:
    tokens: dict[str, str] = {}

    def ask_two(resource: Resource, ctx: StepContext) -> Outcome:
        tokens[resource.id] = ctx.token
        return Wait("ask", ["a", "b"], on_done="answered", on_failed="refused")

    worker = worker_for(store, asking, ask_two, batch=1)
    r = store.create("asking")
    worker.run_until_idle()
    for key in ("a", "b"):
        assert store.deliver(r.id, tokens[r.id], key, "done").accepted

    assert worker.apply_callbacks() == 2  # the batch held only "a"; "b" decided it too

    assert store.get(r.id).state == "done"
    results = [cb.result for cb in store.callbacks(token_hash(tokens[r.id]))]
    assert results == ["applied: fired answered", "applied: fired answered"]
    assert worker.stats.callbacks_superseded == 0
