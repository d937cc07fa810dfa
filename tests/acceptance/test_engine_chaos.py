"""Chaos tests of the engine: worker processes on PostgreSQL, killed, stalled, cut off and lied to.

Every worker is a real process (``engine_worker.py``) running the ``transfer`` kind's steps with a
provisioner plug-in that records each effect it applies in the table ``chaos_effects``, naming the
resource, definition, action, the version the step was claimed at, and the worker. The test process
creates transfers, fires ``complete`` when one reaches ``started`` (a client's event), and looks
at everything from the outside:

(a) ``test_sigkill_workers_at_random``: workers are SIGKILLed while many lifecycles run and replaced
    by fresh ones. Nothing is lost (every transfer ends ``deprovisioned`` by the one happy path),
    nothing is stuck (no claim left, progress never stalls), every journal is one unbroken chain
    (versions 1..N, each entry starting where the one before ended, the last one at the row's version
    and state) that replays to its row, the worker that committed a step's transition is one that
    applied its effect (and the outcome it committed carries that very effect), and no step was
    applied by two workers that both lived unless the one that did not commit lost that very claim.
    A killed worker's effect without a transition is allowed: that is at-least-once.
(b) ``test_stalled_worker_late_write_is_refused``: a worker is SIGSTOPped inside a step (held there
    by a gate the test opens later), past its 1 s lease; another takes the resource over and
    commits; SIGCONT, gate open: the stalled worker's late write is refused (its ClaimLost is
    counted in its stats file) and the transfer ends correctly.
(c) ``test_postgres_restarts_mid_run``: a private PostgreSQL cluster is crashed (``-m immediate``),
    kept down for a moment and started, then restarted (``-m fast``) while lifecycles run. The
    workers are never touched: they must recover by themselves (the LISTEN relay reconnects, the
    loops back off) and every lifecycle finishes. Where no private cluster can be started, every
    connection to the test database is terminated instead (the test says so in its output).
(d) ``test_lost_callbacks_*``: an async provisioner that never calls back: the deadline fires and
    asks again, and after the step's ``max_attempts`` the transfer fails through
    ``provision_failed`` and ``terminating`` to ``deprovisioned`` (or to ``deprovisioning_failed``
    when the deprovisioner never answers either). Callbacks delivered by the test through
    ``store.deliver``: duplicates are idempotent, late ones are refused as superseded. A definition
    given up on after it was asked for is still deprovisioned (a regression test).
(e) ``test_retry_*``: a provisioner that always fails (retryably): the state's retry limit is
    honoured exactly, the backoff grows as scheduled (``@retry`` entries' ``next_attempt_at - at``)
    and is respected, and the failure is on the resource and in the journal (the reason of the
    final failure event included: a regression test).

Assertions are about outcomes, never about how long something took; waits poll with generous
timeouts. ``TENURE_SOAK=1`` adds long versions of (a) and (c) (thousands of lifecycles).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest
from psycopg import sql

from tenure import Conflict, Delivery, JournalEntry, Kind, Receipt, Resource, TransitionNotAllowed, open_store
from tenure.errors import StoreUnavailable
from tenure.machine import Backoff
from tenure.store.inbox import token_hash
from tenure.store.protocol import EngineStore
from tests.acceptance import engine_worker as ew
from tests.acceptance.pg_cluster import ClusterUnavailable, PrivateCluster
from tests.store_support import all_journal, replay

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

SOAK = os.environ.get("TENURE_SOAK", "").strip() == "1"
only_when_soaking = pytest.mark.skipif(not SOAK, reason="long soak test: set TENURE_SOAK=1 to run it")

#: The worker processes run ``engine_worker`` as a module of the ``tests`` package, from the project's root.
WORKER_MODULE = ew.__name__
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: The longest the test waits for any one thing to happen (CI machines are slow).
PATIENCE = 120.0
#: A run whose journal has not grown for this long is stuck.
STALL = 60.0
FINAL = ("deprovisioned", "deprovisioning_failed")
#: The journal of a transfer that went the happy way (the test fires ``complete``).
HAPPY = [
    "@create",
    "provision",
    "provisioned",
    "request",
    "requested",
    "start",
    "started",
    "complete",
    "completed",
    "deprovision",
    "deprovisioned",
]
#: The state a step of each provisioner action runs in, and the event that says it is done.
ACTION_STATE = {"provision": "provisioning", "start": "starting", "deprovision": "deprovisioning"}
DONE_EVENT = {"provision": "provisioned", "start": "started", "deprovision": "deprovisioned"}


# --- worker processes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerOptions:
    lease: float = 2.0
    concurrency: int = 4
    poll: float = 1.0
    deadline: float = 10.0
    max_attempts: int = 5
    retry_max: int = 8
    retry_base: float = 0.05
    retry_factor: float = 2.0
    retry_cap: float = 2.0
    retry_jitter: float = 0.5

    def argv(self) -> list[str]:
        return [
            f"--lease={self.lease}",
            f"--concurrency={self.concurrency}",
            f"--poll={self.poll}",
            f"--deadline={self.deadline}",
            f"--max-attempts={self.max_attempts}",
            f"--retry-max={self.retry_max}",
            f"--retry-base={self.retry_base}",
            f"--retry-factor={self.retry_factor}",
            f"--retry-cap={self.retry_cap}",
            f"--retry-jitter={self.retry_jitter}",
        ]

    def backoff(self) -> Backoff:
        return Backoff(
            max_attempts=self.retry_max,
            base=timedelta(seconds=self.retry_base),
            factor=self.retry_factor,
            cap=timedelta(seconds=self.retry_cap),
            jitter=self.retry_jitter,
        )

    def kind(self) -> Kind:
        return ew.chaos_kind(deadline=self.deadline, retry=self.backoff())


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    stats_path: Path
    err_path: Path
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def started(self) -> bool:
        """Ready (its first stats are written), or dead."""
        return self.report() is not None or not self.alive()

    def report(self) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = json.loads(self.stats_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return found

    def stat(self, key: str) -> int:
        report = self.report() or {}
        return int(report.get("stats", {}).get(key, 0))

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            text = self.err_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(f"      {line}" for line in text.splitlines()[-lines:])


class Fleet:
    """The worker processes of one test; :meth:`close` kills whatever still runs, whatever happened."""

    def __init__(self, url: str, tmp: Path, options: WorkerOptions) -> None:
        self.url = url
        self.tmp = tmp
        self.options = options
        self.procs: list[Proc] = []

    def start(self) -> Proc:
        name = f"w{len(self.procs)}"
        sep = "&" if "?" in self.url else "?"
        url = f"{self.url}{sep}application_name={name}"  # lets the test find its sessions
        stats = self.tmp / f"{name}.stats.json"
        err = self.tmp / f"{name}.stderr"
        with open(err, "wb") as stderr:
            popen = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, url, "--name", name, "--stats", str(stats), *self.options.argv()],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=PROJECT_ROOT,
            )
        proc = Proc(name, popen, stats, err)
        self.procs.append(proc)
        return proc

    def named(self, name: str) -> Proc:
        (proc,) = [p for p in self.procs if p.name == name]
        return proc

    def live(self) -> list[Proc]:
        return [p for p in self.procs if not p.killed and p.alive()]

    def ready(self) -> list[Proc]:
        """The live workers that have installed their signal handlers and opened their store."""
        return [p for p in self.live() if p.report() is not None]

    def wait_ready(self) -> list[Proc]:
        """Wait until every live worker is ready (a worker that died starting up fails the test)."""
        for p in self.live():
            wait_for(f"{p.name} to start", p.started, fleet=self)
            assert p.alive(), f"{p.name} died starting up (exit {p.popen.returncode})\n{self.describe()}"
        return self.live()

    @property
    def killed(self) -> set[str]:
        return {p.name for p in self.procs if p.killed}

    def kill(self, proc: Proc) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait(PATIENCE)
        proc.killed = True

    def shutdown(self) -> dict[str, int | None]:
        """SIGTERM every live worker and wait for it to drain; their exit codes (None: had to be killed)."""
        live = [p for p in self.procs if p.alive()]
        for p in live:  # one still starting up would die of the SIGTERM instead of stopping
            wait_for(f"{p.name} to start", p.started)
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
                os.kill(p.pid, signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for p in live:
            try:
                codes[p.name] = p.popen.wait(PATIENCE)
            except subprocess.TimeoutExpired:
                self.kill(p)
                codes[p.name] = None
        return codes

    def close(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(30)

    def reports(self) -> dict[str, dict[str, Any]]:
        """The last stats of every worker (final for those that stopped, the last dump of the killed)."""
        return {p.name: (p.report() or {}).get("stats", {}) for p in self.procs}

    def troubled_claims(self) -> dict[str, dict[str, set[tuple[str, int]]]]:
        """Per worker, its claims whose outcome it could not write, by why (``lost``, ``unwritten``)."""
        return {
            p.name: {
                why: {(str(rid), int(version)) for rid, version in claims}
                for why, claims in ((p.report() or {}).get("claims") or {}).items()
            }
            for p in self.procs
        }

    def total(self, key: str) -> int:
        return sum(int(s.get(key, 0)) for s in self.reports().values())

    def describe(self) -> str:
        out = []
        for p in self.procs:
            state = "killed" if p.killed else ("running" if p.alive() else f"exited {p.popen.returncode}")
            out.append(f"  {p.name} pid={p.pid} {state} stats={(p.report() or {}).get('stats')}\n{p.stderr_tail()}")
        return "\n".join(out)


@pytest.fixture
def fleets(tmp_path: Path) -> Iterator[Callable[[str, WorkerOptions], Fleet]]:
    made: list[Fleet] = []

    def make(url: str, options: WorkerOptions) -> Fleet:
        fleet = Fleet(url, tmp_path, options)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()


# --- looking at the database --------------------------------------------------------------------------


class Db:
    """A plain connection for the test's own queries; reconnects after the server went away."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def rows(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        for attempt in (1, 2):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=3)
                return self._conn.execute(query.encode(), params).fetchall()
            except psycopg.OperationalError:
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def value(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        return self.rows(query, params)[0][0]

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


@dataclass(frozen=True)
class Effect:
    seq: int
    resource_id: str
    definition_id: str
    action: str
    version: int
    attempt: int
    worker: str
    pid: int
    token: str
    answer: str
    at: datetime


def effects(db: Db, resource_id: str | None = None) -> list[Effect]:
    query = (
        "SELECT seq, resource_id, definition_id, action, version, attempt, worker, pid, token, answer, at "
        "FROM chaos_effects WHERE %(rid)s::text IS NULL OR resource_id = %(rid)s ORDER BY seq"
    )
    return [Effect(*row) for row in db.rows(query, {"rid": resource_id})]


def prepare(url: str, kind: Kind) -> EngineStore:
    store = open_store(url, [kind], check_schema=False)
    store.migrate()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(ew.EFFECTS_DDL.encode())
        conn.execute(ew.GATES_DDL.encode())
    return store


def wait_for(what: str, probe: Callable[[], Any], *, fleet: Fleet | None = None, patience: float = PATIENCE) -> Any:
    """Poll ``probe`` until it returns something truthy (and return that); fail after ``patience``."""
    deadline = time.monotonic() + patience
    pause = 0.01
    while True:
        with contextlib.suppress(StoreUnavailable, psycopg.OperationalError):
            got = probe()
            if got:
                return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{fleet.describe() if fleet else ''}", pytrace=False)
        time.sleep(pause)
        pause = min(pause * 1.5, 0.1)


def transfer_spec(n: int, *, resources: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    defs = resources or [
        {"id": "d1", "type": ew.PLUGIN, "spec": {"pause": 0.03}},
        {"id": "d2", "type": ew.PLUGIN, "spec": {}},
    ]
    return {"asset": f"asset-{n}", "dataplane": ew.PLUGIN, "resources": [dict(d) for d in defs]}


def describe_resources(store: EngineStore, ids: Sequence[str], limit: int = 10) -> str:
    lines = []
    for rid in ids[:limit]:
        r = store.get(rid)
        lines.append(
            f"  {r.id} {r.state} v{r.version} attempts={r.attempts} claimed_by={r.claimed_by} "
            f"claim_expires_at={r.claim_expires_at} next_attempt_at={r.next_attempt_at} deadline={r.deadline} "
            f"error={r.error!r}"
        )
    return "\n".join(lines)


def complete_started(store: EngineStore) -> int:
    """Fire ``complete`` on every transfer that reached ``started`` (the client's part of the lifecycle)."""
    fired = 0
    for r in store.list(kind=ew.KIND_NAME, state="started", limit=1000).items:
        with contextlib.suppress(Conflict, TransitionNotAllowed):
            store.fire(r, "complete", actor="test")
            fired += 1
    return fired


def all_ended(store: EngineStore, ids: Iterable[str]) -> bool:
    """Complete the transfers that started; True once every one of ``ids`` is in a final state."""
    complete_started(store)
    return all(store.get(i).state in FINAL for i in ids)


# --- driving many lifecycles ----------------------------------------------------------------------------


def drive(
    store: EngineStore,
    db: Db,
    fleet: Fleet,
    *,
    total: int,
    in_flight: int,
    spec: Callable[[int], dict[str, Any]] = transfer_spec,
    on_progress: Callable[[float], None] = lambda _: None,
) -> list[str]:
    """Create ``total`` transfers (``in_flight`` at a time), complete them as they start, until all end.

    ``on_progress`` is called with the fraction of the expected journal written so far (kills and
    restarts hang on it, so they land at the same point of the run on a fast or a slow machine).
    Fails if the journal stops growing for :data:`STALL` seconds before every transfer ended.
    """
    ids: list[str] = []
    expected = total * len(HAPPY)
    written, moved_at = -1, time.monotonic()
    trouble: list[str] = []
    while True:
        try:
            ended = int(db.value("SELECT count(*) FROM resources WHERE state = ANY(%s)", [list(FINAL)]))
            while len(ids) - ended < in_flight and len(ids) < total:
                n = len(ids)
                # Keyed, so that a create whose answer was lost to a restart is not made twice.
                r = store.create(ew.KIND_NAME, spec(n), idempotency_key=f"transfer-{n}", actor="test")
                ids.append(r.id)
            complete_started(store)
            now_written = int(db.value("SELECT count(*) FROM journal"))
        except (StoreUnavailable, psycopg.OperationalError) as exc:
            trouble.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.1)
            now_written = written
            ended = -1
        if now_written != written:
            written, moved_at = now_written, time.monotonic()
        if ended == total:
            return ids
        if written >= 0:
            on_progress(min(1.0, written / expected))
        if time.monotonic() - moved_at > STALL:
            unfinished = [r.id for r in _all(store) if r.state not in FINAL]
            pytest.fail(
                f"stuck: the journal did not grow for {STALL:.0f}s with {len(unfinished)} transfers unfinished "
                f"({len(ids)} of {total} created; last errors here: {trouble[-3:]})\n"
                f"{describe_resources(store, unfinished)}\n{fleet.describe()}",
                pytrace=False,
            )
        time.sleep(0.05)


def _all(store: EngineStore) -> list[Resource]:
    out: list[Resource] = []
    after: str | None = None
    while True:
        page = store.list(kind=ew.KIND_NAME, after=after, limit=1000)
        out.extend(page.items)
        if page.next_after is None:
            return out
        after = page.next_after


def lenient_replay(kind: Kind, entries: Sequence[JournalEntry]) -> tuple[str, int]:
    """:func:`tests.store_support.replay`, also accepting ``@retry`` entries (a retry keeps the state)."""
    plain: list[JournalEntry] = []
    state = entries[0].to_state if entries else ""
    for number, entry in enumerate(entries, start=1):
        assert entry.version == number, f"{entry.resource_id}: journal version {entry.version} where {number} was due"
        if entry.event == "@retry":
            assert entry.from_state == entry.to_state == state, f"{entry.resource_id} v{number}: odd retry {entry}"
            continue
        plain.append(entry)
        state = entry.to_state
    # Replay the transitions alone, renumbered: the same checks as tests.store_support.replay.
    renumbered = [
        JournalEntry(e.seq, e.resource_id, i, e.event, e.from_state, e.to_state, e.actor, e.at, e.detail)
        for i, e in enumerate(plain, start=1)
    ]
    final, _ = replay(kind, renumbered)
    return final, len(entries)


@dataclass
class Findings:
    """What the checks saw: counts to report, and every broken invariant."""

    problems: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)


