"""Delayed calls: run in order of when they are due, bounded, and lost on purpose by drop and close."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tenure.engine.delayed import Delayed


@pytest.fixture
def timers() -> Iterator[Delayed]:
    made = Delayed(limit=3)
    yield made
    made.close()


def test_calls_run_when_they_are_due(timers: Delayed) -> None:
    ran: list[str] = []
    both = threading.Event()

    def record(name: str) -> None:
        ran.append(name)
        if len(ran) == 2:
            both.set()

    assert timers.call_later(0.2, lambda: record("late"))
    assert timers.call_later(0.0, lambda: record("soon"))

    assert both.wait(5)
    assert ran == ["soon", "late"]
    assert timers.pending == 0


def test_at_most_limit_calls_wait_and_a_refused_one_is_not_kept(timers: Delayed) -> None:
    assert all(timers.call_later(60, lambda: None) for _ in range(3))
    assert not timers.call_later(60, lambda: None)
    assert timers.pending == 3


def test_drop_forgets_the_waiting_calls_as_a_dead_process_would(timers: Delayed) -> None:
    ran = threading.Event()
    timers.call_later(0.1, ran.set)

    assert timers.drop() == 1

    assert not ran.wait(0.3)
    assert timers.call_later(0.0, ran.set)
    assert ran.wait(5)


def test_a_failing_call_does_not_stop_the_others(timers: Delayed) -> None:
    ran = threading.Event()

    def fail() -> None:
        raise RuntimeError("boom")

    timers.call_later(0.0, fail)
    timers.call_later(0.01, ran.set)

    assert ran.wait(5)


def test_a_closed_timer_refuses_calls() -> None:
    timers = Delayed()
    timers.call_later(60, lambda: None)
    timers.close()
    assert timers.pending == 0
    assert not timers.call_later(0, lambda: None)
    with pytest.raises(ValueError, match="at least 1"):
        Delayed(limit=0)
