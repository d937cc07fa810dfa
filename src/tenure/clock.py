"""Time, injected: production code asks a :data:`Clock` for the time instead of reading it directly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "system_clock"]

#: A callable returning the current time as an aware UTC datetime.
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The machine's clock, in UTC."""
    return datetime.now(UTC)
