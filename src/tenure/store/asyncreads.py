"""Reads for an event loop: a resource by id, without leaving the loop.

The HTTP service answers on an asyncio event loop. A read handed to a worker thread and back costs
the loop more than the read itself, and on a busy loop the thread then waits for the interpreter
lock to hand its answer over. So the reads the API makes most often are made on the loop: on SQLite
right there (a lookup in a local file takes microseconds), on PostgreSQL through psycopg's
asynchronous connections (:mod:`tenure.store.postgres_reads`), so that the loop serves other
requests while the server answers.

Writes stay on threads: there, writes of concurrent requests share a commit (see
:mod:`tenure.store.groupcommit`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tenure.rules import NUL
from tenure.store.model import Resource

__all__ = ["AsyncReads", "InlineReads"]


class AsyncReads(Protocol):
    """What an event loop may read without blocking on it."""

    async def find(self, resource_id: str) -> Resource | None:
        """The resource's current snapshot, or None if there is no such resource."""
        ...

    async def close(self) -> None:
        """Close what the reads opened (on the loop that used them)."""
        ...


class InlineReads:
    """Reads made on the loop's own thread, for a database that answers in microseconds (SQLite)."""

    def __init__(self, find: Callable[[str], Resource | None]) -> None:
        self._find = find

    async def find(self, resource_id: str) -> Resource | None:
        if NUL in resource_id:
            return None  # no resource can have such an id (see tenure.rules)
        return self._find(resource_id)

    async def close(self) -> None:
        return None
