"""Fixtures the integration tests share."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from tenure import open_store
from tenure.kinds.image import image
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock


@pytest.fixture(scope="module")
def shared_pg_url(pg_admin_url: str) -> Iterator[str]:
    """One migrated PostgreSQL database for the whole module (creating one per test is slow)."""
    name = f"tenure_test_{secrets.token_hex(6)}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlsplit(pg_admin_url)._replace(path=f"/{name}").geturl()
    try:
        migrating = open_store(url, check_schema=False)
        migrating.migrate()
        migrating.close()
        yield url
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_store(pg_url: str, clock: FakeClock) -> Iterator[EngineStore]:
    """A migrated store on a fresh PostgreSQL database, knowing the ``image`` kind."""
    s = open_store(pg_url, [image], clock=clock, check_schema=False)
    s.migrate()
    yield s
    s.close()


def empty_tables(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Delete every row but the migrations' (deleting is much faster than TRUNCATE on tiny tables)."""
    tables = {
        str(row[0])
        for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'tenure_migrations'"
        )
    }
    refs = [
        (str(child), str(parent))
        for child, parent in conn.execute(
            "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint WHERE contype = 'f'"
        )
    ]
    with conn.transaction():
        while tables:
            # Tables no remaining table refers to go first.
            free = sorted(t for t in tables if not any(p == t and c in tables and c != t for c, p in refs))
            assert free, f"a cycle of foreign keys among {tables}"
            for table in free:
                conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
            tables -= set(free)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def reused_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each dialect; PostgreSQL's is the test module's, emptied.

    A module overrides ``store_url`` with it where creating a database per test would be too slow.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/t.db"
    url = str(request.getfixturevalue("shared_pg_url"))
    with psycopg.connect(url, autocommit=True) as conn:
        empty_tables(conn)
    return url
