"""Invariant 5 for flows: a real process running a persisted flow is SIGKILLed, restarted, and nothing is lost.

The process is ``flow_crash_worker.py``: it runs the api flow of seed 004 (validate, reserve quota,
create an entry, commit quota, cast, finish; notify only on failure) on a real store and logs every
side effect durably. The test tells it where to stop - right after a checkpoint transaction
committed (every task boundary, forward and while reverting) or in the middle of a task, before or
after its effect - waits until it has stopped there, kills it with SIGKILL and starts it again on
the same run id, which resumes the run. Then it checks the run from the outside:

* the run ended: succeeded with every value, or failed and reverted everything that ran;
* the quota balances: ``in_use == SIZE`` after a success, nothing in use after a revert, never
  anything left reserved; the entry exists exactly once, in the state its run says;
* a task whose outcome was committed is never executed again, a revert that was committed is never
  run again; a task runs twice only when a kill landed inside it, and then the second attempt is
  attempt 2 with ``context.resumed``; the same holds for reverts.

By default every kill point runs on SQLite and every other one on PostgreSQL (processes forked from
a fork server that has tenure imported, so a launch takes a fraction of a second), plus a few runs
in cold interpreters. ``TENURE_SOAK=1`` adds the exhaustive versions: every point on PostgreSQL, a
run killed at every point in turn, two kills at the same point, and kills at random moments.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from tenure import open_store
from tenure.kinds.image import image
from tenure.kinds.volume import ReservationState, StoreQuotaLedger
from tenure.store.protocol import EngineStore
from tests.acceptance import flow_crash_worker as worker

pytestmark = pytest.mark.timeout(300)

SOAK = os.environ.get("TENURE_SOAK", "").strip() == "1"
only_when_soaking = pytest.mark.skipif(not SOAK, reason="exhaustive soak test: set TENURE_SOAK=1 to run it")

#: How long a worker may take to reach its kill point or to finish (generous: CI machines are slow).
PATIENCE = 120.0
#: How many runs are driven at the same time (they share one database, as flows of many resources do).
PARALLEL = 4
QUOTA_LIMIT = 100
#: The journal of a run's entry, by how the run ended: every effect happened exactly once.
ENTRY_EVENTS = {
    "success": ["@create", "upload", "activate"],
    "reverted": ["@create", "upload", "reset", "delete"],
}
ENTRY_STATE = {"success": "active", "reverted": "deleted"}
PROVIDED = ("request", "reservation", "entry_id", "committed", "host", "status")
INPUTS = ("name", "project", "size", "fail")


def all_points(fail: bool) -> list[str]:
    return [*worker.boundary_points(fail), *worker.middle_points(fail)]


def _point_id(fail: bool, point: str) -> str:
    return f"{'fail' if fail else 'ok'}-{point}"


# --- launching and killing worker processes ----------------------------------------------------------


class Handle(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float) -> int | None: ...


class Launcher(Protocol):
    def start(self, argv: list[str]) -> Handle: ...


#: Guards every start and poll of a forked worker. multiprocessing is not thread-safe here: a start
#: polls every live child (``_cleanup``), and two threads polling one child at once both see its
#: status pipe ready, one reads the status and the other reads EOF and records exit code 255.
_PROCESSES = threading.Lock()


class ForkedHandle:
    def __init__(self, process: Any) -> None:
        self.process = process
        self.pid: int = process.pid

    def poll(self) -> int | None:
        with _PROCESSES:
            code: int | None = self.process.exitcode
        return code

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        pause = 0.002
        while (code := self.poll()) is None and time.monotonic() < deadline:
            time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
            pause = min(pause * 1.5, 0.02)
        return code


class ForkLauncher:
    """Each launch is a new process forked from a fork server that has tenure and the worker imported.

    The fork server never opens a store, so a launch inherits no connection, no file lock and no
    state: it shares nothing with the killed one but the database and the log file.
    """

    #: Imported once by the fork server, so that a launch costs a fork, not an interpreter's start.
    #: (Python 3.11's fork server does not take the parent's module search path, so where it cannot
    #: import the worker module itself, each child does, which is cheap once tenure is loaded.)
    PRELOAD = (
        "__main__",
        "tenure.flow",
        "tenure.flow.durable",
        "tenure.kinds.image",
        "tenure.store.sqlite",
        "tenure.store.postgres",
        worker.__name__,
    )

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(list(self.PRELOAD))

    def start(self, argv: list[str]) -> Handle:
        process = self.ctx.Process(target=worker.forked, args=(argv,), name="flow-crash-worker")
        with _PROCESSES:
            process.start()
        return ForkedHandle(process)


class PopenHandle:
    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


#: The project's root: cold worker processes run ``flow_crash_worker`` as a module of the ``tests`` package.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ScriptLauncher:
    """Each launch is a cold interpreter running ``flow_crash_worker`` (``python -m``) from the project's root."""

    def start(self, argv: list[str]) -> Handle:
        with open(f"{argv[2]}.stderr", "ab") as stderr:  # argv[2]: the run's log
            popen = subprocess.Popen(
                [sys.executable, "-m", worker.__name__, *argv],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=PROJECT_ROOT,
            )
        return PopenHandle(popen)


