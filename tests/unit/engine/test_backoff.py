"""Backoff policies of work states, and the validation of on_failure and retry on a kind's states.

The delay before the next attempt is ``min(base * factor ** (n - 1), cap)``, spread by jitter over
``[delay * (1 - jitter), delay]``; a policy that ``problems()`` accepts must never make ``delay``
raise, whatever the attempt number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenure.errors import InvalidKind
from tenure.machine import Backoff, Event, Kind, Role, State
from tenure.machine.parts import DEFAULT_BACKOFF

#: Rounding a float number of seconds to whole microseconds moves a delay by at most this much.
ROUNDING = timedelta(microseconds=1)


def expected_raw(b: Backoff, failed: int) -> float:
    """``min(base * factor ** (failed - 1), cap)`` in seconds, computed without overflowing."""
    exponent = max(0, failed - 1)
    base, cap = b.base.total_seconds(), b.cap.total_seconds()
    if base == 0:
        return 0.0
    if b.factor > 1 and math.log(base) + exponent * math.log(b.factor) >= math.log(cap):
        return cap
    return min(base * b.factor**exponent, cap)


# --- strategies ------------------------------------------------------------------------------------

MILLIS = st.integers(min_value=0, max_value=10 * 24 * 3600 * 1000)


@st.composite
def policies(draw: st.DrawFn, *, jitter: float | None = None) -> Backoff:
    """Usable policies with delays up to ten days (far from timedelta's limits)."""
    base = timedelta(milliseconds=draw(MILLIS))
    cap = base + timedelta(milliseconds=draw(MILLIS))
    factor = draw(st.floats(min_value=1.0, max_value=10.0, allow_nan=False))
    j = draw(st.floats(min_value=0.0, max_value=1.0)) if jitter is None else jitter
    policy = Backoff(max_attempts=draw(st.integers(1, 100)), base=base, factor=factor, cap=cap, jitter=j)
    assert policy.problems() == []
    return policy


RAND = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


# --- delays ----------------------------------------------------------------------------------------


def test_documented_doubling_and_cap() -> None:
    b = Backoff(max_attempts=10, base=timedelta(seconds=1), factor=2, cap=timedelta(seconds=10), jitter=0)
    assert [b.delay(n, 0.3) for n in range(1, 8)] == [timedelta(seconds=s) for s in (1, 2, 4, 8, 10, 10, 10)]


def test_first_failure_and_zero_failures_wait_the_base() -> None:
    b = Backoff(base=timedelta(seconds=3), factor=5, cap=timedelta(minutes=10), jitter=0)
    assert b.delay(0, 0.0) == b.delay(1, 0.9) == timedelta(seconds=3)


def test_jitter_spreads_over_the_lower_part_of_the_delay() -> None:
    b = Backoff(base=timedelta(seconds=8), factor=2, cap=timedelta(minutes=1), jitter=0.25)
    assert b.delay(1, 0.0) == timedelta(seconds=6)
    assert b.delay(1, 0.5) == timedelta(seconds=7)
    assert b.delay(2, 0.0) == timedelta(seconds=12)


def test_full_jitter_may_retry_at_once() -> None:
    assert Backoff(jitter=1.0).delay(3, 0.0) == timedelta(0)


def test_default_policy() -> None:
    assert Backoff() == DEFAULT_BACKOFF
    assert DEFAULT_BACKOFF.problems() == []
    assert (DEFAULT_BACKOFF.max_attempts, DEFAULT_BACKOFF.base, DEFAULT_BACKOFF.cap) == (
        5,
        timedelta(seconds=1),
        timedelta(minutes=5),
    )


@given(policies(), st.integers(min_value=0, max_value=61), RAND)
def test_delay_lies_in_the_jitter_window_below_the_capped_delay(b: Backoff, failed: int, rand: float) -> None:
    d = timedelta(seconds=expected_raw(b, failed))
    got = b.delay(failed, rand)
    assert got <= d + ROUNDING
    assert got >= d * (1 - b.jitter) - ROUNDING
    assert got <= b.cap


@given(policies(), st.integers(min_value=0, max_value=10**12), RAND)
def test_delay_never_exceeds_the_cap_nor_overflows(b: Backoff, failed: int, rand: float) -> None:
    got = b.delay(failed, rand)
    assert timedelta(0) <= got <= b.cap


@given(policies(jitter=0.0), st.integers(min_value=0, max_value=200), RAND, RAND)
def test_without_jitter_delays_never_shrink_and_ignore_the_draw(b: Backoff, failed: int, r1: float, r2: float) -> None:
    assert b.delay(failed, r1) == b.delay(failed, r2)
    assert b.delay(failed, r1) <= b.delay(failed + 1, r1)


@given(policies(), st.integers(min_value=0, max_value=200), RAND, RAND)
def test_a_larger_draw_never_waits_less(b: Backoff, failed: int, r1: float, r2: float) -> None:
    low, high = sorted((r1, r2))
    assert b.delay(failed, low) <= b.delay(failed, high)


@pytest.mark.parametrize("failed", [10**3, 10**9, 10**18])
def test_huge_attempt_numbers_wait_the_cap(failed: int) -> None:
    b = Backoff(base=timedelta(seconds=1), factor=2, cap=timedelta(hours=1), jitter=0)
    assert b.delay(failed, 0.5) == timedelta(hours=1)


@pytest.mark.parametrize("factor", [1.0, 1.01])
def test_slow_growth_is_not_cut_short_after_sixty_attempts(factor: float) -> None:
    b = Backoff(max_attempts=1000, base=timedelta(seconds=10), factor=factor, cap=timedelta(minutes=5), jitter=0)
    expected = timedelta(seconds=10 * factor**61)
    assert abs(b.delay(62, 0.5) - expected) <= ROUNDING


@pytest.mark.parametrize(("factor", "failed"), [(1e6, 60), (1e6, 61), (1e200, 3)])
def test_large_factors_are_capped_instead_of_overflowing(factor: float, failed: int) -> None:
    b = Backoff(base=timedelta(seconds=1), factor=factor, cap=timedelta(minutes=5), jitter=0)
    assert b.problems() == []
    assert b.delay(failed, 0.5) == timedelta(minutes=5)


# --- policy problems -----------------------------------------------------------------------------


def one_problem(b: Backoff) -> str:
    problems = b.problems()
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_max_attempts_must_be_a_positive_integer(bad: Any) -> None:
    assert one_problem(Backoff(max_attempts=bad)) == f"max_attempts is {bad!r}; it must be an integer >= 1"


def test_base_must_be_a_non_negative_timedelta() -> None:
    neg = timedelta(seconds=-1)
    assert one_problem(Backoff(base=neg)) == f"base is {neg!r}; it must be a timedelta >= 0"
    assert one_problem(Backoff(base=5, cap=timedelta(1))) == "base is 5; it must be a timedelta >= 0"  # type: ignore[arg-type]


def test_cap_must_be_a_timedelta_not_below_the_base() -> None:
    base, cap = timedelta(seconds=10), timedelta(seconds=9)
    assert one_problem(Backoff(base=base, cap=cap)) == f"cap is {cap!r}; it must be a timedelta >= base"
    assert one_problem(Backoff(cap=60)) == "cap is 60; it must be a timedelta >= base"  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0.99, 0, -2, "2"])
