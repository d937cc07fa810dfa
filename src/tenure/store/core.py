"""What both stores share: the kind registry, planning writes, and telling conflicts apart.

A store subclass only moves planned values in and out of its database; every decision about what
a write means (which transition, which deadline, what the new snapshot is) is made here, once.
"""

from __future__ import annotations

import abc
import builtins
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from tenure.clock import Clock, system_clock
from tenure.errors import (
    AlreadyExists,
    Conflict,
    IdempotencyKeyReused,
    InvalidArgument,
    InvalidSpec,
    ResourceNotFound,
    TenureError,
    TransitionNotAllowed,
    UnknownKind,
)
from tenure.machine import Kind, Role, State
from tenure.store.claims import Claims
from tenure.store.flowruns import FlowRuns
from tenure.store.inbox import Inbox
from tenure.store.model import JournalEntry, Page, Resource, new_id
from tenure.store.plans import CreatePlan, FirePlan
from tenure.store.quotas import QuotaLedger
from tenure.store.signal import Listener, WorkSignal

__all__ = ["CreatePlan", "FirePlan", "StoreCore"]

#: How often a fire without an expected version re-reads and tries again after losing a race.
BLIND_FIRE_ATTEMPTS = 16
MAX_PAGE = 1000


def _schedule(state: State, now: datetime) -> tuple[datetime | None, datetime | None]:
    """(next_attempt_at, deadline) for a resource entering ``state`` at ``now``."""
    if state.role is Role.WORK:
        return now, None
    if state.role is Role.WAIT and state.deadline is not None:
        return None, now + state.deadline
    return None, None


