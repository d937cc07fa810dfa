"""The claims a worker holds while their steps run, and the heartbeat that keeps them.

A claim lasts its lease; a step may run longer, so the worker's heartbeat thread calls
:meth:`InFlight.renew` every ``heartbeat`` for the claims of the steps in flight. A claim that could
not be renewed (the lease ran out during a stall, or a client moved the resource on) is lost: the
step is told through :attr:`~tenure.engine.steps.StepContext.lost`, and its outcome will be refused
anyway.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from tenure.engine.logs import about, log
from tenure.engine.stats import WorkerStats
from tenure.engine.steps import StepContext
from tenure.errors import StoreUnavailable
from tenure.store.claims import Claim
from tenure.store.protocol import EngineStore

__all__ = ["InFlight"]


class InFlight:
    """The claims of the steps a worker runs or has queued, by claim token (safe between threads)."""

    def __init__(self, store: EngineStore, stats: WorkerStats, *, worker: str) -> None:
        self.store = store
        self.stats = stats
        self.worker = worker
        self._running: dict[str, tuple[Claim, StepContext]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._running)

    def add(self, claim: Claim, ctx: StepContext) -> None:
        """Hold ``claim``, whose step runs with ``ctx``, until :meth:`discard`."""
        with self._lock:
            self._running[claim.token] = (claim, ctx)

    def discard(self, token: str) -> None:
        """Stop holding the claim ``token`` (its step is done)."""
        with self._lock:
            self._running.pop(token, None)

    def held(self) -> list[tuple[Claim, StepContext]]:
        """The claims held now, with their steps' contexts."""
        with self._lock:
            return list(self._running.values())

    def renew(self, lease: timedelta) -> None:
        """Renew every claim held for ``lease``; flag the ones that were lost.

        Never raises: a heartbeat that died of one error would let every long step be taken over.
        """
        with self._lock:
            running = dict(self._running)
        if not running:
            return
        try:
            held = self.store.renew([claim for claim, _ in running.values()], lease=lease)
        except StoreUnavailable as exc:
            log.warning("worker %s: could not renew claims: %s", self.worker, exc)
            return
        except Exception:
            # The heartbeat must outlive a surprise: without it every long step is taken over.
            self.stats.engine_errors += 1
            log.exception("worker %s: unexpected error renewing claims", self.worker)
            return
        for token, (claim, ctx) in running.items():
            if token not in held and not ctx.lost.is_set():
                ctx.lost.set()
                log.info(
                    "worker %s stepped back from %s: its claim expired before it was renewed; another worker will "
                    "pick the resource up",
                    self.worker,
                    claim.resource.id,
                    extra=about(claim.resource),
                )
