"""The one write path: every kind of change to a resource goes through each dialect's one write function.

Each write kind (a client's fire, a desired state, an engine transition that opens a wait, one that
settles callbacks, a retry, giving up a desired state) is checked on both databases for what it
commits (row, journal entry, side rows) and for what a lost race leaves: nothing at all. The SQL
files are checked to hold the compare-and-swap in exactly one block per dialect, run by exactly one
function.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from importlib import resources
from pathlib import Path

import pytest

from tenure.errors import ClaimLost, Conflict, TooLarge
from tenure.rules import MAX_DATA_BYTES, MAX_SPEC_BYTES
from tenure.store import Resource
from tenure.store.claims import Claim
from tenure.store.inbox import token_hash
from tenure.store.protocol import EngineStore
from tenure.store.retention import RetentionPolicy
from tenure.store.write import RETRY_EVENT, WaitPlan
from tests.kinds_for_tests import share
from tests.store_support import FakeClock, settle

LEASE = timedelta(minutes=5)


def _claimed(store: EngineStore, r: Resource) -> Claim:
    (claim,) = [c for c in store.claim("w1", [("job", r.state)], limit=10, lease=LEASE) if c.resource.id == r.id]
    return claim


def _unchanged(store: EngineStore, before: Resource) -> None:
    """Nothing of a refused write is left: neither the row's version nor the journal moved."""
    now = store.get(before.id)
    assert now.version == before.version
    assert [e.version for e in store.journal(before.id)] == list(range(1, before.version + 1))