# --- the side-effect log ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    launch: int
    verb: str
    subject: str
    attrs: dict[str, str]
    raw: str


def read_log(path: Path) -> list[Line]:
    if not path.exists():
        return []
    out: list[Line] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        launch, _, tail = raw.partition(" ")
        verb, _, rest = tail.partition(" ")
        if verb == "failures":
            out.append(Line(int(launch), verb, rest, {}, raw))
            continue
        subject, *pairs = rest.split(" ")
        attrs = dict(p.split("=", 1) for p in pairs if "=" in p)
        out.append(Line(int(launch), verb, subject, attrs, raw))
    return out


def _wait_for_line(path: Path, wanted: str, handle: Handle) -> bool:
    """True once ``wanted`` is a line of the log; False if the process ended without writing it."""
    deadline = time.monotonic() + PATIENCE
    pause = 0.002
    while time.monotonic() < deadline:
        if path.exists() and wanted in path.read_text(encoding="utf-8").splitlines():
            return True
        if handle.poll() is not None:
            return path.exists() and wanted in path.read_text(encoding="utf-8").splitlines()
        time.sleep(pause)
        pause = min(pause * 1.5, 0.02)
    raise AssertionError(f"no {wanted!r} in {path} after {PATIENCE:.0f}s")


# --- driving one run through kills and restarts -----------------------------------------------------


