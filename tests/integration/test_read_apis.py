"""Reads for people and metrics on both stores: pending waits, the backlog, and many readers at once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from tenure import Conflict, ResourceNotFound, TransitionNotAllowed, UnknownKind
from tenure.flow.records import FlowRunRow
from tenure.kinds.image import image
from tenure.store import AwaitedKey, BacklogRow, WaitInfo
from tenure.store.claims import WaitPlan
from tenure.store.inbox import CallbackStatus, token_hash
from tenure.store.protocol import EngineStore
from tests.kinds_for_tests import JOB_WAIT, job
from tests.store_support import FakeClock, settle

pytestmark = pytest.mark.timeout(120)

LEASE = timedelta(seconds=30)
RULES = {"done": "callback", "failed": "expire", "retry": None, "data_key": "answers"}


@pytest.fixture
def store_url(reused_store_url: str) -> str:
    """Overrides the root conftest's: one database per module, emptied before each test."""
    return reused_store_url


def waiting_job(store: EngineStore, token: str = "tok-1", keys: tuple[str, ...] = ("a", "b")) -> str:
    """A job in its wait state, awaiting ``keys`` under ``token``; returns its id."""
    store.create("job")
    (claim,) = store.claim("w1", [("job", "pending")], lease=LEASE)
    store.fire_claimed(claim, "request", wait=WaitPlan(token_hash(token), keys, RULES))
    return claim.resource.id


# --- pending waits ---------------------------------------------------------------------------------


def test_pending_waits_say_what_is_awaited_and_what_came(store: EngineStore, clock: FakeClock) -> None:
    rid = waiting_job(store)
    waited_at = clock.now
    clock.advance()
    store.deliver(rid, "tok-1", "a", "done", data={"x": 1})

    (wait,) = store.pending_waits(rid)

    r = store.get(rid)
    assert wait == WaitInfo(
        id=token_hash("tok-1")[:12],
        resource_id=rid,
        version=r.version,
        state="waiting",
        created_at=waited_at,
        deadline=waited_at + JOB_WAIT,
        keys=(AwaitedKey("a", True, CallbackStatus.DONE, clock.now), AwaitedKey("b", False)),
    )
    shown = wait.to_json()
    assert shown == {
        "id": token_hash("tok-1")[:12],
        "resource_id": rid,
        "version": r.version,
        "state": "waiting",
        "created_at": waited_at.isoformat(),
        "deadline": (waited_at + JOB_WAIT).isoformat(),
        "keys": [
            {"key": "a", "received": True, "status": "done", "received_at": clock.now.isoformat()},
            {"key": "b", "received": False, "status": None, "received_at": None},
        ],
    }
    assert "tok-1" not in repr(wait)
    assert token_hash("tok-1") not in repr(shown)


def test_a_resource_that_moved_on_waits_for_nothing(store: EngineStore) -> None:
    rid = waiting_job(store)
    store.fire(rid, "callback")
    assert store.pending_waits(rid) == []
    assert store.pending_waits(store.create("image", {"name": "x"}).id) == []


def test_a_provisional_wait_is_not_shown(store: EngineStore) -> None:
    store.create("job")
    (claim,) = store.claim("w1", [("job", "pending")], lease=LEASE)
    store.open_wait(claim.resource, token_hash("early"))
    store.deliver(claim.resource.id, "early", "a", "done")
    assert store.pending_waits(claim.resource.id) == []


@pytest.mark.parametrize("resource_id", ["nope", "no\x00pe"])
def test_pending_waits_of_an_unknown_resource(store: EngineStore, resource_id: str) -> None:
    with pytest.raises(ResourceNotFound):
        store.pending_waits(resource_id)


# --- backlog ---------------------------------------------------------------------------------------


def test_the_backlog_counts_every_state_and_ages_the_waits(store: EngineStore, clock: FakeClock) -> None:
    for name in ("a", "b", "c"):
        store.create("image", {"name": name})
    store.fire(store.create("image", {"name": "d"}), "upload")
    first = clock.now
    waiting_job(store, "t1")
    clock.advance(timedelta(minutes=2))
    waiting_job(store, "t2")
    store.create("job")
    clock.advance(timedelta(seconds=30))

    rows = store.backlog(["job", "image"])

    assert [(r.kind, r.state) for r in rows] == [("job", s.name) for s in job.states] + [
        ("image", s.name) for s in image.states
    ]
    by_state = {(r.kind, r.state): r for r in rows}
    assert by_state["job", "waiting"] == BacklogRow("job", "waiting", "wait", 2, (clock.now - first).total_seconds())
    assert by_state["job", "pending"] == BacklogRow("job", "pending", "work", 1, None)
    assert by_state["image", "queued"] == BacklogRow("image", "queued", "rest", 3, None)
    assert by_state["image", "saving"].count == 1
    assert by_state["image", "pending_delete"] == BacklogRow("image", "pending_delete", "wait", 0, None)
    assert sum(r.count for r in rows) == 7
    assert by_state["job", "waiting"].to_json() == {
        "kind": "job",
        "state": "waiting",
        "role": "wait",
        "count": 2,
        "oldest_seconds": 150.0,
    }
    # By default every registered kind, by name.
    assert [(r.kind, r.state) for r in store.backlog()] == [(k, s) for k, s in sorted(by_state, key=lambda ks: ks[0])]
    assert store.backlog([]) == []


def test_the_backlog_refuses_an_unknown_kind(store: EngineStore) -> None:
    with pytest.raises(UnknownKind):
        store.backlog(["nope"])


# --- many readers at once ---------------------------------------------------------------------------


def test_reads_are_safe_from_many_threads_while_writes_go_on(store: EngineStore) -> None:
    """The HTTP service reads from a thread pool: every read API at once, with writers busy beside."""
    ids = [store.create("image", {"name": f"r{i}"}).id for i in range(4)]
    ids = [store.fire(store.fire(rid, "upload"), "activate").id for rid in ids]
    waiting = waiting_job(store)
    store.create_flow_run(
        FlowRunRow("run-1", "flow", 1, "fp", "running", ids[0], {"x": 1}),
    )
    settle(store)  # what was written so far can be read from the feed, whatever the writers do next
    errors: list[BaseException] = []
    stop = threading.Event()
    reads = {"n": 0}
    lock = threading.Lock()

    def read(n: int) -> None:
        try:
            for i in range(40):
                rid = ids[(n + i) % len(ids)]
                assert store.get(rid).id == rid
                assert len(store.list(kind="image", limit=10).items) == len(ids)
                assert store.journal(rid)[0].version == 1
                assert store.changes(limit=5).entries
                assert store.pending_waits(waiting)[0].keys[0].key == "a"
                assert sum(r.count for r in store.backlog(["image", "job"])) == len(ids) + 1
                assert store.flow_runs(resource_id=ids[0])[0].id == "run-1"
                with lock:
                    reads["n"] += 1
        except BaseException as exc:
            errors.append(exc)

    def write(n: int) -> None:
        try:
            while not stop.is_set():
                for rid in ids:
                    snap = store.get(rid)
                    event = {"active": "deactivate", "deactivated": "reactivate"}[snap.state]
                    try:
                        store.fire(snap, event, actor=f"writer-{n}")
                    except (Conflict, TransitionNotAllowed):
                        continue
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    readers = [threading.Thread(target=read, args=(n,)) for n in range(12)]
    for t in writers + readers:
        t.start()
    for t in readers:
        t.join(90)
    stop.set()
    for t in writers:
        t.join(30)
    assert errors == []
    assert reads["n"] == 12 * 40
