"""Data-plane signaling across two processes: transfers per second end to end, and how soon a callback
from the data plane moves the control plane's transfer on.

Run ``.venv/bin/python bench/signaling.py`` (``--quick`` for a smoke run, ``--workers 2`` for two workers
in each plane). It starts a control plane and one data plane (``dp1``) as real ``tenure serve``
processes on 127.0.0.1, each with its own SQLite file (``tenure.cli.planes.LocalPlanes``, the planes
``tenure demo signaling`` runs), and drives them through the control plane's API only:

* **Lifecycles**: provider transfers, then consumer transfers, created by a few client threads (each
  keeps a window of transfers in flight) and each taken to ``started`` (a consumer needs its client
  event ``start`` once it rests in ``requested``) and then to ``terminated`` (``PUT
  /v1/resources/{id}/desired-state``). Two variants: nothing to provision (the data plane answers
  every signal at once: not async) and one ``memory-async`` resource with ``delayMs: 0`` (the data
  plane provisions and deprovisions asynchronously and calls back; the control plane waits in
  ``*_requested``). The clients learn states from the control plane's watch stream (``GET /v1/watch``,
  one connection for the run), not by polling each transfer. Lifecycles per second are counted from
  the first create to the last ``terminated``; transitions per second are the control plane's journal
  entries for those transfers (the data plane's are shown beside them).
* **Callback -> next step** (async variant): read after the run from the control plane's own SQLite
  file, opened read-only: the inbox row's ``received_at`` (the callback's arrival) to the journal
  entry that moved the transfer out of its ``*_requested`` state (it names the inbox row in
  ``detail.callbacks``); same clock, same process. And the data plane's side: its flow's journal entry
  into ``provision_notifying`` / ``deprovision_notifying`` (from which it posts the callback) to the
  same control-plane move (two processes, one machine's clock). Measured under the lifecycle load and
  again with one transfer at a time.
* **Eclipse EDC**, side by side: its transfer state machine polls every
  ``edc.transfer.state-machine.iteration-wait-millis`` (default 1000 ms), so a callback waits for the
  next poll: about 500 ms on average, 1000 ms at worst. That is a configuration default, not a
  measurement; EDC is not run here.

Every answer's status is checked; a transfer that makes no progress for ``--stall`` seconds, ends
anywhere but ``terminated`` as asked, or took the wrong path (a wait state in the not-async variant,
other than two callbacks in the async one) stops the run with exit status 1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import queue
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchkit import process_cpu, unshadow, version

unshadow()

import httpx  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tenure.cli.planes import LocalPlanes  # noqa: E402

DATAPLANE = "dp1"
#: The client name of the planes' admin token (``LocalPlanes``), which the bench's requests use.
CLIENT = "admin"
#: The control plane's wait states, and the data plane's states from which it posts a callback.
WAIT_STATES = ("preparation_requested", "startup_requested", "suspension_requested", "termination_requested")
NOTIFYING_STATES = ("provision_notifying", "deprovision_notifying")
#: Eclipse EDC's transfer state machine: ``TransferCoreExtension.DEFAULT_ITERATION_WAIT`` (ms).
EDC_POLL_MS = 1000.0
EDC_NOTE = (
    "Eclipse EDC: edc.transfer.state-machine.iteration-wait-millis defaults to 1000 "
    "(TransferCoreExtension.DEFAULT_ITERATION_WAIT in eclipse-edc/Connector). A callback only changes the "
    "stored state; the next step waits for the state machine's next poll: 0 to 1000 ms, about 500 ms on "
    "average. A configuration default, not a measurement (EDC is not run here). EDC's StateMachineManager "
    "sleeps only after an iteration that processed nothing, so on a busy connector the wait is shorter: "
    "the one-at-a-time rows are the fair comparison."
)

LIFECYCLE_COLUMNS = (
    "variant",
    "side",
    "clients x window",
    "lifecycles",
    "wall",
    "lifecycles/s",
    "CP transitions/s (each)",
    "DP transitions/s (each)",
    "client p50 / p99",
    "engine p50 / p99",
    "CPU CP / DP / clients",
)
LATENCY_COLUMNS = (
    "setup",
    "callbacks",
    "CP received -> CP move, p50 / p99",
    "DP notifying -> CP received",
    "DP notifying -> CP move",
    "tenure p50 / EDC's 500 ms",
    "tenure p99 / EDC's 1000 ms",
)


class BenchFailed(Exception):
    pass


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def p50_p99(pair: tuple[float, float]) -> str:
    return f"{pair[0] * 1000:.1f} / {pair[1] * 1000:.1f} ms"


def percentiles(values: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 (nearest rank) of ``values``."""
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def instant(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def expect(answer: httpx.Response, status: int, what: str) -> dict[str, Any]:
    if answer.status_code != status:
        raise BenchFailed(f"{what} answered {answer.status_code}, wanted {status}: {answer.text[:500]}")
    body: dict[str, Any] = answer.json()
    return body


# --- the watch stream ------------------------------------------------------------------------------


class Watcher:
    """Follows the control plane's ``/v1/watch`` for transfers and hands each change to the queue of the
    client thread that owns the transfer (changes that arrive before their create's answer are kept)."""

    def __init__(self, planes: LocalPlanes) -> None:
        self._http = planes.control.client(timeout=httpx.Timeout(10.0, read=60.0))
        self._lock = threading.Lock()
        self._owners: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._early: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self.error: BaseException | None = None
        #: Per change: seconds from its journal time to its arrival here.
        self.lags: list[float] = []
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        if not self._ready.wait(15.0):
            raise BenchFailed("the watch stream did not open within 15 s")
        self.check()
        return self

    def stop(self) -> None:
        self._stopping.set()  # the thread ends when the control plane stops and the stream breaks

    def check(self) -> None:
        if self.error is not None:
            raise BenchFailed(f"the watch stream failed: {self.error!r}")

    def own(self, resource_id: str, inbox: queue.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._owners[resource_id] = inbox
            for change in self._early.pop(resource_id, []):
                inbox.put(change)

    def _dispatch(self, change: dict[str, Any]) -> None:
        self.lags.append(time.time() - instant(change["at"]))
        rid = change["resourceId"]
        with self._lock:
            owner = self._owners.get(rid)
            if owner is None:
                self._early[rid].append(change)
                return
        owner.put(change)

    def _run(self) -> None:
        try:
            # A fresh control plane: replaying from the beginning misses nothing and costs nothing.
            with self._http.stream("GET", "/v1/watch", params={"kind": "transfer", "after": "beginning"}) as answer:
                if answer.status_code != 200:
                    raise BenchFailed(f"GET /v1/watch answered {answer.status_code}")
                self._ready.set()
                event, data = "", []
                for line in answer.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line:
                        if event == "change" and data:
                            self._dispatch(json.loads("\n".join(data)))
                        event, data = "", []
        except BaseException as exc:
            if not self._stopping.is_set():
                self.error = exc
        finally:
            self._ready.set()
            self._http.close()


# --- driving transfers -----------------------------------------------------------------------------


@dataclass
class Phase:
    label: str
    side: str
    provisions: bool
    clients: int
    window: int
    alone: bool = False
    ids: list[str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    wall: float = 0.0
    #: CPU seconds the control plane's, the data plane's and this process (the clients) used in the phase.
    cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def variant(self) -> str:
        return "async" if self.provisions else "sync"


def spec(side: str, provisions: bool, n: int) -> dict[str, Any]:
    resources = [{"id": "bucket", "type": "memory-async", "spec": {"delayMs": 0}}] if provisions else []
    return {
        "asset": f"asset-{n}",
        "type": side,
        "dataplane": DATAPLANE,
        "destination": {"type": "memory", "path": f"/landing/{n}"},
        "resources": resources,
    }


def run_phase(planes: LocalPlanes, watcher: Watcher, phase: Phase, count: int, stall: float) -> Phase:
    """``count`` transfers of ``phase``'s side and variant, from ``phase.clients`` threads with at most
    ``phase.window`` transfers in flight each, every one taken to started and then to terminated."""
    quotas = [count // phase.clients + (1 if i < count % phase.clients else 0) for i in range(phase.clients)]
    ids: list[list[str]] = [[] for _ in quotas]
    durations: list[list[float]] = [[] for _ in quotas]
    errors: list[BaseException] = []
    failed = threading.Event()

    def client(i: int) -> None:
        changes: queue.Queue[dict[str, Any]] = queue.Queue()
        made = 0
        created: dict[str, float] = {}
        progress: dict[str, tuple[float, str]] = {}  # in flight: last change seen, and the state
        asked: set[str] = set()  # transfers asked to terminate
        with planes.control.client(timeout=30.0) as http:
            while (made < quotas[i] or progress) and not failed.is_set():
                while made < quotas[i] and len(progress) < phase.window:
                    body = {"kind": "transfer", "spec": spec(phase.side, phase.provisions, made)}
                    t0 = time.perf_counter()
                    rid = str(expect(http.post("/v1/resources", json=body), 201, "POST /v1/resources")["id"])
                    created[rid] = t0
                    progress[rid] = (t0, "initial")
                    ids[i].append(rid)
                    watcher.own(rid, changes)
                    made += 1
                try:
                    change = changes.get(timeout=0.5)
                except queue.Empty:
                    change = None
                if change is None:
                    watcher.check()
                    now = time.perf_counter()
                    for rid, (since, state) in progress.items():
                        if now - since > stall:
                            raise BenchFailed(f"{phase.label}: {rid} stayed in {state!r} for over {stall:.0f} s")
                    continue
                rid, state, event = change["resourceId"], change["toState"], change["event"]
                if rid not in progress:
                    raise BenchFailed(f"{phase.label}: {rid} moved on after it ended: {event} -> {state}")
                progress[rid] = (time.perf_counter(), state)
                if state == "requested" and phase.side == "consumer":
                    # The provider's start message.
                    expect(
                        http.post(f"/v1/resources/{rid}/events", json={"event": "start"}),
                        200,
                        f"POST /v1/resources/{rid}/events start",
                    )
                elif state == "started" and rid not in asked:
                    asked.add(rid)
                    expect(
                        http.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": "terminated"}),
                        202,
                        f"PUT /v1/resources/{rid}/desired-state",
                    )
                elif state == "terminated":
                    if rid not in asked:
                        raise BenchFailed(f"{phase.label}: {rid} ended before it was asked to ({event})")
                    durations[i].append(time.perf_counter() - created[rid])
                    del progress[rid]

    def body(i: int) -> None:
        try:
            client(i)
        except BaseException as exc:  # reported below: the run fails
            errors.append(exc)
            failed.set()

    threads = [threading.Thread(target=body, args=(i,), name=f"client-{i}") for i in range(phase.clients)]
    pids = [p.process.pid if p.process is not None else 0 for p in (planes.control, planes.dataplanes[DATAPLANE])]
    cpu0 = [process_cpu(pid) for pid in pids]
    own0 = time.process_time()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.wall = time.perf_counter() - t0
    cp_cpu, dp_cpu = (process_cpu(pid) - before for pid, before in zip(pids, cpu0, strict=True))
    phase.cpu = (cp_cpu, dp_cpu, time.process_time() - own0)
    if errors:
        first = errors[0]
        raise BenchFailed(str(first) if isinstance(first, BenchFailed) else f"{phase.label}: {first!r}") from first
    phase.ids = [rid for chunk in ids for rid in chunk]
    phase.durations = [d for chunk in durations for d in chunk]
    if len(phase.ids) != count or len(phase.durations) != count:
        raise BenchFailed(f"{phase.label}: {len(phase.durations)} of {count} transfers ended")
    return phase


# --- reading the databases after the run -----------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    version: int
    event: str
    from_state: str | None
    to_state: str
    actor: str | None
    at: float
    detail: dict[str, Any]


class Database:
    """One plane's SQLite file, read-only: its journal by resource and (control plane) its inbox."""

    def __init__(self, path: Path) -> None:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            self.journal: dict[str, list[Entry]] = defaultdict(list)
            rows = db.execute(
                "SELECT resource_id, version, event, from_state, to_state, actor, at, detail FROM journal "
                "ORDER BY resource_id, version"
            )
            for rid, v, event, source, target, actor, at, detail in rows:
                self.journal[rid].append(Entry(v, event, source, target, actor, instant(at), json.loads(detail)))
            self.received = {seq: instant(at) for seq, at in db.execute("SELECT seq, received_at FROM inbox")}
            self.resources = {
                rid: (state, json.loads(data), error)
                for rid, state, data, error in db.execute("SELECT id, state, data, error FROM resources")
            }
        finally:
            db.close()


@dataclass
class Hops:
    """Per callback: CP received -> CP move, DP notifying -> CP received, DP notifying -> CP move (s)."""

    applied: list[float] = field(default_factory=list)
    posted: list[float] = field(default_factory=list)
    across: list[float] = field(default_factory=list)


@dataclass
class Checked:
    """What the databases say about a phase: journal entries on each plane, and per transfer the engine's
    time (its control-plane journal's span, less the time it rested waiting for the client's requests)."""

    cp_entries: int = 0
    dp_entries: int = 0
    engine: list[float] = field(default_factory=list)


def check_and_measure(phase: Phase, cp: Database, dp: Database, hops: Hops) -> Checked:
    """Checks every transfer of ``phase`` in both databases; adds its callbacks to ``hops``."""
    checked = Checked()
    for rid in phase.ids:
        state, data, error = cp.resources.get(rid, (None, {}, None))
        if state != "terminated" or data.get("ended") != "terminated" or error:
            raise BenchFailed(f"{phase.label}: {rid} is {state!r}, ended {data.get('ended')!r}, error {error!r}")
        flow = dp.resources.get(rid, (None, {}, None))[0]
        wanted = "deprovisioned" if phase.provisions else "terminated"
        if flow != wanted:
            raise BenchFailed(f"{phase.label}: {rid}'s dataflow is {flow!r}, not {wanted!r}")
        journal, flow_journal = cp.journal[rid], dp.journal[rid]
        checked.cp_entries += len(journal)
        checked.dp_entries += len(flow_journal)
        # The client's own writes (the desired state, a consumer's start) came when the watch showed it
        # the state before: that wait is the client's, not the engine's.
        resting = sum(e.at - before.at for before, e in itertools.pairwise(journal) if e.actor == CLIENT)
        checked.engine.append(journal[-1].at - journal[0].at - resting)
        exits = [e for e in journal if e.from_state in WAIT_STATES and e.to_state not in WAIT_STATES]
        waits = [e for e in journal if e.to_state in WAIT_STATES]
        notifying = [e for e in flow_journal if e.to_state in NOTIFYING_STATES]
        if not phase.provisions:
            if waits or notifying:
                raise BenchFailed(f"{phase.label}: {rid} waited for a callback though nothing was to provision")
            continue
        # Async: provisioning (start, or a consumer's prepare) and deprovisioning (terminate), one callback each.
        if len(waits) != 2 or len(exits) != 2 or len(notifying) != 2:
            raise BenchFailed(
                f"{phase.label}: {rid} has {len(waits)} waits, {len(exits)} exits and {len(notifying)} "
                "notifications, wanted 2 of each"
            )
        for move, notice in zip(exits, notifying, strict=True):
            seqs = move.detail.get("callbacks") or []
            if not seqs or any(s not in cp.received for s in seqs):
                raise BenchFailed(f"{phase.label}: {rid}'s move {move.event} names no received callback ({seqs})")
            received = max(cp.received[s] for s in seqs)
            if not notice.at <= received <= move.at:
                raise BenchFailed(f"{phase.label}: {rid}: notifying, received and move out of order")
            hops.applied.append(move.at - received)
            hops.posted.append(received - notice.at)
            hops.across.append(move.at - notice.at)
    return checked


# --- the run ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small runs, for a smoke test")
    parser.add_argument("--count", type=int, help="transfers per side and variant (default 200, 20 with --quick)")
    parser.add_argument("--clients", type=int, default=4, help="client threads (default %(default)s)")
    parser.add_argument("--window", type=int, default=8, help="transfers in flight per client (default %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="workers in each plane (default %(default)s)")
    parser.add_argument("--stall", type=float, default=30.0, help="seconds a transfer may make no progress")
    args = parser.parse_args()
    count = args.count or (20 if args.quick else 200)
    serial = 5 if args.quick else 50
    console = Console(width=180)
    started = time.perf_counter()
    console.print(
        f"tenure signaling benchmark{' (quick)' if args.quick else ''}: Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs (load {os.getloadavg()[0]:.2f}); tenure {version('tenure')}; "
        f"{args.workers} worker(s) per plane"
    )
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="tenure-bench-signaling-") as directory:
        home = Path(directory)
        planes = LocalPlanes(home, dataplanes=[DATAPLANE], request_deadline=60.0, workers=args.workers)
        with planes:
            watcher = Watcher(planes).start()
            try:
                for provisions in (False, True):
                    for side in ("provider", "consumer"):
                        label = f"{side}, {'async' if provisions else 'sync'}, {args.clients}x{args.window}"
                        phase = Phase(label, side, provisions, args.clients, args.window)
                        phases.append(run_phase(planes, watcher, phase, count, args.stall))
                        console.print(f"[dim]{label}: {count} lifecycles in {phase.wall:.1f} s[/dim]")
                for side in ("provider", "consumer"):
                    label = f"{side}, async, one at a time"
                    phase = Phase(label, side, True, 1, 1, alone=True)
                    phases.append(run_phase(planes, watcher, phase, serial, args.stall))
                    console.print(f"[dim]{label}: {serial} lifecycles in {phases[-1].wall:.1f} s[/dim]")
            finally:
                watcher.stop()
            watch_lags = watcher.lags
        # The planes have stopped: their files are read as they were left.
        cp = Database(planes.control.home / "tenure.db")
        dp = Database(planes.dataplanes[DATAPLANE].home / "tenure.db")

    loaded, alone = Hops(), Hops()
    title = f"tenure: transfer lifecycles across a control plane and a data plane ({args.workers} worker(s) each)"
    table = Table(title=title)
    for column in LIFECYCLE_COLUMNS:
        table.add_column(column, justify="left" if column in ("variant", "side") else "right")
    for phase in phases:
        checked = check_and_measure(phase, cp, dp, alone if phase.alone else loaded)
        cp_n, dp_n = checked.cp_entries, checked.dp_entries
        n = len(phase.ids)
        p50, p99 = percentiles(phase.durations)
        e50, e99 = percentiles(checked.engine)
        table.add_row(
            phase.variant,
            phase.side,
            f"{phase.clients} x {phase.window}",
            str(n),
            f"{phase.wall:.2f} s",
            f"{n / phase.wall:,.1f}",
            f"{cp_n / phase.wall:,.0f} ({cp_n / n:.1f})",
            f"{dp_n / phase.wall:,.0f} ({dp_n / n:.1f})",
            p50_p99((p50, p99)),
            p50_p99((e50, e99)),
            " / ".join(f"{c / phase.wall:.0%}" for c in phase.cpu),
        )
    console.print(table)
    console.print(
        "[dim]sync: nothing to provision (the data plane answers every signal at once); async: one memory-async "
        "resource with delayMs 0 (provisioning and deprovisioning end in a callback). CPU: each plane's process, "
        "and this one (the clients and the watch), over the phase's wall time (100% = one core).[/dim]"
    )
    w50, w99 = percentiles(watch_lags)
    console.print(
        f"[dim]client: a lifecycle from sending its create to seeing terminated on the watch stream. engine: the "
        f"control plane's journal from create to terminated, less the spans in which the transfer rested until the "
        f"client's request (desired state; a consumer's start). The clients saw each change {ms(w50)} after its "
        f"journal time (p50; p99 {ms(w99)}): on SQLite the watch stream wakes when its 10-per-second check of PRAGMA "
        f"data_version sees a commit, so each step the client waits for costs it up to 100 ms.[/dim]"
    )

    latency = Table(title="callback -> the control plane's move out of *_requested (async variant)")
    for column in LATENCY_COLUMNS:
        latency.add_column(column, justify="left" if column == "setup" else "right")
    for name, hops in (("one at a time", alone), (f"under load, {args.clients} x {args.window}", loaded)):
        a50, a99 = percentiles(hops.applied)
        b50, b99 = percentiles(hops.posted)
        c50, c99 = percentiles(hops.across)
        latency.add_row(
            f"tenure, {name}",
            str(len(hops.applied)),
            p50_p99((a50, a99)),
            p50_p99((b50, b99)),
            p50_p99((c50, c99)),
            f"{a50 * 1000 / (EDC_POLL_MS / 2):.4f} ({EDC_POLL_MS / 2 / (a50 * 1000):,.0f}x sooner)",
            f"{a99 * 1000 / EDC_POLL_MS:.4f} ({EDC_POLL_MS / (a99 * 1000):,.0f}x sooner)",
        )
    latency.add_row("EDC default poll (not measured)", "", "~500 avg / 1000 worst", "", "", "", "")
    console.print(latency)
    console.print(f"[dim]Note: {EDC_NOTE}[/dim]")
    console.print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchFailed as exc:
        print(f"bench/signaling.py failed: {exc}", file=sys.stderr)
        sys.exit(1)
