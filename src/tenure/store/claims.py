"""Claims: how workers take resources to work on, and how their writes are fenced.

A worker claims a due resource by writing a fresh random token, its name and an expiry onto the row.
Claiming is lease bookkeeping, not a change of the resource: it does not bump ``version`` and is not
journaled. Every write the worker then makes checks both the version it claimed at and its token, so
the late write of a worker whose claim expired (and was taken over) or whose resource moved on while
the step ran is refused with :class:`~tenure.errors.ClaimLost`, and nothing is written.
"""

from __future__ import annotations

import abc
import builtins
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from tenure.errors import ClaimLost, Conflict, InvalidArgument, ResourceNotFound
from tenure.store.desired import DESIRED_FAILED_EVENT
from tenure.store.model import Resource
from tenure.store.ops import Dialect, Executor
from tenure.store.plans import FirePlan
from tenure.store.signal import WorkSignal

__all__ = ["RETRY_EVENT", "Agenda", "Claim", "Claims", "WaitPlan"]

#: The journal event of a failed attempt that will be retried (the state does not change).
RETRY_EVENT = "@retry"


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
    #: The earliest expiry of a claim (a takeover becomes possible then).
    claim_expiry: datetime | None
    #: The earliest deadline of a wait.
    deadline: datetime | None
    #: When the oldest unsettled callback arrived.
    callback: datetime | None

    @property
    def earliest(self) -> datetime | None:
        times = [t for t in (self.step, self.claim_expiry, self.deadline, self.callback) if t is not None]
        return min(times, default=None)

    def claims_due(self, now: datetime) -> bool:
        return any(t is not None and t <= now for t in (self.step, self.claim_expiry))


@dataclass(frozen=True, slots=True)
class WaitPlan:
    """A wait opened by the write that enters a wait state: who may call back, and what answers mean.

    ``token_hash`` is the sha-256 of the correlation token the external party holds; ``keys`` are
    the answers awaited (one per resource definition, say); ``rules`` say which event the roll-up of
    the answers fires (``done``, ``failed``, ``retry``).
    """

    token_hash: str
    keys: tuple[str, ...]
    rules: Mapping[str, Any]


def _pair(kind: str, state: str) -> str:
    return f"{kind}/{state}"


