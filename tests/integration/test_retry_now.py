"""Retry now, on both stores: an operator makes the next attempt of a step backing off due at once.

Only a resource whose step backs off after a failed attempt can be retried now: in a work state, or
in a rest state on its way to a desired state (a rest state's step serves such a wish), with its
next attempt scheduled later. The write bumps the version, journals ``@retry-now`` with the schedule
it replaced, keeps the state, the attempts and the last error, and a worker claims the resource at
once. Every other case is refused with RetryNotAllowed naming the state and its role, and writes
nothing; a pinned version is a compare-and-swap like every client write, and an unpinned one that
loses every race gives up with a Conflict, as every blind write does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest

from tenure import Conflict, ResourceNotFound, RetryNotAllowed, open_store
from tenure.store.claims import Claim
from tenure.store.model import Resource
from tenure.store.protocol import EngineStore
from tenure.store.resources import BLIND_FIRE_ATTEMPTS
from tenure.store.sharing import USE_EVENT
from tenure.store.write import RETRY_EVENT, RETRY_NOW_EVENT
from tests.conftest import KINDS
from tests.store_support import FakeClock, all_journal

pytestmark = pytest.mark.timeout(120)

LEASE = timedelta(seconds=30)
BACKOFF = timedelta(hours=1)
PENDING = [("job", "pending")]


@pytest.fixture
def store_url(reused_store_url: str) -> str:
    """Overrides the root conftest's: one database per module, emptied before each test."""
    return reused_store_url


def claim_one(store: EngineStore) -> Claim:
    claims = store.claim("w1", PENDING, lease=LEASE)
    assert len(claims) == 1, claims
    return claims[0]


def backing_off(store: EngineStore, clock: FakeClock) -> Resource:
    """A ``job`` whose first attempt failed, its next one scheduled an hour from now."""
    r = store.create("job")
    claim = claim_one(store)
    after = store.retry_later(claim, error="the provider said 503", at=clock.now + BACKOFF, attempts=1, actor="w1")
    assert after.id == r.id
    assert store.claim("w1", PENDING, lease=LEASE) == []  # not due before the backoff is over
    return after


def unchanged(store: EngineStore, expected: Resource) -> None:
    """The row is exactly ``expected`` and its journal ends at that version."""
    assert store.get(expected.id) == expected
    journal = all_journal(store, expected.id)
    assert journal[-1].version == expected.version == len(journal)


def test_a_step_backing_off_becomes_due_now(store: EngineStore, clock: FakeClock) -> None:
    before = backing_off(store, clock)
    clock.advance(timedelta(minutes=2))
    seen = store.signal.seq

    after = store.retry_now(before.id, actor="ops")

    assert store.signal.seq > seen, "workers are woken"
    assert store.get(before.id) == after
    assert (after.state, after.version, after.next_attempt_at, after.updated_at) == (
        "pending",
        before.version + 1,
        clock.now,
        clock.now,
    )
    # What the failed attempt left stays: the attempt made now counts against the budget.
    assert (after.attempts, after.error, after.entered_at) == (1, "the provider said 503", before.entered_at)
    journal = all_journal(store, before.id)
    assert [e.event for e in journal] == ["@create", RETRY_EVENT, RETRY_NOW_EVENT]
    entry = journal[-1]
    assert (entry.version, entry.from_state, entry.to_state, entry.actor, entry.at) == (
        after.version,
        "pending",
        "pending",
        "ops",
        clock.now,
    )
    assert entry.detail == {
        "previous_next_attempt_at": (clock.now - timedelta(minutes=2) + BACKOFF).isoformat(),
        "attempts": 1,
    }
    # A worker takes it at once, and the attempt count goes on from where it was.
    claim = claim_one(store)
    assert (claim.resource.id, claim.resource.version, claim.resource.attempts) == (after.id, after.version, 1)


def test_a_pinned_retry_now_is_a_compare_and_swap(store: EngineStore, clock: FakeClock) -> None:
    before = backing_off(store, clock)

    with pytest.raises(Conflict) as refused:
        store.retry_now(before.id, expected_version=before.version - 1, actor="ops")
    assert (refused.value.expected_version, refused.value.actual_version) == (before.version - 1, before.version)
    assert refused.value.actual_state == "pending"
    unchanged(store, before)

    after = store.retry_now(before.id, expected_version=before.version, actor="ops")
    assert after.version == before.version + 1
    with pytest.raises(Conflict):  # the same page pressed twice: the second is stale
        store.retry_now(before.id, expected_version=before.version, actor="ops")
    unchanged(store, after)


def test_a_resource_with_no_step_backing_off_is_refused_with_its_state_and_role(
    store: EngineStore, clock: FakeClock
) -> None:
    resting = store.create("image", {"name": "disk"})
    due = store.create("job")  # a new job's first attempt is due at once
    waiting = store.fire(store.create("job").id, "request")
    final = store.fire(store.create("image", {"name": "gone"}).id, "delete")
    # a rest state on its way to a desired state, its step due at once (not backing off)
    wished = store.set_desired_state(store.create("image", {"name": "wished"}).id, "deleted")
    cases = [
        (resting, "rest", "no desired state is pending, so no step runs there"),
        (due, "work", f"its next attempt is due already (since {clock.now.isoformat()})"),
        (waiting, "wait", "no step runs there"),
        (final, "final", "no step runs there"),
        (wished, "rest", f"its next attempt is due already (since {clock.now.isoformat()})"),
    ]
    for r, role, reason in cases:
        with pytest.raises(RetryNotAllowed) as refused:
            store.retry_now(r.id, actor="ops")
        err = refused.value
        assert (err.resource_id, err.kind, err.state, err.role, err.reason) == (r.id, r.kind, r.state, role, reason)
        message = str(err)
        assert f"in state {r.state!r} (role: {role})" in message
        assert (
            "accepted only for a resource in a work state, or a rest state on its way to a desired state, whose "
            "next attempt is scheduled later"
        ) in message
        unchanged(store, r)


