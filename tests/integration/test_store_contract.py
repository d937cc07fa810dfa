"""The store contract: every test here runs identically against SQLite and PostgreSQL.

Errors are checked by the facts they carry (their attributes), and every refused write is checked to
have written nothing: neither the row nor the journal moves.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tenure import (
    Conflict,
    IdempotencyKeyReused,
    InvalidArgument,
    InvalidDatabaseURL,
    InvalidSpec,
    Resource,
    ResourceNotFound,
    SchemaNotMigrated,
    SchemaTooNew,
    StoreUnavailable,
    TenureError,
    TransitionNotAllowed,
    UnknownEvent,
    UnknownKind,
    UnknownState,
    open_store,
)
from tenure.kinds.image import image
from tenure.machine import Event, Kind, State
from tenure.store import CREATE_EVENT
from tenure.store.migrator import latest_version
from tenure.store.protocol import EngineStore
from tests.kinds_for_tests import JOB_WAIT, job
from tests.store_support import FakeClock, all_journal, feed_all

FULL_IMAGE_SPEC = {
    "name": "debian-12",
    "disk_format": "raw",
    "container_format": "bare",
    "size_bytes": None,
    "visibility": "private",
}


def _active(store: EngineStore, name: str = "img") -> Resource:
    r = store.create("image", {"name": name})
    r = store.fire(r, "upload")
    return store.fire(r, "activate")


def _fire_styled(store: EngineStore, r: Resource, event: str, style: str) -> Resource:
    """Fire ``event`` at ``r`` by snapshot, by id with ``r``'s version, or by id alone."""
    if style == "snapshot":
        return store.fire(r, event)
    if style == "pinned":
        return store.fire(r.id, event, expected_version=r.version)
    return store.fire(r.id, event)


class Unchanged:
    """Asserts that nothing was written: same row, same journal, same feed."""

    def __init__(self, store: EngineStore, resource_id: str | None = None) -> None:
        self.store = store
        self.resource_id = resource_id
        self.row = store.get(resource_id) if resource_id else None
        self.journal = all_journal(store, resource_id) if resource_id else None
        self.feed = feed_all(store)
        self.rows = store.list(limit=1000).items

    def check(self) -> None:
        if self.resource_id is not None:
            assert self.store.get(self.resource_id) == self.row
            assert all_journal(self.store, self.resource_id) == self.journal
        assert feed_all(self.store) == self.feed
        assert self.store.list(limit=1000).items == self.rows


def _dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


# --- create --------------------------------------------------------------------------------------


