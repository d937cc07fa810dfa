"""Writes: every change to a resource, planned once without a database, committed by one function per dialect.

A :class:`Write` says everything a change is: the snapshot it was planned from (its ``version``, and
its claim token when the engine writes), the new row, the journal entry, and the side rows that
commit with it (the wait a write into a wait state opens, the callbacks it settles, the waits a new
desired state carries along). Planning is here, made once for both databases; each dialect's
:meth:`~tenure.store.database.Database.commit` turns a write into its compare-and-swap, and nothing
else in the store updates a resource's version.

The :class:`Writer` commits writes and tells a lost race apart: a :class:`~tenure.errors.Conflict`
for a client whose snapshot is stale, :class:`~tenure.errors.ClaimLost` for a worker whose claim no
longer holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn, Protocol

from tenure.errors import ClaimLost, Conflict, InvalidArgument, InvalidSpec, ResourceNotFound, RetryNotAllowed
from tenure.machine import Kind, Role, State
from tenure.machine.graph import reachable_states
from tenure.rules import (
    MAX_DATA_BYTES,
    MAX_SPEC_BYTES,
    json_object,
    refuse_deep_json,
    refuse_nul,
    refuse_nul_json,
    refuse_oversized,
)
from tenure.store.desired import DESIRED_EVENT, DESIRED_FAILED_EVENT, desire_pending
from tenure.store.model import NO_USES, Resource, Use, new_id
from tenure.store.signal import WorkSignal
from tenure.store.uses import held, refuse_in_use

__all__ = [
    "RETRY_EVENT",
    "RETRY_NOW_EVENT",
    "KindOf",
    "Swap",
    "WaitPlan",
    "Write",
    "Writer",
    "moved_on",
    "plan_create",
    "plan_desired",
    "plan_fire",
    "plan_give_up",
    "plan_retry",
    "plan_retry_now",
    "refuse_step_data",
    "retry_now_refusal",
    "schedule",
]

#: The journal event of a failed attempt that will be retried (the state does not change).
RETRY_EVENT = "@retry"
#: The journal event of an operator making a step that backs off due at once (the state does not change).
RETRY_NOW_EVENT = "@retry-now"


class KindOf(Protocol):
    """Where a write finds the version of its kind a resource lives on (the store's kind registry)."""

    def of(self, resource: Resource) -> Kind: ...

    def versions(self, name: str) -> tuple[Kind, ...]: ...


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


# Writes are internal and short-lived; a plain slotted class keeps the hot path cheap.
@dataclass(slots=True)
class Write:
    """One compare-and-swap: move ``before`` (at its version, state and created_at) to ``after``, and journal it."""

    before: Resource
    after: Resource
    event: str
    actor: str | None
    detail: Mapping[str, Any]
    #: Whether ``after.data`` differs from the row's (unchanged data is not sent to the database).
    data_changed: bool = False
    #: The claim token the row must still carry (None: not fenced by a claim).
    token: str | None = None
    #: Leave the claim, and the attempt count a takeover may have bumped, as the row has them.
    keeps_claim: bool = False
    #: The wait this write opens (entering a wait state).
    wait: WaitPlan | None = None
    #: Callbacks this write settles, and what became of them.
    settle: Sequence[int] = ()
    settle_result: str = ""
    #: Move the resource's waits to the new version (a desired state set while it waits).
    carries_waits: bool = False
    #: Whether ``after.in_use_by`` differs from the row's; then ``uses_kept`` are the uses registered
    #: or renewed and ``uses_dropped`` the parties released, expired or forced out (the index rows).
    uses_changed: bool = False
    uses_kept: Sequence[tuple[str, Use]] = ()
    uses_dropped: Sequence[str] = ()
    #: Whether the write records a forced teardown (``after.forced_generation``).
    forces: bool = False

    @property
    def makes_due(self) -> bool:
        """Whether the new row is something a worker will pick up (a step due, or a deadline).

        A row the writing worker keeps claimed into its next step is due for that worker alone.
        """
        after = self.after
        held = after.claim_token is not None and not self.keeps_claim
        return (after.next_attempt_at is not None and not held) or after.deadline is not None


def moved_on(snapshot: Resource, current: Resource, *, expected_version: int | None = None) -> Conflict:
    """The Conflict of a write planned from ``snapshot`` (pinned to ``expected_version``, default its
    version) that found the row at ``current``: a later version, or another resource under the id."""
    return Conflict(
        resource_id=snapshot.id,
        expected_version=snapshot.version if expected_version is None else expected_version,
        actual_version=current.version,
        actual_state=current.state,
        recreated=current.created_at != snapshot.created_at,
    )


#: :meth:`tenure.store.resources.Resources.swap`, as the parts that write through it take it: (the
#: resource or its id, the version it is pinned to, the plan) -> the resource as written.
Swap = Callable[[Resource | str, int | None, Callable[[Resource], Write | None]], Resource]


class Committer(Protocol):
    """The one write function of a dialect, and the read that explains a lost race."""

    def commit(self, write: Write) -> bool: ...

    def find(self, resource_id: str) -> Resource | None: ...


class Writer:
    """Commits planned writes through a dialect and turns a lost swap into the error that explains it."""

    __slots__ = ("_db", "_signal")

    def __init__(self, db: Committer, signal: WorkSignal) -> None:
        self._db = db
        self._signal = signal

    def commit(self, write: Write) -> bool:
        """Commit ``write``; False if the swap lost (nothing was written)."""
        if not self._db.commit(write):
            return False
        if write.makes_due:
            self._signal.notify()
        return True

    def apply(self, write: Write) -> Resource:
        """Commit ``write`` and return the new snapshot, or raise Conflict / ClaimLost if the swap lost."""
        if not self.commit(write):
            # Read after the transaction ended: a second pooled connection inside it could deadlock.
            self.raise_lost(write.before, fenced=write.token is not None)
        return write.after

    def raise_lost(self, before: Resource, *, fenced: bool) -> NoReturn:
        current = self._db.find(before.id)
        if current is None:
            raise ResourceNotFound(before.id)
        if not fenced:
            raise moved_on(before, current)
        raise ClaimLost(
            resource_id=before.id,
            expected_version=before.version,
            actual_version=current.version,
            actual_state=current.state,
            claimed_by=current.claimed_by if current.claim_token != before.claim_token else None,
        )


# --- planning ----------------------------------------------------------------------------------


def schedule(state: State, now: datetime) -> tuple[datetime | None, datetime | None]:
    """(next_attempt_at, deadline) for a resource entering ``state`` at ``now``."""
    if state.role is Role.WORK:
        return now, None
    if state.role is Role.WAIT and state.deadline is not None:
        return None, now + state.deadline
    return None, None


def plan_create(
    kind: Kind,
    now: datetime,
    *,
    spec: Mapping[str, Any] | None,
    data: Mapping[str, Any] | None,
    sharable: bool,
    idempotency_key: str | None,
    actor: str | None,
    resource_id: str | None,
) -> Resource:
    """A new resource of ``kind`` in its initial state at version 1, its spec validated by the kind."""
    refuse_deep_json(kind.name, "spec", spec)
    refuse_step_data(kind, data)
    clean_spec = kind.validate_spec(spec)
    refuse_nul_json(kind.name, "", clean_spec)
    refuse_oversized("the spec", clean_spec, MAX_SPEC_BYTES)
    clean_data = json_object(kind.name, "data", data)
    if clean_data:
        refuse_oversized("the data", clean_data, MAX_DATA_BYTES)
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 255):
        raise InvalidArgument("idempotency_key", "must be 1 to 255 characters", idempotency_key)
    if resource_id is not None and not (0 < len(resource_id) <= 64):
        raise InvalidArgument("resource_id", "must be 1 to 64 characters", resource_id)
    refuse_nul(idempotency_key=idempotency_key, resource_id=resource_id, actor=actor)
    next_attempt_at, deadline = schedule(kind.initial, now)
    return Resource(
        id=resource_id or new_id(),
        kind=kind.name,
        state=kind.initial.name,
        version=1,
        spec=clean_spec,
        data=clean_data,
        desired_state=None,
        generation=1,
        observed_generation=0,
        sharable=sharable,
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
        kind_version=kind.version,
    )


