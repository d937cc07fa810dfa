"""How many requests per second the HTTP API serves, next to the same store calls made in-process.

Run ``.venv/bin/python bench/api.py`` (``--quick`` for a smoke run, ``--skip-postgres`` to leave
PostgreSQL out). For each store (a SQLite file, then a scratch PostgreSQL database) it times

* ``POST /v1/resources`` (create), ``GET /v1/resources/{id}`` (get) and
  ``POST /v1/resources/{id}/events`` with ``If-Match`` (event), against a real ``tenure serve``
  subprocess on 127.0.0.1 (``--workers 0``: API only; auth on with a bearer token), from 1 and 8
  client threads in this process, each with its own keep-alive connection (httpx);
* the same operations called directly on a store in this process (``store.create``, ``store.get``,
  ``store.fire(id, event, expected_version=...)``), from 1 and 8 threads, before the server starts;
* the same three requests again from ``wrk`` (the Debian package; a C client, so that the clients do not
  take the server's CPU), 8 threads with one connection each, driven by ``bench/api_wrk.lua``, while the
  same server is still up. Without ``wrk`` on PATH these phases are skipped, with a line saying so.

The resources are of a two-state kind (``bench_kinds.toggle``: off <-> on), so events cycle forever;
each client thread fires at its own resources, alternating events, pinned with the version it last saw.
Every answer is checked (status, ETag, Location; under wrk by the Lua script); a single wrong one, or a
socket error under wrk, stops the run with exit status 1. At the end of each store every resource's version
is read back and compared with what the clients saw.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_kinds import NEXT, toggle
from benchkit import free_port, process_cpu, scratch_database, tenure_command, unshadow, version

unshadow()

import httpx  # noqa: E402
import psycopg  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tenure.cli.worker import pool_size  # noqa: E402
from tenure.kinds import builtin_tables  # noqa: E402
from tenure.store import open_store  # noqa: E402
from tenure.store.protocol import EngineStore  # noqa: E402

#: This folder: the server imports the bench kind from it.
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
KIND = toggle.name
OPS = ("create", "get", "event")
CLIENTS = (1, 8)
CLIENT_NAME = "bench"
#: The connection pool ``tenure serve --workers 0`` opens (API only); the direct store gets the same.
SERVE_POOL = pool_size(0 + 2, 4)
CREATE_BODY = f'{{"kind": "{KIND}"}}'.encode()
EVENT_BODY = {state: f'{{"event": "{event}"}}'.encode() for state, (event, _) in NEXT.items()}
JSON = "application/json"

#: The wrk phases: the script, one connection per wrk thread (so that each thread's Lua state drives one
#: connection and pins the version its last answer gave), the untimed run before each timed one (s),
#: the resources dealt to the threads for get and event runs, the issue's targets for one process with 8
#: connections (req/s), and how close PostgreSQL is to be to SQLite (within 30%).
WRK_SCRIPT = os.path.join(HERE, "api_wrk.lua")
WRK_CONNECTIONS = 8
WRK_WARMUP = 1
WRK_RESOURCES = 200
WRK_OPS = ("get", "create", "event")
WRK_TARGETS = {"get": 2000, "create": 1000, "event": 1000}
PG_WITHIN = 0.70


# --- what the clients call ---------------------------------------------------------------------


@dataclass(slots=True)
class Tracked:
    """A resource as its client last saw it."""

    id: str
    state: str
    version: int


class BadAnswer(Exception):
    """An answer the benchmark did not expect (wrong status, ETag or Location; an exception)."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key}: {detail}")
        self.key = key
        self.detail = detail


class Target(Protocol):
    def create(self) -> Tracked: ...

    def get(self, r: Tracked) -> None: ...

    def fire(self, r: Tracked) -> None:
        """Fire the event that leaves ``r.state``, pinned to ``r.version``; update ``r``."""

    def close(self) -> None: ...


