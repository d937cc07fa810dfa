"""Retention on both stores: pruning removes exactly what the policy says, in bounded batches.

Every test builds histories through the store (journal entries, a wait with its callbacks, a flow run
with its task checkpoints), moves the store's clock, prunes, and compares what is left with what the
policy keeps: the history of a final resource old enough goes (its ``@create`` entry and its entry into
the final state stay), and nothing of a resource that is not final, or not final for long enough, is
touched.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tenure import InvalidArgument, Resource, open_store
from tenure.engine.housekeeping import CATCH_UP, PRUNE_EVERY, STATISTICS_EVERY, Housekeeping
from tenure.flow.records import FlowRunRow, FlowTaskRow
from tenure.store.assembly import DatabaseStore
from tenure.store.inbox import Refusal, token_hash
from tenure.store.protocol import EngineStore
from tenure.store.retention import KEEP_EVERYTHING, PruneReport, RetentionPolicy
from tests.conftest import KINDS
from tests.kinds_for_tests import share
from tests.store_support import FakeClock, all_journal, settle

pytestmark = pytest.mark.timeout(300)

DAY = timedelta(days=1)
#: The default durations, written out: journal 30 days, waits and flows 7, resources kept.
POLICY = RetentionPolicy(journal=30 * DAY, waits=7 * DAY, flows=7 * DAY)
JOURNAL_ONLY = RetentionPolicy(journal=DAY, waits=None, flows=None)
WAITS_ONLY = RetentionPolicy(journal=None, waits=DAY, flows=None)
FLOWS_ONLY = RetentionPolicy(journal=None, waits=None, flows=DAY)
TABLES = ("journal", "waits", "inbox", "interests", "flow_runs")


@dataclass(frozen=True)
class Made:
    """A resource built by :func:`history`, with the correlation token of its wait."""

    resource: Resource
    token: str

    @property
    def id(self) -> str:
        return self.resource.id

    @property
    def hashed(self) -> str:
        return token_hash(self.token)

    @property
    def run_id(self) -> str:
        return f"run-{self.id}"


def history(store: EngineStore, *, rounds: int = 1, finish: bool = True, key: str | None = None) -> Made:
    """A ``job`` with a wait answered twice, a flow run of two checkpointed tasks, and ``rounds`` trips
    through its states; cancelled at the end (a final state) when ``finish``."""
    r = store.create("job", {}, idempotency_key=key)
    token = f"token-{r.id}"
    store.open_wait(r, token_hash(token))
    for answer in ("bucket", "queue"):
        assert store.deliver(r.id, token, answer, "done").accepted
    run = FlowRunRow(f"run-{r.id}", "provision", 1, "fingerprint", "running", r.id, {"size": 1})
    store.create_flow_run(run)
    tasks = [FlowTaskRow("reserve", "done", 1, 1, result={"ok": True}), FlowTaskRow("make", "done", 1, 2)]
    store.save_flow(run.id, tasks, FlowRunRow(**{**_fields(run), "state": "done"}))
    for _ in range(rounds):
        r = store.fire(r, "request")
        r = store.fire(r, "callback")
        r = store.fire(r, "retry")
    if finish:
        r = store.fire(r, "cancel")
    return Made(r, token)


def _fields(run: FlowRunRow) -> dict[str, Any]:
    return {name: getattr(run, name) for name in run.__slots__}


def snapshot(store: EngineStore, m: Made) -> tuple[Any, ...]:
    """Everything the store holds of ``m``."""
    return (
        store.find(m.id),
        all_journal(store, m.id),
        store.wait(m.hashed),
        store.callbacks(m.hashed),
        store.flow_runs(resource_id=m.id),
        store.load_flow_run(m.run_id),
    )


def rows_of(store: EngineStore, table: str, resource_id: str) -> int:
    """How many rows of ``table`` name the resource (read straight from the database)."""
    assert isinstance(store, DatabaseStore)
    db = store.database
    mark = "?" if db.dialect == "sqlite" else "%s"
    with db.reading() as conn:
        (n,) = conn.execute(f"SELECT count(*) FROM {table} WHERE resource_id = {mark}", (resource_id,)).fetchone()
    return int(n)


def prune_all(store: EngineStore, policy: RetentionPolicy, *, limit: int | None = None) -> tuple[PruneReport, int]:
    """Prune until a batch stops short of its bounds; the reports summed, and how many calls it took."""
    settle(store)
    total = PruneReport()
    for calls in range(1, 1001):
        report = store.prune(policy, limit=limit)
        total += report
        if not report.more:
            return dataclasses.replace(total, more=False), calls
    raise AssertionError("pruning never caught up")


def pruned_journal(before: list[Any]) -> list[Any]:
    """What pruning keeps of a final resource's journal: the creation and the entry into the final state."""
    return [before[0], before[-1]]