def test_create_starts_in_the_initial_state_at_version_1(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("image", {"name": "debian-12"}, actor="alice")

    assert (r.kind, r.state, r.version) == ("image", image.initial.name, 1)
    assert r.spec == FULL_IMAGE_SPEC  # validated through the kind's pydantic model: defaults filled in
    assert r.data == {}
    assert (r.desired_state, r.generation, r.observed_generation) == (None, 1, 0)
    assert r.sharable is True
    assert (r.error, r.attempts) == (None, 0)
    assert r.entered_at == r.created_at == r.updated_at == clock.now
    assert (r.next_attempt_at, r.deadline) == (None, None)  # queued is a rest state
    assert (r.claim_token, r.claimed_by, r.claim_expires_at, r.idempotency_key) == (None, None, None, None)
    assert store.get(r.id) == r

    (entry,) = store.journal(r.id)
    assert (entry.resource_id, entry.version, entry.event, entry.from_state, entry.to_state) == (
        r.id,
        1,
        CREATE_EVENT,
        None,
        "queued",
    )
    assert (entry.actor, entry.at, entry.detail) == ("alice", clock.now, {})
    assert feed_all(store) == [entry]


def test_create_with_data_id_and_sharable(store: EngineStore) -> None:
    r = store.create("job", {"anything": [1, 2]}, data={"x": {"y": 1}}, sharable=False, resource_id="my-id")
    assert (r.id, r.spec, r.data, r.sharable) == ("my-id", {"anything": [1, 2]}, {"x": {"y": 1}}, False)
    assert store.get("my-id") == r


def test_create_in_a_work_state_schedules_the_engine(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("job")
    assert (r.state, r.next_attempt_at, r.deadline) == ("pending", clock.now, None)
    assert store.get(r.id).next_attempt_at == clock.now


@pytest.mark.parametrize(
    ("spec", "fields"),
    [
        ({}, {"name"}),
        ({"name": ""}, {"name"}),
        ({"name": "x", "disk_format": "floppy"}, {"disk_format"}),
        ({"name": "x", "size_bytes": -1, "visibility": "everyone"}, {"size_bytes", "visibility"}),
        ({"name": "x", "colour": "blue"}, {"colour"}),
    ],
)
def test_create_refuses_an_invalid_spec_naming_the_fields(
    store: EngineStore, spec: dict[str, Any], fields: set[str]
) -> None:
    before = Unchanged(store)
    with pytest.raises(InvalidSpec) as caught:
        store.create("image", spec)
    assert caught.value.kind == "image"
    assert {name for name, _ in caught.value.problems} == fields
    assert all(constraint for _, constraint in caught.value.problems)
    for name in fields:
        assert name in str(caught.value)
    before.check()


@pytest.mark.parametrize("spec", [["name", "x"], "name=x"])
def test_create_refuses_a_spec_that_is_not_an_object(store: EngineStore, spec: Any) -> None:
    before = Unchanged(store)
    with pytest.raises(InvalidSpec) as caught:
        store.create("image", spec)
    assert [name for name, _ in caught.value.problems] == ["spec"]
    before.check()


def test_create_refuses_data_that_is_not_json(store: EngineStore) -> None:
    before = Unchanged(store)
    with pytest.raises(InvalidSpec) as caught:
        store.create("job", data={"when": datetime(2030, 1, 1)})
    assert (caught.value.kind, [name for name, _ in caught.value.problems]) == ("job", ["data"])
    before.check()


def test_create_of_an_unknown_kind_lists_the_known_kinds(store: EngineStore) -> None:
    before = Unchanged(store)
    with pytest.raises(UnknownKind) as caught:
        store.create("volume", {"size": 1})
    assert caught.value.kind == "volume"
    assert caught.value.known == ("image", "job")
    assert "image, job" in str(caught.value)
    before.check()


@pytest.mark.parametrize(
    ("field", "value"), [("idempotency_key", ""), ("idempotency_key", "k" * 256), ("resource_id", "r" * 65)]
)
def test_create_refuses_out_of_range_identifiers(store: EngineStore, field: str, value: str) -> None:
    before = Unchanged(store)
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(InvalidArgument) as caught:
        store.create("image", {"name": "x"}, **kwargs)
    assert (caught.value.field, caught.value.got) == (field, value)
    before.check()


# --- idempotency -----------------------------------------------------------------------------------


def test_same_idempotency_key_and_request_returns_the_same_resource(store: EngineStore, clock: FakeClock) -> None:
    first = store.create("image", {"name": "a"}, idempotency_key="key-1")
    assert first.idempotency_key == "key-1"
    before = Unchanged(store, first.id)
    clock.advance()
    again = store.create("image", {"name": "a"}, idempotency_key="key-1")
    assert again == first
    # The same request spelled with the defaults written out is the same request.
    assert store.create("image", {"name": "a", "disk_format": "raw"}, idempotency_key="key-1") == first
    before.check()


def test_idempotent_replay_returns_the_resource_as_it_is_now(store: EngineStore) -> None:
    first = store.create("image", {"name": "a"}, idempotency_key="key-1")
    moved = store.fire(first, "upload")
    assert store.create("image", {"name": "a"}, idempotency_key="key-1") == moved


def test_same_idempotency_key_with_another_spec_is_refused(store: EngineStore) -> None:
    first = store.create("image", {"name": "a"}, idempotency_key="key-1")
    before = Unchanged(store, first.id)
    with pytest.raises(IdempotencyKeyReused) as caught:
        store.create("image", {"name": "b"}, idempotency_key="key-1")
    assert (caught.value.key, caught.value.resource_id) == ("key-1", first.id)
    assert "spec" in caught.value.difference
    with pytest.raises(IdempotencyKeyReused) as caught:
        store.create("job", {"name": "a"}, idempotency_key="key-1")
    assert (caught.value.key, caught.value.resource_id) == ("key-1", first.id)
    assert "image" in caught.value.difference
    assert "job" in caught.value.difference
    before.check()


def test_different_idempotency_keys_create_different_resources(store: EngineStore) -> None:
    a = store.create("image", {"name": "a"}, idempotency_key="key-a")
    b = store.create("image", {"name": "a"}, idempotency_key="key-b")
    c = store.create("image", {"name": "a"})
    assert len({a.id, b.id, c.id}) == 3
    assert len(feed_all(store)) == 3


# --- get and list --------------------------------------------------------------------------------


def test_get_of_an_unknown_id(store: EngineStore) -> None:
    with pytest.raises(ResourceNotFound) as caught:
        store.get("no-such-id")
    assert caught.value.resource_id == "no-such-id"


def test_list_filters_by_kind_and_state(store: EngineStore) -> None:
    queued = [store.create("image", {"name": f"q{i}"}) for i in range(3)]
    saving = [store.fire(store.create("image", {"name": f"s{i}"}), "upload") for i in range(2)]
    active = [_active(store, f"a{i}") for i in range(2)]
    jobs = [store.create("job") for _ in range(2)]

    def ids(page_items: Any) -> list[str]:
        return [r.id for r in page_items]

    everything = store.list()
    assert ids(everything.items) == ids(queued + saving + active + jobs)
    assert everything.next_after is None
    assert ids(store.list(kind="job").items) == ids(jobs)
    assert ids(store.list(kind="image").items) == ids(queued + saving + active)
    assert ids(store.list(kind="image", state="saving").items) == ids(saving)
    assert ids(store.list(kind="image", state=["queued", "active"]).items) == ids(queued + active)
    assert ids(store.list(state="pending").items) == ids(jobs)
    assert ids(store.list(kind="image", state=[]).items) == []
    assert ids(store.list(kind="job", state="held").items) == []
    assert store.list(kind="image", state="saving").items == saving  # whole snapshots, not just ids


def test_list_pages_cover_everything_once_in_creation_order(store: EngineStore) -> None:
    made = [store.create("image", {"name": f"n{i}"}).id for i in range(23)]
    for limit in (1, 5, 23, 100):
        seen: list[str] = []
        after: str | None = None
        pages = 0
        while True:
            page = store.list(after=after, limit=limit)
            pages += 1
            assert len(page.items) <= limit
            seen.extend(r.id for r in page.items)
            if page.next_after is None:
                break
            assert page.next_after == page.items[-1].id
            after = page.next_after
        assert seen == made, f"limit={limit}"
        assert pages <= len(made) // limit + 1


def test_list_pages_through_a_filter(store: EngineStore) -> None:
    wanted = []
    for i in range(12):
        r = store.create("image", {"name": f"n{i}"})
        if i % 3 == 0:
            r = store.fire(r, "stage")
            wanted.append(r.id)
    seen: list[str] = []
    after = None
    while True:
        page = store.list(kind="image", state="uploading", after=after, limit=2)
        seen.extend(r.id for r in page.items)
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == wanted


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_list_refuses_a_limit_out_of_range(store: EngineStore, limit: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.list(limit=limit)
    assert (caught.value.field, caught.value.got) == ("limit", limit)
    assert "1000" in caught.value.constraint


def test_list_refuses_a_state_the_kind_does_not_have(store: EngineStore) -> None:
    with pytest.raises(UnknownState) as caught:
        store.list(kind="image", state=["active", "provisioned"])
    assert (caught.value.kind, caught.value.state) == ("image", "provisioned")
    assert caught.value.known == tuple(s.name for s in image.states)


def test_list_refuses_an_unknown_kind(store: EngineStore) -> None:
    with pytest.raises(UnknownKind) as caught:
        store.list(kind="volume")
    assert (caught.value.kind, caught.value.known) == ("volume", ("image", "job"))


# --- fire ----------------------------------------------------------------------------------------


def test_fire_with_a_snapshot(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("image", {"name": "x"})
    clock.advance(timedelta(seconds=5))
    after = store.fire(r, "upload", actor="bob", detail={"why": "test"})

    assert (after.id, after.state, after.version) == (r.id, "saving", 2)
    assert (after.entered_at, after.updated_at, after.created_at) == (clock.now, clock.now, r.created_at)
    assert after.spec == r.spec
    assert store.get(r.id) == after
    entry = store.journal(r.id)[-1]
    assert (entry.version, entry.event, entry.from_state, entry.to_state, entry.actor, entry.at, entry.detail) == (
        2,
        "upload",
        "queued",
        "saving",
        "bob",
        clock.now,
        {"why": "test"},
    )


def test_fire_by_id_with_the_expected_version(store: EngineStore) -> None:
    r = store.create("image", {"name": "x"})
    after = store.fire(r.id, "stage", expected_version=1)
    assert (after.state, after.version) == ("uploading", 2)
    after = store.fire(r.id, "import", expected_version=2)
    assert (after.state, after.version) == ("importing", 3)
    assert store.get(r.id) == after


def test_fire_by_id_alone_applies_to_the_current_state(store: EngineStore) -> None:
    r = store.create("image", {"name": "x"})
    store.fire(r, "upload")
    after = store.fire(r.id, "activate")
    assert (after.state, after.version) == ("active", 3)
    assert [e.event for e in store.journal(r.id)] == [CREATE_EVENT, "upload", "activate"]


@pytest.mark.parametrize("style", ["snapshot", "pinned", "id"])
def test_fire_refuses_an_event_not_allowed_in_the_state(store: EngineStore, style: str) -> None:
    r = store.create("image", {"name": "x"})
    before = Unchanged(store, r.id)
    with pytest.raises(TransitionNotAllowed) as caught:
        _fire_styled(store, r, "activate", style)
    err = caught.value
    assert (err.kind, err.state, err.event, err.resource_id) == ("image", "queued", "activate", r.id)
    assert err.allowed == ("upload", "stage", "import", "delete")
    assert err.allowed == image.allowed_events("queued")
    for word in ("queued", "activate", "upload, stage, import, delete"):
        assert word in str(err)
    before.check()


def test_nothing_leaves_a_final_state(store: EngineStore) -> None:
    r = store.fire(store.create("image", {"name": "x"}), "delete")
    assert r.state == "deleted"
    before = Unchanged(store, r.id)
    for event in image.event_names:
        with pytest.raises(TransitionNotAllowed) as caught:
            store.fire(r, event)
        assert (caught.value.state, caught.value.event, caught.value.allowed) == ("deleted", event, ())
    before.check()


def test_a_guard_refusal_names_the_guard(store: EngineStore) -> None:
    r = store.create("job")
    r = store.fire(r, "request")
    r = store.fire(r, "callback")
    before = Unchanged(store, r.id)
    with pytest.raises(TransitionNotAllowed) as caught:
        store.fire(r, "finish")
    assert (caught.value.state, caught.value.event) == ("held", "finish")
    assert caught.value.reason is not None
    assert "approved" in caught.value.reason
    assert "finish" in caught.value.allowed  # the graph allows it; the guard said no
    before.check()
    # Guards look at the resource as it is before the transition.
    r = store.fire(r, "retry", data={"approved": True})
    r = store.fire(store.fire(r, "request"), "callback")
    assert store.fire(r, "finish").state == "done"


@pytest.mark.parametrize("style", ["snapshot", "pinned"])
def test_a_stale_writer_gets_a_conflict(store: EngineStore, style: str) -> None:
    r = store.create("image", {"name": "x"})
    current = store.fire(r, "upload")
    before = Unchanged(store, r.id)
    # Two events: one allowed from the stale state, one allowed neither there nor now.
    for event in ("stage", "deactivate"):
        with pytest.raises(Conflict) as caught:
            _fire_styled(store, r, event, style)
        err = caught.value
        assert (err.resource_id, err.expected_version, err.actual_version, err.actual_state) == (
            r.id,
            1,
            2,
            "saving",
        )
        assert "expected version 1" in str(err)
        assert "found version 2" in str(err)
    assert current == before.row
    before.check()


def test_a_conflict_for_an_event_allowed_now_but_written_against_an_old_version(store: EngineStore) -> None:
    r = _active(store)
    deactivated = store.fire(r, "deactivate")
    back = store.fire(deactivated, "reactivate")
    before = Unchanged(store, r.id)
    # Same state as the stale snapshot, different version: still a conflict (no ABA).
    assert (back.state, back.version) == (r.state, r.version + 2)
    with pytest.raises(Conflict) as caught:
        store.fire(r, "deactivate")
    assert (caught.value.expected_version, caught.value.actual_version) == (r.version, back.version)
    before.check()


@pytest.mark.parametrize("style", ["snapshot", "pinned", "id"])
def test_fire_refuses_an_unknown_event(store: EngineStore, style: str) -> None:
    r = store.create("image", {"name": "x"})
    before = Unchanged(store, r.id)
    with pytest.raises(UnknownEvent) as caught:
        _fire_styled(store, r, "explode", style)
    assert (caught.value.kind, caught.value.event) == ("image", "explode")
    assert caught.value.known == image.event_names
    before.check()


def test_fire_at_an_unknown_id(store: EngineStore) -> None:
    before = Unchanged(store)
    with pytest.raises(ResourceNotFound) as caught:
        store.fire("no-such-id", "upload")
    assert caught.value.resource_id == "no-such-id"
    with pytest.raises(ResourceNotFound):
        store.fire("no-such-id", "upload", expected_version=1)
    before.check()


def test_fire_refuses_data_that_is_not_json(store: EngineStore) -> None:
    r = store.create("image", {"name": "x"})
    before = Unchanged(store, r.id)
    with pytest.raises(InvalidSpec) as caught:
        store.fire(r, "upload", data={"bad": {1, 2}})
    assert [name for name, _ in caught.value.problems] == ["data"]
    before.check()


def test_fire_merges_data_shallowly(store: EngineStore) -> None:
    r = store.create("job", data={"keep": 1, "nested": {"a": 1, "b": 2}, "over": "old"})
    r = store.fire(r, "request", data={"over": "new", "nested": {"c": 3}, "added": [1, "two", None]})
    expected = {"keep": 1, "nested": {"c": 3}, "over": "new", "added": [1, "two", None]}
    assert r.data == expected
    assert store.get(r.id).data == expected
    r = store.fire(r, "callback")  # no data: data is kept
    assert store.get(r.id).data == expected
    r = store.fire(r, "retry", data={})
    assert store.get(r.id).data == expected
    unicode = {"naïve": "ü ✓ \u2028", "quote": 'it\'s "q"', "big": 2**53, "float": 0.5, "bool": False}
    r = store.fire(r, "request", data=unicode)
    assert store.get(r.id).data == {**expected, **unicode}


def test_fire_records_and_clears_the_error(store: EngineStore) -> None:
    r = store.create("image", {"name": "x"})
    r = store.fire(r, "upload")
    r = store.fire(r, "kill", error="disk full")
    assert (r.state, r.error) == ("killed", "disk full")
    assert store.get(r.id).error == "disk full"
    r = store.fire(r, "delete")
    assert store.get(r.id).error is None


def test_a_wait_state_gets_its_deadline_from_the_clock(store: EngineStore, clock: FakeClock) -> None:
    r = _active(store)
    clock.advance(timedelta(hours=3))
    waiting = store.fire(r, "delay_delete")
    pending_delete = image.state("pending_delete")
    assert pending_delete.deadline is not None
    assert (waiting.state, waiting.deadline, waiting.next_attempt_at) == (
        "pending_delete",
        clock.now + pending_delete.deadline,
        None,
    )
    assert store.get(r.id).deadline == clock.now + pending_delete.deadline
    clock.advance()
    gone = store.fire(waiting, "scrub")
    assert (gone.deadline, gone.next_attempt_at) == (None, None)
    assert store.get(r.id).deadline is None

    j = store.fire(store.create("job"), "request")
    assert (j.state, j.deadline, j.next_attempt_at) == ("waiting", clock.now + JOB_WAIT, None)
    assert store.get(j.id).deadline == clock.now + JOB_WAIT


def test_a_work_state_is_due_at_once_and_other_states_are_not(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("image", {"name": "x"})
    clock.advance(timedelta(minutes=1))
    saving = store.fire(r, "upload")
    assert (saving.next_attempt_at, saving.deadline) == (clock.now, None)
    assert store.get(r.id).next_attempt_at == clock.now
    clock.advance(timedelta(minutes=1))
    active = store.fire(saving, "activate")
    assert (active.next_attempt_at, active.deadline) == (None, None)
    assert store.get(r.id).next_attempt_at is None


def test_fire_resets_the_per_state_bookkeeping(store: EngineStore) -> None:
    r = store.create("image", {"name": "x"})
    after = store.fire(r, "upload")
    assert (after.attempts, after.claim_token, after.claimed_by, after.claim_expires_at) == (0, None, None, None)
    assert (after.generation, after.observed_generation, after.desired_state, after.sharable) == (
        r.generation,
        r.observed_generation,
        r.desired_state,
        r.sharable,
    )


# --- journal and feed ------------------------------------------------------------------------------


def test_journal_is_in_version_order_and_pages_by_version(store: EngineStore, clock: FakeClock) -> None:
    r = _active(store)
    for _ in range(4):
        clock.advance()
        r = store.fire(r, "deactivate", actor="ops")
        r = store.fire(r, "reactivate", actor="ops")
    journal = store.journal(r.id)
    assert [e.version for e in journal] == list(range(1, r.version + 1))
    assert [e.event for e in journal[:5]] == [CREATE_EVENT, "upload", "activate", "deactivate", "reactivate"]
    for prev, entry in itertools.pairwise(journal):
        assert entry.from_state == prev.to_state
        assert entry.seq > prev.seq
        assert entry.at >= prev.at
    assert store.journal(r.id, after_version=3) == journal[3:]
    assert store.journal(r.id, after_version=3, limit=2) == journal[3:5]
    assert store.journal(r.id, after_version=r.version) == []
    assert store.journal("no-such-id") == []


def test_feed_interleaves_resources_in_seq_order(store: EngineStore) -> None:
    a = store.create("image", {"name": "a"})
    b = store.create("job")
    a = store.fire(a, "upload")
    b = store.fire(b, "request")
    a = store.fire(a, "activate")
    feed = store.feed()
    assert [(e.resource_id, e.version, e.event) for e in feed] == [
        (a.id, 1, CREATE_EVENT),
        (b.id, 1, CREATE_EVENT),
        (a.id, 2, "upload"),
        (b.id, 2, "request"),
        (a.id, 3, "activate"),
    ]
    seqs = [e.seq for e in feed]
    assert seqs == sorted(set(seqs))
    assert store.feed(after_seq=seqs[1]) == feed[2:]
    assert store.feed(after_seq=seqs[1], limit=2) == feed[2:4]
    assert store.feed(after_seq=seqs[-1]) == []
    assert sorted(feed, key=lambda e: (e.resource_id, e.version)) == sorted(
        store.journal(a.id) + store.journal(b.id), key=lambda e: (e.resource_id, e.version)
    )


def test_journal_entries_and_resources_serialise_to_json(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("job", data={"k": "v"}, idempotency_key="idem", actor="me")
    r = store.fire(r, "request", detail={"n": 1})
    doc = r.to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert set(doc) == {
        "id", "kind", "state", "version", "spec", "data", "desired_state", "generation", "observed_generation",
        "sharable", "error", "attempts", "entered_at", "next_attempt_at", "deadline", "claimed_by",
        "claim_expires_at", "idempotency_key", "created_at", "updated_at", "in_use_by",
        "forced_generation", "kind_version",
    }  # fmt: skip
    assert "claim_token" not in doc
    assert (doc["id"], doc["kind"], doc["state"], doc["version"]) == (r.id, "job", "waiting", 2)
    assert (doc["data"], doc["idempotency_key"], doc["next_attempt_at"]) == ({"k": "v"}, "idem", None)
    assert datetime.fromisoformat(doc["entered_at"]) == clock.now
    assert datetime.fromisoformat(doc["deadline"]) == clock.now + JOB_WAIT
    assert store.get(r.id).to_json() == doc

    entry = store.journal(r.id)[-1].to_json()
    assert json.loads(json.dumps(entry)) == entry
    assert (entry["event"], entry["from_state"], entry["to_state"], entry["detail"]) == (
        "request",
        "pending",
        "waiting",
        {"n": 1},
    )
    assert datetime.fromisoformat(entry["at"]) == clock.now


# --- kinds -----------------------------------------------------------------------------------------


def test_the_store_knows_its_kinds(store: EngineStore) -> None:
    assert dict(store.kinds) == {"image": image, "job": job}
    assert store.kind("job") is job
    with pytest.raises(UnknownKind) as caught:
        store.kind("volume")
    assert caught.value.known == ("image", "job")
    store.register(image)  # the same kind again is fine
    impostor = Kind("image", states=[State("only", 1)], events=[Event("noop", "only", "only")], initial="only")
    with pytest.raises(TenureError, match="image"):
        store.register(impostor)
    assert store.kind("image") is image


# --- opening stores ------------------------------------------------------------------------------


def test_a_database_that_is_not_migrated_is_refused(store_url: str) -> None:
    dialect = _dialect(store_url)
    with pytest.raises(SchemaNotMigrated) as caught:
        open_store(store_url, [image])
    assert (caught.value.current, caught.value.required) == (0, latest_version(dialect))
    assert "tenure migrate" in str(caught.value)


def test_using_a_store_before_migrating_says_so(store_url: str) -> None:
    s = open_store(store_url, [image], check_schema=False)
    try:
        assert s.schema_version() == 0
        with pytest.raises(SchemaNotMigrated) as caught:
            s.get("anything")
        assert (caught.value.current, caught.value.required) == (0, latest_version(_dialect(store_url)))
        with pytest.raises(SchemaNotMigrated):
            s.create("image", {"name": "x"})
    finally:
        s.close()


def test_a_migrated_database_opens_with_the_schema_check(store: EngineStore, store_url: str) -> None:
    r = store.create("image", {"name": "x"})
    other = open_store(store_url, [image])
    try:
        assert other.schema_version() == latest_version(_dialect(store_url))
        assert other.get(r.id) == store.get(r.id)
    finally:
        other.close()


def test_a_database_newer_than_this_tenure_is_refused(store: EngineStore, store_url: str) -> None:
    newer = latest_version(_dialect(store_url)) + 1
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            conn.execute(
                "INSERT INTO tenure_migrations (version, name, applied_at) VALUES (?, 'future', '2099')", (newer,)
            )
        conn.close()
    else:
        with psycopg.connect(store_url, autocommit=True) as pg:
            pg.execute(
                "INSERT INTO tenure_migrations (version, name, applied_at) VALUES (%s, 'future', now())", (newer,)
            )
    with pytest.raises(SchemaTooNew) as caught:
        open_store(store_url, [image])
    assert (caught.value.current, caught.value.known) == (newer, newer - 1)


def test_a_postgres_server_that_is_down_is_unavailable() -> None:
    url = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=1"
    with pytest.raises(StoreUnavailable) as caught:
        open_store(url, [image])
    assert caught.value.target == "postgresql://postgres@127.0.0.1:1/postgres"
    assert caught.value.reason
    assert "127.0.0.1" in str(caught.value)


def test_a_password_never_shows_in_the_target() -> None:
    url = "postgresql://postgres:s3cret@127.0.0.1:1/postgres?connect_timeout=1"
    with pytest.raises(StoreUnavailable) as caught:
        open_store(url, [image])
    assert "s3cret" not in caught.value.target
    assert "s3cret" not in str(caught.value)
    assert ":***@" in caught.value.target


def test_a_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing-dir/t.db"
    with pytest.raises(StoreUnavailable) as caught:
        open_store(url, [image])
    assert caught.value.target == f"sqlite:///{tmp_path}/missing-dir/t.db"
    assert caught.value.reason


def test_a_relative_sqlite_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = open_store("sqlite:///rel.db", [image], check_schema=False)
    try:
        assert s.migrate() == list(range(1, latest_version("sqlite") + 1))
        s.create("image", {"name": "x"})
    finally:
        s.close()
    assert (tmp_path / "rel.db").is_file()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://root@localhost/db", "unknown scheme 'mysql'"),
        ("just-a-path.db", "unknown scheme '(none)'"),
        ("sqlite://relative.db", "three slashes"),
        ("sqlite:///:memory:", "must name a file"),
        ("sqlite:///", "must name a file"),
        ("sqlite:///t.db?synchronous=sometimes", "synchronous"),
        ("sqlite:///t.db?busy_timeout=soon", "busy_timeout must be a number"),
        ("sqlite:///t.db?busy_timeout=0", "busy_timeout must be positive"),
        ("postgresql://postgres@127.0.0.1:1/db?pool_size=many", "pool_size must be a number"),
        ("postgresql://postgres@127.0.0.1:1/db?connect_timeout=-1", "connect_timeout must be positive"),
    ],
)
def test_invalid_database_urls(url: str, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidDatabaseURL) as caught:
        open_store(url, [image])
    assert caught.value.url == url
    assert reason in caught.value.reason
    assert "sqlite:////absolute/path.db" in str(caught.value)  # says what would have been accepted
    assert list(tmp_path.iterdir()) == []  # nothing was created on the way


# --- connections ---------------------------------------------------------------------------------


def _open_files_on(path: str) -> int:
    """How many file descriptors of this process are open on ``path`` (Linux /proc)."""
    wanted = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == wanted:
                count += 1
        except OSError:
            continue
    return count


@pytest.mark.timeout(60)
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files through /proc")
def test_sqlite_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = open_store(f"sqlite:///{db}", [image], check_schema=False)
    try:
        store.migrate()
        r = store.create("image", {"name": "debian"})
        baseline = _open_files_on(str(db))

        # Short-lived threads, as a thread pool that retires idle workers makes them.
        for _ in range(20):
            batch = [threading.Thread(target=store.get, args=(r.id,)) for _ in range(10)]
            for t in batch:
                t.start()
            for t in batch:
                t.join()
        gc.collect()

        # None of those 200 threads is alive any more, and none of their connections is. SQLite keeps
        # the descriptors of closed connections while another connection of the process holds a lock
        # on the file (closing one would drop that lock) and reuses them: bounded by one batch.
        alive = [c for c in gc.get_objects() if isinstance(c, sqlite3.Connection)]
        assert len(alive) <= 2, f"{len(alive)} connections outlived their threads"
        assert _open_files_on(str(db)) <= baseline + 10
    finally:
        store.close()


# --- text both databases can hold ----------------------------------------------------------------

NUL = "\x00"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"spec": {"name": f"a{NUL}b"}}, "name"),
        ({"data": {"nested": {"k": [1, f"x{NUL}"]}}}, "data.nested.k.1"),
        ({"data": {f"key{NUL}": 1}}, f"data.key{NUL}"),
    ],
    ids=["spec-value", "nested-data-value", "data-key"],
)
def test_create_refuses_json_with_a_nul_character(store: EngineStore, kwargs: dict[str, Any], field: str) -> None:
    # PostgreSQL cannot store U+0000; SQLite could, but both stores must answer alike.
    before = Unchanged(store)
    kwargs = {"spec": {"name": "x"}, **kwargs}
    with pytest.raises(InvalidSpec) as caught:
        store.create("image", **kwargs)
    assert [name for name, _ in caught.value.problems] == [field]
    assert "U+0000" in caught.value.problems[0][1]
    before.check()