def check_journal_chains(db: Db, f: Findings) -> None:
    """Every resource's journal is one unbroken chain that ends at its row.

    Versions run 1..N without a gap; each entry starts in the state the one before it ended in; and
    the last entry is at the row's version and ends in the row's state.
    """
    gaps = db.rows(
        "SELECT resource_id, count(*), min(version), max(version) FROM journal GROUP BY resource_id "
        "HAVING min(version) <> 1 OR max(version) <> count(*)"
    )
    f.check(not gaps, f"journals whose versions are not 1..N (resource, entries, first, last): {gaps[:5]}")
    broken = db.rows(
        "SELECT resource_id, version, from_state, before FROM ("
        "  SELECT resource_id, version, from_state,"
        "         lag(to_state) OVER (PARTITION BY resource_id ORDER BY version) AS before"
        "  FROM journal) AS chained "
        "WHERE version > 1 AND from_state IS DISTINCT FROM before"
    )
    f.check(not broken, f"entries starting elsewhere than the one before ended: {broken[:5]}")
    apart = db.rows(
        "SELECT r.id, r.state, r.version, last.to_state, last.version FROM resources AS r "
        "LEFT JOIN LATERAL (SELECT to_state, version FROM journal WHERE resource_id = r.id "
        "                   ORDER BY version DESC LIMIT 1) AS last ON true "
        "WHERE last.version IS DISTINCT FROM r.version OR last.to_state IS DISTINCT FROM r.state"
    )
    f.check(not apart, f"rows that are not where their journal ends (id, state, version, last to, last v): {apart[:5]}")


