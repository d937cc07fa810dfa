"""PostgreSQL reads for an event loop: psycopg's asynchronous connections (see :mod:`tenure.store.asyncreads`).

Reads that arrive together share a statement. A statement's round trip costs the loop far more Python
than the row it brings (psycopg's cursor, the pool's checkout, the protocol's waits): on a busy loop
that is what caps the requests it serves. So a read joins the next statement to go out, and at most
:data:`IN_FLIGHT` statements are out at once; while they are, the reads arriving meanwhile gather for
the next one, which asks for all of them by id. On an idle loop a read goes out at once, alone.

Each read still sees a snapshot taken after it was asked: a statement starts after every read it
carries arrived.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable, Sequence

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from tenure.errors import StoreUnavailable
from tenure.rules import NUL
from tenure.store.model import Resource
from tenure.store.rows import resource_from_pg
from tenure.store.sqlfile import load_queries

__all__ = ["IN_FLIGHT", "PostgresReads"]

_Q = load_queries("postgres.sql")

#: Statements out at once; reads arriving while they are gather for the next one.
IN_FLIGHT = 2
#: The most resources one statement asks for.
MAX_IDS = 64

_Waiters = dict[str, list["asyncio.Future[Resource | None]"]]


async def _configure(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
    # As the store's own connections (tenure.store.postgres): UTC, and no JIT for short statements.
    await conn.execute("SET TIME ZONE 'UTC'; SET jit = off")


class PostgresReads:
    """Reads through a pool of asynchronous connections, opened on the loop that first reads."""

    def __init__(self, conninfo: str, *, target: str, pool_size: int, timeout: float) -> None:
        self._conninfo = conninfo
        self._target = target
        self._size = max(1, pool_size)
        self._timeout = timeout
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[object, ...]]] | None = None
        self._opening = asyncio.Lock()
        #: Reads waiting for a statement, by resource id.
        self._waiting: _Waiters = {}
        self._out = 0
        self._starting = False
        self._statements: set[asyncio.Task[None]] = set()
        #: Statements sent, and the reads they answered (for benchmarks and tests).
        self.sent = 0
        self.answered = 0

    async def _ready(self) -> AsyncConnectionPool[psycopg.AsyncConnection[tuple[object, ...]]]:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[object, ...]]] = AsyncConnectionPool(
                        self._conninfo,
                        min_size=1,
                        max_size=self._size,
                        kwargs={"autocommit": True, "connect_timeout": max(1, int(self._timeout))},
                        configure=_configure,
                        timeout=self._timeout,
                        open=False,
                        name="tenure-loop",
                    )
                    await pool.open(wait=False)
                    self._pool = pool
        return self._pool

    async def find(self, resource_id: str) -> Resource | None:
        if NUL in resource_id:
            return None
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Resource | None] = loop.create_future()
        self._waiting.setdefault(resource_id, []).append(answer)
        self._start_soon(loop)
        # However long the statements ahead of it take, a read answers within the store's timeout.
        expiry = loop.call_later(self._timeout, self._expire, answer)
        try:
            return await answer
        finally:
            expiry.cancel()

    def _expire(self, answer: asyncio.Future[Resource | None]) -> None:
        if not answer.done():
            answer.set_exception(self._unavailable(f"no answer within {self._timeout:g}s"))

    def _unavailable(self, reason: str) -> StoreUnavailable:
        return StoreUnavailable(self._target, reason)

    def _start_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        # After the callbacks already due on the loop: reads that arrived in the same turn go together.
        if not self._starting and self._out < IN_FLIGHT:
            self._starting = True
            loop.call_soon(self._start)

    def _start(self) -> None:
        self._starting = False
        while self._waiting and self._out < IN_FLIGHT:
            batch = {i: self._waiting.pop(i) for i in list(itertools.islice(self._waiting, MAX_IDS))}
            self._out += 1
            self.sent += 1
            self.answered += sum(len(w) for w in batch.values())
            task = asyncio.ensure_future(self._answer(batch))
            self._statements.add(task)
            task.add_done_callback(functools.partial(self._finished, batch))

    def _finished(self, batch: _Waiters, task: asyncio.Task[None]) -> None:
        """The statement's task ended (answered, failed or cancelled, even before it started)."""
        self._statements.discard(task)
        self._out -= 1
        _fail(batch, lambda: self._unavailable("the read was stopped"))
        if self._waiting:
            self._start_soon(asyncio.get_running_loop())

    async def _answer(self, batch: _Waiters) -> None:
        try:
            rows = await self._read(list(batch))
            found = {r.id: r for r in map(resource_from_pg, rows)}
        except StoreUnavailable as exc:
            reason = exc.reason
            _fail(batch, lambda: self._unavailable(reason))
        except Exception as exc:
            failure = exc
            _fail(batch, lambda: failure)
        else:
            for resource_id, waiters in batch.items():
                for w in waiters:
                    if not w.done():  # its request may have gone meanwhile (a client that hung up)
                        w.set_result(found.get(resource_id))

    async def _read(self, ids: Sequence[str]) -> list[tuple[object, ...]]:
        pool = await self._ready()
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute(_Q["get_resources"], (list(ids),))
                return await cursor.fetchall()
        except PoolTimeout:
            raise self._unavailable(f"no connection free or reachable within {self._timeout:g}s") from None
        except psycopg.OperationalError as exc:
            raise self._unavailable(str(exc).strip() or type(exc).__name__) from None

    async def close(self) -> None:
        waiting, self._waiting = self._waiting, {}
        _fail(waiting, lambda: self._unavailable("the reads were closed"))
        for task in list(self._statements):
            task.cancel()
        if self._statements:
            await asyncio.gather(*self._statements, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def _fail(batch: _Waiters, error: Callable[[], BaseException]) -> None:
    """Give every read of ``batch`` still waiting its own ``error()``."""
    for waiters in batch.values():
        for w in waiters:
            if not w.done():
                w.set_exception(error())
