"""A store assembled from parts over one database: what ``SQLiteStore`` and ``PostgresStore`` are.

Each part is a plain object with one concern — :class:`~tenure.store.resources.Resources`,
:class:`~tenure.store.claims.Claims`, :class:`~tenure.store.inbox.Inbox`,
:class:`~tenure.store.feed.ChangeFeed`, :class:`~tenure.store.interests.Interests`,
:class:`~tenure.store.flowruns.FlowRuns` — over the same :class:`~tenure.store.database.Database`,
clock and wake-up signal. Every change to a resource any of them makes is a planned
:class:`~tenure.store.write.Write` committed by the database's one write function. This class only
wires the parts together and answers for them; callers depend on the protocols in
:mod:`tenure.store.protocol`, never on this class.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from tenure.clock import Clock, system_clock
from tenure.errors import SchemaNotMigrated, SchemaTooNew
from tenure.flow.records import FlowRunRow, FlowTaskRow
from tenure.machine import Kind
from tenure.store.asyncreads import AsyncReads
from tenure.store.claims import Agenda, Claim, Claims, Due
from tenure.store.database import Database
from tenure.store.feed import ChangeFeed, Changes
from tenure.store.flowruns import FlowRuns
from tenure.store.inbox import CallbackRow, CallbackStatus, Inbox, Receipt, WaitInfo, WaitRow
from tenure.store.migrator import latest_version
from tenure.store.model import BacklogRow, JournalEntry, Page, Resource
from tenure.store.resources import KindRegistry, Resources
from tenure.store.retention import PruneReport, Retention, RetentionPolicy
from tenure.store.retrying import Retrying
from tenure.store.sharing import KEEP, Keep, Sharing
from tenure.store.signal import Listener, WorkSignal
from tenure.store.statistics import refresh_statistics
from tenure.store.tables import OwnedTables
from tenure.store.uses import UsePolicy
from tenure.store.write import WaitPlan, Writer

__all__ = ["DatabaseStore"]


class DatabaseStore:
    """The parts of a store over one database, answering every store protocol."""

    def __init__(
        self,
        db: Database,
        kinds: Iterable[Kind] = (),
        *,
        clock: Clock = system_clock,
        default_sharable: bool = True,
        uses: UsePolicy | None = None,
        tables: Iterable[OwnedTables] = (),
        check_schema: bool = True,
    ) -> None:
        self._db = db
        #: Tables kinds own in this database, migrated with it (see :mod:`tenure.store.tables`).
        self.tables = tuple(tables)
        self.dialect = db.dialect
        self.target = db.target
        #: Bumped by every write that makes work due; workers wait on it.
        self.signal = WorkSignal()
        #: Bumped when the journal may have grown (by :meth:`listen`'s relay); change watchers wait on it.
        self.changed = WorkSignal()
        self._clock = clock
        self._kinds = KindRegistry(kinds)
        writer = Writer(db, self.signal)
        self._resources = Resources(db, self._kinds, writer, clock, self.signal, default_sharable=default_sharable)
        self._claims = Claims(db, writer, self._kinds, clock, self.signal)
        self._inbox = Inbox(db, clock, self.signal)
        self._feed = ChangeFeed(db, self._kinds)
        self._sharing = Sharing(db, self._resources.swap, self._kinds, clock, uses or UsePolicy())
        self._flow_runs = FlowRuns(db, clock)
        self._retrying = Retrying(self._resources.swap, self._kinds, clock)
        if check_schema:
            try:
                self._check_schema()
            except BaseException:
                db.close()
                raise

    def _check_schema(self) -> None:
        _check_version(self.target, self._db.schema_version(), latest_version(self.dialect))
        for owned in self.tables:
            where = f"{self.target} ({owned.owner} tables)"
            _check_version(where, self._db.owned_version(owned.owner), owned.latest_version(self.dialect))

    # --- the clock, kinds and lifecycle --------------------------------------------------------

    def now(self) -> datetime:
        """The store's clock (injected; the system clock by default)."""
        return self._clock()

    @property
    def operations(self) -> int:
        """Operations sent to the database (a statement, or a transaction of several), for metrics."""
        return self._db.operations

    @property
    def kinds(self) -> Mapping[str, Kind]:
        return self._kinds.by_name

    def register(self, kind: Kind) -> None:
        self._kinds.register(kind)

    def kind(self, name: str) -> Kind:
        return self._kinds(name)

    def kind_of(self, resource: Resource) -> Kind:
        return self._kinds.of(resource)

    def kind_versions(self, name: str) -> tuple[Kind, ...]:
        return self._kinds.versions(name)

    @property
    def database(self) -> Database:
        """The database layer, for code that owns tables in it (see :mod:`tenure.store.tables`)."""
        return self._db

    def migrate(self) -> builtins.list[int]:
        """Apply pending schema migrations, then those of the tables kinds own; returns tenure's versions applied."""
        applied = self._db.migrate()
        for owned in self.tables:
            self._db.migrate_owned(owned)
        refresh_statistics(self._db, after_migrate=True)
        return applied

    def schema_version(self) -> int:
        """The newest migration applied to the database (0 for an empty database)."""
        return self._db.schema_version()

    def listen(self) -> Listener | None:
        """Start relaying other processes' writes to :attr:`signal` and :attr:`changed`, where the database can.

        Returns the listener (started once, shared, stopped by :meth:`close`), or None when the
        database cannot notify: waiters must then poll for work written by other processes.
        """
        return self._db.listen(self.signal, self.changed)

    def close(self) -> None:
        """Release connections."""
        self._db.close()

    # --- resources -----------------------------------------------------------------------------

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
        return self._resources.create(
            kind,
            spec,
            data=data,
            sharable=sharable,
            idempotency_key=idempotency_key,
            actor=actor,
            resource_id=resource_id,
        )

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
        return self._resources.fire(
            resource, event, expected_version=expected_version, data=data, error=error, actor=actor, detail=detail
        )

    def set_desired_state(
        self,
        resource: Resource | str,
        desired: str | None,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        client: str | None = None,
    ) -> Resource:
        return self._resources.set_desired_state(
            resource, desired, expected_version=expected_version, actor=actor, client=client
        )

    def get(self, resource_id: str) -> Resource:
        return self._resources.get(resource_id)

    def find(self, resource_id: str) -> Resource | None:
        return self._resources.find(resource_id)

    def async_reads(self) -> AsyncReads:
        return self._db.async_reads()

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
        return self._resources.list(
            kind=kind, state=state, desired_state=desired_state, party=party, after=after, limit=limit, data=data
        )

    def journal(self, resource_id: str, *, after_version: int = 0, limit: int = 1000) -> builtins.list[JournalEntry]:
        return self._resources.journal(resource_id, after_version=after_version, limit=limit)

    def feed(self, *, after_seq: int = 0, limit: int = 1000) -> builtins.list[JournalEntry]:
        return self._resources.feed(after_seq=after_seq, limit=limit)

    def backlog(self, kinds: Sequence[str] | None = None) -> builtins.list[BacklogRow]:
        """Resources per kind and state; ``kinds`` defaults to every registered kind."""
        names = sorted(self._kinds.by_name) if kinds is None else builtins.list(dict.fromkeys(kinds))
        return self._resources.backlog(names)

    def stay_version(self, resource: Resource) -> int:
        return self._resources.stay_version(resource)

    # --- claims and fenced writes --------------------------------------------------------------

    def claim(self, worker: str, due: Sequence[Due], *, limit: int = 10, lease: timedelta) -> builtins.list[Claim]:
        return self._claims.claim(worker, due, limit=limit, lease=lease)

    def renew(self, claims: Sequence[Claim], *, lease: timedelta) -> set[str]:
        return self._claims.renew(claims, lease=lease)

    def release(self, claim: Claim) -> bool:
        return self._claims.release(claim)

    def release_idle(self, claim: Claim) -> bool:
        return self._claims.release_idle(claim)

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
        return self._claims.fire_claimed(
            claim, event, data=data, error=error, actor=actor, detail=detail, wait=wait, hold=hold
        )

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
        return self._claims.fire_settling(
            before, event, callbacks, result=result, data=data, error=error, actor=actor, detail=detail
        )

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
        return self._claims.retry_later(claim, error=error, at=at, attempts=attempts, data=data, actor=actor)

    def give_up_desired(self, claim: Claim, *, error: str, actor: str | None = None) -> Resource:
        return self._claims.give_up_desired(claim, error=error, actor=actor)

    def reconcile_hops(self, resource_id: str, generation: int) -> builtins.list[str]:
        return self._claims.reconcile_hops(resource_id, generation)

    def expired_waits(self, kinds: Sequence[str], *, limit: int = 100) -> builtins.list[Resource]:
        return self._claims.expired_waits(kinds, limit=limit)

    def agenda(self, due: Sequence[Due], kinds: Sequence[str]) -> Agenda:
        return self._claims.agenda(due, kinds)

    def next_wakeup(self, due: Sequence[Due], kinds: Sequence[str]) -> datetime | None:
        return self._claims.next_wakeup(due, kinds)

    # --- the inbox -----------------------------------------------------------------------------

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
        return self._inbox.deliver(resource_id, token, key, status, data=data, error=error)

    def open_wait(self, resource: Resource, hashed: str) -> None:
        self._inbox.open_wait(resource, hashed)

    def wait(self, hashed: str) -> WaitRow | None:
        return self._inbox.wait(hashed)

    def current_wait(self, resource_id: str, version: int) -> WaitRow | None:
        return self._inbox.current_wait(resource_id, version)

    def pending_waits(self, resource_id: str) -> builtins.list[WaitInfo]:
        return self._inbox.pending_waits(resource_id)

    def callbacks(self, hashed: str) -> builtins.list[CallbackRow]:
        return self._inbox.callbacks(hashed)

    def unsettled(self, kinds: Sequence[str], *, limit: int = 100) -> builtins.list[CallbackRow]:
        return self._inbox.unsettled(kinds, limit=limit)

    def mark_settled(self, seqs: Sequence[int], result: str) -> int:
        return self._inbox.mark_settled(seqs, result)

    # --- the change feed -----------------------------------------------------------------------

    def changes(
        self,
        after: str | None = None,
        *,
        kind: str | None = None,
        resource_id: str | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> Changes:
        return self._feed.changes(after, kind=kind, resource_id=resource_id, state=state, limit=limit)

    def latest_position(self) -> str:
        return self._feed.latest_position()

    # --- uses ----------------------------------------------------------------------------------

    @property
    def use_policy(self) -> UsePolicy:
        return self._sharing.policy

    def change_uses(
        self,
        resource_id: str,
        *,
        register: Mapping[str, timedelta | None] | None = None,
        release: Iterable[str] = (),
        client: str | None = None,
        admin: bool = False,
        desired: str | Keep | None = KEEP,
        expected_version: int | None = None,
        actor: str | None = None,
    ) -> Resource:
        return self._sharing.change_uses(
            resource_id,
            register=register,
            release=release,
            client=client,
            admin=admin,
            desired=desired,
            expected_version=expected_version,
            actor=actor,
        )

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
        return self._sharing.change_uses(
            resource_id, register={party: ttl}, client=client, admin=admin, expected_version=expected_version
        )

    def release_use(
        self,
        resource_id: str,
        party: str,
        *,
        client: str | None = None,
        admin: bool = False,
        expected_version: int | None = None,
    ) -> Resource:
        return self._sharing.change_uses(
            resource_id, release=[party], client=client, admin=admin, expected_version=expected_version
        )

    def force_teardown(
        self, resource_id: str, *, actor: str | None, reason: str | None = None, expected_version: int | None = None
    ) -> Resource:
        return self._sharing.force_teardown(resource_id, actor=actor, reason=reason, expected_version=expected_version)

    def retry_now(self, resource_id: str, *, expected_version: int | None = None, actor: str | None = None) -> Resource:
        return self._retrying.retry_now(resource_id, expected_version=expected_version, actor=actor)

    def expire_uses(
        self, kinds: Sequence[str] | None = None, *, actor: str | None, limit: int = 100
    ) -> builtins.list[Resource]:
        return self._sharing.expire_uses(self._kinds.by_name if kinds is None else kinds, actor=actor, limit=limit)

    # --- flow runs -----------------------------------------------------------------------------

    def create_flow_run(self, run: FlowRunRow) -> None:
        self._flow_runs.create_flow_run(run)

    def save_flow(self, run_id: str, tasks: Sequence[FlowTaskRow], run: FlowRunRow | None = None) -> None:
        self._flow_runs.save_flow(run_id, tasks, run)

    def load_flow_run(self, run_id: str) -> tuple[FlowRunRow, builtins.list[FlowTaskRow]] | None:
        return self._flow_runs.load_flow_run(run_id)

    def flow_runs(
        self, *, resource_id: str | None = None, state: str | None = None, limit: int = 100, after: str | None = None
    ) -> builtins.list[FlowRunRow]:
        return self._flow_runs.flow_runs(resource_id=resource_id, state=state, limit=limit, after=after)

    # --- housekeeping --------------------------------------------------------------------------

    def prune(self, policy: RetentionPolicy, *, now: datetime | None = None, limit: int | None = None) -> PruneReport:
        return Retention(self._db, self._kind_version, self._clock).prune(policy, now=now, limit=limit)

    def optimize(self) -> bool:
        return refresh_statistics(self._db)

    def _kind_version(self, name: str, version: int) -> Kind | None:
        return next((k for k in self._kinds.versions(name) if k.version == version), None)


def _check_version(target: str, current: int, latest: int) -> None:
    """Refuse a schema behind (run ``tenure migrate``) or ahead of (upgrade tenure) this version of tenure."""
    if current < latest:
        raise SchemaNotMigrated(target, current, latest)
    if current > latest:
        raise SchemaTooNew(target, current, latest)