def check_transfers(
    store: EngineStore,
    db: Db,
    kind: Kind,
    ids: Sequence[str],
    fleet: Fleet,
    *,
    happy: bool = True,
    retries_allowed: bool = False,
    excuses: Sequence[str] = ("lost",),
) -> Findings:
    """The invariants every transfer of a chaos run must show, however its workers were treated.

    A step applied again by a second worker is fine when the first was killed; when both lived, the
    one whose transition did not commit must have that very claim among its troubled ones (one of
    ``excuses``: the claim was lost; with the database going away, also: it could not write the
    outcome). Another claim of the same worker lost some other time excuses nothing.
    """
    f = Findings()
    killed = fleet.killed
    troubled = fleet.troubled_claims()
    workers = {p.name for p in fleet.procs}
    by_resource: dict[str, list[Effect]] = defaultdict(list)
    for e in effects(db):
        by_resource[e.resource_id].append(e)

    check_journal_chains(db, f)
    held = db.rows("SELECT id, claimed_by FROM resources WHERE claim_token IS NOT NULL")
    f.check(not held, f"claims left behind: {held[:5]}")
    unsettled = db.value("SELECT count(*) FROM inbox WHERE applied_at IS NULL")
    f.check(unsettled == 0, f"{unsettled} callbacks never settled")

    for rid in ids:
        row = store.get(rid)
        journal = all_journal(store, rid)
        where = f"transfer {rid}"
        try:
            replayed = lenient_replay(kind, journal) if retries_allowed else replay(kind, journal)
        except AssertionError as exc:
            f.problems.append(f"{where}: the journal does not replay: {exc}")
            continue
        f.check(replayed == (row.state, row.version), f"{where}: replays to {replayed}, row {row.state} v{row.version}")
        f.check(row.state in FINAL, f"{where} ended in {row.state!r}")
        if happy:
            events = [e.event for e in journal if e.event != "@retry"]
            f.check(events == HAPPY, f"{where}: not the happy path: {events}")
            f.check(row.data.get("ended") == "completed", f"{where}: ended {row.data.get('ended')!r}")
        f.counts["retries"] += sum(1 for e in journal if e.event == "@retry")
        f.check(row.next_attempt_at is None and row.deadline is None, f"{where}: a final row still scheduled: {row}")

        mine = by_resource.get(rid, [])
        groups: dict[tuple[str, str, int], list[Effect]] = defaultdict(list)
        for e in mine:
            groups[(e.definition_id, e.action, e.version)].append(e)
            # An effect is applied only by a step of the state the resource was in at that version.
            at = journal[e.version - 1] if 0 < e.version <= len(journal) else None
            f.check(
                at is not None and at.to_state == ACTION_STATE[e.action],
                f"{where}: {e.action} of {e.definition_id} applied by {e.worker} at v{e.version}, "
                f"where the resource was in {at.to_state if at else None!r}",
            )
        for (definition, action, version), applied in groups.items():
            f.counts["steps with effects"] += 1
            after = journal[version] if version < len(journal) else None  # the transition from `version`
            # In a work state only the claim holder writes (a step's outcome or its @retry).
            committer = after.actor if after is not None and after.actor in workers else None
            appliers = [e.worker for e in applied]
            if len(applied) > 1:
                f.counts["steps applied more than once"] += 1
            # A step's outcome carries what it applied. (A @retry may come from a worker whose own
            # recording failed, the database being away: it applied nothing, and says so by retrying.)
            if committer is not None and after is not None and after.event != "@retry":
                f.check(
                    committer in appliers,
                    f"{where}: {committer} committed {after.event if after else '?'} from v{version} "
                    f"without applying {action} of {definition} (appliers {appliers})",
                )
            orphans = [w for w in appliers if w != committer]
            f.counts["effects whose transition never committed"] += len(orphans)
            f.counts["of those, by killed workers"] += sum(1 for w in orphans if w in killed)
            # Two workers that both lived applied the same step: the one that did not commit must
            # have lost its claim (or, with the database away, failed to write its outcome).
            live_orphans = [w for w in orphans if w not in killed]
            for w in live_orphans:
                own = troubled.get(w, {})
                f.check(
                    any((rid, version) in own.get(excuse, set()) for excuse in excuses),
                    f"{where}: {action} of {definition} at v{version} applied by live workers {appliers} "
                    f"(committed by {committer}), and {w} neither lost that claim nor failed to write its "
                    f"outcome (excused: {list(excuses)})",
                )
            f.counts["effects by live workers that did not commit"] += len(live_orphans)

        # Every effect the row's data keeps came with the transition its own worker committed from the
        # version it was applied at (a step's outcome, or a @retry carrying the definitions done so far).
        for action in ACTION_STATE:
            for definition, sub in (row.data.get(action) or {}).items():
                result = (sub or {}).get("data") or {}
                if "effect" not in result:
                    continue
                effect = next((e for e in mine if e.seq == result["effect"]), None)
                committed = journal[effect.version] if effect is not None and effect.version < len(journal) else None
                f.check(
                    effect is not None and committed is not None and committed.actor == effect.worker,
                    f"{where}: the data keeps effect {result['effect']} ({effect}) of {action} {definition}, "
                    f"but the transition from its version is {committed}",
                )
                f.check(result.get("by") == (effect.worker if effect else None), f"{where}: {result} vs {effect}")
    return f