@pytest.mark.parametrize("field", ["idempotency_key", "resource_id", "actor"])
def test_create_refuses_text_with_a_nul_character(store: EngineStore, field: str) -> None:
    before = Unchanged(store)
    kwargs: dict[str, Any] = {field: f"a{NUL}b"}
    with pytest.raises(InvalidArgument) as caught:
        store.create("image", {"name": "x"}, **kwargs)
    assert (caught.value.field, caught.value.got) == (field, f"a{NUL}b")
    before.check()


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"data": {"k": NUL}}, InvalidSpec, "data.k"),
        ({"detail": {"k": NUL}}, InvalidSpec, "detail.k"),
        ({"error": NUL}, InvalidArgument, "error"),
        ({"actor": NUL}, InvalidArgument, "actor"),
    ],
    ids=["data", "detail", "error", "actor"],
)
def test_fire_refuses_text_with_a_nul_character(
    store: EngineStore, kwargs: dict[str, Any], error: type[TenureError], field: str
) -> None:
    r = store.create("image", {"name": "x"})
    before = Unchanged(store, r.id)
    with pytest.raises(error) as caught:
        store.fire(r, "upload", **kwargs)
    facts = caught.value.facts()
    fields = [name for name, _ in facts["problems"]] if "problems" in facts else [facts["field"]]
    assert fields == [field]
    before.check()


