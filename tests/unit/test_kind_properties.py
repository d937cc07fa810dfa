"""Properties of kinds, checked on randomly generated declarations (hypothesis)."""

from __future__ import annotations

import operator
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tenure.draw import to_dot, to_mermaid
from tenure.errors import InvalidKind, TransitionNotAllowed
from tenure.machine import ANY, Event, Kind, Role, State

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_FIRST = "abcxyzABZ_"
_REST = "abcxyzABZ_019.-"
VALID_NAME = st.builds(operator.add, st.sampled_from(_FIRST), st.text(alphabet=_REST, max_size=8))
EVENT_POOL = ("go", "next", "retry", "fail", "poke", "e.1", "e-2")


@dataclass(frozen=True)
class Generated:
    kind: Kind
    #: (state, event) -> target: the graph the declaration means, computed independently of Kind.
    edges: dict[tuple[str, str], str]


@st.composite
def valid_kinds(draw: st.DrawFn) -> Generated:
    n = draw(st.integers(min_value=1, max_value=9))
    names = draw(st.lists(VALID_NAME, min_size=n, max_size=n, unique=True))
    codes = draw(st.lists(st.integers(min_value=0, max_value=10**6), min_size=n, max_size=n, unique=True))
    # state 0 is the initial state; it is final only in the one-state kind.
    n_final = 1 if n == 1 and draw(st.booleans()) else draw(st.integers(min_value=0, max_value=n - 1))
    final = set(names[n - n_final :]) if n_final else set()
    non_final = [x for x in names if x not in final]

    edges: dict[tuple[str, str], str] = {}
    events: list[Event] = []

    def add(event: str, src: str, dst: str) -> bool:
        if edges.get((src, event), dst) != dst:
            return False  # would give the event two targets from src
        edges[(src, event)] = dst
        events.append(Event(event, src, dst))
        return True

    def add_with_some_name(src: str, dst: str) -> None:
        start = draw(st.integers(min_value=0, max_value=len(EVENT_POOL) - 1))
        for i in range(len(EVENT_POOL)):
            if add(EVENT_POOL[(start + i) % len(EVENT_POOL)], src, dst):
                return
        add(f"only_{len(events)}", src, dst)

    # A random spanning tree rooted at the initial state: every state is reachable.
    connected = [names[0]] if names[0] not in final else []
    rest = draw(st.permutations([x for x in non_final if x != names[0]])) + draw(st.permutations(sorted(final)))
    for state in rest:
        if state == names[0]:
            continue
        parent = draw(st.sampled_from(connected))
        add_with_some_name(parent, state)
        if state not in final:
            connected.append(state)
    # Every non-final state has a way out.
    for state in non_final:
        if not any(src == state for src, _ in edges):
            add_with_some_name(state, draw(st.sampled_from(names)))
    # Random extra edges (self-loops and cycles included).
    if non_final:
        for _ in range(draw(st.integers(min_value=0, max_value=8))):
            add_with_some_name(draw(st.sampled_from(non_final)), draw(st.sampled_from(names)))
    # Sometimes an event from ANY state, with a name no other declaration uses.
    with_abort = draw(st.booleans())
    if non_final and with_abort:
        dst = draw(st.sampled_from(names))
        for state in non_final:
            edges[(state, "abort")] = dst
        events.append(Event("abort", ANY, dst))

    draw(st.randoms()).shuffle(events)
    states: list[State] = []
    for name, code in zip(names, codes, strict=True):
        if name in final:
            states.append(State(name, code, Role.FINAL))
            continue
        role = draw(st.sampled_from([Role.REST, Role.WORK, Role.WAIT]))
        if role is Role.WAIT:
            leaving = sorted(e for (src, e) in edges if src == name)
            seconds = draw(st.integers(min_value=1, max_value=10**7))
            states.append(
                State(name, code, role, deadline=timedelta(seconds=seconds), on_deadline=draw(st.sampled_from(leaving)))
            )
        else:
            states.append(State(name, code, role))
    kind = Kind("generated", states=states, events=events, initial=names[0])
    return Generated(kind, edges)


def check_graph_is_exactly_the_declared_one(g: Generated) -> None:
    kind = g.kind
    for state in kind.states:
        for event in kind.event_names:
            expected = g.edges.get((state.name, event))
            assert kind.allows(state.name, event) is (expected is not None)
            if expected is not None:
                assert kind.target(state.name, event) == expected


def check_allows_iff_target_does_not_raise(g: Generated) -> None:
    kind = g.kind
    for state in kind.states:
        for event in kind.event_names:
            refused: TransitionNotAllowed | None = None
            try:
                kind.target(state.name, event)
            except TransitionNotAllowed as err:
                refused = err
            assert kind.allows(state.name, event) is (refused is None)
            if refused is not None:
                assert refused.allowed == kind.allowed_events(state.name)


