"""PostgreSQL reads for an event loop: psycopg's asynchronous connections (see :mod:`tenure.store.asyncreads`)."""

from __future__ import annotations

import asyncio

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from tenure.errors import StoreUnavailable
from tenure.rules import NUL
from tenure.store.model import Resource
from tenure.store.rows import resource_from_pg
from tenure.store.sqlfile import load_queries

__all__ = ["PostgresReads"]

_Q = load_queries("postgres.sql")


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
        pool = await self._ready()
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute(_Q["get_resource"], (resource_id,))
                row = await cursor.fetchone()
        except PoolTimeout:
            raise StoreUnavailable(self._target, f"no connection free or reachable within {self._timeout:g}s") from None
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(self._target, str(exc).strip() or type(exc).__name__) from None
        return None if row is None else resource_from_pg(row)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
