"""tenure's flow engine next to TaskFlow's: many small runs, one big run, and the cost per task as flows grow.

Run ``.venv/bin/python bench/flows.py`` (``--quick`` for a smoke run, ``--skip-postgres`` to leave
PostgreSQL out, ``--profile`` to add a cProfile of tenure's runs on each storage). It prints, for tenure and
TaskFlow side by side, each in memory and persisted to a SQLite file (tenure also to PostgreSQL):

(1) a 10-task linear flow of no-op tasks, run 200 times;
(2) a 1000-task linear flow, run once;
(3) the cost per task of linear flows of 10, 100, 300, 1000 and 2000 tasks: flat when the engine's
    work per task does not depend on the size of the flow.

Every run is checked: tenure's outcome is ``success``, TaskFlow's engine finishes with the flow in
``SUCCESS``, and a persisted run must have written one finished run row and one finished row per task.
TaskFlow's persisted runs and its biggest flows are slow (seconds per run, quadratic in the flow's
size), so they are timed with fewer runs or extrapolated; the table marks such numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib
import importlib.metadata
import os
import platform
import pstats
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from benchkit import scratch_database, unshadow, version
from rich.console import Console
from rich.table import Table

from tenure import open_store
from tenure.flow import Checkpoints, Flow, FlowEngine, FlowOutcome, MemoryCheckpoints, RunState, TaskState, linear, task
from tenure.flow.durable import StoreCheckpoints
from tenure.store.protocol import EngineStore

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SMALL = 10  # tasks in the flow of section (1)


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


class BenchFailed(RuntimeError):
    """A run did not succeed, or did not leave the checkpoints it should have."""


# --- measurements ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    tasks: int  # per run
    runs: int
    seconds: float  # wall time of all the runs
    extrapolated: bool = False

    @property
    def per_run(self) -> float:
        return self.seconds / self.runs

    @property
    def per_task(self) -> float:
        return self.per_run / self.tasks


def extrapolate(points: Sequence[Measured], tasks: int) -> Measured:
    """One run of ``tasks`` tasks, from ``t(n) = a*n + b*n**2`` through the two largest measured sizes
    (from ``t(n) = a*n`` when there is only one)."""
    ordered = sorted(points, key=lambda m: m.tasks)
    if len(ordered) == 1:
        return Measured(tasks, 1, ordered[0].per_task * tasks, extrapolated=True)
    p1, p2 = ordered[-2:]
    n1, t1, n2, t2 = p1.tasks, p1.per_run, p2.tasks, p2.per_run
    det = n1 * n2 * n2 - n2 * n1 * n1
    a = (t1 * n2 * n2 - t2 * n1 * n1) / det
    b = (t2 * n1 - t1 * n2) / det
    if b < 0:  # noise made the curve bend down: grow linearly from the largest point instead
        a, b = t2 / n2, 0.0
    elif a < 0:  # all quadratic
        a, b = 0.0, t2 / (n2 * n2)
    return Measured(tasks, 1, a * tasks + b * tasks * tasks, extrapolated=True)


@dataclass(frozen=True)
class Budget:
    small_runs: int  # runs of the 10-task flow (1), in memory and for tenure everywhere
    taskflow_small_runs_persisted: int  # at most this many for TaskFlow on SQLite (then scaled) ...
    taskflow_small_seconds: float  # ... and only as many as fit in about this long (at least 3)
    big: int  # tasks in the flow of (2)
    sizes: tuple[int, ...]  # flow sizes of (3)
    taskflow_memory_cap: int  # largest TaskFlow flow run in memory; bigger ones are extrapolated
    taskflow_persisted_cap: int  # the same, persisted
    tasks_per_point: int  # tenure runs max(1, tasks_per_point // n) times at size n (TaskFlow once)
    max_seconds: float  # a TaskFlow run predicted to take longer is extrapolated instead


FULL = Budget(200, 20, 30.0, 1000, (10, 100, 300, 1000, 2000), 1000, 300, 1000, 120.0)
QUICK = Budget(20, 3, 4.0, 100, (10, 30, 100), 100, 30, 100, 15.0)


def _noop() -> None:
    return None


def tenure_flow(name: str, tasks: int) -> Flow:
    return linear(name, *[task(_noop, name=f"t{i}") for i in range(tasks)])


# tenure ----------------------------------------------------------------------------------------


class TenureBackend:
    """Where tenure keeps its checkpoints: in memory (the engine's default) or a store."""

    def __init__(self, label: str, url: str | None) -> None:
        self.label = label
        self.url = url
        self.store: EngineStore | None = None
        self.checkpoints: Checkpoints | None = None
        if url is not None:
            self.store = open_store(url, check_schema=False)
            self.store.migrate()
            self.checkpoints = StoreCheckpoints(self.store)

    def counts(self, flow: str) -> tuple[int, int]:
        """(finished runs, finished task rows) stored for ``flow``, read back with plain SQL."""
        runs_sql = "SELECT count(*) FROM flow_runs WHERE flow = {p} AND state = 'success'"
        tasks_sql = (
            "SELECT count(*) FROM flow_tasks t JOIN flow_runs r ON r.id = t.run_id"
            " WHERE r.flow = {p} AND t.state = 'success'"
        )
        assert self.url is not None
        if self.url.startswith("sqlite:"):
            path = self.url.removeprefix("sqlite:///").partition("?")[0]
            with contextlib.closing(sqlite3.connect(path)) as conn:
                (runs,) = conn.execute(runs_sql.format(p="?"), (flow,)).fetchone()
                (tasks,) = conn.execute(tasks_sql.format(p="?"), (flow,)).fetchone()
            return int(runs), int(tasks)
        with psycopg.connect(self.url.partition("?")[0]) as conn:
            row_runs = conn.execute(runs_sql.format(p="%s").encode(), (flow,)).fetchone()
            row_tasks = conn.execute(tasks_sql.format(p="%s").encode(), (flow,)).fetchone()
        assert row_runs is not None
        assert row_tasks is not None
        return int(row_runs[0]), int(row_tasks[0])

    def verify(self, flow: Flow, runs: int, engine: FlowEngine, outcome: FlowOutcome) -> str:
        tasks = len(flow.items)
        if self.store is None:
            assert isinstance(engine.checkpoints, MemoryCheckpoints)
            record = engine.checkpoints.load_run(outcome.run_id)
            states = [] if record is None else [t.state for t in record.tasks.values()]
            if len(states) != tasks or any(s is not TaskState.SUCCESS for s in states):
                raise BenchFailed(f"tenure {self.label}: last run of {flow.name} has task states {states}")
            return f"{_n(runs, 'run')} success, the last one with {tasks} task records, all success"
        got = self.counts(flow.name)
        if got != (runs, runs * tasks):
            raise BenchFailed(f"tenure {self.label}: {flow.name} stored {got}, expected {(runs, runs * tasks)}")
        return f"{_n(got[0], 'run row')} and {_n(got[1], 'task row')} stored, all success"

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def time_tenure(backend: TenureBackend, flow: Flow, runs: int, *, reuse_engine: bool = False) -> tuple[Measured, str]:
    """``runs`` runs of ``flow``, each on a new FlowEngine (compiling the flow) unless ``reuse_engine``."""
    engine = FlowEngine(flow, checkpoints=backend.checkpoints)
    outcome: FlowOutcome | None = None
    t0 = time.perf_counter()
    for _ in range(runs):
        if not reuse_engine:
            engine = FlowEngine(flow, checkpoints=backend.checkpoints)
        outcome = engine.run()
        if outcome.state is not RunState.SUCCESS:
            raise BenchFailed(f"tenure {backend.label}: {flow.name} ended {outcome.state.value}")
    elapsed = time.perf_counter() - t0
    assert outcome is not None
    return Measured(len(flow.items), runs, elapsed), backend.verify(flow, runs, engine, outcome)


# TaskFlow --------------------------------------------------------------------------------------


def _taskflow_execute(self: Any) -> None:
    return None


class TaskFlowBackend:
    """TaskFlow's serial engine, in memory (no backend) or on its SQLAlchemy backend over a SQLite file."""

    def __init__(self, label: str, path: str | None) -> None:
        self.label = label
        self.path = path
        self.engines = importlib.import_module("taskflow.engines")
        self.states = importlib.import_module("taskflow.states")
        self.models = importlib.import_module("taskflow.persistence.models")
        self.linear_flow = importlib.import_module("taskflow.patterns.linear_flow")
        base = importlib.import_module("taskflow.task").Task
        self.noop: Any = type("Noop", (base,), {"execute": _taskflow_execute})
        self.backend: Any = None
        if path is not None:
            backends = importlib.import_module("taskflow.persistence.backends")
            self.backend = backends.fetch({"connection": f"sqlite:///{path}"})
            with contextlib.closing(self.backend.get_connection()) as conn:
                conn.upgrade()

    def flow(self, name: str, tasks: int) -> Any:
        return self.linear_flow.Flow(name).add(*[self.noop(name=f"t{i}") for i in range(tasks)])

    def load(self, flow: Any) -> Any:
        if self.backend is None:
            return self.engines.load(flow)
        # A fresh logbook and flow detail for every run, as a service running flows one by one would;
        # one shared logbook would be re-saved whole, with all its flow details, on every load.
        return self.engines.load(flow, book=self.models.LogBook(f"bench-{flow.name}"), backend=self.backend)

    def verify(self, name: str, tasks: int, runs: int, engine: Any) -> str:
        if self.path is None:
            names = [f"t{i}" for i in range(tasks)]
            states = {s for s, _ in engine.storage.get_atoms_states(names).values()}
            if states != {self.states.SUCCESS}:
                raise BenchFailed(f"TaskFlow {self.label}: last run of {name} has atom states {states}")
            return f"{_n(runs, 'run')} SUCCESS, the last one with {tasks} atoms, all SUCCESS"
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            (flows,) = conn.execute(
                "SELECT count(*) FROM flowdetails WHERE name = ? AND state = 'SUCCESS'", (name,)
            ).fetchone()
            (atoms,) = conn.execute(
                "SELECT count(*) FROM atomdetails a JOIN flowdetails f ON f.uuid = a.parent_uuid"
                " WHERE f.name = ? AND a.state = 'SUCCESS'",
                (name,),
            ).fetchone()
        if (flows, atoms) != (runs, runs * tasks):
            raise BenchFailed(f"TaskFlow {self.label}: {name} stored {(flows, atoms)}, expected {(runs, runs * tasks)}")
        return f"{_n(flows, 'flow detail')} and {_n(atoms, 'atom detail')} stored, all SUCCESS"

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def time_taskflow(backend: TaskFlowBackend, name: str, tasks: int, runs: int) -> tuple[Measured, str]:
    """``runs`` runs of one linear flow (built once), each loaded into a new engine with a new flow detail."""
    flow = backend.flow(name, tasks)
    engine: Any = None
    t0 = time.perf_counter()
    for _ in range(runs):
        engine = backend.load(flow)
        engine.run()  # raises if a task failed
        if engine.storage.get_flow_state() != backend.states.SUCCESS:
            raise BenchFailed(f"TaskFlow {backend.label}: {name} ended {engine.storage.get_flow_state()}")
    elapsed = time.perf_counter() - t0
    return Measured(tasks, runs, elapsed), backend.verify(name, tasks, runs, engine)


# --- running the plan --------------------------------------------------------------------------


@dataclass
class Series:
    """One library on one storage: the 10-task runs of (1) and one point per flow size of (3)."""

    library: str
    storage: str
    small: Measured
    sizes: dict[int, Measured]
    checks: list[str]
    warm_up: Measured


def run_tenure_series(backend: TenureBackend, budget: Budget, console: Console) -> Series:
    checks: list[str] = []
    warm_up, _ = time_tenure(backend, tenure_flow("warm-up", SMALL), 3)
    with console.status(f"tenure, {backend.label}: {SMALL} tasks x {budget.small_runs}"):
        small, check = time_tenure(backend, tenure_flow(f"many-{SMALL}", SMALL), budget.small_runs)
    checks.append(f"(1) {check}")
    sizes: dict[int, Measured] = {}
    for n in budget.sizes:
        if n == SMALL:
            sizes[n] = small
            continue
        runs = max(1, budget.tasks_per_point // n)
        with console.status(f"tenure, {backend.label}: {n} tasks x {runs}"):
            sizes[n], check = time_tenure(backend, tenure_flow(f"linear-{n}", n), runs)
        checks.append(f"({'2' if n == budget.big else '3'}) {n} tasks: {check}")
    return Series("tenure", backend.label, small, sizes, checks, warm_up)


def run_taskflow_series(backend: TaskFlowBackend, budget: Budget, console: Console) -> Series:
    persisted = backend.path is not None
    cap = budget.taskflow_persisted_cap if persisted else budget.taskflow_memory_cap
    checks: list[str] = []
    warm_up, _ = time_taskflow(backend, "warm-up", SMALL, 1)
    small_runs = budget.small_runs
    if persisted:
        fit = int(budget.taskflow_small_seconds / warm_up.per_run)
        small_runs = max(3, min(budget.taskflow_small_runs_persisted, fit))
    with console.status(f"TaskFlow, {backend.label}: {SMALL} tasks x {small_runs}"):
        small, check = time_taskflow(backend, f"many-{SMALL}", SMALL, small_runs)
    checks.append(f"(1) {check}")
    sizes: dict[int, Measured] = {}
    for n in budget.sizes:
        if n == SMALL:
            sizes[n] = small
        elif n <= cap and extrapolate(list(sizes.values()), n).seconds <= budget.max_seconds:
            with console.status(f"TaskFlow, {backend.label}: {n} tasks x 1"):
                sizes[n], check = time_taskflow(backend, f"linear-{n}", n, 1)
            checks.append(f"({'2' if n == budget.big else '3'}) {n} tasks: {check}")
        else:
            sizes[n] = extrapolate(list(sizes.values()), n)
    return Series("TaskFlow", backend.label, small, sizes, checks, warm_up)


# --- PostgreSQL scratch database ---------------------------------------------------------------


# --- printing ----------------------------------------------------------------------------------


def _dur(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:,.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _about(m: Measured, text: str) -> str:
    return f"[italic]≈ {text}[/italic]" if m.extrapolated else text


def _times(factor: float) -> str:
    if factor < 10:
        return f"{factor:.2f}x"
    if factor < 100:
        return f"{factor:.1f}x"
    return f"{factor:,.0f}x"


def _ratio(taskflow: Measured | None, tenure: Measured, *, field: Callable[[Measured], float]) -> str:
    """TaskFlow's time over tenure's (> 1: tenure is faster)."""
    if taskflow is None:
        return "—"
    factor = field(taskflow) / field(tenure)
    colour = "green" if factor >= 1 else "red"
    text = f"[{colour}]{_times(factor)}[/{colour}]"
    return f"[italic]≈ {text}[/italic]" if taskflow.extrapolated else text


@dataclass(frozen=True)
class Row:
    """One storage line: tenure's series against the TaskFlow series it is compared with (if any)."""

    storage: str
    tenure: Series
    taskflow: Series | None
    taskflow_note: str = ""


def table_small(rows: Sequence[Row], budget: Budget) -> Table:
    n = budget.small_runs
    table = Table(title=f"(1) a {SMALL}-task linear flow of no-op tasks, run {n} times", title_justify="left")
    table.add_column("storage", no_wrap=True)
    table.add_column(f"tenure, {n} runs", justify="right")
    table.add_column("tenure / run", justify="right")
    table.add_column(f"TaskFlow, {n} runs", justify="right")
    table.add_column("TaskFlow / run", justify="right")
    table.add_column("TaskFlow ÷ tenure", justify="right")
    for r in rows:
        t = r.tenure.small
        if r.taskflow is None:
            tf_total, tf_run, ratio = "—", "—", "—"
        else:
            f = r.taskflow.small
            scaled = " ¹" if f.runs != n else ""
            tf_total, tf_run = f"{_dur(f.per_run * n)}{scaled}{r.taskflow_note}", _dur(f.per_run)
            ratio = _ratio(f, t, field=lambda m: m.per_run)
        table.add_row(r.storage, _dur(t.per_run * n), _dur(t.per_run), tf_total, tf_run, ratio)
    return table


def table_big(rows: Sequence[Row], budget: Budget) -> Table:
    n = budget.big
    table = Table(title=f"(2) a {n:,}-task linear flow of no-op tasks, run once", title_justify="left")
    table.add_column("storage", no_wrap=True)
    table.add_column("tenure", justify="right")
    table.add_column("tenure / task", justify="right")
    table.add_column("TaskFlow", justify="right")
    table.add_column("TaskFlow / task", justify="right")
    table.add_column("TaskFlow ÷ tenure", justify="right")
    for r in rows:
        t = r.tenure.sizes[n]
        if r.taskflow is None:
            table.add_row(r.storage, _dur(t.per_run), _dur(t.per_task), "—", "—", "—")
            continue
        f = r.taskflow.sizes[n]
        note = (" ²" if f.extrapolated else "") + r.taskflow_note
        table.add_row(
            r.storage,
            _dur(t.per_run),
            _dur(t.per_task),
            _about(f, _dur(f.per_run)) + note,
            _about(f, _dur(f.per_task)),
            _ratio(f, t, field=lambda m: m.per_run),
        )
    return table


def table_scaling(rows: Sequence[Row], budget: Budget) -> Table:
    sizes = budget.sizes
    first = next((s for s in sizes if s > SMALL), sizes[0])
    table = Table(title="(3) time per task (run time ÷ tasks) of linear flows as they grow ³", title_justify="left")
    table.add_column("storage", no_wrap=True)
    table.add_column("library", no_wrap=True)
    for s in sizes:
        table.add_column(f"{s:,} tasks", justify="right")
    table.add_column(f"{sizes[-1]:,} vs {first:,} ⁴", justify="right")

    def growth(series: Series) -> str:
        last, base = series.sizes[sizes[-1]], series.sizes[first]
        return _about(last, f"{last.per_task / base.per_task:.2f}x")

    for r in rows:
        t = r.tenure
        table.add_row(r.storage, "tenure", *[_dur(t.sizes[s].per_task) for s in sizes], growth(t))
        if r.taskflow is not None:
            f = r.taskflow
            table.add_row(
                "",
                f"TaskFlow{r.taskflow_note}",
                *[_about(f.sizes[s], _dur(f.sizes[s].per_task)) for s in sizes],
                growth(f),
            )
            table.add_row(
                "",
                "[dim]TaskFlow ÷ tenure[/dim]",
                *[_ratio(f.sizes[s], t.sizes[s], field=lambda m: m.per_task) for s in sizes],
                "",
            )
        table.add_section()
    return table


# --- profiling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    title: str
    stats: pstats.Stats


def profile_tenure(backend: TenureBackend, runs: int) -> Profile:
    """cProfile ``runs`` runs of the 10-task flow on ``backend``."""
    flow = tenure_flow(f"profile-{SMALL}", SMALL)
    profiler = cProfile.Profile()
    profiler.enable()
    measured, _ = time_tenure(backend, flow, runs)
    profiler.disable()
    title = (
        f"cProfile of tenure, {backend.label}: {runs} runs of the {SMALL}-task flow, "
        f"{_dur(measured.per_run)} per run under the profiler; top functions by own time"
    )
    return Profile(title, pstats.Stats(profiler, stream=sys.stdout))


def print_profile(profile: Profile, console: Console) -> None:
    console.print(f"\n[bold]{profile.title}[/bold]", highlight=False)
    profile.stats.strip_dirs().sort_stats(pstats.SortKey.TIME).print_stats(16)


# --- main --------------------------------------------------------------------------------------

FOOTNOTES = """\
What is timed: from creating the engine to the end of the run; the flow (its task objects and pattern)
is built beforehand, once per measurement. tenure: `FlowEngine(flow, checkpoints=...)` then `.run()`,
a new engine (which compiles the flow) for every run. TaskFlow {tf_version}: `engines.load(flow, ...)`
(serial engine, the default) then `engine.run()`, a new engine and flow detail for every run; tasks are
subclasses of taskflow.task.Task whose execute does nothing. Each timing is one batch, after an untimed
warm-up per storage; averages, not best-of. A tenure FlowEngine can run its flow any number of times:
reusing one engine for all {small_runs} runs of (1) in memory takes {reused} per run, against {fresh}
with a new engine per run (what the tables show).
Storage. In memory: tenure's default MemoryCheckpoints; TaskFlow with no backend (its in-memory one).
  SQLite: a file each, in {tmp}. tenure: StoreCheckpoints on `open_store("sqlite:///…?synchronous=…")`
  (WAL; synchronous=FULL is the default, NORMAL on request), one transaction per task transition.
  TaskFlow: `persistence.backends.fetch({{"connection": "sqlite:///…"}})` (SQLAlchemy {sa_version}),
  which leaves SQLite's defaults: rollback journal, synchronous=FULL; its backend has no setting for
  either, so the tenure NORMAL line is compared with that same FULL measurement (marked *).
  A fresh LogBook per TaskFlow run (a shared one is re-saved whole, with every flow detail, on each load).
  PostgreSQL (tenure only): a scratch database created next to {pg_url} and dropped at the end.
Checks: every tenure outcome must be `success` and every TaskFlow engine must finish with the flow in
  SUCCESS (a failed task raises); afterwards the stored rows are counted with plain SQL (tenure:
  flow_runs/flow_tasks; TaskFlow: flowdetails/atomdetails) and must be one finished run row per run and
  one finished row per task. The benchmark stops if any check fails; what they found is listed above.
  ¹ TaskFlow on SQLite takes about a second per run (it took {tf_warm} for its warm-up run here), so
    (1) times {tf_small} runs of it (at most {tf_small_max}, as many as fit in about {tf_small_s:g} s) and
    multiplies their average by {small_runs}.
  ² TaskFlow flows bigger than {tf_mem_cap:,} tasks in memory or {tf_cap:,} tasks persisted, or predicted to
    take more than {max_s:g} s, are not run (they would take minutes each): their times (italic, ≈) are
    extrapolated from the two largest sizes measured, fitting t(n) = a·n + b·n² (TaskFlow's engine scans
    every atom of the flow at each step, which makes it quadratic). A check of that fit, in memory:
    {check}.
  ³ The {small}-task column is (1)'s average; tenure runs each bigger flow max(1, {per_point} ÷ tasks) times
    and averages, TaskFlow runs it once. The {big:,}-task column is the run of (2).
  ⁴ Time per task at the largest size over time per task at the smallest size above {small}: about 1.00x
    when the per-task cost stays flat as the flow grows.
Noise: this machine has {cpus} cores and other engineers run test suites on it at the same time (load
average {load0:.2f} at the start, {load1:.2f} at the end), so single timings can be off by tens of percent;
SQLite FULL and PostgreSQL times are bound by fsync latency, which anything else writing to the disk moves.
Read the ratios and the growth column rather than the absolute times.
"""


def _fit_check(memory: Series | None) -> str:
    """How well the two-point fit of footnote 2 predicts a measured in-memory TaskFlow point."""
    if memory is None:
        return "no TaskFlow run"
    measured = sorted((m for m in memory.sizes.values() if not m.extrapolated), key=lambda m: m.tasks)
    if len(measured) < 3:
        return "not enough measured sizes"
    target = measured[-1]
    predicted = extrapolate(measured[:-1], target.tasks)
    a, b = measured[-3].tasks, measured[-2].tasks
    return (
        f"from {a:,} and {b:,} tasks it predicts {_dur(predicted.seconds)} for {target.tasks:,} tasks, "
        f"measured {_dur(target.seconds)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    unshadow()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny counts, for a smoke test")
    parser.add_argument("--skip-postgres", action="store_true", help="leave PostgreSQL out")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TENURE_BENCH_POSTGRES_URL", DEFAULT_PG_URL),
        help="admin URL; a scratch database is created next to it and dropped at the end (default: %(default)s)",
    )
    parser.add_argument("--profile", action="store_true", help="also cProfile tenure's runs on each storage")
    args = parser.parse_args(argv)

    console = Console(width=max(shutil.get_terminal_size((132, 40)).columns, 132))
    budget = QUICK if args.quick else FULL
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    tf_version, sa_version = version("taskflow"), version("SQLAlchemy")
    console.print(
        f"[bold]tenure vs TaskFlow flow benchmark[/bold]{' (quick)' if args.quick else ''}: "
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs (load {load0:.2f}); "
        f"SQLite {sqlite3.sqlite_version}; tenure {version('tenure')}, taskflow {tf_version}, "
        f"SQLAlchemy {sa_version}"
    )

    notes: list[str] = []
    rows: list[Row] = []
    checks: list[tuple[str, list[str]]] = []
    profiles: list[Profile] = []
    directory = tempfile.mkdtemp(prefix="tenure-bench-flows-")

    def tenure_series(label: str, url: str | None) -> Series:
        backend = TenureBackend(label, url)
        try:
            series = run_tenure_series(backend, budget, console)
            if args.profile:
                profiles.append(profile_tenure(backend, budget.small_runs))
        finally:
            backend.close()
        checks.append((f"tenure, {label}", series.checks))
        return series

    def taskflow_series(label: str, path: str | None) -> Series | None:
        if tf_version == "not installed":
            return None
        if path is not None and sa_version == "not installed":
            notes.append("TaskFlow's SQL backend needs SQLAlchemy and alembic, which are not installed.")
            return None
        backend = TaskFlowBackend(label, path)
        try:
            series = run_taskflow_series(backend, budget, console)
        finally:
            backend.close()
        checks.append((f"TaskFlow, {label}", series.checks))
        return series

    reused: Measured | None = None
    fresh: Measured | None = None
    tf_memory: Series | None = None
    tf_sqlite: Series | None = None
    try:
        mem = tenure_series("in memory", None)
        reused_flow = tenure_flow("reused", SMALL)
        reused = time_tenure(TenureBackend("in memory", None), reused_flow, budget.small_runs, reuse_engine=True)[0]
        fresh = mem.small
        tf_memory = taskflow_series("in memory", None)
        rows.append(Row("in memory", mem, tf_memory))

        full = tenure_series("SQLite synchronous=FULL", f"sqlite:///{directory}/tenure-full.db?synchronous=full")
        normal = tenure_series(
            "SQLite synchronous=NORMAL", f"sqlite:///{directory}/tenure-normal.db?synchronous=normal"
        )
        tf_sqlite = taskflow_series("SQLite (defaults: FULL)", f"{directory}/taskflow.db")
        rows.append(Row("SQLite file, synchronous=FULL", full, tf_sqlite))
        rows.append(Row("SQLite file, synchronous=NORMAL", normal, tf_sqlite, " *"))

        if args.skip_postgres:
            notes.append("PostgreSQL skipped (--skip-postgres).")
        else:
            try:
                with scratch_database(args.postgres_url) as url:
                    rows.append(Row("PostgreSQL", tenure_series("PostgreSQL", url), None))
            except psycopg.OperationalError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                notes.append(f"PostgreSQL unreachable at {args.postgres_url} ({first}); no PostgreSQL row.")
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    console.print(table_small(rows, budget))
    console.print(table_big(rows, budget))
    console.print(table_scaling(rows, budget))
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]")
    console.print("[bold]Checks passed[/bold] (runs succeeded and persisted runs left their rows):")
    for who, lines in checks:
        console.print(f"  {who}: " + "; ".join(lines), highlight=False)
    tf_small_runs, tf_warm = "—", "—"
    if tf_sqlite is not None:
        tf_small_runs, tf_warm = str(tf_sqlite.small.runs), _dur(tf_sqlite.warm_up.per_run)
    console.print(
        FOOTNOTES.format(
            tf_version=tf_version,
            sa_version=sa_version,
            reused="—" if reused is None else _dur(reused.per_run),
            fresh="—" if fresh is None else _dur(fresh.per_run),
            tmp=tempfile.gettempdir(),
            pg_url=args.postgres_url,
            tf_small=tf_small_runs,
            tf_small_max=budget.taskflow_small_runs_persisted,
            tf_small_s=budget.taskflow_small_seconds,
            tf_warm=tf_warm,
            max_s=budget.max_seconds,
            small=SMALL,
            small_runs=budget.small_runs,
            tf_mem_cap=budget.taskflow_memory_cap,
            tf_cap=budget.taskflow_persisted_cap,
            check=_fit_check(tf_memory),
            per_point=budget.tasks_per_point,
            big=budget.big,
            cpus=os.cpu_count(),
            load0=load0,
            load1=os.getloadavg()[0],
        ),
        highlight=False,
        markup=False,
    )
    for profile in profiles:
        print_profile(profile, console)
    console.print(f"Whole benchmark: {time.perf_counter() - started:,.0f} s.", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
