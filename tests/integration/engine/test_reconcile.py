"""The engine acting on desired state, on both stores: a resting resource is moved towards it, step by step.

The reconcile fires the first event of a shortest path; the kind's steps do the rest, and when the
resource comes to rest short of its desired state the reconcile goes on from there. It gives up (and
says why) when the resource comes back to a rest state it already left, or no path is left.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from tenure import (
    ANY,
    Backoff,
    ClaimLost,
    Conflict,
    Event,
    InvalidArgument,
    Kind,
    Role,
    State,
    Steps,
    Worker,
)
from tenure.engine import Advance, Fail, Resource, StepContext
from tenure.engine.provision import MemoryProvisioner
from tenure.engine.reconcile import Reconciler, rest_pairs
from tenure.engine.steps import advance_to
from tenure.kinds.image import image
from tenure.kinds.transfer import transfer_kind, transfer_steps
from tenure.store.claims import Claim
from tenure.store.desired import DESIRED_EVENT, DESIRED_FAILED_EVENT
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock, all_journal

pytestmark = pytest.mark.timeout(120)

LEASE = timedelta(seconds=30)
BACKOFF = Backoff(max_attempts=3, base=timedelta(seconds=1), cap=timedelta(seconds=10), jitter=0)

#: A lamp whose warming up always fails back to off: a reconcile to 'on' goes round in a circle.
lamp = Kind(
    "lamp",
    initial="off",
    states=[
        State("off", 1, Role.REST),
        State("warming", 2, Role.WORK, on_failure="cooled", retry=BACKOFF),
        State("on", 3, Role.REST),
        State("broken", 9, Role.FINAL),
    ],
    events=[
        Event("switch_on", "off", "warming"),
        Event("warmed", "warming", "on"),
        Event("cooled", "warming", "off"),
        Event("switch_off", "on", "off"),
        Event("smash", ["off", "on"], "broken"),
    ],
)


#: A disk is written by a step; it can break doing so, and from broken the only way is scrap.
disk = Kind(
    "disk",
    initial="blank",
    states=[
        State("blank", 1, Role.REST),
        State("writing", 2, Role.WORK, on_failure="break_down", retry=BACKOFF),
        State("ready", 3, Role.REST),
        State("archived", 4, Role.REST),
        State("broken", 5, Role.REST),
        State("gone", 9, Role.FINAL),
    ],
    events=[
        Event("write", "blank", "writing"),
        Event("written", "writing", "ready"),
        Event("break_down", "writing", "broken"),
        Event("archive", "ready", "archived"),
        Event("unarchive", "archived", "ready"),
        Event("scrap", ANY, "gone"),
    ],
)


@pytest.fixture
def store_url(reused_store_url: str) -> str:
    """Overrides the root conftest's: one database per module, emptied before each test."""
    return reused_store_url


def transfer_worker(store: EngineStore, memory: MemoryProvisioner | None = None) -> Worker:
    kind = transfer_kind(request_deadline=timedelta(minutes=1), retry=BACKOFF)
    return Worker(store, transfer_steps({"memory": memory or MemoryProvisioner()}, kind=kind), name="mover")


def started_transfer(store: EngineStore, worker: Worker) -> Resource:
    r = store.create("transfer", {"asset": "a-1"})
    worker.run_until_idle()
    started = store.get(r.id)
    assert started.state == "started"
    return started


def events(store: EngineStore, resource_id: str) -> list[str]:
    return [e.event for e in all_journal(store, resource_id)]


def test_rest_pairs_are_every_rest_state_of_the_kinds() -> None:
    assert rest_pairs([lamp, image]) == [
        ("image", "active"),
        ("image", "deactivated"),
        ("image", "killed"),
        ("image", "queued"),
        ("image", "uploading"),
        ("lamp", "off"),
        ("lamp", "on"),
    ]


# --- reaching it -----------------------------------------------------------------------------------


def test_a_transfer_is_driven_to_its_desired_state_and_the_generation_observed(store: EngineStore) -> None:
    memory = MemoryProvisioner()
    worker = transfer_worker(store, memory)
    r = started_transfer(store, worker)
    assert memory.made

    wish = store.set_desired_state(r, "deprovisioned", actor="client")
    assert wish.generation > wish.observed_generation
    worker.run_until_idle()

    done = store.get(r.id)
    assert (done.state, done.desired_state, done.error) == ("deprovisioned", "deprovisioned", None)
    assert done.observed_generation == done.generation == wish.generation
    assert memory.made == {}
    journal = all_journal(store, r.id)
    # The shortest way from started is by terminate (terminating can go straight to deprovisioning);
    # the kind's steps then take their usual way.
    tail = [e.event for e in journal[-5:]]
    assert tail == [DESIRED_EVENT, "terminate", "terminated", "deprovision", "deprovisioned"]
    assert done.data["ended"] == "terminated"
    hop = journal[-4]
    assert (hop.actor, hop.from_state, hop.detail) == (
        "mover",
        "started",
        {"reconcile": wish.generation, "desired_state": "deprovisioned"},
    )
    assert worker.stats.reconciled == 1
    assert worker.run_until_idle() == 0


