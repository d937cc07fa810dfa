"""Retention: how long the history of finished resources is kept, and the pruning that enforces it.

A resource in a *final* state never changes again, but everything it did stays: its journal, the
waits its steps opened and the callbacks that answered them, its flow runs and their task
checkpoints. A :class:`RetentionPolicy` says how long after a resource became final each of these is
kept (None: for ever); :meth:`Retention.prune` deletes what is older, a bounded batch at a time. The
policy, its defaults and what readers see afterwards are in ``docs/retention.md``.

What pruning keeps of a final resource whose history it removed:

* the resource row itself (unless the policy's ``resources`` asks for final resources to be deleted);
* its ``@create`` journal entry (version 1: who made it, and when) and the
  entry that brought it into its final state, with every entry after that one. The journal then
  skips the versions in between: readers page by version and cope; ``stay_version`` still answers
  the version the final state was entered at.

Nothing of a resource that is not final is ever touched, nor anything of a final resource whose
entry into its final state is younger than the policy's duration.

How it finds what to prune without scanning history again and again: each task (``journal``,
``waits``, ``flows``, ``resources``) walks the journal once, in the change feed's order, from a cursor
kept in ``retention_cursors``, and acts on the entries that brought a resource into a final state. The
walk stops at the first entry younger than the task's cutoff (journal times grow with the feed, up to
the clock differences of writers). A batch reads a bounded stretch of the journal (``SCAN_FACTOR``
times ``limit`` entries), then deletes at most ``limit`` rows and moves the cursor in one short
transaction; a resource with more rows than one batch takes is finished by the next (the cursor stays
before it until it is done). Two pruners of one task never do the same work: the second finds the
cursor moved and stops. The walk goes no further than the journal folded into the counts per state
(:mod:`tenure.store.counts`), which it folds first: a row pruned before it is counted would never be,
and a resource deleted leaves its state's count in the same transaction.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tenure.clock import Clock
from tenure.errors import InvalidArgument
from tenure.machine import Kind, Role
from tenure.store.counts import StateCounts
from tenure.store.database import Database, Executor
from tenure.store.model import CREATE_EVENT
from tenure.store.sqlfile import load_queries

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_RETENTION",
    "KEEP_EVERYTHING",
    "MAX_BATCH",
    "MIN_BATCH",
    "PruneReport",
    "Retention",
    "RetentionPolicy",
]

#: The most rows one pruning transaction deletes, by default.
DEFAULT_BATCH = 500
#: The largest batch a policy may ask for: a transaction must stay short.
MAX_BATCH = 10_000
#: The smallest: a resource deleted goes with the journal entry that made it final, in one transaction.
MIN_BATCH = 2
#: Journal entries one batch reads for every row it may delete (a walk past entries of resources that
#: are not final, or not yet old enough, still moves on).
SCAN_FACTOR = 10

_BEGINNING = "0" * 32
#: How bookkeeping events begin (``@create`` among them); a kind's own events never do.
_BOOKKEEPING = CREATE_EVENT[0]
_SAVEPOINT = "tenure_prune_resource"


def _check_batch(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_BATCH <= value <= MAX_BATCH:
        raise InvalidArgument(name, f"must be a whole number of rows from {MIN_BATCH} to {MAX_BATCH}", value)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long after a resource became final each part of its history is kept (None: for ever).

    ``journal``: the journal entries between its ``@create`` entry and the entry into the final state.
    ``waits``: the waits its steps opened and the callbacks recorded for them. ``flows``: its flow runs
    and their task checkpoints. ``resources``: the resource itself, with everything of it (its whole
    journal, waits, callbacks, flow runs and uses). ``batch``: the most rows one pruning transaction
    deletes.
    """

    journal: timedelta | None = timedelta(days=30)
    waits: timedelta | None = timedelta(days=7)
    flows: timedelta | None = timedelta(days=7)
    resources: timedelta | None = None
    batch: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "batch":
                _check_batch("batch", value)
            elif value is not None and (not isinstance(value, timedelta) or value <= timedelta(0)):
                raise InvalidArgument(f.name, "must be a positive duration, or None to keep for ever", value)

    @property
    def prunes(self) -> bool:
        """Whether the policy removes anything at all."""
        return any(d is not None for d in (self.journal, self.waits, self.flows, self.resources))

    def to_json(self) -> dict[str, Any]:
        def seconds(d: timedelta | None) -> float | None:
            return None if d is None else d.total_seconds()

        return {
            "journal": seconds(self.journal),
            "waits": seconds(self.waits),
            "flows": seconds(self.flows),
            "resources": seconds(self.resources),
            "batch": self.batch,
        }


