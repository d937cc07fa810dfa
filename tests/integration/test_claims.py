"""Claims and the engine's fenced writes, on both stores.

A worker claims due resources (a token, its name and an expiry on the row; no version bump, no
journal row), renews or releases its claims, and writes only while its claim holds: a late write after
a takeover, or after somebody else moved the resource, is refused with ClaimLost and writes nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from tenure import (
    ANY,
    Backoff,
    ClaimLost,
    Conflict,
    Event,
    InvalidArgument,
    Kind,
    Resource,
    Role,
    State,
    TransitionNotAllowed,
    open_store,
)
from tenure.store.claims import RETRY_EVENT, Agenda, Claim, WaitPlan
from tenure.store.inbox import token_hash
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock, all_journal

pytestmark = pytest.mark.timeout(120)

#: How long the ticket kind's wait state waits.
TICKET_WAIT = timedelta(minutes=1)
LEASE = timedelta(seconds=30)
TINY = timedelta(microseconds=1)

ticket = Kind(
    "ticket",
    initial="queued",
    states=[
        State(
            "queued",
            1,
            Role.WORK,
            on_failure="fail",
            retry=Backoff(max_attempts=3, base=timedelta(seconds=2), cap=timedelta(seconds=30), jitter=0),
        ),
        State("building", 2, Role.WORK, on_failure="fail"),
        State("awaiting", 3, Role.WAIT, deadline=TICKET_WAIT, on_deadline="time_out"),
        State("ready", 4, Role.REST),
        State("failed", 8, Role.FINAL),
        State("timed_out", 9, Role.FINAL),
    ],
    events=[
        Event("build", "queued", "building"),
        Event("ask", ["queued", "building"], "awaiting"),
        Event("answered", "awaiting", "ready"),
        Event("again", "awaiting", "queued"),
        Event("time_out", "awaiting", "timed_out"),
        Event("rebuild", "ready", "queued"),
        Event("fail", ["queued", "building"], "failed"),
        Event("cancel", ANY, "failed"),
    ],
)

QUEUED = [("ticket", "queued")]
RULES = {"done": "answered", "failed": "cancel", "retry": "again", "data_key": "defs"}


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def store_url(reused_store_url: str) -> str:
    """Overrides the root conftest's: one database per module, emptied before each test."""
    return reused_store_url


@pytest.fixture
def s(store: EngineStore) -> EngineStore:
    """The migrated store of each dialect, also knowing the ticket kind."""
    store.register(ticket)
    return store


def claim_one(s: EngineStore, worker: str = "w1", due: Sequence[tuple[str, str]] = QUEUED) -> Claim:
    claims = s.claim(worker, due, lease=LEASE)
    assert len(claims) == 1, claims
    return claims[0]


def expiry(c: Claim) -> datetime:
    expires = c.resource.claim_expires_at
    assert expires is not None
    return expires


def unchanged(s: EngineStore, expected: Resource) -> None:
    """The row is exactly ``expected`` and its journal ends at that version."""
    assert s.get(expected.id) == expected
    journal = all_journal(s, expected.id)
    assert journal[-1].version == expected.version == len(journal)


# --- claiming ------------------------------------------------------------------------------------


def test_a_new_work_resource_is_claimed_at_once(s: EngineStore, clock: FakeClock) -> None:
    r = s.create("ticket", data={"n": 1})
    c = claim_one(s, "w1")
    assert c.takeover is False
    assert c.resource.id == r.id
    assert c.token == c.resource.claim_token
    assert len(c.token) >= 16
    assert (c.resource.claimed_by, c.resource.claim_expires_at) == ("w1", clock.now + LEASE)
    assert s.get(r.id) == c.resource, "the claim's snapshot is the row as claimed"


def test_claiming_neither_bumps_the_version_nor_journals(s: EngineStore) -> None:
    r = s.create("ticket")
    feed_before = s.feed()
    c = claim_one(s)
    assert c.resource.version == r.version == 1
    assert (c.resource.state, c.resource.data, c.resource.next_attempt_at) == (r.state, r.data, r.next_attempt_at)
    assert [e.event for e in all_journal(s, r.id)] == ["@create"]
    assert s.feed() == feed_before


def test_claim_honours_the_due_time(s: EngineStore, clock: FakeClock) -> None:
    s.create("ticket")
    c = claim_one(s)
    later = clock.now + timedelta(seconds=10)
    s.retry_later(c, error="not yet", at=later, attempts=1)
    assert s.claim("w1", QUEUED, lease=LEASE) == []
    clock.now = later - TINY
    assert s.claim("w1", QUEUED, lease=LEASE) == []
    clock.now = later
    assert claim_one(s).resource.next_attempt_at == later


