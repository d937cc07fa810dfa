"""Claims: how workers take resources to work on, and how their writes are fenced.

A worker claims a due resource by writing a fresh random token, its name and an expiry onto the row.
Claiming is lease bookkeeping, not a change of the resource: it does not bump ``version`` and is not
journaled. Every write the worker then makes checks both the version it claimed at and its token, so
the late write of a worker whose claim expired (and was taken over) or whose resource moved on while
the step ran is refused with :class:`~tenure.errors.ClaimLost`, and nothing is written.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tenure.clock import Clock
from tenure.errors import InvalidArgument
from tenure.store.database import Database
from tenure.store.model import Resource
from tenure.store.signal import WorkSignal
from tenure.store.write import RETRY_EVENT, KindOf, WaitPlan, Write, Writer, plan_fire, plan_give_up, plan_retry

__all__ = ["RETRY_EVENT", "Agenda", "Claim", "Claims", "Due", "WaitPlan"]


@dataclass(frozen=True, slots=True)
class Claim:
    """A resource a worker holds: its snapshot at claim time, carrying the claim token."""

    resource: Resource
    #: Whether the claim took the resource over from a worker whose claim had expired.
    takeover: bool = False

    @property
    def token(self) -> str:
        token = self.resource.claim_token
        assert token is not None, "a claimed resource always has a claim token"
        return token


@dataclass(frozen=True, slots=True)
class Agenda:
    """When each kind of engine work is next due (None: nothing of that kind is scheduled)."""

    #: The earliest ``next_attempt_at`` of an unclaimed resource in a state with a step.
    step: datetime | None
    #: The earliest expiry of a claim (a takeover becomes possible then). Only asked while no step is
    #: due: a worker claiming due steps takes over expired claims on the way.
    claim_expiry: datetime | None
    #: The earliest deadline of a wait.
    deadline: datetime | None
    #: When the oldest unsettled callback arrived.
    callback: datetime | None
    #: The earliest expiry of a party's use (the engine removes it then, and may start a teardown).
    use_expiry: datetime | None = None

    @property
    def earliest(self) -> datetime | None:
        times = [
            t for t in (self.step, self.claim_expiry, self.deadline, self.callback, self.use_expiry) if t is not None
        ]
        return min(times, default=None)

    def claims_due(self, now: datetime) -> bool:
        return any(t is not None and t <= now for t in (self.step, self.claim_expiry))


#: How many times a fenced write is planned again after losing to use changes only.
_REBASES = 5


def _moved_by_uses_only(before: Resource, current: Resource, token: str | None) -> bool:
    """Whether every write since ``before`` only changed who uses the resource (and the claim holds)."""
    return (
        current.version > before.version
        and current.claim_token == before.claim_token
        and (token is None or current.claim_token == token)
        and current.state == before.state
        and current.generation == before.generation
        and current.desired_state == before.desired_state
        and current.data == before.data
        and current.error == before.error
        and current.in_use_by != before.in_use_by
    )


#: What a worker has steps for: (kind, state) for every loaded version of the kind, or
#: (kind, state, version) for one version (a worker that lacks a version must not claim its resources).
Due = tuple[str, str] | tuple[str, str, int]


def _pairs(due: Sequence[Due], kinds: KindOf) -> builtins.list[str]:
    """``due`` as the ``kind@version/state`` strings the claim queries match."""
    out: builtins.list[str] = []
    for entry in due:
        if len(entry) == 3:
            kind, state, version = entry
            out.append(f"{kind}@{version}/{state}")
        else:
            kind, state = entry[0], entry[1]
            versions = [k.version for k in kinds.versions(kind)] or [1]
            out += [f"{kind}@{v}/{state}" for v in versions]
    return out


class Claims:
    """Claim, renew, release, and the fenced writes of the engine, over any database."""

    def __init__(self, db: Database, writer: Writer, kind: KindOf, clock: Clock, signal: WorkSignal) -> None:
        self._db = db
        self._writer = writer
        self._kind = kind
        self._clock = clock
        self._signal = signal

    # --- claiming ------------------------------------------------------------------------------

    def claim(self, worker: str, due: Sequence[Due], *, limit: int = 10, lease: timedelta) -> builtins.list[Claim]:
        """Claim up to ``limit`` resources whose ``next_attempt_at`` has come, oldest due first.

        ``due`` lists the (kind, state) pairs the worker has steps for (or (kind, state, version)
        triples, for one version of a kind); a resource still claimed by
        another worker is skipped until that claim expires. Each claim gets its own token and
        expires ``lease`` from now unless renewed.
        """
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit", "must be between 1 and 1000", limit)
        if lease <= timedelta(0):
            raise InvalidArgument("lease", "must be a positive duration", lease)
        if not due:
            return []
        now = self._clock()
        rows = self._db.claim_due(worker, _pairs(due, self._kind), limit, now, now + lease)
        return [Claim(resource, takeover) for resource, takeover in rows]

    def renew(self, claims: Sequence[Claim], *, lease: timedelta) -> set[str]:
        """Push the expiry of ``claims`` to ``lease`` from now.

        Returns the tokens still held; a token missing from the answer was lost (taken over, or the
        resource moved on) and its step's write will be refused. Rows are found by resource id and
        checked by token: no index on the claim columns, so renewing is a heap-only update.
        """
        if not claims:
            return set()
        db = self._db
        expires = self._clock() + lease
        ids = db.array_in([c.resource.id for c in claims])
        tokens = db.array_in([c.token for c in claims])
        with db.transaction() as tx:
            rows = tx.execute(db.sql["renew_claims"], (db.time_in(expires), ids, tokens))
            return {row[0] for row in rows.fetchall()}

    def release(self, claim: Claim) -> bool:
        """Give a claim back unworked, due at once for the next worker; False if it was already lost."""
        db = self._db
        with db.transaction() as tx:
            cur = tx.execute(db.sql["release_claim"], (db.time_in(self._clock()), claim.resource.id, claim.token))
            released = bool(cur.rowcount == 1)
        if released:
            self._signal.notify()
        return released

    # --- fenced writes -------------------------------------------------------------------------

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
        """Fire ``event`` as the claim holder: refused with ClaimLost unless the claim still holds.

        With ``wait``, the wait the target state waits on is opened in the same transaction. With
        ``hold``, a write that leaves the resource due at once (a work state) keeps the claim, under
        the same token, for ``hold`` from now: the worker runs the next step without claiming again.
        The returned resource says which it was: it carries the claim token only if it was held.
        """
        return self._fire_fenced(
            claim.resource,
            event,
            token=claim.token,
            data=data,
            error=error,
            actor=actor,
            detail=detail,
            wait=wait,
            hold=hold,
            holder=claim.resource.claimed_by,
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
        """Fire ``event`` on the snapshot ``before`` and mark ``callbacks`` settled, in one transaction.

        A compare-and-swap on the snapshot's version (raises :class:`~tenure.errors.Conflict` when the
        resource moved on): callbacks are settled exactly when the write they caused commits.
        """
        return self._fire_fenced(
            before,
            event,
            token=None,
            data=data,
            error=error,
            actor=actor,
            detail=detail,
            settle=callbacks,
            result=result,
        )

    def _fire_fenced(
        self,
        before: Resource,
        event: str,
        *,
        token: str | None,
        data: Mapping[str, Any] | None = None,
        error: str | None = None,
        actor: str | None = None,
        detail: Mapping[str, Any] | None = None,
        wait: WaitPlan | None = None,
        settle: Sequence[int] = (),
        result: str = "",
        hold: timedelta | None = None,
        holder: str | None = None,
    ) -> Resource:
        def plan(snapshot: Resource) -> Write:
            now = self._clock()
            write = plan_fire(
                self._kind.of(snapshot), snapshot, event, now, data=data, error=error, actor=actor, detail=detail
            )
            write.token, write.wait, write.settle, write.settle_result = token, wait, settle, result
            after = write.after
            due = after.next_attempt_at is not None and after.next_attempt_at <= now and after.deadline is None
            if hold is not None and token is not None and due:
                write.after = dataclasses.replace(
                    after, claim_token=token, claimed_by=holder, claim_expires_at=now + hold
                )
            return write

        return self._commit_fenced(before, token, plan)

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
        """Record a failed attempt and schedule the next one at ``at``; the state does not change.

        The write is fenced like a fire, bumps the version, and journals a ``@retry`` entry with the
        error and the schedule, so the backoff is visible in the history and survives restarts.
        """

        def plan(snapshot: Resource) -> Write:
            return plan_retry(
                snapshot, claim.token, self._clock(), error=error, at=at, attempts=attempts, data=data, actor=actor
            )

        return self._commit_fenced(claim.resource, claim.token, plan)  # due again at ``at``: the writer wakes workers

    def _commit_fenced(self, before: Resource, token: str | None, plan: Callable[[Resource], Write]) -> Resource:
        """Commit the write ``plan`` makes of ``before``; if it lost only to parties' uses, plan it again.

        Registering, renewing or releasing a use bumps the version but changes nothing a step decided
        on, and keeps the claim: a step that ran meanwhile must not lose its work (and be run again)
        for it. The write is planned again on the newer row, with every rule applied to it.
        """
        write = plan(before)
        for _ in range(_REBASES):
            if self._writer.commit(write):
                return write.after
            current = self._db.find(before.id)
            if current is None or not _moved_by_uses_only(write.before, current, token):
                break
            write = plan(current)
        return self._writer.apply(write)  # one last try: raises the error that explains the lost race

    # --- desired state ------------------------------------------------------------------------

    def release_idle(self, claim: Claim) -> bool:
        """Give back the claim of a resource with nothing left to do: it is not due again until a write says so.

        Only while the resource is still at the claimed version; if it moved on meanwhile (a new
        desired state, say) the claim is released as by :meth:`release`, due at once. Returns whether
        the claim was still held.
        """
        db = self._db
        with db.transaction() as tx:
            cur = tx.execute(db.sql["release_idle"], (claim.resource.id, claim.token, claim.resource.version))
            idle = bool(cur.rowcount == 1)
        return idle or self.release(claim)

    def give_up_desired(self, claim: Claim, *, error: str, actor: str | None = None) -> Resource:
        """Record that the resource's desired state will not be reached in this generation (fenced).

        ``observed_generation`` catches up with ``generation``, ``error`` says why, and an
        ``@desired-failed`` entry is journaled; the state does not change. Raises ClaimLost like
        :meth:`fire_claimed`.
        """
        return self._writer.apply(plan_give_up(claim.resource, claim.token, self._clock(), error=error, actor=actor))

    def reconcile_hops(self, resource_id: str, generation: int) -> builtins.list[str]:
        """The states the engine moved the resource on from towards the desired state of ``generation``, in order."""
        with self._db.reading() as conn:
            rows = conn.execute(self._db.sql["reconcile_hops"], (resource_id, generation)).fetchall()
        return [row[0] for row in rows]

    # --- what is due, and when -----------------------------------------------------------------

    def expired_waits(self, kinds: Sequence[str], *, limit: int = 100) -> builtins.list[Resource]:
        """Resources of ``kinds`` in a wait state whose deadline has passed, earliest first."""
        db = self._db
        params = (db.time_in(self._clock()), db.array_in(list(kinds)), limit)
        with db.reading() as conn:
            rows = conn.execute(db.sql["expired_waits"], params).fetchall()
        return [db.resource_out(r) for r in rows]

    def agenda(self, due: Sequence[Due], kinds: Sequence[str]) -> Agenda:
        """When each kind of engine work is next due, in one query.

        ``due`` lists the (kind, state) pairs a worker has steps for; deadlines count for ``kinds``.
        """
        db = self._db
        params = {
            "pairs": db.array_in(_pairs(due, self._kind)),
            "kinds": db.array_in(list(kinds)),
            "now": db.time_in(self._clock()),
        }
        with db.reading() as conn:
            row = conn.execute(db.sql["next_wakeup"], params).fetchone()
        values = [db.time_out(v) for v in (row or (None, None, None, None, None))]
        return Agenda(*values)

    def next_wakeup(self, due: Sequence[Due], kinds: Sequence[str]) -> datetime | None:
        """The earliest time anything becomes due for a worker with steps for ``due`` (None: nothing)."""
        return self.agenda(due, kinds).earliest
