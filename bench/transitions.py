"""How fast tenure decides and makes transitions, next to its peers and next to plain SQL.

Run ``.venv/bin/python bench/transitions.py`` (``--quick`` for a smoke run, ``--skip-postgres`` to
leave PostgreSQL out). It prints:

(a) in-memory, on the same 4-state cycle ``a -> b -> c -> d -> a``:
    1. event checks per second: tenure ``kind.allows(state, event)`` against the closest public check
       of transitions, python-statemachine and automaton;
    2. transitions per second: tenure ``kind.target(state, event)`` (the kind is stateless, so the loop
       carries the state) against ``model.trigger``, ``sm.send`` and ``machine.process_event``;
(b) durable transitions per second: tenure ``store.fire(snapshot, event)`` against a plain loop that
    issues the same compare-and-swap ``UPDATE`` plus journal ``INSERT`` in one transaction, with the
    stdlib ``sqlite3`` module and with plain psycopg, on the schema ``store.migrate()`` creates.

Every number is the best of several runs; in-memory runs are sized to take about 0.2 s each.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib
import importlib.metadata
import os
import platform
import pstats
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from benchkit import PG_JOURNAL, PG_UPDATE, SQLITE_JOURNAL, SQLITE_UPDATE, scratch_database, unshadow, version
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.table import Table

from tenure import Event, Kind, Resource, State, open_store
from tenure.store.postgres import write_statement
from tenure.store.protocol import EngineStore

# --- the machine every library runs ------------------------------------------------------------

STATES = ("a", "b", "c", "d")
#: (event, source, target), in cycle order.
EDGES = (("ab", "a", "b"), ("bc", "b", "c"), ("cd", "c", "d"), ("da", "d", "a"))
EVENTS = tuple(e for e, _, _ in EDGES)
NEXT_EVENT = {src: ev for ev, src, _ in EDGES}
NEXT_STATE = {src: dst for _, src, dst in EDGES}

KIND = Kind(
    "cycle",
    states=[State(name, code) for code, name in enumerate(STATES, start=1)],
    events=[Event(ev, src, dst) for ev, src, dst in EDGES],
    initial="a",
)

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PEERS = ("transitions", "python-statemachine", "automaton")


# --- in-memory ---------------------------------------------------------------------------------

#: Runs ``n`` operations (a multiple of 4) and returns the nanoseconds they took; set-up is not timed.
Loop = Callable[[int], int]

_event_lists: dict[int, list[str]] = {}


def _events(n: int) -> list[str]:
    """``n`` events in cycle order (cached: building the list is not part of any timing)."""
    if n not in _event_lists:
        _event_lists.clear()
        _event_lists[n] = list(EVENTS) * (n // 4)
    return _event_lists[n]


def _empty_loop(n: int) -> int:
    evs = _events(n)
    t0 = time.perf_counter_ns()
    for ev in evs:
        ok = ev
    elapsed = time.perf_counter_ns() - t0
    del ok
    return elapsed


# tenure --------------------------------------------------------------------------------------


def tenure_checks() -> Loop:
    allows = KIND.allows
    assert [allows("a", ev) for ev in EVENTS] == [True, False, False, False]

    def run(n: int) -> int:
        evs, state = _events(n), "a"
        t0 = time.perf_counter_ns()
        for ev in evs:
            ok = allows(state, ev)
        elapsed = time.perf_counter_ns() - t0
        del ok
        return elapsed

    return run


def tenure_targets() -> Loop:
    target = KIND.target

    def run(n: int) -> int:
        evs, state = _events(n), "a"
        t0 = time.perf_counter_ns()
        for ev in evs:
            state = target(state, ev)
        elapsed = time.perf_counter_ns() - t0
        assert state == "a"
        return elapsed

    return run


def tenure_guarded() -> Loop:
    transition = KIND.transition

    def run(n: int) -> int:
        evs, state = _events(n), "a"
        t0 = time.perf_counter_ns()
        for ev in evs:
            state = transition(state, ev).target
        elapsed = time.perf_counter_ns() - t0
        assert state == "a"
        return elapsed

    return run


# transitions ---------------------------------------------------------------------------------


class _Model:
    """The object ``transitions`` attaches the state and trigger methods to."""

    state: str


def _transitions_model() -> tuple[Any, Any]:
    """(model, machine)."""
    lib = importlib.import_module("transitions")
    model = _Model()
    machine = lib.Machine(
        model=model,
        states=list(STATES),
        transitions=[{"trigger": ev, "source": src, "dest": dst} for ev, src, dst in EDGES],
        initial="a",
        auto_transitions=False,  # no to_<state>() triggers: the same four events as everyone else
    )
    return model, machine


def transitions_get_triggers() -> Loop:
    model, machine = _transitions_model()
    get_triggers = machine.get_triggers
    assert [ev in get_triggers(model.state) for ev in EVENTS] == [True, False, False, False]

    def run(n: int) -> int:
        evs = _events(n)
        t0 = time.perf_counter_ns()
        for ev in evs:
            ok = ev in get_triggers(model.state)
        elapsed = time.perf_counter_ns() - t0
        del ok
        return elapsed

    return run


def transitions_may_trigger() -> Loop:
    model, _ = _transitions_model()
    assert [model.may_trigger(ev) for ev in EVENTS] == [True, False, False, False]
    may_trigger = model.may_trigger

    def run(n: int) -> int:
        evs = _events(n)
        t0 = time.perf_counter_ns()
        for ev in evs:
            ok = may_trigger(ev)
        elapsed = time.perf_counter_ns() - t0
        del ok
        return elapsed

    return run


def transitions_trigger() -> Loop:
    model, _ = _transitions_model()
    trigger = model.trigger

    def run(n: int) -> int:
        evs = _events(n)
        t0 = time.perf_counter_ns()
        for ev in evs:
            trigger(ev)
        elapsed = time.perf_counter_ns() - t0
        assert model.state == "a"
        return elapsed

    return run


# python-statemachine -------------------------------------------------------------------------


def _statemachine() -> Any:
    lib = importlib.import_module("statemachine")
    a, b, c, d = lib.State(initial=True), lib.State(), lib.State(), lib.State()
    namespace = {"a": a, "b": b, "c": c, "d": d, "ab": a.to(b), "bc": b.to(c), "cd": c.to(d), "da": d.to(a)}
    cls = type("Cycle", (lib.StateMachine,), namespace)
    return cls()


def statemachine_allowed() -> Loop:
    sm = _statemachine()
    assert [ev in sm.allowed_events for ev in EVENTS] == [True, False, False, False]

    def run(n: int) -> int:
        evs = _events(n)
        t0 = time.perf_counter_ns()
        for ev in evs:
            ok = ev in sm.allowed_events
        elapsed = time.perf_counter_ns() - t0
        del ok
        return elapsed

    return run


def statemachine_send() -> Loop:
    sm = _statemachine()
    send = sm.send

    def run(n: int) -> int:
        evs = _events(n)
        t0 = time.perf_counter_ns()
        for ev in evs:
            send(ev)
        elapsed = time.perf_counter_ns() - t0
        assert sm.current_state_value == "a"
        return elapsed

    return run


# automaton -----------------------------------------------------------------------------------


def _automaton() -> Any:
    machines = importlib.import_module("automaton.machines")
    fm = machines.FiniteMachine()
    for s in STATES:
        fm.add_state(s)
    for ev, src, dst in EDGES:
        fm.add_transition(src, dst, ev)
    fm.initialize("a")
    return fm


def automaton_actionable() -> Loop:
    fm = _automaton()
    is_actionable = fm.is_actionable_event
    assert [is_actionable(ev) for ev in EVENTS] == [True, False, False, False]

    def run(n: int) -> int:
        evs = _events(n)
        t0 = time.perf_counter_ns()
        for ev in evs:
            ok = is_actionable(ev)
        elapsed = time.perf_counter_ns() - t0
        del ok
        return elapsed

    return run


def automaton_process() -> Loop:
    fm = _automaton()
    process_event = fm.process_event

    def run(n: int) -> int:
        evs = _events(n)
        t0 = time.perf_counter_ns()
        for ev in evs:
            process_event(ev)
        elapsed = time.perf_counter_ns() - t0
        assert fm.current_state == "a"
        return elapsed

    return run


@dataclass(frozen=True)
class Case:
    library: str
    dist: str  # the distribution whose absence turns the row into "not installed"
    api: str
    build: Callable[[], Loop]
    primary: bool = True  # secondary rows are shown for context and compared with the tenure row


CHECKS = (
    Case("tenure", "tenure", "kind.allows(state, event)", tenure_checks),
    Case("transitions", "transitions", "event in machine.get_triggers(model.state) ¹", transitions_get_triggers),
    Case("transitions", "transitions", "model.may_trigger(event) ²", transitions_may_trigger, primary=False),
    Case("python-statemachine", "python-statemachine", "event in sm.allowed_events ³", statemachine_allowed),
    Case("automaton", "automaton", "machine.is_actionable_event(event)", automaton_actionable),
)

TRANSITIONS = (
    Case("tenure", "tenure", "state = kind.target(state, event)", tenure_targets),
    Case("tenure", "tenure", "state = kind.transition(state, event).target ⁴", tenure_guarded, primary=False),
    Case("transitions", "transitions", "model.trigger(event)", transitions_trigger),
    Case("python-statemachine", "python-statemachine", "sm.send(event)", statemachine_send),
    Case("automaton", "automaton", "machine.process_event(event)", automaton_process),
)


@dataclass(frozen=True)
class Timing:
    ns_per_op: float
    ops: int  # per run


def best_of(loop: Loop, *, target_s: float, repeats: int) -> Timing:
    """Size a run to take about ``target_s`` seconds, then return the best of ``repeats`` runs."""
    n = 4096
    while True:
        gc.collect()
        elapsed = loop(n)
        if elapsed >= 20_000_000 or elapsed >= target_s * 1e9 / 4:
            break
        n *= 4
    n = max(4, int(n * target_s * 1e9 / max(elapsed, 1)) // 4 * 4)
    runs = []
    for _ in range(repeats):
        gc.collect()
        runs.append(loop(n))
    return Timing(min(runs) / n, n)


def _times(factor: float) -> str:
    if factor < 10:
        return f"{factor:.2f}x"
    if factor < 100:
        return f"{factor:.1f}x"
    return f"{factor:,.0f}x"


def _fmt_rate(per_s: float) -> str:
    if per_s >= 1e6:
        return f"{per_s / 1e6:,.2f} M"
    if per_s >= 1e3:
        return f"{per_s / 1e3:,.1f} k"
    return f"{per_s:,.0f}"


def memory_table(title: str, cases: Sequence[Case], *, target_s: float, repeats: int, console: Console) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("library")
    table.add_column("API timed")
    table.add_column("ops/s", justify="right")
    table.add_column("ns/op", justify="right")
    table.add_column("tenure is", justify="right")
    tenure_ns: float | None = None
    for case in cases:
        if version(case.dist) == "not installed":
            table.add_row(case.library, case.api, "—", "—", "not installed")
            continue
        with console.status(f"{title}: {case.library} {case.api}"):
            timing = best_of(case.build(), target_s=target_s, repeats=repeats)
        if case.library == "tenure" and case.primary:
            tenure_ns = timing.ns_per_op
            ratio = "—"
        elif tenure_ns is None:
            ratio = "?"
        else:
            factor = timing.ns_per_op / tenure_ns
            ratio = f"{_times(factor)} faster" if factor >= 1 else f"{_times(1 / factor)} slower"
        style = None if case.primary else "dim"
        table.add_row(
            case.library,
            case.api,
            _fmt_rate(1e9 / timing.ns_per_op),
            f"{timing.ns_per_op:,.0f}",
            ratio,
            style=style,
        )
    return table


# --- durable -----------------------------------------------------------------------------------

#: The statement tenure's PostgreSQL store sends for a write without side rows: its one ``write`` block
#: (the compare-and-swap) and the journal row, joined in a CTE.
PG_CTE = write_statement()


class Worker(Protocol):
    def run(self, deadline: float) -> int:
        """Fire transitions until ``time.perf_counter()`` passes ``deadline``; return how many."""
        ...

    def close(self) -> None: ...


class LostRace(RuntimeError):
    """A plain loop's compare-and-swap matched no row (it cannot happen: each worker owns its rows)."""


