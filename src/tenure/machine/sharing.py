"""Sharing: how a kind's resources are used by several parties and torn down after the last one.

A kind that declares :class:`Sharing` names the event that starts its teardown, the state a
finished teardown reaches, and the states in which parties may use a resource. The rules that follow
(in :mod:`tenure.store.uses`) are: the teardown event fires only when no party's use is live (or
when an admin forces it); a desired state outside the usable states waits for the last party; a
party may register only while the resource is in a usable state.

>>> from tenure.machine import Event, Kind, State, Role
>>> from tenure.machine.sharing import Sharing
>>> lease = Kind(
...     "lease",
...     states=[State("held", 1, Role.REST), State("gone", 2, Role.FINAL)],
...     events=[Event("drop", "held", "gone")],
...     initial="held",
...     sharing=Sharing(teardown="drop", torn_down="gone", usable=["held"]),
... )
>>> lease.sharing.usable
frozenset({'held'})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tenure.machine.parts import Event, Role, State
from tenure.machine.validation import expand_sources

__all__ = ["Sharing", "sharing_problems"]


@dataclass(frozen=True)
class Sharing:
    """What sharing means for a kind: the teardown event, the torn-down state, the usable states."""

    #: The event that starts tearing a resource down; it waits for the last party.
    teardown: str
    #: The state a finished teardown reaches (what "torn down" means as a desired state).
    torn_down: str
    #: The states in which a party may register or renew its use.
    usable: frozenset[str] = field(default_factory=frozenset)

    def __init__(self, *, teardown: str, torn_down: str, usable: Iterable[str]) -> None:
        object.__setattr__(self, "teardown", teardown)
        object.__setattr__(self, "torn_down", torn_down)
        object.__setattr__(self, "usable", frozenset(usable))

    def describe(self) -> dict[str, object]:
        return {"teardown": self.teardown, "torn_down": self.torn_down, "usable": sorted(self.usable)}


def sharing_problems(
    sharing: Sharing, states: Iterable[State], events: Iterable[Event], edges: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """What is wrong with ``sharing`` for a kind with these states and events (empty: nothing)."""
    by_name = {s.name: s for s in states}
    declared = list(events)
    problems: list[str] = []
    teardown = [e for e in declared if e.name == sharing.teardown]
    if not teardown:
        problems.append(f"sharing: teardown event {sharing.teardown!r} is not an event of the kind")
    if sharing.torn_down not in by_name:
        problems.append(f"sharing: torn_down state {sharing.torn_down!r} is not a state of the kind")
    for name in sorted(sharing.usable):
        if name not in by_name:
            problems.append(f"sharing: usable state {name!r} is not a state of the kind")
        elif by_name[name].role is Role.FINAL:
            problems.append(f"sharing: usable state {name!r} is final: nothing can be used there")
    if not sharing.usable:
        problems.append("sharing: usable must name at least one state")
    if teardown and sharing.torn_down in by_name:
        sources = {src for e in teardown for src in expand_sources(e, list(by_name.values()))}
        outside = sorted(sources - sharing.usable)
        if outside:
            problems.append(
                f"sharing: teardown event {sharing.teardown!r} leaves states that are not usable "
                f"({', '.join(outside)}): only a state parties can use needs to wait for them"
            )
        if sharing.torn_down in sharing.usable:
            problems.append(f"sharing: torn_down state {sharing.torn_down!r} cannot also be usable")
        reach = _reachable(edges, {e.target for e in teardown})
        if sharing.torn_down not in reach:
            problems.append(
                f"sharing: torn_down state {sharing.torn_down!r} is not reached after event {sharing.teardown!r}"
            )
    return problems


def _reachable(edges: Mapping[str, Mapping[str, str]], start: set[str]) -> set[str]:
    seen = set(start)
    todo = list(start)
    while todo:
        for target in edges.get(todo.pop(), {}).values():
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen
