"""The database layer: what each dialect (SQLite, PostgreSQL) provides, and nothing more.

A dialect moves values in and out of its database. It owns connections and transactions, its named
SQL blocks, the adapters that turn JSON and times into what its driver takes, and exactly one
function that changes a resource, :meth:`Database.commit`: the compare-and-swap on id, version,
state and created_at (and the claim token when fenced), the journal row, and the write's side rows,
in one transaction. Everything the store decides (which transition, which deadline, what the new row is)
is planned before, once, in :mod:`tenure.store.write`.

The store's parts (claims, the inbox, the change feed, interests, flow runs) are plain objects over
this protocol; they run the same SQL block names on either dialect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from tenure.flow.records import FlowRunRow, FlowTaskRow
from tenure.store.asyncreads import AsyncReads
from tenure.store.model import JournalEntry, Resource
from tenure.store.plans import PageQuery
from tenure.store.signal import Listener, WorkSignal
from tenure.store.tables import OwnedTables
from tenure.store.write import Write

T = TypeVar("T")

__all__ = ["Database", "Executor"]


class Executor(Protocol):
    """A connection (in a transaction, for writes): ``execute(sql, params)``, positional or named."""

    def execute(self, query: Any, params: Sequence[Any] | Mapping[str, Any] = ..., /) -> Any: ...


class Database(Protocol):
    """One database behind a store: connections, named SQL, value adapters and the one write."""

    #: "sqlite" or "postgres": which migrations and SQL blocks apply.
    dialect: str
    #: Where the database lives, with any password hidden.
    target: str
    #: The dialect's named SQL blocks (the same names on both dialects).
    sql: Mapping[str, str]
    #: Whether change-feed positions carry a transaction id (PostgreSQL) or only the journal seq.
    txid_positions: bool
    #: Operations sent to the database (a statement, or a transaction of several), for metrics.
    operations: int

    # --- the one write -------------------------------------------------------------------------

    def commit(self, write: Write) -> bool:
        """Commit a planned write in one transaction; False (nothing written) if the swap lost.

        The row changes only while it is still at ``write.before``'s id, version and state, is the same
        resource (its ``created_at``: an id deleted and created again starts over at version 1) and,
        when ``write.token`` is set, still carries that claim token. The journal row and the side rows
        (the wait opened, the callbacks settled, the waits carried along) commit with it or not at all.
        """
        ...

    def insert(self, resource: Resource, actor: str | None) -> Resource | None:
        """Insert a new resource at version 1 with its creation journal row, in one transaction.

        Returns None when inserted, or the existing resource holding the same idempotency key.
        """
        ...

    # --- transactions and values ---------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[Executor]:
        """A connection inside a write transaction, committed when the block ends without error."""
        ...

    def reading(self) -> AbstractContextManager[Executor]:
        """A connection for reads."""
        ...

    def batched(self, unit: Callable[[Any], T], *, key: str = "") -> T:
        """Run ``unit`` (given a connection) in the next transaction shared with other threads' writes.

        Returns its answer once that transaction committed (see :mod:`tenure.store.groupcommit`);
        ``key`` names what it writes (a resource id). Each unit is decided alone: one that fails
        takes no other with it.
        """
        ...

    def json_in(self, value: Any) -> Any: ...

    def json_out(self, value: Any) -> Any: ...

    def time_in(self, value: datetime | None) -> Any: ...

    def time_out(self, value: Any) -> datetime | None: ...

    def array_in(self, values: Sequence[str]) -> Any:
        """A list of strings as the dialect's list-taking SQL takes it."""
        ...

    def resource_out(self, row: Sequence[Any]) -> Resource:
        """A resource row (in the column order of ``get_resource``) as a snapshot."""
        ...

    # --- reads and statements whose best form differs per database -----------------------------

    def find(self, resource_id: str) -> Resource | None: ...

    def async_reads(self) -> AsyncReads:
        """Reads an event loop can make without blocking on them (see :mod:`tenure.store.asyncreads`)."""
        ...

    def select_page(self, query: PageQuery) -> list[Resource]: ...

    def journal(self, resource_id: str, after_version: int, limit: int) -> list[JournalEntry]: ...

    def feed(self, after_seq: int, limit: int) -> list[JournalEntry]: ...

    def claim_due(
        self, worker: str, pairs: Sequence[str], limit: int, now: datetime, expires: datetime
    ) -> list[tuple[Resource, bool]]:
        """Claim up to ``limit`` due, unclaimed (or expired) resources; (snapshot, takeover) each."""
        ...

    def save_flow(self, run_id: str, tasks: Sequence[FlowTaskRow], run: FlowRunRow | None, now: datetime) -> bool:
        """Write task checkpoints and the run's new state atomically; False if ``run`` names no run."""
        ...

    # --- schema and lifecycle ------------------------------------------------------------------

    def migrate(self) -> list[int]: ...

    def schema_version(self) -> int: ...

    def migrate_owned(self, tables: OwnedTables) -> list[int]:
        """Apply the pending migrations of tables a kind owns; returns the versions applied."""
        ...

    def owned_version(self, owner: str) -> int:
        """The newest migration of ``owner``'s tables applied to the database (0: none)."""
        ...

    def listen(self, signal: WorkSignal, changed: WorkSignal) -> Listener | None:
        """Relay other processes' writes to the two signals, where the database can (started once)."""
        ...

    def close(self) -> None: ...