def test_only_the_given_kinds_and_states_are_claimed(s: EngineStore) -> None:
    queued = s.create("ticket")
    building = s.fire(s.create("ticket"), "build")
    job = s.create("job")
    s.fire(s.create("ticket"), "ask")  # a wait state: a deadline, nothing to claim
    s.fire(s.fire(s.create("ticket"), "ask"), "answered")  # a rest state

    assert claim_one(s, due=[("ticket", "building")]).resource.id == building.id
    assert claim_one(s, due=[("job", "pending")]).resource.id == job.id
    assert s.claim("w", [("ticket", "awaiting"), ("ticket", "ready"), ("job", "queued")], lease=LEASE) == []
    assert s.claim("w", [], lease=LEASE) == []
    assert claim_one(s, due=[("ticket", "queued"), ("ticket", "building")]).resource.id == queued.id


def test_limit_caps_each_claim(s: EngineStore, clock: FakeClock) -> None:
    ids = []
    for _ in range(5):
        ids.append(s.create("ticket").id)
        clock.advance()
    first = s.claim("w", QUEUED, limit=2, lease=LEASE)
    rest = s.claim("w", QUEUED, limit=10, lease=LEASE)
    assert [c.resource.id for c in first] == ids[:2]
    assert [c.resource.id for c in rest] == ids[2:]
    assert s.claim("w", QUEUED, limit=10, lease=LEASE) == []
    assert len({c.token for c in first + rest}) == 5, "every claim gets its own token"


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_limit_must_be_between_1_and_1000(s: EngineStore, limit: int) -> None:
    s.create("ticket")
    with pytest.raises(InvalidArgument) as info:
        s.claim("w", QUEUED, limit=limit, lease=LEASE)
    assert (info.value.field, info.value.got) == ("limit", limit)
    assert claim_one(s).resource.claimed_by == "w1", "the refused claim took nothing"


@pytest.mark.parametrize("lease", [timedelta(0), timedelta(seconds=-5)])
def test_lease_must_be_positive(s: EngineStore, lease: timedelta) -> None:
    s.create("ticket")
    with pytest.raises(InvalidArgument) as info:
        s.claim("w", QUEUED, lease=lease)
    assert info.value.field == "lease"
    claim_one(s)


def test_claims_come_oldest_due_first(s: EngineStore, clock: FakeClock) -> None:
    t0 = clock.now
    made: dict[int, str] = {}
    for offset in (3, 1, 4, 0, 2):
        clock.now = t0 + timedelta(seconds=offset)
        made[offset] = s.create("ticket").id
    clock.now = t0 + timedelta(seconds=10)
    assert [c.resource.id for c in s.claim("w", QUEUED, limit=2, lease=LEASE)] == [made[0], made[1]]
    claims = s.claim("w", QUEUED, limit=10, lease=LEASE)
    assert [c.resource.id for c in claims] == [made[2], made[3], made[4]]
    assert [c.resource.next_attempt_at for c in claims] == [t0 + timedelta(seconds=n) for n in (2, 3, 4)]


def test_a_rescheduled_resource_goes_behind_the_others(s: EngineStore, clock: FakeClock) -> None:
    a = s.create("ticket")
    clock.advance()
    b = s.create("ticket")
    [c] = s.claim("w", QUEUED, limit=1, lease=LEASE)
    assert c.resource.id == a.id
    s.retry_later(c, error="later", at=clock.now + timedelta(seconds=5), attempts=1)
    clock.advance(timedelta(seconds=10))
    assert [x.resource.id for x in s.claim("w", QUEUED, lease=LEASE)] == [b.id, a.id]


def test_a_live_claim_is_skipped_by_everybody(s: EngineStore, clock: FakeClock) -> None:
    s.create("ticket")
    c = claim_one(s, "w1")
    assert s.claim("w2", QUEUED, lease=LEASE) == []
    assert s.claim("w1", QUEUED, lease=LEASE) == [], "not even its holder claims it twice"
    clock.now = expiry(c) - TINY
    assert s.claim("w2", QUEUED, lease=LEASE) == []
    assert s.get(c.resource.id) == c.resource


def test_an_expired_claim_is_taken_over_with_a_new_token(s: EngineStore, clock: FakeClock) -> None:
    r = s.create("ticket")
    old = claim_one(s, "w1")
    clock.now = expiry(old)
    new = claim_one(s, "w2")
    assert new.takeover is True
    assert new.token != old.token
    assert (new.resource.claimed_by, new.resource.claim_expires_at) == ("w2", clock.now + LEASE)
    assert new.resource.version == old.resource.version == r.version
    assert [e.event for e in all_journal(s, r.id)] == ["@create"]
    assert s.get(r.id) == new.resource


# --- renewing and releasing ----------------------------------------------------------------------


