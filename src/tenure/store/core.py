"""What both stores share: the kind registry, planning writes, and telling conflicts apart.

A store subclass only moves planned values in and out of its database; every decision about what
a write means (which transition, which deadline, what the new snapshot is) is made here, once.
"""

from __future__ import annotations

import abc
import builtins
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from tenure.store.desired import DESIRED_EVENT, desire_pending, reachable_states
from tenure.store.feed import ChangeFeed
from tenure.store.flowruns import FlowRuns
from tenure.store.inbox import Inbox
from tenure.store.interests import Interests, check_party
from tenure.store.model import BacklogRow, JournalEntry, Page, Resource, new_id
from tenure.store.plans import CreatePlan, FirePlan, PageQuery
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


class StoreCore(Claims, Inbox, Interests, ChangeFeed, FlowRuns, QuotaLedger, abc.ABC):
    """Shared logic of the SQLite and PostgreSQL stores."""

    #: Which database: "sqlite" or "postgres".
    dialect: str
    target: str

    def __init__(
        self, kinds: Iterable[Kind] = (), *, clock: Clock = system_clock, default_sharable: bool = True
    ) -> None:
        self._kinds: dict[str, Kind] = {}
        #: Bumped by every write that makes work due; workers wait on it.
        self.signal = WorkSignal()
        #: Bumped when the journal may have grown (by :meth:`listen`'s relay); change watchers wait on it.
        self.changed = WorkSignal()
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
        _refuse_deep_json(kind.name, "spec", spec)
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
        if existing.sharable != wanted.sharable:
            raise IdempotencyKeyReused(
                key,
                existing.id,
                f"sharable is {str(existing.sharable).lower()} there, {str(wanted.sharable).lower()} here",
            )
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
        observed = before.observed_generation
        if before.desired_state == target.name or (target.is_final and desire_pending(before)):
            # Arrived, or stuck for good short of it: either way the engine is done with this generation.
            observed = before.generation
        elif target.role is Role.REST and desire_pending(before):
            next_attempt_at = now  # come to rest short of the desired state: the reconcile takes it on
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
            observed_generation=observed,
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
        def attempt(snapshot: Resource) -> Resource | None:
            plan = self._plan_fire(snapshot, event, data=data, error=error, actor=actor, detail=detail)
            if not self._apply(plan):
                return None
            if plan.after.next_attempt_at is not None or plan.after.deadline is not None:
                self.signal.notify()
            return plan.after

        # A stale snapshot may be refused for a state the resource has already left: that is a
        # lost race, and the caller hears so.
        return self._swap(resource, expected_version, attempt, refusal=TransitionNotAllowed)

    def set_desired_state(
        self,
        resource: Resource | str,
        desired: str | None,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
    ) -> Resource:
        """Say which state the resource should end up in (None: no wish); the engine takes it there.

        ``desired`` must be a state of the resource's kind reachable from its current state through
        the kind's events (the current state itself is allowed). A compare-and-swap like :meth:`fire`:
        given a snapshot (or ``expected_version``), a resource that moved on raises
        :class:`~tenure.errors.Conflict`. Bumps ``version`` and ``generation`` and journals an
        ``@desired`` entry in the same transaction; a resource resting short of the new desired state
        is due for the engine at once. A worker holding the resource keeps its claim, but its write is
        refused since the version moved.
        """
        _refuse_nul_text(actor=actor)

        def attempt(snapshot: Resource) -> Resource | None:
            pending = snapshot.generation > snapshot.observed_generation
            if snapshot.desired_state == desired and (desired is None or pending or snapshot.state == desired):
                # Asked again for what is already asked (and not given up on): nothing changes, so a
                # retried PUT keeps the ETag and disturbs no worker. Asking again after the engine
                # gave up is a new generation: it tries again.
                return snapshot
            plan = self._plan_desired(snapshot, desired, actor)
            if not self._apply_desired(plan):
                return None
            if plan.after.next_attempt_at is not None:
                self.signal.notify()
            return plan.after

        return self._swap(resource, expected_version, attempt, refusal=InvalidArgument)

    def _swap(
        self,
        resource: Resource | str,
        expected_version: int | None,
        attempt: Callable[[Resource], Resource | None],
        *,
        refusal: type[TenureError],
    ) -> Resource:
        """Run ``attempt`` (a compare-and-swap; None when it lost) until it wins or must give up.

        Pinned (a snapshot, or ``expected_version``), a lost swap is a :class:`Conflict`. Unpinned,
        the resource is read again and the attempt retried a few times: a blind write wins unless the
        resource is too hot. A ``refusal`` raised for a stale snapshot becomes the Conflict it really is.
        """
        pinned = expected_version
        if isinstance(resource, Resource):
            snapshot = resource
            pinned = resource.version if expected_version is None else expected_version
        else:
            snapshot = self.get(resource)
        lost_at = 0
        for _ in range(BLIND_FIRE_ATTEMPTS):
            if pinned is not None and snapshot.version != pinned:
                raise Conflict(
                    resource_id=snapshot.id,
                    expected_version=pinned,
                    actual_version=snapshot.version,
                    actual_state=snapshot.state,
                )
            try:
                done = attempt(snapshot)
            except refusal:
                if isinstance(resource, Resource):
                    self._raise_if_moved(snapshot)
                raise
            if done is not None:
                return done
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

    def _plan_desired(self, before: Resource, desired: str | None, actor: str | None) -> FirePlan:
        kind = self.kind(before.kind)
        state = kind.state(before.state)
        if desired is not None:
            kind.state(desired)  # UnknownState lists the kind's states
            reachable = reachable_states(kind, before.state)
            if desired not in reachable:
                raise InvalidArgument(
                    "desired_state",
                    f"must be reachable from state {before.state!r} (reachable: {', '.join(reachable)})",
                    desired,
                )
        now = self._clock()
        generation = before.generation + 1
        settled = desired is None or desired == before.state
        next_attempt_at = before.next_attempt_at
        if state.role is Role.REST:
            # A resting resource is due only while it has somewhere to go.
            next_attempt_at = None if settled else now
        after = dataclasses.replace(
            before,
            version=before.version + 1,
            desired_state=desired,
            generation=generation,
            observed_generation=generation if settled else before.observed_generation,
            next_attempt_at=next_attempt_at,
            updated_at=now,
        )
        detail = {"desired_state": desired, "generation": generation}
        return FirePlan(before, after, DESIRED_EVENT, False, actor, detail)

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
        desired_state: str | None = None,
        party: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> Page[Resource]:
        """Resources in creation order, one keyset page at a time (pass ``next_after`` back as ``after``).

        Filters combine: ``kind``; ``state`` (one or several); ``desired_state`` (resources whose
        desired state is that one); ``party`` (resources the party holds an unexpired interest in).
        """
        if kind is not None:
            k = self.kind(kind)
            states = [state] if isinstance(state, str) else list(state or [])
            for s in states:
                k.state(s)
            if desired_state is not None:
                k.state(desired_state)
        if party is not None:
            check_party(party)
        _refuse_nul_text(desired_state=desired_state, after=after)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_PAGE}", limit)
        wanted = None if state is None else ([state] if isinstance(state, str) else list(state))
        items = self._select_page(
            PageQuery(kind, wanted, desired_state, party, self._time_in(self._clock()), after, limit)
        )
        return Page(items, items[-1].id if len(items) == limit else None)

    def backlog(self, kinds: Sequence[str] | None = None) -> builtins.list[BacklogRow]:
        """How many resources of each kind are in each state (every declared state, even at 0), in one query.

        For wait states with resources, also how long the oldest one has been waiting, on the store's
        clock. ``kinds`` defaults to every registered kind; rows come by kind as given, then state
        in declaration order (then any state the kind no longer declares).
        """
        names = sorted(self._kinds) if kinds is None else list(dict.fromkeys(kinds))
        declared = {name: self.kind(name) for name in names}
        with self._reading() as conn:
            rows = conn.execute(self._sql["backlog"], (self._array_in(names),)).fetchall()
        found = {(row[0], row[1]): (int(row[2]), self._time_out(row[3])) for row in rows}
        now = self._clock()
        out: builtins.list[BacklogRow] = []
        for name, kind in declared.items():
            for state in kind.states:
                count, oldest = found.pop((name, state.name), (0, None))
                age = None
                if state.role is Role.WAIT and oldest is not None:
                    age = max(0.0, (now - oldest).total_seconds())
                out.append(BacklogRow(name, state.name, state.role.value, count, age))
            for (k, state_name), (count, _) in sorted(found.items()):
                if k == name:
                    out.append(BacklogRow(name, state_name, None, count, None))
        return out

    def stay_version(self, resource: Resource) -> int:
        """The version at which ``resource`` entered the state it is in (its current stay there).

        The same for every attempt of a step in one stay — retries, takeovers of dead workers, a
        desired state set meanwhile — and different for each new entry into the state, so it keys
        what must survive a crash mid-step (flow runs, idempotency keys) without repeating work of
        an earlier stay.
        """
        with self._reading() as conn:
            row = conn.execute(self._sql["stay_version"], (resource.id, resource.version)).fetchone()
        if row is None or row[0] is None:
            raise ResourceNotFound(resource.id)
        return int(row[0])

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
    def _select_page(self, query: PageQuery) -> builtins.list[Resource]: ...

    @abc.abstractmethod
    def _apply_desired(self, plan: FirePlan) -> bool:
        """Write a planned desired state (a compare-and-swap) and its journal row; False if the swap lost."""

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
    _refuse_deep_json(kind, field, value)
    try:
        out: dict[str, Any] = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidSpec(kind, [(field, f"must be JSON-serialisable ({exc})")]) from None
    _refuse_nul_json(kind, field, out)
    return out


#: How deep JSON objects and arrays may nest in a spec, data or detail.
MAX_JSON_DEPTH = 32


def _refuse_deep_json(kind: str, field: str, value: Any) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH: it would be stored, then fail every reader."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            if depth > MAX_JSON_DEPTH:
                raise InvalidSpec(kind, [(field or "spec", f"must not nest deeper than {MAX_JSON_DEPTH} levels")])
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)


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