class TenureWorker:
    """``store.fire(snapshot, event)``, round-robin over its own resources, chaining the snapshots."""

    def __init__(self, store: EngineStore, resources: list[Resource]) -> None:
        self.store, self.snapshots = store, resources

    def run(self, deadline: float) -> int:
        fire, snapshots, clock = self.store.fire, self.snapshots, time.perf_counter
        k, i, n = len(snapshots), 0, 0
        while clock() < deadline:
            r = snapshots[i]
            snapshots[i] = fire(r, NEXT_EVENT[r.state])
            i = (i + 1) % k
            n += 1
        return n

    def close(self) -> None:
        pass


@dataclass(slots=True)
class _Row:
    """What a plain loop knows about one of its rows."""

    id: str
    state: str
    version: int


class _Rows:
    def __init__(self, ids: Sequence[str]) -> None:
        self.rows = [_Row(rid, KIND.initial.name, 1) for rid in ids]


class PlainSQLiteWorker(_Rows):
    """stdlib sqlite3: BEGIN IMMEDIATE; the same UPDATE; the journal INSERT; COMMIT."""

    def __init__(self, path: str, synchronous: str, ids: Sequence[str]) -> None:
        super().__init__(ids)
        self.conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self.conn.execute("PRAGMA foreign_keys=ON")  # as tenure's connections: the journal row is checked

    def run(self, deadline: float) -> int:
        execute, rows, clock, now_utc = self.conn.execute, self.rows, time.perf_counter, datetime.now
        k, i, n = len(rows), 0, 0
        while clock() < deadline:
            row = rows[i]
            rid, state, version = row.id, row.state, row.version
            target, now = NEXT_STATE[state], now_utc(UTC).isoformat(timespec="microseconds")
            execute("BEGIN IMMEDIATE")
            try:
                cur = execute(
                    SQLITE_UPDATE, (target, version + 1, None, None, now, None, None, now, rid, version, state)
                )
                if cur.rowcount != 1:
                    raise LostRace(rid)
                execute(SQLITE_JOURNAL, (rid, version + 1, NEXT_EVENT[state], state, target, None, now, "{}"))
                execute("COMMIT")
            except BaseException:
                execute("ROLLBACK")
                raise
            row.state, row.version = target, version + 1
            i = (i + 1) % k
            n += 1
        return n

    def close(self) -> None:
        self.conn.close()


