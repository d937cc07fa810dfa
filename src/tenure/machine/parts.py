"""The parts a kind is declared from: roles, states, events and the transitions they expand to."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

__all__ = ["ANY", "Event", "Guard", "Role", "State", "Subject", "Transition"]

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