def test_factor_must_be_a_number_of_at_least_one(bad: Any) -> None:
    assert one_problem(Backoff(factor=bad)) == f"factor is {bad!r}; it must be a number >= 1"


@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan, "0.5"])
def test_jitter_must_lie_between_zero_and_one(bad: Any) -> None:
    assert one_problem(Backoff(jitter=bad)) == f"jitter is {bad!r}; it must be between 0 and 1"


def test_boundary_values_are_usable() -> None:
    b = Backoff(max_attempts=1, base=timedelta(0), factor=1, cap=timedelta(0), jitter=1)
    assert b.problems() == []
    assert b.delay(5, 0.7) == timedelta(0)
    assert Backoff(base=timedelta(seconds=7), cap=timedelta(seconds=7), jitter=0).problems() == []


def test_every_problem_is_listed_at_once() -> None:
    b = Backoff(max_attempts=0, base=timedelta(seconds=-1), factor=0.5, cap=timedelta(seconds=-2), jitter=2)
    problems = b.problems()
    assert [p.split(" is ")[0] for p in problems] == ["max_attempts", "base", "cap", "factor", "jitter"]


def test_a_nan_factor_is_a_problem() -> None:
    b = Backoff(factor=math.nan)
    assert b.problems() == [f"factor is {math.nan!r}; it must be a number >= 1"]


