"""What the dashboard's pages show, read through the store protocol (never SQL): rows and sections.

Each function takes the store (or a kind) and returns plain values for a template; none writes anything.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tenure.errors import UnknownKind
from tenure.machine import Kind
from tenure.service.dashboard.render import since
from tenure.store.model import BacklogRow, JournalEntry, Resource
from tenure.store.protocol import Store

__all__ = [
    "Count",
    "FlowView",
    "ResourceRow",
    "badges",
    "client_events",
    "counts_by_kind",
    "failure_like",
    "flows_of",
    "force_teardown_allowed",
    "kind_of",
    "resource_row",
    "role_of",
    "role_states",
]

#: The roles a state may have, as the resources page's role filter offers them.
ROLES = ("work", "wait", "rest", "final")

#: State names that read as something gone wrong (highlighted wherever shown).
_FAILURE = re.compile(r"fail|error|kill|timed_out|timeout|refus|broken|abort|reject|lost|dead", re.IGNORECASE)
#: A deadline closer than this many seconds stands out.
NEAR_DEADLINE = 300.0


def failure_like(state: str) -> bool:
    return _FAILURE.search(state) is not None


def kind_of(store: Store, r: Resource) -> Kind | None:
    """The kind version ``r`` lives on, or None when this process does not load it."""
    try:
        return store.kind_of(r)
    except UnknownKind:
        return None


def client_events(kind: Kind | None, state: str) -> list[str]:
    """The events a client may fire in ``state`` (the engine's own left out), in declaration order."""
    if kind is None or not kind.has_state(state):
        return []
    return [e for e in kind.allowed_events(state) if e not in kind.engine_events]


def force_teardown_allowed(kind: Kind | None, state: str) -> bool:
    """Whether a force teardown makes sense here: the kind shares, and ``state`` is neither final nor torn down."""
    if kind is None or kind.sharing is None or not kind.has_state(state):
        return False
    return state != kind.sharing.torn_down and kind.state(state).role.value != "final"


def role_states(store: Store, kind: str | None, role: str) -> list[str]:
    """The names of the states with ``role`` in ``kind`` (every loaded kind if None), in any loaded version."""
    names = [kind] if kind is not None else sorted(store.kinds)
    found = {
        s.name
        for n in names
        if n in store.kinds
        for k in store.kind_versions(n)
        for s in k.states
        if s.role.value == role
    }
    return sorted(found)


def role_of(kind: Kind | None, state: str) -> str:
    if kind is None or not kind.has_state(state):
        return "unknown"
    return kind.state(state).role.value


@dataclass(frozen=True, slots=True)
class ResourceRow:
    """One line of the resources table."""

    id: str
    kind: str
    kind_version: int
    state: str
    role: str
    failing: bool
    desired_state: str | None
    parties: int
    attempts: int
    next_attempt_at: datetime | None
    next_attempt: str
    deadline: datetime | None
    deadline_in: str
    deadline_near: bool
    #: The deadline has passed and the engine has not acted on it yet.
    overdue: bool
    error: str | None
    created_at: datetime
    age: str


def resource_row(store: Store, r: Resource, now: datetime) -> ResourceRow:
    kind = kind_of(store, r)
    left = None if r.deadline is None else (r.deadline - now).total_seconds()
    return ResourceRow(
        id=r.id,
        kind=r.kind,
        kind_version=r.kind_version,
        state=r.state,
        role=role_of(kind, r.state),
        failing=failure_like(r.state) or r.error is not None,
        desired_state=r.desired_state,
        parties=len(r.live_uses(now)),
        attempts=r.attempts,
        next_attempt_at=r.next_attempt_at,
        next_attempt=since(r.next_attempt_at, now),
        deadline=r.deadline,
        deadline_in=since(r.deadline, now),
        deadline_near=left is not None and left < NEAR_DEADLINE,
        overdue=left is not None and left <= 0,
        error=r.error,
        created_at=r.created_at,
        age=since(r.created_at, now).removesuffix(" ago"),
    )


@dataclass(frozen=True, slots=True)
class Count:
    """How many resources of a kind are in a state."""

    kind: str
    state: str
    role: str
    count: int
    failing: bool
    oldest: str


def counts_by_kind(store: Store, kinds: list[str] | None = None) -> dict[str, list[Count]]:
    """Per kind, its states holding resources (``store.backlog``), most populated first."""
    rows: list[BacklogRow] = store.backlog(kinds)
    out: dict[str, list[Count]] = defaultdict(list)
    for row in rows:
        if row.count:
            oldest = "" if row.oldest_seconds is None else _seconds(row.oldest_seconds)
            role = row.role or "unknown"
            out[row.kind].append(Count(row.kind, row.state, role, row.count, failure_like(row.state), oldest))
    return {k: sorted(v, key=lambda c: (-c.count, c.state)) for k, v in sorted(out.items())}


def badges(counts: list[Count]) -> tuple[dict[str, int], list[str]]:
    """What a diagram's count badges show for one kind's :func:`counts_by_kind`: each state's count,
    and the states whose badge is red."""
    return {c.state: c.count for c in counts}, [c.state for c in counts if c.failing]


def _seconds(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{int(value // size)}{unit}"
    return f"{int(value)}s"


def path_of(entries: list[JournalEntry]) -> tuple[set[str], set[tuple[str, str]]]:
    """The states a journal passed through, and the moves between two different states."""
    visited = {e.to_state for e in entries} | {e.from_state for e in entries if e.from_state}
    moves = {(e.from_state, e.to_state) for e in entries if e.from_state and e.from_state != e.to_state}
    return visited, moves


@dataclass(frozen=True, slots=True)
class TaskView:
    task: str
    state: str
    attempt: int
    result: Any
    failure: Any
    revert_failure: Any


@dataclass(frozen=True, slots=True)
class FlowView:
    id: str
    flow: str
    version: int
    state: str
    failure: Any
    created_at: datetime | None
    updated_at: datetime | None
    tasks: list[TaskView] = field(default_factory=list)


def flows_of(store: Store, resource_id: str, limit: int = 20) -> list[FlowView]:
    """The resource's first ``limit`` flow runs, oldest first, each with its tasks' checkpoints."""
    views = []
    for run in store.flow_runs(resource_id=resource_id, limit=limit):
        loaded = store.load_flow_run(run.id)
        tasks = [] if loaded is None else loaded[1]
        views.append(
            FlowView(
                run.id,
                run.flow,
                run.version,
                run.state,
                None if run.failure is None else dict(run.failure),
                run.created_at,
                run.updated_at,
                [
                    TaskView(
                        t.task,
                        t.state,
                        t.attempt,
                        t.result,
                        None if t.failure is None else dict(t.failure),
                        None if t.revert_failure is None else dict(t.revert_failure),
                    )
                    for t in tasks
                ],
            )
        )
    return views