def test_renew_extends_only_the_claims_still_held(s: EngineStore, clock: FakeClock) -> None:
    for _ in range(4):
        s.create("ticket")
    a, b, c = s.claim("w1", QUEUED, limit=3, lease=LEASE)
    other = claim_one(s, "w2")
    stranger = Claim(dataclasses.replace(other.resource, claim_token="no-such-token"))
    s.fire(b.resource, "cancel")  # a client moved b on: its claim is gone
    clock.advance(timedelta(seconds=20))

    held = s.renew([a, b, c, stranger], lease=timedelta(minutes=2))
    assert held == {a.token, c.token}
    for claim in (a, c):
        assert s.get(claim.resource.id).claim_expires_at == clock.now + timedelta(minutes=2)
    assert s.get(other.resource.id) == other.resource, "another worker's claim is not touched"
    assert s.get(a.resource.id).version == 1
    assert len(all_journal(s, a.resource.id)) == 1
    assert s.renew([], lease=LEASE) == set()


def test_renew_reports_a_claim_taken_over_as_lost(s: EngineStore, clock: FakeClock) -> None:
    s.create("ticket")
    old = claim_one(s, "w1")
    clock.advance(LEASE)
    new = claim_one(s, "w2")
    assert s.renew([old], lease=LEASE) == set()
    assert s.get(new.resource.id) == new.resource
    assert s.renew([old, new], lease=LEASE) == {new.token}


def test_a_renewed_claim_is_not_taken_over_at_its_first_expiry(s: EngineStore, clock: FakeClock) -> None:
    s.create("ticket")
    c = claim_one(s, "w1")
    clock.advance(LEASE - TINY)
    assert s.renew([c], lease=LEASE) == {c.token}
    clock.advance(TINY)
    assert s.claim("w2", QUEUED, lease=LEASE) == []
    clock.advance(LEASE)
    assert claim_one(s, "w2").takeover


def test_an_expired_claim_nobody_took_over_is_still_held(s: EngineStore, clock: FakeClock) -> None:
    """Fencing is by token and version, not by the clock: until somebody takes it over, it holds."""
    s.create("ticket")
    c = claim_one(s)
    clock.advance(LEASE * 3)
    assert s.renew([c], lease=LEASE) == {c.token}
    after = s.fire_claimed(c, "build")
    assert after.state == "building"


def test_release_makes_the_resource_due_again_at_once(s: EngineStore, clock: FakeClock) -> None:
    r = s.create("ticket")
    c = claim_one(s, "w1")
    clock.advance(timedelta(seconds=5))
    assert s.release(c) is True
    row = s.get(r.id)
    assert (row.claim_token, row.claimed_by, row.claim_expires_at) == (None, None, None)
    assert row.next_attempt_at == clock.now
    assert row.version == 1
    assert [e.event for e in all_journal(s, r.id)] == ["@create"]
    again = claim_one(s, "w2")
    assert (again.resource.id, again.takeover) == (r.id, False)


def test_releasing_a_lost_claim_changes_nothing(s: EngineStore, clock: FakeClock) -> None:
    s.create("ticket")
    old = claim_one(s, "w1")
    clock.advance(LEASE)
    new = claim_one(s, "w2")
    assert s.release(old) is False
    assert s.get(new.resource.id) == new.resource
    assert s.release(new) is True
    assert s.release(new) is False


def test_release_wakes_the_store_own_waiters(s: EngineStore) -> None:
    s.create("ticket")
    c = claim_one(s)
    seen = s.signal.seq
    assert s.release(c)
    assert s.signal.seq > seen


# --- fenced writes -------------------------------------------------------------------------------


def test_fire_claimed_writes_the_transition_and_drops_the_claim(s: EngineStore, clock: FakeClock) -> None:
    r = s.create("ticket", data={"keep": 1})
    c = claim_one(s)
    clock.advance(timedelta(seconds=3))
    seen = s.signal.seq
    after = s.fire_claimed(c, "build", data={"step": "one"}, actor="w1", detail={"attempt": 1})
    assert (after.state, after.version, after.data) == ("building", 2, {"keep": 1, "step": "one"})
    assert (after.claim_token, after.claimed_by, after.claim_expires_at) == (None, None, None)
    assert (after.next_attempt_at, after.entered_at, after.attempts, after.error) == (clock.now, clock.now, 0, None)
    assert s.get(r.id) == after
    last = all_journal(s, r.id)[-1]
    assert (last.version, last.event, last.from_state, last.to_state, last.actor, last.at) == (
        2,
        "build",
        "queued",
        "building",
        "w1",
        clock.now,
    )
    assert last.detail == {"attempt": 1}
    assert s.signal.seq > seen, "entering a work state is work for somebody"


def test_fire_claimed_into_a_wait_opens_the_wait_in_the_same_write(s: EngineStore, clock: FakeClock) -> None:
    r = s.create("ticket")
    c = claim_one(s)
    hashed = token_hash("secret-1")
    after = s.fire_claimed(c, "ask", wait=WaitPlan(hashed, ("a", "b"), RULES), error="asked")
    assert (after.state, after.deadline, after.next_attempt_at, after.error) == (
        "awaiting",
        clock.now + TICKET_WAIT,
        None,
        "asked",
    )
    wait = s.wait(hashed)
    assert wait is not None
    assert (wait.token_hash, wait.resource_id, wait.version, wait.state, wait.keys) == (
        hashed,
        r.id,
        2,
        "awaiting",
        ("a", "b"),
    )
    assert dict(wait.rules) == RULES
    assert (wait.created_at, wait.deadline) == (clock.now, clock.now + TICKET_WAIT)
    assert s.current_wait(r.id, 2) == wait
    assert s.current_wait(r.id, 1) is None
    assert s.wait(token_hash("secret-2")) is None


def test_fire_claimed_is_refused_after_a_takeover(s: EngineStore, clock: FakeClock) -> None:
    r = s.create("ticket")
    old = claim_one(s, "w1")
    clock.advance(LEASE)
    new = claim_one(s, "w2")
    hashed = token_hash("late")
    with pytest.raises(ClaimLost) as info:
        s.fire_claimed(old, "ask", wait=WaitPlan(hashed, ("a",), RULES), data={"late": True})
    err = info.value
    assert (err.resource_id, err.expected_version, err.actual_version, err.actual_state, err.claimed_by) == (
        r.id,
        1,
        1,
        "queued",
        "w2",
    )
    assert "w2" in str(err)
    unchanged(s, new.resource)
    assert s.wait(hashed) is None, "the wait of a refused write is not opened"
    assert s.fire_claimed(new, "build").state == "building", "the new holder writes"


def test_fire_claimed_is_refused_after_a_client_moved_the_resource(s: EngineStore) -> None:
    r = s.create("ticket")
    c = claim_one(s, "w1")
    moved = s.fire(r, "cancel", actor="client")
    with pytest.raises(ClaimLost) as info:
        s.fire_claimed(c, "build")
    err = info.value
    assert isinstance(err, Conflict)
    assert (err.resource_id, err.expected_version, err.actual_version, err.actual_state, err.claimed_by) == (
        r.id,
        1,
        2,
        "failed",
        None,
    )
    unchanged(s, moved)


def test_a_claim_writes_once(s: EngineStore) -> None:
    s.create("ticket")
    c = claim_one(s)
    after = s.fire_claimed(c, "build")
    with pytest.raises(ClaimLost) as info:
        s.fire_claimed(c, "fail", error="twice")
    assert (info.value.expected_version, info.value.actual_version, info.value.actual_state) == (1, 2, "building")
    unchanged(s, after)


def test_fire_claimed_with_an_event_not_allowed_writes_nothing_and_keeps_the_claim(s: EngineStore) -> None:
    s.create("ticket")
    c = claim_one(s)
    with pytest.raises(TransitionNotAllowed):
        s.fire_claimed(c, "answered")
    unchanged(s, c.resource)
    assert s.renew([c], lease=LEASE) == {c.token}


# --- retry_later ---------------------------------------------------------------------------------


def test_retry_later_records_the_failed_attempt_and_keeps_the_state(s: EngineStore, clock: FakeClock) -> None:
    r = s.create("ticket", data={"orig": 1})
    c = claim_one(s, "w1")
    clock.advance(timedelta(seconds=2))
    at = clock.now + timedelta(seconds=7)
    seen = s.signal.seq
    after = s.retry_later(c, error="boom", at=at, attempts=1, data={"progress": 3}, actor="w1")
    assert s.signal.seq > seen
    assert s.get(r.id) == after
    assert (after.state, after.version, after.attempts, after.error, after.next_attempt_at) == (
        "queued",
        2,
        1,
        "boom",
        at,
    )
    assert after.data == {"orig": 1, "progress": 3}
    assert (after.claim_token, after.claimed_by, after.claim_expires_at) == (None, None, None)
    assert (after.entered_at, after.updated_at) == (r.entered_at, clock.now), "the state was not re-entered"
    entry = all_journal(s, r.id)[-1]
    assert (entry.version, entry.event, entry.from_state, entry.to_state, entry.actor, entry.at) == (
        2,
        RETRY_EVENT,
        "queued",
        "queued",
        "w1",
        clock.now,
    )
    assert entry.detail == {"attempt": 1, "error": "boom", "next_attempt_at": at.isoformat()}


