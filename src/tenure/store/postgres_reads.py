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
from collections.abc import Sequence

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
        return await answer

    def _start_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        # After the callbacks already due on the loop: reads that arrived in the same turn go together.
        if not self._starting and self._out < IN_FLIGHT:
            self._starting = True
            loop.call_soon(self._start)

    def _start(self) -> None:
        self._starting = False
        if not self._waiting or self._out >= IN_FLIGHT:
            return
        ids = list(self._waiting)[:MAX_IDS]
        batch = {i: self._waiting.pop(i) for i in ids}
        self._out += 1
        self.sent += 1
        self.answered += sum(len(w) for w in batch.values())
        task = asyncio.ensure_future(self._answer(batch))
        self._statements.add(task)
        task.add_done_callback(self._statements.discard)

    async def _answer(self, batch: _Waiters) -> None:
        try:
            rows = await self._read(list(batch))
        except asyncio.CancelledError:
            _cancel(batch)
            raise
        except StoreUnavailable as exc:
            for waiters in batch.values():
                for w in waiters:
                    if not w.done():
                        w.set_exception(StoreUnavailable(exc.target, exc.reason))
        except Exception as exc:
            for waiters in batch.values():
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
        else:
            found = {r.id: r for r in map(resource_from_pg, rows)}
            for resource_id, waiters in batch.items():
                for w in waiters:
                    if not w.done():  # its request may have gone meanwhile (a client that hung up)
                        w.set_result(found.get(resource_id))
        finally:
            self._out -= 1
            if self._waiting:
                self._start_soon(asyncio.get_running_loop())

    async def _read(self, ids: Sequence[str]) -> list[tuple[object, ...]]:
        pool = await self._ready()
        try:
            async with pool.connection() as conn:
                if len(ids) == 1:
                    cursor = await conn.execute(_Q["get_resource"], (ids[0],))
                else:
                    cursor = await conn.execute(_Q["get_resources"], (list(ids),))
                return await cursor.fetchall()
        except PoolTimeout:
            raise StoreUnavailable(self._target, f"no connection free or reachable within {self._timeout:g}s") from None
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(self._target, str(exc).strip() or type(exc).__name__) from None

    async def close(self) -> None:
        waiting, self._waiting = self._waiting, {}
        _cancel(waiting)
        for task in list(self._statements):
            task.cancel()
        if self._statements:
            await asyncio.gather(*self._statements, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def _cancel(batch: _Waiters) -> None:
    for waiters in batch.values():
        for w in waiters:
            w.cancel()
