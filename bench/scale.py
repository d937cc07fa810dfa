"""Scale benchmark: the same figures on a store of 10,000 transfers and on one of 1,000,000, side by side.

For each store (a SQLite file in a temporary folder, then a scratch PostgreSQL database) and each size,
``bench/load.py`` loads the transfers (89% finished with their whole history, 1% due, 1% waiting, 9%
resting, 2% used by a party) and checks the load through tenure's own reads; PostgreSQL is then analyzed
(``ANALYZE``; SQLite gets nothing from the benchmark: whether tenure keeps its statistics is its business,
and shows). Then, in this order:

1. **the engine**: a real ``tenure worker`` (a subprocess; the command's defaults, except a ``[retention]``
   that keeps everything, see ``--worker-retention``) runs full transfer lifecycles (create -> ... ->
   started, the client fires ``complete``, -> ... -> deprovisioned) that this process drives, 32 at a time.
   It runs on a clock two days behind, so that the loaded backlog (due resources, deadlines, uses) is not
   due for it: the figure is new work next to a big history, not the draining of 1% of it. Measured:
   lifecycles/s, the worker's RSS growth per 1,000 lifecycles, the waits rows each lifecycle leaves, and on
   PostgreSQL the share of heap-only updates of ``resources``.
2. **reads**, after the engine has run (it may keep the database's statistics): through the HTTP API of a
   ``tenure serve --workers 0`` subprocess (lists by state, by party, ``GET /metrics``, ``GET`` one
   resource), and in this process the queries a worker's pass makes (``store.agenda`` as the worker calls
   it, the deadline sweep's ``store.expired_waits``, ``store.claim`` of a worker's free slots). Medians.
3. **the ceiling**: a plain loop of the same compare-and-swap ``UPDATE`` and journal ``INSERT`` in one
   transaction (as ``bench/transitions.py``), one connection, on the loaded store: what the database
   itself allows, next to the engine's lifecycles.
4. **retention**, where tenure has it: ``store.prune`` calls with the default policy on the loaded
   history, as the engine's housekeeping makes them (last: it deletes).

The table puts each figure at each size side by side with the ratio (biggest / smallest size) and whether
it stays within 2x. ``--quick`` runs 2,000 and 20,000.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load as loader
from benchkit import (
    PG_JOURNAL,
    PG_UPDATE,
    SQLITE_JOURNAL,
    SQLITE_UPDATE,
    free_port,
    scratch_database,
    tenure_command,
    unshadow,
    version,
)

unshadow()

import httpx  # noqa: E402
import psycopg  # noqa: E402

from tenure.cli.common import all_kinds  # noqa: E402
from tenure.cli.worker import steps_for  # noqa: E402
from tenure.engine import Worker  # noqa: E402
from tenure.kinds import builtin_tables  # noqa: E402
from tenure.store import open_store  # noqa: E402

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: How far behind the engine's clock runs in the lifecycle phase (the loaded backlog is not due for it).
ENGINE_BEHIND = timedelta(days=2)
TRANSITIONS_PER_LIFECYCLE = 10
CLIENT_NAME = "bench"
#: ``tenure worker`` with the store's clock moved back: tenure.clock.system_clock is replaced before any
#: other part of tenure is imported (every default clock is that function), then the command runs as usual.
_SHIFTED_CLI = """\
import sys
from datetime import timedelta
import tenure.clock as clock
real, behind = clock.system_clock, timedelta(seconds=float(sys.argv[1]))
clock.system_clock = lambda: real() - behind
sys.argv = ["tenure", *sys.argv[2:]]
from tenure.cli.app import main
main()
"""


class BenchFailed(Exception):
    """Something answered wrong: the run stops (exit status 1)."""


# --- the figures -------------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the table: a value per size, and which way is worse (None: for information only)."""

    name: str
    unit: str
    worse: str | None  # "higher", "lower" or None
    values: dict[int, float] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)