def test_a_resource_a_worker_holds_is_refused(store: EngineStore, clock: FakeClock) -> None:
    store.create("job")
    claim = claim_one(store)

    with pytest.raises(RetryNotAllowed) as refused:
        store.retry_now(claim.resource.id, actor="ops")

    assert (
        refused.value.reason == f"worker w1 is running its step now (claimed until {(clock.now + LEASE).isoformat()})"
    )
    unchanged(store, claim.resource)
    # the worker's own write still holds: nothing moved under it
    assert store.retry_later(claim, error="boom", at=clock.now + BACKOFF, attempts=1).version == 2


def test_an_unknown_resource_is_not_found(store: EngineStore) -> None:
    for rid in ("nobody", "bad\x00id"):
        with pytest.raises(ResourceNotFound):
            store.retry_now(rid, actor="ops")


def race(store: EngineStore, before: Resource, *, pinned: bool, racers: int = 4) -> list[object]:
    """What each of ``racers`` threads pressing retry now at once got: the resource, or the error."""
    start = threading.Barrier(racers)
    outcomes: list[object] = []
    lock = threading.Lock()

    def press() -> None:
        start.wait()
        try:
            result: object = store.retry_now(
                before.id, expected_version=before.version if pinned else None, actor="ops"
            )
        except (Conflict, RetryNotAllowed) as exc:
            result = exc
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=press) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_racing_operators_make_one_retry_now(store: EngineStore, clock: FakeClock, pinned: bool) -> None:
    """Pinned or not, several operators pressing at once write once; the others hear why not."""
    before = backing_off(store, clock)

    outcomes = race(store, before, pinned=pinned, racers=4)

    assert len(outcomes) == 4, outcomes  # every thread reported
    won = [o for o in outcomes if isinstance(o, Resource)]
    assert len(won) == 1, outcomes
    lost = [o for o in outcomes if not isinstance(o, Resource)]
    # Pinned, a loser's version is stale; unpinned, it reads again and finds the step due already.
    assert all(isinstance(o, Conflict if pinned else RetryNotAllowed) for o in lost), lost
    unchanged(store, won[0])
    assert [e.event for e in all_journal(store, before.id)].count(RETRY_NOW_EVENT) == 1


def test_a_rest_state_backing_off_on_its_way_to_a_desired_state_is_retried_now(
    store: EngineStore, clock: FakeClock
) -> None:
    """A rest state's step (leaving it takes work) backs off like a work state's: it can be retried now."""
    wished = store.set_desired_state(store.create("image", {"name": "disk"}).id, "deleted", actor="ops")
    claims = store.claim("w1", [("image", "queued")], lease=LEASE)
    assert [c.resource.id for c in claims] == [wished.id]
    before = store.retry_later(claims[0], error="the data plane said 503", at=clock.now + BACKOFF, attempts=1)
    assert (before.state, before.desired_state, before.next_attempt_at) == ("queued", "deleted", clock.now + BACKOFF)
    assert store.claim("w1", [("image", "queued")], lease=LEASE) == []
    clock.advance(timedelta(minutes=1))

    after = store.retry_now(before.id, expected_version=before.version, actor="ops")

    assert (after.state, after.version, after.next_attempt_at, after.attempts, after.error) == (
        "queued",
        before.version + 1,
        clock.now,
        1,
        "the data plane said 503",
    )
    assert all_journal(store, before.id)[-1].event == RETRY_NOW_EVENT
    assert [c.resource.id for c in store.claim("w1", [("image", "queued")], lease=LEASE)] == [before.id]


class MeddlingClock(FakeClock):
    """A clock that, while ``meddle`` is set, calls it each time it is read: another writer's turn."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.meddle: Callable[[], object] | None = None

    def __call__(self) -> datetime:
        if self.meddle is not None:
            self.meddle()
        return self.now


@pytest.fixture
def meddled(store_url: str, store: EngineStore, clock: FakeClock) -> Iterator[tuple[EngineStore, MeddlingClock]]:
    """Another store over the same database, whose clock lets ``store`` write first each time it is read."""
    meddling = MeddlingClock(clock.now)
    other = open_store(store_url, KINDS, clock=meddling, check_schema=False)
    try:
        yield other, meddling
    finally:
        other.close()


def test_an_unpinned_retry_now_that_loses_every_race_is_a_conflict(
    store: EngineStore, clock: FakeClock, meddled: tuple[EngineStore, MeddlingClock]
) -> None:
    """Each time it plans, another writer moves the resource on first: it reads again, a bounded number of
    times, then gives up with a Conflict and writes nothing, as every blind write does."""
    before = backing_off(store, clock)
    other, meddling = meddled
    renewals: list[Resource] = []
    meddling.meddle = lambda: renewals.append(
        store.use(before.id, "urn:example:renewer", ttl=timedelta(hours=1), client="ops", admin=True)
    )

    with pytest.raises(Conflict) as refused:
        other.retry_now(before.id, actor="ops")

    meddling.meddle = None
    assert len(renewals) == BLIND_FIRE_ATTEMPTS  # one plan per try, each overtaken
    last = renewals[-1]
    assert (refused.value.expected_version, refused.value.actual_version) == (last.version - 1, last.version)
    journal = all_journal(store, before.id)
    assert [e.event for e in journal][-BLIND_FIRE_ATTEMPTS - 1 :] == [RETRY_EVENT] + [USE_EVENT] * BLIND_FIRE_ATTEMPTS
    unchanged(store, last)
    assert last.next_attempt_at == before.next_attempt_at  # still backing off