def test_retries_count_up_and_a_transition_resets_them(s: EngineStore, clock: FakeClock) -> None:
    r = s.create("ticket", data={"orig": 1})
    for attempt in (1, 2):
        c = claim_one(s)
        assert c.resource.attempts == attempt - 1
        at = clock.now + timedelta(seconds=attempt)
        after = s.retry_later(c, error=f"fail {attempt}", at=at, attempts=attempt)
        assert after.data == {"orig": 1}, "no data given: the data is kept"
        clock.now = at
    c = claim_one(s)
    assert (c.resource.attempts, c.resource.error, c.resource.version) == (2, "fail 2", 3)
    done = s.fire_claimed(c, "build")
    assert (done.attempts, done.error) == (0, None)
    assert [e.event for e in all_journal(s, r.id)] == ["@create", RETRY_EVENT, RETRY_EVENT, "build"]


def test_retry_later_is_fenced(s: EngineStore, clock: FakeClock) -> None:
    s.create("ticket")
    old = claim_one(s, "w1")
    clock.advance(LEASE)
    new = claim_one(s, "w2")
    with pytest.raises(ClaimLost) as info:
        s.retry_later(old, error="late", at=clock.now, attempts=1)
    assert (info.value.actual_version, info.value.claimed_by) == (1, "w2")
    unchanged(s, new.resource)
    moved = s.fire(new.resource, "cancel")
    with pytest.raises(ClaimLost) as info:
        s.retry_later(new, error="late", at=clock.now, attempts=1, data={"x": 1})
    assert (info.value.actual_version, info.value.actual_state, info.value.claimed_by) == (2, "failed", None)
    unchanged(s, moved)


def test_retry_later_refuses_nul_in_the_error_like_fire(s: EngineStore, clock: FakeClock) -> None:
    s.create("ticket")
    c = claim_one(s)
    with pytest.raises(InvalidArgument) as info:
        s.retry_later(c, error="bad\x00byte", at=clock.now, attempts=1)
    assert info.value.field == "error"
    unchanged(s, c.resource)
    with pytest.raises(InvalidArgument) as fired:
        s.fire_claimed(c, "build", error="bad\x00byte")
    assert fired.value.field == "error"
    unchanged(s, c.resource)


def test_retry_later_refuses_nul_in_the_actor_like_fire(s: EngineStore, clock: FakeClock) -> None:
    s.create("ticket")
    c = claim_one(s)
    with pytest.raises(InvalidArgument) as fired:
        s.fire_claimed(c, "build", actor="w\x001")
    assert fired.value.field == "actor"
    with pytest.raises(InvalidArgument) as info:
        s.retry_later(c, error="boom", at=clock.now, attempts=1, actor="w\x001")
    assert info.value.field == "actor"
    unchanged(s, c.resource)


# --- what is due, and when -----------------------------------------------------------------------


def ask(s: EngineStore, r: Resource) -> Resource:
    """A client moves ``r`` into the ticket's wait state (deadline: TICKET_WAIT from now)."""
    return s.fire(r, "ask")


def test_expired_waits_lists_waits_past_their_deadline_earliest_first(s: EngineStore, clock: FakeClock) -> None:
    t0 = clock.now
    a = ask(s, s.create("ticket"))
    clock.advance(timedelta(seconds=10))
    b = ask(s, s.create("ticket"))
    j = s.fire(s.create("job"), "request")  # the job kind waits 10 minutes
    c = ask(s, s.create("ticket"))
    s.fire(c, "answered")  # left its wait: no deadline any more
    assert a.deadline == t0 + TICKET_WAIT

    clock.now = t0 + TICKET_WAIT - TINY
    assert s.expired_waits(["ticket", "job"]) == []
    clock.now = t0 + TICKET_WAIT
    assert [r.id for r in s.expired_waits(["ticket", "job"])] == [a.id]
    clock.now = t0 + timedelta(hours=1)
    assert [r.id for r in s.expired_waits(["ticket", "job"])] == [a.id, b.id, j.id]
    assert [r.id for r in s.expired_waits(["ticket", "job"], limit=2)] == [a.id, b.id]
    assert [r.id for r in s.expired_waits(["job"])] == [j.id]
    assert s.expired_waits(["image"]) == []
    assert s.expired_waits(["ticket"])[0] == s.get(a.id)
    s.fire(a, "time_out")
    assert [r.id for r in s.expired_waits(["ticket"])] == [b.id]


def test_next_wakeup_is_none_when_nothing_is_scheduled(s: EngineStore) -> None:
    assert s.next_wakeup(QUEUED, ["ticket"]) is None
    s.fire(s.fire(s.create("ticket"), "ask"), "answered")
    assert s.next_wakeup(QUEUED, ["ticket"]) is None