def test_coming_to_rest_short_of_it_the_reconcile_goes_on(store: EngineStore) -> None:
    """blank -> (write) writing -> (its step) ready, at rest short of it -> (archive) archived."""
    store.register(disk)
    steps = Steps()
    steps.add(disk, "writing", advance_to("written"), retry_on=())
    worker = Worker(store, steps, name="mover")
    r = store.create("disk")
    wish = store.set_desired_state(r, "archived")

    worker.run_until_idle()

    done = store.get(r.id)
    assert (done.state, done.observed_generation) == ("archived", wish.generation)
    assert events(store, r.id) == ["@create", DESIRED_EVENT, "write", "written", "archive"]
    hops = [e.from_state for e in all_journal(store, r.id) if e.detail.get("reconcile") == wish.generation]
    assert hops == ["blank", "ready"]
    assert worker.stats.reconciled == 2


def test_a_desired_state_on_a_resource_at_work_waits_for_it_to_come_to_rest(store: EngineStore) -> None:
    worker = transfer_worker(store)
    r = store.create("transfer", {"asset": "a-1"})
    store.set_desired_state(r, "suspended")
    worker.run_until_idle()
    done = store.get(r.id)
    assert (done.state, done.observed_generation) == ("suspended", done.generation)
    assert events(store, r.id)[-3:] == ["started", "suspend", "suspended"]


def test_desiring_the_current_state_is_a_no_op(store: EngineStore) -> None:
    worker = transfer_worker(store)
    r = started_transfer(store, worker)
    wish = store.set_desired_state(r, "started")
    assert wish.observed_generation == wish.generation
    assert worker.run_until_idle() == 0
    assert store.get(r.id) == wish


def test_an_unreachable_desired_state_is_refused(store: EngineStore) -> None:
    worker = transfer_worker(store)
    r = started_transfer(store, worker)
    with pytest.raises(InvalidArgument) as caught:
        store.set_desired_state(r, "provisioning")
    assert caught.value.field == "desired_state"
    assert "reachable from state 'started'" in caught.value.constraint
    assert worker.run_until_idle() == 0
    assert store.get(r.id) == r


def test_a_background_worker_acts_on_a_desired_state_set_while_it_idles(
    real_store: EngineStore,
    start_worker: Callable[[Worker], Worker],
    eventually: Callable[[Callable[[], object], str], None],
) -> None:
    real_store.register(lamp)
    steps = Steps()
    steps.add(lamp, "warming", advance_to("warmed"), retry_on=())
    r = real_store.create("lamp")
    start_worker(Worker(real_store, steps, name="bg", poll_interval=5.0))
    real_store.set_desired_state(r, "on")
    eventually(lambda: real_store.get(r.id).state == "on", "the lamp is switched on")
    done = real_store.get(r.id)
    assert done.observed_generation == done.generation


# --- giving up -------------------------------------------------------------------------------------


def test_coming_back_to_a_rest_state_already_left_gives_up(store: EngineStore) -> None:
    store.register(lamp)
    steps = Steps()
    steps.add(lamp, "warming", advance_to("cooled"), retry_on=())
    worker = Worker(store, steps, name="mover")
    r = store.create("lamp")
    wish = store.set_desired_state(r, "on")

    worker.run_until_idle()

    after = store.get(r.id)
    assert after.state == "off"
    assert after.error == "desired state 'on' not reached: the resource came back to state 'off'"
    assert after.observed_generation == wish.generation
    assert after.next_attempt_at is None
    assert events(store, r.id) == ["@create", DESIRED_EVENT, "switch_on", "cooled", DESIRED_FAILED_EVENT]
    last = all_journal(store, r.id)[-1]
    assert last.detail == {"desired_state": "on", "generation": wish.generation, "error": after.error}
    assert (worker.stats.reconciled, worker.stats.desired_given_up) == (1, 1)
    assert worker.run_until_idle() == 0

    # A new generation tries again.
    again = store.set_desired_state(after, "on")
    worker.run_until_idle()
    assert store.get(r.id).observed_generation == again.generation
    assert worker.stats.desired_given_up == 2


