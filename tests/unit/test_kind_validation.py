"""A kind is validated when it is declared: one InvalidKind lists every rule the declaration breaks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from tenure.errors import InvalidKind, TenureError
from tenure.machine import ANY, Event, Kind, Role, State

# --- helpers -------------------------------------------------------------------------------------


def base_states() -> list[State]:
    """a (initial) -> b -> z (final): a valid little machine the tests break one rule at a time."""
    return [State("a", 1), State("b", 2, Role.WORK), State("z", 9, Role.FINAL)]


def base_events() -> list[Event]:
    return [Event("go", "a", "b"), Event("end", "b", "z")]


def problems_of(states: Sequence[State], events: Sequence[Event], initial: str = "a") -> tuple[str, ...]:
    with pytest.raises(InvalidKind) as info:
        Kind("k", states=states, events=events, initial=initial)
    err = info.value
    assert err.kind == "k"
    assert isinstance(err.problems, tuple)
    assert err.problems, "InvalidKind must list at least one problem"
    assert all(isinstance(p, str) for p in err.problems)
    return err.problems


def assert_problems(problems: Sequence[str], *expected: tuple[str, ...]) -> None:
    """Each group of fragments matches exactly one problem, and every problem is matched by a group."""
    unmatched = list(problems)
    for fragments in expected:
        hits = [p for p in unmatched if all(f in p for f in fragments)]
        assert len(hits) == 1, f"expected one problem containing {fragments!r}, got {list(problems)!r}"
        unmatched.remove(hits[0])
    assert not unmatched, f"unexpected problems: {unmatched!r}"


def assert_has_problem(problems: Sequence[str], *fragments: str) -> None:
    assert any(all(f in p for f in fragments) for p in problems), (
        f"no problem contains {fragments!r}: {list(problems)!r}"
    )


def test_the_base_kind_is_valid() -> None:
    kind = Kind("k", states=base_states(), events=base_events(), initial="a")
    assert kind.initial.name == "a"


# --- reachability and dead ends ------------------------------------------------------------------


def test_unreachable_state() -> None:
    states = [*base_states(), State("island", 5)]
    events = [*base_events(), Event("leave", "island", "z")]
    assert_problems(problems_of(states, events), ("'island'", "unreachable", "'a'"))


def test_unreachable_group_of_states_is_listed_state_by_state() -> None:
    states = [*base_states(), State("p", 5), State("q", 6)]
    events = [*base_events(), Event("hop", "p", "q"), Event("hop", "q", "p")]
    assert_problems(problems_of(states, events), ("'p'", "unreachable"), ("'q'", "unreachable"))


def test_state_reachable_only_through_itself_is_unreachable() -> None:
    states = [*base_states(), State("loop", 5)]
    events = [*base_events(), Event("spin", "loop", "loop"), Event("out", "loop", "z")]
    assert_problems(problems_of(states, events), ("'loop'", "unreachable"))


def test_non_final_state_without_a_way_out_is_a_dead_end() -> None:
    states = [*base_states(), State("stuck", 5)]
    events = [*base_events(), Event("jam", "a", "stuck")]
    assert_problems(problems_of(states, events), ("'stuck'", "dead end"))


@pytest.mark.parametrize("role", [Role.REST, Role.WORK])
def test_dead_end_is_reported_for_every_non_final_role(role: Role) -> None:
    states = [State("a", 1), State("b", 2, role)]
    problems = problems_of(states, [Event("go", "a", "b")])
    assert_problems(problems, ("'b'", "not final", "dead end"))


def test_final_state_needs_no_way_out() -> None:
    kind = Kind("k", states=[State("a", 1), State("z", 2, Role.FINAL)], events=[Event("end", "a", "z")], initial="a")
    assert kind.allowed_events("z") == ()


# --- states: names and codes ---------------------------------------------------------------------


def test_duplicate_state_names() -> None:
    states = [*base_states(), State("a", 7)]
    assert_problems(problems_of(states, base_events()), ("duplicate state name", "'a'"))


def test_duplicate_codes_name_both_states() -> None:
    states = [State("a", 1), State("b", 1, Role.WORK), State("z", 9, Role.FINAL)]
    assert_problems(problems_of(states, base_events()), ("duplicate state code 1", "'a'", "'b'"))


def test_every_duplicate_code_is_reported() -> None:
    states = [State("a", 1), State("b", 1, Role.WORK), State("z", 1, Role.FINAL)]
    assert_problems(
        problems_of(states, base_events()),
        ("duplicate state code 1", "'a'", "'b'"),
        ("duplicate state code 1", "'a'", "'z'"),
    )


@pytest.mark.parametrize("code", [-1, -1000, 1.5, 2.0, "3", None, True, False])
def test_codes_must_be_non_negative_ints_and_not_bools(code: Any) -> None:
    states = [State("a", 1), State("b", code, Role.WORK), State("z", 9, Role.FINAL)]
    problems = problems_of(states, base_events())
    assert_problems(problems, ("'b'", f"code {code!r}", "integers >= 0"))


def test_code_zero_is_a_valid_code() -> None:
    kind = Kind("k", states=[State("a", 0), State("z", 1, Role.FINAL)], events=[Event("end", "a", "z")], initial="a")
    assert kind.state_by_code(0).name == "a"


def test_role_must_be_a_role() -> None:
    states = [State("a", 1), State("b", 2, "work"), State("z", 9, Role.FINAL)]  # type: ignore[arg-type]
    assert_problems(problems_of(states, base_events()), ("'b'", "role 'work'", "work, wait, rest, final"))


@pytest.mark.parametrize("bad", ["@create", "a b", "", "1abc", "go!", "x/y", "a" * 101, "naïve"])
def test_invalid_state_names(bad: str) -> None:
    states = [State(bad, 1), State("z", 9, Role.FINAL)]
    problems = problems_of(states, [Event("end", bad, "z")], initial=bad)
    assert_problems(problems, (f"state name {bad!r}", "not a valid name"))


@pytest.mark.parametrize("bad", ["@create", "a b", "", "9lives", "go!", "e" * 101])
def test_invalid_event_names(bad: str) -> None:
    events = [Event(bad, "a", "b"), Event("end", "b", "z")]
    assert_problems(problems_of(base_states(), events), (f"event name {bad!r}", "not a valid name"))


@pytest.mark.parametrize("good", ["a", "_x", "A.b-c_9", "x" * 100, "Provisioning_Requested"])
def test_valid_names_are_accepted(good: str) -> None:
    kind = Kind(
        "k",
        states=[State(good, 1), State("z", 9, Role.FINAL)],
        events=[Event(good, good, "z")],
        initial=good,
    )
    assert kind.has_state(good)
    assert kind.has_event(good)


def test_state_name_with_trailing_newline_is_invalid() -> None:
    # NAME_PATTERN ends in `$`, which also matches just before a trailing newline.
    bad = "abc\n"
    states = [State(bad, 1), State("z", 9, Role.FINAL)]
    problems = problems_of(states, [Event("end", bad, "z")], initial=bad)
    assert_problems(problems, (f"state name {bad!r}", "not a valid name"))


def test_event_name_with_trailing_newline_is_invalid() -> None:
    bad = "go\n"
    events = [Event(bad, "a", "b"), Event("end", "b", "z")]
    assert_problems(problems_of(base_states(), events), (f"event name {bad!r}", "not a valid name"))


@pytest.mark.parametrize("bad", ["a b", "@image", ""])
def test_kind_name_is_validated_like_other_names(bad: str) -> None:
    with pytest.raises(InvalidKind) as info:
        Kind(bad, states=base_states(), events=base_events(), initial="a")
    assert_has_problem(info.value.problems, repr(bad), "not a valid name")


def test_empty_kind() -> None:
    problems = problems_of([], [], initial="a")
    assert_has_problem(problems, "at least one state")


def test_unknown_initial_state() -> None:
    problems = problems_of(base_states(), base_events(), initial="nowhere")
    assert_has_problem(problems, "initial state 'nowhere'", "not one of the declared states")


# --- events --------------------------------------------------------------------------------------


def test_unknown_source_state() -> None:
    events = [*base_events(), Event("extra", "nowhere", "b")]
    assert_problems(problems_of(base_states(), events), ("'extra'", "unknown source state 'nowhere'"))


def test_unknown_target_state() -> None:
    events = [*base_events(), Event("extra", "a", "nowhere")]
    assert_problems(problems_of(base_states(), events), ("'extra'", "unknown target state 'nowhere'"))


def test_every_unknown_source_of_one_event_is_reported() -> None:
    events = [*base_events(), Event("extra", ["a", "x1", "x2"], "b")]
    assert_problems(
        problems_of(base_states(), events),
        ("'extra'", "unknown source state 'x1'"),
        ("'extra'", "unknown source state 'x2'"),
    )


def test_event_without_sources() -> None:
    events = [*base_events(), Event("extra", [], "b")]
    assert_problems(problems_of(base_states(), events), ("'extra'", "no source states"))


def test_event_with_two_targets_from_one_state() -> None:
    events = [*base_events(), Event("go", "a", "z")]
    assert_problems(problems_of(base_states(), events), ("'go'", "two targets", "'a'", "'b'", "'z'"))


def test_two_targets_through_any() -> None:
    # ANY covers 'a' and 'b'; the second declaration gives 'a' another target for the same event.
    events = [*base_events(), Event("stop", ANY, "z"), Event("stop", "a", "b")]
    assert_problems(problems_of(base_states(), events), ("'stop'", "two targets", "from state 'a'"))


def test_same_event_declared_twice_with_the_same_source_and_target_is_harmless() -> None:
    kind = Kind("k", states=base_states(), events=[*base_events(), Event("go", "a", "b")], initial="a")
    assert kind.target("a", "go") == "b"
    assert kind.sources("go") == ("a",)


def test_final_state_with_outgoing_event() -> None:
    events = [*base_events(), Event("revive", "z", "a")]
    assert_problems(problems_of(base_states(), events), ("final state 'z'", "'revive'", "nothing leaves"))


def test_any_never_makes_a_final_state_a_source() -> None:
    kind = Kind("k", states=base_states(), events=[*base_events(), Event("abort", ANY, "z")], initial="a")
    assert kind.sources("abort") == ("a", "b")
    assert not kind.allows("z", "abort")


# --- wait states and deadlines -------------------------------------------------------------------


def wait_kind(wait: State, *extra: Event) -> tuple[list[State], list[Event]]:
    """a -> w (the wait state under test) -> z, plus 'expire' leaving w."""
    states = [State("a", 1), wait, State("z", 9, Role.FINAL)]
    events = [Event("ask", "a", "w"), Event("answer", "w", "z"), Event("expire", "w", "a"), *extra]
    return states, events


def test_well_formed_wait_state_is_accepted() -> None:
    states, events = wait_kind(State("w", 2, Role.WAIT, deadline=timedelta(seconds=30), on_deadline="expire"))
    kind = Kind("k", states=states, events=events, initial="a")
    assert kind.state("w").deadline == timedelta(seconds=30)


def test_wait_state_without_deadline() -> None:
    states, events = wait_kind(State("w", 2, Role.WAIT, on_deadline="expire"))
    assert_problems(problems_of(states, events), ("wait state 'w'", "no deadline"))


@pytest.mark.parametrize("deadline", [timedelta(0), timedelta(seconds=-5)])
def test_wait_state_deadline_must_be_positive(deadline: timedelta) -> None:
    states, events = wait_kind(State("w", 2, Role.WAIT, deadline=deadline, on_deadline="expire"))
    assert_problems(problems_of(states, events), ("wait state 'w'", "positive deadline"))


def test_wait_state_without_on_deadline() -> None:
    states, events = wait_kind(State("w", 2, Role.WAIT, deadline=timedelta(minutes=1)))
    assert_problems(problems_of(states, events), ("wait state 'w'", "on_deadline"))


def test_wait_state_without_deadline_nor_on_deadline_gets_both_problems() -> None:
    states, events = wait_kind(State("w", 2, Role.WAIT))
    assert_problems(problems_of(states, events), ("'w'", "no deadline"), ("'w'", "on_deadline"))


@pytest.mark.parametrize("on_deadline", ["ask", "undeclared"])
def test_wait_state_whose_deadline_event_does_not_leave_it(on_deadline: str) -> None:
    states, events = wait_kind(State("w", 2, Role.WAIT, deadline=timedelta(minutes=1), on_deadline=on_deadline))
    assert_problems(problems_of(states, events), ("wait state 'w'", repr(on_deadline), "does not leave 'w'"))


def test_wait_state_deadline_may_fire_a_self_loop_to_retry() -> None:
    wait = State("w", 2, Role.WAIT, deadline=timedelta(minutes=1), on_deadline="retry")
    states, events = wait_kind(wait, Event("retry", "w", "w"))
    kind = Kind("k", states=states, events=events, initial="a")
    assert kind.target("w", "retry") == "w"


def _refuse(subject: object) -> bool:
    return False


def test_a_guarded_deadline_event_is_refused() -> None:
    # The engine fires it when nothing else can: a guard that refused would leave the wait stuck.
    wait = State("w", 2, Role.WAIT, deadline=timedelta(minutes=1), on_deadline="timeout")
    states, events = wait_kind(wait, Event("timeout", "w", "z", guard=_refuse))
    assert_problems(problems_of(states, events), ("'w'", "'timeout'", "at its deadline", "must not be guarded"))


def test_declaring_a_kind_whose_only_way_out_of_a_wait_at_its_deadline_is_guarded_raises() -> None:
    # A work state asks, the wait's deadline expires it into a final state: a guard refusing that
    # event would leave the resource waiting forever, so the kind cannot be declared at all.
    with pytest.raises(InvalidKind, match="must not be guarded"):
        Kind(
            "stuck",
            initial="todo",
            states=[
                State("todo", 1, Role.WORK, on_failure="fail"),
                State("awaiting", 2, Role.WAIT, deadline=timedelta(minutes=10), on_deadline="expire"),
                State("expired", 12, Role.FINAL),
            ],
            events=[
                Event("ask", "todo", "awaiting"),
                Event("fail", "todo", "expired"),
                Event("expire", "awaiting", "expired", guard=_refuse),
            ],
        )


def test_a_guarded_failure_event_is_refused() -> None:
    states = [State("a", 1), State("b", 2, Role.WORK, on_failure="fail"), State("z", 9, Role.FINAL)]
    events = [*base_events(), Event("fail", "b", "z", guard=_refuse)]
    assert_problems(problems_of(states, events), ("'b'", "'fail'", "when its step fails", "must not be guarded"))


def test_a_failure_event_guarded_only_from_another_state_is_accepted() -> None:
    states = [State("a", 1), State("b", 2, Role.WORK, on_failure="fail"), State("z", 9, Role.FINAL)]
    events = [*base_events(), Event("fail", "b", "z"), Event("fail", "a", "z", guard=_refuse)]
    kind = Kind("k", states=states, events=events, initial="a")
    assert kind.state("b").on_failure == "fail"


@pytest.mark.parametrize(("name", "role"), [("a", Role.REST), ("b", Role.WORK), ("z", Role.FINAL)])
def test_deadline_on_a_non_wait_state(name: str, role: Role) -> None:
    states = [
        State(s.name, s.code, s.role, deadline=timedelta(seconds=5)) if s.name == name else s for s in base_states()
    ]
    assert states[[s.name for s in states].index(name)].role is role
    problems = problems_of(states, base_events())
    assert_problems(problems, (f"'{name}'", f"is a {role.value} state", "only wait states have a deadline"))


def test_on_deadline_on_a_non_wait_state() -> None:
    states = [State("a", 1, on_deadline="go"), State("b", 2, Role.WORK), State("z", 9, Role.FINAL)]
    assert_problems(problems_of(states, base_events()), ("'a'", "only wait states have a deadline"))


def test_wait_deadline_given_as_a_number_is_refused_with_invalid_kind() -> None:
    # A plausible mistake (seconds instead of a timedelta) must be reported, not crash with AttributeError.
    states, events = wait_kind(State("w", 2, Role.WAIT, deadline=60, on_deadline="expire"))  # type: ignore[arg-type]
    problems = problems_of(states, events)
    assert_has_problem(problems, "'w'", "deadline")


# --- all problems at once ------------------------------------------------------------------------


def test_all_declaration_problems_are_listed_together() -> None:
    states = [State("a", 1), State("b b", 2, Role.WORK), State("z", 2, Role.FINAL), State("n", -3)]
    events = [Event("go", "a", "b b"), Event("end", "b b", "z"), Event("fly", "a", "sky"), Event("@x", "ghost", "z")]
    problems = problems_of(states, events, initial="a")
    assert_problems(
        problems,
        ("state name 'b b'", "not a valid name"),
        ("duplicate state code 2", "'b b'", "'z'"),
        ("'n'", "code -3"),
        ("'fly'", "unknown target state 'sky'"),
        ("event name '@x'", "not a valid name"),
        ("'@x'", "unknown source state 'ghost'"),
    )


def test_all_graph_problems_are_listed_together() -> None:
    states = [
        State("a", 1),
        State("b", 2, Role.WORK),
        State("w", 3, Role.WAIT),
        State("stuck", 4),
        State("island", 5),
        State("timed", 6, deadline=timedelta(seconds=1)),
        State("z", 9, Role.FINAL),
    ]
    events = [
        Event("go", "a", "b"),
        Event("go", "a", "z"),
        Event("end", "b", "z"),
        Event("ask", "b", "w"),
        Event("answer", "w", "z"),
        Event("jam", "a", "stuck"),
        Event("leave", "island", "z"),
        Event("revive", "z", "a"),
        Event("tick", "a", "timed"),
        Event("tock", "timed", "a"),
    ]
    problems = problems_of(states, events)
    assert_problems(
        problems,
        ("'go'", "two targets", "'a'"),
        ("final state 'z'", "'revive'"),
        ("wait state 'w'", "no deadline"),
        ("wait state 'w'", "on_deadline"),
        ("'stuck'", "dead end"),
        ("'island'", "unreachable"),
        ("'timed'", "only wait states have a deadline"),
    )


def test_declaration_problems_do_not_hide_graph_problems() -> None:
    # A duplicate code says nothing about the graph: the unreachable state and the dead end are
    # still there and must be listed in the same InvalidKind.
    states = [*base_states(), State("island", 2), State("stuck", 7)]
    events = [*base_events(), Event("leave", "island", "z"), Event("jam", "a", "stuck")]
    problems = problems_of(states, events)
    assert_has_problem(problems, "duplicate state code 2")
    assert_has_problem(problems, "'island'", "unreachable")
    assert_has_problem(problems, "'stuck'", "dead end")


def test_invalid_kind_message_lists_every_problem() -> None:
    states = [*base_states(), State("island", 5), State("stuck", 6)]
    events = [*base_events(), Event("leave", "island", "z"), Event("jam", "a", "stuck")]
    with pytest.raises(InvalidKind) as info:
        Kind("shop", states=states, events=events, initial="a")
    err = info.value
    assert isinstance(err, TenureError)
    assert err.kind == "shop"
    assert len(err.problems) == 2
    text = str(err)
    assert text.startswith("kind 'shop' is invalid:")
    for problem in err.problems:
        assert f"\n  - {problem}" in text
    assert err.facts() == {"kind": "shop", "problems": err.problems}


# --- valid edge cases ----------------------------------------------------------------------------


def test_same_event_with_different_sources_is_merged() -> None:
    states = [State("a", 1), State("b", 2, Role.WORK), State("c", 3), State("failed", 8, Role.FINAL)]
    events = [
        Event("next", "a", "b"),
        Event("next", "b", "c"),
        Event("fail", "a", "failed"),
        Event("fail", "b", "failed"),
        Event("fail", "c", "failed"),
    ]
    kind = Kind("k", states=states, events=events, initial="a")
    assert kind.event_names == ("next", "fail")
    assert kind.target("a", "next") == "b"
    assert kind.target("b", "next") == "c"
    assert kind.sources("next") == ("a", "b")
    assert kind.sources("fail") == ("a", "b", "c")


def test_any_expands_to_every_non_final_state() -> None:
    states = [
        State("a", 1),
        State("b", 2, Role.WORK),
        State("w", 3, Role.WAIT, deadline=timedelta(seconds=5), on_deadline="cancel"),
        State("done", 8, Role.FINAL),
        State("cancelled", 9, Role.FINAL),
    ]
    events = [
        Event("start", "a", "b"),
        Event("park", "b", "w"),
        Event("finish", "w", "done"),
        Event("cancel", ANY, "cancelled"),
    ]
    kind = Kind("k", states=states, events=events, initial="a")
    assert kind.sources("cancel") == ("a", "b", "w")
    for name in ("a", "b", "w"):
        assert kind.target(name, "cancel") == "cancelled"
    assert not kind.allows("done", "cancel")
    assert not kind.allows("cancelled", "cancel")


def test_any_mixed_with_explicit_sources_has_no_duplicates() -> None:
    events = [*base_events(), Event("reset", [ANY, "a"], "a")]
    kind = Kind("k", states=base_states(), events=events, initial="a")
    assert kind.sources("reset") == ("a", "b")


def test_self_loops_are_accepted() -> None:
    events = [*base_events(), Event("poke", "a", "a"), Event("poke", "b", "b")]
    kind = Kind("k", states=base_states(), events=events, initial="a")
    assert kind.target("a", "poke") == "a"
    assert kind.target("b", "poke") == "b"


def test_pure_cycle_without_final_state_is_accepted() -> None:
    states = [State("red", 1), State("green", 2), State("yellow", 3)]
    events = [Event("next", "red", "green"), Event("next", "green", "yellow"), Event("next", "yellow", "red")]
    kind = Kind("traffic_light", states=states, events=events, initial="red")
    assert kind.states_with_role(Role.FINAL) == ()
    state = "red"
    seen = []
    for _ in range(6):
        state = kind.target(state, "next")
        seen.append(state)
    assert seen == ["green", "yellow", "red", "green", "yellow", "red"]


def test_single_final_state_without_events_is_a_valid_kind() -> None:
    kind = Kind("k", states=[State("done", 1, Role.FINAL)], events=[], initial="done")
    assert kind.initial.is_final
    assert kind.event_names == ()


def test_an_edge_declared_twice_with_a_guard_is_refused() -> None:
    events = [*base_events(), Event("go", "a", "b", guard=lambda subject: True)]
    assert_problems(problems_of(base_states(), events), ("'go'", "declared twice from state 'a'", "guard"))