def test_next_wakeup_sees_a_due_resource(s: EngineStore, clock: FakeClock) -> None:
    t0 = clock.now
    s.create("ticket")
    clock.advance(timedelta(seconds=5))
    s.create("ticket")
    assert s.next_wakeup(QUEUED, ["ticket"]) == t0
    assert s.next_wakeup([("ticket", "building")], []) is None, "only the worker's (kind, state) pairs count"


def test_next_wakeup_sees_a_retry_time(s: EngineStore, clock: FakeClock) -> None:
    s.create("ticket")
    at = clock.now + timedelta(seconds=42)
    s.retry_later(claim_one(s), error="x", at=at, attempts=1)
    assert s.next_wakeup(QUEUED, []) == at


def test_next_wakeup_sees_a_claim_expiry_not_the_claimed_due_time(s: EngineStore, clock: FakeClock) -> None:
    s.create("ticket")
    c = claim_one(s)
    assert s.next_wakeup(QUEUED, []) == c.resource.claim_expires_at == clock.now + LEASE
    assert s.next_wakeup([("ticket", "building")], []) is None


def test_next_wakeup_sees_a_deadline_of_the_given_kinds(s: EngineStore, clock: FakeClock) -> None:
    waiting = ask(s, s.create("ticket"))
    assert s.next_wakeup([], ["ticket"]) == waiting.deadline == clock.now + TICKET_WAIT
    assert s.next_wakeup(QUEUED, ["job"]) is None


def test_next_wakeup_sees_an_unsettled_callback_of_the_given_kinds(s: EngineStore, clock: FakeClock) -> None:
    r = s.create("ticket")
    waiting = s.fire_claimed(claim_one(s), "ask", wait=WaitPlan(token_hash("t"), ("a",), RULES))
    clock.advance(timedelta(seconds=4))
    assert s.deliver(r.id, "t", "a", "done").accepted
    assert s.next_wakeup([], ["ticket"]) == clock.now, "a callback is due from when it was received"
    assert s.next_wakeup([], ["job"]) is None, "callbacks for other kinds are another worker's business"
    s.mark_settled([cb.seq for cb in s.unsettled(["ticket"])], "test")
    assert s.next_wakeup([], ["ticket"]) == waiting.deadline


def test_the_agenda_says_when_each_kind_of_work_is_due(s: EngineStore, clock: FakeClock) -> None:
    t0 = clock.now
    assert s.agenda(QUEUED, ["ticket"]) == Agenda(None, None, None, None)
    assert s.agenda(QUEUED, ["ticket"]).earliest is None
    assert not s.agenda(QUEUED, ["ticket"]).claims_due(t0)

    waiting = s.create("ticket")
    s.fire_claimed(claim_one(s), "ask", wait=WaitPlan(token_hash("t"), ("a",), RULES))  # deadline at +60
    s.create("ticket")
    s.retry_later(claim_one(s), error="x", at=t0 + timedelta(seconds=50), attempts=1)  # step due at +50
    s.create("ticket")
    claim_one(s)  # claim expires at +30
    clock.advance(timedelta(seconds=5))
    assert s.deliver(waiting.id, "t", "a", "done").accepted  # callback received at +5

    agenda = s.agenda(QUEUED, ["ticket"])
    assert agenda == Agenda(
        step=t0 + timedelta(seconds=50),
        claim_expiry=t0 + LEASE,
        deadline=t0 + TICKET_WAIT,
        callback=t0 + timedelta(seconds=5),
    )
    assert agenda.earliest == t0 + timedelta(seconds=5)
    assert not agenda.claims_due(t0 + LEASE - TINY)
    assert agenda.claims_due(t0 + LEASE)
    assert s.agenda(QUEUED, []) == Agenda(t0 + timedelta(seconds=50), t0 + LEASE, None, None)
    assert s.agenda([("ticket", "building")], ["ticket"]) == Agenda(
        None, None, t0 + TICKET_WAIT, t0 + timedelta(seconds=5)
    )


def test_next_wakeup_is_the_earliest_of_everything(s: EngineStore, clock: FakeClock) -> None:
    t0 = clock.now
    s.create("ticket")
    s.retry_later(claim_one(s), error="x", at=t0 + timedelta(seconds=50), attempts=1)  # retry at +50
    s.create("ticket")
    held = claim_one(s)  # expires at +30
    ask(s, s.create("ticket"))  # deadline at +60
    assert s.next_wakeup(QUEUED, ["ticket"]) == t0 + LEASE
    clock.advance(timedelta(seconds=35))
    assert s.next_wakeup(QUEUED, ["ticket"]) == t0 + LEASE, "an expired claim is due for a takeover"
    clock.advance(timedelta(seconds=5))
    fresh = s.create("ticket")  # due at +40
    # With a step due, the expired claim is not asked after: the claim a worker makes now takes it over.
    assert s.next_wakeup(QUEUED, ["ticket"]) == t0 + timedelta(seconds=40)
    assert {c.resource.id for c in s.claim("w2", QUEUED, lease=LEASE)} == {held.resource.id, fresh.id}
    assert s.next_wakeup([("ticket", "building")], ["ticket"]) == t0 + TICKET_WAIT


