"""The store protocol: what every store does, whatever database is behind it."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from tenure.machine import Kind
from tenure.store.model import JournalEntry, Page, Resource

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    """Durable resources whose every write is one compare-and-swap on ``version``.

    Every state change goes through the resource's kind; the journal row of a write is committed in
    the same transaction as the write itself. Implementations are safe to share between threads.
    """

    #: Where the store lives, with any password left out.
    target: str

    @property
    def kinds(self) -> Mapping[str, Kind]:
        """The kinds this store knows, by name."""
        ...

    def register(self, kind: Kind) -> None:
        """Make ``kind`` known to this store (raises if another kind has that name)."""
        ...

    def kind(self, name: str) -> Kind:
        """The kind called ``name`` (raises :class:`~tenure.errors.UnknownKind`)."""
        ...

    def create(
        self,
        kind: str,
        spec: Mapping[str, Any] | None = None,
        *,
        data: Mapping[str, Any] | None = None,
        sharable: bool | None = None,
        idempotency_key: str | None = None,
        actor: str | None = None,
        resource_id: str | None = None,
    ) -> Resource:
        """Create a resource in its kind's initial state at version 1.

        With an ``idempotency_key``, sending the same request again returns the resource the first
        request created; the same key with a different request raises
        :class:`~tenure.errors.IdempotencyKeyReused`.
        """
        ...

    def get(self, resource_id: str) -> Resource:
        """The resource's current snapshot (raises :class:`~tenure.errors.ResourceNotFound`)."""
        ...

    def list(
        self,
        *,
        kind: str | None = None,
        state: str | Sequence[str] | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> Page[Resource]:
        """Resources in creation order, filtered, one keyset page at a time."""
        ...

    def fire(
        self,
        resource: Resource | str,
        event: str,
        *,
        expected_version: int | None = None,
        data: Mapping[str, Any] | None = None,
        error: str | None = None,
        actor: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Resource:
        """Apply ``event`` as one compare-and-swap and journal it in the same transaction.

        Given a snapshot, the write succeeds only if the resource is still at the snapshot's
        version. Given an id, ``expected_version`` pins the version the same way; without it the
        event applies to whatever the current state is (re-reading after a lost race). ``data`` is
        merged (shallowly) into the resource's data. Raises
        :class:`~tenure.errors.TransitionNotAllowed`, :class:`~tenure.errors.Conflict` or
        :class:`~tenure.errors.ResourceNotFound`; on any error nothing is written.
        """
        ...

    def journal(self, resource_id: str, *, after_version: int = 0, limit: int = 1000) -> builtins.list[JournalEntry]:
        """The resource's history, oldest first."""
        ...

    def feed(self, *, after_seq: int = 0, limit: int = 1000) -> builtins.list[JournalEntry]:
        """Journal entries of every resource with ``seq`` greater than ``after_seq``, in ``seq`` order.

        On PostgreSQL, ``seq`` values are taken before commit, so while writers are active an entry with
        a lower ``seq`` can become visible after one with a higher ``seq``: a reader that tails the
        feed must not advance past entries of transactions still in flight (the event stream will
        track that; reading after writers are done is exact).
        """
        ...

    def migrate(self) -> builtins.list[int]:
        """Apply pending schema migrations; returns the versions applied."""
        ...

    def schema_version(self) -> int:
        """The newest migration applied to the database (0 for an empty database)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
