"""What a step ends in: exactly one of advance, wait, retry later, or fail.

A step returns an outcome (or raises); the worker applies it as one fenced write. Exceptions are
sorted into retryable and fatal: raise :class:`Retryable` or :class:`Fatal` to say which, or let the
step's registration decide by exception type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

__all__ = ["Advance", "Fail", "Fatal", "Outcome", "Reconcile", "RetryLater", "Retryable", "Wait"]


@dataclass(frozen=True, slots=True)
class Advance:
    """Fire ``event``, merging ``data`` into the resource's data.

    >>> Advance("provisioned", {"bucket": "b-1"}).event
    'provisioned'
    """

    event: str
    data: Mapping[str, Any] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Wait:
    """Fire ``event`` into a wait state and wait there for callbacks answering ``keys``.

    The callbacks must present the step's correlation token (``ctx.token``), which the step handed to
    the external party. When every key is answered ``done``, ``on_done`` fires (with the answers'
    data under ``data_key``); when any key answers ``failed``, ``on_failed`` fires; when every key is
    answered and some asked to be retried, ``on_retry`` fires (or ``on_failed`` if it is None). If no
    answer comes, the wait state's deadline fires its ``on_deadline`` event.
    """

    event: str
    keys: Sequence[str]
    on_done: str
    on_failed: str
    on_retry: str | None = None
    data_key: str = "callbacks"
    data: Mapping[str, Any] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)

    def rules(self) -> dict[str, Any]:
        return {"done": self.on_done, "failed": self.on_failed, "retry": self.on_retry, "data_key": self.data_key}


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Run the step again later (after ``delay``, or the state's backoff), recording ``error``.

    Counts as a failed attempt: once the state's ``max_attempts`` is spent, the state's ``on_failure``
    event fires instead. ``data`` (progress worth keeping, say) is merged into the resource's data.
    """

    error: str
    delay: timedelta | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fail:
    """Give up: fire ``event`` (default: the state's ``on_failure``) with ``error`` on the resource."""

    error: str
    event: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reconcile:
    """A rest state's step has no work to do for this wish: the engine goes the plain way.

    The worker then does what it does for a rest state without a step: it fires the first event of a
    shortest path towards the desired state, or gives the wish up when no way is left. Only a
    rest state's step may answer this.
    """


Outcome = Advance | Wait | RetryLater | Fail | Reconcile


class Retryable(Exception):
    """Raised by a step: this attempt failed, try again later (within the state's retry budget)."""

    def __init__(self, message: str, *, delay: timedelta | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class Fatal(Exception):
    """Raised by a step: retrying cannot help; the state's failure event fires now."""