def refuse_step_data(kind: Kind, data: Mapping[str, Any] | None) -> None:
    """Refuse data from outside the engine that names a key only the kind's steps write.

    Those keys hold what the engine did and was told (what was provisioned, a flow's outputs, the
    answers of a wait); a client that could set them could make the engine skip work or undo what it
    never did. The refusal names every such key and says which keys the kind keeps for its steps.
    """
    if not data or not kind.step_data:
        return
    taken = sorted(kind.step_data.intersection(data))
    if taken:
        kept = ", ".join(sorted(kind.step_data))
        raise InvalidSpec(
            kind.name,
            [(f"data.{key}", f"is written by the kind's steps only (they keep: {kept})") for key in taken],
        )


def plan_fire(
    kind: Kind,
    before: Resource,
    event: str,
    now: datetime,
    *,
    data: Mapping[str, Any] | None,
    error: str | None,
    actor: str | None,
    detail: Mapping[str, Any] | None,
    forced: bool = False,
) -> Write:
    """A transition through ``kind``: refused (TransitionNotAllowed) unless the kind allows it now.

    The kind's teardown event is refused (InUse) while a party's use is live, unless ``forced``; it
    takes every remaining use (expired ones, or all when forced) with it.
    """
    transition = kind.transition(before.state, event, before, resource_id=before.id)
    if not forced:
        refuse_in_use(kind, before, event, now)
    refuse_nul(error=error, actor=actor)
    target = kind.state(transition.target)
    next_attempt_at, deadline = schedule(target, now)
    observed = before.observed_generation
    if before.desired_state == target.name or (target.is_final and desire_pending(before)):
        # Arrived, or stuck for good short of it: either way the engine is done with this generation.
        observed = before.generation
    elif target.role is Role.REST and desire_pending(before) and not held(kind, before, now):
        next_attempt_at = now  # come to rest short of the desired state: the reconcile takes it on
    new_data = before.data
    if data:
        new_data = {**before.data, **json_object(kind.name, "data", data)}
        refuse_oversized("the data", new_data, MAX_DATA_BYTES)
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
        in_use_by=before.in_use_by,
        forced_generation=before.forced_generation,
        kind_version=before.kind_version,
    )
    journaled = json_object(kind.name, "detail", detail)
    if error is not None:
        journaled["error"] = error  # the row's error is cleared by the next write; the journal keeps it
    write = Write(before, after, event, actor, journaled, data_changed=bool(data))
    if before.in_use_by and kind.sharing is not None and event == kind.sharing.teardown:
        # Teardown ends every use: the expired ones the engine had not removed yet (or, forced, all).
        write.after = dataclasses.replace(after, in_use_by=NO_USES)
        write.uses_changed = True
        write.uses_dropped = tuple(before.in_use_by)
        journaled.setdefault("uses", dict.fromkeys(before.in_use_by, "forced" if forced else "expired"))
    return write


