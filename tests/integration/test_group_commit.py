"""Group commit on SQLite: writes queued while a transaction runs share the next one, each decided alone.

The SQLite store's writes (every compare-and-swap and every insert) go through
:class:`tenure.store.groupcommit.GroupCommit`. These tests hold the write lock with an open
transaction so that writes pile up behind it, then check that they committed together, that each
got its own answer (a lost race, a taken id) and that one refused write took nothing else with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tenure import AlreadyExists, Conflict
from tenure.store import open_store
from tenure.store.protocol import EngineStore
from tenure.store.sqlite import SQLiteDatabase
from tests.kinds_for_tests import job
from tests.store_support import all_journal


@pytest.fixture
def s(tmp_path: Path) -> Iterator[EngineStore]:
    store = open_store(f"sqlite:///{tmp_path}/g.db", [job], check_schema=False)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def _db(store: EngineStore) -> SQLiteDatabase:
    db = store.database
    assert isinstance(db, SQLiteDatabase)
    return db


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the writes never queued up"
        time.sleep(0.001)


def _piled_up(store: EngineStore, calls: list[Callable[[], object]]) -> list[object]:
    """Run ``calls`` in threads while a transaction holds the write lock; their answers (or errors)."""
    db = _db(store)
    answers: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            answers[i] = calls[i]()
        except Exception as exc:
            answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    with db.transaction():
        for t in threads:
            t.start()
        # One thread leads (and waits for the lock); the rest queue behind it.
        _until(lambda: db.group.waiting == len(calls) - 1)
    for t in threads:
        t.join()
    return answers


def test_writes_queued_behind_a_transaction_commit_together(s: EngineStore) -> None:
    group = _db(s).group
    before = (group.transactions, group.units)
    made = _piled_up(s, [lambda: s.create("job") for _ in range(12)])
    assert (group.transactions - before[0], group.units - before[1]) == (2, 12), "the leader's, then the rest"
    for r in made:
        assert s.get(r.id).version == 1  # type: ignore[attr-defined]
        assert [e.event for e in all_journal(s, r.id)] == ["@create"]  # type: ignore[attr-defined]


def test_a_refused_write_in_a_batch_takes_nothing_else_with_it(s: EngineStore) -> None:
    taken = s.create("job", resource_id="taken")
    first = s.create("job")
    calls: list[Callable[[], object]] = [lambda: s.create("job")]
    calls += [lambda: s.create("job", resource_id="taken")]  # the id is taken: refused alone
    calls += [lambda: s.fire(first, "request"), lambda: s.fire(first, "cancel")]  # one wins version 1
    calls += [lambda: s.create("job") for _ in range(4)]
    answers = _piled_up(s, calls)
    assert isinstance(answers[1], AlreadyExists)
    outcomes = answers[2:4]
    assert sum(isinstance(a, Conflict) for a in outcomes) == 1, outcomes
    assert s.get(first.id).version == 2
    assert s.get(taken.id).version == 1
    for a in [answers[0], *answers[4:]]:
        assert s.get(a.id).version == 1  # type: ignore[attr-defined]
    assert len(all_journal(s, first.id)) == 2


def test_a_write_alone_commits_at_once_in_its_own_transaction(s: EngineStore) -> None:
    group = _db(s).group
    before = group.transactions
    r = s.create("job")
    s.fire(r, "request")
    assert group.transactions - before == 2
