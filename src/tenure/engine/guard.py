"""One round of an engine loop, guarded: a store outage or a bug is counted, logged and backed off.

The worker's loop and the deliverer's loop both run rounds until asked to stop; neither may die of an
error in one round, and neither should spin on one. :class:`RoundGuard` holds that rule for both.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from tenure.errors import StoreUnavailable

__all__ = ["RoundGuard"]

T = TypeVar("T")

#: The first pause after a failed round, and the longest one (it doubles in between).
FIRST_PAUSE = 0.05
MAX_PAUSE = 5.0


class ErrorCounts(Protocol):
    store_errors: int
    engine_errors: int


class RoundGuard:
    """Runs rounds for ``who`` (for the log), counting failures in ``stats`` and pausing on ``stopping``."""

    def __init__(self, who: str, stats: ErrorCounts, stopping: threading.Event, log: logging.Logger) -> None:
        self.who = who
        self.stats = stats
        self.stopping = stopping
        self.log = log
        self.pause = FIRST_PAUSE

    def run(self, round_: Callable[[], T]) -> T | None:
        """``round_()``, or None after a failure (logged, counted, and waited out with a growing pause)."""
        try:
            result = round_()
        except (StoreUnavailable, OSError) as exc:
            self.stats.store_errors += 1
            self.log.warning("%s: store unavailable (%s); retrying in %.2fs", self.who, exc, self.pause)
        except Exception:
            # A bug must not kill the loop silently: say so, back off, and go on.
            self.stats.engine_errors += 1
            self.log.exception("%s: unexpected error in its loop; retrying in %.2fs", self.who, self.pause)
        else:
            self.pause = FIRST_PAUSE
            return result
        self.stopping.wait(self.pause)
        self.pause = min(self.pause * 2, MAX_PAUSE)
        return None
