"""Planner statistics: what the embedded database needs to keep its query plans good at any size.

SQLite plans with statistics only once ``ANALYZE`` has gathered them (in ``sqlite_stat1``); without
them, at a million resources, the engine's agenda and deadline sweep pick the wrong index and take a
second instead of a millisecond. So the store analyzes after migrating (a schema change may bring new
indexes), and the engine runs ``PRAGMA optimize`` every few minutes and when it stops, which
re-analyzes only what grew or shrank by far. ``PRAGMA analysis_limit`` keeps every run cheap: ANALYZE
samples a few hundred rows of each index instead of reading the table.

PostgreSQL keeps its statistics itself (autovacuum's ANALYZE, tuned per table by the migrations):
nothing to do there.
"""

from __future__ import annotations

from tenure.store.database import Database, Executor
from tenure.store.sqlfile import load_queries

__all__ = ["refresh_statistics"]

_Q = load_queries("statistics_sqlite.sql")


def refresh_statistics(db: Database, *, after_migrate: bool = False) -> bool:
    """Bring the database's planner statistics up to date, cheaply; True if it did anything.

    After a migration (``after_migrate``), every table is analyzed, provided the store holds
    resources (an empty store has nothing to measure). Otherwise tables with rows but no statistics
    yet are analyzed, then ``PRAGMA optimize`` re-analyzes the tables this connection used whose
    statistics went stale. Runs on the calling thread's connection, as one short write transaction.
    """
    if db.dialect != "sqlite":
        return False
    with db.transaction() as tx:
        if after_migrate and not tx.execute(_Q["has_resources"]).fetchone()[0]:
            return False
        tx.execute(_Q["analysis_limit"])
        if after_migrate:
            tx.execute("ANALYZE")
            return True
        for table in _unanalyzed(tx):
            tx.execute(f"ANALYZE {_quoted(table)}")
        tx.execute(_Q["optimize"])
    return True


def _unanalyzed(tx: Executor) -> list[str]:
    """Tables with rows and no statistics at all."""
    tables = [str(row[0]) for row in tx.execute(_Q["tables"]).fetchall()]
    analyzed: set[str] = set()
    if tx.execute(_Q["stat_table_exists"]).fetchone()[0]:
        analyzed = {str(row[0]) for row in tx.execute(_Q["analyzed_tables"]).fetchall()}
    return [
        t
        for t in tables
        if t not in analyzed and tx.execute(f"SELECT EXISTS (SELECT 1 FROM {_quoted(t)})").fetchone()[0]
    ]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