class PlainPGWorker(_Rows):
    """Plain psycopg, one connection: ``with conn.transaction():`` UPDATE then INSERT."""

    def __init__(self, conninfo: str, ids: Sequence[str]) -> None:
        super().__init__(ids)
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute("SET TIME ZONE 'UTC'")

    def run(self, deadline: float) -> int:
        conn, rows, clock, now_utc, empty = self.conn, self.rows, time.perf_counter, datetime.now, Jsonb({})
        k, i, n = len(rows), 0, 0
        while clock() < deadline:
            row = rows[i]
            rid, state, version = row.id, row.state, row.version
            target, now = NEXT_STATE[state], now_utc(UTC)
            with conn.transaction():
                cur = conn.execute(
                    PG_UPDATE, (target, version + 1, None, None, now, None, None, now, rid, version, state)
                )
                if cur.rowcount != 1:
                    raise LostRace(rid)
                conn.execute(PG_JOURNAL, (rid, version + 1, NEXT_EVENT[state], state, target, None, now, empty))
            row.state, row.version = target, version + 1
            i = (i + 1) % k
            n += 1
        return n

    def close(self) -> None:
        self.conn.close()


class PlainPGCTEWorker(PlainPGWorker):
    """Plain psycopg sending tenure's own single-statement CTE in autocommit: one round trip."""

    def __init__(self, conninfo: str, ids: Sequence[str]) -> None:
        super().__init__(conninfo, ids)
        # The swap matches the row's created_at too (the resource, not an earlier one under its id).
        self.created = dict(self.conn.execute("SELECT id, created_at FROM resources WHERE id = ANY(%s)", (list(ids),)))

    def run(self, deadline: float) -> int:
        execute, rows, clock, now_utc, empty = self.conn.execute, self.rows, time.perf_counter, datetime.now, Jsonb({})
        k, i, n = len(rows), 0, 0
        while clock() < deadline:
            row = rows[i]
            rid, state, version = row.id, row.state, row.version
            target, now = NEXT_STATE[state], now_utc(UTC)
            params = {
                "state": target, "version": version + 1, "data": None, "error": None, "attempts": 0,
                "entered_at": now, "next_attempt_at": None, "deadline": None, "desired_state": None,
                "generation": 1, "observed_generation": 0, "now": now, "keeps_claim": False, "claim_token": None,
                "claimed_by": None, "claim_expires_at": None, "id": rid,
                "expected_version": version, "created_at": self.created[rid], "source": state, "token": None,
                "event": NEXT_EVENT[state],
                "actor": None, "detail": empty, "wait_hash": None, "wait_keys": None, "wait_rules": None,
                "carries_waits": False, "settle": [], "result": "", "in_use_by": None, "forced": None,
            }  # fmt: skip
            if execute(PG_CTE, params).fetchone() is None:
                raise LostRace(rid)
            row.state, row.version = target, version + 1
            i = (i + 1) % k
            n += 1
        return n


