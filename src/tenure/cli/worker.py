"""``tenure worker`` and ``tenure serve``: run the engine until told to stop."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from tenure.cli.common import (
    DEFAULT_CONCURRENCY,
    ConcurrencyOption,
    DatabaseOption,
    KindsOption,
    LeaseOption,
    VerboseOption,
    all_kinds,
    console,
    reported,
)

if TYPE_CHECKING:
    from tenure.engine import Steps, Worker
    from tenure.engine.planes import Signaling
    from tenure.store.protocol import EngineStore, TableStore

__all__ = ["pool_size", "steps_for", "worker"]

# Only ``tenure worker`` takes these; the options it shares with ``tenure serve`` are in cli.common.
PollOption = Annotated[
    float | None,
    typer.Option("--poll", min=0.01, help="Longest idle sleep between looks at the database, in seconds."),
]
NameOption = Annotated[str | None, typer.Option("--name", help="Worker name (default: host:pid:random).")]


def steps_for(store: TableStore, kinds: list[str] | None, signaling: Signaling | None = None) -> Steps:
    """The built-in kinds' steps (volumes keep their quotas in tables they own in ``store``) and those of ``kinds``.

    ``signaling`` is the process's data-plane settings (dataflows call back its control plane).
    """
    from tenure.kinds import builtin_steps, load_steps

    return builtin_steps(store, signaling) | load_steps(kinds or [])


def _run_workers(store: EngineStore, steps: Steps, workers: list[Worker]) -> None:
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


def pool_size(workers: int, concurrency: int) -> int:
    # A connection for each running step, plus each worker's loop and heartbeat: fewer, and steps
    # queue for connections while their claims tick away.
    return min(workers * (concurrency + 2), 100)


def worker(
    database: DatabaseOption = None,
    kinds: KindsOption = None,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    lease: LeaseOption = 30.0,
    poll: PollOption = None,
    name: NameOption = None,
    verbose: VerboseOption = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="TENURE_CONFIG",
            help="The service's TOML file: its database, kinds, signaling ([dataplane], [[dataplanes]]) and "
            "retention ([retention]).",
        ),
    ] = None,
) -> None:
    """Run a worker: claim due resources, run their steps, sweep deadlines and callbacks.

    Stops on SIGTERM or Ctrl-C, after running steps finish (or are released for another worker).
    """
    from tenure.engine import Worker
    from tenure.engine.deliveries import Deliverer
    from tenure.kinds import builtin_tables
    from tenure.service.config import ServiceConfig
    from tenure.store import open_store
    from tenure.store.url import database_url

    _configure_logging(verbose)
    with reported():
        settings = ServiceConfig.load(config) if config is not None else ServiceConfig()
        signaling = settings.signaling_with_callbacks()
        url = database_url(database, configured=settings.database)
        kinds = [*settings.kinds, *(kinds or [])]
        # One more worker's worth of connections: the webhook deliverer runs next to the worker.
        store = open_store(
            url, all_kinds(kinds, signaling), pool_size=pool_size(2, concurrency), tables=builtin_tables()
        )
        steps = steps_for(store, kinds, signaling)
    try:
        w = Worker(
            store,
            steps,
            name=name,
            concurrency=concurrency,
            lease=timedelta(seconds=lease),
            poll_interval=poll,
            retention=settings.retention_policy(),
        )
        console.print(
            f"worker {w.name} on {store.target}: {len(steps)} steps, concurrency {concurrency}; Ctrl-C to stop"
        )
        deliverer = Deliverer(store).start()  # webhook subscriptions are delivered wherever the engine runs
        try:
            _run_workers(store, steps, [w])
        finally:
            deliverer.stop()
        console.print(f"worker {w.name} stopped: {w.stats.claimed} claimed, {w.stats.advanced} advanced")
    finally:
        store.close()
