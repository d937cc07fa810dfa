"""Fixtures for the store tests: fresh SQLite files and fresh PostgreSQL databases.

PostgreSQL is reached through ``TENURE_TEST_PG_ADMIN_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); every test that needs it gets its own database,
dropped afterwards. Without a reachable server the ``postgres`` tests are skipped, unless
``TENURE_REQUIRE_POSTGRES=1``, which turns that into a failure.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

# The helpers' own asserts get pytest's messages too (registered before anything imports them).
pytest.register_assert_rewrite("tests.store_support", "tests.support", "tests.unit.flow.flow_support")

from tenure import Kind, open_store  # noqa: E402
from tenure.kinds.image import image  # noqa: E402
from tenure.store.postgres import redact  # noqa: E402
from tenure.store.protocol import EngineStore  # noqa: E402
from tests.kinds_for_tests import job  # noqa: E402
from tests.store_support import FakeClock  # noqa: E402

PG_ADMIN_URL = os.environ.get("TENURE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

#: The kinds every ``store`` fixture knows.
KINDS: tuple[Kind, ...] = (image, job)

# The shell that runs the tests may point tenure at a server, a database or tokens of its own (the
# quickstart exports TENURE_SERVER): the tests' commands and servers must not inherit them.
for _name in (
    "TENURE_AUTH",
    "TENURE_CONFIG",
    "TENURE_DATABASE_URL",
    "TENURE_PUBLIC_URL",
    "TENURE_SERVER",
    "TENURE_TOKEN",
    "TENURE_TOKENS",
    "TENURE_TOKEN_FILE",
):
    os.environ.pop(_name, None)


def _require_postgres() -> bool:
    return os.environ.get("TENURE_REQUIRE_POSTGRES", "").strip() == "1"


@functools.cache
def _postgres_unreachable() -> str | None:
    """Why the PostgreSQL server cannot be used (None if it can); asked once per session."""
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"PostgreSQL at {redact(PG_ADMIN_URL)} is unreachable: {first_line}"
    return None


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The admin URL of a reachable PostgreSQL server (skips, or fails when it is required)."""
    reason = _postgres_unreachable()
    if reason is not None:
        if _require_postgres():
            pytest.fail(
                f"{reason}; TENURE_REQUIRE_POSTGRES=1 is set, so PostgreSQL tests may not be skipped "
                "(start the server or point TENURE_TEST_PG_ADMIN_URL at one)",
                pytrace=False,
            )
        pytest.skip(f"{reason} (set TENURE_REQUIRE_POSTGRES=1 to make this a failure)")
    return PG_ADMIN_URL


def _database_url(admin_url: str, name: str) -> str:
    return urlsplit(admin_url)._replace(path=f"/{name}").geturl()


@pytest.fixture
def make_pg_database(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty databases (``tenure_test_<hex>``); all are dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"tenure_test_{secrets.token_hex(6)}"
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return _database_url(pg_admin_url, name)

    yield make
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_url(make_pg_database: Callable[[], str]) -> str:
    """The URL of a fresh, empty PostgreSQL database."""
    return make_pg_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of a SQLite file that does not exist yet (absolute path, so four slashes)."""
    return f"sqlite:///{tmp_path}/t.db"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest) -> str:
    """An empty database of each dialect."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(request.getfixturevalue("sqlite_url"))


@pytest.fixture
def clock() -> FakeClock:
    """The clock the ``store`` fixture reads; it moves only when a test advances it."""
    return FakeClock()


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[EngineStore]:
    """A migrated store of each dialect, knowing the ``image`` and ``job`` kinds."""
    s = open_store(store_url, KINDS, clock=clock, check_schema=False)
    try:
        s.migrate()
        yield s
    finally:
        s.close()