class HttpTarget:
    """One client: its own httpx.Client and so its own keep-alive connection."""

    def __init__(self, base_url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": JSON},
            timeout=30.0,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    @staticmethod
    def _refuse(op: str, response: httpx.Response, why: str) -> BadAnswer:
        return BadAnswer(f"{op} HTTP {response.status_code}", f"{why}; body: {response.text[:300]!r}")

    def create(self) -> Tracked:
        response = self.client.post("/v1/resources", content=CREATE_BODY, headers={"Content-Type": JSON})
        location = response.headers.get("location", "")
        if response.status_code != 201 or not location.startswith("/v1/resources/"):
            raise self._refuse("create", response, f"wanted 201 with a Location, got Location {location!r}")
        if response.headers.get("etag") != '"1"':
            raise self._refuse("create", response, f'wanted ETag "1", got {response.headers.get("etag")!r}')
        return Tracked(location.rsplit("/", 1)[1], toggle.initial.name, 1)

    def get(self, r: Tracked) -> None:
        response = self.client.get(f"/v1/resources/{r.id}")
        if response.status_code != 200 or response.headers.get("etag") != f'"{r.version}"':
            raise self._refuse("get", response, f'wanted 200 with ETag "{r.version}"')

    def fire(self, r: Tracked) -> None:
        response = self.client.post(
            f"/v1/resources/{r.id}/events",
            content=EVENT_BODY[r.state],
            headers={"Content-Type": JSON, "If-Match": f'"{r.version}"'},
        )
        if response.status_code != 200 or response.headers.get("etag") != f'"{r.version + 1}"':
            raise self._refuse("event", response, f'wanted 200 with ETag "{r.version + 1}"')
        r.state, r.version = NEXT[r.state][1], r.version + 1

    def close(self) -> None:
        self.client.close()


class DirectTarget:
    """The calls the endpoints make, on a store in this process (shared by every thread, like the server's)."""

    def __init__(self, store: EngineStore) -> None:
        self.store = store

    def create(self) -> Tracked:
        r = self.store.create(KIND, {}, actor=CLIENT_NAME)
        if r.version != 1:
            raise BadAnswer("create", f"new resource at version {r.version}")
        return Tracked(r.id, r.state, r.version)

    def get(self, r: Tracked) -> None:
        found = self.store.get(r.id)
        if found.version != r.version:
            raise BadAnswer("get", f"{r.id} at version {found.version}, not {r.version}")

    def fire(self, r: Tracked) -> None:
        event, target = NEXT[r.state]
        after = self.store.fire(r.id, event, expected_version=r.version, data=None, actor=CLIENT_NAME)
        if after.version != r.version + 1 or after.state != target:
            raise BadAnswer("event", f"{r.id} went to {after.state} v{after.version}")
        r.state, r.version = target, after.version

    def close(self) -> None:
        pass


# --- running a phase ---------------------------------------------------------------------------


@dataclass
class Phase:
    op: str
    store: str
    via: str  # "HTTP" or "direct"
    clients: int
    done: int
    seconds: float
    latencies_ns: list[int]
    bench_cpu: float  # this process's CPU seconds over the phase
    server_cpu: float | None  # the server process's
    time_limited: bool
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.done / self.seconds

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ns)
        return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))] / 1e6


class BenchFailed(Exception):
    pass