#: What ``tenure serve`` and ``tenure worker`` prune by when the configuration has no ``[retention]``.
DEFAULT_RETENTION = RetentionPolicy()
#: A policy that prunes nothing.
KEEP_EVERYTHING = RetentionPolicy(journal=None, waits=None, flows=None, resources=None)


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What a prune removed, by table, and whether it stopped on its bounds (more may be due now)."""

    journal: int = 0
    waits: int = 0
    callbacks: int = 0
    flow_runs: int = 0
    flow_tasks: int = 0
    interests: int = 0
    resources: int = 0
    #: Final resources left alone because no loaded kind (version) says their state is final.
    unknown_kinds: int = 0
    #: Resources to delete that something else still refers to (a kind's own table): kept.
    kept: int = 0
    #: The batch stopped on its row or scan bound: calling again now prunes more.
    more: bool = False

    @property
    def deleted(self) -> int:
        """Rows deleted, all tables together."""
        return (
            self.journal
            + self.waits
            + self.callbacks
            + self.flow_runs
            + self.flow_tasks
            + self.interests
            + self.resources
        )

    def __add__(self, other: PruneReport) -> PruneReport:
        counts = {
            f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self) if f.name != "more"
        }
        return PruneReport(**counts, more=self.more or other.more)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class _Task:
    """One kind of pruning: its cursor, its duration in the policy, and its bounded deletes in order."""

    name: str
    #: (SQL block, report field) of each delete, run in order for each resource.
    steps: tuple[tuple[str, str], ...]
    #: Whether the resource row goes too (with the entry into its final state, last).
    deletes_resource: bool = False

    def keep(self, policy: RetentionPolicy) -> timedelta | None:
        value: timedelta | None = getattr(policy, self.name)
        return value


_CALLBACKS = (("prune_callbacks", "callbacks"), ("prune_waits", "waits"))
_FLOWS = (("prune_flow_tasks", "flow_tasks"), ("prune_flow_runs", "flow_runs"))
#: In the order a batch runs them: a task that deletes less runs before one that deletes more.
_TASKS = (
    _Task("journal", (("prune_history", "journal"),)),
    _Task("waits", _CALLBACKS),
    _Task("flows", _FLOWS),
    _Task(
        "resources",
        (("prune_interests", "interests"), *_CALLBACKS, *_FLOWS, ("prune_journal", "journal")),
        deletes_resource=True,
    ),
)


@dataclass(frozen=True, slots=True)
class _Entry:
    """A journal entry the walk passed, and where it is in the feed."""

    position: str
    resource_id: str
    version: int
    event: str
    from_state: str | None
    to_state: str
    at: datetime

    @property
    def moves(self) -> bool:
        """Whether the entry changed the resource's state (only such an entry can enter a final state)."""
        # Bookkeeping entries (``@create``, ``@retry``, ``@use``, ...) never enter a state.
        return not self.event.startswith(_BOOKKEEPING) and self.from_state != self.to_state


def _position(txid: int, seq: int) -> str:
    return f"{txid:016x}{seq:016x}"