class Figures:
    def __init__(self) -> None:
        self.rows: dict[str, Figure] = {}

    def put(self, name: str, unit: str, worse: str | None, size: int, value: float, *, note: str = "") -> None:
        row = self.rows.setdefault(name, Figure(name, unit, worse))
        row.values[size] = value
        if note:
            row.notes[size] = note


def _median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def _timed(fn: Callable[[], Any], repeats: int, warmup: int) -> tuple[float, float]:
    """(first call's ms, median ms of ``repeats`` calls after ``warmup`` untimed ones)."""
    first = 0.0
    for i in range(warmup):
        t = time.perf_counter()
        fn()
        if i == 0:
            first = (time.perf_counter() - t) * 1000
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, _median_ms(times)


# --- the server --------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TENURE_")}


@contextmanager
def serving(url: str, directory: str) -> Iterator[tuple[httpx.Client, int]]:
    """``tenure serve --workers 0`` on a free port, auth on; yields a keep-alive client and the server's pid."""
    port = free_port()
    token = secrets.token_urlsafe(24)[:32]
    env = _env()
    env["TENURE_TOKENS"] = f"{CLIENT_NAME}:{token}:admin"
    log_path = os.path.join(directory, f"serve-{port}.log")
    args = [*tenure_command(), "serve", "--port", str(port), "--database", url, "--workers", "0"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(
        base_url=base,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        timeout=600.0,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )
    try:
        end = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise BenchFailed(f"tenure serve exited with {proc.returncode}:\n{_tail(log_path)}")
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > end:
                raise BenchFailed(f"tenure serve not ready after 120 s:\n{_tail(log_path)}")
            time.sleep(0.1)
        yield client, proc.pid
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _tail(path: str, lines: int = 30) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def _get(client: httpx.Client, path: str, params: dict[str, Any] | None = None, *, items: int | None = None) -> None:
    response = client.get(path, params=params)
    if response.status_code != 200:
        raise BenchFailed(f"GET {path} {params or ''} answered {response.status_code}: {response.text[:300]}")
    if items is not None:
        got = len(response.json()["items"])
        if got != items:
            raise BenchFailed(f"GET {path} {params} returned {got} resources, expected {items}")


# --- the engine: lifecycles through a real `tenure worker` --------------------------------------


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class EngineRun:
    lifecycles: int
    seconds: float
    #: (lifecycles done, worker RSS in MB) at each mark
    rss: list[tuple[int, float]]
    waits_left: int
    table_growth: dict[str, int]
    hot: tuple[int, int] | None  # (n_tup_hot_upd, n_tup_upd) during the run, PostgreSQL only
    #: How often the change feed went quiet while lifecycles were in flight, and for how long in all
    feed_stalls: int = 0
    stalled_seconds: float = 0.0


def retention_configurable() -> bool:
    """Whether this tenure's configuration file has a ``[retention]`` section (and its engine prunes)."""
    from tenure.service import config

    return "retention" in getattr(config, "_SECTIONS", ())


class _ShiftedWorker:
    """``tenure worker`` on ``url`` in a subprocess, its clock ENGINE_BEHIND behind the machine's.

    ``retention``: "default" runs it as configured by default; "off" gives it a configuration file whose
    ``[retention]`` keeps everything (where tenure has retention at all), so that it does not spend the
    run pruning the loaded history, which a store that always ran with retention would not hold.
    """

    def __init__(self, url: str, directory: str, retention: str) -> None:
        self.log_path = os.path.join(directory, f"worker-{secrets.token_hex(3)}.log")
        args = [
            sys.executable,
            "-c",
            _SHIFTED_CLI,
            str(ENGINE_BEHIND.total_seconds()),
            "worker",
            "--database",
            url,
        ]
        if retention == "off" and retention_configurable():
            config = os.path.join(directory, "worker-keeps-everything.toml")
            with open(config, "w") as f:
                f.write('[retention]\njournal = "off"\nwaits = "off"\nflows = "off"\nresources = "off"\n')
            args += ["--config", config]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=directory, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + 300
        while "Ctrl-C to stop" not in _tail(self.log_path):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise BenchFailed(f"tenure worker did not start:\n{_tail(self.log_path)}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(300)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _counts(url: str, tables: Sequence[str]) -> dict[str, int]:
    with _connect(url) as conn:
        return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}


class _Conn:
    """A plain connection to either database, for the few counts the benchmark reads itself."""

    def __init__(self, url: str) -> None:
        self.sqlite = url.startswith("sqlite:")
        if self.sqlite:
            self.conn: Any = sqlite3.connect(url.split("sqlite:///", 1)[1].split("?", 1)[0])
        else:
            self.conn = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if not self.sqlite:
            sql = sql.replace("?", "%s")
        return self.conn.execute(sql, params)

    def __enter__(self) -> _Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _connect(url: str) -> _Conn:
    return _Conn(url)


def _waits_of(url: str, ids: Sequence[str]) -> int:
    total = 0
    with _connect(url) as conn:
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            marks = ", ".join("?" for _ in part)
            total += int(conn.execute(f"SELECT count(*) FROM waits WHERE resource_id IN ({marks})", part).fetchone()[0])
    return total


def _hot(url: str) -> tuple[int, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT n_tup_hot_upd, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'resources'"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def run_engine(url: str, directory: str, count: int, mark: int, retention: str = "off") -> EngineRun:
    postgres = not url.startswith("sqlite:")
    tables = ("resources", "journal", "waits", "inbox")
    time.sleep(1.5)  # let every earlier connection's statistics reach PostgreSQL's counters
    hot_before = _hot(url) if postgres else None
    before = _counts(url, tables)
    worker = _ShiftedWorker(url, directory, retention)
    store = open_store(url, all_kinds(None), clock=loader.shifted_clock(ENGINE_BEHIND.total_seconds()))
    rss: list[tuple[int, float]] = [(0, _rss_mb(worker.proc.pid))]
    try:

        def on_done(done: int) -> None:
            if done % mark == 0:
                rss.append((done, _rss_mb(worker.proc.pid)))
                print(f"    {done:,} lifecycles, worker RSS {rss[-1][1]:.1f} MB", file=sys.stderr, flush=True)

        started = time.perf_counter()
        driven = loader.drive_lifecycles(store, count, window=32, on_done=on_done)
        seconds = time.perf_counter() - started
    finally:
        store.close()
        worker.stop()
    time.sleep(1.5)
    hot = None
    if postgres and hot_before is not None:
        after = _hot(url)
        hot = (after[0] - hot_before[0], after[1] - hot_before[1])
    grown = _counts(url, tables)
    return EngineRun(
        count,
        seconds,
        rss,
        _waits_of(url, driven.ids),
        {t: grown[t] - before[t] for t in tables},
        hot,
        driven.feed_stalls,
        driven.stalled_seconds,
    )


def _fold_lag(url: str) -> int | None:
    """Journal rows not yet folded into tenure's counts per state (None: this tenure keeps no such counts)."""
    with _connect(url) as conn:
        if conn.sqlite:
            if not conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'state_counts_position'").fetchone()[
                0
            ]:
                return None
            sql = "SELECT count(*) FROM journal WHERE seq > (SELECT coalesce(max(seq), 0) FROM state_counts_position)"
        else:
            if conn.execute("SELECT to_regclass('state_counts_position')").fetchone()[0] is None:
                return None
            sql = (
                "SELECT count(*) FROM journal AS j, (SELECT txid, seq FROM state_counts_position) AS p "
                "WHERE (j.txid, j.seq) > (p.txid, p.seq)"
            )
        return int(conn.execute(sql).fetchone()[0])


def _oldest_elsewhere(url: str) -> float:
    """PostgreSQL: seconds the oldest transaction open in any other session on the server has been open."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND xact_start IS NOT NULL "
            "AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)"
        ).fetchone()
    return max(0.0, float(row[0])) if row else 0.0  # (a transaction that started this instant: -0.0)


# --- the database's own ceiling ------------------------------------------------------------------

_NEXT = {"initial": ("start", "started"), "started": ("suspend", "suspended"), "suspended": ("resume", "started")}


def ceiling(url: str, seconds: float, repeats: int) -> float:
    """Transitions/s of a plain loop: BEGIN; the CAS UPDATE; the journal INSERT; COMMIT (one connection)."""
    store = open_store(url, all_kinds(None))
    try:
        rows = [[r.id, r.state, r.version] for r in (store.create(loader.KIND, {"asset": "ceiling"}) for _ in range(8))]
    finally:
        store.close()
    best = 0.0
    if url.startswith("sqlite:"):
        path = url.split("sqlite:///", 1)[1].split("?", 1)[0]
        sync = "NORMAL" if "synchronous=normal" in url.lower() else "FULL"
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={sync}")
        conn.execute("PRAGMA foreign_keys=ON")
        try:
            for _ in range(repeats):
                best = max(best, _loop_sqlite(conn, rows, seconds))
        finally:
            conn.close()
    else:
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute("SET TIME ZONE 'UTC'")
            for _ in range(repeats):
                best = max(best, _loop_pg(pg, rows, seconds))
    return best


def _loop_sqlite(conn: sqlite3.Connection, rows: list[list[Any]], seconds: float) -> float:
    n, i, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        row = rows[i % len(rows)]
        rid, state, v = row
        event, target = _NEXT[state]
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute(SQLITE_UPDATE, (target, v + 1, None, None, now, None, None, now, rid, v, state))
        if cur.rowcount != 1:
            conn.execute("ROLLBACK")
            raise BenchFailed(f"the ceiling's compare-and-swap lost on {rid}")
        conn.execute(SQLITE_JOURNAL, (rid, v + 1, event, state, target, None, now, "{}"))
        conn.execute("COMMIT")
        row[1], row[2] = target, v + 1
        i += 1
        n += 1
    return n / (time.perf_counter() - start)


def _loop_pg(conn: psycopg.Connection[Any], rows: list[list[Any]], seconds: float) -> float:
    from psycopg.types.json import Jsonb

    empty = Jsonb({})
    n, i, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        row = rows[i % len(rows)]
        rid, state, v = row
        event, target = _NEXT[state]
        now = datetime.now(UTC)
        with conn.transaction():
            cur = conn.execute(PG_UPDATE, (target, v + 1, None, None, now, None, None, now, rid, v, state))
            if cur.rowcount != 1:
                raise BenchFailed(f"the ceiling's compare-and-swap lost on {rid}")
            conn.execute(PG_JOURNAL, (rid, v + 1, event, state, target, None, now, empty))
        row[1], row[2] = target, v + 1
        i += 1
        n += 1
    return n / (time.perf_counter() - start)


# --- one store at one size ---------------------------------------------------------------------


@dataclass
class Budget:
    lifecycles: int
    mark: int
    repeats: int
    warmup: int
    ceiling_seconds: float
    ceiling_repeats: int
    prune_batches: int


@dataclass
class Options:
    budget: Budget
    directory: str
    #: PostgreSQL after the load: VACUUM (ANALYZE) instead of ANALYZE
    vacuum: bool
    #: the lifecycle worker's retention: "off" or "default"
    retention: str


def _migrate(url: str) -> None:
    store = open_store(url, check_schema=False, tables=builtin_tables())
    try:
        store.migrate()
    finally:
        store.close()


def _say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _sqlite_path(url: str) -> str:
    return url.split("sqlite:///", 1)[1].split("?", 1)[0]


def _database_size(url: str) -> str:
    if url.startswith("sqlite:"):
        path = _sqlite_path(url)
        total = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        return f"{total / 2**30:.2f} GiB file"
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return f"{int(row[0]) / 2**30:.2f} GiB database"


def _sqlite_statistics(url: str) -> int:
    """Rows of SQLite's planner statistics (sqlite_stat1; 0 when there are none)."""
    with _connect(url) as conn:
        if not conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone()[0]:
            return 0
        return int(conn.execute("SELECT count(*) FROM sqlite_stat1").fetchone()[0])


def _load(label: str, url: str, size: int, opts: Options) -> tuple[loader.Load, str]:
    _migrate(url)
    _say(f"{label} {size:,}: loading")
    loaded = loader.load(url, size, progress=_say)
    prepared = ""
    if not url.startswith("sqlite:"):
        started = time.perf_counter()
        statement = loader.analyze(url, vacuum=opts.vacuum)
        prepared = f", {statement} {time.perf_counter() - started:.0f} s"
    rows = ", ".join(f"{t} {n:,}" for t, n in loaded.rows.items())
    note = f"{label} {size:,}: loaded in {loaded.seconds:.0f} s ({rows}){prepared}; {_database_size(url)}"
    store = open_store(url, all_kinds(None), tables=builtin_tables())
    try:
        _say(f"{label} {size:,}: checking the load through tenure's reads")
        loader.check(store, loaded, Worker(store, steps_for(store, None))._due)
    finally:
        store.close()
    return loaded, note


def _engine(label: str, url: str, size: int, opts: Options, figures: Figures) -> EngineRun:
    budget = opts.budget
    _say(f"{label} {size:,}: {budget.lifecycles:,} lifecycles through tenure worker")
    run = run_engine(url, opts.directory, budget.lifecycles, budget.mark, opts.retention)
    figures.put("lifecycles/s (tenure worker, concurrency 4)", "/s", "lower", size, run.lifecycles / run.seconds)
    marks = [(n, mb) for n, mb in run.rss if n >= budget.mark]
    if len(marks) >= 2:
        growth = (marks[-1][1] - marks[0][1]) / ((marks[-1][0] - marks[0][0]) / 1000)
        figures.put("worker RSS growth per 1,000 lifecycles", "MB", "higher", size, growth)
    figures.put("worker RSS at the end", "MB", None, size, run.rss[-1][1])
    figures.put("waits rows left per lifecycle", "rows", "higher", size, run.waits_left / run.lifecycles)
    for table in ("waits", "journal"):
        per = run.table_growth[table] / run.lifecycles
        figures.put(f"{table} table growth per lifecycle (net)", "rows", None, size, per)
    if run.hot is not None:
        hot, upd = run.hot
        share = 100 * hot / upd if upd else 0.0
        figures.put("heap-only updates of resources", "%", "lower", size, share, note=f"{hot:,}/{upd:,}")
    if run.feed_stalls:
        figures.put(
            "change feed quiet for 0.25 s with lifecycles in flight", "count", None, size, run.feed_stalls,
            note=f"{run.stalled_seconds:.1f} s reading resources one by one",
        )  # fmt: skip
    return run


def _worker_queries(label: str, url: str, size: int, opts: Options, figures: Figures) -> None:
    reps, warm = opts.budget.repeats, opts.budget.warmup
    _say(f"{label} {size:,}: the worker's queries")
    if url.startswith("sqlite:"):
        figures.put("SQLite planner statistics (sqlite_stat1 rows)", "count", None, size, _sqlite_statistics(url))
    store = open_store(url, all_kinds(None), tables=builtin_tables())
    try:
        worker = Worker(store, steps_for(store, None))
        due, kinds = worker._due, worker._kinds
        _, ms = _timed(lambda: store.agenda(due, kinds), reps, warm)
        figures.put("agenda (store.agenda, one per idle pass)", "ms", "higher", size, ms)
        _, ms = _timed(lambda: store.expired_waits(kinds, limit=worker.batch), reps, warm)
        figures.put("deadline sweep (store.expired_waits)", "ms", "higher", size, ms)
        claim_times = []
        for i in range(warm + reps):
            t = time.perf_counter()
            claims = store.claim("bench-claims", due, limit=worker.concurrency, lease=worker.lease)
            spent = time.perf_counter() - t
            for c in claims:
                store.release(c)
            if len(claims) != worker.concurrency:
                raise BenchFailed(f"claim took {len(claims)} of the loaded due resources, not {worker.concurrency}")
            if i >= warm:
                claim_times.append(spent)
        figures.put(f"claim (store.claim of {worker.concurrency})", "ms", "higher", size, _median_ms(claim_times))
    finally:
        store.close()


def _api(label: str, url: str, size: int, opts: Options, figures: Figures, *, loaded: loader.Load) -> None:
    reps, warm = opts.budget.repeats, opts.budget.warmup
    _say(f"{label} {size:,}: the API")
    many, few = loader.MANY_STATE, loader.FEW_STATE
    lists = (
        (f"GET /v1/resources?kind=transfer&state={many}&limit=50", {"kind": loader.KIND, "state": many}, 50),
        (
            f"GET /v1/resources?kind=transfer&state={few}&limit=50 ({loader.FEW_COUNT} exist)",
            {"kind": loader.KIND, "state": few},
            loader.FEW_COUNT,
        ),
        ("GET /v1/resources?party=<popular>&limit=50", {"party": loader.POPULAR_PARTY}, min(50, loaded.popular_count)),
        (
            f"GET /v1/resources?party=<rare>&limit=50 ({loader.RARE_COUNT} exist)",
            {"party": loader.RARE_PARTY},
            loader.RARE_COUNT,
        ),
    )
    with serving(url, opts.directory) as (client, _pid):
        first, ms = _timed(lambda: _get(client, "/metrics"), reps, warm)
        figures.put("GET /metrics", "ms", "higher", size, ms)
        figures.put("GET /metrics, the first request", "ms", None, size, first)
        lag = _fold_lag(url)
        if lag is not None:
            figures.put("  journal rows not folded into state_counts after them", "count", None, size, lag)
        if not url.startswith("sqlite:"):
            age = _oldest_elsewhere(url)
            figures.put("  oldest transaction open elsewhere on the server", "s", None, size, age)
        for name, params, expect in lists:

            def listed(params: dict[str, Any] = params, expect: int = expect) -> None:
                _get(client, "/v1/resources", {**params, "limit": 50}, items=expect)

            _, ms = _timed(listed, reps, warm)
            figures.put(name, "ms", "higher", size, ms)
        ids = iter(loaded.random_ids(reps + warm, seed=size))
        _, ms = _timed(lambda: _get(client, f"/v1/resources/{next(ids)}"), reps, warm)
        figures.put("GET /v1/resources/{id}", "ms", "higher", size, ms)


def _retention(label: str, url: str, size: int, opts: Options, figures: Figures) -> None:
    """The pruning a worker does between passes, one call at a time, on the loaded history."""
    from tenure.service.config import ServiceConfig

    policy_of = getattr(ServiceConfig(), "retention_policy", None)
    if policy_of is None:
        return
    policy = policy_of()
    _say(f"{label} {size:,}: {opts.budget.prune_batches} prune calls (the default retention policy)")
    store = open_store(url, all_kinds(None), tables=builtin_tables())
    try:
        times, deleted = [], 0
        for _ in range(opts.budget.prune_batches):
            t = time.perf_counter()
            report = store.prune(policy)
            times.append(time.perf_counter() - t)
            deleted += report.deleted
    finally:
        store.close()
    note = f"{deleted / len(times):,.0f} rows each"
    figures.put(
        f"retention: one store.prune call (batch {policy.batch})", "ms", "higher", size, _median_ms(times), note=note
    )


def measure(label: str, url: str, size: int, opts: Options, figures: Figures) -> list[str]:
    """Load ``size`` transfers into the empty store at ``url`` and put every figure; returns notes."""
    loaded, note = _load(label, url, size, opts)
    run = _engine(label, url, size, opts, figures)
    store = open_store(url, all_kinds(None), tables=builtin_tables())
    try:
        # The engine ran the lifecycles only: the loaded backlog is as it was (its clock was behind).
        loader.check_backlog(store, loaded, {"deprovisioned": run.lifecycles})
    finally:
        store.close()
    _worker_queries(label, url, size, opts, figures)
    _api(label, url, size, opts, figures, loaded=loaded)
    _say(f"{label} {size:,}: the database's own UPDATE+INSERT")
    rate = ceiling(url, opts.budget.ceiling_seconds, opts.budget.ceiling_repeats)
    figures.put("ceiling: plain UPDATE+INSERT transitions/s (1 connection)", "/s", "lower", size, rate)
    figures.put("  the same, as 10-transition lifecycles/s", "/s", None, size, rate / TRANSITIONS_PER_LIFECYCLE)
    _retention(label, url, size, opts, figures)
    return [note]


# --- the table ---------------------------------------------------------------------------------


def _cell(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.2f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "/s":
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "MB":
        return f"{value:.2f} MB"
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:,.1f} s"
    return f"{value:,.2f}"


#: Memory growth per 1,000 lifecycles below this is flat (noise of the allocator, not a leak).
FLAT_MB = 0.5


def _verdict(row: Figure, small: float, big: float) -> str:
    """Whether the biggest size is at most twice as bad as the smallest ('' for figures to read only)."""
    if row.worse is None:
        return ""
    if row.unit == "MB" and max(small, big) < FLAT_MB:
        return "yes (flat)"
    if small <= 0 or big <= 0:
        verdict = "yes" if small == big or (row.worse == "higher" and big <= 0) else "NO"
    else:
        factor = big / small if row.worse == "higher" else small / big
        verdict = "yes" if factor <= 2 else "NO"
    return verdict + (" (grows)" if row.unit == "MB" else "")


def table(label: str, sizes: Sequence[int], figures: Figures) -> str:
    small, big = sizes[0], sizes[-1]
    head = ["figure", *(f"{s:,}" for s in sizes), f"ratio {big:,}/{small:,}", "within 2x"]
    lines = []
    for row in figures.rows.values():
        cells = [row.name]
        for s in sizes:
            v = row.values.get(s)
            text = "—" if v is None else _cell(v, row.unit)
            if s in row.notes:
                text += f" ({row.notes[s]})"
            cells.append(text)
        a, b = row.values.get(small), row.values.get(big)
        if a is None or b is None:
            cells += ["—", ""]
        else:
            ratio = f"{b / a:.2f}x" if a else "—"
            cells += [ratio, _verdict(row, a, b)]
        lines.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines, strict=True)]
    out = [f"{label}", "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    for cells in lines:
        out.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        )
    return "\n".join(out)


