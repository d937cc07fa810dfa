"""The store's seams: what each caller may do with a store, whatever database is behind it.

Callers depend on the narrowest protocol that covers what they do, never on a concrete store class:

* :class:`Store` — the HTTP service, the CLI and clients: resources, their history and the reads
  people make, interests, callbacks from outside;
* :class:`EngineStore` — the engine's workers: claims, fenced writes, the inbox, deadlines;
* :class:`StepStore` — a step's own code, through its context: read, answer its own wait, key its
  work by its stay in the state. A step never writes the resource itself: its outcome does;
* :class:`TableStore` — code that keeps tables of its own in the store's database (a kind's plug-ins,
  see :mod:`tenure.store.tables`).

Flow runs are kept through :class:`tenure.flow.durable.FlowRunStore`, which the flow layer declares.
Both built-in stores (:class:`~tenure.store.sqlite.SQLiteStore`,
:class:`~tenure.store.postgres.PostgresStore`) provide all of them.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from tenure.flow.durable import FlowRunStore
from tenure.flow.records import FlowRunRow, FlowTaskRow
from tenure.machine import Kind
from tenure.store.asyncreads import AsyncReads
from tenure.store.claims import Agenda, Claim, Due
from tenure.store.database import Database
from tenure.store.feed import Changes
from tenure.store.inbox import CallbackRow, CallbackStatus, Receipt, WaitInfo, WaitRow
from tenure.store.model import BacklogRow, JournalEntry, Page, Resource
from tenure.store.retention import PruneReport, RetentionPolicy
from tenure.store.sharing import Keep
from tenure.store.signal import Listener, WorkSignal
from tenure.store.uses import UsePolicy
from tenure.store.write import WaitPlan

__all__ = ["EngineStore", "StepStore", "Store", "TableStore"]


@runtime_checkable
class Store(Protocol):
    """Durable resources whose every write is one compare-and-swap on ``version``.

    Every state change goes through the resource's kind; the journal row of a write is committed in
    the same transaction as the write itself. Implementations are safe to share between threads.
    """

    #: Where the store lives, with any password left out.
    target: str
    #: "sqlite" or "postgres".
    dialect: str
    #: Bumped when the journal may have grown; change watchers wait on it (see :meth:`listen`).
    changed: WorkSignal

    def now(self) -> datetime:
        """The store's clock: every time it writes comes from it."""
        ...

    @property
    def operations(self) -> int:
        """Operations sent to the database so far, for metrics."""
        ...

    def listen(self) -> Listener | None:
        """Relay other processes' writes to the store's signals (None where the database cannot)."""
        ...

    @property
    def kinds(self) -> Mapping[str, Kind]:
        """The kinds this store knows, by name."""
        ...

    def register(self, kind: Kind) -> None:
        """Make ``kind`` known to this store (raises if another kind has that name and version).

        Registering a higher version of a known kind keeps the older ones: resources made under
        them finish on them, new resources are made under the newest.
        """
        ...

    def kind(self, name: str) -> Kind:
        """The newest version of the kind called ``name`` (raises :class:`~tenure.errors.UnknownKind`)."""
        ...

    def kind_of(self, resource: Resource) -> Kind:
        """The version of its kind ``resource`` lives on (raises UnknownKind if it is not loaded)."""
        ...

    def kind_versions(self, name: str) -> tuple[Kind, ...]:
        """Every loaded version of the kind called ``name``, oldest first (empty if none)."""
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

    def find(self, resource_id: str) -> Resource | None:
        """The resource's current snapshot, or None if there is no such resource."""
        ...

    def async_reads(self) -> AsyncReads:
        """Reads an asyncio event loop can make without blocking on them (the HTTP service's)."""
        ...

    def list(
        self,
        *,
        kind: str | None = None,
        state: str | Sequence[str] | None = None,
        desired_state: str | None = None,
        party: str | None = None,
        after: str | None = None,
        limit: int = 100,
        data: tuple[str, str] | None = None,
    ) -> Page[Resource]:
        """Resources in creation order, filtered, one keyset page at a time."""
        ...

    def set_desired_state(
        self,
        resource: Resource | str,
        desired: str | None,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        client: str | None = None,
    ) -> Resource:
        """Set (or clear) the state the engine should take the resource to; a journaled compare-and-swap.

        A teardown wish of a shared kind releases ``client``'s own uses and waits for the others'."""
        ...

    def change_uses(
        self,
        resource_id: str,
        *,
        register: Mapping[str, timedelta | None] | None = None,
        release: Iterable[str] = (),
        client: str | None = None,
        admin: bool = False,
        desired: str | Keep | None = ...,
        expected_version: int | None = None,
        actor: str | None = None,
    ) -> Resource:
        """Register or renew (party -> ttl) and release parties' uses, and maybe set the desired state,
        in one journaled compare-and-swap (see :mod:`tenure.store.sharing`)."""
        ...

    def use(
        self,
        resource_id: str,
        party: str,
        *,
        ttl: timedelta | None = None,
        client: str | None = None,
        admin: bool = False,
        expected_version: int | None = None,
    ) -> Resource:
        """Register or renew ``party``'s use of the resource, owned by ``client``."""
        ...

    def release_use(
        self,
        resource_id: str,
        party: str,
        *,
        client: str | None = None,
        admin: bool = False,
        expected_version: int | None = None,
    ) -> Resource:
        """Release ``party``'s use (a no-op if it has none); the last one may start a waiting teardown."""
        ...

    def force_teardown(
        self, resource_id: str, *, actor: str | None, reason: str | None = None, expected_version: int | None = None
    ) -> Resource:
        """Tear the resource down whoever still uses it, recording them in the journal."""
        ...

    def retry_now(self, resource_id: str, *, expected_version: int | None = None, actor: str | None = None) -> Resource:
        """Make the next attempt of a step backing off after a failure due now (an operator's call).

        Only for a resource in a work state, or a rest state on its way to a desired state, whose next
        attempt is scheduled later and that no worker holds: ``next_attempt_at`` becomes now, the
        version moves, and an ``@retry-now`` entry naming the schedule it replaced is journaled; the
        state, attempts and last error stay. Raises :class:`~tenure.errors.RetryNotAllowed` otherwise,
        :class:`~tenure.errors.Conflict` when the resource is not at ``expected_version`` (or, unpinned,
        is too hot to win on), or :class:`~tenure.errors.ResourceNotFound`.
        """
        ...

    @property
    def use_policy(self) -> UsePolicy:
        """How long uses last (default and maximum time to live)."""
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
        journal should use :meth:`changes`, whose positions never skip such an entry (reading after
        writers are done is exact either way).
        """
        ...

    def changes(
        self,
        after: str | None = None,
        *,
        kind: str | None = None,
        resource_id: str | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> Changes:
        """Journal entries after a position, in an order a resuming reader never misses anything in."""
        ...

    def latest_position(self) -> str:
        """The change-feed position of now."""
        ...

    def pending_waits(self, resource_id: str) -> builtins.list[WaitInfo]:
        """What the resource waits for at its current version, with the answers so far (no tokens)."""
        ...

    def backlog(self, kinds: Sequence[str] | None = None) -> builtins.list[BacklogRow]:
        """Resources per kind and state, with the age of the oldest in each wait state."""
        ...

    def flow_runs(
        self, *, resource_id: str | None = None, state: str | None = None, limit: int = 100, after: str | None = None
    ) -> builtins.list[FlowRunRow]:
        """Flow runs, oldest first, optionally of one resource or in one state."""
        ...

    def load_flow_run(self, run_id: str) -> tuple[FlowRunRow, builtins.list[FlowTaskRow]] | None:
        """A flow run with its task checkpoints."""
        ...

    def deliver(
        self,
        resource_id: str,
        token: str,
        key: str,
        status: CallbackStatus | str,
        *,
        data: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Receipt:
        """Record an external party's callback; says accepted, duplicate or refused (and why)."""
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


