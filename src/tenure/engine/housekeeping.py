"""Housekeeping: the upkeep a worker does now and then between its passes, never on every one.

Two chores, each on its own schedule on the store's clock (injected in tests):

* **retention** — every :data:`PRUNE_EVERY`, prune what the :class:`~tenure.store.retention.RetentionPolicy`
  no longer keeps of finished resources' history, a bounded batch per transaction and at most
  ``batches`` batches per run; while a run stops on its bounds (more is due), the next one comes after
  :data:`CATCH_UP` instead, so a store with a backlog (retention just turned on) catches up in small
  steps between the engine's passes;
* **statistics** — when the worker starts, every :data:`STATISTICS_EVERY`, and once more when it
  stops, refresh the database's planner statistics (SQLite's ``PRAGMA optimize``, after analyzing any
  table with rows and no statistics; nothing on PostgreSQL).

A chore that fails (the database away, say) is logged and tried again at its next turn: housekeeping
never stops the engine's own work, nor makes its loop back off.
"""

from __future__ import annotations

from datetime import timedelta

from tenure.clock import Clock
from tenure.engine.logs import log
from tenure.errors import InvalidArgument, StoreUnavailable
from tenure.store.protocol import EngineStore
from tenure.store.retention import PruneReport, RetentionPolicy

__all__ = ["CATCH_UP", "PRUNE_EVERY", "STATISTICS_EVERY", "Housekeeping"]

#: How often a worker prunes when it has caught up.
PRUNE_EVERY = timedelta(minutes=1)
#: How soon it prunes again after a run that stopped on its bounds.
CATCH_UP = timedelta(seconds=1)
#: How often a worker refreshes the database's planner statistics.
STATISTICS_EVERY = timedelta(minutes=5)
#: Pruning batches in one run, at most (each is a few short transactions).
BATCHES_PER_RUN = 10


class Housekeeping:
    """Prunes by ``retention`` (None: keeps everything) and refreshes statistics for one worker.

    Call :meth:`due` on every pass (it only reads the clock) and :meth:`run` when it says so; call
    :meth:`close` when the worker stops. ``clock`` defaults to the store's.
    """

    def __init__(
        self,
        store: EngineStore,
        retention: RetentionPolicy | None = None,
        *,
        who: str = "housekeeping",
        prune_every: timedelta = PRUNE_EVERY,
        catch_up: timedelta = CATCH_UP,
        statistics_every: timedelta = STATISTICS_EVERY,
        batches: int = BATCHES_PER_RUN,
        clock: Clock | None = None,
    ) -> None:
        if retention is not None and not isinstance(retention, RetentionPolicy):
            raise InvalidArgument("retention", "must be a RetentionPolicy, or None to keep everything", retention)
        for name, value in (
            ("prune_every", prune_every),
            ("catch_up", catch_up),
            ("statistics_every", statistics_every),
        ):
            if value <= timedelta(0):
                raise InvalidArgument(name, "must be a positive duration", value)
        if batches < 1:
            raise InvalidArgument("batches", "must be at least 1", batches)
        self.store = store
        self.retention = retention if retention is not None and retention.prunes else None
        self.who = who
        self.prune_every, self.catch_up, self.statistics_every = prune_every, catch_up, statistics_every
        self.batches = batches
        self._clock = clock or store.now
        now = self._clock()
        self._seen = now
        # Both start at once: pruning goes on where the store's cursors are, and the statistics of a
        # store filled since its migration (an import, a restored dump) are gathered before the
        # first claims rather than a period later. Where they are fresh, a refresh does nothing.
        self._next_prune = now if self.retention is not None else None
        self._next_statistics = now
        #: What this worker's pruning removed so far, all runs together.
        self.pruned = PruneReport()
        #: Pruning batches run, statistics refreshes that ran, and chores that failed.
        self.prune_batches = 0
        self.statistics_runs = 0
        self.errors = 0

    def due(self) -> bool:
        """Whether a chore is due now."""
        now = self._clock()
        if now < self._seen:
            # The clock went back: start both schedules again from now rather than wait it out.
            self._next_prune = now if self.retention is not None else None
            self._next_statistics = now
        self._seen = now
        return now >= self._next_statistics or (self._next_prune is not None and now >= self._next_prune)

    def run(self) -> PruneReport:
        """Do the chores that are due; returns what this run pruned."""
        now = self._clock()
        report = PruneReport()
        if self._next_prune is not None and now >= self._next_prune:
            report, behind = self._prune()
            self._next_prune = self._clock() + (self.catch_up if behind else self.prune_every)
        if now >= self._next_statistics:
            self._refresh_statistics()
            self._next_statistics = self._clock() + self.statistics_every
        return report

    def close(self) -> None:
        """The worker stops: refresh the statistics once more (what SQLite advises before closing)."""
        self._refresh_statistics()

    def _prune(self) -> tuple[PruneReport, bool]:
        """Up to ``batches`` batches while each stops on its bounds; what they pruned, and whether more is due."""
        assert self.retention is not None
        report = PruneReport()
        behind = False
        try:
            for _ in range(self.batches):
                batch = self.store.prune(self.retention)
                self.prune_batches += 1
                report += batch
                behind = batch.more
                if not behind:
                    break
        except Exception as exc:
            self._failed("pruning", exc)
            return report, False
        finally:
            self.pruned += report
        if report.deleted:
            log.info("%s: pruned %d rows of finished resources' history", self.who, report.deleted)
        if report.kept:
            log.warning(
                "%s: kept %d finished resources the retention policy deletes: other rows still refer to them",
                self.who,
                report.kept,
            )
        return report, behind

    def _refresh_statistics(self) -> None:
        try:
            if self.store.optimize():
                self.statistics_runs += 1
        except Exception as exc:
            self._failed("refreshing statistics", exc)

    def _failed(self, chore: str, exc: Exception) -> None:
        self.errors += 1
        if isinstance(exc, StoreUnavailable | OSError):
            log.warning("%s: %s failed, store unavailable (%s); trying again at its next turn", self.who, chore, exc)
        else:
            log.exception("%s: %s failed; trying again at its next turn", self.who, chore)
