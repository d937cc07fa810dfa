"""Acting on desired state: a resource at rest short of its desired state is moved one event on.

A resting resource whose desired state is pending is due for the engine (the store schedules it when
the desired state is set, and whenever a transition brings the resource to rest short of it). The
worker claims it like a step and fires, as the claim holder, the first event of a shortest path to the
desired state; from there the kind's own steps drive the resource through its work and wait states,
and when it comes to rest again short of the desired state, the reconcile goes on from there.

Each rest state is left at most once per generation: a resource that comes back to a rest state it
was already moved on from (its steps took it round in a circle) would loop for ever, so the engine
gives up instead, as it does when no path is left. Giving up, or arriving in a final state, makes
``observed_generation`` catch up: the engine is done with that generation.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from tenure.errors import InUse, TransitionNotAllowed, UnknownKind
from tenure.machine import Kind, Role
from tenure.machine.graph import next_hop
from tenure.rules import error_text
from tenure.store.claims import Claim
from tenure.store.desired import desire_pending
from tenure.store.model import Resource
from tenure.store.protocol import EngineStore

__all__ = ["Reconciled", "Reconciler", "rest_pairs", "rest_triples"]


class Reconciled(enum.Enum):
    """What a reconcile did with a claimed resource."""

    #: Fired the next event towards the desired state.
    MOVED = "moved"
    #: Nothing pending: the claim was given back and the resource is no longer due.
    IDLE = "idle"
    #: The desired state cannot be reached: recorded as the resource's error, generation observed.
    GAVE_UP = "gave_up"


def rest_pairs(kinds: Iterable[Kind]) -> list[tuple[str, str]]:
    """The (kind, state) pairs of every rest state of ``kinds``: where a reconcile may be due."""
    return sorted({(k.name, s.name) for k in kinds for s in k.states_with_role(Role.REST)})


def rest_triples(kinds: Iterable[Kind]) -> list[tuple[str, str, int]]:
    """The (kind, state, version) triples of every rest state of ``kinds`` (each version of each)."""
    return sorted({(k.name, s.name, k.version) for k in kinds for s in k.states_with_role(Role.REST)})


class Reconciler:
    """Moves claimed resources towards their desired state, writing as ``actor``."""

    def __init__(self, store: EngineStore, *, actor: str) -> None:
        self.store = store
        self.actor = actor

    def handles(self, resource: Resource) -> bool:
        """Whether ``resource`` rests, so that a claim on it is the reconcile's."""
        try:
            kind = self.store.kind_of(resource)
        except UnknownKind:
            return False
        return kind.has_state(resource.state) and kind.state(resource.state).role is Role.REST

    def reconcile(self, claim: Claim) -> Reconciled:
        """Take one step towards the claimed resource's desired state (raises ClaimLost if it moved on)."""
        r = claim.resource
        store = self.store
        if not desire_pending(r):
            store.release_idle(claim)
            return Reconciled.IDLE
        desired = r.desired_state
        assert desired is not None
        if r.state in store.reconcile_hops(r.id, r.generation):
            return self._give_up(claim, f"the resource came back to state {r.state!r}")
        kind = store.kind_of(r)
        event = next_hop(kind, r.state, desired)
        if event is None:
            return self._give_up(claim, f"it cannot be reached from state {r.state!r}")
        try:
            store.fire_claimed(
                claim,
                event,
                actor=self.actor,
                detail={"reconcile": r.generation, "desired_state": desired},
            )
        except TransitionNotAllowed as exc:  # a guard refused the way there
            return self._give_up(claim, f"event {event!r} from state {r.state!r} was refused ({exc.reason or exc})")
        except InUse:
            # A party's use is live after all (it renewed as the claim was taken): the write that ends
            # the last use fires the teardown, so there is nothing to do until then.
            store.release_idle(claim)
            return Reconciled.IDLE
        return Reconciled.MOVED

    def _give_up(self, claim: Claim, why: str) -> Reconciled:
        error = f"desired state {claim.resource.desired_state!r} not reached: {why}"
        self.store.give_up_desired(claim, error=error_text(error), actor=self.actor)
        return Reconciled.GAVE_UP
