"""What stores need from their dialect to share the flow-run and quota operations.

Both SQLite and PostgreSQL stores run these operations through the same code: the SQL text comes from
each dialect's file (same block names, same positional parameters), and values cross into and out of
the database through the adapters below.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

__all__ = ["Dialect", "Executor"]


class Executor(Protocol):
    """A connection in a transaction: ``execute(sql, params)`` with positional or named parameters."""

    def execute(self, query: Any, params: Sequence[Any] | Mapping[str, Any] = ..., /) -> Any: ...


class Dialect(abc.ABC):
    """The primitives a store provides to the shared operations."""

    #: The dialect's named SQL blocks.
    _sql: Mapping[str, Any]

    @abc.abstractmethod
    def _transaction(self) -> AbstractContextManager[Executor]:
        """A connection inside a write transaction, committed when the block ends without error."""

    @abc.abstractmethod
    def _reading(self) -> AbstractContextManager[Executor]:
        """A connection for reads."""

    @abc.abstractmethod
    def _json_in(self, value: Any) -> Any:
        """A JSON value as the database takes it."""

    @abc.abstractmethod
    def _json_out(self, value: Any) -> Any:
        """A JSON value as the database returned it, decoded."""

    @abc.abstractmethod
    def _now(self) -> datetime:
        """The store's (injected) clock."""

    @abc.abstractmethod
    def _time_in(self, value: datetime | None) -> Any: ...

    @abc.abstractmethod
    def _time_out(self, value: Any) -> datetime | None: ...
