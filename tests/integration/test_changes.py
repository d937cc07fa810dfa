"""The change feed on both stores: resumable positions, filters, validation, and never skipping an entry.

On PostgreSQL, journal seqs are taken before commit, so transactions become visible out of seq order;
the feed must hold back what could still be overtaken instead of skipping it.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tenure import Conflict, InvalidArgument, Resource, TransitionNotAllowed, UnknownKind, UnknownState, open_store
from tenure.kinds.image import image
from tenure.store.feed import BEGINNING, Change, Changes
from tenure.store.postgres import write_params, write_statement
from tenure.store.protocol import EngineStore
from tenure.store.sqlite import Q as SQLITE_QUERIES
from tenure.store.write import plan_desired
from tests.store_support import all_journal, feed_all, settle

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def store_url(reused_store_url: str) -> str:
    """Overrides the root conftest's: one database per module, emptied before each test."""
    return reused_store_url


def _active(store: EngineStore, name: str = "img") -> Resource:
    r = store.create("image", {"name": name})
    return store.fire(store.fire(r, "upload"), "activate")


def read_all(
    store: EngineStore, after: str | None = None, *, limit: int = 3, **filters: str
) -> tuple[list[Change], str]:
    """Every change after ``after``, page by page (once the feed has settled); returns them and the final position."""
    settle(store)
    out: list[Change] = []
    position = after
    while True:
        page = store.changes(position, limit=limit, **filters)
        out.extend(page.entries)
        if not page.entries:
            assert page.position == (position or BEGINNING) or filters, "nothing new, yet the position moved"
            return out, page.position
        assert page.position >= page.entries[-1].position
        position = page.position


# --- reading ---------------------------------------------------------------------------------------


def test_the_feed_from_the_beginning_is_the_journal_with_kinds(store: EngineStore) -> None:
    a = _active(store, "a")
    b = store.create("job")
    store.fire(a, "deactivate")

    changes, _ = read_all(store)

    assert [c.entry for c in changes] == feed_all(store)
    assert [c.kind for c in changes] == ["image"] * 3 + ["job", "image"]
    assert [c.resource_id for c in changes] == [a.id] * 3 + [b.id, a.id]
    positions = [c.position for c in changes]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    first = changes[0]
    assert first.to_json() == {"position": first.position, "kind": "image", **first.entry.to_json()}


def test_an_empty_feed_stays_at_the_beginning(store: EngineStore) -> None:
    assert store.changes() == Changes([], BEGINNING)
    assert store.changes(BEGINNING) == Changes([], BEGINNING)
    assert store.latest_position() == BEGINNING
    assert Changes([], BEGINNING).to_json() == {"entries": [], "position": BEGINNING}


def test_a_reader_resumes_where_it_stopped_and_misses_nothing(store: EngineStore) -> None:
    r = _active(store)
    seen, position = read_all(store)
    assert store.changes(position) == Changes([], position)  # nothing new: the same position back

    store.fire(r, "deactivate")
    other = store.create("image", {"name": "other"})
    more, position2 = read_all(store, position)
    assert [(c.resource_id, c.event) for c in more] == [(r.id, "deactivate"), (other.id, "@create")]
    assert [c.entry for c in seen + more] == feed_all(store)
    assert position2 > position


def test_pages_cover_everything_exactly_once(store: EngineStore) -> None:
    for i in range(7):
        _active(store, f"r{i}")
    for limit in (1, 2, 5, 21, 1000):
        changes, _ = read_all(store, limit=limit)
        assert [c.entry for c in changes] == feed_all(store), limit


def test_latest_position_starts_a_watcher_at_now(store: EngineStore) -> None:
    r = _active(store)
    settle(store)
    now = store.latest_position()
    assert store.changes(now).entries == []
    store.fire(r, "deactivate")
    settle(store)
    (change,) = store.changes(now).entries
    assert (change.resource_id, change.event) == (r.id, "deactivate")
    assert store.latest_position() == change.position