class StoreCore(Claims, Inbox, FlowRuns, QuotaLedger, abc.ABC):
    """Shared logic of the SQLite and PostgreSQL stores."""

    target: str

    def __init__(
        self, kinds: Iterable[Kind] = (), *, clock: Clock = system_clock, default_sharable: bool = True
    ) -> None:
        self._kinds: dict[str, Kind] = {}
        #: Bumped by every write that makes work due; workers wait on it.
        self.signal = WorkSignal()
        #: Operations sent to the database (a statement, or a transaction of several), for metrics.
        self.operations = 0
        self._clock = clock
        self._default_sharable = default_sharable
        for k in kinds:
            self.register(k)

    def _now(self) -> datetime:
        return self._clock()

    def _json_object_in(self, kind: str, field: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
        return _json_object(kind, field, value)

    # --- kinds ---------------------------------------------------------------------------------

    @property
    def kinds(self) -> Mapping[str, Kind]:
        return dict(self._kinds)

    def register(self, kind: Kind) -> None:
        existing = self._kinds.get(kind.name)
        if existing is not None and existing is not kind:
            raise TenureError(f"a different kind named {kind.name!r} is already registered with this store")
        self._kinds[kind.name] = kind

    def kind(self, name: str) -> Kind:
        try:
            return self._kinds[name]
        except KeyError:
            raise UnknownKind(name, sorted(self._kinds)) from None

    # --- planning ------------------------------------------------------------------------------

    def _plan_create(
        self,
        *,
        kind_name: str,
        spec: Mapping[str, Any] | None,
        data: Mapping[str, Any] | None,
        sharable: bool | None,
        idempotency_key: str | None,
        actor: str | None,
        resource_id: str | None,
    ) -> CreatePlan:
        kind = self.kind(kind_name)
        clean_spec = kind.validate_spec(spec)
        _refuse_nul_json(kind.name, "", clean_spec)
        clean_data = _json_object(kind.name, "data", data)
        if idempotency_key is not None and not (0 < len(idempotency_key) <= 255):
            raise InvalidArgument("idempotency_key", "must be 1 to 255 characters", idempotency_key)
        if resource_id is not None and not (0 < len(resource_id) <= 64):
            raise InvalidArgument("resource_id", "must be 1 to 64 characters", resource_id)
        _refuse_nul_text(idempotency_key=idempotency_key, resource_id=resource_id, actor=actor)
        now = self._clock()
        next_attempt_at, deadline = _schedule(kind.initial, now)
        resource = Resource(
            id=resource_id or new_id(),
            kind=kind.name,
            state=kind.initial.name,
            version=1,
            spec=clean_spec,
            data=clean_data,
            desired_state=None,
            generation=1,
            observed_generation=0,
            sharable=self._default_sharable if sharable is None else bool(sharable),
            error=None,
            attempts=0,
            entered_at=now,
            next_attempt_at=next_attempt_at,
            deadline=deadline,
            claim_token=None,
            claimed_by=None,
            claim_expires_at=None,
            idempotency_key=idempotency_key,
            created_at=now,
            updated_at=now,
        )
        return CreatePlan(resource, actor)

    def _check_replay(self, plan: CreatePlan, existing: Resource) -> Resource:
        """The resource an idempotent replay returns, or a refusal if the request differs."""
        wanted = plan.resource
        key = wanted.idempotency_key or ""
        if existing.kind != wanted.kind:
            raise IdempotencyKeyReused(key, existing.id, f"kind {existing.kind!r} there, {wanted.kind!r} here")
        if dict(existing.spec) != dict(wanted.spec):
            raise IdempotencyKeyReused(key, existing.id, "the spec differs")
        return existing

    def _plan_fire(
        self,
        before: Resource,
        event: str,
        *,
        data: Mapping[str, Any] | None,
        error: str | None,
        actor: str | None,
        detail: Mapping[str, Any] | None,
    ) -> FirePlan:
        kind = self.kind(before.kind)
        transition = kind.transition(before.state, event, before, resource_id=before.id)
        _refuse_nul_text(error=error, actor=actor)
        target = kind.state(transition.target)
        now = self._clock()
        next_attempt_at, deadline = _schedule(target, now)
        new_data = before.data
        if data:
            new_data = {**before.data, **_json_object(kind.name, "data", data)}
        after = Resource(
            id=before.id,
            kind=before.kind,
            state=target.name,
            version=before.version + 1,
            spec=before.spec,
            data=new_data,
            desired_state=before.desired_state,
            generation=before.generation,
            observed_generation=before.observed_generation,
            sharable=before.sharable,
            error=error,
            attempts=0,
            entered_at=now,
            next_attempt_at=next_attempt_at,
            deadline=deadline,
            claim_token=None,
            claimed_by=None,
            claim_expires_at=None,
            idempotency_key=before.idempotency_key,
            created_at=before.created_at,
            updated_at=now,
        )
        journaled = _json_object(kind.name, "detail", detail)
        if error is not None:
            journaled["error"] = error  # the row's error is cleared by the next write; the journal keeps it
        return FirePlan(before, after, event, bool(data), actor, journaled)

    # --- the operations built on the subclass's primitives -------------------------------------

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
        plan = self._plan_create(
            kind_name=kind,
            spec=spec,
            data=data,
            sharable=sharable,
            idempotency_key=idempotency_key,
            actor=actor,
            resource_id=resource_id,
        )
        try:
            existing = self._insert(plan)
        except AlreadyExists:
            raise AlreadyExists("resource", plan.resource.id) from None
        if existing is None:
            self.signal.notify()
            return plan.resource
        return self._check_replay(plan, existing)

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
        pinned = expected_version
        lost_at = 0
        if isinstance(resource, Resource):
            snapshot = resource
            pinned = resource.version if expected_version is None else expected_version
        else:
            snapshot = self.get(resource)
        for _ in range(BLIND_FIRE_ATTEMPTS):
            if pinned is not None and snapshot.version != pinned:
                raise Conflict(
                    resource_id=snapshot.id,
                    expected_version=pinned,
                    actual_version=snapshot.version,
                    actual_state=snapshot.state,
                )
            try:
                plan = self._plan_fire(snapshot, event, data=data, error=error, actor=actor, detail=detail)
            except TransitionNotAllowed:
                if isinstance(resource, Resource):
                    # A stale snapshot may be refused for a state the resource has already left:
                    # that is a lost race, and the caller should hear so.
                    self._raise_if_moved(snapshot)
                raise
            if self._apply(plan):
                if plan.after.next_attempt_at is not None or plan.after.deadline is not None:
                    self.signal.notify()
                return plan.after
            current = self._get_or_none(snapshot.id)
            if current is None:
                raise ResourceNotFound(snapshot.id)
            if pinned is not None:
                raise Conflict(
                    resource_id=snapshot.id,
                    expected_version=pinned,
                    actual_version=current.version,
                    actual_state=current.state,
                )
            lost_at, snapshot = snapshot.version, current
        # Unpinned, and every re-read was overtaken again: the resource is too hot to win on.
        raise Conflict(
            resource_id=snapshot.id,
            expected_version=lost_at,
            actual_version=snapshot.version,
            actual_state=snapshot.state,
        )

    def _raise_if_moved(self, snapshot: Resource) -> None:
        current = self._get_or_none(snapshot.id)
        if current is None:
            raise ResourceNotFound(snapshot.id)
        if current.version != snapshot.version:
            raise Conflict(
                resource_id=snapshot.id,
                expected_version=snapshot.version,
                actual_version=current.version,
                actual_state=current.state,
            )

    def get(self, resource_id: str) -> Resource:
        if _NUL in resource_id:
            raise ResourceNotFound(resource_id)  # no resource can have such an id (see _refuse_nul_text)
        found = self._get_or_none(resource_id)
        if found is None:
            raise ResourceNotFound(resource_id)
        return found

    def list(
        self,
        *,
        kind: str | None = None,
        state: str | Sequence[str] | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> Page[Resource]:
        if kind is not None:
            k = self.kind(kind)
            states = [state] if isinstance(state, str) else list(state or [])
            for s in states:
                k.state(s)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_PAGE}", limit)
        wanted = None if state is None else ([state] if isinstance(state, str) else list(state))
        items = self._select_page(kind, wanted, after, limit)
        return Page(items, items[-1].id if len(items) == limit else None)

    def listen(self) -> Listener | None:
        """Start relaying other processes' writes to :attr:`signal`, where the database can.

        Returns the listener (started once, shared, stopped by :meth:`close`), or None when the
        database cannot notify: waiters must then poll for work written by other processes.
        """
        return None

    # --- what each store provides --------------------------------------------------------------

    @abc.abstractmethod
    def _insert(self, plan: CreatePlan) -> Resource | None:
        """Insert the planned resource and its creation journal row in one transaction.

        Returns None when inserted, or the existing resource holding the same idempotency key.
        """

    @abc.abstractmethod
    def _apply(self, plan: FirePlan) -> bool:
        """The compare-and-swap plus journal row, in one transaction; False if the swap lost."""

    @abc.abstractmethod
    def _get_or_none(self, resource_id: str) -> Resource | None: ...

    @abc.abstractmethod
    def _select_page(
        self, kind: str | None, states: builtins.list[str] | None, after: str | None, limit: int
    ) -> builtins.list[Resource]: ...

    @abc.abstractmethod
    def journal(self, resource_id: str, *, after_version: int = 0, limit: int = 1000) -> builtins.list[JournalEntry]:
        """The resource's history, oldest first."""

    @abc.abstractmethod
    def feed(self, *, after_seq: int = 0, limit: int = 1000) -> builtins.list[JournalEntry]:
        """Journal entries of every resource after ``after_seq``, in ``seq`` order."""

    @abc.abstractmethod
    def migrate(self) -> builtins.list[int]:
        """Apply pending schema migrations; returns the versions applied."""

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The newest migration applied to the database (0 for an empty database)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""


def _json_object(kind: str, field: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidSpec(kind, [(field, f"must be a JSON object, got {type(value).__name__}")])
    try:
        out: dict[str, Any] = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidSpec(kind, [(field, f"must be JSON-serialisable ({exc})")]) from None
    _refuse_nul_json(kind, field, out)
    return out


# PostgreSQL cannot store U+0000 in text or jsonb; both stores refuse it so that they behave alike.
_NUL = "\x00"
_NUL_RULE = "must not contain the NUL character (U+0000)"


def _refuse_nul_json(kind: str, field: str, value: Any) -> None:
    """Raise :class:`InvalidSpec` naming the first path in ``value`` (keys included) that holds U+0000."""
    path = _nul_path(value)
    if path is not None:
        name = ".".join(p for p in (field, *path) if p) or "spec"
        raise InvalidSpec(kind, [(name, _NUL_RULE)])


def _nul_path(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return () if _NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _NUL in key:
                return (key,)
            found = _nul_path(item)
            if found is not None:
                return (key, *found)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item)
            if found is not None:
                return (str(index), *found)
    return None


def _refuse_nul_text(**fields: str | None) -> None:
    for name, value in fields.items():
        if value is not None and _NUL in value:
            raise InvalidArgument(name, _NUL_RULE, value)
