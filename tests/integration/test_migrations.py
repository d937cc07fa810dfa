"""Schema migrations: all of them together give exactly the declared current schema, once.

The declared schema (``tenure/store/schema/<dialect>.sql``) is loaded into a second fresh database and
both databases are described by introspection, so that a migration drifting from the schema file (or
the other way round) fails here.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tenure import SchemaNotMigrated, open_store
from tenure.kinds.image import image
from tenure.store.migrator import current_schema, latest_version, migrations
from tenure.store.protocol import EngineStore

pytestmark = pytest.mark.timeout(120)

IGNORED_TABLES = ("tenure_migrations", "sqlite_sequence")


# --- describing a schema ---------------------------------------------------------------------------


def _normalise_sql(text: str | None) -> str | None:
    if text is None:
        return None
    text = re.sub(r"--[^\n]*", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s*([(),])\s*", r"\1", text)


def describe_sqlite(path: str) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        master = sorted(
            (kind, name, table, _normalise_sql(text))
            for kind, name, table, text in conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type IN ('table', 'index')"
            )
            if table not in IGNORED_TABLES
        )
        tables = [name for kind, name, _, _ in master if kind == "table"]
        pragmas = {
            table: {
                "columns": conn.execute(f"PRAGMA table_xinfo({table})").fetchall(),
                # Without the position (seq), which follows the order the indexes were made in.
                "indexes": sorted(row[1:] for row in conn.execute(f"PRAGMA index_list({table})").fetchall()),
                "foreign_keys": conn.execute(f"PRAGMA foreign_key_list({table})").fetchall(),
            }
            for table in tables
        }
    finally:
        conn.close()
    return {"sqlite_master": master, "pragmas": pragmas}


def describe_postgres(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            """
            SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity,
                   identity_generation, ordinal_position
            FROM information_schema.columns
            WHERE table_schema = 'public' AND table_name <> ALL(%s)
            ORDER BY table_name, ordinal_position
            """,
            (list(IGNORED_TABLES),),
        ).fetchall()
        indexes = conn.execute(
            """
            SELECT tablename, indexname, indexdef FROM pg_indexes
            WHERE schemaname = 'public' AND tablename <> ALL(%s)
            ORDER BY tablename, indexname
            """,
            (list(IGNORED_TABLES),),
        ).fetchall()
        constraints = conn.execute(
            """
            SELECT t.relname, c.conname, c.contype, pg_get_constraintdef(c.oid)
            FROM pg_constraint c
            JOIN pg_class t ON t.oid = c.conrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = 'public' AND t.relname <> ALL(%s)
            ORDER BY t.relname, c.conname
            """,
            (list(IGNORED_TABLES),),
        ).fetchall()
        # Storage parameters (fillfactor, per-table autovacuum) are part of the schema too.
        options = conn.execute(
            """
            SELECT c.relname, c.reloptions FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> ALL(%s)
            ORDER BY c.relname
            """,
            (list(IGNORED_TABLES),),
        ).fetchall()
    return {"columns": columns, "indexes": indexes, "constraints": constraints, "options": options}


def _open(url: str) -> EngineStore:
    return open_store(url, [image], check_schema=False)


def _migrated(url: str) -> list[int]:
    s = _open(url)
    try:
        return s.migrate()
    finally:
        s.close()


# --- the schema the migrations build ----------------------------------------------------------------


def test_sqlite_migrations_build_exactly_the_declared_schema(tmp_path: Path) -> None:
    migrated = str(tmp_path / "migrated.db")
    declared = str(tmp_path / "declared.db")
    assert _migrated(f"sqlite:///{migrated}") == list(range(1, latest_version("sqlite") + 1))
    conn = sqlite3.connect(declared)
    conn.executescript(current_schema("sqlite"))
    conn.close()

    got, want = describe_sqlite(migrated), describe_sqlite(declared)
    assert {name for kind, name, _, _ in want["sqlite_master"] if kind == "table"} >= {"resources", "journal"}
    assert got == want


def test_postgres_migrations_build_exactly_the_declared_schema(make_pg_database: Callable[[], str]) -> None:
    migrated, declared = make_pg_database(), make_pg_database()
    assert _migrated(migrated) == list(range(1, latest_version("postgres") + 1))
    with psycopg.connect(declared, autocommit=True) as conn:
        conn.execute(current_schema("postgres").encode())

    got, want = describe_postgres(migrated), describe_postgres(declared)
    assert {row[0] for row in want["columns"]} >= {"resources", "journal"}
    assert want["indexes"]
    assert want["constraints"]
    assert got == want


def test_the_description_notices_a_difference(tmp_path: Path) -> None:
    """The comparison is not vacuous: one extra index makes the descriptions differ."""
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    for path in (a, b):
        conn = sqlite3.connect(path)
        conn.executescript(current_schema("sqlite"))
        conn.close()
    conn = sqlite3.connect(b)
    conn.execute("CREATE INDEX extra ON journal (event)")
    conn.close()
    assert describe_sqlite(a) != describe_sqlite(b)


def test_migrations_are_numbered_without_gaps() -> None:
    for dialect in ("sqlite", "postgres"):
        found = migrations(dialect)
        assert [m.version for m in found] == list(range(1, len(found) + 1))
        assert latest_version(dialect) == len(found) >= 1
        assert all(m.name and m.sql.strip() for m in found)


# --- migrating ---------------------------------------------------------------------------------------


def test_migrating_twice_is_a_no_op(store_url: str) -> None:
    s = _open(store_url)
    try:
        latest = latest_version(s.dialect)  # type: ignore[attr-defined]
        assert s.schema_version() == 0
        assert s.migrate() == list(range(1, latest + 1))
        assert s.schema_version() == latest
        r = s.create("image", {"name": "kept"})
        assert s.migrate() == []
        assert s.schema_version() == latest
        assert s.get(r.id) == r
    finally:
        s.close()
    again = _open(store_url)
    try:
        assert again.migrate() == []
        assert again.schema_version() == latest
    finally:
        again.close()
    assert _recorded_migrations(store_url) == [(m.version, m.name) for m in migrations(_dialect(store_url))]


def test_a_migrated_database_passes_the_schema_check(store_url: str) -> None:
    with pytest.raises(SchemaNotMigrated):
        open_store(store_url, [image])
    _migrated(store_url)
    s = open_store(store_url, [image])
    try:
        assert s.schema_version() == latest_version(_dialect(store_url))
    finally:
        s.close()


def test_concurrent_migrators_apply_each_migration_once(store_url: str) -> None:
    workers = 4
    barrier = threading.Barrier(workers, timeout=60)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    stores = [_open(store_url) for _ in range(workers)]

    def migrate(n: int) -> None:
        try:
            barrier.wait()
            results[n] = stores[n].migrate()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=migrate, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    try:
        assert not any(t.is_alive() for t in threads), "a migrator hung"
        assert errors == []
        latest = latest_version(_dialect(store_url))
        applied = sorted(v for versions in results.values() for v in versions)
        assert applied == list(range(1, latest + 1)), f"each migration applied exactly once, got {results}"
        assert all(s.schema_version() == latest for s in stores)
    finally:
        for s in stores:
            s.close()
    assert _recorded_migrations(store_url) == [(m.version, m.name) for m in migrations(_dialect(store_url))]


def _dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


def _recorded_migrations(url: str) -> list[tuple[int, str]]:
    query = "SELECT version, name FROM tenure_migrations ORDER BY version"
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return [(int(v), str(n)) for v, n in conn.execute(query)]
        finally:
            conn.close()
    with psycopg.connect(url) as pg:
        return [(int(v), str(n)) for v, n in pg.execute(query)]


# --- upgrading a database that holds data ----------------------------------------------------------------


def _at_version(url: str, version: int) -> None:
    """Apply the migrations up to ``version`` by hand, as an older tenure would have, with one resource."""
    dialect = _dialect(url)
    wanted = [m for m in migrations(dialect) if m.version <= version]
    stamp = "2030-01-02T03:04:05.000000+00:00"
    resource = (
        "INSERT INTO resources (id, kind, state, version, entered_at, created_at, updated_at) "
        f"VALUES ('old-1', 'image', 'saving', 2, '{stamp}', '{stamp}', '{stamp}')"
    )
    entries = (
        "INSERT INTO journal (resource_id, version, event, from_state, to_state, at) VALUES "
        f"('old-1', 1, '@create', NULL, 'queued', '{stamp}'), ('old-1', 2, 'upload', 'queued', 'saving', '{stamp}')"
    )
    record = (
        "CREATE TABLE tenure_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at text NOT NULL)"
    )
    if dialect == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            conn.execute(record)
            for m in wanted:
                conn.executescript(m.sql)
                conn.execute("INSERT INTO tenure_migrations VALUES (?, ?, ?)", (m.version, m.name, stamp))
            conn.execute(resource)
            conn.execute(entries)
            conn.commit()
        finally:
            conn.close()
        return
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(record.replace("applied_at text", "applied_at timestamptz"))
        for m in wanted:
            pg.execute(m.sql.encode())
            pg.execute("INSERT INTO tenure_migrations VALUES (%s, %s, %s)", (m.version, m.name, stamp))
        pg.execute(resource.encode())
        pg.execute(entries.encode())


def test_migration_4_keeps_the_journal_and_feeds_it_before_what_comes_after(store_url: str) -> None:
    _at_version(store_url, 3)
    s = _open(store_url)
    try:
        assert s.schema_version() == 3
        assert s.migrate() == list(range(4, latest_version(_dialect(store_url)) + 1))
        assert [e.event for e in s.journal("old-1")] == ["@create", "upload"]
        new = s.create("image", {"name": "new"})
        deadline = time.monotonic() + 20
        while len(page := s.changes(limit=10).entries) < 3:
            # On PostgreSQL a transaction running elsewhere on the server may hold the newest entry back.
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert [(c.resource_id, c.event) for c in page] == [
            ("old-1", "@create"),
            ("old-1", "upload"),
            (new.id, "@create"),
        ]
        assert s.set_desired_state("old-1", "deleted").desired_state == "deleted"
        assert s.list(desired_state="deleted").items[0].id == "old-1"
    finally:
        s.close()