# --- on_failure and retry on a kind's states -----------------------------------------------------


def kind_problems(states: Sequence[State], events: Sequence[Event]) -> tuple[str, ...]:
    with pytest.raises(InvalidKind) as info:
        Kind("k", states=states, events=events, initial="todo")
    return info.value.problems


EVENTS = [
    Event("start", "todo", "working"),
    Event("finish", "working", "done"),
    Event("give_up", "working", "failed"),
]


def states_with(working: State, todo: State | None = None) -> list[State]:
    return [
        todo or State("todo", 1),
        working,
        State("done", 8, Role.FINAL),
        State("failed", 9, Role.FINAL),
    ]


def test_a_work_state_may_declare_on_failure_and_retry() -> None:
    policy = Backoff(max_attempts=3, base=timedelta(seconds=2), cap=timedelta(seconds=30))
    k = Kind(
        "k",
        states=states_with(State("working", 2, Role.WORK, on_failure="give_up", retry=policy)),
        events=EVENTS,
        initial="todo",
    )
    assert k.state("working").on_failure == "give_up"
    assert k.state("working").backoff is policy


def test_a_work_state_without_retry_uses_the_default_policy() -> None:
    k = Kind("k", states=states_with(State("working", 2, Role.WORK)), events=EVENTS, initial="todo")
    assert k.state("working").backoff == DEFAULT_BACKOFF


def test_on_failure_must_leave_the_work_state() -> None:
    problems = kind_problems(states_with(State("working", 2, Role.WORK, on_failure="start")), EVENTS)
    assert problems == (
        "work state 'working' fires 'start' when its step fails, but that event does not leave 'working'",
    )


def test_on_failure_naming_no_event_at_all() -> None:
    problems = kind_problems(states_with(State("working", 2, Role.WORK, on_failure="explode")), EVENTS)
    assert problems == (
        "work state 'working' fires 'explode' when its step fails, but that event does not leave 'working'",
    )


def test_a_bad_retry_policy_lists_each_of_its_problems() -> None:
    bad = Backoff(max_attempts=0, jitter=3)
    problems = kind_problems(states_with(State("working", 2, Role.WORK, retry=bad)), EVENTS)
    assert problems == (
        "work state 'working' retry policy: max_attempts is 0; it must be an integer >= 1",
        "work state 'working' retry policy: jitter is 3; it must be between 0 and 1",
    )


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ({"on_failure": "give_up"}, "state 'working' is a wait state; only work states have on_failure"),
        ({"retry": Backoff()}, "state 'working' is a wait state; only work and rest states have a retry policy"),
    ],
)
def test_wait_states_have_no_on_failure_or_retry(field: dict[str, Any], problem: str) -> None:
    working = State("working", 2, Role.WAIT, deadline=timedelta(minutes=1), on_deadline="finish", **field)
    assert kind_problems(states_with(working), EVENTS) == (problem,)


def test_a_rest_state_may_say_how_the_step_that_leaves_it_retries() -> None:
    resting = State("working", 2, Role.REST, retry=Backoff(max_attempts=3))
    kind = Kind("k", states=states_with(resting), events=EVENTS, initial="todo")
    assert kind.state("working").backoff.max_attempts == 3


def test_a_rest_state_has_no_on_failure_its_steps_failure_gives_the_wish_up() -> None:
    resting = State("working", 2, Role.REST, on_failure="give_up")
    problems = kind_problems(states_with(resting), EVENTS)
    assert problems == ("state 'working' is a rest state; only work states have on_failure",)


def test_a_final_state_may_not_declare_on_failure() -> None:
    states = [State("todo", 1, Role.WORK), State("done", 8, Role.FINAL, on_failure="start")]
    problems = kind_problems(states, [Event("start", "todo", "done")])
    assert problems == ("state 'done' is a final state; only work states have on_failure",)


def test_a_bad_policy_on_a_rest_state_is_reported() -> None:
    working = State("working", 2, Role.REST, retry=Backoff(max_attempts=0))
    problems = kind_problems(states_with(working), EVENTS)
    assert problems == ("rest state 'working' retry policy: max_attempts is 0; it must be an integer >= 1",)
