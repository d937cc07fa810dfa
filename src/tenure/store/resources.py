"""Resources: create, fire, set the desired state, and read, over any database.

Every change is planned by :mod:`tenure.store.write` and committed through the database's one write
function; this module decides only which plan to make and what a lost race means for the caller.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tenure.clock import Clock
from tenure.errors import (
    AlreadyExists,
    Conflict,
    DuplicateKind,
    IdempotencyKeyReused,
    InvalidArgument,
    InvalidKind,
    ResourceNotFound,
    TenureError,
    UnknownKind,
)
from tenure.machine import Kind, Role
from tenure.rules import NUL, refuse_nul
from tenure.store.counts import StateCounts
from tenure.store.database import Database
from tenure.store.model import BacklogRow, JournalEntry, Page, Resource
from tenure.store.plans import PageQuery
from tenure.store.sharing import plan_uses
from tenure.store.signal import WorkSignal
from tenure.store.uses import check_party
from tenure.store.write import Write, Writer, moved_on, plan_create, plan_fire, refuse_step_data

__all__ = ["BLIND_FIRE_ATTEMPTS", "MAX_PAGE", "KindRegistry", "Resources", "check_data_filter"]

#: How often a fire without an expected version re-reads and tries again after losing a race.
BLIND_FIRE_ATTEMPTS = 16
#: The largest page :meth:`Resources.list` returns.
MAX_PAGE = 1000


#: A data key a list may filter on: a plain name (it becomes part of a JSON path, as a parameter).
DATA_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
#: The longest text a data filter compares with.
MAX_DATA_VALUE = 200


def check_data_filter(key: str, value: str) -> None:
    """Refuse a data filter whose key is not a plain name or whose value is too long (InvalidArgument)."""
    if not isinstance(key, str) or not DATA_KEY.match(key):
        raise InvalidArgument("data", "must name a KEY of 1 to 64 letters, digits or underscores", key)
    if not isinstance(value, str) or len(value) > MAX_DATA_VALUE or NUL in value:
        raise InvalidArgument("data", f"must give a TEXT of at most {MAX_DATA_VALUE} characters", value)


class KindRegistry:
    """The kinds a store knows: each name's versions, the newest of which new resources are made under.

    A kind evolves by being declared again under a higher ``version``; loading both lets resources
    made under the old version finish on it (:meth:`of` answers the version a resource lives on)
    while new ones start on the new one (:meth:`__call__` answers the newest).
    """

    def __init__(self, kinds: Iterable[Kind] = ()) -> None:
        self._kinds: dict[str, Kind] = {}
        self._versions: dict[tuple[str, int], Kind] = {}
        for k in kinds:
            self.register(k)

    def register(self, kind: Kind) -> None:
        existing = self._versions.get((kind.name, kind.version))
        if existing is not None and existing is not kind:
            raise DuplicateKind(kind.name, kind.version if len(self.versions(kind.name)) > 1 else None)
        for other in self.versions(kind.name):
            # A code names one state for good: clients and dashboards key on it across versions.
            named = {s.code: s.name for s in other.states}
            reused = [(s.code, named[s.code], s.name) for s in kind.states if named.get(s.code, s.name) != s.name]
            if reused:
                code, was, now = reused[0]
                raise InvalidKind(
                    kind.name,
                    [
                        f"code {code} is {was!r} in version {other.version} and {now!r} in version {kind.version}; "
                        "a code names one state in every version (give the new state a code of its own)"
                    ],
                )
        self._versions[(kind.name, kind.version)] = kind
        newest = self._kinds.get(kind.name)
        if newest is None or newest.version <= kind.version:
            self._kinds[kind.name] = kind

    def __call__(self, name: str) -> Kind:
        """The newest loaded version of the kind called ``name``."""
        try:
            return self._kinds[name]
        except KeyError:
            raise UnknownKind(name, sorted(self._kinds)) from None

    def of(self, resource: Resource) -> Kind:
        """The version of its kind ``resource`` was created under (and lives its whole life on)."""
        found = self._versions.get((resource.kind, resource.kind_version))
        if found is not None:
            return found
        if resource.kind not in self._kinds:
            raise UnknownKind(resource.kind, sorted(self._kinds))
        loaded = [str(k.version) for k in self.versions(resource.kind)]
        raise UnknownKind(resource.kind, loaded, version=resource.kind_version)

    def versions(self, name: str) -> tuple[Kind, ...]:
        """Every loaded version of the kind called ``name``, oldest first."""
        return tuple(sorted((k for (n, _), k in self._versions.items() if n == name), key=lambda k: k.version))

    @property
    def by_name(self) -> Mapping[str, Kind]:
        """The newest version of each kind, by name."""
        return dict(self._kinds)

    @property
    def all(self) -> tuple[Kind, ...]:
        """Every loaded kind, each version of each."""
        return tuple(self._versions[key] for key in sorted(self._versions))


class Resources:
    """Creating, firing and reading resources."""

    def __init__(
        self,
        db: Database,
        kinds: KindRegistry,
        writer: Writer,
        clock: Clock,
        signal: WorkSignal,
        *,
        default_sharable: bool = True,
    ) -> None:
        self._db = db
        self._kind = kinds
        self._writer = writer
        self._clock = clock
        self._signal = signal
        self._counts = StateCounts(db)
        self._default_sharable = default_sharable

    # --- writes --------------------------------------------------------------------------------

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
        wanted = plan_create(
            self._kind(kind),
            self._clock(),
            spec=spec,
            data=data,
            sharable=self._default_sharable if sharable is None else bool(sharable),
            idempotency_key=idempotency_key,
            actor=actor,
            resource_id=resource_id,
        )
        try:
            existing = self._db.insert(wanted, actor)
        except AlreadyExists:
            raise AlreadyExists("resource", wanted.id) from None
        if existing is None:
            self._signal.notify()
            return wanted
        return _replayed(wanted, existing)

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
        def plan(snapshot: Resource) -> Write:
            kind = self._kind.of(snapshot)
            # This is the write of those outside the engine.
            kind.refuse_engine_event(snapshot.state, event, resource_id=snapshot.id)
            refuse_step_data(kind, data)
            return plan_fire(kind, snapshot, event, self._clock(), data=data, error=error, actor=actor, detail=detail)

        # A stale snapshot may be refused for a state the resource has already left: that is a
        # lost race, and the caller hears so.
        return self.swap(resource, expected_version, plan)

    def set_desired_state(
        self,
        resource: Resource | str,
        desired: str | None,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        client: str | None = None,
    ) -> Resource:
        """Say which state the resource should end up in (None: no wish); the engine takes it there.

        ``desired`` must be a state of the resource's kind reachable from its current state through
        the kind's events (the current state itself is allowed). A compare-and-swap like :meth:`fire`:
        given a snapshot (or ``expected_version``), a resource that moved on raises
        :class:`~tenure.errors.Conflict`. Bumps ``version`` and ``generation`` and journals an
        ``@desired`` entry in the same transaction; a resource resting short of the new desired state
        is due for the engine at once. A worker holding the resource keeps its claim, but its write is
        refused since the version moved.

        On a kind that declares sharing, a desired state beyond its usable states is a teardown wish:
        it releases ``client``'s own uses and waits for the other parties' (see :mod:`tenure.store.uses`).
        """
        refuse_nul(actor=actor)

        def plan(snapshot: Resource) -> Write | None:
            pending = snapshot.generation > snapshot.observed_generation
            if snapshot.desired_state == desired and (desired is None or pending or snapshot.state == desired):
                # Asked again for what is already asked (and not given up on): nothing changes, so a
                # retried PUT keeps the ETag and disturbs no worker. Asking again after the engine
                # gave up is a new generation: it tries again.
                return None
            kind = self._kind.of(snapshot)
            return plan_uses(kind, snapshot, self._clock(), client=client, desired=desired, actor=actor)

        return self.swap(resource, expected_version, plan)

    def swap(
        self,
        resource: Resource | str,
        expected_version: int | None,
        plan: Callable[[Resource], Write | None],
    ) -> Resource:
        """Plan and commit a write (None from ``plan``: nothing to write) until it wins or must give up.

        Pinned (a snapshot, or ``expected_version``), a lost swap is a :class:`Conflict`. Unpinned,
        the resource is read again and the write planned again a few times: a blind write wins unless
        the resource is too hot. Whatever planning from a caller's snapshot refuses (the event, a use
        still live, data too large) is checked against the row first: a snapshot the row has moved on
        from is answered with the Conflict it really is, as a fresh read would have been.
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
                write = plan(snapshot)
            except TenureError:
                if isinstance(resource, Resource):
                    self._raise_if_moved(snapshot)
                raise
            if write is None:
                return snapshot
            if self._writer.commit(write):
                return write.after
            current = self._db.find(snapshot.id)
            if current is None:
                raise ResourceNotFound(snapshot.id)
            if pinned is not None:
                raise moved_on(snapshot, current, expected_version=pinned)
            lost_at, snapshot = snapshot.version, current
        # Unpinned, and every re-read was overtaken again: the resource is too hot to win on.
        raise Conflict(
            resource_id=snapshot.id,
            expected_version=lost_at,
            actual_version=snapshot.version,
            actual_state=snapshot.state,
        )

    def _raise_if_moved(self, snapshot: Resource) -> None:
        current = self._db.find(snapshot.id)
        if current is None:
            raise ResourceNotFound(snapshot.id)
        if current.version != snapshot.version or current.created_at != snapshot.created_at:
            raise moved_on(snapshot, current)

    # --- reads ---------------------------------------------------------------------------------

    def get(self, resource_id: str) -> Resource:
        found = self.find(resource_id)
        if found is None:
            raise ResourceNotFound(resource_id)
        return found

    def find(self, resource_id: str) -> Resource | None:
        """The resource's current snapshot, or None if there is no such resource."""
        if NUL in resource_id:
            return None  # no resource can have such an id (see tenure.rules)
        return self._db.find(resource_id)

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
        """Resources in creation order, one keyset page at a time (pass ``next_after`` back as ``after``).

        Filters combine: ``kind``; ``state`` (one or several); ``desired_state`` (resources whose
        desired state is that one); ``party`` (resources the party holds an unexpired interest in);
        ``data`` (a top-level key of the data and the text it holds: ``("ended", "failed")``).
        """
        if data is not None:
            check_data_filter(*data)
        if kind is not None:
            # A state of any loaded version: resources made under an older one are still listed.
            versions = self._kind.versions(kind) or (self._kind(kind),)
            states = [state] if isinstance(state, str) else list(state or [])
            for s in [*states, *([desired_state] if desired_state is not None else [])]:
                if not any(v.has_state(s) for v in versions):
                    versions[-1].state(s)  # UnknownState, naming the newest version's states
        if party is not None:
            check_party(party)
        refuse_nul(desired_state=desired_state, after=after)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_PAGE}", limit)
        wanted = None if state is None else ([state] if isinstance(state, str) else builtins.list(state))
        stored: builtins.list[str] = []
        if wanted is not None and kind is None and party is None:
            stored = self._kinds_with(wanted)
        query = PageQuery.plan(
            kind=kind,
            states=wanted,
            desired_state=desired_state,
            party=party,
            data=data,
            now=self._clock(),
            after=after,
            limit=limit,
            stored_kinds=stored,
        )
        items = self._db.select_page(query)
        return Page(items, items[-1].id if len(items) == limit else None)

    def _kinds_with(self, states: Sequence[str]) -> builtins.list[str]:
        """The kinds stored that may have a resource in one of ``states`` (kinds not loaded: all of them)."""
        db = self._db
        with db.reading() as conn:
            stored = [row[0] for row in conn.execute(db.sql["stored_kinds"]).fetchall()]
        out = []
        for name in stored:
            versions = self._kind.versions(name)
            if not versions or any(v.has_state(s) for v in versions for s in states):
                out.append(name)
        return out

    def journal(self, resource_id: str, *, after_version: int = 0, limit: int = 1000) -> builtins.list[JournalEntry]:
        """The resource's history, oldest first."""
        return self._db.journal(resource_id, after_version, limit)

    def feed(self, *, after_seq: int = 0, limit: int = 1000) -> builtins.list[JournalEntry]:
        """Journal entries of every resource after ``after_seq``, in ``seq`` order."""
        return self._db.feed(after_seq, limit)

    def backlog(self, names: Sequence[str]) -> builtins.list[BacklogRow]:
        """How many resources of each kind are in each state (every declared state, even at 0).

        For wait states with resources, also how long the oldest one has been waiting, on the store's
        clock. Rows come by kind as given, then state in declaration order (then any state the kind
        no longer declares). The counts are kept by folding the journal in (:mod:`tenure.store.counts`),
        so a read costs the changes since the last one and the resources waiting, not the history.
        """
        declared = {name: self._kind(name) for name in names}
        self._counts.fold()
        found = self._counts.counts(builtins.list(declared))
        waiting = [
            (name, state.name)
            for name, kind in declared.items()
            for state in kind.states
            if state.role is Role.WAIT and found.get((name, state.name), 0) > 0
        ]
        oldest = self._counts.oldest(waiting)
        now = self._clock()
        out: builtins.list[BacklogRow] = []
        for name, kind in declared.items():
            for state in kind.states:
                count = found.pop((name, state.name), 0)
                entered = oldest.get((name, state.name))
                age = None if entered is None else max(0.0, (now - entered).total_seconds())
                out.append(BacklogRow(name, state.name, state.role.value, count, age))
            for (k, state_name), count in sorted(found.items()):
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
        db = self._db
        with db.reading() as conn:
            row = conn.execute(db.sql["stay_version"], (resource.id, resource.version)).fetchone()
        if row is None or row[0] is None:
            raise ResourceNotFound(resource.id)
        return int(row[0])


def _replayed(wanted: Resource, existing: Resource) -> Resource:
    """The resource an idempotent replay returns, or a refusal if the request differs."""
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