def test_an_id_with_a_nul_character_is_simply_not_found(store: EngineStore) -> None:
    with pytest.raises(ResourceNotFound) as caught:
        store.get(f"a{NUL}")
    assert caught.value.resource_id == f"a{NUL}"
    with pytest.raises(ResourceNotFound):
        store.fire(f"a{NUL}", "upload")


# --- losing a race, deterministically ------------------------------------------------------------


class Interloper:
    """A guard that, while armed, lets another writer (its own store) move the resource first.

    Guards run while a fire is being planned, before its compare-and-swap, so this lands a write
    exactly between the fire's read and its write.
    """

    def __init__(self) -> None:
        self.store: EngineStore | None = None
        self.armed = 0
        self.writes = 0

    def __call__(self, subject: Any) -> bool:
        if self.armed and self.store is not None:
            self.armed -= 1
            self.store.fire(subject.id, "pull", actor="interloper")
            self.writes += 1
        return True


@pytest.fixture
def interloper(store: EngineStore, store_url: str) -> Iterator[Interloper]:
    """Registers the ``door`` kind, whose ``push`` is guarded by the returned interloper."""
    it = Interloper()
    door = Kind(
        "door",
        initial="shut",
        states=[State("shut", 1), State("ajar", 2)],
        events=[Event("push", ["shut", "ajar"], "ajar", guard=it), Event("pull", ["shut", "ajar"], "shut")],
    )
    store.register(door)
    it.store = open_store(store_url, [door])
    try:
        yield it
    finally:
        it.store.close()