def _sigkill(handle: Handle) -> None:
    """SIGKILL one worker this test started (it may have ended on its own a moment ago)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(handle.pid, signal.SIGKILL)


@contextlib.contextmanager
def _reaped(handle: Handle) -> Iterator[None]:
    """If the block fails (a timeout, an interrupt) while the worker still runs, kill it: no orphans."""
    try:
        yield
    except BaseException:
        if handle.poll() is None:
            _sigkill(handle)
            handle.wait(PATIENCE)
        raise


@dataclass
class Run:
    """One flow run, the kills it went through and how its launches ended."""

    url: str
    run_id: str
    log: Path
    fail: bool
    #: The kill point of every launch that was killed at one (None: killed at a random moment).
    kills: list[str | None] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)

    @property
    def expected_state(self) -> str:
        return "reverted" if self.fail else "success"

    def errors(self) -> str:
        err = Path(f"{self.log}.err")
        return err.read_text(encoding="utf-8") if err.exists() else ""

    def describe(self) -> str:
        tail = "\n".join(f"    {line.raw}" for line in read_log(self.log)[-25:])
        stderr = Path(f"{self.log}.stderr")
        printed = stderr.read_text(encoding="utf-8", errors="replace") if stderr.exists() else ""
        return (
            f"run {self.run_id} (fail={self.fail}, kills={self.kills}, exits={self.exit_codes})\n"
            f"  log tail:\n{tail}\n{self.errors()}{printed}"
        )


class Driver:
    def __init__(self, launcher: Launcher, url: str, tmp: Path) -> None:
        self.launcher = launcher
        self.url = url
        self.tmp = tmp
        self._made = 0
        self._lock = threading.Lock()

    def new_run(self, store: EngineStore, fail: bool, label: str) -> Run:
        with self._lock:
            self._made += 1
            n = self._made
        slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")[:60]
        run_id = f"r{n:03d}-{slug}"
        StoreQuotaLedger(store).set_quota(run_id, worker.RESOURCE, QUOTA_LIMIT)
        return Run(self.url, run_id, self.tmp / f"{run_id}.log", fail)

    def _start(self, run: Run, kill_at: str | None) -> Handle:
        argv = [run.url, run.run_id, str(run.log), "--launch", str(len(run.exit_codes) + 1)]
        if run.fail:
            argv.append("--fail")
        if kill_at is not None:
            argv += ["--kill-at", kill_at]
        return self.launcher.start(argv)

    def kill_at(self, run: Run, point: str) -> None:
        """Launch the run, wait until it stopped at ``point``, SIGKILL it."""
        launch = len(run.exit_codes) + 1
        handle = self._start(run, point)
        with _reaped(handle):
            reached = _wait_for_line(run.log, f"{launch} paused {point}", handle)
        if not reached:
            run.exit_codes.append(handle.wait(PATIENCE))
            raise AssertionError(f"launch {launch} never reached {point}\n{run.describe()}")
        os.kill(handle.pid, signal.SIGKILL)
        run.kills.append(point)
        run.exit_codes.append(handle.wait(PATIENCE))
        assert run.exit_codes[-1] == -signal.SIGKILL, run.describe()

    def kill_after(self, run: Run, delay: float) -> bool:
        """Launch the run and SIGKILL it after ``delay`` seconds; False if it had finished by then."""
        handle = self._start(run, None)
        with _reaped(handle):
            code = handle.wait(delay)
        if code is not None:
            run.exit_codes.append(code)
            return False
        _sigkill(handle)
        code = handle.wait(PATIENCE)
        run.exit_codes.append(code)
        if code == -signal.SIGKILL:
            run.kills.append(None)
            return True
        return False  # it finished just before the signal arrived

    def finish(self, run: Run) -> None:
        """Launch the run without a kill point; it must carry the run to its end."""
        handle = self._start(run, None)
        with _reaped(handle):
            code = handle.wait(PATIENCE)
        if code is None:  # hung: do not leave it behind
            _sigkill(handle)
            handle.wait(PATIENCE)
        run.exit_codes.append(code)
        assert code == worker.EXIT_DONE, f"the restarted worker ended with {code}\n{run.describe()}"

    def drive(self, store: EngineStore, fail: bool, points: Sequence[str], label: str) -> Run:
        run = self.new_run(store, fail, label)
        for point in points:
            self.kill_at(run, point)
        self.finish(run)
        return run


def drive_all(
    driver: Driver,
    store: EngineStore,
    cases: Iterable[tuple[bool, Sequence[str]]],
    check: Callable[[EngineStore, Run], None],
) -> int:
    """Drive runs concurrently and check each; fail with every broken case listed. Returns the count."""
    cases = list(cases)

    def one(case: tuple[bool, Sequence[str]]) -> str | None:
        fail, points = case
        label = _point_id(fail, "+".join(points) or "no-kill")
        try:
            run = driver.drive(store, fail, points, label)
            check(store, run)
        except AssertionError as exc:
            return f"[{label}] {exc}"
        return None

    with ThreadPoolExecutor(PARALLEL) as pool:
        problems = [p for p in pool.map(one, cases) if p is not None]
    if problems:
        pytest.fail(f"{len(problems)} of {len(cases)} runs broke an invariant:\n\n" + "\n\n".join(problems))
    return len(cases)


# --- what every run must show, however it was killed ------------------------------------------------


def _labels(line: Line) -> set[str]:
    return set(line.subject.split(","))


def _entries_named(store: EngineStore, name: str) -> list[Any]:
    found: list[Any] = []
    after: str | None = None
    while True:
        page = store.list(kind="image", after=after, limit=500)
        found += [r for r in page.items if r.spec.get("name") == name]
        if page.next_after is None:
            return found
        after = page.next_after


def kills_inside(run: Run, lines: Sequence[Line]) -> Counter[str]:
    """Where each killed launch was: ``TASK.execute`` / ``TASK.revert`` if inside one, else a boundary.

    Read from the log: the launch's last task activity with no checkpoint after it.
    """
    where: Counter[str] = Counter()
    for launch, code in enumerate(run.exit_codes, start=1):
        if code != -signal.SIGKILL:
            continue
        inside = "boundary"
        for line in lines:
            if line.launch != launch:
                continue
            if line.verb in ("started", "executed"):
                inside = f"{line.subject}.execute"
            elif line.verb in ("revert-started", "reverted"):
                inside = f"{line.subject}.revert"
            elif line.verb == "checkpoint":
                inside = "boundary"
        where[inside] += 1
    return where


def check_run(store: EngineStore, run: Run) -> None:
    """The invariants every run keeps, whatever happened to its processes."""
    lines = read_log(run.log)
    context = run.describe()
    state = run.expected_state

    # It ended, in the state its inputs call for, and the last launch said so.
    found = store.load_flow_run(run.run_id)
    assert found is not None, context
    row, task_rows = found
    assert row.state == state, f"run state {row.state!r}, expected {state!r}\n{context}"
    tasks = {t.task: t for t in task_rows}
    outcomes = [line for line in lines if line.verb == "outcome"]
    # (A kill at a random moment may land after a launch reported its outcome, hence not "exactly one".)
    assert outcomes, context
    assert outcomes[-1].launch == len(run.exit_codes), context
    assert {o.subject for o in outcomes} == {state}, context
    assert run.exit_codes[-1] == worker.EXIT_DONE, context
    assert all(code == -signal.SIGKILL for code in run.exit_codes[:-1]), context
    assert not run.errors(), context
    if state == "success":
        assert {name: t.state for name, t in tasks.items()} == dict.fromkeys(worker.TASKS, "success"), context
        values = set(outcomes[-1].raw.split(" ")[3].split(","))
        assert set(PROVIDED) | set(INPUTS) <= values, f"values incomplete: {sorted(values)}\n{context}"
        results: dict[str, Any] = {}
        for t in task_rows:
            results.update(t.result or {})
        assert set(results) == set(PROVIDED), context
        assert results["status"] == "active", context
    else:
        expected = {**dict.fromkeys(worker.TASKS, "reverted"), **dict.fromkeys(worker.FAILURE_TASKS, "success")}
        assert {name: t.state for name, t in tasks.items()} == expected, context
        assert row.failure is not None, context
        assert "finish was asked to fail" in row.failure["message"], context

    # The quota balances, and the one reservation (keyed by the task's idempotency key) ended right.
    quota = StoreQuotaLedger(store).quota(run.run_id, worker.RESOURCE)
    in_use = worker.SIZE if state == "success" else 0
    assert (quota.in_use, quota.reserved) == (in_use, 0), f"quota {quota}\n{context}"
    reservation = StoreQuotaLedger(store).reservation(f"{run.run_id}/reserve/0")
    assert reservation.amount == worker.SIZE, context
    wanted = ReservationState.COMMITTED if state == "success" else ReservationState.RELEASED
    assert reservation.state is wanted, f"reservation {reservation}\n{context}"

    # Exactly one entry, and every change to it happened exactly once.
    entries = _entries_named(store, f"volume {run.run_id}")
    assert len(entries) == 1, f"{len(entries)} entries\n{context}"
    (entry,) = entries
    assert entry.state == ENTRY_STATE[state], context
    assert [e.event for e in store.journal(entry.id)] == ENTRY_EVENTS[state], context

    check_log(run, lines)


def check_log(run: Run, lines: Sequence[Line]) -> None:
    """Nothing committed runs again; what runs again was interrupted, and knows it."""
    context = run.describe()
    succeeded: set[str] = set()
    reverted: set[str] = set()
    reverting = False
    for line in lines:
        if line.verb == "checkpoint":
            labels = _labels(line)
            succeeded |= {label.split("=")[0] for label in labels if label.endswith(("=success", "=failure"))}
            reverted |= {label.split("=")[0] for label in labels if label.endswith("=reverted")}
            reverting = reverting or "run=reverting" in labels
        elif line.verb == "started":
            assert line.subject not in succeeded, f"{line.subject} ran again after its outcome was committed\n{context}"
            assert not (reverting and line.subject in worker.TASKS), (
                f"{line.subject} ran forward after the run began reverting\n{context}"
            )
            attempt = int(line.attrs["attempt"])
            assert attempt >= 1, context
            assert line.attrs["resumed"] == str(attempt > 1), f"{line.raw}: resumed must be attempt > 1\n{context}"
        elif line.verb == "revert-started":
            assert line.subject not in reverted, f"{line.subject} reverted again after that was committed\n{context}"

    counts = Counter((line.verb, line.subject) for line in lines)
    inside = kills_inside(run, lines)
    forward = [*worker.TASKS, *(worker.FAILURE_TASKS if run.fail else ())]
    for name in forward:
        again = inside[f"{name}.execute"]
        assert 1 <= counts["started", name] <= 1 + again, (
            f"{name} started {counts['started', name]} times with {again} kill(s) inside it\n{context}"
        )
        attempts = [int(line.attrs["attempt"]) for line in lines if line.verb == "started" and line.subject == name]
        assert attempts == sorted(set(attempts)), f"{name} attempts {attempts} do not increase\n{context}"
        if run.fail and name == worker.TASKS[-1]:
            assert counts["executed", name] == 0, context
        else:
            assert 1 <= counts["executed", name] <= 1 + again, context
    for name in worker.TASKS:
        again = inside[f"{name}.revert"]
        if run.fail:
            assert 1 <= counts["revert-started", name] <= 1 + again, (
                f"{name} revert began {counts['revert-started', name]} times with {again} kill(s) inside it\n{context}"
            )
            assert 1 <= counts["reverted", name] <= 1 + again, context
        else:
            assert counts["revert-started", name] == 0, context
    if run.fail:
        # Latest first: the order reverts began in (one begun again after a kill inside it counts once)
        # is the reverse of the order the tasks ran in.
        begun = [line.subject for line in lines if line.verb == "revert-started"]
        order = [name for i, name in enumerate(begun) if i == 0 or begun[i - 1] != name]
        assert order == list(reversed(worker.TASKS)), f"reverted in the order {order}\n{context}"
    if not run.fail:
        for name in worker.FAILURE_TASKS:
            assert counts["started", name] == 0, f"{name} ran in a run that succeeded\n{context}"


def check_single_kill(store: EngineStore, run: Run) -> None:
    """A run killed once at a known point: exactly what must have run, how often, and as which attempt."""
    check_run(store, run)
    assert len(run.kills) == 1, run.kills
    point = run.kills[0]
    assert point is not None
    lines = read_log(run.log)
    forward = [*worker.TASKS, *(worker.FAILURE_TASKS if run.fail else ())]

    def attempts(name: str) -> list[int]:
        return [int(line.attrs["attempt"]) for line in lines if line.verb == "started" and line.subject == name]

    def count(verb: str, name: str) -> int:
        return sum(1 for line in lines if line.verb == verb and line.subject == name)

    # The tasks the killed launch had checkpointed as running when it died (in the middle of one,
    # or right after the transaction that recorded one as started, maybe with its predecessor's end).
    checkpoints = [line for line in lines if line.launch == 1 and line.verb == "checkpoint"]
    running = {label.split("=")[0] for label in _labels(checkpoints[-1]) if label.endswith("=running")}
    got: dict[str, Any] = {}
    want: dict[str, Any] = {}
    for name in forward:
        if point in (f"mid:{name}.execute.before", f"mid:{name}.execute.after"):
            want[f"{name} attempts"] = [1, 2]  # killed inside: run again, as attempt 2, resumed
        elif point.startswith("after:") and name in running:
            want[f"{name} attempts"] = [2]  # killed before it began: the lost attempt still counts
        else:
            want[f"{name} attempts"] = [1]
        got[f"{name} attempts"] = attempts(name)
        failing = run.fail and name == worker.TASKS[-1]
        want[f"{name} effects"] = 0 if failing else 1 + (point == f"mid:{name}.execute.after")
        got[f"{name} effects"] = count("executed", name)
    if run.fail:
        for name in worker.TASKS:
            want[f"{name} reverts begun"] = 1 + point.startswith(f"mid:{name}.revert.")
            want[f"{name} reverts done"] = 1 + (point == f"mid:{name}.revert.after")
            got[f"{name} reverts begun"] = count("revert-started", name)
            got[f"{name} reverts done"] = count("reverted", name)
    wrong = {k: f"got {got[k]}, want {v}" for k, v in want.items() if got[k] != v}
    assert not wrong, f"killed at {point}: {wrong}\n{run.describe()}"


# --- fixtures ---------------------------------------------------------------------------------------


def _migrated(url: str) -> EngineStore:
    store = open_store(url, [image], check_schema=False)
    store.migrate()
    return store


@pytest.fixture(scope="module")
def fork_launcher() -> ForkLauncher:
    return ForkLauncher()


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[EngineStore]:
    store = _migrated(sqlite_url)
    yield store
    store.close()


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[EngineStore]:
    store = _migrated(pg_url)
    yield store
    store.close()


@pytest.fixture
def any_store(store_url: str) -> Iterator[EngineStore]:
    store = _migrated(store_url)
    yield store
    store.close()


# --- the tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "fail"])
def test_kill_points_cover_every_checkpoint_and_task(
    fork_launcher: ForkLauncher, sqlite_store: EngineStore, sqlite_url: str, tmp_path: Path, fail: bool
) -> None:
    """A run without kills passes exactly the points the other tests kill at: none is missed."""
    driver = Driver(fork_launcher, sqlite_url, tmp_path)
    run = driver.drive(sqlite_store, fail, [], "reference")
    check_run(sqlite_store, run)
    lines = read_log(run.log)
    passed = [line.subject for line in lines if line.verb == "point"]
    assert sorted(passed) == sorted(all_points(fail)), run.describe()
    for line in lines:
        if line.verb == "checkpoint":
            assert _labels(line) & {p.removeprefix("after:") for p in worker.boundary_points(fail)}, line.raw


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "fail"])
def test_sqlite_kill_at_every_boundary_and_middle(
    fork_launcher: ForkLauncher, sqlite_store: EngineStore, sqlite_url: str, tmp_path: Path, fail: bool
) -> None:
    driver = Driver(fork_launcher, sqlite_url, tmp_path)
    cases = [(fail, [point]) for point in all_points(fail)]
    assert drive_all(driver, sqlite_store, cases, check_single_kill) == len(all_points(fail))


@pytest.mark.postgres
@pytest.mark.parametrize("fail", [False, True], ids=["ok", "fail"])
def test_postgres_kill_at_every_other_point(
    fork_launcher: ForkLauncher, pg_store: EngineStore, pg_url: str, tmp_path: Path, fail: bool
) -> None:
    driver = Driver(fork_launcher, pg_url, tmp_path)
    points = all_points(fail)
    # Every other point, starting at a different end for each outcome so both halves get covered.
    chosen = points[0 if fail else 1 :: 2]
    drive_all(driver, pg_store, [(fail, [point]) for point in chosen], check_single_kill)


def test_cold_processes_killed_forward_and_while_reverting(
    any_store: EngineStore, store_url: str, tmp_path: Path
) -> None:
    """The same through freshly started interpreters, killed twice in one run that fails."""
    driver = Driver(ScriptLauncher(), store_url, tmp_path)
    points = ["mid:reserve.execute.after", "mid:commit_quota.revert.after"]
    run = driver.drive(any_store, True, points, "cold")
    check_run(any_store, run)


# --- soak: the exhaustive versions --------------------------------------------------------------------


@pytest.mark.soak
@only_when_soaking
@pytest.mark.timeout(3600)
@pytest.mark.postgres
@pytest.mark.parametrize("fail", [False, True], ids=["ok", "fail"])
def test_soak_postgres_kill_at_every_point(
    fork_launcher: ForkLauncher, pg_store: EngineStore, pg_url: str, tmp_path: Path, fail: bool
) -> None:
    driver = Driver(fork_launcher, pg_url, tmp_path)
    drive_all(driver, pg_store, [(fail, [point]) for point in all_points(fail)], check_single_kill)


@pytest.mark.soak
@only_when_soaking
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("fail", [False, True], ids=["ok", "fail"])
def test_soak_one_run_killed_at_every_point_in_turn(
    fork_launcher: ForkLauncher, any_store: EngineStore, store_url: str, tmp_path: Path, fail: bool
) -> None:
    driver = Driver(fork_launcher, store_url, tmp_path)
    reference = driver.drive(any_store, fail, [], "reference")
    lines = read_log(reference.log)
    assert sorted(line.subject for line in lines if line.verb == "point") == sorted(all_points(fail))
    # In the order a run passes them, one boundary per checkpoint transaction: after a kill, the
    # restarted run does not write the same transaction again (it may not even have to write one).
    in_order: list[str] = []
    first_of_commit = False
    for line in lines:
        if line.verb == "checkpoint":
            first_of_commit = True
        elif line.verb == "point" and (line.subject.startswith("mid:") or first_of_commit):
            in_order.append(line.subject)
            first_of_commit = first_of_commit and line.subject.startswith("mid:")
    drive_all(driver, any_store, [(fail, in_order)], check_run)


@pytest.mark.soak
@only_when_soaking
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("fail", [False, True], ids=["ok", "fail"])
def test_soak_killed_twice_at_the_same_point(
    fork_launcher: ForkLauncher, any_store: EngineStore, store_url: str, tmp_path: Path, fail: bool
) -> None:
    driver = Driver(fork_launcher, store_url, tmp_path)
    # Only the points a resumed launch passes again: inside tasks, and the records of a task start.
    again = [p for p in all_points(fail) if p.startswith("mid:") or p.endswith("=running")]
    drive_all(driver, any_store, [(fail, [point, point]) for point in again], check_run)


@pytest.mark.soak
@only_when_soaking
@pytest.mark.timeout(3600)
def test_soak_kills_at_random_moments(
    fork_launcher: ForkLauncher, any_store: EngineStore, store_url: str, tmp_path: Path
) -> None:
    """SIGKILL at random times: inside checkpoint transactions and task effects, not only at points."""
    driver = Driver(fork_launcher, store_url, tmp_path)
    seed = int(os.environ.get("TENURE_SOAK_SEED", "5005"))
    started = time.monotonic()
    reference = driver.drive(any_store, True, [], "timing")
    # Several runs at once take longer than the one measured alone: aim at all of a run's length.
    duration = 1.5 * max(time.monotonic() - started, 0.05)
    problems: list[str] = []
    kills: list[int] = []

    def one(n: int) -> None:
        rng = random.Random(seed * 100_003 + n)
        fail = rng.random() < 0.5
        run = driver.new_run(any_store, fail, f"random-{n}")
        for _ in range(rng.randint(1, 4)):
            if not driver.kill_after(run, rng.uniform(0.0, duration)):
                break
        if run.exit_codes[-1] != worker.EXIT_DONE:
            driver.finish(run)
        kills.append(len(run.kills))
        try:
            check_run(any_store, run)
        except AssertionError as exc:
            problems.append(str(exc))

    check_run(any_store, reference)
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(one, range(int(os.environ.get("TENURE_SOAK_RUNS", "200")))))
    assert not problems, f"{len(problems)} of {len(kills)} runs broke an invariant:\n\n" + "\n\n".join(problems)
    assert sum(kills) >= len(kills) // 2, f"only {sum(kills)} kills landed in {len(kills)} runs: aim better"