class Retention:
    """Pruning over any database: the store's part behind :meth:`~tenure.store.protocol.EngineStore.prune`."""

    def __init__(self, db: Database, kind_version: Callable[[str, int], Kind | None], clock: Clock) -> None:
        self._db = db
        self._sql: Mapping[str, Any] = _queries(db.dialect)
        self._kind_version = kind_version
        self._clock = clock

    def prune(self, policy: RetentionPolicy, *, now: datetime | None = None, limit: int | None = None) -> PruneReport:
        """One batch of each task the policy asks for, each in its own short transaction.

        ``now`` (default: the store's clock) is what the policy's durations count back from; ``limit``
        (default: the policy's ``batch``) bounds the rows each transaction deletes.
        """
        if not isinstance(policy, RetentionPolicy):
            raise InvalidArgument("policy", "must be a RetentionPolicy", policy)
        limit = policy.batch if limit is None else limit
        _check_batch("limit", limit)
        now = self._clock() if now is None else now
        report = PruneReport()
        if any(task.keep(policy) is not None for task in _TASKS):
            # Only what the counts per state have folded in may go (tenure.store.counts): fold first.
            StateCounts(self._db).fold()
        for task in _TASKS:
            keep = task.keep(policy)
            if keep is not None:
                report += self._batch(task, now - keep, limit)
        return report

    # --- one batch of one task -----------------------------------------------------------------

    def _batch(self, task: _Task, cutoff: datetime, limit: int) -> PruneReport:
        db, sql = self._db, self._sql
        scan = limit * SCAN_FACTOR
        with db.reading() as conn:
            row = conn.execute(sql["cursor"], {"task": task.name}).fetchone()
            start = _BEGINNING if row is None else str(row[0])
            rows = conn.execute(
                sql["scan"], {"txid": str(int(start[:16], 16)), "seq": int(start[16:], 16), "limit": scan}
            ).fetchall()
        walked: list[_Entry] = []
        for r in rows:
            at = db.time_out(r[7])
            assert at is not None
            if at >= cutoff:
                break
            walked.append(_Entry(_position(int(r[0]), int(r[1])), r[2], int(r[3]), r[4], r[5], r[6], at))
        if not walked:
            return PruneReport()
        finals, unknown = self._final_entries(walked)
        counts: dict[str, int] = {}
        budget = limit
        end = start
        unfinished = False
        with db.transaction() as tx:
            if not self._hold(tx, task.name, start):
                return PruneReport()  # another pruner moved this task's cursor meanwhile
            for entry in walked:
                final = finals.get(entry.position)
                if final is not None:
                    done, budget = self._prune_one(tx, task, entry, final, budget=budget, counts=counts)
                    if not done:
                        # Out of budget: the next batch starts at this resource again.
                        unfinished = True
                        break
                end = entry.position
            if end != start:
                tx.execute(sql["move_cursor"], {"task": task.name, "position": end})
        # A full scan walked to its end: the journal may go on.
        walked_all = len(walked) == len(rows) == scan and end == walked[-1].position
        return PruneReport(
            **counts,
            unknown_kinds=sum(1 for e in walked if e.position in unknown and e.position <= end),
            more=unfinished or walked_all,
        )

    def _hold(self, tx: Executor, task: str, start: str) -> bool:
        """Whether the task's cursor is still at ``start`` (creating it at the beginning if it is new)."""
        sql = self._sql
        if tx.execute(sql["hold_cursor"], {"task": task, "position": start}).rowcount == 1:
            return True
        if start != _BEGINNING:
            return False
        return bool(tx.execute(sql["start_cursor"], {"task": task, "position": start}).rowcount == 1)

    def _final_entries(self, walked: Sequence[_Entry]) -> tuple[dict[str, tuple[str, str]], set[str]]:
        """Of the entries walked, those that brought a resource (still there) into a final state.

        Returns their positions mapped to the resource's (kind, final state), and the positions of
        entries whose resource is of a kind (version) not loaded here, which cannot be told final or not.
        """
        moved = {e.resource_id: e for e in walked if e.moves}
        if not moved:
            return {}, set()
        db = self._db
        ids = builtins.list(moved)
        with db.reading() as conn:
            found = conn.execute(self._sql["resources_of"], {"ids": db.array_in(ids)}).fetchall()
        current = {str(r[0]): (str(r[1]), int(r[2]), str(r[3])) for r in found}
        finals: dict[str, tuple[str, str]] = {}
        unknown: set[str] = set()
        for e in walked:
            if not e.moves or e.resource_id not in current:
                continue
            kind_name, kind_version, state = current[e.resource_id]
            if state != e.to_state:
                continue
            kind = self._kind_version(kind_name, kind_version)
            if kind is None or not kind.has_state(state):
                unknown.add(e.position)
            elif kind.state(state).role is Role.FINAL:
                finals[e.position] = (kind_name, state)
        return finals, unknown

    def _prune_one(
        self, tx: Executor, task: _Task, entry: _Entry, final: tuple[str, str], *, budget: int, counts: dict[str, int]
    ) -> tuple[bool, int]:
        """Run the task's deletes for one resource within ``budget`` rows; (finished, budget left)."""
        kind, state = final
        params: dict[str, Any] = {"rid": entry.resource_id, "entry": entry.version, "kind": kind, "state": state}
        for block, field in task.steps:
            if budget <= 0:
                return False, budget
            n = int(tx.execute(self._sql[block], {**params, "limit": budget}).rowcount)
            counts[field] = counts.get(field, 0) + n
            budget -= n
            if budget <= 0:
                return False, budget  # maybe more of the same
        if not task.deletes_resource:
            return True, budget
        if budget < MIN_BATCH:
            return False, budget
        tx.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            gone = int(tx.execute(self._sql["delete_entry"], params).rowcount)
            gone_resource = int(tx.execute(self._sql["delete_resource"], params).rowcount)
            tx.execute(self._sql["uncount"], {**params, "deleted": gone_resource})
        except Exception as exc:
            if not _is_integrity_error(exc):
                raise
            # Something else (a kind's own table) still refers to the resource: keep it, go on.
            tx.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            tx.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            counts["kept"] = counts.get("kept", 0) + 1
            return True, budget
        tx.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        counts["journal"] = counts.get("journal", 0) + gone
        counts["resources"] = counts.get("resources", 0) + gone_resource
        return True, budget - gone - gone_resource


def _is_integrity_error(exc: BaseException) -> bool:
    """A constraint the database enforced (DB-API's IntegrityError, of either driver)."""
    return any(cls.__name__ == "IntegrityError" for cls in type(exc).__mro__)


@functools.cache
def _queries(dialect: str) -> Mapping[str, Any]:
    queries = load_queries(f"retention_{dialect}.sql")
    if dialect == "postgres":
        # psycopg takes bytes for SQL that is not a literal in the code.
        return {name: text.encode() for name, text in queries.items()}
    return queries