def test_a_blind_fire_that_loses_a_race_rereads_and_applies_to_the_new_state(
    store: EngineStore, interloper: Interloper
) -> None:
    r = store.create("door")
    interloper.armed = 1
    after = store.fire(r.id, "push", actor="me")
    assert (interloper.writes, after.state, after.version) == (1, "ajar", 3)
    assert [(e.event, e.from_state, e.to_state, e.actor) for e in store.journal(r.id)] == [
        (CREATE_EVENT, None, "shut", None),
        ("pull", "shut", "shut", "interloper"),
        ("push", "shut", "ajar", "me"),
    ]


@pytest.mark.parametrize("style", ["snapshot", "pinned"])
def test_a_pinned_fire_that_loses_a_race_at_the_swap_is_a_conflict(
    store: EngineStore, interloper: Interloper, style: str
) -> None:
    r = store.create("door")
    interloper.armed = 1
    with pytest.raises(Conflict) as caught:
        _fire_styled(store, r, "push", style)
    assert (caught.value.expected_version, caught.value.actual_version, caught.value.actual_state) == (1, 2, "shut")
    assert [e.event for e in store.journal(r.id)] == [CREATE_EVENT, "pull"]
    assert store.get(r.id).version == 2


def test_a_blind_fire_gives_up_with_a_conflict_when_it_keeps_losing(store: EngineStore, interloper: Interloper) -> None:
    r = store.create("door")
    interloper.armed = 10_000
    with pytest.raises(Conflict) as caught:
        store.fire(r.id, "push")
    current = store.get(r.id)
    assert interloper.writes >= 2
    assert current.version == 1 + interloper.writes
    assert (caught.value.resource_id, caught.value.actual_version, caught.value.actual_state) == (
        r.id,
        current.version,
        "shut",
    )
    assert caught.value.expected_version < caught.value.actual_version
    assert [e.event for e in store.journal(r.id)] == [CREATE_EVENT] + ["pull"] * interloper.writes


def test_both_stores_provide_the_whole_engine_protocol(store: EngineStore) -> None:
    from tenure.store.protocol import EngineStore, Store

    assert isinstance(store, Store)
    assert isinstance(store, EngineStore)