def run_workers(workers: Sequence[Worker], duration: float) -> float:
    """Run every worker in its own thread for ``duration`` seconds; transitions per second overall."""
    barrier = threading.Barrier(len(workers) + 1)
    counts = [0] * len(workers)
    errors: list[BaseException] = []
    deadline = [0.0]

    def body(index: int) -> None:
        try:
            barrier.wait()
            counts[index] = workers[index].run(deadline[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(len(workers))]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + duration
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


@dataclass
class DurableRow:
    backend: str
    setting: str
    connections: int
    tenure: float
    plain: float
    plain_label: str
    cte: float | None = None  # plain psycopg with tenure's own one-statement CTE (PostgreSQL only)


@dataclass(frozen=True)
class Budget:
    duration: float  # seconds per timed run
    warmup: float  # seconds of untimed running before the first timed run
    repeats: int  # best of
    per_worker: int  # resources each worker fires at, round-robin


def measure(contenders: dict[str, list[Worker]], budget: Budget) -> dict[str, float]:
    """Warm every contender up, then interleave their timed runs; the best rate of each."""
    for workers in contenders.values():
        run_workers(workers, budget.warmup)
    best = dict.fromkeys(contenders, 0.0)
    for _ in range(budget.repeats):
        for name, workers in contenders.items():
            best[name] = max(best[name], run_workers(workers, budget.duration))
    return best


def _create(store: EngineStore, count: int) -> list[Resource]:
    return [store.create(KIND.name) for _ in range(count)]


def sqlite_rows(directory: str, budget: Budget, console: Console) -> list[DurableRow]:
    out = []
    for sync in ("full", "normal"):
        path = os.path.join(directory, f"bench-{sync}.db")
        store = open_store(f"sqlite:///{path}?synchronous={sync}", [KIND], check_schema=False)
        plain: PlainSQLiteWorker | None = None
        try:
            store.migrate()
            tenure_worker = TenureWorker(store, _create(store, budget.per_worker))
            plain = PlainSQLiteWorker(path, sync, [r.id for r in _create(store, budget.per_worker)])
            with console.status(f"SQLite synchronous={sync.upper()}: tenure vs sqlite3"):
                rates = measure({"tenure": [tenure_worker], "plain": [plain]}, budget)
        finally:
            if plain is not None:
                plain.close()
            store.close()
        out.append(
            DurableRow("SQLite (WAL)", f"synchronous={sync.upper()}", 1, rates["tenure"], rates["plain"], "sqlite3")
        )
    return out


def _with_query(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


#: libpq option (through the URL) that stops commits from waiting for the WAL flush.
NO_FLUSH_WAIT = "options=-c%20synchronous_commit%3Doff"


def postgres_rows(
    url: str, connections: Sequence[int], budget: Budget, console: Console, *, note: str = ""
) -> list[DurableRow]:
    out = []
    setup = open_store(url, [KIND], check_schema=False)
    try:
        setup.migrate()
    finally:
        setup.close()
    for conns in connections:
        store = open_store(_with_query(url, f"pool_size={conns}"), [KIND])
        workers: list[Worker] = []
        try:
            tenure_workers: list[Worker] = [
                TenureWorker(store, _create(store, budget.per_worker)) for _ in range(conns)
            ]
            plain_workers: list[Worker] = [
                PlainPGWorker(url, [r.id for r in _create(store, budget.per_worker)]) for _ in range(conns)
            ]
            cte_workers: list[Worker] = [
                PlainPGCTEWorker(url, [r.id for r in _create(store, budget.per_worker)]) for _ in range(conns)
            ]
            workers = plain_workers + cte_workers
            with console.status(f"PostgreSQL{note}, {conns} connection(s): tenure vs psycopg"):
                rates = measure({"tenure": tenure_workers, "plain": plain_workers, "cte": cte_workers}, budget)
        finally:
            for w in workers:
                w.close()
            store.close()
        out.append(
            DurableRow(
                "PostgreSQL",
                f"pool_size={conns}{note}",
                conns,
                rates["tenure"],
                rates["plain"],
                "psycopg tx",
                rates["cte"],
            )
        )
    return out


def _ratio_cell(tenure: float, plain: float) -> str:
    """tenure's time per transition over the plain loop's (= plain rate / tenure rate)."""
    ratio = plain / tenure
    colour = "green" if ratio <= 1.5 else "red"
    return f"[{colour}]{ratio:.2f}x[/{colour}]"


def durable_table(rows: Sequence[DurableRow], budget: Budget) -> Table:
    table = Table(
        title=f"(b) durable transitions per second (best of {budget.repeats} x {budget.duration:g} s runs)",
        title_justify="left",
    )
    table.add_column("backend")
    table.add_column("setting", no_wrap=True)
    table.add_column("conns", justify="right")
    table.add_column("tenure/s", justify="right")
    table.add_column("plain tx/s ⁵", justify="right")
    table.add_column("÷ plain ⁶", justify="right")
    table.add_column("1-stmt/s ⁷", justify="right")
    table.add_column("÷ 1-stmt", justify="right")
    for r in rows:
        table.add_row(
            r.backend,
            r.setting,
            str(r.connections),
            f"{r.tenure:,.0f}",
            f"{r.plain:,.0f}",
            _ratio_cell(r.tenure, r.plain),
            "—" if r.cte is None else f"{r.cte:,.0f}",
            "—" if r.cte is None else _ratio_cell(r.tenure, r.cte),
        )
    return table


# --- profiling ---------------------------------------------------------------------------------


def profile_fire(url: str, label: str, seconds: float, console: Console) -> None:
    """cProfile one worker's ``store.fire`` loop and print where the time goes."""
    store = open_store(url, [KIND], check_schema=False)
    try:
        store.migrate()
        worker = TenureWorker(store, _create(store, 16))
        worker.run(time.perf_counter() + 0.2)
        profiler = cProfile.Profile()
        profiler.enable()
        n = worker.run(time.perf_counter() + seconds)
        profiler.disable()
    finally:
        store.close()
    console.print(f"\n[bold]cProfile of tenure's fire path, {label}[/bold] ({n:,} transitions, sorted by own time)")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(18)


# --- main --------------------------------------------------------------------------------------


FOOTNOTES = """\
Every ns/op includes the bare `for ev in events:` loop, about {loop:.0f} ns/op here.
(a) tenure's kind is stateless: the caller carries the state (the durable store keeps it in the row), so
    its rows are plain table look-ups, while the peers keep the current state in an object and run their
    callback machinery. The checks are asked in state a, cycling over the four events (1 in 4 allowed).
  ¹ transitions' closest public equivalent of a graph-only check: the triggers leaving the current state
    (guards not evaluated, like kind.allows); `auto_transitions=False`, so only the four events exist.
  ² may_trigger also runs the prepare callbacks and conditions (shown for context, not the baseline).
  ³ python-statemachine 3.x has no cheaper public per-event check; Event is a str, so `in` matches ids.
  ⁴ kind.transition evaluates guards and returns the Transition (what store.fire uses); for context, its
    ratio says how much faster kind.target is.
(b) Each connection is one thread firing at its own {per_worker} resources, round-robin; resources are created
    beforehand by tenure on the schema store.migrate() made, and tenure chains the snapshots fire returns.
  ⁵ SQLite: stdlib sqlite3, BEGIN IMMEDIATE; the same CAS UPDATE (id + version + state, same columns set)
    and journal INSERT; COMMIT, with the same pragmas as tenure (WAL, synchronous, foreign_keys=ON).
    PostgreSQL: plain psycopg, one connection per thread, `with conn.transaction():` UPDATE then INSERT
    (BEGIN/UPDATE/INSERT/COMMIT: four round trips).
  ⁶ tenure's time per transition over the plain loop's (÷ columns); the target is 1.5x or less (green).
  ⁷ plain psycopg sending tenure's own statement (UPDATE and journal INSERT joined in one CTE, autocommit,
    one round trip): what is left is purely tenure's Python-side cost (planning, pool, snapshot).
  ⁸ asynchronous commit: the same runs with synchronous_commit=off on every connection (libpq `options` in
    the URL); commits do not wait for the WAL flush, so fsync latency and its noise drop out.
"""


def main(argv: Sequence[str] | None = None) -> int:
    unshadow()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="much smaller runs, for a smoke test")
    parser.add_argument("--skip-postgres", action="store_true", help="leave PostgreSQL out")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TENURE_BENCH_POSTGRES_URL", DEFAULT_PG_URL),
        help="admin URL; a scratch database is created next to it and dropped at the end (default: %(default)s)",
    )
    parser.add_argument("--duration", type=float, help="seconds per durable run (default 1, --quick 0.2)")
    parser.add_argument("--profile", action="store_true", help="also cProfile tenure's fire path on each backend")
    args = parser.parse_args(argv)

    console = Console(width=max(shutil.get_terminal_size((132, 40)).columns, 132))
    quick = bool(args.quick)
    target_s, repeats = (0.02, 2) if quick else (0.2, 5)
    budget = Budget(
        duration=args.duration or (0.2 if quick else 1.0),
        warmup=0.05 if quick else 0.3,
        # Short runs, interleaved and repeated, so that a burst of outside disk traffic hits one run of
        # one contender rather than decide the comparison.
        repeats=1 if quick else 4,
        per_worker=16,
    )

    versions = ", ".join(f"{d} {version(d)}" for d in ("tenure", *PEERS))
    console.print(
        f"[bold]tenure transition benchmark[/bold]{' (quick)' if quick else ''}: Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs (load {os.getloadavg()[0]:.2f}); "
        f"SQLite {sqlite3.sqlite_version}, {versions}"
    )

    loop_ns = best_of(_empty_loop, target_s=target_s, repeats=repeats).ns_per_op
    console.print(
        memory_table("(a1) in-memory event checks", CHECKS, target_s=target_s, repeats=repeats, console=console)
    )
    console.print(
        memory_table("(a2) in-memory transitions", TRANSITIONS, target_s=target_s, repeats=repeats, console=console)
    )

    rows: list[DurableRow] = []
    directory = tempfile.mkdtemp(prefix="tenure-bench-")
    try:
        rows += sqlite_rows(directory, budget, console)
        if args.profile:
            profile_fire(f"sqlite:///{directory}/profile.db?synchronous=normal", "SQLite NORMAL", 2.0, console)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    pg_note = ""
    if args.skip_postgres:
        pg_note = "PostgreSQL skipped (--skip-postgres)."
    else:
        try:
            with scratch_database(args.postgres_url) as url:
                rows += postgres_rows(url, (1, 2, 8), budget, console)
                # Every commit above waits for its WAL flush, so disk latency (and anyone else's disk
                # traffic) dominates; without the wait, what is left is round trips and Python.
                rows += postgres_rows(_with_query(url, NO_FLUSH_WAIT), (1, 8), budget, console, note=", async ⁸")
                if args.profile:
                    profile_fire(url, "PostgreSQL, pool_size=4", 2.0, console)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            pg_note = f"PostgreSQL unreachable at {args.postgres_url} ({first}); SQLite only."
    console.print(durable_table(rows, budget))
    if pg_note:
        console.print(f"[yellow]{pg_note}[/yellow]")
    console.print(FOOTNOTES.format(loop=loop_ns, per_worker=budget.per_worker), highlight=False, markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
