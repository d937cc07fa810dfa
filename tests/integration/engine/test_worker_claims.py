"""Claims, leases and heartbeats, with workers running in the background on the real clock.

Leases are short (hundreds of milliseconds) so that takeovers happen quickly, but no test asserts how
long anything took: tests wait for what must happen by polling (``eventually``, up to 10 seconds),
and wait past a lease only by watching the clock until the lease is certainly over.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tenure import (
    Advance,
    Backoff,
    Event,
    Kind,
    Resource,
    Role,
    State,
    StepContext,
    Steps,
    Worker,
)
from tenure.engine.outcome import Outcome
from tenure.store.claims import Claim
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock

pytestmark = pytest.mark.timeout(120)

NO_HEARTBEAT = timedelta(hours=1)

Eventually = Callable[[Callable[[], object], str], None]
Gate = Callable[[], threading.Event]


def work_kind(name: str, *, retry: Backoff | None = None) -> Kind:
    return Kind(
        name,
        initial="todo",
        states=[
            State("todo", 1, Role.WORK, on_failure="fail", retry=retry),
            State("done", 2, Role.FINAL),
            State("failed", 3, Role.FINAL),
            State("cancelled", 4, Role.FINAL),
        ],
        events=[Event("finish", "todo", "done"), Event("fail", "todo", "failed"), Event("cancel", "todo", "cancelled")],
    )


chunk = work_kind("chunk")


class Recorder:
    """A step that records who ran it; ``hold`` decides, per worker name, whether it waits on a gate."""

    def __init__(self, hold: dict[str, threading.Event] | None = None) -> None:
        self.hold = dict(hold or {})
        self.calls: list[tuple[str, str]] = []
        self.contexts: list[StepContext] = []
        self.started = threading.Event()
        self.returned = threading.Event()
        self._lock = threading.Lock()
        self.__name__ = "recorder"

    def __call__(self, resource: Resource, ctx: StepContext) -> Outcome:
        with self._lock:
            self.calls.append((resource.id, ctx.worker))
            self.contexts.append(ctx)
        self.started.set()
        gate = self.hold.get(ctx.worker)
        if gate is not None:
            assert gate.wait(30), "the test never opened the gate"
        self.returned.set()
        return Advance("finish", {"by": ctx.worker})


class EveryoneAtWork(Recorder):
    """A :class:`Recorder` whose steps wait until ``workers`` different workers each began one: a worker
    runs at most its concurrency of steps at once, so while the first steps wait, the other workers
    must claim the rest, and no worker can take all of the work. After 5 seconds without everyone at
    work the steps stop waiting (the test then fails on who did the work, not on a timeout)."""

    def __init__(self, workers: int) -> None:
        super().__init__()
        self.workers = workers
        self.at_work: set[str] = set()
        self.waited_in_vain = False
        self._everyone = threading.Condition()

    def __call__(self, resource: Resource, ctx: StepContext) -> Outcome:
        with self._everyone:
            self.at_work.add(ctx.worker)
            self._everyone.notify_all()
            if not self.waited_in_vain:
                everyone = self._everyone.wait_for(lambda: len(self.at_work) >= self.workers, timeout=5)
                self.waited_in_vain = not everyone
        return super().__call__(resource, ctx)


def steps_for(kind: Kind, step: Recorder) -> Steps:
    steps = Steps()
    steps.add(kind, "todo", step)
    return steps


def transitions_from(store: EngineStore, resource_id: str, state: str) -> list[tuple[str, str | None]]:
    return [(e.event, e.actor) for e in store.journal(resource_id) if e.from_state == state]


def now() -> datetime:
    return datetime.now(UTC)


# --- leases --------------------------------------------------------------------------------------


def test_a_step_stalled_past_its_lease_is_taken_over_and_its_late_outcome_refused(
    real_store: EngineStore,
    open_engine_store: Callable[..., EngineStore],
    start_worker: Callable[[Worker], Worker],
    gate: Gate,
    eventually: Eventually,
) -> None:
    lease = timedelta(milliseconds=300)
    release = gate()
    step = Recorder(hold={"slow": release})
    slow = Worker(
        real_store, steps_for(chunk, step), name="slow", concurrency=1, lease=lease, heartbeat=NO_HEARTBEAT,
        poll_interval=0.05,
    )  # fmt: skip
    fast = Worker(
        open_engine_store(), steps_for(chunk, step), name="fast", lease=lease, heartbeat=NO_HEARTBEAT,
        poll_interval=0.05,
    )  # fmt: skip
    r = real_store.create("chunk")

    start_worker(slow)
    assert step.started.wait(10)
    start_worker(fast)
    eventually(lambda: real_store.get(r.id).state == "done", "the second worker took the stalled resource over")
    assert fast.stats.takeovers == 1

    release.set()
    eventually(lambda: slow.stats.claims_lost == 1, "the stalled worker's late outcome was refused")

    after = real_store.get(r.id)
    assert (after.state, after.data["by"], after.version) == ("done", "fast", 2)
    assert transitions_from(real_store, r.id, "todo") == [("finish", "fast")], "exactly one transition"
    assert step.calls == [(r.id, "slow"), (r.id, "fast")]
    eventually(lambda: fast.stats.advanced == 1, "the second worker counted its outcome")
    assert slow.stats.advanced == 0


def test_with_heartbeats_a_step_longer_than_its_lease_keeps_its_claim(
    real_store: EngineStore,
    open_engine_store: Callable[..., EngineStore],
    start_worker: Callable[[Worker], Worker],
    gate: Gate,
    eventually: Eventually,
) -> None:
    lease = timedelta(milliseconds=600)
    release = gate()
    step = Recorder(hold={"holder": release})
    holder = Worker(
        real_store, steps_for(chunk, step), name="holder", concurrency=1, lease=lease,
        heartbeat=timedelta(milliseconds=40), poll_interval=0.05,
    )  # fmt: skip
    rival = Worker(
        open_engine_store(), steps_for(chunk, step), name="rival", lease=lease, heartbeat=NO_HEARTBEAT,
        poll_interval=0.05,
    )  # fmt: skip
    r = real_store.create("chunk")

    start_worker(holder)
    assert step.started.wait(10)
    first_expiry = step.contexts[0].claim.resource.claim_expires_at
    assert first_expiry is not None
    start_worker(rival)
    # Wait until the first lease is over twice: without the heartbeats the rival would have taken over.
    eventually(lambda: now() > first_expiry + lease, "the first lease ran out")

    held = real_store.get(r.id)
    assert (held.state, held.claimed_by) == ("todo", "holder")
    assert held.claim_expires_at is not None
    assert held.claim_expires_at > first_expiry, "the heartbeats pushed the expiry on"
    assert not step.contexts[0].lost.is_set()

    release.set()
    eventually(lambda: real_store.get(r.id).state == "done", "the holder finished")
    assert real_store.get(r.id).data["by"] == "holder"
    assert step.calls == [(r.id, "holder")]
    assert (rival.stats.takeovers, holder.stats.claims_lost) == (0, 0)
    assert transitions_from(real_store, r.id, "todo") == [("finish", "holder")]


def test_the_heartbeat_survives_an_unexpected_error(
    real_store: EngineStore,
    start_worker: Callable[[Worker], Worker],
    gate: Gate,
    eventually: Eventually,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renewals: list[float] = []
    real_renew = real_store.renew

    def flaky_renew(claims: list[Claim], *, lease: timedelta) -> set[str]:
        renewals.append(time.monotonic())
        if len(renewals) == 1:
            raise RuntimeError("a driver error the store does not translate")
        return real_renew(claims, lease=lease)

    monkeypatch.setattr(real_store, "renew", flaky_renew)
    release = gate()
    started = threading.Event()

    def step(resource: Resource, ctx: StepContext) -> Outcome:
        started.set()
        release.wait(5)
        return Advance("finish")

    steps = Steps()
    steps.add(chunk, "todo", step)
    worker = Worker(real_store, steps, name="beater", rand=lambda: 1.0)
    worker.heartbeat = timedelta(seconds=0.1)
    real_store.create("chunk")
    start_worker(worker)
    assert started.wait(5)
    # A heartbeat that died of its first error would never renew again: it must go on beating.
    eventually(lambda: len(renewals) >= 3, "the heartbeat renewed again after its error")
    release.set()

    assert len(renewals) >= 3, f"the heartbeat renewed {len(renewals)} time(s), then died"


def test_a_client_event_while_the_step_runs_makes_its_outcome_refused(
    store: EngineStore, gate: Gate, in_thread: Callable[[Callable[[], object]], threading.Thread]
) -> None:
    release = gate()
    step = Recorder(hold={"w": release})
    worker = Worker(store, steps_for(chunk, step), name="w")
    r = store.create("chunk")
    running = in_thread(worker.tick)
    assert step.started.wait(10)

    store.fire(r.id, "cancel", actor="client")
    worker.renew_claims()
    assert step.contexts[0].lost.is_set(), "the heartbeat tells the step that its claim is gone"
    release.set()
    running.join(10)

    after = store.get(r.id)
    assert (after.state, after.claim_token) == ("cancelled", None)
    assert worker.stats.claims_lost == 1
    assert [e.event for e in store.journal(r.id)] == ["@create", "cancel"]


def test_a_claimed_resource_is_not_claimed_again_until_its_lease_expires(store: EngineStore, clock: FakeClock) -> None:
    store.register(chunk)
    r = store.create("chunk")
    lease = timedelta(seconds=30)

    (first,) = store.claim("one", [("chunk", "todo")], lease=lease)
    assert (first.resource.id, first.takeover, first.resource.claimed_by) == (r.id, False, "one")
    assert first.resource.claim_expires_at == clock.now + lease
    assert store.claim("two", [("chunk", "todo")], lease=lease) == []
    assert store.renew([first], lease=lease) == {first.token}
    clock.advance(lease)
    (second,) = store.claim("two", [("chunk", "todo")], lease=lease)
    assert (second.resource.id, second.takeover, second.resource.claimed_by) == (r.id, True, "two")
    assert second.token != first.token
    assert store.renew([first, second], lease=lease) == {second.token}
    assert store.release(first) is False
    assert store.release(second) is True
    (third,) = store.claim("three", [("chunk", "todo")], lease=lease)
    assert third.takeover is False


# --- stopping ------------------------------------------------------------------------------------


def test_a_graceful_stop_lets_the_running_step_finish_and_applies_its_outcome(
    real_store: EngineStore,
    start_worker: Callable[[Worker], Worker],
    gate: Gate,
    eventually: Eventually,
    in_thread: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    release = gate()
    step = Recorder(hold={"stopper": release})
    worker = Worker(real_store, steps_for(chunk, step), name="stopper", concurrency=1, poll_interval=0.05)
    r = real_store.create("chunk")
    start_worker(worker)
    assert step.started.wait(10)

    stopping = in_thread(lambda: worker.stop(timeout=20))
    eventually(lambda: worker.stopping, "the worker was asked to stop")
    assert stopping.is_alive(), "stop waits for the running step"
    release.set()
    stopping.join(30)
    assert not stopping.is_alive()

    after = real_store.get(r.id)
    assert (after.state, after.data["by"]) == ("done", "stopper")
    assert worker.stats.advanced == 1


def test_a_step_still_running_when_the_stop_times_out_is_released_and_its_outcome_dropped(
    real_store: EngineStore,
    start_worker: Callable[[Worker], Worker],
    gate: Gate,
    eventually: Eventually,
) -> None:
    release = gate()
    step = Recorder(hold={"quitter": release})
    worker = Worker(real_store, steps_for(chunk, step), name="quitter", concurrency=1, poll_interval=0.05)
    r = real_store.create("chunk")
    start_worker(worker)
    assert step.started.wait(10)

    worker.stop(timeout=0.2)

    released = real_store.get(r.id)
    assert (released.state, released.claim_token, released.claimed_by) == ("todo", None, None)
    assert released.next_attempt_at is not None, "due again at once for the next worker"
    assert step.contexts[0].lost.is_set()
    release.set()
    assert step.returned.wait(10)
    eventually(lambda: len(worker.stats.step_seconds) == 1, "the abandoned step returned")

    successor = Worker(real_store, steps_for(chunk, Recorder()), name="successor")
    assert successor.tick() == 1
    after = real_store.get(r.id)
    assert (after.state, after.data["by"]) == ("done", "successor")
    assert transitions_from(real_store, r.id, "todo") == [("finish", "successor")]


# --- waking up -----------------------------------------------------------------------------------


def test_a_started_worker_wakes_up_for_resources_created_afterwards(
    real_store: EngineStore, start_worker: Callable[[Worker], Worker], eventually: Eventually
) -> None:
    step = Recorder()
    # A poll interval far beyond the test's patience: only the wake-up can get the work done in time.
    worker = Worker(real_store, steps_for(chunk, step), name="sleeper", poll_interval=600)
    start_worker(worker)
    eventually(lambda: worker.stats.rounds >= 1, "the worker made its first pass")
    time.sleep(0.1)  # let it fall asleep

    ids = [real_store.create("chunk").id for _ in range(3)]

    eventually(lambda: all(real_store.get(i).state == "done" for i in ids), "every new resource was worked")
    assert sorted(rid for rid, _ in step.calls) == sorted(ids)


def test_a_started_worker_wakes_up_for_resources_created_through_another_store(
    real_store: EngineStore,
    open_engine_store: Callable[..., EngineStore],
    start_worker: Callable[[Worker], Worker],
    eventually: Eventually,
) -> None:
    """Another store object stands in for another process: PostgreSQL notifies, SQLite's watcher sees it."""
    step = Recorder()
    worker = Worker(real_store, steps_for(chunk, step), name="listener", poll_interval=600)
    start_worker(worker)
    eventually(lambda: worker.stats.rounds >= 1, "the worker made its first pass")
    listener = real_store.listen()
    assert listener is not None
    eventually(listener.connected.is_set, "the worker listens for notifications")
    elsewhere = open_engine_store([chunk])

    ids = [elsewhere.create("chunk").id for _ in range(3)]

    eventually(lambda: all(real_store.get(i).state == "done" for i in ids), "every new resource was worked")