# --- the store's own signal ----------------------------------------------------------------------


def test_writes_that_make_work_due_bump_the_signal(s: EngineStore, clock: FakeClock) -> None:
    writes: list[Callable[[], object]] = [
        lambda: s.create("ticket"),
        lambda: s.fire_claimed(claim_one(s), "build"),
        lambda: s.retry_later(claim_one(s, due=[("ticket", "building")]), error="x", at=clock.now, attempts=1),
        lambda: s.fire_claimed(claim_one(s, due=[("ticket", "building")]), "ask"),
    ]
    for write in writes:
        seen = s.signal.seq
        write()
        assert s.signal.wait(seen, timeout=0) > seen


# --- racing claimers -----------------------------------------------------------------------------

THREADS = 8
RESOURCES = 60


def run_threads(url: str, clock: FakeClock, work: Callable[[EngineStore, int, threading.Barrier], None]) -> None:
    """Run ``work(store, n, barrier)`` in THREADS threads, each with its own store object."""
    barrier = threading.Barrier(THREADS)
    failures: list[str] = []

    def thread(n: int) -> None:
        store = open_store(url, [ticket], clock=clock)
        try:
            work(store, n, barrier)
        except BaseException as exc:
            failures.append(f"thread {n}: {exc!r}")
            barrier.abort()
        finally:
            store.close()

    threads = [threading.Thread(target=thread, args=(n,), name=f"claimer-{n}") for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert failures == []


def claim_all(store: EngineStore, worker: str) -> list[Claim]:
    got: list[Claim] = []
    while batch := store.claim(worker, QUEUED, limit=3, lease=timedelta(hours=1)):
        got.extend(batch)
    return got


def test_racing_claimers_never_share_a_resource(s: EngineStore, store_url: str, clock: FakeClock) -> None:
    ids = {s.create("ticket").id for _ in range(RESOURCES)}
    claims: list[Claim] = []

    def work(store: EngineStore, n: int, barrier: threading.Barrier) -> None:
        barrier.wait(60)
        claims.extend(claim_all(store, f"w{n}"))

    run_threads(store_url, clock, work)
    assert sorted(c.resource.id for c in claims) == sorted(ids), "every resource claimed exactly once"
    assert len({c.token for c in claims}) == RESOURCES
    assert not any(c.takeover for c in claims)
    for c in claims:
        assert s.get(c.resource.id) == c.resource, "the row holds the one claim handed out"


def test_racing_takeovers_and_late_writes_have_one_winner_each(
    s: EngineStore, store_url: str, clock: FakeClock
) -> None:
    """Everybody claims; the leases run out; everybody takes over; then every claim, stale or not, writes.

    Each resource is taken over by exactly one worker, and only the write under that claim lands.
    """
    ids = {s.create("ticket").id for _ in range(RESOURCES)}
    stale: list[Claim] = []
    live: list[Claim] = []
    outcomes: dict[str, Resource | ClaimLost] = {}

    def work(store: EngineStore, n: int, barrier: threading.Barrier) -> None:
        barrier.wait(60)
        stale.extend(claim_all(store, f"w{n}"))
        if barrier.wait(60) == 0:
            clock.advance(timedelta(hours=1))  # every lease runs out
        barrier.wait(60)
        live.extend(claim_all(store, f"w{n}"))
        barrier.wait(60)
        everyone = sorted(stale + live, key=lambda c: c.token)
        for c in everyone[n::THREADS]:
            try:
                outcomes[c.token] = store.fire_claimed(c, "build", actor=c.resource.claimed_by)
            except ClaimLost as exc:
                outcomes[c.token] = exc

    run_threads(store_url, clock, work)
    assert sorted(c.resource.id for c in stale) == sorted(ids)
    assert sorted(c.resource.id for c in live) == sorted(ids)
    assert all(c.takeover for c in live)
    assert len(outcomes) == 2 * RESOURCES
    for c in stale:
        assert isinstance(outcomes[c.token], ClaimLost), "a stale claim wrote"
    for c in live:
        won = outcomes[c.token]
        assert isinstance(won, Resource), f"the live claim lost: {won}"
        assert s.get(c.resource.id) == won
        assert [e.actor for e in all_journal(s, c.resource.id)] == [None, c.resource.claimed_by]


# --- a property: claims follow a model of the leases -----------------------------------------------

_kind_numbers = itertools.count()


def lease_kind() -> Kind:
    """A fresh kind per example, so each example claims only its own resources."""
    return Kind(
        f"lease{next(_kind_numbers)}",
        initial="todo",
        states=[State("todo", 1, Role.WORK), State("done", 2, Role.FINAL)],
        events=[Event("finish", "todo", "done")],
    )


@dataclass
class Row:
    due: datetime | None
    token: str | None = None
    holder: str | None = None
    expires: datetime | None = None
    version: int = 1
    state: str = "todo"


#: Claims and clock moves come up more often than the rest, so that leases run out and get taken over.
OP_NAMES = ("create", "claim", "claim", "claim", "advance", "advance", "renew", "release", "finish", "retry")
OPS = st.lists(
    st.tuples(st.sampled_from(OP_NAMES), st.sampled_from(("a", "b", "c")), st.integers(min_value=0, max_value=45)),
    min_size=8,
    max_size=30,
)


@settings(
    max_examples=35,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(first=st.integers(min_value=1, max_value=4), ops=OPS)
def test_claims_follow_the_lease_model(
    s: EngineStore, clock: FakeClock, first: int, ops: list[tuple[str, str, int]]
) -> None:
    """Random creates, claims, clock moves, renewals, releases and fenced writes by three workers.

    Every claim, renewal and write is predicted from a model of the leases, and after each step every
    row must match the model.
    """
    kind = lease_kind()
    s.register(kind)
    due = [(kind.name, "todo")]
    lease = timedelta(seconds=8)
    model: dict[str, Row] = {}
    handed: list[tuple[str, Claim]] = []
    tokens: set[str] = set()
    ops = [("create", "a", 0)] * first + ops

    def live(row: Row) -> bool:
        return row.token is not None and row.expires is not None and row.expires > clock.now

    for op, worker, n in ops:
        if op == "create":
            model[s.create(kind.name).id] = Row(due=clock.now)
        elif op == "advance":
            clock.advance(timedelta(seconds=n % 12))
        elif op == "claim":
            limit = n % 4 + 1
            eligible = {
                rid: row
                for rid, row in model.items()
                if row.state == "todo" and row.due is not None and row.due <= clock.now and not live(row)
            }
            got = s.claim(worker, due, limit=limit, lease=lease)
            assert len(got) == min(limit, len(eligible))
            dues = [eligible[c.resource.id].due or clock.now for c in got]
            assert dues == sorted(dues), "oldest due first"
            if got:
                chosen = {c.resource.id for c in got}
                skipped = [row.due or clock.now for rid, row in eligible.items() if rid not in chosen]
                assert all(d >= dues[-1] for d in skipped), "an earlier due resource was passed over"
            for c in got:
                row = model[c.resource.id]
                assert c.takeover == (row.token is not None)
                note("takeover" if c.takeover else "claim")
                assert c.token not in tokens
                tokens.add(c.token)
                row.token, row.holder, row.expires = c.token, worker, clock.now + lease
                handed.append((worker, c))
        elif op == "renew":
            mine = [c for w, c in handed if w == worker]
            held = s.renew(mine, lease=lease)
            expected = {c.token for c in mine if any(row.token == c.token for row in model.values())}
            assert held == expected
            note(f"renewed {len(held)} of {len(mine)}")
            for row in model.values():
                if row.token in held:
                    row.expires = clock.now + lease
        elif handed:
            _, c = handed[n % len(handed)]
            row = model[c.resource.id]
            holds = row.token == c.token
            if op == "release":
                assert s.release(c) is holds
                if holds:
                    row.token = row.holder = row.expires = None
                    row.due = clock.now
                continue
            try:
                if op == "finish":
                    s.fire_claimed(c, "finish")
                else:
                    s.retry_later(c, error="again", at=clock.now + timedelta(seconds=n % 10), attempts=1)
            except ClaimLost:
                assert not holds
                note(f"{op} refused")
            else:
                assert holds
                row.token = row.holder = row.expires = None
                row.version += 1
                if op == "finish":
                    row.state, row.due = "done", None
                else:
                    row.due = clock.now + timedelta(seconds=n % 10)

        for rid, row in model.items():
            got_row = s.get(rid)
            assert (got_row.state, got_row.version, got_row.next_attempt_at) == (row.state, row.version, row.due)
            assert (got_row.claim_token, got_row.claimed_by, got_row.claim_expires_at) == (
                row.token,
                row.holder,
                row.expires,
            )


def test_the_lease_model_property_isolates_examples(s: EngineStore) -> None:
    """Kinds made for the property never collide (each example claims only its own resources)."""
    a, b = lease_kind(), lease_kind()
    assert a.name != b.name
    s.register(a)
    s.register(b)
    s.create(a.name)
    assert s.claim("w", [(b.name, "todo")], lease=LEASE) == []
