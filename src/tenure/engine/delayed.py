"""Calls run later, in memory: what an in-process stand-in for a slow external party needs.

:class:`Delayed` runs each call after its delay on one background thread. Nothing is written down:
a process that dies loses every call still waiting, which is what such a stand-in should show (the
engine's wait deadline then asks again). What it keeps is bounded: at most ``limit`` calls wait at
once, and :meth:`Delayed.call_later` says when one is refused.

>>> import threading
>>> done = threading.Event()
>>> timers = Delayed(limit=2)
>>> timers.call_later(0.0, done.set), done.wait(5)
(True, True)
>>> timers.close()
>>> timers.call_later(0.0, done.set)
False
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Delayed"]

log = logging.getLogger("tenure.engine.delayed")


class Delayed:
    """Runs calls after a delay on one daemon thread (started with the first call); at most ``limit`` wait.

    A call that raises is logged and forgotten. Safe to use from several threads.
    """

    def __init__(self, *, limit: int = 1000, name: str = "tenure-delayed") -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.name = name
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """How many calls wait to be run."""
        with self._changed:
            return len(self._heap)

    def call_later(self, delay: float, call: Callable[[], object]) -> bool:
        """Run ``call`` in ``delay`` seconds; False (and nothing kept) when ``limit`` calls already wait or closed."""
        with self._changed:
            if self._closed or len(self._heap) >= self.limit:
                return False
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._order), call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._changed.notify()
        return True

    def drop(self) -> int:
        """Forget every waiting call, as a process that dies would; returns how many were dropped."""
        with self._changed:
            dropped = len(self._heap)
            self._heap.clear()
            self._changed.notify()
        return dropped

    def close(self) -> None:
        """Drop the waiting calls and stop the thread; later calls are refused."""
        with self._changed:
            self._closed = True
            self._heap.clear()
            self._changed.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = None if not self._heap else self._heap[0][0] - time.monotonic()
                    self._changed.wait(timeout)
                if self._closed:
                    return
                _, _, call = heapq.heappop(self._heap)
            try:
                call()
            except Exception:
                log.exception("%s: a delayed call failed", self.name)