# --- sharing the work ----------------------------------------------------------------------------


def test_workers_sharing_a_database_run_each_step_once(
    real_store: EngineStore,
    open_engine_store: Callable[..., EngineStore],
    start_worker: Callable[[Worker], Worker],
    eventually: Eventually,
) -> None:
    step = EveryoneAtWork(3)
    workers = [
        Worker(open_engine_store(), steps_for(chunk, step), name=f"w{n}", concurrency=3, poll_interval=0.05)
        for n in range(3)
    ]
    real_store.register(chunk)
    ids = [real_store.create("chunk").id for _ in range(30)]
    for w in workers:
        start_worker(w)

    eventually(lambda: all(real_store.get(i).state == "done" for i in ids), "every resource was worked")
    assert sorted(rid for rid, _ in step.calls) == sorted(ids), "each step ran exactly once"
    ran_by = dict(step.calls)
    shares = Counter(ran_by.values())
    assert sorted(shares) == ["w0", "w1", "w2"], f"the work was not shared: {dict(shares)}"
    eventually(lambda: sum(w.stats.advanced for w in workers) == 30, "the workers counted every outcome")
    assert {w.name: w.stats.advanced for w in workers} == dict(shares), "each counted the outcomes it wrote"
    assert sum(w.stats.claims_lost + w.stats.takeovers for w in workers) == 0
    for rid in ids:
        assert len(real_store.journal(rid)) == 2
        assert transitions_from(real_store, rid, "todo") == [("finish", ran_by[rid])], "written by who ran it"


