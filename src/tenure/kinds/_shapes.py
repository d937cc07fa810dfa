"""The shapes the built-in kinds' states share: work states that retry, wait states that ask again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from tenure.machine import Backoff, Role, State

__all__ = ["DEFAULT_RETRY", "Shapes"]

#: How a built-in kind's work state retries unless told otherwise: 8 attempts, 1 s doubling up to 2 min.
DEFAULT_RETRY = Backoff(max_attempts=8, base=timedelta(seconds=1), cap=timedelta(minutes=2))


@dataclass(frozen=True, slots=True)
class Shapes:
    """Work states with ``retry``, and wait states whose ``deadline`` fires the event that asks again."""

    retry: Backoff
    deadline: timedelta

    def work(self, name: str, code: int, on_failure: str, description: str, *, deprecated: bool = False) -> State:
        return State(
            name,
            code,
            Role.WORK,
            on_failure=on_failure,
            retry=self.retry,
            description=description,
            deprecated=deprecated,
        )

    def wait(self, name: str, code: int, on_deadline: str, description: str, *, deprecated: bool = False) -> State:
        return State(
            name,
            code,
            Role.WAIT,
            deadline=self.deadline,
            on_deadline=on_deadline,
            description=description,
            deprecated=deprecated,
        )
