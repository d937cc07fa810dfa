"""Fixtures of the HTTP service tests: the real app under uvicorn on 127.0.0.1, on both stores.

* ``dialect``: sqlite and postgres (a module that needs one only overrides it);
* ``module_store`` / ``module_server``: one migrated store and one running service (auth on, one
  token per scope) per module and dialect, so that a test does not pay for starting them;
* ``service_store``: the module's store, emptied for the test;
* ``live``: the module's service over the emptied store, with a client per scope;
* ``start_live``: another service for the test (auth off, a small body limit, workers, another store);
* ``make_waiting``: a ``ticket`` resource that a worker put in its wait state, with its token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from tenure import Worker, open_store
from tenure.service import ServiceConfig, create_app
from tenure.store.protocol import EngineStore
from tests.support.databases import empty_database
from tests.support.live_server import LiveServer, all_scopes_config
from tests.support.service_support import KINDS, Asker, Live, Waiting, ticket_worker


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ],
)
def dialect(request: pytest.FixtureRequest) -> str:
    """The store's dialect; a module that only needs one overrides this fixture."""
    return str(request.param)


@pytest.fixture(scope="module")
def module_db(dialect: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of the module's database of ``dialect`` (created empty)."""
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('service')}/t.db"
    return str(request.getfixturevalue("shared_pg_url"))


@pytest.fixture(scope="module")
def module_store(module_db: str) -> Iterator[EngineStore]:
    """One migrated store per module and dialect, shared by the module's tests (emptied for each)."""
    s = open_store(module_db, KINDS, check_schema=False)
    try:
        s.migrate()
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def module_server(module_store: EngineStore) -> Iterator[LiveServer]:
    """The service with auth on and one token per scope, once per module and dialect."""
    with LiveServer(create_app(module_store, all_scopes_config())) as server:
        yield server


@pytest.fixture
def service_store(module_db: str, module_store: EngineStore) -> EngineStore:
    """The module's store, emptied for this test."""
    empty_database(module_db)
    return module_store


@pytest.fixture
def start_live(service_store: EngineStore) -> Iterator[Callable[..., Live]]:
    """``start_live(config=None, workers=(), store=None)``: another running service (stopped at teardown)."""
    running: list[LiveServer] = []

    def start(
        config: ServiceConfig | None = None, *, workers: Sequence[Worker] = (), store: EngineStore | None = None
    ) -> Live:
        target = store or service_store
        server = LiveServer(create_app(target, config or all_scopes_config(), workers=workers)).start()
        running.append(server)
        return Live(server, target)

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def live(module_server: LiveServer, service_store: EngineStore) -> Live:
    """The module's service (auth on, one token per scope) over the emptied store."""
    return Live(module_server, service_store)


# --- a resource in a wait state, put there by the engine ------------------------------------------


@pytest.fixture
def make_waiting(service_store: EngineStore) -> Callable[..., Waiting]:
    """``make_waiting(keys=("a", "b"))``: a new ticket the engine put in ``awaiting``, and its token."""

    def make(keys: Sequence[str] = ("a", "b")) -> Waiting:
        asker = Asker(keys)
        worker = ticket_worker(service_store, asker)
        r = service_store.create("ticket")
        assert worker.tick() >= 1
        r = service_store.get(r.id)
        assert r.state == "awaiting", r
        return Waiting(worker, asker, r, asker.tokens[-1])

    return make