def test_a_kind_whose_steps_always_fail_does_not_starve_another_kind(
    real_store: EngineStore, start_worker: Callable[[Worker], Worker], eventually: Eventually
) -> None:
    sick = work_kind(
        "sick",
        retry=Backoff(max_attempts=1_000_000, base=timedelta(milliseconds=5), cap=timedelta(milliseconds=5), jitter=0),
    )
    healthy = work_kind("healthy")
    failures: list[str] = []

    def always_fails(resource: Resource, ctx: StepContext) -> Outcome:
        failures.append(resource.id)
        raise RuntimeError("never works")

    step = Recorder()
    steps = Steps()
    steps.add(sick, "todo", always_fails)
    steps.add(healthy, "todo", step)
    worker = Worker(real_store, steps, name="mixed", concurrency=2, batch=4, poll_interval=0.05)
    sick_ids = [real_store.create("sick").id for _ in range(20)]
    start_worker(worker)
    eventually(lambda: len(failures) > 40, "the sick resources are failing over and over")

    healthy_ids = [real_store.create("healthy").id for _ in range(20)]

    eventually(lambda: all(real_store.get(i).state == "done" for i in healthy_ids), "every healthy resource finished")
    assert sorted(rid for rid, _ in step.calls) == sorted(healthy_ids)
    assert all(real_store.get(i).state == "todo" for i in sick_ids), "the sick ones are still being retried"


