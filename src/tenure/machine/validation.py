"""Rules a kind declaration must obey, checked once when the kind is declared.

Each rule returns human-readable problems instead of raising, so that one ``InvalidKind`` can list
everything that is wrong with a declaration at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from datetime import timedelta

from tenure.machine.parts import ANY, Event, Role, State, valid_name

__all__ = ["expand_sources", "find_problems"]


def expand_sources(event: Event, states: Sequence[State]) -> tuple[str, ...]:
    """The concrete source states of ``event`` (resolving :data:`ANY`)."""
    out: list[str] = []
    for src in event.sources:
        if src == ANY:
            out.extend(s.name for s in states if not s.is_final)
        else:
            out.append(src)
    return tuple(dict.fromkeys(out))


_NAME_RULE = "letters, digits, '_', '.', '-', starting with a letter or '_', at most 100 characters"


def _declaration_problems(
    name: str, states: Sequence[State], events: Sequence[Event], initial: str
) -> tuple[list[str], bool]:
    """The problems of the declaration itself, and whether they make the graph checks meaningless."""
    problems: list[str] = []
    fatal = False
    if not valid_name(name):
        problems.append(f"kind name {name!r} is not a valid name ({_NAME_RULE})")
    if not states:
        return [*problems, "a kind needs at least one state"], True
    seen_names: set[str] = set()
    codes: dict[int, str] = {}
    for s in states:
        if not valid_name(s.name):
            problems.append(f"state name {s.name!r} is not a valid name ({_NAME_RULE})")
        if s.name in seen_names:
            problems.append(f"duplicate state name {s.name!r}")
        seen_names.add(s.name)
        if isinstance(s.code, bool) or not isinstance(s.code, int) or s.code < 0:
            problems.append(f"state {s.name!r} has code {s.code!r}; codes are integers >= 0")
        elif s.code in codes:
            problems.append(f"duplicate state code {s.code}: used by {codes[s.code]!r} and {s.name!r}")
        else:
            codes[s.code] = s.name
        if not isinstance(s.role, Role):
            problems.append(f"state {s.name!r} has role {s.role!r}; roles are {', '.join(r.value for r in Role)}")
            fatal = True
        if s.deadline is not None and not isinstance(s.deadline, timedelta):
            problems.append(f"state {s.name!r} has deadline {s.deadline!r}; a deadline is a datetime.timedelta")
            fatal = True
    if initial not in seen_names:
        problems.append(f"initial state {initial!r} is not one of the declared states")
        fatal = True
    for e in events:
        if not valid_name(e.name):
            problems.append(f"event name {e.name!r} is not a valid name ({_NAME_RULE})")
        if not e.sources:
            problems.append(f"event {e.name!r} has no source states")
        for src in e.sources:
            if src != ANY and src not in seen_names:
                problems.append(f"event {e.name!r} has unknown source state {src!r}")
                fatal = True
        if e.target not in seen_names:
            problems.append(f"event {e.name!r} has unknown target state {e.target!r}")
            fatal = True
    return problems, fatal


def _edge_problems(
    states: Sequence[State], events: Sequence[Event], edges: Mapping[str, Mapping[str, str]]
) -> list[str]:
    problems: list[str] = []
    by_name = {s.name: s for s in states}
    targets: dict[tuple[str, str], str] = {}
    guarded: dict[tuple[str, str], bool] = {}
    for e in events:
        for src in expand_sources(e, states):
            key = (src, e.name)
            if key in targets and targets[key] != e.target:
                problems.append(
                    f"event {e.name!r} has two targets from state {src!r}: {targets[key]!r} and {e.target!r}"
                )
            elif key in targets and (e.guard is not None or guarded.get(key)):
                # Two declarations of one edge, at least one guarded: which guard holds is ambiguous.
                problems.append(f"event {e.name!r} is declared twice from state {src!r} and one of them has a guard")
            targets.setdefault(key, e.target)
            guarded[key] = guarded.get(key, False) or e.guard is not None
            if src in by_name and by_name[src].is_final:
                problems.append(f"final state {src!r} has an outgoing event {e.name!r}; nothing leaves a final state")
    for s in states:
        if s.role is Role.WAIT:
            if s.deadline is None or s.deadline.total_seconds() <= 0:
                problems.append(f"wait state {s.name!r} has no deadline; every wait state needs a positive deadline")
            if s.on_deadline is None:
                problems.append(f"wait state {s.name!r} does not say which event its deadline fires (on_deadline)")
            elif s.on_deadline not in edges.get(s.name, {}):
                problems.append(
                    f"wait state {s.name!r} fires {s.on_deadline!r} at its deadline, "
                    f"but that event does not leave {s.name!r}"
                )
            elif guarded.get((s.name, s.on_deadline)):
                problems.append(_guarded_last_resort(s.name, s.on_deadline, "at its deadline"))
        elif s.deadline is not None or s.on_deadline is not None:
            problems.append(f"state {s.name!r} is a {s.role.value} state; only wait states have a deadline")
        if s.role is Role.WORK:
            if s.on_failure is not None and s.on_failure not in edges.get(s.name, {}):
                problems.append(
                    f"work state {s.name!r} fires {s.on_failure!r} when its step fails, "
                    f"but that event does not leave {s.name!r}"
                )
            elif s.on_failure is not None and guarded.get((s.name, s.on_failure)):
                problems.append(_guarded_last_resort(s.name, s.on_failure, "when its step fails"))
        elif s.on_failure is not None:
            problems.append(f"state {s.name!r} is a {s.role.value} state; only work states have on_failure")
        # A rest state may have a step too (it runs to leave the state on a wish), retried by its policy.
        if s.role in (Role.WORK, Role.REST):
            if s.retry is not None:
                problems.extend(f"{s.role.value} state {s.name!r} retry policy: {p}" for p in s.retry.problems())
        elif s.retry is not None:
            problems.append(
                f"state {s.name!r} is a {s.role.value} state; only work and rest states have a retry policy"
            )
        if not s.is_final and not edges.get(s.name):
            problems.append(f"state {s.name!r} is not final but has no way out (a dead end)")
    return problems


def _guarded_last_resort(state: str, event: str, when: str) -> str:
    # The engine fires these events when nothing else can be done; a guard that refused would leave
    # the resource stuck where no step or deadline moves it on.
    return (
        f"state {state!r} fires {event!r} {when}, but that event has a guard from {state!r}; "
        "failure and deadline events must not be guarded"
    )


def _reachability_problems(initial: str, edges: Mapping[str, Mapping[str, str]], names: Sequence[str]) -> list[str]:
    seen = {initial}
    queue = deque([initial])
    while queue:
        for target in edges.get(queue.popleft(), {}).values():
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return [f"state {n!r} is unreachable from the initial state {initial!r}" for n in names if n not in seen]


def find_problems(
    name: str,
    states: Sequence[State],
    events: Sequence[Event],
    initial: str,
    edges: Mapping[str, Mapping[str, str]],
) -> list[str]:
    """Every rule the declaration breaks, in declaration order; empty when the kind is valid.

    The graph is checked too unless the declaration is too broken for that to mean anything
    (unknown states referenced, no states, a role or deadline of the wrong type).
    """
    problems, fatal = _declaration_problems(name, states, events, initial)
    if fatal:
        return problems
    problems += _edge_problems(states, events, edges)
    problems += _reachability_problems(initial, edges, [s.name for s in states])
    return problems
