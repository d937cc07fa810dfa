"""Fixtures of the engine's integration tests: stores on both dialects, background workers, polling.

The kinds themselves live in each test module (each topic needs its own shape). What is shared here:

* ``open_engine_store``: more store objects on the test's database (``store_url``), with the fake
  ``clock`` or the real one, all closed afterwards;
* ``real_store``: a migrated store on the test's database that reads the real clock (for the tests of
  leases, heartbeats and background workers, which need time to pass by itself);
* ``gate``: events a step can block on; every one is opened at teardown, so no step stays blocked;
* ``start_worker``: starts a worker's background loop and stops it at teardown (after opening the gates);
* ``in_thread``: runs a call in a thread (``worker.tick`` while a test delivers callbacks, say),
  joined at teardown;
* ``eventually``: polls a condition for up to 10 seconds; tests never assert how long anything took.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pytest

from tenure import Kind, Worker, open_store
from tenure.clock import Clock, system_clock
from tenure.store.protocol import EngineStore

#: How long ``eventually`` waits by default; generous, since a loaded machine may be slow.
PATIENCE = 10.0


@pytest.fixture
def open_engine_store(store_url: str) -> Iterator[Callable[..., EngineStore]]:
    """A factory of migrated stores on the test's database: ``open_engine_store(kinds, clock=...)``."""
    opened: list[EngineStore] = []

    def make(kinds: Iterable[Kind] = (), *, clock: Clock = system_clock) -> EngineStore:
        s = open_store(store_url, kinds, clock=clock, check_schema=False)
        opened.append(s)
        s.migrate()
        return s

    yield make
    # Closed side by side: a PostgreSQL store's listener takes up to a second to notice it must stop.
    closers = [threading.Thread(target=s.close) for s in opened]
    for t in closers:
        t.start()
    for t in closers:
        t.join(PATIENCE)


@pytest.fixture
def real_store(open_engine_store: Callable[..., EngineStore]) -> EngineStore:
    """A migrated store on the test's database that reads the machine's clock."""
    return open_engine_store()


@pytest.fixture
def gates() -> Iterator[list[threading.Event]]:
    made: list[threading.Event] = []
    yield made
    for g in made:
        g.set()


@pytest.fixture
def gate(gates: list[threading.Event]) -> Callable[[], threading.Event]:
    """A factory of events for steps to block on; all are set at teardown."""

    def make() -> threading.Event:
        event = threading.Event()
        gates.append(event)
        return event

    return make


@pytest.fixture
def start_worker(
    gates: list[threading.Event], open_engine_store: Callable[..., EngineStore]
) -> Iterator[Callable[[Worker], Worker]]:
    """Start a worker's loop in the background; stopped (gates opened first) at teardown.

    Depends on ``open_engine_store`` so that the workers stop before its stores are closed.
    """
    started: list[Worker] = []

    def start(worker: Worker) -> Worker:
        started.append(worker)
        return worker.start()

    yield start
    for g in gates:
        g.set()
    for worker in started:
        worker.stop(timeout=5)


@pytest.fixture
def in_thread(gates: list[threading.Event]) -> Iterator[Callable[[Callable[[], object]], threading.Thread]]:
    """Run a call in a thread; its exception, if any, fails the test at teardown."""
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []

    def run(fn: Callable[[], object]) -> threading.Thread:
        def target() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        threads.append(thread)
        thread.start()
        return thread

    yield run
    for g in gates:
        g.set()
    for thread in threads:
        thread.join(PATIENCE)
    assert not any(t.is_alive() for t in threads), "a helper thread did not finish"
    assert errors == [], f"a helper thread failed: {errors!r}"


@pytest.fixture
def eventually() -> Callable[[Callable[[], object], str], None]:
    """``eventually(condition, what)``: poll ``condition`` until it is true, failing after 10 seconds."""

    def poll(condition: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + PATIENCE
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"not within {PATIENCE:g}s: {what}")
            time.sleep(0.01)

    return poll
