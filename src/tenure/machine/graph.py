"""Paths through a kind's event graph: where a state can get to, and the first step of a shortest way there.

Paths follow the kind's events; guards are not evaluated (they depend on the resource at the moment
an event fires, not on the graph).
"""

from __future__ import annotations

from collections import deque

from tenure.machine.kind import Kind

__all__ = ["next_hop", "reachable_states"]


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