# --- what goes and what stays --------------------------------------------------------------------------


def test_pruning_removes_exactly_what_the_policy_says(store: EngineStore, clock: FakeClock) -> None:
    old = [history(store, rounds=n) for n in (0, 1, 3)]
    live_old = history(store, finish=False)
    clock.advance(40 * DAY)
    young = history(store, rounds=2)
    live_young = history(store, finish=False)
    clock.advance(DAY)
    kept = {m.id: snapshot(store, m) for m in (live_old, young, live_young)}
    before = {m.id: all_journal(store, m.id) for m in old}

    report, _ = prune_all(store, POLICY)

    for m in old:
        assert all_journal(store, m.id) == pruned_journal(before[m.id])
        assert [e.event for e in all_journal(store, m.id)] == ["@create", "cancel"]
        assert store.get(m.id) == m.resource, "the row itself stays as it was"
        assert store.wait(m.hashed) is None
        assert store.callbacks(m.hashed) == []
        assert store.flow_runs(resource_id=m.id) == []
        assert store.load_flow_run(m.run_id) is None
    for m in (live_old, young, live_young):
        assert snapshot(store, m) == kept[m.id], "a resource not final, or not final long enough, is untouched"
    assert report == PruneReport(
        journal=sum(len(b) - 2 for b in before.values()),
        waits=3,
        callbacks=6,
        flow_runs=3,
        flow_tasks=6,
    )
    assert prune_all(store, POLICY)[0] == PruneReport(), "nothing is left to prune"


def test_each_part_of_the_history_goes_after_its_own_duration(store: EngineStore, clock: FakeClock) -> None:
    m = history(store, rounds=2)
    journal = all_journal(store, m.id)
    clock.advance(6 * DAY)
    assert prune_all(store, POLICY)[0] == PruneReport()
    clock.advance(2 * DAY)
    prune_all(store, POLICY)
    assert (store.wait(m.hashed), store.load_flow_run(m.run_id)) == (None, None), "waits and flows: 7 days"
    assert all_journal(store, m.id) == journal, "the journal is kept 30 days"
    clock.advance(22 * DAY)
    prune_all(store, POLICY)
    assert all_journal(store, m.id) == journal
    clock.advance(timedelta(seconds=1))
    prune_all(store, POLICY)
    assert all_journal(store, m.id) == pruned_journal(journal)


def test_a_policy_that_keeps_everything_prunes_nothing(store: EngineStore, clock: FakeClock) -> None:
    m = history(store, rounds=2)
    kept = snapshot(store, m)
    clock.advance(10_000 * DAY)
    settle(store)
    assert store.prune(KEEP_EVERYTHING) == PruneReport()
    assert snapshot(store, m) == kept