class SlowToStart(Worker):
    """A worker whose step threads are slow to get going, as on a loaded machine.

    The delay sits between the loop's submitting a claim to the pool and the pool thread's running it:
    ``_run`` is what the pool runs (``Worker._submit``).
    """

    delay = 0.3

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Set each time a pool thread is done with a claim (its step run, or skipped).
        self.ran = threading.Event()

    def _run(self, claim: Claim, ctx: StepContext) -> None:
        time.sleep(self.delay)
        try:
            super()._run(claim, ctx)
        finally:
            self.ran.set()


def test_a_worker_never_holds_more_claims_than_its_concurrency(
    real_store: EngineStore, start_worker: Callable[[Worker], Worker], gate: Gate, eventually: Eventually
) -> None:
    release = gate()
    step = Recorder(hold={"busy": release})
    worker = SlowToStart(real_store, steps_for(chunk, step), name="busy", concurrency=1, poll_interval=0.05)
    ids = [real_store.create("chunk").id for _ in range(5)]
    start_worker(worker)
    assert step.started.wait(10)
    # Many passes while the step is blocked: none of them may claim more.
    rounds = worker.stats.rounds
    eventually(lambda: worker.stats.rounds >= rounds + 5, "the loop made more passes")

    held = [i for i in ids if real_store.get(i).claimed_by == "busy"]

    assert len(held) == 1, f"a worker of concurrency 1 holds {len(held)} claims"
    assert worker.stats.claimed == 1
    assert [rid for rid, _ in step.calls] == held

    release.set()
    eventually(lambda: all(real_store.get(i).state == "done" for i in ids), "the worker got through them one by one")
    assert sorted(rid for rid, _ in step.calls) == sorted(ids)
    # The count follows the write: wait for it rather than race the last step's thread.
    eventually(lambda: worker.stats.advanced == 5, "the worker counted every outcome")
    assert worker.stats.claimed == 5


