"""Group commit: writes queued while a transaction runs share the next one, each decided alone.

Both stores' writes (every compare-and-swap and every insert) go through
:class:`tenure.store.groupcommit.GroupCommit`. These tests hold up the leading write (SQLite: an
open transaction holds the write lock; PostgreSQL: another connection locks the row it writes) so
that writes pile up behind it, then check that they committed together, that each got its own answer
(a lost race, a taken id) and that one refused write took nothing else with it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tenure import AlreadyExists, Conflict, Resource
from tenure.store import open_store
from tenure.store.groupcommit import GroupCommit
from tenure.store.postgres import PostgresDatabase
from tenure.store.protocol import EngineStore
from tenure.store.sqlite import SQLiteDatabase
from tests.kinds_for_tests import job
from tests.store_support import all_journal


@pytest.fixture
def s(store_url: str) -> Iterator[EngineStore]:
    store = open_store(store_url, [job], check_schema=False)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def _group(store: EngineStore) -> GroupCommit[Any]:
    db = store.database
    assert isinstance(db, SQLiteDatabase | PostgresDatabase)
    return db.group


@contextlib.contextmanager
def _held_up(store: EngineStore, blocker: Resource) -> Iterator[None]:
    """Hold up a write to ``blocker`` (and on SQLite every write) until the block ends."""
    db = store.database
    if isinstance(db, SQLiteDatabase):
        with db.transaction():
            yield
        return
    assert isinstance(db, PostgresDatabase)
    with psycopg.connect(db.conninfo) as conn, conn.transaction():
        conn.execute("SELECT 1 FROM resources WHERE id = %s FOR UPDATE", (blocker.id,))
        yield


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the writes never queued up"
        time.sleep(0.001)


def _piled_up(store: EngineStore, calls: list[Callable[[], object]]) -> list[object]:
    """Run ``calls`` in threads behind a held-up write; their answers (or errors)."""
    group = _group(store)
    blocker = store.create("job")
    answers: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            answers[i] = calls[i]()
        except Exception as exc:
            answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    leader = threading.Thread(target=store.fire, args=(blocker, "request"))
    with _held_up(store, blocker):
        leader.start()
        _until(lambda: group.transactions_running == 1)
        for t in threads:
            t.start()
        _until(lambda: group.waiting == len(calls))
    for t in [leader, *threads]:
        t.join()
    assert store.get(blocker.id).state == "waiting"
    return answers


def test_writes_queued_behind_a_transaction_commit_together(s: EngineStore) -> None:
    group = _group(s)
    before = (group.transactions, group.units)
    made = _piled_up(s, [lambda: s.create("job") for _ in range(12)])
    # (the blocker's creation, the held-up write, then the twelve together)
    assert (group.transactions - before[0], group.units - before[1]) == (3, 14)
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
    group = _group(s)
    before = group.transactions
    r = s.create("job")
    s.fire(r, "request")
    assert group.transactions - before == 2


def test_a_statement_that_fails_in_a_batch_fails_alone_and_the_rest_commit(s: EngineStore) -> None:
    db = s.database
    assert isinstance(db, SQLiteDatabase | PostgresDatabase)
    group = _group(s)
    calls: list[Callable[[], object]] = [lambda: s.create("job") for _ in range(3)]
    calls += [lambda: db.batched(lambda conn: conn.execute("SELECT * FROM no_such_table").fetchall())]
    calls += [lambda: s.create("job") for _ in range(3)]
    before = group.transactions
    answers = _piled_up(s, calls)
    assert isinstance(answers[3], Exception), answers[3]
    made = [a for i, a in enumerate(answers) if i != 3]
    for r in made:
        assert s.get(r.id).version == 1  # type: ignore[attr-defined]
    assert group.transactions - before == 3, "the blocker's creation, the held-up write, then the seven together"
    assert s.create("job").version == 1, "the connection is usable after the failed batch"