# --- bounds ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "field"), [(JOURNAL_ONLY, "journal"), (WAITS_ONLY, "waits"), (FLOWS_ONLY, "flows")])
def test_every_batch_deletes_at_most_its_limit(
    store: EngineStore, clock: FakeClock, policy: RetentionPolicy, field: str
) -> None:
    """One task per policy: each call is one transaction, which deletes at most ``limit`` rows."""
    made = [history(store, rounds=n) for n in (12, 0, 5)]
    before = {m.id: all_journal(store, m.id) for m in made}
    clock.advance(2 * DAY)
    limit = 3
    total = PruneReport()
    calls = 0
    settle(store)
    while True:
        report = store.prune(policy, limit=limit)
        calls += 1
        assert report.deleted <= limit
        total += report
        if not report.more:
            break
    expected = {
        "journal": PruneReport(journal=sum(len(b) - 2 for b in before.values())),
        "waits": PruneReport(waits=3, callbacks=6),
        "flows": PruneReport(flow_runs=3, flow_tasks=6),
    }[field]
    assert dataclasses.replace(total, more=False) == expected
    assert calls > expected.deleted // limit, "the work was spread over many batches"
    for m in made:
        assert store.find(m.id) == m.resource


def test_a_walk_past_much_live_history_goes_in_bounded_steps(store: EngineStore, clock: FakeClock) -> None:
    """Entries of resources that are not final are walked past, a bounded stretch per batch."""
    live = [history(store, rounds=1, finish=False) for _ in range(8)]
    done = history(store, rounds=1)
    journal = all_journal(store, done.id)
    clock.advance(2 * DAY)
    report, calls = prune_all(store, JOURNAL_ONLY, limit=2)
    assert report == PruneReport(journal=len(journal) - 2)
    assert calls > 2, "a batch of limit 2 reads only twenty journal entries"
    assert all_journal(store, done.id) == pruned_journal(journal)
    for m in live:
        assert len(all_journal(store, m.id)) == 4