def test_a_claim_waiting_for_its_step_thread_is_renewed_by_the_heartbeat(
    real_store: EngineStore,
    open_engine_store: Callable[..., EngineStore],
    start_worker: Callable[[Worker], Worker],
    eventually: Eventually,
) -> None:
    lease = timedelta(milliseconds=600)
    step = Recorder()
    slow = SlowToStart(
        real_store, steps_for(chunk, step), name="slow", concurrency=1, lease=lease,
        heartbeat=timedelta(milliseconds=40), poll_interval=0.05,
    )  # fmt: skip
    slow.delay = 1.5  # well past two leases before the step even starts
    rival = Worker(
        open_engine_store(), steps_for(chunk, step), name="rival", lease=lease, heartbeat=NO_HEARTBEAT,
        poll_interval=0.05,
    )  # fmt: skip
    r = real_store.create("chunk")
    start_worker(slow)
    eventually(lambda: real_store.get(r.id).claimed_by == "slow", "the slow worker claimed the resource")
    first_expiry = real_store.get(r.id).claim_expires_at
    assert first_expiry is not None
    start_worker(rival)

    eventually(lambda: real_store.get(r.id).state == "done", "the slow worker finished")

    assert step.calls == [(r.id, "slow")], "the rival never took the queued claim over"
    assert real_store.get(r.id).data["by"] == "slow"
    assert (rival.stats.takeovers, slow.stats.claims_lost) == (0, 0)
    assert transitions_from(real_store, r.id, "todo") == [("finish", "slow")]


def test_a_claim_whose_step_has_not_started_when_the_stop_times_out_is_released_and_never_run(
    real_store: EngineStore, start_worker: Callable[[Worker], Worker], eventually: Eventually
) -> None:
    step = Recorder()
    worker = SlowToStart(real_store, steps_for(chunk, step), name="quitter", concurrency=1, poll_interval=0.05)
    worker.delay = 1.0
    r = real_store.create("chunk")
    start_worker(worker)
    eventually(lambda: real_store.get(r.id).claimed_by == "quitter", "the worker claimed the resource")

    worker.stop(timeout=0.1)

    released = real_store.get(r.id)
    assert (released.state, released.claim_token, released.claimed_by) == ("todo", None, None)
    eventually(worker.ran.is_set, "the pool thread got going")
    assert step.calls == [], "a released claim's step does not run"
    assert real_store.get(r.id).version == released.version

    successor = Worker(real_store, steps_for(chunk, Recorder()), name="successor")
    assert successor.tick() == 1
    after = real_store.get(r.id)
    assert (after.state, after.data["by"]) == ("done", "successor")
    assert transitions_from(real_store, r.id, "todo") == [("finish", "successor")]
