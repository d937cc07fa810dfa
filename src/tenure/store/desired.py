"""Desired state: where a client wants a resource to end up, and the way there through its kind's graph.

A client sets ``desired_state``; that bumps ``generation``. Once the resource reaches the desired state
(or can no longer get anywhere), ``observed_generation`` catches up with ``generation``. While the two
differ the desire is *pending*: the engine moves a resource that rests short of its desired state one
event along a shortest path, and the kind's own steps take it from there.

Paths follow the kind's event graph; guards are not evaluated (they depend on the resource at the
moment an event fires, not on the graph).
"""

from __future__ import annotations

from collections import deque

from tenure.machine import Kind
from tenure.store.model import Resource

__all__ = ["DESIRED_EVENT", "DESIRED_FAILED_EVENT", "desire_pending", "next_hop", "reachable_states"]

#: The journal event of a write that sets (or clears) the desired state.
DESIRED_EVENT = "@desired"
#: The journal event of the engine giving up on a desired state it cannot reach.
DESIRED_FAILED_EVENT = "@desired-failed"


def desire_pending(resource: Resource) -> bool:
    """Whether ``resource`` has a desired state it is not in and that the engine has not finished with."""
    desired = resource.desired_state
    return desired is not None and desired != resource.state and resource.generation > resource.observed_generation


def reachable_states(kind: Kind, state: str) -> list[str]:
    """Every state reachable from ``state`` (itself included), in the kind's declaration order."""
    seen = {state}
    queue = deque([state])
    while queue:
        for transition in kind.transitions_from(queue.popleft()).values():
            if transition.target not in seen:
                seen.add(transition.target)
                queue.append(transition.target)
    return [s.name for s in kind.states if s.name in seen]


def next_hop(kind: Kind, state: str, desired: str) -> str | None:
    """The first event of a shortest path from ``state`` to ``desired`` (None if there is none, or no need).

    Among shortest paths, the first event wins by the order the kind declares its events in.
    """
    if state == desired:
        return None
    distance = _distances_to(kind, desired)
    here = distance.get(state)
    if here is None:
        return None
    for event in kind.allowed_events(state):
        if distance.get(kind.target(state, event)) == here - 1:
            return event
    return None  # pragma: no cover - a state at distance n always has an edge to one at n - 1


def _distances_to(kind: Kind, desired: str) -> dict[str, int]:
    """How many events each state is away from ``desired`` (states that cannot get there are left out)."""
    into: dict[str, list[str]] = {}
    for s in kind.states:
        for transition in kind.transitions_from(s.name).values():
            into.setdefault(transition.target, []).append(s.name)
    distance = {desired: 0}
    queue = deque([desired])
    while queue:
        current = queue.popleft()
        for source in into.get(current, ()):
            if source not in distance:
                distance[source] = distance[current] + 1
                queue.append(source)
    return distance