def test_two_pruners_at_once_prune_everything_once(store_url: str, store: EngineStore, clock: FakeClock) -> None:
    made = [history(store, rounds=n % 3) for n in range(12)]
    before = {m.id: all_journal(store, m.id) for m in made}
    clock.advance(40 * DAY)
    other = open_store(store_url, KINDS, clock=clock)
    reports: list[PruneReport] = []
    errors: list[BaseException] = []

    def prune(s: EngineStore) -> None:
        try:
            reports.append(prune_all(s, POLICY, limit=4)[0])
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=prune, args=(s,)) for s in (store, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.close()
    assert errors == []
    total = sum(reports, PruneReport())
    assert total == PruneReport(
        journal=sum(len(b) - 2 for b in before.values()), waits=12, callbacks=24, flow_runs=12, flow_tasks=24
    )
    for m in made:
        assert all_journal(store, m.id) == pruned_journal(before[m.id])


# --- reading what is left --------------------------------------------------------------------------------


def test_a_pruned_resource_reads_as_before_but_for_its_history(store: EngineStore, clock: FakeClock) -> None:
    m = history(store, rounds=2)
    entries = all_journal(store, m.id)
    final = entries[-1]
    stay = store.stay_version(m.resource)
    counts = {(row.kind, row.state): row.count for row in store.backlog(["job"])}
    clock.advance(40 * DAY)
    prune_all(store, POLICY)

    assert store.get(m.id) == m.resource
    assert [r.id for r in store.list(kind="job", state="expired").items] == [m.id]
    assert [r.id for r in store.list(kind="job").items] == [m.id]
    assert {(row.kind, row.state): row.count for row in store.backlog(["job"])} == counts
    assert store.stay_version(store.get(m.id)) == stay == final.version
    assert store.journal(m.id) == [entries[0], final]
    assert store.journal(m.id, after_version=1) == [final]
    assert store.journal(m.id, after_version=0, limit=1) == [entries[0]]
    assert store.journal(m.id, after_version=final.version) == []
    changes = store.changes(None, resource_id=m.id)
    assert [(c.version, c.event) for c in changes.entries] == [(1, "@create"), (final.version, "cancel")]
    assert store.changes(changes.position, resource_id=m.id).entries == []
    assert store.pending_waits(m.id) == []
    late = store.deliver(m.id, m.token, "bucket", "done")
    assert not late.accepted
    assert late.refusal is Refusal.UNKNOWN_TOKEN


# --- deleting finished resources -------------------------------------------------------------------------


def test_final_resources_are_deleted_only_when_asked_and_with_everything_of_theirs(
    store: EngineStore, clock: FakeClock
) -> None:
    store.register(share)
    gone = [history(store, rounds=n, key=f"key-{n}") for n in range(3)]
    used = store.create("share", {})
    store.use(used.id, "tag:example.com,2026:party", ttl=timedelta(minutes=30))
    used = store.force_teardown(used.id, actor="admin")
    used = store.fire(used.id, "finish")
    live = history(store, finish=False)
    clock.advance(60 * DAY)
    young = history(store, rounds=1)
    kept = {m.id: snapshot(store, m) for m in (live, young)}
    assert prune_all(store, POLICY)[0].resources == 0, "the default keeps the rows"
    counts = {(row.kind, row.state): row.count for row in store.backlog(["job", "share"])}
    assert counts[("job", "expired")] == 4
    assert counts[("share", "gone")] == 1

    report, _ = prune_all(store, RetentionPolicy(resources=30 * DAY), limit=5)

    assert report.resources == 4
    for rid in [m.id for m in gone] + [used.id]:
        assert store.find(rid) is None
        assert {table: rows_of(store, table, rid) for table in TABLES} == dict.fromkeys(TABLES, 0)
    for m in gone:
        assert store.load_flow_run(m.run_id) is None
        assert store.wait(m.hashed) is None
    for m in (live, young):
        assert snapshot(store, m) == kept[m.id]
    after = {(row.kind, row.state): row.count for row in store.backlog(["job", "share"])}
    assert after == {**counts, ("job", "expired"): 1, ("share", "gone"): 0}
    again = store.create("job", {}, idempotency_key="key-0")
    assert again.id not in {m.id for m in gone}, "a deleted resource's idempotency key makes a new one"


def test_a_resource_something_else_refers_to_is_kept_and_pruning_goes_on(store: EngineStore, clock: FakeClock) -> None:
    assert isinstance(store, DatabaseStore)
    db = store.database
    first, second = history(store), history(store)
    mark = "?" if db.dialect == "sqlite" else "%s"
    with db.transaction() as tx:
        tx.execute("CREATE TABLE kept_by (resource_id TEXT NOT NULL REFERENCES resources (id))")
        tx.execute(f"INSERT INTO kept_by (resource_id) VALUES ({mark})", (first.id,))
    clock.advance(2 * DAY)
    report, _ = prune_all(store, RetentionPolicy(resources=DAY))
    assert (report.kept, report.resources) == (1, 1)
    assert store.find(first.id) is not None
    assert store.find(second.id) is None
    assert [e.event for e in all_journal(store, first.id)] == ["cancel"], "all but what the row needs went"
    assert prune_all(store, RetentionPolicy(resources=DAY))[0] == PruneReport(), "the walk went past it"


# --- a property: whatever the histories and the policy ----------------------------------------------------

PLANS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3),  # round trips
        st.booleans(),  # finished
        st.integers(min_value=0, max_value=20),  # days the clock moves after it
    ),
    min_size=1,
    max_size=6,
)
DURATIONS = st.one_of(st.none(), st.integers(min_value=1, max_value=30).map(lambda d: d * DAY))


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plans=PLANS,
    journal=DURATIONS,
    waits=DURATIONS,
    flows=DURATIONS,
    resources=DURATIONS,
    limit=st.integers(min_value=2, max_value=20),
)
def test_pruning_keeps_exactly_what_the_policy_keeps(
    store: EngineStore,
    clock: FakeClock,
    *,
    plans: list[tuple[int, bool, int]],
    journal: timedelta | None,
    waits: timedelta | None,
    flows: timedelta | None,
    resources: timedelta | None,
    limit: int,
) -> None:
    """Random histories, finished or not at random times, pruned by a random policy in random batches.

    What is left of each resource is exactly what the policy keeps, judged by when it became final.
    """
    policy = RetentionPolicy(journal=journal, waits=waits, flows=flows, resources=resources, batch=limit)
    made: list[tuple[Made, list[Any], tuple[Any, ...]]] = []
    for rounds, finish, days in plans:
        m = history(store, rounds=rounds, finish=finish)
        made.append((m, all_journal(store, m.id), snapshot(store, m)))
        clock.advance(days * DAY + timedelta(seconds=1))
    prune_all(store, policy)
    now = clock.now

    def gone(keep: timedelta | None, m: Made, entries: list[Any]) -> bool:
        return keep is not None and m.resource.state == "expired" and entries[-1].at < now - keep

    for m, entries, kept in made:
        if gone(resources, m, entries):
            assert store.find(m.id) is None
            assert {table: rows_of(store, table, m.id) for table in TABLES} == dict.fromkeys(TABLES, 0)
            continue
        assert store.find(m.id) == m.resource
        assert all_journal(store, m.id) == (pruned_journal(entries) if gone(journal, m, entries) else entries)
        assert (store.wait(m.hashed), store.callbacks(m.hashed)) == (
            (None, []) if gone(waits, m, entries) else kept[2:4]
        )
        assert (store.flow_runs(resource_id=m.id), store.load_flow_run(m.run_id)) == (
            ([], None) if gone(flows, m, entries) else kept[4:6]
        )


