"""The work of the reads that must not grow with the due backlog or with a state's population.

Work, not timings: with thousands of due or waiting resources, a read that walks them took
milliseconds per call (the agenda once per idle pass, the oldest wait on every scrape). On SQLite the
work is the virtual machine's instructions (a progress handler counts them); on PostgreSQL, the buffers
the statement touched (EXPLAIN ANALYZE).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tenure import open_store
from tenure.kinds.image import image
from tenure.store.counts import _queries as count_queries
from tenure.store.postgres import Q as POSTGRES_QUERIES
from tenure.store.sqlite import Q as SQLITE_QUERIES

PAIRS = ["image@1/queued", "image@1/uploading"]
SMALL, LARGE = 200, 20_000
#: Resources a worker holds in every shape (due when claimed, their claims expiring at NOW + n minutes).
HELD = 5

# ``n`` resources, each in one of two shapes: ``backlog`` (due by now, nobody holds them: a worker that
# fell behind) or ``later`` (retries scheduled after now: nothing due), plus HELD held ones; and as many
# resources waiting in 'saving' as the shape has.
_FILL = """
INSERT INTO resources (id, kind, state, version, entered_at, created_at, updated_at, next_attempt_at,
                       claim_token, claim_expires_at)
SELECT 'r' || n, 'image', CASE WHEN n % 2 = 0 THEN 'queued' ELSE 'saving' END, 1, {then}, {then}, {then},
       CASE WHEN n <= {held} THEN {then} WHEN n % 2 = 0 THEN {due} END,
       CASE WHEN n <= {held} THEN 'token' || n END,
       CASE WHEN n <= {held} THEN {expiry} END
FROM {series}
"""

SQLITE_TIMES = {
    "then": "'2026-01-01T00:00:00+00:00'",
    "backlog": "'2026-01-01T00:30:00+00:00'",
    "later": "'2026-01-01T05:00:00+00:00'",
    "expiry": "strftime('%Y-%m-%dT%H:%M:%S+00:00', '2026-01-01T01:00:00', '+' || n || ' minutes')",
}
SQLITE_NOW = "2026-01-01T01:00:00+00:00"
POSTGRES_TIMES = {
    "then": "'2026-01-01T00:00:00Z'::timestamptz",
    "backlog": "'2026-01-01T00:30:00Z'::timestamptz",
    "later": "'2026-01-01T05:00:00Z'::timestamptz",
    "expiry": "'2026-01-01T01:00:00Z'::timestamptz + n * interval '1 minute'",
}


def _migrated(url: str) -> None:
    s = open_store(url, [image], check_schema=False)
    try:
        s.migrate()
    finally:
        s.close()


def _sqlite_store(tmp_path: Path, shape: str, n: int) -> sqlite3.Connection:
    path = tmp_path / f"{shape}-{n}.db"
    _migrated(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    series = f"(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) SELECT n FROM s)"
    times = SQLITE_TIMES
    fill = _FILL.format(then=times["then"], due=times[shape], expiry=times["expiry"], held=HELD, series=series)
    conn.execute(fill)
    conn.commit()
    conn.execute("ANALYZE")
    return conn


def _sqlite_work(conn: sqlite3.Connection, sql: str, params: Any) -> tuple[list[Any], int]:
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 100)
    try:
        rows = conn.execute(sql, params).fetchall()
    finally:
        conn.set_progress_handler(None, 0)
    return rows, steps[0]


def _grows(work: Callable[[int], int]) -> tuple[int, int]:
    return work(SMALL), work(LARGE)


@pytest.mark.parametrize("shape", ["backlog", "later"])
def test_sqlite_agenda_reads_the_held_claims_not_the_backlog(tmp_path: Path, shape: str) -> None:
    params = {"pairs": json.dumps(PAIRS), "kinds": json.dumps(["image"]), "now": SQLITE_NOW}
    agendas = {}

    def work(n: int) -> int:
        conn = _sqlite_store(tmp_path, shape, n)
        try:
            rows, steps = _sqlite_work(conn, SQLITE_QUERIES["next_wakeup"], params)
        finally:
            conn.close()
        agendas[n] = rows[0]
        return steps

    small, large = _grows(work)

    assert large <= 2 * small + 10, f"{small} steps for {SMALL} resources, {large} for {LARGE}"
    step, claim_expiry = agendas[LARGE][:2]
    if shape == "backlog":
        assert step == "2026-01-01T00:30:00+00:00"
        assert claim_expiry is None, "with steps due, a claim takes over expired claims on the way"
    else:
        assert step == "2026-01-01T05:00:00+00:00"
        assert claim_expiry == "2026-01-01T01:02:00+00:00", "the first held claim of a due pair to expire"


def test_sqlite_oldest_wait_reads_the_first_entry_of_its_state(tmp_path: Path) -> None:
    def work(n: int) -> int:
        conn = _sqlite_store(tmp_path, "later", n)
        try:
            rows, steps = _sqlite_work(conn, count_queries("sqlite")["oldest"], ("image", "saving"))
        finally:
            conn.close()
        assert rows == [("2026-01-01T00:00:00+00:00",)]
        return steps

    small, large = _grows(work)
    assert large <= 2 * small + 10, f"{small} steps for {SMALL} resources, {large} for {LARGE}"


def _pg_buffers(url: str, sql: bytes, params: Any) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).fetchone()  # warm the cache
        row = conn.execute(b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def _pg_store(make_pg_database: Callable[[], str], shape: str, n: int) -> str:
    url = make_pg_database()
    _migrated(url)
    times = POSTGRES_TIMES
    fill = _FILL.format(
        then=times["then"], due=times[shape], expiry=times["expiry"], held=HELD,
        series=f"generate_series(1, {n}) AS n",
    )  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(fill.encode())
        conn.execute("VACUUM ANALYZE resources")
    return url


@pytest.mark.postgres
@pytest.mark.parametrize("shape", ["backlog", "later"])
def test_postgres_agenda_reads_the_held_claims_not_the_backlog(make_pg_database: Callable[[], str], shape: str) -> None:
    params = {"pairs": PAIRS, "kinds": ["image"], "now": "2026-01-01T01:00:00Z"}
    small, large = _grows(
        lambda n: _pg_buffers(_pg_store(make_pg_database, shape, n), POSTGRES_QUERIES["next_wakeup"], params)
    )
    assert large <= 2 * small + 10, f"{small} buffers for {SMALL} resources, {large} for {LARGE}"


@pytest.mark.postgres
def test_postgres_oldest_wait_reads_the_first_entry_of_its_state(make_pg_database: Callable[[], str]) -> None:
    oldest = count_queries("postgres")["oldest"].encode()
    small, large = _grows(lambda n: _pg_buffers(_pg_store(make_pg_database, "later", n), oldest, ("image", "saving")))
    assert large <= 2 * small + 10, f"{small} buffers for {SMALL} resources, {large} for {LARGE}"
