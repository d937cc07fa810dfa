"""Group commit: writes that arrive while a transaction commits share the next transaction.

A commit waits for the disk to flush; one flush per write caps a store at a few hundred writes a
second whatever the processor could do. Here the writes of many threads are queued, and whichever
thread finds no transaction running leads: it takes everything queued (up to a bound), runs each
write in one transaction on its own connection, commits once, hands each waiting thread its own
answer, and wakes the first thread still waiting to lead the next batch. Each write is still its own
compare-and-swap with its own journal row, decided alone (a write refused or failing leaves the
others in the batch as they are: the dialect runs each in a savepoint, or runs the batch again write
by write); only the flush is shared. A thread alone runs its write at once, as before.

Nothing is acknowledged before the commit that made it durable: a caller returns after the
transaction holding its write committed, or with the error that stopped it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["MAX_BATCH", "GroupCommit", "Queued"]

#: The most writes one transaction takes.
MAX_BATCH = 64

C = TypeVar("C")


class Queued(Generic[C]):
    """One write waiting for a transaction: ``unit(conn)`` gives its answer (or raises)."""

    __slots__ = ("_wake", "done", "error", "key", "result", "unit")

    def __init__(self, unit: Callable[[C], Any], key: str = "") -> None:
        self.unit = unit
        #: What the unit writes (a resource id): a dialect may order a batch by it.
        self.key = key
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        # Held until the unit's thread is woken: its unit is done, or it is to lead the next batch.
        self._wake = threading.Lock()
        self._wake.acquire()

    def answer(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit(Generic[C]):
    """Runs units of work from many threads in shared transactions (see the module's docstring).

    ``run_batch`` is the dialect's: it runs every unit of the batch in one transaction, setting each
    one's ``result`` or ``error``, and raises if the transaction itself failed (then every unit of
    the batch that has no error gets that one).
    """

    def __init__(self, run_batch: Callable[[Sequence[Queued[C]]], None], *, max_batch: int = MAX_BATCH) -> None:
        self._run_batch = run_batch
        self._max = max_batch
        self._lock = threading.Lock()
        self._queue: list[Queued[C]] = []
        self._leading = False
        #: Transactions committed, and units they carried (for benchmarks and tests).
        self.transactions = 0
        self.units = 0

    @property
    def transactions_running(self) -> int:
        """1 while a batch's transaction runs, else 0."""
        with self._lock:
            return int(self._leading)

    @property
    def waiting(self) -> int:
        """Units queued for the next transaction (not counting the one running)."""
        with self._lock:
            return len(self._queue)

    def submit(self, unit: Callable[[C], Any], *, key: str = "") -> Any:
        """Run ``unit`` in the next transaction and return its answer once that transaction committed."""
        mine = Queued(unit, key)
        with self._lock:
            self._queue.append(mine)
            lead = not self._leading
            self._leading = True
        if not lead:
            # Each waiting thread sleeps on its own lock, woken once: when its unit is done, or to
            # lead the next batch (its unit is then the first queued). A shared condition woke every
            # waiting thread at each commit, most of them to go back to sleep.
            mine._wake.acquire()
            if mine.done:
                return mine.answer()
        with self._lock:
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
        try:
            self._run_batch(batch)
        except BaseException as exc:
            for item in batch:
                if item.error is None:
                    item.error = exc
        finally:
            with self._lock:
                for item in batch:
                    item.done = True
                self.transactions += 1
                self.units += len(batch)
                following = self._queue[0] if self._queue else None
                self._leading = following is not None
            for item in batch:
                if item is not mine:
                    item._wake.release()
            if following is not None:
                following._wake.release()
        return mine.answer()