# --- the engine's housekeeping ------------------------------------------------------------------------------


def test_housekeeping_prunes_now_and_then_on_its_clock(store: EngineStore, clock: FakeClock) -> None:
    m = history(store, rounds=1)
    clock.advance(2 * DAY)
    settle(store)
    keeper = Housekeeping(store, RetentionPolicy(journal=DAY, waits=DAY, flows=DAY, batch=2), batches=1)
    assert keeper.due(), "pruning starts at once"
    first = keeper.run()
    assert first.more, "one batch of two rows a task does not finish it"
    assert not keeper.due()
    clock.advance(CATCH_UP)
    assert keeper.due(), "a run that stopped on its bounds is followed soon"
    while keeper.due():
        keeper.run()
        clock.advance(CATCH_UP)
    assert [e.event for e in all_journal(store, m.id)] == ["@create", "cancel"]
    assert store.load_flow_run(m.run_id) is None
    assert dataclasses.replace(keeper.pruned, more=False) == PruneReport(
        journal=3, waits=1, callbacks=2, flow_runs=1, flow_tasks=2
    )
    assert keeper.prune_batches == 2
    clock.advance(PRUNE_EVERY - CATCH_UP - timedelta(seconds=1))
    assert not keeper.due(), "caught up: the next look is a minute later"
    clock.advance(timedelta(seconds=1))
    assert keeper.due()


def test_housekeeping_without_a_policy_only_refreshes_statistics(store: EngineStore, clock: FakeClock) -> None:
    m = history(store, rounds=1)
    kept = snapshot(store, m)
    keeper = Housekeeping(store)
    clock.advance(1000 * DAY)
    assert keeper.due()
    assert keeper.run() == PruneReport()
    assert snapshot(store, m) == kept
    assert keeper.statistics_runs == (1 if store.dialect == "sqlite" else 0)