@runtime_checkable
class EngineStore(Store, Protocol):
    """What the engine needs from a store besides :class:`Store`: claims, fenced writes, the inbox.

    Both built-in stores provide it; see :mod:`tenure.store.claims` and :mod:`tenure.store.inbox`.
    """

    #: Bumped by every write of this store object that makes work due.
    signal: WorkSignal

    def claim(self, worker: str, due: Sequence[Due], *, limit: int = 10, lease: timedelta) -> builtins.list[Claim]:
        """Claim up to ``limit`` due resources in the (kind, state) pairs ``due``."""
        ...

    def renew(self, claims: Sequence[Claim], *, lease: timedelta) -> set[str]:
        """Extend ``claims``; returns the tokens of those still held."""
        ...

    def release(self, claim: Claim) -> bool:
        """Give a claim back unworked."""
        ...

    def fire_claimed(
        self,
        claim: Claim,
        event: str,
        *,
        data: Mapping[str, Any] | None = None,
        error: str | None = None,
        actor: str | None = None,
        detail: Mapping[str, Any] | None = None,
        wait: WaitPlan | None = None,
        hold: timedelta | None = None,
    ) -> Resource:
        """Fire as the claim holder (raises ClaimLost once the claim no longer holds).

        With ``hold``, a resource left due at once keeps the claim for that long (the returned
        resource carries the token then): the holder runs its next step without claiming it again.
        """
        ...

    def fire_settling(
        self,
        before: Resource,
        event: str,
        callbacks: Sequence[int],
        *,
        result: str,
        data: Mapping[str, Any] | None = None,
        error: str | None = None,
        actor: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Resource:
        """Fire on a snapshot and settle ``callbacks`` in the same transaction."""
        ...

    def retry_later(
        self,
        claim: Claim,
        *,
        error: str,
        at: datetime,
        attempts: int,
        data: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> Resource:
        """Record a failed attempt and schedule the next one (fenced, journaled as ``@retry``)."""
        ...

    def expire_uses(
        self, kinds: Sequence[str] | None = None, *, actor: str | None, limit: int = 100
    ) -> builtins.list[Resource]:
        """Remove expired uses of resources of ``kinds`` (default: every kind the store knows), one
        journaled write per resource; teardown starts where the last use of a waiting teardown expired."""
        ...

    def expired_waits(self, kinds: Sequence[str], *, limit: int = 100) -> builtins.list[Resource]:
        """Resources of ``kinds`` whose wait outlived its deadline."""
        ...

    def agenda(self, due: Sequence[Due], kinds: Sequence[str]) -> Agenda:
        """When each kind of engine work is next due."""
        ...

    def open_wait(self, resource: Resource, hashed: str) -> None:
        """Open a provisional wait for a token a running step handed out."""
        ...

    def wait(self, hashed: str) -> WaitRow | None:
        """The wait opened under a token hash."""
        ...

    def callbacks(self, hashed: str) -> builtins.list[CallbackRow]:
        """Every callback recorded for a wait."""
        ...

    def unsettled(self, kinds: Sequence[str], *, limit: int = 100) -> builtins.list[CallbackRow]:
        """Callbacks not yet applied, for resources of ``kinds``."""
        ...

    def mark_settled(self, seqs: Sequence[int], result: str) -> int:
        """Settle callbacks without a resource write; returns how many this call settled."""
        ...

    def current_wait(self, resource_id: str, version: int) -> WaitRow | None:
        """The wait the write that made ``version`` opened, if any."""
        ...

    def release_idle(self, claim: Claim) -> bool:
        """Give back the claim of a resource with nothing left to do."""
        ...

    def give_up_desired(self, claim: Claim, *, error: str, actor: str | None = None) -> Resource:
        """Record that the desired state will not be reached in this generation (fenced)."""
        ...

    def reconcile_hops(self, resource_id: str, generation: int) -> builtins.list[str]:
        """The states the engine moved the resource on from towards this generation's desired state."""
        ...

    def stay_version(self, resource: Resource) -> int:
        """The version at which the resource entered the state it is in."""
        ...

    def create_flow_run(self, run: FlowRunRow) -> None: ...

    def save_flow(self, run_id: str, tasks: Sequence[FlowTaskRow], run: FlowRunRow | None = None) -> None: ...

    def prune(self, policy: RetentionPolicy, *, now: datetime | None = None, limit: int | None = None) -> PruneReport:
        """Delete one bounded batch of what ``policy`` no longer keeps of final resources' history.

        Each kind of history (journal, waits with their callbacks, flow runs, the resources themselves)
        is pruned in its own short transaction of at most ``limit`` rows (default: the policy's
        ``batch``); ``now`` (default: the store's clock) is what the policy's durations count back
        from. Nothing of a resource that is not final, or not final for long enough, is touched. The
        report's ``more`` says a batch stopped on its bounds: call again to go on. See
        :mod:`tenure.store.retention`.
        """
        ...

    def optimize(self) -> bool:
        """Refresh the database's planner statistics where tenure keeps them (SQLite), cheaply.

        True if it ran; PostgreSQL keeps its own (see :mod:`tenure.store.statistics`).
        """
        ...


@runtime_checkable
class StepStore(FlowRunStore, Protocol):
    """What a step's own code may do with the store: read, record facts, answer its own wait.

    Facts are flow-run checkpoints (:class:`~tenure.flow.durable.FlowRunStore`); a step changes its
    resource only through the outcome it returns, which the engine writes.
    """

    def get(self, resource_id: str) -> Resource:
        """A resource's current snapshot."""
        ...

    def journal(self, resource_id: str, *, after_version: int = 0, limit: int = 1000) -> builtins.list[JournalEntry]:
        """A resource's history, oldest first."""
        ...

    def open_wait(self, resource: Resource, hashed: str) -> None:
        """Open a provisional wait for a token the step hands out (callbacks under it are kept)."""
        ...

    def deliver(
        self,
        resource_id: str,
        token: str,
        key: str,
        status: CallbackStatus | str,
        *,
        data: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Receipt:
        """Answer a wait, as an external party would (a provisioner that finishes at once)."""
        ...

    def stay_version(self, resource: Resource) -> int:
        """The version at which the resource entered the state it is in."""
        ...


@runtime_checkable
class TableStore(Protocol):
    """What code owning tables in the store's database uses: the database layer and the store's clock.

    The database gives transactions, reads and its value adapters; the owner runs its own named SQL
    blocks (:meth:`tenure.store.tables.OwnedTables.queries`) on it, never the store's.
    """

    @property
    def database(self) -> Database:
        """The database layer behind the store."""
        ...

    def now(self) -> datetime:
        """The store's clock."""
        ...