class Claims(Dialect):
    """Claim, renew, release, and the fenced writes of the engine, shared by both stores."""

    signal: WorkSignal

    # --- what the store provides ---------------------------------------------------------------

    @abc.abstractmethod
    def _plan_fire(
        self,
        before: Resource,
        event: str,
        *,
        data: Mapping[str, Any] | None,
        error: str | None,
        actor: str | None,
        detail: Mapping[str, Any] | None,
    ) -> FirePlan: ...

    @abc.abstractmethod
    def _get_or_none(self, resource_id: str) -> Resource | None: ...

    @abc.abstractmethod
    def _resource_out(self, row: Sequence[Any]) -> Resource:
        """A resource row (in the column order of ``get_resource``) as a snapshot."""

    @abc.abstractmethod
    def _array_in(self, values: Sequence[str]) -> Any:
        """A list of strings as the dialect's ``*_in_list`` SQL takes it."""

    @abc.abstractmethod
    def _json_object_in(self, kind: str, field: str, value: Mapping[str, Any] | None) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _claim_due(
        self, worker: str, pairs: Sequence[str], limit: int, now: datetime, expires: datetime
    ) -> builtins.list[tuple[Resource, bool]]:
        """Claim up to ``limit`` due, unclaimed (or expired) resources; (snapshot, takeover) each."""

    # --- claiming ------------------------------------------------------------------------------

    def claim(
        self, worker: str, due: Sequence[tuple[str, str]], *, limit: int = 10, lease: timedelta
    ) -> builtins.list[Claim]:
        """Claim up to ``limit`` resources whose ``next_attempt_at`` has come, oldest due first.

        ``due`` lists the (kind, state) pairs the worker has steps for; a resource still claimed by
        another worker is skipped until that claim expires. Each claim gets its own token and
        expires ``lease`` from now unless renewed.
        """
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit", "must be between 1 and 1000", limit)
        if lease <= timedelta(0):
            raise InvalidArgument("lease", "must be a positive duration", lease)
        if not due:
            return []
        now = self._now()
        rows = self._claim_due(worker, [_pair(k, s) for k, s in due], limit, now, now + lease)
        return [Claim(resource, takeover) for resource, takeover in rows]

    def renew(self, tokens: Sequence[str], *, lease: timedelta) -> set[str]:
        """Push the expiry of the claims held under ``tokens`` to ``lease`` from now.

        Returns the tokens still held; a token missing from the answer was lost (taken over, or the
        resource moved on) and its step's write will be refused.
        """
        if not tokens:
            return set()
        expires = self._now() + lease
        with self._transaction() as tx:
            rows = tx.execute(self._sql["renew_claims"], (self._time_in(expires), self._array_in(list(tokens))))
            return {row[0] for row in rows.fetchall()}

    def release(self, claim: Claim) -> bool:
        """Give a claim back unworked, due at once for the next worker; False if it was already lost."""
        with self._transaction() as tx:
            cur = tx.execute(self._sql["release_claim"], (self._time_in(self._now()), claim.resource.id, claim.token))
            released = bool(cur.rowcount == 1)
        if released:
            self.signal.notify()
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
    ) -> Resource:
        """Fire ``event`` as the claim holder: refused with ClaimLost unless the claim still holds.

        With ``wait``, the wait the target state waits on is opened in the same transaction.
        """
        return self._fire_fenced(
            claim.resource, event, token=claim.token, data=data, error=error, actor=actor, detail=detail, wait=wait
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
    ) -> Resource:
        plan = self._plan_fire(before, event, data=data, error=error, actor=actor, detail=detail)
        after = plan.after
        swapped = self._write_fenced(plan, token, wait, settle, result)
        if not swapped:
            # Read after the transaction ended: a second pooled connection inside it could deadlock.
            self._raise_lost(before, fenced=token is not None)
        if after.next_attempt_at is not None or after.deadline is not None:
            self.signal.notify()
        return after

    def _write_fenced(
        self, plan: FirePlan, token: str | None, wait: WaitPlan | None, settle: Sequence[int], result: str
    ) -> bool:
        """Write a planned engine transition (fenced by ``token`` when given); False if the swap lost.

        The journal row, the wait it opens and the callbacks it settles commit with it or not at all.
        """
        before, after, event, actor = plan.before, plan.after, plan.event, plan.actor
        now = self._time_in(after.updated_at)
        with self._transaction() as tx:
            cur = tx.execute(
                self._sql["fire_fenced"],
                (
                    after.state, after.version, self._json_in(after.data) if plan.data_changed else None,
                    after.error, now, self._time_in(after.next_attempt_at), self._time_in(after.deadline), now,
                    after.observed_generation, before.id, before.version, before.state, token, token,
                ),
            )  # fmt: skip
            swapped = cur.rowcount == 1
            if swapped:
                entry = (before.id, after.version, event, before.state, after.state, actor, now)
                self._journal_in(tx, entry, plan.detail)
                if wait is not None:
                    tx.execute(
                        self._sql["insert_wait"],
                        (
                            wait.token_hash, before.id, after.version, after.state, self._json_in(list(wait.keys)),
                            self._json_in(dict(wait.rules)), now, self._time_in(after.deadline),
                        ),
                    )  # fmt: skip
                for seq in settle:
                    tx.execute(self._sql["settle_callback"], (now, result, seq))
        return bool(swapped)

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
        before = claim.resource
        for name, text in (("error", error), ("actor", actor)):
            if text is not None and "\x00" in text:
                raise InvalidArgument(name, "must not contain the NUL character (U+0000)", text)
        now = self._now()
        new_data = {**before.data, **self._json_object_in(before.kind, "data", data)} if data else before.data
        after = dataclasses.replace(
            before,
            data=new_data,
            version=before.version + 1,
            error=error,
            attempts=attempts,
            next_attempt_at=at,
            claim_token=None,
            claimed_by=None,
            claim_expires_at=None,
            updated_at=now,
        )
        stamp = self._time_in(now)
        detail = {"attempt": attempts, "error": error, "next_attempt_at": at.isoformat()}
        with self._transaction() as tx:
            cur = tx.execute(
                self._sql["retry_later"],
                (
                    after.version,
                    error,
                    attempts,
                    self._time_in(at),
                    self._json_in(after.data) if data else None,
                    stamp,
                    before.id,
                    before.version,
                    claim.token,
                ),
            )
            swapped = cur.rowcount == 1
            if swapped:
                entry = (before.id, after.version, RETRY_EVENT, before.state, before.state, actor, stamp)
                self._journal_in(tx, entry, detail)
        if not swapped:
            self._raise_lost(before, fenced=True)
        self.signal.notify()
        return after

    # --- desired state ------------------------------------------------------------------------

    def release_idle(self, claim: Claim) -> bool:
        """Give back the claim of a resource with nothing left to do: it is not due again until a write says so.

        Only while the resource is still at the claimed version; if it moved on meanwhile (a new
        desired state, say) the claim is released as by :meth:`release`, due at once. Returns whether
        the claim was still held.
        """
        with self._transaction() as tx:
            cur = tx.execute(self._sql["release_idle"], (claim.resource.id, claim.token, claim.resource.version))
            idle = bool(cur.rowcount == 1)
        return idle or self.release(claim)

    def give_up_desired(self, claim: Claim, *, error: str, actor: str | None = None) -> Resource:
        """Record that the resource's desired state will not be reached in this generation (fenced).

        ``observed_generation`` catches up with ``generation``, ``error`` says why, and an
        ``@desired-failed`` entry is journaled; the state does not change. Raises ClaimLost like
        :meth:`fire_claimed`.
        """
        before = claim.resource
        for name, text in (("error", error), ("actor", actor)):
            if text is not None and "\x00" in text:
                raise InvalidArgument(name, "must not contain the NUL character (U+0000)", text)
        now = self._now()
        after = dataclasses.replace(
            before,
            version=before.version + 1,
            observed_generation=before.generation,
            error=error,
            next_attempt_at=None,
            claim_token=None,
            claimed_by=None,
            claim_expires_at=None,
            updated_at=now,
        )
        stamp = self._time_in(now)
        detail = {"desired_state": before.desired_state, "generation": before.generation, "error": error}
        with self._transaction() as tx:
            cur = tx.execute(
                self._sql["give_up_desired"], (after.version, error, stamp, before.id, before.version, claim.token)
            )
            swapped = cur.rowcount == 1
            if swapped:
                entry = (before.id, after.version, DESIRED_FAILED_EVENT, before.state, before.state, actor, stamp)
                self._journal_in(tx, entry, detail)
        if not swapped:
            self._raise_lost(before, fenced=True)
        return after

    def reconcile_hops(self, resource_id: str, generation: int) -> builtins.list[str]:
        """The states the engine moved the resource on from towards the desired state of ``generation``, in order."""
        with self._reading() as conn:
            rows = conn.execute(self._sql["reconcile_hops"], (resource_id, generation)).fetchall()
        return [row[0] for row in rows]

    def _journal_in(self, tx: Executor, entry: tuple[Any, ...], detail: Mapping[str, Any]) -> None:
        """Append a journal row: ``entry`` is (resource id, version, event, from, to, actor, at)."""
        tx.execute(self._sql["insert_journal"], (*entry, self._json_in(dict(detail))))

    def _raise_lost(self, before: Resource, *, fenced: bool) -> NoReturn:
        current = self._get_or_none(before.id)
        if current is None:
            raise ResourceNotFound(before.id)
        if not fenced:
            raise Conflict(
                resource_id=before.id,
                expected_version=before.version,
                actual_version=current.version,
                actual_state=current.state,
            )
        raise ClaimLost(
            resource_id=before.id,
            expected_version=before.version,
            actual_version=current.version,
            actual_state=current.state,
            claimed_by=current.claimed_by if current.claim_token != before.claim_token else None,
        )

    # --- what is due, and when -----------------------------------------------------------------

    def expired_waits(self, kinds: Sequence[str], *, limit: int = 100) -> builtins.list[Resource]:
        """Resources of ``kinds`` in a wait state whose deadline has passed, earliest first."""
        params = (self._time_in(self._now()), self._array_in(list(kinds)), limit)
        with self._reading() as conn:
            rows = conn.execute(self._sql["expired_waits"], params).fetchall()
        return [self._resource_out(r) for r in rows]

    def agenda(self, due: Sequence[tuple[str, str]], kinds: Sequence[str]) -> Agenda:
        """When each kind of engine work is next due, in one query.

        ``due`` lists the (kind, state) pairs a worker has steps for; deadlines count for ``kinds``.
        """
        pairs = self._array_in([_pair(k, s) for k, s in due])
        with self._reading() as conn:
            names = self._array_in(list(kinds))
            row = conn.execute(self._sql["next_wakeup"], (pairs, pairs, names, names)).fetchone()
        values = [self._time_out(v) for v in (row or (None, None, None, None))]
        return Agenda(*values)

    def next_wakeup(self, due: Sequence[tuple[str, str]], kinds: Sequence[str]) -> datetime | None:
        """The earliest time anything becomes due for a worker with steps for ``due`` (None: nothing)."""
        return self.agenda(due, kinds).earliest