def test_a_failing_chore_is_counted_and_tried_again_later(store_url: str, clock: FakeClock) -> None:
    other = open_store(store_url, KINDS, clock=clock, check_schema=False)
    other.migrate()
    keeper = Housekeeping(other, JOURNAL_ONLY)
    other.close()
    assert keeper.due()
    assert keeper.run() == PruneReport(), "the store is gone: nothing pruned, nothing raised"
    # The pruning failed; so did the statistics, on SQLite (PostgreSQL keeps its own: nothing to do).
    assert keeper.errors == (2 if store_url.startswith("sqlite") else 1)
    assert not keeper.due(), "tried again at its next turn, not at once"
    clock.advance(PRUNE_EVERY)
    assert keeper.due()


def test_a_prune_refuses_a_batch_too_small_to_delete_a_resource(store: EngineStore) -> None:
    with pytest.raises(InvalidArgument, match="from 2 to 10000"):
        store.prune(POLICY, limit=1)
    with pytest.raises(InvalidArgument, match="batch"):
        RetentionPolicy(batch=0)
    with pytest.raises(InvalidArgument, match="journal"):
        RetentionPolicy(journal=timedelta(0))


def test_a_worker_prunes_by_its_policy(store: EngineStore, clock: FakeClock) -> None:
    from tenure.engine import Steps, Worker

    m = history(store, rounds=1)
    clock.advance(2 * DAY)
    settle(store)
    worker = Worker(store, Steps(), retention=JOURNAL_ONLY, poll_interval=0.05).start()
    try:
        for _ in range(2000):
            if len(all_journal(store, m.id)) == 2:
                break
            threading.Event().wait(0.01)
    finally:
        worker.stop()
    assert [e.event for e in all_journal(store, m.id)] == ["@create", "cancel"]
    assert worker.housekeeping.pruned.journal == 3


# --- statistics (SQLite) ------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_store(sqlite_url: str, clock: FakeClock) -> Iterator[EngineStore]:
    s = open_store(sqlite_url, KINDS, clock=clock, check_schema=False)
    try:
        s.migrate()
        yield s
    finally:
        s.close()


def stat_tables(store: EngineStore) -> dict[str, set[str]]:
    """The indexes ``sqlite_stat1`` holds statistics for, by table (empty: none at all)."""
    path = store.path  # type: ignore[attr-defined]
    conn = sqlite3.connect(path)
    try:
        if not conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone()[0]:
            return {}
        out: dict[str, set[str]] = {}
        for table, index in conn.execute("SELECT tbl, idx FROM sqlite_stat1"):
            out.setdefault(table, set()).add(index)
        return out
    finally:
        conn.close()


def test_migrating_a_store_with_resources_gathers_statistics(sqlite_url: str, clock: FakeClock) -> None:
    s = open_store(sqlite_url, KINDS, clock=clock, check_schema=False)
    try:
        s.migrate()
        assert stat_tables(s) == {}, "an empty store has nothing to measure"
        for n in range(20):
            history(s, rounds=n % 2)
        assert s.migrate() == []
        stats = stat_tables(s)
    finally:
        s.close()
    assert {"resources_kind_state", "sqlite_autoindex_resources_1"} <= stats["resources"]
    assert "journal" in stats


def test_housekeeping_refreshes_statistics_at_start_and_every_few_minutes(
    sqlite_store: EngineStore, clock: FakeClock
) -> None:
    for n in range(20):
        history(sqlite_store, rounds=n % 2)
    assert stat_tables(sqlite_store) == {}
    keeper = Housekeeping(sqlite_store)
    assert keeper.due(), "a store filled since its migration is measured before the first claims"
    keeper.run()
    assert keeper.statistics_runs == 1
    assert "resources_kind_state" in stat_tables(sqlite_store)["resources"]
    assert not keeper.due()
    clock.advance(STATISTICS_EVERY - timedelta(seconds=1))
    assert not keeper.due()
    clock.advance(timedelta(seconds=1))
    assert keeper.due()
    keeper.run()
    assert keeper.statistics_runs == 2
    keeper.close()
    assert keeper.statistics_runs == 3, "and once more when the worker stops"
