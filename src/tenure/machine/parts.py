"""The parts a kind is declared from: roles, states, events and the transitions they expand to."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

__all__ = ["ANY", "Backoff", "Event", "Guard", "Role", "State", "Subject", "Transition"]

#: Use as an event's sources to mean "every state that is not final".
ANY = "*"

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}")


def valid_name(name: object) -> bool:
    """Whether ``name`` may name a kind, state or event (``@`` and spaces are reserved)."""
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


class Role(enum.Enum):
    """What the engine does with a resource in a state."""

    #: The engine acts: it runs the state's step and moves on.
    WORK = "work"
    #: The engine waits for a callback or event, up to a declared deadline.
    WAIT = "wait"
    #: Stable until a client asks for something.
    REST = "rest"
    #: Nothing leaves it.
    FINAL = "final"


class Subject(Protocol):
    """What a guard may look at: a resource as it is before the transition."""

    @property
    def state(self) -> str: ...

    @property
    def spec(self) -> Mapping[str, Any]: ...

    @property
    def data(self) -> Mapping[str, Any]: ...


#: A guard decides from the resource whether an event that the graph allows may happen now.
Guard = Callable[[Subject], bool]


@dataclass(frozen=True, slots=True)
class Backoff:
    """How a work state's step is retried: at most ``max_attempts`` runs, with capped exponential backoff.

    The delay before attempt ``n + 1`` (after ``n`` failed attempts) is ``base * factor ** (n - 1)``,
    capped at ``cap``, then spread by ``jitter``: the delay is drawn uniformly from
    ``[delay * (1 - jitter), delay]``, so many resources failing together do not retry together.

    >>> b = Backoff(max_attempts=5, base=timedelta(seconds=1), cap=timedelta(seconds=10), jitter=0)
    >>> [b.delay(n, 0.5).total_seconds() for n in (1, 2, 3, 4, 5)]
    [1.0, 2.0, 4.0, 8.0, 10.0]
    >>> Backoff(jitter=0.5).delay(1, 0.0).total_seconds(), Backoff(jitter=0.5).delay(1, 1.0).total_seconds()
    (0.5, 1.0)
    """

    max_attempts: int = 5
    base: timedelta = timedelta(seconds=1)
    factor: float = 2.0
    cap: timedelta = timedelta(minutes=5)
    jitter: float = 0.5

    def delay(self, failed_attempts: int, rand: float) -> timedelta:
        """The pause after ``failed_attempts`` failures; ``rand`` is a uniform draw from [0, 1)."""
        exponent = max(0, failed_attempts - 1)
        base = self.base.total_seconds()
        try:
            # float(): an int factor would make a huge exact integer of a huge attempt count.
            raw = base * float(self.factor) ** exponent
        except OverflowError:
            raw = math.inf if base > 0 else 0.0
        capped = min(raw, self.cap.total_seconds())
        return timedelta(seconds=capped * (1 - self.jitter + self.jitter * rand))

    def problems(self) -> list[str]:
        """What is wrong with this policy (empty when it is usable)."""
        out = []
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            out.append(f"max_attempts is {self.max_attempts!r}; it must be an integer >= 1")
        if not isinstance(self.base, timedelta) or self.base.total_seconds() < 0:
            out.append(f"base is {self.base!r}; it must be a timedelta >= 0")
        if not isinstance(self.cap, timedelta) or (isinstance(self.base, timedelta) and self.cap < self.base):
            out.append(f"cap is {self.cap!r}; it must be a timedelta >= base")
        if not isinstance(self.factor, int | float) or not math.isfinite(self.factor) or self.factor < 1:
            out.append(f"factor is {self.factor!r}; it must be a number >= 1")
        if not isinstance(self.jitter, int | float) or not math.isfinite(self.jitter) or not 0 <= self.jitter <= 1:
            out.append(f"jitter is {self.jitter!r}; it must be between 0 and 1")
        return out


#: The retry policy of a work state that declares none.
DEFAULT_BACKOFF = Backoff()


@dataclass(frozen=True, slots=True)
class State:
    """One state of a kind.

    ``code`` is stable and never reused: clients and dashboards may key on it. A ``WAIT`` state must
    have a ``deadline`` and name the event its expiry fires (``on_deadline``).

    >>> State("provisioning_requested", 250, Role.WAIT, deadline=timedelta(minutes=5),
    ...       on_deadline="provisioning_timed_out").role.value
    'wait'
    """

    name: str
    code: int
    role: Role = Role.REST
    deadline: timedelta | None = None
    on_deadline: str | None = None
    description: str = ""
    on_failure: str | None = None
    retry: Backoff | None = None
    #: Kept only so that resources already in it can finish: a newer version of the kind no longer
    #: has it (see the kind's evolution rules in the README). Shown in descriptions and diagrams.
    deprecated: bool = False

    @property
    def backoff(self) -> Backoff:
        """The state's retry policy (the default one if it declares none)."""
        return self.retry or DEFAULT_BACKOFF

    @property
    def is_final(self) -> bool:
        return self.role is Role.FINAL


@dataclass(frozen=True, slots=True, init=False)
class Event:
    """A named event moving a resource from any of ``sources`` to ``target``.

    ``sources`` may be one state name, several, or :data:`ANY` (every state that is not final).
    The same event name may be declared more than once with different sources, as long as no
    source is given two different targets.

    >>> Event("kill", ["queued", "saving"], "killed").sources
    ('queued', 'saving')
    """

    name: str
    sources: tuple[str, ...]
    target: str
    guard: Guard | None = field(default=None, compare=False)
    description: str = ""

    def __init__(
        self,
        name: str,
        sources: str | Iterable[str],
        target: str,
        *,
        guard: Guard | None = None,
        description: str = "",
    ) -> None:
        srcs = (sources,) if isinstance(sources, str) else tuple(sources)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "sources", srcs)
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "guard", guard)
        object.__setattr__(self, "description", description)


@dataclass(frozen=True, slots=True)
class Transition:
    """One edge of the compiled graph: ``event`` takes ``source`` to ``target``."""

    event: str
    source: str
    target: str
    guard: Guard | None = field(default=None, compare=False)

    def permits(self, subject: Subject | None) -> bool:
        """Whether the guard (if any) lets ``subject`` take this edge."""
        if self.guard is None:
            return True
        if subject is None:
            return False
        return bool(self.guard(subject))
