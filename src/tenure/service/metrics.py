"""Prometheus metrics, read when scraped: the engine's counters and the database's backlog.

Counters come from the workers running in this process (claims, takeovers, retries, failures,
deadlines, callbacks, step durations) and from the service itself (requests by status); gauges come
from one query at scrape time (resources per kind and state, the age of the oldest wait).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tenure.engine import Worker
from tenure.engine.worker import STEP_BUCKETS
from tenure.store.protocol import Store

__all__ = ["Metrics"]

#: (metric suffix, WorkerStats attribute, help)
_WORKER_COUNTERS = (
    ("claims", "claimed", "Resources claimed by workers"),
    ("steps_chained", "chained", "Steps run under the claim of the step before (not claimed again)"),
    ("claim_takeovers", "takeovers", "Claims taken over from a worker whose claim had expired"),
    ("steps_advanced", "advanced", "Steps that ended by firing an event"),
    ("steps_waited", "waited", "Steps that ended in a wait state"),
    ("retries", "retried", "Failed attempts scheduled for a retry"),
    ("steps_failed", "failed", "Steps that fired their failure event"),
    ("claims_lost", "claims_lost", "Outcomes refused because the claim was lost"),
    ("deadlines_fired", "deadlines_fired", "Deadline events fired by the sweeper"),
    ("callbacks_applied", "callbacks_applied", "Callbacks applied to resources"),
    ("callbacks_superseded", "callbacks_superseded", "Callbacks settled as superseded"),
    ("store_errors", "store_errors", "Times the database was unavailable to a worker"),
    ("engine_errors", "engine_errors", "Unexpected errors in the engine (bugs)"),
)


class Metrics(Collector):
    """Collects tenure's metrics; :meth:`render` gives the Prometheus text format."""

    def __init__(self, store: Store, workers: Sequence[Worker] = ()) -> None:
        self.store = store
        self.workers = list(workers)
        self.requests: Counter[tuple[str, str]] = Counter()
        #: Writes made through the API, by operation (create, event, desired).
        self.api_writes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def count_request(self, method: str, status: int) -> None:
        with self._lock:
            self.requests[(method, str(status))] += 1

    def count_write(self, operation: str) -> None:
        with self._lock:
            self.api_writes[operation] += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        yield from self._worker_metrics()
        yield from self._backlog()
        requests = CounterMetricFamily("tenure_http_requests", "HTTP requests answered", labels=["method", "status"])
        with self._lock:
            for (method, status), n in sorted(self.requests.items()):
                requests.add_metric([method, status], n)
        yield requests

    def _worker_metrics(self) -> Iterator[Metric]:
        stats = [w.stats for w in self.workers]
        for suffix, attribute, text in _WORKER_COUNTERS:
            family = CounterMetricFamily(f"tenure_engine_{suffix}", text)
            family.add_metric([], sum(getattr(s, attribute) for s in stats))
            yield family
        transitions = CounterMetricFamily(
            "tenure_transitions",
            "Journaled writes made in this process: by the engine (advance, wait, fail, deadline, callback, "
            "reconcile) and through the API (create, event, desired)",
            labels=["source", "operation"],
        )
        transitions.add_metric(["engine", "step"], sum(s.advanced + s.waited + s.failed for s in stats))
        transitions.add_metric(["engine", "deadline"], sum(s.deadlines_fired for s in stats))
        transitions.add_metric(["engine", "callback"], sum(s.callbacks_applied for s in stats))
        transitions.add_metric(["engine", "reconcile"], sum(s.reconciled for s in stats))
        with self._lock:
            for operation in ("create", "event", "desired"):
                transitions.add_metric(["api", operation], self.api_writes[operation])
        yield transitions
        buckets = [0] * len(STEP_BUCKETS)
        for s in stats:
            for i, n in enumerate(s.step_buckets):
                buckets[i] += n
        total = sum(s.steps_run for s in stats)
        histogram = HistogramMetricFamily("tenure_engine_step_seconds", "How long steps ran")
        histogram.add_metric(
            [],
            [*((str(bound), n) for bound, n in zip(STEP_BUCKETS, buckets, strict=True)), ("+Inf", total)],
            sum(s.step_seconds_total for s in stats),
        )
        yield histogram
        running = GaugeMetricFamily("tenure_workers", "Workers running in this process")
        running.add_metric([], sum(1 for w in self.workers if not w.stopping))
        yield running

    def _backlog(self) -> Iterator[Metric]:
        rows = self.store.backlog(sorted(self.store.kinds))
        count = GaugeMetricFamily("tenure_resources", "Resources per kind and state", labels=["kind", "state", "role"])
        oldest = GaugeMetricFamily(
            "tenure_oldest_wait_seconds", "Age of the oldest resource in each wait state", labels=["kind", "state"]
        )
        for row in rows:
            # The state's role in the newest version that has it: resources of older versions count too.
            having = [k for k in reversed(self.store.kind_versions(row.kind)) if k.has_state(row.state)]
            role = having[0].state(row.state).role.value if having else ""
            count.add_metric([row.kind, row.state, role], row.count)
            if row.oldest_seconds is not None and role == "wait":
                oldest.add_metric([row.kind, row.state], row.oldest_seconds)
        yield count
        yield oldest
