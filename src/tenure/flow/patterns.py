"""Patterns that arrange tasks into flows, and the retry controllers that guard a subflow.

* :func:`linear` runs its items one after another;
* :func:`graph` orders its items by what they require and provide (plus explicit ``links``);
* :func:`unordered` runs its items independently, concurrently where it can.

Items are tasks or other flows, nested as deep as needed. A flow's ``retry`` controller catches a
failure inside it, reverts what the flow had done, and runs it again — the same way (``Retry``)
or with a new value for one of its inputs (``Retry(reschedule=...)``: another host, another zone).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tenure.flow.task import Failure, Task

__all__ = ["Flow", "Pattern", "Reschedule", "Retry", "graph", "linear", "unordered"]


class Pattern(enum.Enum):
    LINEAR = "linear"
    GRAPH = "graph"
    UNORDERED = "unordered"


@dataclass(frozen=True, slots=True)
class Reschedule:
    """On a retry, give the flow value ``parameter`` a new value.

    ``values`` is a list tried in order (the first retry takes ``values[0]``), or a function of
    ``(retry number, failure, the run's current values)`` returning the next value, or None when
    there is nowhere left to go.
    """

    parameter: str
    values: Sequence[Any] | Callable[[int, Failure, Mapping[str, Any]], Any]

    def next_value(self, retry: int, failure: Failure, values: Mapping[str, Any]) -> tuple[bool, Any]:
        """(found, value) for retry number ``retry`` (1-based)."""
        if callable(self.values):
            value = self.values(retry, failure, MappingProxyType(dict(values)))
            return value is not None, value
        if retry <= len(self.values):
            return True, self.values[retry - 1]
        return False, None


@dataclass(frozen=True, slots=True)
class Retry:
    """Run a subflow again when it fails with one of ``on``, up to ``times`` more times.

    Waits ``delay * 2**(n-1)`` seconds (capped at ``max_delay``, with up to ``jitter`` of it added
    at random) before retry ``n``.
    """

    times: int = 3
    on: tuple[type[BaseException], ...] = (Exception,)
    delay: float = 0.0
    max_delay: float = 30.0
    jitter: float = 0.1
    reschedule: Reschedule | None = None

    def applies_to(self, failure: Failure) -> bool:
        return failure.matches(*self.on)

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        if self.delay <= 0:
            return 0.0
        base = min(self.max_delay, self.delay * 2 ** (retry - 1))
        return float(base + base * self.jitter * (rng or random).random())


@dataclass(frozen=True, slots=True, eq=False)
class Flow:
    """A named arrangement of tasks and subflows."""

    name: str
    items: tuple[Task | Flow, ...]
    pattern: Pattern = Pattern.LINEAR
    links: tuple[tuple[str, str], ...] = ()
    retry: Retry | None = None
    #: Bump when the flow's meaning changes: stored runs of another version are not resumed blindly.
    version: int = 1
    description: str = field(default="", compare=False)

    def walk(self) -> list[Task]:
        """Every task in the flow, depth first, in declaration order."""
        out: list[Task] = []
        for item in self.items:
            out.extend(item.walk() if isinstance(item, Flow) else [item])
        return out


def linear(name: str, *items: Task | Flow, retry: Retry | None = None, version: int = 1) -> Flow:
    """Items run one after another, in the order given."""
    return Flow(name, tuple(items), Pattern.LINEAR, retry=retry, version=version)


def graph(
    name: str,
    *items: Task | Flow,
    links: Sequence[tuple[str, str]] = (),
    retry: Retry | None = None,
    version: int = 1,
) -> Flow:
    """Items ordered by data (an item runs after the items providing what it requires) and ``links``."""
    return Flow(name, tuple(items), Pattern.GRAPH, links=tuple(links), retry=retry, version=version)


def unordered(name: str, *items: Task | Flow, retry: Retry | None = None, version: int = 1) -> Flow:
    """Independent items, run concurrently when possible."""
    return Flow(name, tuple(items), Pattern.UNORDERED, retry=retry, version=version)
