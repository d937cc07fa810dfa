"""The job-queue peer of the engine benchmark: pgqueuer draining no-op jobs on the same PostgreSQL.

pgqueuer claims jobs with ``FOR UPDATE SKIP LOCKED`` a batch at a time and acknowledges them in
batches; it is the bar a PostgreSQL-backed engine is measured against. :func:`drain` installs its
schema in the given (scratch) database, enqueues ``jobs`` no-op jobs in one statement, and times one
process draining them (``mode=drain``), counting the database's writing transactions meanwhile.
The time ends when the last job has run: the drain mode itself then waits for an idle timeout
before it returns, which is not work.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import psycopg

__all__ = ["QueueRate", "drain", "installed"]


@dataclass(frozen=True)
class QueueRate:
    jobs: int
    seconds: float
    #: Writing transactions (transaction ids the server handed out) while the jobs drained.
    commits: int
    batch_size: int

    @property
    def per_second(self) -> float:
        return self.jobs / self.seconds

    @property
    def commits_per_job(self) -> float:
        return self.commits / self.jobs


def installed() -> bool:
    """Whether pgqueuer (from the ``bench`` extra) can be imported."""
    try:
        import pgqueuer  # noqa: F401
    except ImportError:
        return False
    return True


def writing_transactions(url: str) -> int:
    """The next transaction id the server will hand out: the difference over a run counts writing
    transactions (read-only ones get no id), whoever ran them. Reading it takes no id itself."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetchone()
    return int(row[0]) if row else 0


async def _drain(url: str, jobs: int, batch_size: int) -> QueueRate:
    from pgqueuer import Job, QueueManager
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        queries = Queries(PsycopgDriver(conn))
        if not await queries.schema_is_installed():
            await queries.install()
        await queries.enqueue(["noop"] * jobs, [None] * jobs, [0] * jobs)
        qm = QueueManager(queries)
        done = 0
        last = 0.0

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            nonlocal done, last
            done += 1
            last = time.perf_counter()

        before = writing_transactions(url)
        started = time.perf_counter()
        await qm.run(batch_size=batch_size, mode=QueueExecutionMode.drain)
        seconds = last - started
        commits = writing_transactions(url) - before
    if done != jobs:
        raise RuntimeError(f"pgqueuer ran {done} of {jobs} jobs")
    return QueueRate(jobs, seconds, commits, batch_size)


def drain(url: str, jobs: int, *, batch_size: int = 10) -> QueueRate:
    """How fast one pgqueuer process drains ``jobs`` no-op jobs from the database at ``url``."""
    return asyncio.run(_drain(url, jobs, batch_size))


if __name__ == "__main__":  # a quick look: python bench/queue_peer.py URL [JOBS]
    import sys

    rate = drain(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5000)
    print(
        f"{rate.per_second:,.0f} jobs/s, {rate.commits_per_job:.2f} writing transactions/job (batch {rate.batch_size})"
    )
