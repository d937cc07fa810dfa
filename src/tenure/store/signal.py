"""Wake-ups: how a worker learns that work appeared without polling the database for it.

Every store keeps a :class:`WorkSignal` that its own writes bump whenever they make work due (a
resource entering a work or wait state, a callback, a released claim). Writes made by other
processes reach it too where the database can say so: PostgreSQL's ``LISTEN/NOTIFY`` (a trigger
notifies on every such write, see migration 3), relayed by a :class:`Listener` thread that reconnects
by itself when the database restarts. Workers wait on the signal, with a polling fallback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Listener", "WorkSignal"]


class WorkSignal:
    """A counter that waiters can block on until it moves past the value they last saw.

    >>> s = WorkSignal()
    >>> seen = s.seq
    >>> s.notify()
    >>> s.wait(seen, timeout=0) > seen
    True
    """

    __slots__ = ("_callbacks", "_cond", "_seq")

    def __init__(self) -> None:
        # Re-entrant: a signal handler may notify while the thread it interrupted holds the lock.
        self._cond = threading.Condition(threading.RLock())
        self._seq = 0
        self._callbacks = 0

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def callbacks(self) -> int:
        """How many callbacks this process recorded: a busy worker applies them without waiting to re-plan."""
        return self._callbacks

    def notify(self, *, callback: bool = False) -> None:
        with self._cond:
            self._seq += 1
            self._callbacks += callback
            self._cond.notify_all()

    def wait(self, after: int, timeout: float) -> int:
        """Block until the counter passes ``after`` or ``timeout`` seconds pass; returns the counter."""
        with self._cond:
            if self._seq == after and timeout > 0:
                self._cond.wait_for(lambda: self._seq != after, timeout)
            return self._seq


class Listener:
    """A daemon thread that runs ``listen_once`` again and again, backing off while it fails.

    ``listen_once(stop)`` connects, subscribes, relays notifications until ``stop`` is set or the
    connection fails, and returns (or raises). After every (re)connection the signal is bumped once,
    because notifications sent while no one listened are lost and waiters should look for themselves.
    """

    def __init__(
        self,
        name: str,
        listen_once: Callable[[threading.Event, Callable[[], None]], None],
        signal: WorkSignal,
        *,
        max_backoff: float = 5.0,
    ) -> None:
        self._listen_once = listen_once
        self._signal = signal
        self._stop = threading.Event()
        self._max_backoff = max_backoff
        #: How often the connection was (re)established, and how often it failed.
        self.connects = 0
        self.failures = 0
        self.last_error: str | None = None
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _on_connected(self) -> None:
        self.connects += 1
        self.connected.set()
        self._signal.notify()

    def _run(self) -> None:
        pause = 0.05
        while not self._stop.is_set():
            try:
                self._listen_once(self._stop, self._on_connected)
                pause = 0.05
            except Exception as exc:  # any failure of the connection: reconnect after a pause
                self.failures += 1
                self.last_error = str(exc).strip() or type(exc).__name__
            self.connected.clear()
            if self._stop.wait(pause):
                return
            pause = min(pause * 2, self._max_backoff)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        self._thread.join(max(0.0, deadline - time.monotonic()))