def plan_desired(kind: Kind, before: Resource, desired: str | None, now: datetime, actor: str | None) -> Write:
    """Set (or clear) the desired state: ``version`` and ``generation`` move, the state and any claim stay."""
    refuse_nul(actor=actor)
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
    generation = before.generation + 1
    settled = desired is None or desired == before.state
    next_attempt_at = before.next_attempt_at
    if state.role is Role.REST:
        # A resting resource is due only while it has somewhere to go, and no party holds it back.
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
    if next_attempt_at is not None and state.role is Role.REST and held(kind, after, now):
        after = dataclasses.replace(after, next_attempt_at=None)  # the write that frees it fires teardown
    detail = {"desired_state": desired, "generation": generation}
    # A waiting resource's wait moves with it: its callbacks still answer this stay in the state.
    return Write(before, after, DESIRED_EVENT, actor, detail, keeps_claim=True, carries_waits=True)


def plan_retry(
    before: Resource,
    token: str,
    now: datetime,
    *,
    error: str,
    at: datetime,
    attempts: int,
    data: Mapping[str, Any] | None,
    actor: str | None,
) -> Write:
    """A failed attempt of a claimed step, to be tried again at ``at``: the state does not change."""
    refuse_nul(error=error, actor=actor)
    new_data = before.data
    if data:
        new_data = {**before.data, **json_object(before.kind, "data", data)}
        refuse_oversized("the data", new_data, MAX_DATA_BYTES)
    after = _released(before, now, data=new_data, error=error, attempts=attempts, next_attempt_at=at)
    detail = {"attempt": attempts, "error": error, "next_attempt_at": at.isoformat()}
    return Write(before, after, RETRY_EVENT, actor, detail, data_changed=bool(data), token=token)


