"""``tenure worker`` and ``tenure serve``: run the engine until told to stop."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from types import FrameType
from typing import Annotated

import typer

from tenure.cli.common import DatabaseOption, KindsOption, all_kinds, console, errors, reported
from tenure.engine import Steps, Worker
from tenure.kinds import builtin_steps, load_steps
from tenure.store import open_store
from tenure.store.core import StoreCore
from tenure.store.url import database_url

__all__ = ["serve", "worker"]

ConcurrencyOption = Annotated[int, typer.Option("--concurrency", "-c", min=1, max=256, help="Steps run at once.")]
LeaseOption = Annotated[
    float, typer.Option("--lease", min=0.1, help="Seconds a claim lasts unless renewed by the heartbeat.")
]
PollOption = Annotated[
    float | None,
    typer.Option("--poll", min=0.01, help="Longest idle sleep between looks at the database, in seconds."),
]
NameOption = Annotated[str | None, typer.Option("--name", help="Worker name (default: host:pid:random).")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log what the engine does.")]


def _steps(store: StoreCore, kinds: list[str] | None) -> Steps:
    return builtin_steps(store) | load_steps(kinds or [])


def _run_workers(store: StoreCore, steps: Steps, workers: list[Worker]) -> None:
    """Run ``workers`` until SIGTERM or SIGINT, then let them finish or release in-flight steps."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        for w in workers:
            w.request_stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for w in workers:
            w.start()
        while not stop.wait(0.5):
            pass
        for w in workers:
            w.stop()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def _pool_size(workers: int, concurrency: int) -> int:
    # A connection for each running step, plus each worker's loop and heartbeat: fewer, and steps
    # queue for connections while their claims tick away.
    return min(workers * (concurrency + 2), 100)


def worker(
    database: DatabaseOption = None,
    kinds: KindsOption = None,
    concurrency: ConcurrencyOption = 4,
    lease: LeaseOption = 30.0,
    poll: PollOption = None,
    name: NameOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Run a worker: claim due resources, run their steps, sweep deadlines and callbacks.

    Stops on SIGTERM or Ctrl-C, after running steps finish (or are released for another worker).
    """
    _configure_logging(verbose)
    with reported():
        store = open_store(database, all_kinds(kinds), pool_size=_pool_size(1, concurrency))
        steps = _steps(store, kinds)
    try:
        w = Worker(store, steps, name=name, concurrency=concurrency, lease=timedelta(seconds=lease), poll_interval=poll)
        console.print(
            f"worker {w.name} on {store.target}: {len(steps)} steps, concurrency {concurrency}; Ctrl-C to stop"
        )
        _run_workers(store, steps, [w])
        console.print(f"worker {w.name} stopped: {w.stats.claimed} claimed, {w.stats.advanced} advanced")
    finally:
        store.close()


def serve(
    database: DatabaseOption = None,
    kinds: KindsOption = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, max=64, help="Workers to run.")] = 1,
    concurrency: ConcurrencyOption = 4,
    lease: LeaseOption = 30.0,
    verbose: VerboseOption = False,
) -> None:
    """Run tenure: migrate the database if it is the embedded default, then run the engine.

    The HTTP API and dashboard join this command in a later release; today it runs the workers.
    """
    _configure_logging(verbose)
    url = database_url(database)
    with reported():
        if url.startswith("sqlite:"):
            migrator = open_store(url, check_schema=False)
            try:
                applied = migrator.migrate()
            finally:
                migrator.close()
            if applied:
                console.print(f"migrated {migrator.target} to schema version {max(applied)}")
        store = open_store(url, all_kinds(kinds), pool_size=_pool_size(workers, concurrency))
        steps = _steps(store, kinds)
    try:
        pool = [Worker(store, steps, concurrency=concurrency, lease=timedelta(seconds=lease)) for _ in range(workers)]
        kinds_loaded = ", ".join(sorted(store.kinds))
        console.print(f"tenure serving {store.target} with {workers} worker(s); kinds: {kinds_loaded}; Ctrl-C to stop")
        _run_workers(store, steps, pool)
    except Exception as exc:  # a last word instead of a traceback
        errors.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    finally:
        store.close()