def run_phase(
    targets: Sequence[Target],
    op: str,
    pool: list[Tracked],
    *,
    count: int,
    time_limit: float,
    warmup: int,
    server_pid: int | None,
    labels: tuple[str, str],
) -> Phase:
    """``count`` operations split over one thread per target (each first runs ``warmup`` untimed ones),
    stopping early after ``time_limit`` seconds. Creates are added to ``pool``; gets and events go to
    ``pool[i::clients]`` for thread ``i``, so no two threads fire at the same resource."""
    clients = len(targets)
    if op != "create" and len(pool) < clients:
        raise BenchFailed(f"{op}: only {len(pool)} resources for {clients} clients")
    shares = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    slices = [pool[i::clients] for i in range(clients)]
    created: list[list[Tracked]] = [[] for _ in range(clients)]
    latencies: list[list[int]] = [[] for _ in range(clients)]
    errors: Counter[str] = Counter()
    examples: list[str] = []
    crashed: list[BaseException] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    go = threading.Barrier(clients + 1)
    deadline = [0.0]

    def body(i: int) -> None:
        target, work, lat, made = targets[i], slices[i], latencies[i], created[i]

        def attempt(j: int) -> bool:
            try:
                if op == "create":
                    made.append(target.create())
                elif op == "get":
                    target.get(work[j % len(work)])
                else:
                    target.fire(work[j % len(work)])
            except Exception as exc:
                key, detail = (exc.key, exc.detail) if isinstance(exc, BadAnswer) else (type(exc).__name__, str(exc))
                with lock:
                    errors[key] += 1
                    if len(examples) < 5:
                        examples.append(f"{key}: {detail}")
                return False
            return True

        try:
            for j in range(warmup):
                attempt(j)
            ready.wait()
            go.wait()
            clock, ns, end = time.perf_counter, time.perf_counter_ns, deadline[0]
            for j in range(warmup, warmup + shares[i]):
                if clock() > end:
                    break
                t0 = ns()
                if attempt(j):
                    lat.append(ns() - t0)
        except BaseException as exc:
            crashed.append(exc)
            for b in (ready, go):
                b.abort()

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    cpu0, server0, t0 = 0.0, 0.0, time.perf_counter()
    try:
        ready.wait()
        cpu0, server0 = time.process_time(), process_cpu(server_pid) if server_pid else 0.0
        t0 = time.perf_counter()
        deadline[0] = t0 + time_limit
        go.wait()
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if crashed:
        raise crashed[0]
    for made in created:
        pool.extend(made)
    done = sum(len(lat) for lat in latencies)
    return Phase(
        op=op,
        store=labels[0],
        via=labels[1],
        clients=clients,
        done=done,
        seconds=elapsed,
        latencies_ns=[x for lat in latencies for x in lat],
        bench_cpu=time.process_time() - cpu0,
        server_cpu=process_cpu(server_pid) - server0 if server_pid else None,
        time_limited=done + sum(errors.values()) < count,
        errors=errors,
        examples=examples,
    )


def _check(phase: Phase) -> Phase:
    if phase.errors:
        counts = ", ".join(f"{n} x {key}" for key, n in phase.errors.most_common())
        raise BenchFailed(
            f"{phase.store} {phase.via} {phase.op} with {phase.clients} client(s): {sum(phase.errors.values())} "
            f"bad answer(s) ({counts}); first ones:\n  " + "\n  ".join(phase.examples)
        )
    if phase.done == 0:
        raise BenchFailed(f"{phase.store} {phase.via} {phase.op}: no request completed")
    return phase


@dataclass(frozen=True)
class Budget:
    count: int  # requests per timed phase
    time_limit: float  # seconds at most per timed phase
    warmup: int  # untimed requests per client before each phase
    first_warmup: int  # untimed requests of each operation (8 clients) before the first phase
    repeats: int  # runs of each phase; the fastest is kept
    wrk_seconds: int  # length of each timed wrk run


def run_all(
    make: Callable[[], Target],
    pool: list[Tracked],
    *,
    budget: Budget,
    labels: tuple[str, str],
    console: Console,
    server_pid: int | None = None,
) -> list[Phase]:
    """Warm up, then every operation with 1 and 8 clients; stops at the first bad answer."""

    def phase(op: str, clients: int, count: int, warmup: int) -> Phase:
        targets = [make() for _ in range(clients)]
        try:
            return _check(
                run_phase(
                    targets,
                    op,
                    pool,
                    count=count,
                    time_limit=budget.time_limit,
                    warmup=warmup,
                    server_pid=server_pid,
                    labels=labels,
                )
            )
        finally:
            for t in targets:
                t.close()

    with console.status(f"{labels[0]} {labels[1]}: warming up"):
        for op in OPS:
            phase(op, max(CLIENTS), budget.first_warmup, 0)
    out = []
    for op in OPS:
        for clients in CLIENTS:
            with console.status(f"{labels[0]} {labels[1]}: {op}, {clients} client(s)"):
                runs = [phase(op, clients, budget.count, budget.warmup) for _ in range(budget.repeats)]
            out.append(max(runs, key=lambda p: p.rate))
    return out