def retry_now_refusal(kind: Kind, resource: Resource, now: datetime) -> str | None:
    """Why an operator's retry now does not apply to ``resource`` at ``now`` (None: it does).

    It applies to a step backing off after a failed attempt: the resource is in a work state of
    ``kind``, or in a rest state on its way to a desired state (a rest state's step runs only then;
    see :mod:`tenure.engine.steps`), its next attempt is scheduled after ``now``, and no worker holds
    a live claim on it. The reason is a clause that follows "it is in state X (role: R) and".
    """
    if not kind.has_state(resource.state):
        return f"kind {kind.name!r} v{kind.version} does not declare it"
    role = kind.state(resource.state).role
    if role is Role.REST and not desire_pending(resource):
        return "no desired state is pending, so no step runs there"
    if role not in (Role.WORK, Role.REST):
        return "no step runs there"
    scheduled = resource.next_attempt_at
    if scheduled is None:
        return "no attempt of its step is scheduled"
    expires = resource.claim_expires_at
    if resource.claim_token is not None and expires is not None and expires > now:
        return f"worker {resource.claimed_by} is running its step now (claimed until {expires.isoformat()})"
    if scheduled <= now:
        return f"its next attempt is due already (since {scheduled.isoformat()})"
    return None


def plan_retry_now(kind: Kind, before: Resource, now: datetime, *, actor: str | None) -> Write:
    """Make the next attempt of a step that backs off after a failure due ``now`` (an operator's call).

    Refused (:class:`~tenure.errors.RetryNotAllowed`) where :func:`retry_now_refusal` says why. The
    state, the attempt count and the last error stay: the attempt made now counts against the
    state's retry budget like any other. The write keeps whatever claim the row has, so that a
    worker which claimed it in the meantime is not joined by a second one; its fenced write is
    refused (the version moved) and the step is run again.
    """
    refuse_nul(actor=actor)
    reason = retry_now_refusal(kind, before, now)
    if reason is not None:
        raise RetryNotAllowed(
            resource_id=before.id,
            kind=before.kind,
            state=before.state,
            role=kind.state(before.state).role.value if kind.has_state(before.state) else "unknown",
            reason=reason,
        )
    assert before.next_attempt_at is not None  # retry_now_refusal says so
    after = dataclasses.replace(before, version=before.version + 1, next_attempt_at=now, updated_at=now)
    detail = {"previous_next_attempt_at": before.next_attempt_at.isoformat(), "attempts": before.attempts}
    return Write(before, after, RETRY_NOW_EVENT, actor, detail, keeps_claim=True)


def plan_give_up(before: Resource, token: str, now: datetime, *, error: str, actor: str | None) -> Write:
    """The engine is done with this generation's desired state without reaching it (fenced)."""
    refuse_nul(error=error, actor=actor)
    after = _released(before, now, error=error, observed_generation=before.generation, next_attempt_at=None)
    detail = {"desired_state": before.desired_state, "generation": before.generation, "error": error}
    return Write(before, after, DESIRED_FAILED_EVENT, actor, detail, token=token)


def _released(before: Resource, now: datetime, **changes: Any) -> Resource:
    """``before`` one version on, with ``changes`` and its claim let go."""
    return dataclasses.replace(
        before,
        version=before.version + 1,
        claim_token=None,
        claimed_by=None,
        claim_expires_at=None,
        updated_at=now,
        **changes,
    )