def test_a_client_fire_swaps_journals_and_lets_go_of_any_claim(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("job")
    claim = _claimed(store, r)
    moved = store.fire(claim.resource, "cancel", actor="ops", detail={"why": "test"})
    row = store.get(r.id)
    assert (row.state, row.version, row.claim_token, row.attempts) == ("expired", 2, None, 0)
    assert row == moved
    (entry,) = store.journal(r.id, after_version=1)
    assert (entry.event, entry.from_state, entry.to_state, entry.actor) == ("cancel", "pending", "expired", "ops")
    assert dict(entry.detail) == {"why": "test"}
    with pytest.raises(ClaimLost):
        store.fire_claimed(claim, "request")
    _unchanged(store, row)


def test_a_desired_state_keeps_the_claim_and_the_attempts_a_takeover_counted(
    store: EngineStore, clock: FakeClock
) -> None:
    r = store.create("job")
    first = _claimed(store, r)
    clock.advance(LEASE * 2)
    taken = _claimed(store, r)  # a takeover: counts the dead holder's attempt, without a new version
    assert taken.takeover
    assert taken.resource.attempts == 1
    # Planned from the snapshot read before the takeover, yet it must not undo the takeover's bookkeeping.
    after = store.set_desired_state(first.resource, "done")
    row = store.get(r.id)
    assert (row.version, row.desired_state, row.generation) == (after.version, "done", 2)
    assert (row.claim_token, row.claimed_by, row.attempts) == (taken.token, "w1", 1)
    (entry,) = store.journal(r.id, after_version=1)
    assert (entry.event, entry.from_state, entry.to_state) == ("@desired", "pending", "pending")


def test_an_engine_transition_opens_its_wait_in_the_same_write(store: EngineStore) -> None:
    r = store.create("job")
    claim = _claimed(store, r)
    wait = WaitPlan(token_hash("secret"), ("a", "b"), {"done": "callback"})
    after = store.fire_claimed(claim, "request", wait=wait)
    opened = store.current_wait(r.id, after.version)
    assert opened is not None
    assert (opened.token_hash, opened.keys, opened.state, opened.deadline) == (
        token_hash("secret"),
        ("a", "b"),
        "waiting",
        after.deadline,
    )


def test_a_lost_engine_transition_opens_no_wait(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("job")
    stale = _claimed(store, r)
    clock.advance(LEASE * 2)
    _claimed(store, r)
    with pytest.raises(ClaimLost):
        store.fire_claimed(stale, "request", wait=WaitPlan(token_hash("late"), ("a",), {"done": "callback"}))
    assert store.wait(token_hash("late")) is None
    _unchanged(store, store.get(r.id))


def test_a_write_settles_its_callbacks_only_when_it_commits(store: EngineStore) -> None:
    r = store.create("job")
    waiting = store.fire_claimed(
        _claimed(store, r), "request", wait=WaitPlan(token_hash("t"), ("a",), {"done": "callback"})
    )
    receipt = store.deliver(r.id, "t", "a", "done")
    assert receipt.seq is not None
    stale = store.get(r.id)
    with pytest.raises(Conflict):
        # Planned from a version the resource has left: neither the swap nor the settling happens.
        store.fire_settling(replace(stale, version=stale.version - 1), "callback", [receipt.seq], result="applied")
    assert [c.applied_at for c in store.callbacks(token_hash("t"))] == [None]
    moved = store.fire_settling(waiting, "callback", [receipt.seq], result="applied")
    assert moved.state == "held"
    (settled,) = store.callbacks(token_hash("t"))
    assert (settled.result, settled.applied_at) == ("applied", moved.updated_at)


def test_a_retry_keeps_the_state_and_journals_the_schedule(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("job")
    claim = _claimed(store, r)
    at = clock.now + timedelta(seconds=30)
    after = store.retry_later(claim, error="flaky", at=at, attempts=1, data={"tried": True})
    row = store.get(r.id)
    assert (row.state, row.version, row.attempts, row.next_attempt_at, row.error) == ("pending", 2, 1, at, "flaky")
    assert (row.claim_token, dict(row.data)) == (None, {"tried": True})
    assert row == after
    (entry,) = store.journal(r.id, after_version=1)
    assert (entry.event, entry.from_state, entry.to_state, entry.detail["attempt"]) == (
        RETRY_EVENT,
        "pending",
        "pending",
        1,
    )
    with pytest.raises(ClaimLost):
        store.retry_later(claim, error="again", at=at, attempts=2)
    _unchanged(store, row)


def test_giving_up_a_desired_state_is_fenced_by_the_claim(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("job")
    r = store.set_desired_state(r, "done")
    stale = _claimed(store, r)
    clock.advance(LEASE * 2)
    live = _claimed(store, r)
    with pytest.raises(ClaimLost):
        store.give_up_desired(stale, error="unreachable")
    _unchanged(store, store.get(r.id))
    after = store.give_up_desired(live, error="unreachable")
    row = store.get(r.id)
    assert (row.observed_generation, row.generation, row.error, row.claim_token) == (2, 2, "unreachable", None)
    assert row == after
    assert store.journal(r.id)[-1].event == "@desired-failed"


def test_a_write_planned_from_an_earlier_life_of_its_id_is_refused(store: EngineStore, clock: FakeClock) -> None:
    """A resource pruned and created again under its id starts over at version 1: a snapshot of the
    first life has the same id, version and state as the new one, and must not write over it."""
    first = store.create("job", resource_id="reused")
    store.fire(first, "cancel")  # expired: final
    clock.advance(timedelta(days=2))
    settle(store)
    while store.prune(RetentionPolicy(resources=timedelta(days=1))).more:
        pass
    assert store.find("reused") is None
    second = store.create("job", resource_id="reused")
    assert (second.version, second.state) == (first.version, first.state)

    with pytest.raises(Conflict, match="deleted and created again") as lost:
        store.fire(first, "request")
    assert lost.value.facts()["recreated"] is True
    with pytest.raises(Conflict, match="deleted and created again"):
        store.fire(first, "retry")  # refused in the old life's state: the conflict is what it really is
    _unchanged(store, second)
    assert store.get("reused") == second
    assert store.fire("reused", "request", expected_version=1).version == 2, "pinned by version, the new life"


def test_whatever_planning_refuses_from_a_snapshot_the_row_moved_on_from_is_a_conflict(store: EngineStore) -> None:
    store.register(share)
    r = store.create("share", {}, sharable=True)
    used = store.use(r.id, "tag:example.com,2026:party", ttl=timedelta(minutes=30))
    store.release_use(r.id, "tag:example.com,2026:party")  # the row moves on: nobody uses it now
    with pytest.raises(Conflict):
        store.fire(used, "teardown")  # the snapshot's live use would refuse it (InUse)
    assert store.fire(r.id, "teardown").state == "tearing"


# --- the compare-and-swap lives in one place ---------------------------------------------------


SRC = Path(__file__).resolve().parents[2] / "src" / "tenure"
#: An UPDATE of the resources table that sets its version: a compare-and-swap.
_SETS_VERSION = re.compile(
    r"UPDATE\s+resources\b(?:\s+AS\s+\w+)?\s+SET\b(?:(?!\bWHERE\b)[^;])*?(?<![\w.])version\s*=", re.IGNORECASE
)


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_the_compare_and_swap_is_one_sql_block_per_dialect(dialect: str) -> None:
    text = resources.files("tenure.store").joinpath("sql", f"{dialect}.sql").read_text(encoding="utf-8")
    blocks = dict(
        block.split("\n", 1) for block in re.split(r"^-- name: ", text, flags=re.MULTILINE)[1:] if "\n" in block
    )
    swapping = sorted(name for name, body in blocks.items() if _SETS_VERSION.search(_without_comments(body)))
    assert swapping == ["write"]


def _without_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


def test_only_the_dialects_commit_functions_run_the_write_block() -> None:
    users = sorted(
        str(path.relative_to(SRC)) for path in SRC.rglob("*.py") if re.search(r"""\["write"\]""", path.read_text())
    )
    assert users == ["store/postgres.py", "store/sqlite.py"]
    for name in users:
        text = (SRC / name).read_text()
        assert text.count('Q["write"]') == 1


# --- what a resource may keep ------------------------------------------------------------------


def test_a_spec_or_data_too_big_to_keep_is_refused_and_nothing_is_written(store: EngineStore) -> None:
    with pytest.raises(TooLarge) as big_spec:
        store.create("job", {"blob": "x" * MAX_SPEC_BYTES})
    assert (big_spec.value.what, big_spec.value.limit) == ("the spec", MAX_SPEC_BYTES)
    assert big_spec.value.size > MAX_SPEC_BYTES
    assert store.list(kind="job").items == []

    near = "y" * (MAX_DATA_BYTES - 200_000)
    r = store.create("job", data={"near": near})
    with pytest.raises(TooLarge) as grown:
        # Each write is small; what the resource would keep after merging it is not.
        store.fire(r, "request", data={"more": "z" * 300_000})
    assert grown.value.what == "the data"
    assert grown.value.size > MAX_DATA_BYTES
    assert store.get(r.id) == r, "nothing written"
    assert store.fire(r, "request", data={"more": "z" * 100}).data["more"] == "z" * 100
