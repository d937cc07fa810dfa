"""Counts per state kept by folding the journal: always what counting the resources would say.

The backlog (and with it ``/metrics`` and the dashboard's badges) reads ``state_counts`` plus the
journal rows not folded yet; these tests pin that the result equals a plain ``GROUP BY`` over the
resources whatever happened in between: any mix of creations, transitions, bookkeeping writes and
folds, writers racing the fold, several stores folding at once, and a database upgraded with
resources already in it.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tenure import TenureError
from tenure.kinds.image import image
from tenure.store import open_store
from tenure.store.counts import StateCounts
from tenure.store.protocol import EngineStore
from tests.integration.test_migrations import _at_version
from tests.kinds_for_tests import job, share
from tests.store_support import FakeClock

KINDS = [job, share]


@pytest.fixture
def s(store_url: str, clock: FakeClock) -> Iterator[EngineStore]:
    store = open_store(store_url, KINDS, clock=clock, check_schema=False)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def counted(store: EngineStore) -> Counter[tuple[str, str]]:
    """The counts a plain scan of every resource gives."""
    out: Counter[tuple[str, str]] = Counter()
    after = None
    while True:
        page = store.list(after=after, limit=500)
        out.update((r.kind, r.state) for r in page.items)
        if page.next_after is None:
            return out
        after = page.next_after


def backlog(store: EngineStore) -> Counter[tuple[str, str]]:
    return Counter({(r.kind, r.state): r.count for r in store.backlog(["job", "share"]) if r.count})


EVENTS = ["request", "callback", "retry", "finish", "expire", "cancel", "pause", "resume", "teardown"]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(["job", "share"])),
        st.tuples(st.just("fire"), st.integers(min_value=0, max_value=30), st.sampled_from(EVENTS)),
        st.tuples(st.just("desired"), st.integers(min_value=0, max_value=30)),
        st.tuples(st.just("fold")),
        st.tuples(st.just("read")),
    ),
    max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_the_counts_equal_a_count_of_the_resources_after_any_writes_and_folds(
    s: EngineStore, ops: list[tuple[object, ...]]
) -> None:
    made: list[str] = [r.id for r in s.list(limit=500).items]
    folds = StateCounts(s.database, batch=3)  # small batches: a fold spans several transactions
    for op in ops:
        if op[0] == "create":
            made.append(s.create(str(op[1])).id)
        elif op[0] == "fire" and made:
            r = s.get(made[int(op[1]) % len(made)])  # type: ignore[call-overload]
            # Not an event of its kind, or not allowed now: refused, and nothing is written.
            with contextlib.suppress(TenureError):
                s.fire(r, str(op[2]), data={"approved": True})
        elif op[0] == "desired" and made:
            r = s.get(made[int(op[1]) % len(made)])  # type: ignore[call-overload]
            s.set_desired_state(r, None)  # a bookkeeping write: the state stays
        elif op[0] == "fold":
            folds.fold()
        else:
            assert backlog(s) == counted(s)
    assert backlog(s) == counted(s)


def test_bookkeeping_writes_count_nothing_and_states_left_go_to_zero(s: EngineStore) -> None:
    r = s.create("job")
    s.set_desired_state(r, "expired")
    assert backlog(s) == Counter({("job", "pending"): 1})
    s.fire(s.get(r.id), "cancel")
    assert backlog(s) == Counter({("job", "expired"): 1})
    rows = {(row.kind, row.state): row.count for row in s.backlog(["job"])}
    assert rows["job", "pending"] == 0, "a state left empty is still reported, at zero"


def test_counts_stay_exact_while_writers_race_the_fold(s: EngineStore) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            while not stop.is_set():
                r = s.create("job")
                s.fire(r, "cancel")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    writers = [threading.Thread(target=write) for _ in range(3)]
    for t in writers:
        t.start()
    try:
        folds = StateCounts(s.database, batch=5)
        for _ in range(30):
            folds.fold()
            seen = backlog(s)
            # Mid-race the scan and the counts read at different moments: only the total can be
            # compared loosely; every count must be a real one (never negative).
            assert all(n > 0 for n in seen.values())
    finally:
        stop.set()
        for t in writers:
            t.join()
    assert not errors
    assert backlog(s) == counted(s)


def test_several_stores_folding_at_once_count_each_row_once(store_url: str, s: EngineStore) -> None:
    for _ in range(40):
        s.fire(s.create("share"), "pause")
    others = [open_store(store_url, KINDS, check_schema=False) for _ in range(3)]
    try:
        threads = [threading.Thread(target=StateCounts(o.database, batch=7).fold) for o in others]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert backlog(s) == Counter({("share", "paused"): 40})
    finally:
        for o in others:
            o.close()


def test_an_upgraded_database_counts_the_resources_it_already_held(store_url: str) -> None:
    _at_version(store_url, 8)  # one image in 'saving', journaled, made by an older tenure
    store = open_store(store_url, [image], check_schema=False)
    try:
        store.migrate()
        assert {(r.kind, r.state): r.count for r in store.backlog(["image"]) if r.count} == {("image", "saving"): 1}
        assert counted(store) == Counter({("image", "saving"): 1})
    finally:
        store.close()
