"""A resource's stay in a state: what keys flow runs and idempotency keys, on both stores.

Every attempt of a step in one stay sees the same stay version — retries, takeovers of a dead
worker's claim, a desired state set meanwhile — and every new entry into the state (a self-loop
included) starts a new one.
"""

from __future__ import annotations

from datetime import timedelta

from tenure import Event, Kind, Role, State
from tenure.engine.flows import step_run_id
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock

LEASE = timedelta(seconds=30)

looping = Kind(
    "looping",
    initial="work",
    states=[
        State("work", 1, Role.WORK, on_failure="fail"),
        State("rest", 2, Role.REST),
        State("failed", 3, Role.FINAL),
    ],
    events=[
        Event("again", "work", "work"),
        Event("pause", "work", "rest"),
        Event("resume", "rest", "work"),
        Event("fail", "work", "failed"),
    ],
)


def test_attempts_of_one_stay_share_it_and_each_entry_starts_a_new_one(store: EngineStore, clock: FakeClock) -> None:
    store.register(looping)
    r = store.create("looping")
    assert store.stay_version(r) == 1

    (claim,) = store.claim("w1", [("looping", "work")], limit=1, lease=LEASE)
    r = store.retry_later(claim, error="boom", at=clock.now, attempts=1)  # a retry bumps the version
    assert (r.version, store.stay_version(r)) == (2, 1)

    store.claim("w2", [("looping", "work")], limit=1, lease=LEASE)
    clock.advance(LEASE + timedelta(seconds=1))
    (taken,) = store.claim("w3", [("looping", "work")], limit=1, lease=LEASE)  # w2 died: a takeover
    assert taken.takeover
    assert store.stay_version(taken.resource) == 1
    assert step_run_id(store, taken.resource) == step_run_id(store, r)

    r = store.set_desired_state(r.id, "rest")  # bookkeeping: not a new stay
    assert store.stay_version(r) == 1

    r = store.fire(r.id, "again")  # a self-loop is a new entry
    assert store.stay_version(r) == r.version
    first_loop = r.version
    r = store.fire(r.id, "pause")
    r = store.fire(r.id, "resume")
    assert store.stay_version(r) == r.version != first_loop