def assert_clean(findings: Findings, fleet: Fleet, ids: Sequence[str]) -> None:
    if findings.problems:
        shown = "\n".join(f"  - {p}" for p in findings.problems[:40])
        more = f"\n  ... and {len(findings.problems) - 40} more" if len(findings.problems) > 40 else ""
        pytest.fail(
            f"{len(findings.problems)} broken invariant(s) over {len(ids)} transfers:\n{shown}{more}\n"
            f"counts: {dict(findings.counts)}\n{fleet.describe()}",
            pytrace=False,
        )


def shut_down_cleanly(fleet: Fleet) -> None:
    codes = fleet.shutdown()
    bad = {name: code for name, code in codes.items() if code != ew.EXIT_CLEAN}
    assert not bad, f"workers did not stop cleanly on SIGTERM: {bad}\n{fleet.describe()}"
    for name in codes:
        report = fleet.named(name).report()
        assert report is not None, f"{name} wrote no stats\n{fleet.describe()}"
        assert report["final"], f"{name} wrote no final stats\n{fleet.describe()}"


# --- (a) SIGKILL at random ------------------------------------------------------------------------------


def run_kills(
    pg_url: str,
    fleets: Callable[[str, WorkerOptions], Fleet],
    *,
    total: int,
    workers: int,
    kills: int,
    seed: int,
    concurrency: int = 4,
) -> Fleet:
    options = WorkerOptions(lease=2.0, concurrency=concurrency)
    kind = options.kind()
    store = prepare(pg_url, kind)
    db = Db(pg_url)
    fleet = fleets(pg_url, options)
    rng = random.Random(seed)
    try:
        for _ in range(workers):
            fleet.start()
        fleet.wait_ready()
        # Kill at evenly spread points of the run (as fractions of the journal written), each at a
        # random moment a little after its point, one or (now and then) two workers at once.
        points = sorted(rng.uniform(0.05 + 0.8 * k / kills, 0.05 + 0.8 * (k + 1) / kills) for k in range(kills))
        landed: list[str] = []

        def on_progress(fraction: float) -> None:
            while points and fraction >= points[0]:
                points.pop(0)
                time.sleep(rng.uniform(0, 0.3))
                ready = fleet.ready() or fleet.wait_ready()
                victims = rng.sample(ready, 2 if len(ready) > 2 and rng.random() < 0.2 else 1)
                for victim in victims:
                    fleet.kill(victim)
                    landed.append(f"{victim.name}@{fraction:.2f}")
                    fleet.start()  # a fresh worker takes the place of the dead one

        ids = drive(store, db, fleet, total=total, in_flight=max(40, total // 4), on_progress=on_progress)
        live = fleet.live()
        shut_down_cleanly(fleet)
        findings = check_transfers(store, db, kind, ids, fleet)
        assert_clean(findings, fleet, ids)
        assert len(landed) >= kills, f"only {len(landed)} of {kills} kills landed"
        # A worker killed while holding claims leaves them to be taken over once their lease ran out.
        takeovers = fleet.total("takeovers")
        assert takeovers >= 1, f"no claim was ever taken over after {len(landed)} kills\n{fleet.describe()}"
        print(
            f"\n{len(ids)} transfers, killed {landed}, survivors {[p.name for p in live]}; "
            f"takeovers {takeovers}, claims lost {fleet.total('claims_lost')}; {dict(findings.counts)}"
        )
        return fleet
    finally:
        fleet.close()
        db.close()
        store.close()


def test_sigkill_workers_at_random(pg_url: str, fleets: Callable[[str, WorkerOptions], Fleet]) -> None:
    run_kills(pg_url, fleets, total=200, workers=3, kills=4, seed=int(os.environ.get("TENURE_CHAOS_SEED", "4242")))


def test_sigkill_workers_in_the_middle_of_batched_commits(
    pg_url: str, fleets: Callable[[str, WorkerOptions], Fleet]
) -> None:
    """Many steps in flight per worker, so that their writes share commits: kills land mid-batch."""
    fleet = run_kills(pg_url, fleets, total=240, workers=2, kills=4, seed=77, concurrency=24)
    transactions, units = fleet.total("group_transactions"), fleet.total("group_units")
    assert units > transactions, f"no commit ever carried two writes ({units} writes in {transactions} commits)"


@pytest.mark.soak
@only_when_soaking
@pytest.mark.timeout(3600)
def test_soak_sigkill_workers_at_random(pg_url: str, fleets: Callable[[str, WorkerOptions], Fleet]) -> None:
    total = int(os.environ.get("TENURE_SOAK_LIFECYCLES", "3000"))
    run_kills(pg_url, fleets, total=total, workers=3, kills=max(10, total // 100), seed=int(time.time()))


# --- (b) SIGSTOP past the lease ---------------------------------------------------------------------------


def _process_state(pid: int) -> str:
    """The kernel's one-letter state of a process (``T``: stopped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[0]


def stop_outside_transactions(proc: Proc, db: Db) -> None:
    """SIGSTOP ``proc`` at a moment when none of its sessions is inside a transaction.

    A process stopped between BEGIN and COMMIT keeps its row locks, and the claim query skips locked
    rows: nobody could take the resource over until it is continued. A stall can land there in real
    life too, but this test is about a stall in the middle of a step.
    """
    for _ in range(200):
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(f"{proc.name} to stop", lambda: _process_state(proc.pid) == "T", patience=10)
        busy = db.value(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state <> 'idle'", [proc.name]
        )
        if busy == 0:
            return
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.01)
    pytest.fail(f"{proc.name} was inside a transaction every time it was stopped")


def test_stalled_worker_late_write_is_refused(pg_url: str, fleets: Callable[[str, WorkerOptions], Fleet]) -> None:
    options = WorkerOptions(lease=1.0, concurrency=2, poll=0.5)
    kind = options.kind()
    store = prepare(pg_url, kind)
    db = Db(pg_url)
    fleet = fleets(pg_url, options)
    try:
        first, second = fleet.start(), fleet.start()
        # The first worker to provision this one applies its effect, then waits at the gate.
        gated_defs = [{"id": "d1", "type": ew.PLUGIN, "spec": {"gate": "stall"}}]
        gated = store.create(ew.KIND_NAME, transfer_spec(0, resources=gated_defs), actor="test")
        others = [store.create(ew.KIND_NAME, transfer_spec(n), actor="test") for n in range(1, 9)]
        ids = [gated.id, *(r.id for r in others)]

        begun: Effect = wait_for(
            "a worker to begin the gated provisioning",
            lambda: next((e for e in effects(db, gated.id) if e.action == "provision"), None),
            fleet=fleet,
        )
        stalled = fleet.named(begun.worker)
        taker = second if stalled is first else first
        version = begun.version
        stop_outside_transactions(stalled, db)
        stopped = True
        try:
            # Past its lease, the other worker takes the transfer over and commits the step.
            after: JournalEntry = wait_for(
                "the other worker to take the gated transfer over and commit",
                lambda: next((e for e in all_journal(store, gated.id) if e.version == version + 1), None),
                fleet=fleet,
            )
            assert _process_state(stalled.pid) == "T", "the stalled worker must still be stopped"
        finally:
            os.kill(stalled.pid, signal.SIGCONT)
            stopped = False
        assert not stopped
        assert after.event == "provisioned", after
        assert after.actor == taker.name, f"committed by {after.actor}, expected the taker {taker.name}"
        applied = sorted(e.worker for e in effects(db, gated.id) if e.action == "provision" and e.version == version)
        assert applied == sorted([stalled.name, taker.name]), applied

        # Continued and let through the gate, the stalled worker tries to write: refused, and counted.
        db.rows("INSERT INTO chaos_gates (name) VALUES ('stall') RETURNING name")
        wait_for(f"{stalled.name} to count its lost claim", lambda: stalled.stat("claims_lost") >= 1, fleet=fleet)

        wait_for("every transfer to end", lambda: all_ended(store, ids), fleet=fleet)
        shut_down_cleanly(fleet)
        reports = fleet.reports()
        assert reports[stalled.name]["claims_lost"] >= 1, reports
        assert (gated.id, version) in fleet.troubled_claims()[stalled.name]["lost"], "the very claim it held"
        assert reports[taker.name]["takeovers"] >= 1, reports

        journal = all_journal(store, gated.id)
        assert [e.event for e in journal] == HAPPY
        # The one transition out of the version the stalled worker held is the taker's: its late write
        # never got in (and, resumed, it went on working on other steps, which is fine).
        assert [(e.version, e.actor) for e in journal if e.from_state == "provisioning"] == [(version + 1, taker.name)]
        row = store.get(gated.id)
        assert row.data["provision"]["d1"]["data"]["by"] == taker.name, row.data
        findings = check_transfers(store, db, kind, ids, fleet)
        assert_clean(findings, fleet, ids)
    finally:
        fleet.close()
        db.close()
        store.close()


# --- (c) PostgreSQL restarts --------------------------------------------------------------------------------


class Disruptor(Protocol):
    how: str

    def outage(self, fleet: Fleet) -> None: ...

    def restart(self) -> None: ...


class ClusterDisruptor:
    """Crash and restart a private cluster: nobody else uses it."""

    how = "private cluster: stop -m immediate / start, then restart -m fast"

    def __init__(self, cluster: PrivateCluster) -> None:
        self.cluster = cluster

    def outage(self, fleet: Fleet) -> None:
        errors_before = fleet.total("store_errors")
        self.cluster.stop("immediate")
        try:
            # Keep it down until some worker noticed (or a while: an idle fleet may not notice).
            deadline = time.monotonic() + 5
            while fleet.total("store_errors") == errors_before and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
        finally:
            self.cluster.start()

    def restart(self) -> None:
        self.cluster.restart("fast")


class TerminateDisruptor:
    """The fallback: terminate every session on the test database, again and again for a moment."""

    how = "fallback: pg_terminate_backend of every connection to the test database"

    def __init__(self, admin_url: str, dbname: str) -> None:
        self.admin_url = admin_url
        self.dbname = dbname

    def _terminate(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [self.dbname],
            )

    def outage(self, fleet: Fleet) -> None:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            self._terminate()
            time.sleep(0.1)

    def restart(self) -> None:
        self._terminate()


@pytest.fixture
def restartable(request: pytest.FixtureRequest) -> Iterator[tuple[str, Disruptor]]:
    """A database the test may take away: on a private cluster if one can be started here."""
    try:
        cluster = PrivateCluster.create()
    except (ClusterUnavailable, OSError, subprocess.SubprocessError) as exc:
        url = str(request.getfixturevalue("pg_url"))
        admin = str(request.getfixturevalue("pg_admin_url"))
        print(f"\nno private PostgreSQL cluster ({exc}); falling back to pg_terminate_backend")
        yield url, TerminateDisruptor(admin, url.rsplit("/", 1)[1])
        return
    try:
        url = cluster.create_database(f"chaos_{secrets.token_hex(4)}")
        yield url, ClusterDisruptor(cluster)
    finally:
        cluster.destroy()


def run_restarts(
    url: str, disruptor: Disruptor, fleets: Callable[[str, WorkerOptions], Fleet], *, total: int, disruptions: int
) -> None:
    # Retries may pile up while the database is away; give them room, so every transfer completes.
    options = WorkerOptions(lease=2.0, concurrency=4, retry_max=50, retry_cap=1.0)
    kind = options.kind()
    store = prepare(url, kind)
    db = Db(url)
    fleet = fleets(url, options)
    try:
        for _ in range(3):
            fleet.start()
        points = [0.15 + 0.7 * k / disruptions for k in range(disruptions)]
        done: list[str] = []

        def connects(p: Proc) -> int:
            return int(((p.report() or {}).get("listener") or {}).get("connects", 0))

        # Every worker up and listening before anything is taken away.
        for p in fleet.wait_ready():
            wait_for(f"{p.name}'s listener to connect", partial(lambda p: connects(p) >= 1, p), fleet=fleet)

        def on_progress(fraction: float) -> None:
            while points and fraction >= points[0]:
                points.pop(0)
                before = {p.name: connects(p) for p in fleet.procs}
                if len(done) % 2 == 0:
                    disruptor.outage(fleet)
                    done.append("outage")
                else:
                    disruptor.restart()
                    done.append("restart")
                # Every worker's LISTEN relay reconnects by itself (before the next disruption).
                for p in fleet.procs:
                    wait_for(
                        f"{p.name}'s listener to reconnect after {done[-1]} {len(done)}",
                        partial(lambda p, n: connects(p) > n, p, before[p.name]),
                        fleet=fleet,
                    )

        ids = drive(store, db, fleet, total=total, in_flight=max(40, total // 3), on_progress=on_progress)
        assert len(done) == disruptions, done
        # Nobody restarted the workers: each one came through by itself.
        assert [p.name for p in fleet.live()] == [p.name for p in fleet.procs], fleet.describe()
        shut_down_cleanly(fleet)
        findings = check_transfers(store, db, kind, ids, fleet, retries_allowed=True, excuses=("lost", "unwritten"))
        assert_clean(findings, fleet, ids)
        reports = [p.report() or {} for p in fleet.procs]
        # The LISTEN relay of every worker reconnected after each disruption.
        for p, report in zip(fleet.procs, reports, strict=True):
            listener = report.get("listener") or {}
            assert int(listener.get("connects", 0)) >= 1 + disruptions, f"{p.name}: {listener}\n{fleet.describe()}"
        errors = fleet.total("store_errors")
        assert errors >= 1, f"no worker ever saw the database go away\n{fleet.describe()}"
        print(
            f"\n{disruptor.how}: {done}; {len(ids)} transfers; store errors {errors}, "
            f"claims lost {fleet.total('claims_lost')}, takeovers {fleet.total('takeovers')}; "
            f"listeners {[r.get('listener') for r in reports]}; {dict(findings.counts)}"
        )
    finally:
        fleet.close()
        db.close()
        store.close()


def test_postgres_restarts_mid_run(
    restartable: tuple[str, Disruptor], fleets: Callable[[str, WorkerOptions], Fleet]
) -> None:
    url, disruptor = restartable
    run_restarts(url, disruptor, fleets, total=120, disruptions=2)


@pytest.mark.soak
@only_when_soaking
@pytest.mark.timeout(3600)
def test_soak_postgres_restarts_mid_run(
    restartable: tuple[str, Disruptor], fleets: Callable[[str, WorkerOptions], Fleet]
) -> None:
    url, disruptor = restartable
    total = int(os.environ.get("TENURE_SOAK_LIFECYCLES", "3000")) // 2
    run_restarts(url, disruptor, fleets, total=total, disruptions=8)


# --- (d) and (e): runs shared by the tests that read them -----------------------------------------------


@dataclass
class Scenario:
    """One fleet run over a few labelled transfers, kept for the tests of this module that read it."""

    store: EngineStore
    db: Db
    kind: Kind
    fleet: Fleet
    ids: dict[str, str] = field(default_factory=dict)
    receipts: dict[str, list[Receipt]] = field(default_factory=dict)
    #: What went wrong while driving the run (every test reading the run fails with it).
    problems: list[str] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    #: The label of the receipts of the callbacks that were applied.
    answered: str = ""

    def create(self, label: str, defs: Sequence[Mapping[str, Any]]) -> Resource:
        r = self.store.create(ew.KIND_NAME, transfer_spec(len(self.ids), resources=defs), actor="test")
        self.ids[label] = r.id
        return r

    def row(self, label: str) -> Resource:
        return self.store.get(self.ids[label])

    def journal(self, label: str) -> list[JournalEntry]:
        return all_journal(self.store, self.ids[label])

    def events(self, label: str) -> list[str]:
        return [e.event for e in self.journal(label)]

    def effects(self, label: str, definition: str, action: str) -> list[Effect]:
        return [e for e in effects(self.db, self.ids[label]) if e.definition_id == definition and e.action == action]

    def sound(self) -> None:
        """Fail (every test that reads the run) if driving it went wrong."""
        if self.problems:
            pytest.fail("the run went wrong:\n" + "\n".join(self.problems) + f"\n{self.fleet.describe()}")

    def wait_until_final(self) -> None:
        wait_for("every transfer to end", lambda: all_ended(self.store, self.ids.values()), fleet=self.fleet)


@contextlib.contextmanager
def scenario(admin_url: str, tmp: Path, options: WorkerOptions, workers: int) -> Iterator[Scenario]:
    """A fresh database and ``workers`` worker processes; dropped and killed afterwards, whatever happened."""
    name = f"tenure_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    fleet = Fleet(url, tmp, options)
    try:
        kind = options.kind()
        store = prepare(url, kind)
        run = Scenario(store, Db(url), kind, fleet)
        try:
            for _ in range(workers):
                fleet.start()
            yield run
        finally:
            fleet.close()
            run.db.close()
            store.close()
    finally:
        fleet.close()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def deliver_at_once(store: EngineStore, times: int, *args: Any, **kwargs: Any) -> list[Receipt]:
    """Deliver the same callback from ``times`` threads at the same moment."""
    barrier = threading.Barrier(times)
    out: list[Receipt] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait(10)
        receipt = store.deliver(*args, **kwargs)
        with lock:
            out.append(receipt)

    threads = [threading.Thread(target=one) for _ in range(times)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    return out


#: (d): a deadline of 1 s per wait, three asks per definition; the state's retry limit is 4, so for a
#: definition that keeps answering retry the step's limit of 3 binds first.
LOST_CALLBACKS = WorkerOptions(
    lease=2.0, concurrency=4, poll=0.5, deadline=1.0, max_attempts=3, retry_max=4, retry_base=0.05, retry_jitter=0
)
DONE_DATA = {"url": "rec://late"}


def _drive_lost_callbacks(run: Scenario) -> None:
    ok = {"id": "d1", "type": ew.PLUGIN, "spec": {}}
    never = {"id": "d2", "type": ew.PLUGIN, "spec": {"provision": "never"}}
    run.create("never", [ok, never])
    run.create("never-deprovision", [{"id": "d1", "type": ew.PLUGIN, "spec": {"deprovision": "never"}}, never])
    late = run.create("late", [{"id": "d1", "type": ew.PLUGIN, "spec": {"provision": "async"}}])
    run.create("retry", [{"id": "d1", "type": ew.PLUGIN, "spec": {"provision": "fail"}}])
    store = run.store

    # A callback for the first ask, sent after that ask's deadline fired: too late.
    first: Effect = wait_for(
        "the first ask of the late transfer",
        lambda: next((e for e in run.effects("late", "d1", "provision") if e.attempt == 1), None),
        fleet=run.fleet,
    )
    wait_for("its deadline to fire", lambda: store.get(late.id).version >= first.version + 2, fleet=run.fleet)
    run.receipts["late"] = [store.deliver(late.id, first.token, "d1", "done", data=DONE_DATA)]

    # The next ask is answered in time, by two identical callbacks at once. (On a machine so slow that
    # the 1 s deadline fired before the answer was applied, the third ask gets it.)
    def ask_number(attempt: int) -> Effect | None:
        return next((e for e in run.effects("late", "d1", "provision") if e.attempt == attempt), None)

    def moved_on(version: int) -> JournalEntry | None:
        return next((e for e in run.journal("late") if e.version == version + 1), None)

    answered: Effect | None = None
    for attempt in (2, 3):
        ask: Effect = wait_for(f"ask {attempt} of the late transfer", partial(ask_number, attempt), fleet=run.fleet)
        wait_for(f"the wait of ask {attempt}", partial(store.wait, token_hash(ask.token)), fleet=run.fleet)
        receipts = deliver_at_once(store, 2, late.id, ask.token, "d1", "done", data=DONE_DATA)
        run.receipts[f"in time (ask {attempt})"] = receipts
        left: JournalEntry = wait_for("the wait to end", partial(moved_on, ask.version + 1), fleet=run.fleet)
        if left.event == "provisioned":
            answered = ask
            run.answered = f"in time (ask {attempt})"
            break
    if answered is None:
        run.problems.append(f"no ask of the late transfer could be answered in time: {run.receipts}")
        return
    run.receipts["different answer"] = [store.deliver(late.id, answered.token, "d1", "failed", error="changed mind")]
    run.receipts["key not awaited"] = [store.deliver(late.id, answered.token, "d9", "done")]
    run.receipts["unknown token"] = [store.deliver(late.id, secrets.token_urlsafe(24), "d1", "done")]
    wait_for("the answer to be applied", lambda: "provisioned" in run.events("late"), fleet=run.fleet)
    run.receipts["again, after it was applied"] = [store.deliver(late.id, answered.token, "d1", "done", data=DONE_DATA)]
    run.receipts["late, again"] = [store.deliver(late.id, first.token, "d1", "done", data=DONE_DATA)]

    run.wait_until_final()
    # Every ask of a transfer that never got an answer is long superseded: answering now is refused.
    stale = [e for label in ("never", "never-deprovision") for e in run.effects(label, "d2", "provision")]
    run.receipts["stale asks"] = [store.deliver(e.resource_id, e.token, "d2", "done") for e in stale]
    run.exit_codes = run.fleet.shutdown()


@pytest.fixture(scope="module")
def lost_callbacks(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    with scenario(pg_admin_url, tmp_path_factory.mktemp("lost-callbacks"), LOST_CALLBACKS, workers=2) as run:
        try:
            _drive_lost_callbacks(run)
        except (AssertionError, pytest.fail.Exception) as exc:
            run.problems.append(str(exc))
        yield run


def _asks(run: Scenario, label: str, definition: str, action: str) -> list[Effect]:
    """The provisioner's records of ``action`` on ``definition`` of the transfer ``label``, oldest first."""
    return run.effects(label, definition, action)


def test_lost_callbacks_deadline_asks_again_then_fails(lost_callbacks: Scenario) -> None:
    run = lost_callbacks
    run.sound()
    asked = ["provision_requested", "provision_timed_out"] * LOST_CALLBACKS.max_attempts
    ending = ["provision_failed", "terminated", "deprovision"]

    # Never called back: asked max_attempts times (one ask per deadline), then the transfer fails.
    assert run.events("never") == ["@create", "provision", *asked, *ending, "deprovisioned"]
    row = run.row("never")
    assert row.state == "deprovisioned", row
    assert row.data["ended"] == "failed", row
    assert "gave up after 3 attempts" in row.data["failure"], row.data
    assert row.data["provision"]["d2"]["status"] == "failed", row.data
    assert "gave up after 3 attempts" in row.data["provision"]["d2"]["error"], row.data
    asks = _asks(run, "never", "d2", "provision")
    assert [e.attempt for e in asks] == [1, 2, 3], asks
    assert all(e.answer == "pending" for e in asks), asks
    assert len({e.version for e in asks}) == 3, asks
    assert len({e.token for e in asks}) == 3, asks
    # The definition that was done is not asked again, and is deprovisioned.
    assert len(_asks(run, "never", "d1", "provision")) == 1
    assert len(_asks(run, "never", "d1", "deprovision")) == 1
    for entry in run.journal("never"):
        if entry.event == "provision_timed_out":
            assert "deadline" in entry.detail, entry
            assert entry.actor in {p.name for p in run.fleet.procs}, entry

    # The same, and then the deprovisioner never answers either: deprovisioning_failed, its own end.
    deprovision_asked = ["deprovision_requested", "deprovision_timed_out"] * LOST_CALLBACKS.max_attempts
    assert run.events("never-deprovision") == [
        "@create", "provision", *asked, *ending, *deprovision_asked, "deprovision_failed",
    ]  # fmt: skip
    row = run.row("never-deprovision")
    assert row.state == "deprovisioning_failed", row
    assert "gave up after 3 attempts" in (row.error or ""), row.error
    assert [e.attempt for e in _asks(run, "never-deprovision", "d1", "deprovision")] == [1, 2, 3]

    # Each unanswered ask's deadline fired exactly once (by one worker or the other).
    expired = sum(e.endswith("_timed_out") for label in run.ids for e in run.events(label))
    assert expired >= 3 * LOST_CALLBACKS.max_attempts + 1
    assert run.fleet.total("deadlines_fired") == expired, run.fleet.reports()
    assert set(run.exit_codes.values()) == {ew.EXIT_CLEAN}, run.exit_codes


def test_lost_callbacks_duplicates_are_idempotent_and_late_ones_refused(lost_callbacks: Scenario) -> None:
    run = lost_callbacks
    run.sound()

    def only(label: str) -> Receipt:
        (receipt,) = run.receipts[label]
        return receipt

    late = only("late")
    assert late.delivery is Delivery.REFUSED, late
    assert "superseded" in late.reason, late
    in_time = run.receipts[run.answered]
    assert sorted(r.delivery.value for r in in_time) == ["accepted", "duplicate"], in_time
    assert len({r.seq for r in in_time}) == 1, f"both name the one recorded callback: {in_time}"
    different = only("different answer")
    assert different.delivery is Delivery.REFUSED, different
    assert "different answer" in different.reason, different
    assert only("key not awaited").delivery is Delivery.REFUSED
    assert "not awaited" in only("key not awaited").reason
    assert only("unknown token").delivery is Delivery.REFUSED
    assert "unknown correlation token" in only("unknown token").reason
    again = only("again, after it was applied")
    assert again.delivery is Delivery.DUPLICATE, again
    assert "applied" in again.reason, again
    late_again = only("late, again")
    assert late_again.delivery is Delivery.REFUSED, late_again
    assert "superseded" in late_again.reason, late_again
    stale = run.receipts["stale asks"]
    assert len(stale) == 6, stale
    assert all(r.delivery is Delivery.REFUSED for r in stale), stale

    # The transfer moved on exactly once on the answer, and then went the happy way.
    journal = run.journal("late")
    events = [e.event for e in journal]
    assert events.count("provisioned") == 1, events
    (provisioned,) = [e for e in journal if e.event == "provisioned"]
    assert provisioned.from_state == "provisioning_requested", provisioned
    assert "callbacks" in provisioned.detail, provisioned
    assert events[events.index("provisioned") :] == HAPPY[HAPPY.index("provisioned") :], events
    row = run.row("late")
    assert row.state == "deprovisioned", row
    assert row.data["ended"] == "completed", row
    assert row.data["provision"]["d1"]["status"] == "done", row.data
    assert row.data["provision"]["d1"]["data"] == DONE_DATA, row.data
    # One callback recorded per answered ask (the duplicate was not): the one of the ask the transfer
    # was still waiting on applied, any earlier one superseded, and the inbox says which.
    recorded = [k for k, v in run.receipts.items() if k.startswith("in time") and any(r.accepted for r in v)]
    results = [str(row[0]) for row in run.db.rows("SELECT result FROM inbox ORDER BY seq")]
    assert len(results) == len(recorded), (results, recorded)
    assert results[-1].startswith("applied"), results
    assert all(r.startswith("superseded") for r in results[:-1]), results
    assert run.fleet.total("callbacks_applied") == 1, run.fleet.reports()
    assert run.db.value("SELECT count(*) FROM inbox WHERE applied_at IS NULL") == 0
    assert lenient_replay(run.kind, journal) == (row.state, row.version)


def test_retry_limit_of_the_step_is_honoured_exactly(lost_callbacks: Scenario) -> None:
    """A definition that keeps answering retry is asked ``max_attempts`` times (the step's limit binds)."""
    run = lost_callbacks
    run.sound()
    asks = _asks(run, "retry", "d1", "provision")
    assert [e.attempt for e in asks] == [1, 2, 3], asks
    assert run.events("retry") == [
        "@create", "provision", "@retry", "@retry", "@retry", "provision_failed", "terminated", "deprovision",
        "deprovisioned",
    ]  # fmt: skip
    row = run.row("retry")
    assert row.data["provision"]["d1"]["status"] == "failed", row.data
    assert "gave up after 3 attempts" in row.data["provision"]["d1"]["error"], row.data


def test_given_up_definitions_are_still_deprovisioned(lost_callbacks: Scenario) -> None:
    """A definition the provisioner was asked for (it answered pending or retry: maybe made) is
    deprovisioned even though provisioning gave up on it.

    Regression: at commit 50114c5 the give-up overwrote the definition's status with ``failed``
    (ProvisionStep.__call__) and the deprovisioning step's skip (``_never_provisioned``) then took it
    for never made, leaving whatever the provisioner made behind.
    """
    run = lost_callbacks
    run.sound()
    for label, definition in (("never", "d2"), ("never-deprovision", "d2"), ("retry", "d1")):
        asked = _asks(run, label, definition, "provision")
        assert asked
        assert all(e.answer in ("pending", "retry") for e in asked)
        deprovisioned = run.effects(label, definition, "deprovision")
        assert deprovisioned, (
            f"{label}: {definition} was asked to provision {len(asked)} times (answers "
            f"{[e.answer for e in asked]}) but never to deprovision; data {dict(run.row(label).data)}"
        )


#: (e): the state's retry limit (4) binds before the step's (10); no jitter, so the backoff is exact.
ALWAYS_FAILING = WorkerOptions(
    lease=2.0,
    concurrency=4,
    poll=0.5,
    max_attempts=10,
    retry_max=4,
    retry_base=0.3,
    retry_factor=2.0,
    retry_cap=5.0,
    retry_jitter=0.0,
)


@pytest.fixture(scope="module")
def always_failing(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    with scenario(pg_admin_url, tmp_path_factory.mktemp("always-failing"), ALWAYS_FAILING, workers=2) as run:
        try:
            run.create("failing", [
                {"id": "d1", "type": ew.PLUGIN, "spec": {"provision": "fail"}},
                {"id": "d2", "type": ew.PLUGIN, "spec": {}},
            ])  # fmt: skip
            run.wait_until_final()
            run.exit_codes = run.fleet.shutdown()
        except (AssertionError, pytest.fail.Exception) as exc:
            run.problems.append(str(exc))
        yield run


def test_retry_limit_backoff_and_failure_record(always_failing: Scenario) -> None:
    run = always_failing
    run.sound()
    limit = ALWAYS_FAILING.retry_max
    journal = run.journal("failing")
    assert [e.event for e in journal] == [
        "@create", "provision", *["@retry"] * (limit - 1), "provision_failed", "terminated", "deprovision",
        "deprovisioned",
    ]  # fmt: skip

    # Asked exactly `limit` times, once per attempt, each at its own version.
    asks = run.effects("failing", "d1", "provision")
    assert [e.attempt for e in asks] == list(range(1, limit + 1)), asks
    assert len({e.version for e in asks}) == limit, asks
    assert len(run.effects("failing", "d2", "provision")) == 1, "a done definition is not asked again"

    # The backoff: each @retry schedules the next attempt base * factor ** (n - 1) later (no jitter),
    # so the delays grow, and no attempt ran before its time.
    retries = [e for e in journal if e.event == "@retry"]
    assert [e.detail["attempt"] for e in retries] == list(range(1, limit)), retries
    delays = [(datetime.fromisoformat(e.detail["next_attempt_at"]) - e.at).total_seconds() for e in retries]
    expected = [ALWAYS_FAILING.retry_base * ALWAYS_FAILING.retry_factor**n for n in range(limit - 1)]
    for got, want in zip(delays, expected, strict=True):
        # Scheduled from a clock read a moment before the write's own timestamp: never more, hardly less.
        assert want - 0.2 < got <= want + 0.001, f"delays {delays}, expected {expected}"
    assert all(a < b for a, b in itertools.pairwise(delays)), delays
    for retry, nxt in zip(retries, asks[1:], strict=True):
        assert nxt.at >= datetime.fromisoformat(retry.detail["next_attempt_at"]), (retry, nxt)

    # The failure: every @retry says why; the resource keeps the definition's error and attempts.
    for e in retries:
        assert "boom" in e.detail["error"], e
        assert e.to_state == e.from_state == "provisioning", e
    (failed,) = [e for e in journal if e.event == "provision_failed"]
    assert failed.from_state == "provisioning", failed
    assert failed.detail["attempt"] == limit, failed
    row = run.row("failing")
    entry = row.data["provision"]["d1"]
    assert (entry["status"], entry["attempts"]) == ("retry", limit), row.data
    assert "boom" in entry["error"], row.data
    assert (row.state, row.data["ended"]) == ("deprovisioned", "failed"), row
    assert "boom" in row.data["failure"], row.data
    # Asked, maybe made: deprovisioned, like the definition that was done.
    assert len(run.effects("failing", "d1", "deprovision")) == 1
    assert len(run.effects("failing", "d2", "deprovision")) == 1
    assert run.fleet.total("retried") == limit - 1, run.fleet.reports()
    assert lenient_replay(run.kind, journal) == (row.state, row.version)
    assert set(run.exit_codes.values()) == {ew.EXIT_CLEAN}, run.exit_codes


def test_failure_reason_is_kept_in_the_journal(always_failing: Scenario) -> None:
    """Why a step failed for good is in the journal entry of its failure event.

    Regression: at commit 50114c5 the error went only to the row (``fire_claimed(error=...)``), whose
    next transition (``terminating`` -> ``terminated``) cleared it: no trace of the reason was left.
    """
    run = always_failing
    run.sound()
    (failed,) = [e for e in run.journal("failing") if e.event == "provision_failed"]
    assert "gave up after" in json.dumps(dict(failed.detail)), failed


# --- a race the chaos runs hit now and then, made deterministic --------------------------------------------


def test_callbacks_applied_by_another_worker_are_not_counted_superseded(pg_url: str) -> None:
    """Two workers settle the same callback: the loser must not report it superseded.

    Worker A lists the unsettled callbacks; before it acts on them, worker B applies them (forced here
    by running B inside A's listing). A then finds the resource moved on. The inbox keeps the truth
    (applied), and A's stats must too.
    """
    from tenure.engine import Worker
    from tenure.engine.provision import MemoryProvisioner
    from tenure.kinds.transfer import transfer_steps

    kind = ew.chaos_kind(deadline=600.0, retry=Backoff())
    plugin = MemoryProvisioner(asynchronous=True)
    steps = transfer_steps({"memory": plugin}, kind=kind)
    store_a = prepare(pg_url, kind)
    store_b = open_store(pg_url, [kind])
    db = Db(pg_url)
    try:
        a = Worker(store_a, steps, name="a")
        b = Worker(store_b, steps, name="b")
        spec = {"asset": "x", "resources": [{"id": "d1", "type": "memory"}]}
        r = store_a.create(ew.KIND_NAME, spec, actor="test")
        a.run_until_idle()
        assert store_a.get(r.id).state == "provisioning_requested"
        (asked,) = plugin.requests
        assert store_a.deliver(r.id, asked.token, "d1", "done").delivery is Delivery.ACCEPTED

        listed = store_a.unsettled

        def listed_then_raced(*args: Any, **kwargs: Any) -> Any:
            rows = listed(*args, **kwargs)
            b.apply_callbacks()  # B applies them between A's listing and A's settling
            return rows

        store_a.unsettled = listed_then_raced  # type: ignore[method-assign]
        a.apply_callbacks()

        assert store_a.get(r.id).state == "provisioned"
        assert b.stats.callbacks_applied == 1
        (result,) = [str(row[0]) for row in db.rows("SELECT result FROM inbox")]
        assert result.startswith("applied"), result
        assert a.stats.callbacks_superseded == 0, f"A counted as superseded a callback B applied ({result!r})"
    finally:
        db.close()
        store_b.close()
        store_a.close()