def test_no_path_left_gives_up(store: EngineStore) -> None:
    """blank -> (write) writing, whose step breaks it; from broken there is no way to archived."""

    def break_down(resource: Resource, ctx: StepContext) -> Fail:
        return Fail("disk full")

    store.register(disk)
    steps = Steps()
    steps.add(disk, "writing", break_down, retry_on=())
    worker = Worker(store, steps, name="mover")
    r = store.create("disk")
    store.set_desired_state(r, "archived")

    worker.run_until_idle()

    after = store.get(r.id)
    assert after.state == "broken"
    assert after.error == "desired state 'archived' not reached: it cannot be reached from state 'broken'"
    assert after.observed_generation == after.generation
    assert events(store, r.id)[-3:] == ["write", "break_down", DESIRED_FAILED_EVENT]


def test_a_guard_refusing_the_way_gives_up(store: EngineStore) -> None:
    worker = Worker(store, Steps(), name="mover")
    r = store.create("job")
    r = store.fire(store.fire(r, "request"), "callback")
    assert r.state == "held"
    store.set_desired_state(r, "done")

    worker.run_until_idle()

    after = store.get(r.id)
    assert after.state == "held"
    assert after.error is not None
    assert after.error.startswith("desired state 'done' not reached: event 'finish' from state 'held' was refused")
    assert after.observed_generation == after.generation


def test_a_final_state_short_of_it_ends_the_generation(store: EngineStore) -> None:
    worker = transfer_worker(store)
    r = started_transfer(store, worker)
    store.set_desired_state(r, "suspended")
    store.fire(r.id, "terminate", actor="client")  # the client wins the race to the next event
    worker.run_until_idle()
    done = store.get(r.id)
    assert done.state == "deprovisioned"
    assert done.observed_generation == done.generation


# --- races -----------------------------------------------------------------------------------------


def test_a_client_event_after_the_reconcile_claimed_wins_and_the_reconcile_is_refused(store: EngineStore) -> None:
    worker = transfer_worker(store)
    r = started_transfer(store, worker)
    store.set_desired_state(r, "deprovisioned")
    (claim,) = store.claim("mover", [("transfer", "started")], lease=LEASE)

    store.fire(r.id, "suspend", actor="client")
    worker.run_claim(claim)

    assert worker.stats.claims_lost == 1
    assert store.get(r.id).state == "suspending"
    worker.run_until_idle()  # suspended, short of it: the reconcile goes on from there
    done = store.get(r.id)
    assert (done.state, done.observed_generation) == ("deprovisioned", done.generation)
    assert "suspend" in events(store, r.id)


def test_a_reconcile_first_makes_the_client_event_on_the_old_snapshot_conflict(store: EngineStore) -> None:
    worker = transfer_worker(store)
    r = started_transfer(store, worker)
    snapshot = store.set_desired_state(r, "deprovisioned")
    (claim,) = store.claim("mover", [("transfer", "started")], lease=LEASE)
    worker.run_claim(claim)
    with pytest.raises(Conflict) as caught:
        store.fire(snapshot, "suspend", actor="client")
    assert caught.value.actual_state == "terminating"


def test_a_new_desired_state_while_a_reconcile_holds_the_claim_is_acted_on_at_once(
    store: EngineStore, clock: FakeClock
) -> None:
    worker = transfer_worker(store)
    r = started_transfer(store, worker)
    store.set_desired_state(r, "deprovisioned")
    (claim,) = store.claim("mover", [("transfer", "started")], lease=LEASE)
    newer = store.set_desired_state(r.id, "suspended")
    assert store.get(r.id).claim_token == claim.token  # left alone by the write

    worker.run_claim(claim)  # its write is refused; the claim is handed back, due now

    assert worker.stats.claims_lost == 1
    released = store.get(r.id)
    assert (released.claim_token, released.next_attempt_at) == (None, clock.now)
    worker.run_until_idle()  # no lease had to expire
    done = store.get(r.id)
    assert (done.state, done.observed_generation) == ("suspended", newer.generation)


def test_a_desire_cleared_while_claimed_leaves_the_resource_idle(store: EngineStore) -> None:
    worker = transfer_worker(store)
    r = started_transfer(store, worker)
    store.set_desired_state(r, "deprovisioned")
    (claim,) = store.claim("mover", [("transfer", "started")], lease=LEASE)
    store.set_desired_state(r.id, None)
    worker.run_claim(claim)  # refused (the version moved); handed back, due now
    assert store.get(r.id).next_attempt_at is not None
    worker.run_until_idle()  # claimed again: nothing pending, so given back idle
    after = store.get(r.id)
    assert (after.state, after.claim_token, after.next_attempt_at) == ("started", None, None)
    assert (worker.stats.reconciled, worker.stats.desired_given_up) == (0, 0)
    assert Reconciler(store, actor="x").handles(after)