def test_filters_by_kind_resource_and_state(store: EngineStore) -> None:
    a = _active(store, "a")
    b = _active(store, "b")
    job = store.create("job")
    store.fire(a, "deactivate")

    by_kind, _ = read_all(store, kind="job")
    assert [(c.resource_id, c.event) for c in by_kind] == [(job.id, "@create")]
    by_resource, _ = read_all(store, resource_id=b.id)
    assert [c.event for c in by_resource] == ["@create", "upload", "activate"]
    by_state, _ = read_all(store, state="active")
    assert [(c.resource_id, c.to_state) for c in by_state] == [(a.id, "active"), (b.id, "active")]
    both, _ = read_all(store, kind="image", state="deactivated")
    assert [(c.resource_id, c.event) for c in both] == [(a.id, "deactivate")]
    assert read_all(store, resource_id="nope")[0] == []


def test_a_filtered_reader_moves_past_what_it_does_not_want_but_never_past_what_it_does(store: EngineStore) -> None:
    a = _active(store, "a")
    settle(store)
    page = store.changes(kind="job")
    assert page.entries == []
    assert page.position == store.latest_position()  # no need to look at those again

    job = store.create("job")
    store.fire(a, "deactivate")
    settle(store)
    page2 = store.changes(page.position, kind="job")
    assert [(c.resource_id, c.event) for c in page2.entries] == [(job.id, "@create")]
    assert store.changes(page2.position, kind="job").entries == []


