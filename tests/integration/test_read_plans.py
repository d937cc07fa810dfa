"""The plans of the reads that must not grow with the due backlog or with a state's population.

Plans, not timings: with thousands of due or waiting resources, a plan that walks them took
milliseconds per call (the agenda once per idle pass, the oldest wait on every scrape).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from tenure import open_store
from tenure.kinds.image import image
from tenure.store.counts import _queries as count_queries
from tenure.store.postgres import Q as POSTGRES_QUERIES
from tenure.store.sqlite import Q as SQLITE_QUERIES

PAIRS = ["image@1/queued", "image@1/uploading"]

# Thousands of due resources that nobody holds, a handful that a worker holds, and thousands waiting in
# one state: the shape in which a walk of the due index or of a state shows up in the plan.
_FILL = """
INSERT INTO resources (id, kind, state, version, entered_at, created_at, updated_at, next_attempt_at,
                       claim_token, claim_expires_at)
SELECT 'r' || n, 'image', CASE WHEN n % 2 = 0 THEN 'queued' ELSE 'saving' END, 1, {t}, {t}, {t},
       CASE WHEN n % 2 = 0 THEN {t} END,
       CASE WHEN n % 2000 = 0 THEN 'token' || n END,
       CASE WHEN n % 2000 = 0 THEN {t} END
FROM {series}
"""


def _store(url: str) -> None:
    s = open_store(url, [image], check_schema=False)
    try:
        s.migrate()
    finally:
        s.close()


def test_sqlite_agenda_finds_held_claims_from_their_own_index(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    _store(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    try:
        series = "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 20000) SELECT n FROM s)"
        conn.execute(_FILL.format(t="'2026-01-01T00:00:00+00:00'", series=series))
        conn.commit()
        conn.execute("ANALYZE")
        pairs, kinds = json.dumps(PAIRS), json.dumps(["image"])
        args = (pairs, pairs, kinds, kinds, kinds)
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + SQLITE_QUERIES["next_wakeup"], args)]
        held = conn.execute(SQLITE_QUERIES["next_wakeup"], args).fetchone()[1]
        oldest_plan = [
            row[3]
            for row in conn.execute("EXPLAIN QUERY PLAN " + count_queries("sqlite")["oldest"], ("image", "saving"))
        ]
    finally:
        conn.close()
    assert "SEARCH resources USING INDEX resources_held" in plan, plan
    assert held == "2026-01-01T00:00:00+00:00", "the held claims' earliest expiry"
    assert any("resources_entered" in step for step in oldest_plan), oldest_plan


@pytest.mark.postgres
def test_postgres_agenda_and_oldest_wait_read_an_index_range_not_the_backlog(pg_url: str) -> None:
    _store(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            _FILL.format(t="'2026-01-01T00:00:00Z'::timestamptz", series="generate_series(1, 20000) AS n").encode()
        )
        conn.execute("ANALYZE resources")
        agenda = conn.execute(
            b"EXPLAIN " + POSTGRES_QUERIES["next_wakeup"], (PAIRS, PAIRS, ["image"], ["image"], ["image"])
        ).fetchall()
        oldest = conn.execute(
            ("EXPLAIN " + count_queries("postgres")["oldest"]).encode(), ("image", "saving")
        ).fetchall()
    agenda_plan = "\n".join(row[0] for row in agenda)
    oldest_plan = "\n".join(row[0] for row in oldest)
    assert "resources_held" in agenda_plan, agenda_plan
    assert "resources_entered" in oldest_plan, oldest_plan
