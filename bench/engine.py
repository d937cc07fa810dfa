"""Engine benchmark: transfer lifecycles per second, callback latency, and idle database load.

* **Lifecycles**: full ``transfer`` lifecycles (create → ... → started, the client fires ``complete``,
  → ... → deprovisioned: 10 transitions) with synchronous provisioners, on PostgreSQL with 1 and 2
  worker processes and on SQLite with one in-process worker.
* **Callback latency**: an asynchronous provisioner leaves each transfer in ``provisioning_requested``;
  the benchmark delivers the callback from another process and reads, from the journal and the inbox,
  how long it took until the callback was applied and until the next step had run.
  Eclipse EDC's state machine polls every second by default, so it waits 0 to 1 s for each hop.
* **Idle load**: database transactions per second per idle worker (PostgreSQL's own counters).

``--preload N`` runs every part on a store that already holds N transfers, loaded by ``bench/load.py`` (the
mix of ``bench/scale.py``: mostly finished with their whole history, 1% due, 1% waiting). The workers and
this process then run on a clock two days behind, so that the loaded backlog is not due for them, and the
benchmark follows only the transfers it made.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import platform
import queue as queue_module
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load as loader
import queue_peer
from benchkit import scratch_database, unshadow, version
from queue_peer import QueueRate

unshadow()


from tenure.engine import Worker  # noqa: E402
from tenure.engine.provision import MemoryProvisioner, ProvisionRequest, ProvisionResult  # noqa: E402
from tenure.kinds.transfer import transfer_kind, transfer_steps  # noqa: E402
from tenure.store import open_store  # noqa: E402
from tenure.store.inbox import token_hash  # noqa: E402
from tenure.store.protocol import EngineStore  # noqa: E402

#: The transfer kind (version 1) open to every provisioner type: the bench serves its own (async, recording).
transfer = transfer_kind()

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TRANSITIONS_PER_LIFECYCLE = 10
#: Steps each worker process runs at once (tenure worker's default).
CONCURRENCY = 16
#: --preload: how far behind the machine's clock the workers and this process run (the loaded backlog,
#: stamped on the machine's clock, is then not due for them).
PRELOAD_BEHIND = 2 * 86400.0
#: --preload N (0: an empty store).
PRELOAD = 0


def _clock_kwargs(preload: int) -> dict[str, Any]:
    """``open_store`` keywords for a store on a preloaded database (its clock behind), or none."""
    return {"clock": loader.shifted_clock(PRELOAD_BEHIND)} if preload else {}


def _preload(url: str, preload: int) -> None:
    """Load ``preload`` transfers into the migrated store at ``url`` (nothing when 0)."""
    if not preload:
        return
    print(f"  preloading {preload:,} transfers ...", file=sys.stderr, flush=True)
    loaded = loader.load(url, preload)
    loader.analyze(url)
    store = open_store(url, [transfer])
    try:
        loader.check_backlog(store, loaded)
    finally:
        store.close()


class AnnouncingProvisioner(MemoryProvisioner):
    """Asynchronous: answers pending and tells the benchmark the token to call back with."""

    def __init__(self, queue: Any) -> None:
        super().__init__(asynchronous=True)
        self.queue = queue

    def provision(self, request: ProvisionRequest) -> ProvisionResult:
        result = super().provision(request)
        self.queue.put((request.resource_id, request.key, request.token))
        return result


def _steps(queue: Any | None) -> Any:
    plugins: dict[str, object] = {"memory": MemoryProvisioner()}
    if queue is not None:
        plugins["async"] = AnnouncingProvisioner(queue)
    return transfer_steps(plugins, kind=transfer)


def _worker_main(
    url: str, stop: Any, ready: Any, queue: Any | None, *, concurrency: int, cpu: Any, preload: int = 0
) -> None:
    store = open_store(url, [transfer], **_clock_kwargs(preload))
    worker = Worker(store, _steps(queue), concurrency=concurrency)
    threading.Thread(target=lambda: (stop.wait(), worker.request_stop()), daemon=True).start()
    ready.set()
    started = time.process_time()  # imports and start-up left out: the CPU the work itself took
    try:
        worker.run()
    finally:
        store.close()
        cpu.put((time.process_time() - started, worker.stats.steps_run))


class Workers:
    """Worker processes on a PostgreSQL database, stopped (SIGTERM-like) at the end."""

    def __init__(
        self, url: str, count: int, *, queue: Any | None = None, concurrency: int = 4, preload: int = 0
    ) -> None:
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        self._cpu = ctx.Queue()
        #: After close: (CPU seconds, steps run) of each worker process while it ran.
        self.cpu: list[tuple[float, int]] = []
        self.procs = []
        for _ in range(count):
            ready = ctx.Event()
            args = (url, self.stop, ready, queue)
            kwargs = {"concurrency": concurrency, "cpu": self._cpu, "preload": preload}
            p = ctx.Process(target=_worker_main, args=args, kwargs=kwargs, daemon=True)
            p.start()
            ready.wait(30)
            self.procs.append(p)
        time.sleep(0.5)  # let each worker's listener connect

    def close(self) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        with contextlib.suppress(queue_module.Empty):
            for _ in self.procs:
                self.cpu.append(self._cpu.get(timeout=5))


def _drive(store: EngineStore, count: int, spec: dict[str, Any]) -> float:
    """Create ``count`` transfers, complete each once started, wait until all are deprovisioned.

    The client follows its transfers through the change feed, as a client would (and as it must on
    a preloaded store, which holds other transfers in every state): its reads cost what is new.
    """
    started = time.perf_counter()
    loader.drive_lifecycles(store, count, window=count, spec=spec)
    return time.perf_counter() - started


@dataclass
class Lifecycles:
    label: str
    count: int
    seconds: float
    #: Writing transactions meanwhile (PostgreSQL; None elsewhere), the client's creates and events included.
    commits: int | None = None
    #: CPU seconds the worker processes took and the steps they ran (PostgreSQL; None elsewhere).
    worker_cpu: tuple[float, int] | None = None

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def cpu_per_step(self) -> str:
        """Worker CPU per step run, in milliseconds (every thread of the process: loop, steps, pool)."""
        if self.worker_cpu is None or not self.worker_cpu[1]:
            return "—"
        return f"{1000 * self.worker_cpu[0] / self.worker_cpu[1]:.2f}"

    @property
    def commits_per_transition(self) -> str:
        return "—" if self.commits is None else f"{self.commits / (self.count * TRANSITIONS_PER_LIFECYCLE):.2f}"


def lifecycles_postgres(
    admin_url: str, workers: int, count: int, preload: int = 0, concurrency: int = CONCURRENCY
) -> Lifecycles:
    with scratch_database(admin_url) as url:
        _migrate(url)
        _preload(url, preload)
        pool = Workers(url, workers, preload=preload, concurrency=concurrency)
        store = open_store(url, [transfer], **_clock_kwargs(preload))
        try:
            before = queue_peer.writing_transactions(url)
            seconds = _drive(store, count, {})
            commits = queue_peer.writing_transactions(url) - before
        finally:
            store.close()
            pool.close()
    cpu = (sum(c for c, _ in pool.cpu), sum(n for _, n in pool.cpu)) if len(pool.cpu) == workers else None
    label = f"PostgreSQL, {workers} worker process{'es' if workers > 1 else ''} ({concurrency} steps each)"
    return Lifecycles(label, count, seconds, commits, cpu)


def queue_postgres(admin_url: str, jobs: int) -> QueueRate | None:
    """pgqueuer (the bench extra) draining ``jobs`` no-op jobs with one process on a scratch database."""
    if not queue_peer.installed():
        return None
    with scratch_database(admin_url) as url:
        return queue_peer.drain(url, jobs)


def lifecycles_sqlite(count: int, synchronous: str, preload: int = 0) -> Lifecycles:
    path = os.path.join(tempfile.mkdtemp(prefix="tenure-bench-engine-"), "engine.db")
    url = f"sqlite:///{path}?synchronous={synchronous}"
    _migrate(url)
    _preload(url, preload)
    store = open_store(url, [transfer], **_clock_kwargs(preload))
    worker = Worker(store, _steps(None), concurrency=4).start()
    try:
        seconds = _drive(store, count, {})
    finally:
        worker.stop()
        store.close()
    return Lifecycles(f"SQLite {synchronous.upper()}, 1 worker (in-process)", count, seconds)


def _migrate(url: str) -> None:
    store = open_store(url, check_schema=False)
    try:
        store.migrate()
    finally:
        store.close()


@dataclass
class Latency:
    label: str
    applied_ms: list[float]
    next_step_ms: list[float]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _latency_samples(store: EngineStore, queue: Any, samples: int, pause: float) -> tuple[list[float], list[float]]:
    applied, next_step = [], []
    spec = {"resources": [{"id": "bucket", "type": "async"}]}
    for i in range(samples):
        r = store.create("transfer", {**spec, "asset": f"lat-{i}"})
        resource_id, key, token = queue.get(timeout=30)
        assert resource_id == r.id
        while store.get(r.id).state != "provisioning_requested":
            time.sleep(0.0005)
        time.sleep(pause)  # let the worker go idle, so the wake-up path is what is measured
        receipt = store.deliver(r.id, token, key, "done", data={"url": f"mem://{i}"})
        assert receipt.accepted, receipt
        received = store.callbacks(token_hash(token))[0].received_at
        entries: dict[str, Any] = {}
        for _ in range(20_000):
            entries = {e.event: e.at for e in store.journal(r.id)}
            if "request" in entries:
                break
            time.sleep(0.01)  # the timings come from the journal, so polling slowly costs no accuracy
        applied.append((entries["provisioned"] - received).total_seconds() * 1000)
        next_step.append((entries["request"] - received).total_seconds() * 1000)
    return applied, next_step


def latency_postgres(admin_url: str, samples: int, pause: float, preload: int = 0) -> Latency:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with scratch_database(admin_url) as url:
        _migrate(url)
        _preload(url, preload)
        pool = Workers(url, 1, queue=queue, preload=preload)
        store = open_store(url, [transfer], **_clock_kwargs(preload))
        try:
            applied, nxt = _latency_samples(store, queue, samples, pause)
        finally:
            store.close()
            pool.close()
    return Latency("PostgreSQL, callback from another process (LISTEN/NOTIFY wake-up)", applied, nxt)


def latency_sqlite(samples: int, pause: float, preload: int = 0) -> Latency:
    import queue as stdlib_queue

    q: stdlib_queue.Queue[tuple[str, str, str]] = stdlib_queue.Queue()
    path = os.path.join(tempfile.mkdtemp(prefix="tenure-bench-engine-"), "latency.db")
    url = f"sqlite:///{path}"
    _migrate(url)
    _preload(url, preload)
    store = open_store(url, [transfer], **_clock_kwargs(preload))
    worker = Worker(store, _steps(q), concurrency=4).start()
    try:
        applied, nxt = _latency_samples(store, q, samples, pause)
    finally:
        worker.stop()
        store.close()
    return Latency("SQLite FULL, callback in the worker's process", applied, nxt)


def _idle_main(url: str, seconds: float, out: Any, preload: int = 0) -> None:
    store = open_store(url, [transfer], **_clock_kwargs(preload))
    worker = Worker(store, _steps(None)).start()
    try:
        time.sleep(3.0)  # settle: the first passes after start are not idle
        before = store.operations
        time.sleep(seconds)
        out.put((store.operations - before) / seconds)
    finally:
        worker.stop()
        store.close()


def idle_queries(admin_url: str, workers: int, seconds: float, preload: int = 0) -> list[float]:
    """Database operations per second of each idle worker process (counted by the store itself)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with scratch_database(admin_url) as url:
        _migrate(url)
        _preload(url, preload)
        procs = [ctx.Process(target=_idle_main, args=(url, seconds, out, preload), daemon=True) for _ in range(workers)]
        for p in procs:
            p.start()
        rates = [float(out.get(timeout=seconds + 60)) for _ in procs]
        for p in procs:
            p.join(30)
    return rates


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))