@pytest.mark.parametrize(
    "after",
    [
        "",
        "xyz",
        "0" * 31,
        "0" * 33,
        "A" * 32,
        "g" * 32,
        " " + "0" * 31,
        "00000000000000000000000000000001\n",
        "0" * 16 + "8" + "0" * 15,  # a seq past what a 64-bit signed integer holds
        "f" * 32,
    ],
)
def test_a_malformed_position_is_refused_saying_what_one_looks_like(store: EngineStore, after: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.changes(after)
    assert (caught.value.field, caught.value.got) == ("after", after)
    assert "32 lowercase hexadecimal digits" in caught.value.constraint


def test_a_position_that_is_not_text_is_refused(store: EngineStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.changes(12)  # type: ignore[arg-type]
    assert caught.value.field == "after"


def test_sqlite_positions_carry_no_transaction(store: EngineStore) -> None:
    foreign = "00000000000003e8" + "0" * 16
    if getattr(store, "dialect", "") == "postgres":
        assert store.changes(foreign).entries == []
    else:
        with pytest.raises(InvalidArgument):
            store.changes(foreign)


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_limits_are_bounded(store: EngineStore, limit: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.changes(limit=limit)
    assert caught.value.field == "limit"


def test_unknown_kinds_and_states_are_refused(store: EngineStore) -> None:
    with pytest.raises(UnknownKind):
        store.changes(kind="nope")
    with pytest.raises(UnknownState):
        store.changes(kind="image", state="nope")
    with pytest.raises(InvalidArgument):
        store.changes(resource_id="a\x00b")


# --- concurrent writers ----------------------------------------------------------------------------


def test_a_reader_tailing_busy_writers_gets_every_entry_once_in_version_order(
    store_url: str, store: EngineStore
) -> None:
    writers, per_writer = 6, 25
    ids = [_active(store, f"w{i}").id for i in range(writers * 2)]
    settle(store)
    start = store.latest_position()
    stop = threading.Event()
    #: How many entries there are to deliver, known once the writers are done.
    target: list[int] = []
    errors: list[BaseException] = []
    stores = [open_store(store_url, [image], check_schema=False) for _ in range(writers)]

    def write(n: int) -> None:
        rng = random.Random(n)
        try:
            for _ in range(per_writer):
                rid = rng.choice(ids)
                snap = stores[n].get(rid)
                event = {"active": "deactivate", "deactivated": "reactivate"}[snap.state]
                with contextlib.suppress(Conflict, TransitionNotAllowed):
                    stores[n].fire(snap, event, actor=f"w{n}")
        except BaseException as exc:
            errors.append(exc)

    delivered: list[Change] = []

    def tail() -> None:
        position = start
        deadline = time.monotonic() + 60
        try:
            while not (stop.is_set() and len(delivered) >= target[0]) and time.monotonic() < deadline:
                page = store.changes(position, limit=7)
                delivered.extend(page.entries)
                position = page.position
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=tail)
    reader.start()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        target.append(sum(len(all_journal(store, rid)) - 3 for rid in ids))
        stop.set()
        reader.join(60)
        for s in stores:
            s.close()
    assert errors == []
    expected = {(e.resource_id, e.version): e for rid in ids for e in all_journal(store, rid) if e.version > 3}
    got = [(c.resource_id, c.version) for c in delivered]
    assert len(got) == len(set(got)), "an entry was delivered twice"
    assert set(got) == set(expected), "an entry was skipped"
    assert [c.entry for c in delivered] == [expected[key] for key in got]
    for rid in ids:
        versions = [c.version for c in delivered if c.resource_id == rid]
        assert versions == sorted(versions), f"{rid}: entries out of version order"


# --- PostgreSQL: transactions commit out of seq order ----------------------------------------------


@pytest.mark.postgres
def test_an_entry_that_commits_after_a_later_one_is_not_skipped(pg_url: str, pg_store: EngineStore) -> None:
    """A transaction takes seq N and stays open while one with seq N+1 commits: a cursor on seq alone
    would read N+1 and never see N; the feed holds both back until N commits, then delivers both."""
    store = pg_store
    early, late = _active(store, "early"), _active(store, "late")
    settle(store)
    position = store.latest_position()
    seen_seq = feed_all(store)[-1].seq

    with psycopg.connect(pg_url) as slow:  # not autocommit: its transaction stays open
        desire = plan_desired(image, early, "deleted", early.updated_at + timedelta(seconds=1), "slow")
        slow.execute(write_statement(carries_waits=True), write_params(desire))
        store.fire(late, "deactivate", actor="fast")  # takes a later seq, and commits first

        (fast,) = store.feed(after_seq=seen_seq)
        assert fast.event == "deactivate"
        assert store.changes(position) == Changes([], position), "the feed ran ahead of an open transaction"
        slow.commit()

    held_back = [e for e in store.feed(after_seq=seen_seq) if e.event == "@desired"]
    assert held_back[0].seq < fast.seq, "the seq cursor at the later entry would have skipped this one"
    settle(store)
    page = store.changes(position)
    assert [(c.resource_id, c.event, c.actor) for c in page.entries] == [
        (early.id, "@desired", "slow"),
        (late.id, "deactivate", "fast"),
    ]
    assert store.changes(page.position) == Changes([], page.position)
    assert store.get(early.id).version == early.version + 1


@pytest.mark.postgres
def test_an_open_transaction_holds_back_later_commits_and_latest_position_never_runs_past_it(
    pg_url: str, pg_store: EngineStore
) -> None:
    store = pg_store
    r = _active(store)
    settle(store)
    with psycopg.connect(pg_url) as slow:
        slow.execute("SELECT pg_current_xact_id()")  # holds a transaction id, like a writer mid-way
        before = store.latest_position()
        store.fire(r, "deactivate")
        assert store.latest_position() == before
        assert store.changes(before).entries == []
        slow.rollback()
    settle(store)
    (change,) = store.changes(before).entries
    assert change.event == "deactivate"


def test_the_sqlite_feed_reads_from_its_position_not_the_whole_journal_or_every_resource(tmp_path: Path) -> None:
    # The plan, not a timing: at a million resources a plan that scans either took most of a second.
    s = open_store(f"sqlite:///{tmp_path / 'feed.db'}", [image], check_schema=False)
    try:
        s.migrate()
        for _ in range(3):
            s.create("image", {"name": "img"})
        conn = sqlite3.connect(tmp_path / "feed.db")
        params = {"txid": "0", "seq": 1, "kind": "image", "resource_id": None, "state": None, "limit": 10}
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + SQLITE_QUERIES["changes"], params)]
        conn.close()
    finally:
        s.close()

    assert not [step for step in plan if step.startswith("SCAN journal")], plan
    assert not [step for step in plan if "BLOOM FILTER" in step], plan
    assert "SEARCH j USING INTEGER PRIMARY KEY (rowid>?)" in plan