def verify(url: str, pool: Sequence[Tracked], ahead: Sequence[Tracked] = ()) -> None:
    """Every resource the clients made is in the database at the version they last saw (no lost write).

    A resource in ``ahead`` had a request on the wire when wrk stopped, which the server may have applied
    without wrk reading the answer: it is where the client last saw it or exactly one event further."""
    store = open_store(url, [toggle])
    try:
        seen: dict[str, tuple[str, int]] = {}
        after: str | None = None
        while True:
            page = store.list(kind=KIND, after=after, limit=1000)
            seen.update((r.id, (r.state, r.version)) for r in page.items)
            if page.next_after is None:
                break
            after = page.next_after
    finally:
        store.close()
    wrong = [(r.id, (r.state, r.version), seen.get(r.id)) for r in pool if seen.get(r.id) != (r.state, r.version)]
    wrong += [
        (r.id, (r.state, r.version), seen.get(r.id))
        for r in ahead
        if seen.get(r.id) not in {(r.state, r.version), (NEXT[r.state][1], r.version + 1)}
    ]
    if wrong:
        raise BenchFailed(f"{len(wrong)} resource(s) not as the clients last saw them, e.g. {wrong[:3]}")


# --- the server --------------------------------------------------------------------------------


class Server:
    """``tenure serve --workers 0`` in a subprocess, with auth on and the bench kind loaded."""

    def __init__(self, database: str, directory: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_urlsafe(24)[:32]
        self.args = [
            *tenure_command(),
            "serve",
            "--port",
            str(self.port),
            "--database",
            database,
            "--workers",
            "0",
            "--kinds",
            "bench_kinds",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENURE_")}
        env["TENURE_TOKENS"] = f"{CLIENT_NAME}:{self.token}:admin"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
        self.log_path = os.path.join(directory, f"serve-{self.port}.log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(self.args, cwd=directory, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log_tail(self, lines: int = 30) -> str:
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until /readyz answers 200; then check that requests without a valid token are refused."""
        end = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise BenchFailed(f"tenure serve exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > end:
                    raise BenchFailed(f"tenure serve not ready after {timeout:g} s:\n{self.log_tail()}")
                time.sleep(0.05)
            for headers in ({}, {"Authorization": f"Bearer {'x' * 32}"}):
                status = client.get("/v1/resources", params={"limit": 1}, headers=headers).status_code
                if status != 401:
                    raise BenchFailed(f"auth is not on: GET /v1/resources with headers {headers} answered {status}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@contextmanager
def serving(database: str, directory: str) -> Iterator[Server]:
    server = Server(database, directory)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


# --- wrk ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkRun:
    """One timed wrk run, as ``api_wrk.lua``'s ``done()`` reported it (latencies in microseconds)."""

    op: str
    store: str
    requests: int
    seconds: float
    latency_us: dict[str, float]
    server_cpu: float  # the server process's CPU seconds over the run
    wrk_cpu: float  # wrk's

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class WrkResult:
    run: WrkRun
    created: list[str]  # create: the ids the answers named
    resources: list[Tracked]  # get, event: each resource as the script last saw it
    in_flight: set[str]  # event: the resources whose request had no answer read when wrk stopped


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_wrk(
    wrk: str, server: Server, op: str, *, label: str, seconds: int, work: Sequence[Tracked], directory: str
) -> WrkResult:
    """One wrk run of ``op`` for ``seconds`` against ``server``, ``work`` dealt round-robin to its threads;
    raises :class:`BenchFailed` on any socket error, unexpected answer or inconsistency in what it reports."""
    where = f"{label} wrk {op}"
    stem = os.path.join(directory, f"wrk-{server.port}-{op}")
    in_path, out_path = f"{stem}.in", f"{stem}.json"
    with open(in_path, "w") as f:
        f.writelines(f"{i % WRK_CONNECTIONS + 1} {r.id} {r.state} {r.version}\n" for i, r in enumerate(work))
    with contextlib.suppress(FileNotFoundError):
        os.remove(out_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENURE_")}
    env |= {
        "TENURE_WRK_MODE": op,
        "TENURE_WRK_TOKEN": server.token,
        "TENURE_WRK_IN": in_path,
        "TENURE_WRK_OUT": out_path,
        "TENURE_WRK_CREATE": CREATE_BODY.decode(),
        "TENURE_WRK_EVENTS": "\n".join(f"{s} {NEXT[s][1]} {body.decode()}" for s, body in EVENT_BODY.items()),
    }
    command = [
        wrk,
        f"-t{WRK_CONNECTIONS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        WRK_SCRIPT,
        f"{server.base_url}/v1/resources",
    ]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = process_cpu(server.proc.pid)
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchFailed(f"{where}: wrk still running {seconds + 60} s after it was started") from exc
    server_cpu = process_cpu(server.proc.pid) - server_cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    if proc.returncode != 0 or not os.path.exists(out_path):
        raise BenchFailed(
            f"{where}: wrk exited with {proc.returncode} (report written: {os.path.exists(out_path)}):\n"
            f"{_tail(proc.stdout + proc.stderr)}"
        )
    with open(out_path) as f:
        out: dict[str, Any] = json.load(f)
    requests, ok, bad = int(out["requests"]), int(out["ok"]), int(out["bad"])
    problems = [f"{n} socket {kind} error(s)" for kind, n in out["socket_errors"].items() if n]
    if out["non_2xx_3xx"]:
        problems.append(f"{out['non_2xx_3xx']} non-2xx/3xx answer(s)")
    if bad:
        problems.append(f"{bad} answer(s) the script refused")
    if ok + bad != requests:
        problems.append(f"wrk counted {requests} answers, the script {ok + bad}")
    if requests == 0:
        problems.append("no request completed")
    if out["threads"] != WRK_CONNECTIONS:
        problems.append(f"{out['threads']} wrk threads, not {WRK_CONNECTIONS}")
    resources = [Tracked(str(i), str(state), int(v)) for i, state, v in out["resources"]]
    if op != "create" and sorted(r.id for r in resources) != sorted(r.id for r in work):
        problems.append(f"the script reported {len(resources)} resources, not the {len(work)} it was given")
    if op == "event":
        # Each answered event moved its resource exactly one version on.
        before = {r.id: r.version for r in work}
        moved = sum(r.version - before.get(r.id, r.version) for r in resources)
        if moved != ok:
            problems.append(f"{ok} events answered 200, but the resources moved {moved} versions")
    if problems:
        examples = "".join(f"\n  {e}" for e in out["examples"])
        raise BenchFailed(f"{where}: " + "; ".join(problems) + examples + f"\nwrk said:\n{_tail(proc.stdout)}")
    run = WrkRun(
        op=op,
        store=label,
        requests=requests,
        seconds=int(out["duration_us"]) / 1e6,
        latency_us={str(k): float(v) for k, v in out["latency_us"].items()},
        server_cpu=server_cpu,
        wrk_cpu=wrk_cpu,
    )
    in_flight = {str(i) for i in out["in_flight"]} if op == "event" else set()
    return WrkResult(run, [str(i) for i in out["created"]], resources, in_flight)


def wrk_phases(
    wrk: str,
    server: Server,
    *,
    label: str,
    seconds: int,
    repeats: int,
    directory: str,
    pool: list[Tracked],
    ahead: list[Tracked],
    console: Console,
) -> list[WrkRun]:
    """get, create and event under wrk, each a warm-up run then ``repeats`` timed ones (the fastest is
    kept). Every resource they touch goes to ``pool`` (or ``ahead``, see :func:`verify`) as the script
    last saw it."""

    def fresh(n: int) -> list[Tracked]:
        made: list[Tracked] = []
        targets = [HttpTarget(server.base_url, server.token) for _ in range(WRK_CONNECTIONS)]
        try:
            _check(
                run_phase(
                    targets,
                    "create",
                    made,
                    count=n,
                    time_limit=120.0,
                    warmup=0,
                    server_pid=None,
                    labels=(label, "HTTP"),
                )
            )
        finally:
            for t in targets:
                t.close()
        if len(made) != n:
            raise BenchFailed(f"{label}: made {len(made)} resources for wrk, not {n}")
        return made

    to_get = fresh(WRK_RESOURCES)
    pool.extend(to_get)
    runs = []
    for op in WRK_OPS:
        timed: list[WrkRun] = []
        lengths = [(WRK_WARMUP, "warm-up")] + [
            (seconds, f"{seconds} s, run {n} of {repeats}") for n in range(1, repeats + 1)
        ]
        for n, (length, what) in enumerate(lengths):
            with console.status(f"{label} wrk: {op}, {what}"):
                work = to_get if op == "get" else fresh(WRK_RESOURCES) if op == "event" else []
                result = run_wrk(wrk, server, op, label=label, seconds=length, work=work, directory=directory)
            pool.extend(Tracked(i, toggle.initial.name, 1) for i in result.created)
            if op == "event":
                for r in result.resources:
                    (ahead if r.id in result.in_flight else pool).append(r)
            if n > 0:
                timed.append(result.run)
        runs.append(max(timed, key=lambda run: run.rate))
    return runs


# --- one store ---------------------------------------------------------------------------------


def _migrate(url: str) -> None:
    """As ``tenure migrate`` does: the built-in kinds' own tables too, which ``tenure serve`` checks on PostgreSQL."""
    store = open_store(url, check_schema=False, tables=builtin_tables())
    try:
        store.migrate()
    finally:
        store.close()


def bench_store(
    label: str, url: str, directory: str, budget: Budget, console: Console, *, wrk: str | None
) -> tuple[list[Phase], list[WrkRun], str]:
    """Direct phases (no server running), then HTTP phases against ``tenure serve``, then (with ``wrk``)
    the wrk phases against the same server; the server's command."""
    _migrate(url)
    direct_pool: list[Tracked] = []
    store = open_store(url, [toggle], pool_size=SERVE_POOL)
    try:
        phases = run_all(
            lambda: DirectTarget(store), direct_pool, budget=budget, labels=(label, "direct"), console=console
        )
    finally:
        store.close()
    http_pool: list[Tracked] = []
    ahead: list[Tracked] = []
    wrk_runs: list[WrkRun] = []
    with serving(url, directory) as server:
        command = " ".join(server.args).replace(server.token, "…")
        phases += run_all(
            lambda: HttpTarget(server.base_url, server.token),
            http_pool,
            budget=budget,
            labels=(label, "HTTP"),
            console=console,
            server_pid=server.proc.pid,
        )
        if wrk is not None:
            wrk_runs = wrk_phases(
                wrk,
                server,
                label=label,
                seconds=budget.wrk_seconds,
                repeats=budget.repeats,
                directory=directory,
                pool=http_pool,
                ahead=ahead,
                console=console,
            )
    verify(url, direct_pool + http_pool, ahead)
    return phases, wrk_runs, command


# --- the table ---------------------------------------------------------------------------------


def _cpu(seconds: float | None, wall: float) -> str:
    return "—" if seconds is None else f"{100 * seconds / wall:.0f}%"


def table(phases: Sequence[Phase], budget: Budget) -> Table:
    out = Table(
        title=f"requests per second (best of {budget.repeats}; {budget.count:,} requests or {budget.time_limit:g} s ¹)",
        title_justify="left",
    )
    for name, justify in (
        ("what", "left"),
        ("store", "left"),
        ("clients", "right"),
        ("via", "left"),
        ("requests", "right"),
        ("req/s", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("vs direct ²", "right"),
        ("bench CPU ³", "right"),
        ("server CPU ³", "right"),
    ):
        out.add_column(name, justify=justify)  # type: ignore[arg-type]
    direct = {(p.store, p.op, p.clients): p for p in phases if p.via == "direct"}
    order = {op: i for i, op in enumerate(OPS)}
    stores = list(dict.fromkeys(p.store for p in phases))
    rows = sorted(phases, key=lambda p: (stores.index(p.store), order[p.op], p.clients, p.via != "direct"))
    for i, p in enumerate(rows):
        ref = direct.get((p.store, p.op, p.clients))
        ratio = "—" if p.via == "direct" or ref is None else f"{ref.rate / p.rate:.1f}x slower"
        out.add_row(
            p.op if p.via == "direct" else "",
            p.store if p.via == "direct" else "",
            str(p.clients) if p.via == "direct" else "",
            p.via,
            f"{p.done:,}" + ("*" if p.time_limited else ""),
            f"{p.rate:,.0f}",
            f"{p.percentile_ms(0.50):.2f}",
            f"{p.percentile_ms(0.99):.2f}",
            ratio,
            _cpu(p.bench_cpu, p.seconds),
            _cpu(p.server_cpu, p.seconds),
            style="dim" if p.via == "direct" else None,
            end_section=i + 1 < len(rows) and rows[i + 1].via == "direct" and rows[i + 1].op != p.op,
        )
    return out


def _ratio(value: float, floor: float) -> str:
    return f"{value:.2f} {'✓' if value >= floor else '✗'}"


def wrk_table(runs: Sequence[WrkRun], phases: Sequence[Phase], budget: Budget) -> Table:
    out = Table(
        title=(
            f"wrk against `tenure serve --workers 0`: -t{WRK_CONNECTIONS} -c{WRK_CONNECTIONS}, "
            f"the fastest of {budget.repeats} run(s) of {budget.wrk_seconds} s per operation, after a "
            f"{WRK_WARMUP} s warm-up ⁴"
        ),
        title_justify="left",
    )
    for name, justify in (
        ("what", "left"),
        ("store", "left"),
        ("requests", "right"),
        ("req/s", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("target", "right"),
        ("vs target", "right"),
        ("vs SQLite ⁵", "right"),
        ("direct ⁶", "right"),
        ("CPU server/wrk ³", "right"),
    ):
        out.add_column(name, justify=justify)  # type: ignore[arg-type]
    direct = {(p.store, p.op): p.rate for p in phases if p.via == "direct" and p.clients == WRK_CONNECTIONS}
    sqlite = {r.op: r.rate for r in runs if r.store == "SQLite"}
    stores = list(dict.fromkeys(r.store for r in runs))
    rows = sorted(runs, key=lambda r: (WRK_OPS.index(r.op), stores.index(r.store)))
    for i, r in enumerate(rows):
        # The req/s are SQLite's; PostgreSQL's are within 30% of them.
        target = round(WRK_TARGETS[r.op] * (1 if r.store == "SQLite" else PG_WITHIN))
        versus = "—" if r.store == "SQLite" or r.op not in sqlite else _ratio(r.rate / sqlite[r.op], PG_WITHIN)
        reference = direct.get((r.store, r.op))
        out.add_row(
            r.op,
            r.store,
            f"{r.requests:,}",
            f"{r.rate:,.0f}",
            f"{r.latency_us['50'] / 1e3:.2f}",
            f"{r.latency_us['99'] / 1e3:.2f}",
            f"{target:,}",
            _ratio(r.rate / target, 1.0),
            versus,
            "—" if reference is None else f"{reference:,.0f}",
            f"{_cpu(r.server_cpu, r.seconds)} / {_cpu(r.wrk_cpu, r.seconds)}",
            end_section=i + 1 < len(rows) and rows[i + 1].op != r.op,
        )
    return out


FOOTNOTES = """\
Each row is the fastest of {repeats} run(s): in each, the clients (threads of this process) warm up with {warmup}
untimed requests each, then share the requests; a run stops at {count:,} requests or after {limit:g} s (marked *).
Every answer of every run is checked: status (201 create, 200 get and event), ETag (the version the client
expects) and Location; at the end every resource's version in the database must be the one its client saw.
HTTP: `tenure serve --workers 0` (no engine workers; on PostgreSQL a pool of {pool} connections, which the
direct rows get too), auth on (a bearer token in TENURE_TOKENS), one keep-alive httpx connection per client.
Events are `POST .../events` with If-Match on the client's own resources, alternating turn_on/turn_off.
Direct: the calls the endpoints make, in this process, before the server starts: store.create(kind, {{}}),
store.get(id), store.fire(id, event, expected_version=v). That fire reads the row, then writes; the server
plans an event pinned to the answer it last gave from that answer, and only writes (tenure.service.snapshots).
  ¹ SQLite is the file store with synchronous={sync}; PostgreSQL a scratch database with the server's default
    synchronous_commit. Creates and events commit once each and wait for the disk's flush; gets only read.
  ² direct req/s over HTTP req/s: how many times longer a request takes through the API.
  ³ CPU time over the run's wall time (100% = one core; this machine has {cpus}). Bench: this process
    (direct: the store calls themselves; HTTP: the httpx clients). Server: the `tenure serve` process.
    PostgreSQL's own processes are not counted, though they run on the same cores. wrk: the wrk process.
"""

WRK_FOOTNOTES = """\
  ⁴ wrk, a C client, so that the clients take little of the server's CPU; run after the httpx rows, against
    the same server. {threads} threads with one keep-alive connection each: each thread's Lua state
    (bench/api_wrk.lua) has one request out at a time and pins the version its last answer gave. get cycles
    over {resources} resources made for it, event over {resources} fresh ones per run (dealt to the threads, none
    shared), firing the event that leaves each one's state, with If-Match; create posts the httpx rows' body.
    The Lua script checks every answer (status, ETag, Location); one it refuses, a non-2xx answer or a socket
    error fails the run. Every resource touched is checked in the database at the end; the one request per
    thread still out when wrk stops may have been applied unseen, so that resource may be one event further.
    Latency is wrk's, from the request written to the answer read. Target: the issue's req/s for one process
    with 8 connections (SQLite's; PostgreSQL's are {within:.0%} of them); vs target: req/s over it (✓ when at
    least 1).
  ⁵ PostgreSQL req/s over SQLite req/s; the issue asks for PostgreSQL within 30% (✓ when at least {within:.2f}).
  ⁶ req/s of the direct row with 8 threads in the first table: the same call on a store in-process, no HTTP.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs, for a smoke test (under a minute)")
    parser.add_argument("--skip-postgres", action="store_true", help="leave PostgreSQL out")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TENURE_BENCH_POSTGRES_URL", DEFAULT_PG_URL),
        help="admin URL; a scratch database is created next to it and dropped at the end (default: %(default)s)",
    )
    parser.add_argument(
        "--sqlite-synchronous", choices=("full", "normal"), default="full", help="default: %(default)s (as serve)"
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    budget = (
        Budget(count=400, time_limit=0.75, warmup=5, first_warmup=40, repeats=1, wrk_seconds=2)
        if quick
        else Budget(count=3000, time_limit=3.0, warmup=20, first_warmup=200, repeats=2, wrk_seconds=5)
    )
    console = Console(width=max(shutil.get_terminal_size((132, 40)).columns, 132))
    console.print(
        f"[bold]tenure API benchmark[/bold]{' (quick)' if quick else ''}: Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs (load {os.getloadavg()[0]:.2f}); "
        f"SQLite {sqlite3.sqlite_version}, tenure {version('tenure')}, httpx {version('httpx')}, "
        f"uvicorn {version('uvicorn')}, fastapi {version('fastapi')}"
    )
    wrk = shutil.which("wrk")
    if wrk is None:
        console.print("wrk is not installed (Debian package `wrk`): the wrk phases are skipped.", highlight=False)
    else:
        wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False).stdout
        console.print(f"wrk: {wrk_version.strip().splitlines()[0] if wrk_version.strip() else wrk}", highlight=False)
    started = time.perf_counter()
    phases: list[Phase] = []
    wrk_runs: list[WrkRun] = []
    commands: list[str] = []
    notes: list[str] = [] if wrk else ["wrk is not installed (Debian package `wrk`): no wrk rows."]
    directory = tempfile.mkdtemp(prefix="tenure-bench-api-")
    try:
        path = os.path.join(directory, "api.db")
        done, by_wrk, command = bench_store(
            "SQLite", f"sqlite:///{path}?synchronous={args.sqlite_synchronous}", directory, budget, console, wrk=wrk
        )
        phases += done
        wrk_runs += by_wrk
        commands.append(command)
        if args.skip_postgres:
            notes.append("PostgreSQL skipped (--skip-postgres).")
        else:
            try:
                with scratch_database(args.postgres_url) as url:
                    done, by_wrk, command = bench_store("PostgreSQL", url, directory, budget, console, wrk=wrk)
                    phases += done
                    wrk_runs += by_wrk
                    commands.append(command)
            except psycopg.OperationalError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                notes.append(f"PostgreSQL unreachable at {args.postgres_url} ({first}); SQLite only.")
    except BenchFailed as exc:
        if phases:
            console.print(table(phases, budget))
        if wrk_runs:
            console.print(wrk_table(wrk_runs, phases, budget))
        console.print(f"[bold red]FAILED:[/bold red] {exc}", highlight=False)
        return 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    console.print(table(phases, budget))
    if wrk_runs:
        console.print(wrk_table(wrk_runs, phases, budget))
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]")
    wrk_notes = WRK_FOOTNOTES.format(threads=WRK_CONNECTIONS, resources=WRK_RESOURCES, within=PG_WITHIN)
    console.print(
        FOOTNOTES.format(
            repeats=budget.repeats,
            warmup=budget.warmup,
            count=budget.count,
            limit=budget.time_limit,
            pool=SERVE_POOL,
            sync=args.sqlite_synchronous.upper(),
            cpus=os.cpu_count(),
        )
        + (wrk_notes if wrk_runs else ""),
        highlight=False,
        markup=False,
    )
    for command in commands:
        console.print(f"server: {command}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"whole run {time.perf_counter() - started:.0f} s (load {os.getloadavg()[0]:.2f})", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