def check_allowed_events_are_the_events_allowed(g: Generated) -> None:
    kind = g.kind
    for state in kind.states:
        allowed = kind.allowed_events(state.name)
        assert len(allowed) == len(set(allowed))
        assert set(allowed) == {e for e in kind.event_names if kind.allows(state.name, e)}
        assert set(kind.transitions_from(state.name)) == set(allowed)
        if state.is_final:
            assert allowed == ()
        else:
            assert allowed, f"non-final state {state.name!r} has no way out"
    for event in kind.event_names:
        assert set(kind.sources(event)) == {s.name for s in kind.states if kind.allows(s.name, event)}


def check_every_state_is_reachable(g: Generated) -> None:
    kind = g.kind
    seen = {kind.initial.name}
    queue = deque(seen)
    while queue:
        state = queue.popleft()
        for event in kind.allowed_events(state):
            nxt = kind.target(state, event)
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    assert seen == {s.name for s in kind.states}


def check_drawings_mention_every_state(g: Generated) -> None:
    kind = g.kind
    mermaid = to_mermaid(kind)
    dot = to_dot(kind)
    assert mermaid.startswith("stateDiagram-v2\n")
    assert dot.startswith('digraph "generated" {')
    for s in kind.states:
        assert f'state "{s.name} ({s.code}, {s.role.value})" as ' in mermaid
        assert f'    "{s.name}" [label="{s.name}\\n{s.code} · {s.role.value}' in dot
    for src, dst in {(s, t) for (s, _), t in g.edges.items()}:
        assert f'"{src}" -> "{dst}"' in dot


def check_wait_states_fire_an_event_that_leaves_them(g: Generated) -> None:
    for s in g.kind.states_with_role(Role.WAIT):
        assert s.deadline is not None
        assert s.deadline > timedelta(0)
        assert s.on_deadline is not None
        assert g.kind.allows(s.name, s.on_deadline)


@SETTINGS
@given(valid_kinds())
def test_valid_kind_properties(g: Generated) -> None:
    check_graph_is_exactly_the_declared_one(g)
    check_allows_iff_target_does_not_raise(g)
    check_allowed_events_are_the_events_allowed(g)
    check_every_state_is_reachable(g)
    check_wait_states_fire_an_event_that_leaves_them(g)
    check_drawings_mention_every_state(g)


@settings(SETTINGS, max_examples=100)
@given(valid_kinds(), st.lists(st.integers(min_value=0, max_value=1000), max_size=40))
def test_random_walks_over_allowed_events_never_raise(g: Generated, choices: list[int]) -> None:
    kind = g.kind
    state = kind.initial.name
    for choice in choices:
        allowed = kind.allowed_events(state)
        if not allowed:
            assert kind.state(state).is_final
            break
        event = allowed[choice % len(allowed)]
        t = kind.transition(state, event, resource_id="walker")
        assert (t.source, t.event) == (state, event)
        assert t.target == g.edges[(state, event)]
        state = t.target
        assert kind.has_state(state)


# --- arbitrary, possibly invalid declarations ----------------------------------------------------

NAME_POOL = ("a", "b", "c", "z", "w", "@create", "a b", "", "1x", "naïve")
ANY_NAME = st.one_of(st.sampled_from(NAME_POOL), st.text(max_size=6))
ANY_CODE: st.SearchStrategy[Any] = st.one_of(
    st.integers(min_value=-3, max_value=5), st.booleans(), st.floats(allow_nan=True), st.text(max_size=2), st.none()
)
ANY_ROLE: st.SearchStrategy[Any] = st.one_of(st.sampled_from(list(Role)), st.sampled_from(["wait", "rest", None]))
ANY_DEADLINE = st.one_of(st.none(), st.timedeltas(min_value=timedelta(days=-1), max_value=timedelta(days=1)))

any_states = st.lists(
    st.builds(
        State,
        name=ANY_NAME,
        code=ANY_CODE,
        role=ANY_ROLE,
        deadline=ANY_DEADLINE,
        on_deadline=st.one_of(st.none(), ANY_NAME),
    ),
    max_size=6,
)
any_events = st.lists(
    st.builds(
        Event,
        name=ANY_NAME,
        sources=st.one_of(ANY_NAME, st.just(ANY), st.lists(st.one_of(ANY_NAME, st.just(ANY)), max_size=3)),
        target=ANY_NAME,
    ),
    max_size=8,
)


@settings(max_examples=250, deadline=None)
@given(any_states, any_events, ANY_NAME)
def test_any_declaration_is_either_valid_or_invalid_kind(
    states: list[State], events: list[Event], initial: str
) -> None:
    outcome: Kind | InvalidKind
    try:
        outcome = Kind("fuzz", states=states, events=events, initial=initial)
    except InvalidKind as err:
        outcome = err
    if isinstance(outcome, InvalidKind):
        assert outcome.kind == "fuzz"
        assert outcome.problems
        assert all(isinstance(p, str) and p for p in outcome.problems)
        for problem in outcome.problems:
            assert problem in str(outcome)
        return
    kind = outcome
    # A declaration that was accepted behaves like a valid kind.
    assert kind.initial.name == initial
    for s in kind.states:
        assert s.is_final or kind.allowed_events(s.name)
        for event in kind.allowed_events(s.name):
            assert kind.has_state(kind.target(s.name, event))
    kind.describe()
    to_mermaid(kind)
    to_dot(kind)