FOOTNOTES = """\
Load: bench/load.py copies real template lifecycles (tenure's engine made them, in a store of their own)
in bulk SQL, the journal in time order; a check reads samples back through tenure (get, journal, list,
backlog, claim, pending_waits, callbacks) and stops the run on any difference.
  {prepare}
Engine: `tenure worker` runs {lifecycles:,} lifecycles of 10 transitions (the built-in memory provisioner, 32 in
flight, the client firing `complete`) on a clock {behind} behind, so that the loaded backlog is not due for
it; its configuration: {retention}. The worker's RSS is read every {mark:,} lifecycles; the growth per 1,000
is from the first mark to the last (under {flat} MB: flat). 'waits rows left' counts the waits of the
lifecycles' own resources; 'table growth (net)' is the whole table's. Heap-only updates: the change of
n_tup_hot_upd / n_tup_upd of `resources` (pg_stat_user_tables) over the lifecycles. The driver follows the
change feed and reads its resources one by one whenever the feed is quiet for 0.25 s (PostgreSQL's feed,
like the fold of the counts per state, waits for the oldest transaction open anywhere on the server).
Reads, after the engine ran: medians of {repeats} after {warmup} untimed (the first /metrics is shown too,
and what tenure had not folded into its counts then), timed at the client; the API is `tenure serve
--workers 0`, auth on, one keep-alive connection. agenda, expired_waits and claim are called as a worker
calls them, with the built-in kinds' steps (each claim of loaded due resources is released again).
Ceiling: BEGIN; the compare-and-swap UPDATE; the journal INSERT; COMMIT, one plain connection (the
statements of bench/transitions.py), best of {ceiling_repeats} runs of {ceiling_seconds:g} s, on the loaded store.
Retention (where tenure has it): {prune} calls of store.prune with `tenure worker`'s default policy on the
loaded history, last, as the engine's housekeeping makes them.
'within 2x': the biggest size is at most twice as bad as the smallest; unmarked figures are to read only.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 and 20,000 resources, short runs")
    parser.add_argument("--sizes", help="comma-separated sizes (default 10000,1000000; --quick 2000,20000)")
    parser.add_argument("--skip-postgres", action="store_true", help="leave PostgreSQL out")
    parser.add_argument("--skip-sqlite", action="store_true", help="leave SQLite out")
    parser.add_argument("--lifecycles", type=int, help="lifecycles through the engine (default 3000; --quick 600)")
    parser.add_argument(
        "--vacuum", action="store_true", help="PostgreSQL: VACUUM (ANALYZE) after the load instead of ANALYZE"
    )
    parser.add_argument(
        "--worker-retention",
        choices=("off", "default"),
        default="off",
        help="the lifecycle worker's [retention]: off (default: it keeps everything, so it does not spend the run "
        "pruning the loaded history) or default (tenure worker's default policy)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TENURE_BENCH_POSTGRES_URL", DEFAULT_PG_URL),
        help="admin URL; scratch databases are created next to it and dropped (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    sizes = sorted(int(s) for s in (args.sizes or ("2000,20000" if quick else "10000,1000000")).split(","))
    count = args.lifecycles or (600 if quick else 3000)
    budget = Budget(
        lifecycles=count,
        mark=min(1000, max(1, count // 3)),
        repeats=5 if quick else 11,
        warmup=1 if quick else 2,
        ceiling_seconds=1.0 if quick else 3.0,
        ceiling_repeats=1 if quick else 2,
        prune_batches=5 if quick else 10,
    )
    print(
        f"tenure scale benchmark{' (quick)' if quick else ''}: Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs (load {os.getloadavg()[0]:.2f}); SQLite {sqlite3.sqlite_version}; "
        f"tenure {version('tenure')}; sizes {', '.join(f'{s:,}' for s in sizes)}",
        flush=True,
    )
    started = time.perf_counter()
    stores: list[tuple[str, Figures]] = []
    notes: list[str] = []
    directory = tempfile.mkdtemp(prefix="tenure-bench-scale-")
    opts = Options(budget, directory, args.vacuum, args.worker_retention)
    try:
        if not args.skip_sqlite:
            figures = Figures()
            for size in sizes:
                path = os.path.join(directory, f"scale-{size}.db")
                notes += measure("SQLite", f"sqlite:///{path}", size, opts, figures)
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(path + suffix):
                        os.remove(path + suffix)
            stores.append(("SQLite (WAL, synchronous=FULL)", figures))
        if not args.skip_postgres:
            figures = Figures()
            try:
                for size in sizes:
                    with scratch_database(args.postgres_url) as url:
                        notes += measure("PostgreSQL", url, size, opts, figures)
                stores.append(("PostgreSQL (scratch database, server defaults)", figures))
            except psycopg.OperationalError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                notes.append(f"PostgreSQL unreachable at {args.postgres_url} ({first}); left out.")
    except (BenchFailed, loader.LoadMismatch, loader.LifecycleFailed) as exc:
        for label, figures in stores:
            print(table(label, sizes, figures))
        print(f"FAILED: {exc}")
        return 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for label, figures in stores:
        print()
        print(table(label, sizes, figures))
    print()
    for note in notes:
        print(note)
    print()
    print(
        FOOTNOTES.format(
            prepare=(
                "After the load, PostgreSQL: "
                + ("VACUUM (ANALYZE)" if args.vacuum else "ANALYZE (nothing else: autovacuum may be off)")
                + "; SQLite: nothing (its statistics are tenure's to keep)."
            ),
            retention=(
                "the defaults, [retention] keeping everything"
                if args.worker_retention == "off" and retention_configurable()
                else "the defaults"
            ),
            behind=f"{ENGINE_BEHIND.days} days",
            lifecycles=budget.lifecycles,
            mark=budget.mark,
            flat=FLAT_MB,
            repeats=budget.repeats,
            warmup=budget.warmup,
            ceiling_repeats=budget.ceiling_repeats,
            ceiling_seconds=budget.ceiling_seconds,
            prune=budget.prune_batches,
        )
    )
    print(f"whole run {time.perf_counter() - started:.0f} s (load {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