@dataclass
class RaceRound:
    """One round of the race: who writes first, and what each side waits on before its write."""

    #: "reconcile first", "client first", or "at once" (both released by one barrier).
    turn: str
    reconcile_wrote: threading.Event = field(default_factory=threading.Event)
    client_wrote: threading.Event = field(default_factory=threading.Event)
    barrier: threading.Barrier = field(default_factory=lambda: threading.Barrier(2, timeout=30))

    def before_the_reconcile_writes(self) -> None:
        if self.turn == "client first":
            assert self.client_wrote.wait(30), "the client never wrote"
        elif self.turn == "at once":
            self.barrier.wait()

    def before_the_client_writes(self) -> None:
        if self.turn == "reconcile first":
            assert self.reconcile_wrote.wait(30), "the reconcile never wrote"
        elif self.turn == "at once":
            self.barrier.wait()


RACE_TURNS = ("reconcile first", "client first", "at once")


def test_a_client_event_racing_a_reconcile_exactly_one_wins(
    store: EngineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """image: active with desired deleted; the reconcile fires delete while a client fires deactivate.

    In every round both writers hold the same version before either writes: the reconcile has claimed
    the resource and chosen its event, the client has its snapshot. Then the reconcile writes first,
    the client writes first, or both are released by one barrier; whoever writes first wins, and the
    other is refused: the client with a Conflict, the reconcile with its claim lost.
    """
    worker = Worker(store, Steps(), name="mover")
    real_fire_claimed = store.fire_claimed
    rounds: list[RaceRound] = []

    def fire_claimed(claim: Claim, event: str, **kwargs: Any) -> Resource:
        now = rounds[-1]
        now.before_the_reconcile_writes()
        try:
            return real_fire_claimed(claim, event, **kwargs)
        finally:
            now.reconcile_wrote.set()

    monkeypatch.setattr(store, "fire_claimed", fire_claimed)
    winners: list[tuple[str, str]] = []
    for n, turn in enumerate(RACE_TURNS * 4):
        r = store.create("image", {"name": f"r{n}"})
        r = store.fire(store.fire(r, "upload"), "activate")
        snapshot = store.set_desired_state(r, "deleted")
        (claim,) = store.claim("mover", [("image", "active")], lease=LEASE)
        assert claim.resource.version == snapshot.version
        now = RaceRound(turn)
        rounds.append(now)
        client: list[BaseException | Resource] = []

        def fire_as_client(
            snapshot: Resource = snapshot, now: RaceRound = now, client: list[BaseException | Resource] = client
        ) -> None:
            try:
                now.before_the_client_writes()
                client.append(store.fire(snapshot, "deactivate", actor="client"))
            except BaseException as exc:
                client.append(exc)
            finally:
                now.client_wrote.set()

        lost_before = worker.stats.claims_lost
        thread = threading.Thread(target=fire_as_client)
        thread.start()
        worker.run_claim(claim)
        thread.join(30)

        after = store.get(r.id)
        (answer,) = client
        if after.state == "deleted":
            winners.append((turn, "reconcile"))
            assert isinstance(answer, Conflict), answer
            assert not isinstance(answer, ClaimLost)
            assert worker.stats.claims_lost == lost_before
            assert (answer.actual_version, answer.actual_state) == (snapshot.version + 1, "deleted")
        else:
            winners.append((turn, "client"))
            assert after.state == "deactivated"
            assert isinstance(answer, Resource), answer
            assert worker.stats.claims_lost == lost_before + 1
            assert after.claim_token is None, "the refused reconcile handed its claim back"
        assert after.version == snapshot.version + 1, "exactly one of the two writes got in"
        journal = all_journal(store, r.id)
        assert [e.version for e in journal] == list(range(1, after.version + 1))

    # Whoever was made to write first won, so each side won rounds; racing freely, either may win.
    forced = {(turn, winner) for turn, winner in winners if turn != "at once"}
    assert forced == {("reconcile first", "reconcile"), ("client first", "client")}, winners
    assert {winner for _, winner in winners} == {"reconcile", "client"}, winners


def test_advance_steps_still_work_beside_reconciles(store: EngineStore) -> None:
    """A work state's own step is not mistaken for a reconcile."""
    store.register(lamp)
    steps = Steps()
    steps.add(lamp, "warming", lambda resource, ctx: Advance("warmed"), retry_on=())
    worker = Worker(store, steps, name="mover")
    r = store.fire(store.create("lamp"), "switch_on")
    worker.run_until_idle()
    assert store.get(r.id).state == "on"
    assert worker.stats.reconciled == 0