def _time(label: str, fn: Callable[[], Any]) -> Any:
    print(f"  running: {label} ...", file=sys.stderr, flush=True)
    return fn()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke test")
    parser.add_argument("--skip-postgres", action="store_true", help="leave PostgreSQL out")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TENURE_BENCH_POSTGRES_URL", DEFAULT_PG_URL),
        help="admin URL; scratch databases are created next to it and dropped (default: %(default)s)",
    )
    parser.add_argument(
        "--only", choices=("lifecycles", "latency", "idle"), help="run one part of the benchmark", default=None
    )
    parser.add_argument(
        "--preload",
        type=int,
        default=PRELOAD,
        metavar="N",
        help="run on stores that already hold N transfers (bench/load.py; at least 1,000; each part loads its own)",
    )
    args = parser.parse_args(argv)
    preload = int(args.preload)
    part = args.only
    count = 60 if args.quick else 1000
    samples = 20 if args.quick else 200
    idle_seconds = 5.0 if args.quick else 20.0
    print(
        f"tenure engine benchmark{' (quick)' if args.quick else ''}: Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs (load {os.getloadavg()[0]:.2f}); tenure {version('tenure')}"
        + (f"; every store preloaded with {preload:,} transfers" if preload else "")
    )
    results: list[Lifecycles] = []
    latencies: list[Latency] = []
    idle: list[tuple[int, list[float]]] = []
    if not args.skip_postgres and part in (None, "lifecycles"):
        for w in (1, 2):
            results.append(
                _time(
                    f"{count} lifecycles, PostgreSQL, {w} workers",
                    lambda w=w: lifecycles_postgres(args.postgres_url, w, count, preload),
                )
            )
    queue: QueueRate | None = None
    if not args.skip_postgres and part in (None, "lifecycles"):
        jobs = count * TRANSITIONS_PER_LIFECYCLE
        queue = _time(f"{jobs} pgqueuer jobs, PostgreSQL", lambda: queue_postgres(args.postgres_url, jobs))
    if part in (None, "lifecycles"):
        results.append(_time(f"{count} lifecycles, SQLite FULL", lambda: lifecycles_sqlite(count, "full", preload)))
        results.append(_time(f"{count} lifecycles, SQLite NORMAL", lambda: lifecycles_sqlite(count, "normal", preload)))
    if not args.skip_postgres and part in (None, "latency"):
        latencies.append(
            _time("callback latency, PostgreSQL", lambda: latency_postgres(args.postgres_url, samples, 0.02, preload))
        )
    if part in (None, "latency"):
        latencies.append(_time("callback latency, SQLite", lambda: latency_sqlite(samples, 0.02, preload)))
    if not args.skip_postgres and part in (None, "idle"):
        for w in (1, 2):
            rates = _time(
                f"idle load, {w} workers", lambda w=w: idle_queries(args.postgres_url, w, idle_seconds, preload)
            )
            idle.append((w, rates))

    if results:
        print("\nFull transfer lifecycles (sync provisioners, 10 transitions each, the client fires 'complete')")
        widths = (50, 11, 13, 14, 24, 22)
        head = (
            "setup",
            "lifecycles",
            "lifecycles/s",
            "transitions/s",
            "writing txns/transition",
            "worker CPU/step (ms)",
        )
        print(_row(head, widths))
    for r in results:
        print(
            _row(
                (
                    r.label,
                    str(r.count),
                    f"{r.per_second:,.1f}",
                    f"{r.per_second * TRANSITIONS_PER_LIFECYCLE:,.0f}",
                    r.commits_per_transition,
                    r.cpu_per_step,
                ),
                widths,
            )
        )
    if results and not args.skip_postgres and part in (None, "lifecycles"):
        if queue is None:
            print("  pgqueuer: not installed (the bench extra)")
        else:
            one = next(r for r in results if r.label.startswith("PostgreSQL, 1 "))
            ratio = one.per_second * TRANSITIONS_PER_LIFECYCLE / queue.per_second
            print(
                f"  pgqueuer, one process, batch {queue.batch_size}, on the same server: {queue.per_second:,.0f} no-op "
                f"jobs/s, {queue.commits_per_job:.2f} writing txns/job; tenure's transitions/s (1 worker) are "
                f"{ratio:.2f}x its jobs/s"
            )

    if latencies:
        print("\nCallback latency: from the callback's arrival in the inbox (ms)")
        widths = (66, 18, 18, 26)
        print(_row(("setup", "applied p50/p99", "next step p50/p99", "vs EDC's 1 s poll (p50)"), widths))
    for lat in latencies:
        p50, p99 = _percentile(lat.applied_ms, 0.5), _percentile(lat.applied_ms, 0.99)
        n50, n99 = _percentile(lat.next_step_ms, 0.5), _percentile(lat.next_step_ms, 0.99)
        # EDC waits for its next poll at each hop: 500 ms on average per hop, two hops here.
        print(
            _row((lat.label, f"{p50:.1f} / {p99:.1f}", f"{n50:.1f} / {n99:.1f}", f"{1000 / n50:,.0f}x sooner"), widths)
        )
    if latencies:
        mean = statistics.mean(latencies[0].next_step_ms)
        print(f"  (mean next-step latency {mean:.1f} ms; EDC's default poll: 0-1000 ms per hop, 1000 ms for two)")

    if idle:
        print("\nIdle database load (PostgreSQL queries per second of each idle worker; LISTEN costs none)")
        widths = (10, 40)
        print(_row(("workers", "queries/s, each worker"), widths))
        for w, rates in idle:
            print(_row((str(w), ", ".join(f"{r:.2f}" for r in rates)), widths))
        print("  (an EDC-style manager polls every state processor every second: >= 1 query/s per processor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
