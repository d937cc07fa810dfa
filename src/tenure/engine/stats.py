"""What a worker did, as counters: read by tests, the command line and the service's metrics.

The worker's threads (its loop, its steps, its heartbeat) write them; readers take them as they
are, without a lock, since a count a moment stale is good enough for a metric.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["STEP_BUCKETS", "WorkerStats"]

#: Upper bounds (seconds) of the step-duration histogram.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass
class WorkerStats:
    """Counters of what a worker did (read them; they only grow)."""

    rounds: int = 0
    claimed: int = 0
    #: Steps run straight after the step before under the same claim (no claim of their own).
    chained: int = 0
    takeovers: int = 0
    advanced: int = 0
    waited: int = 0
    retried: int = 0
    failed: int = 0
    claims_lost: int = 0
    deadlines_fired: int = 0
    callbacks_applied: int = 0
    callbacks_superseded: int = 0
    store_errors: int = 0
    engine_errors: int = 0
    #: Events fired towards a desired state, and desired states given up on.
    reconciled: int = 0
    desired_given_up: int = 0
    #: How long the most recent steps took (the last 1024).
    step_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=1024), repr=False)
    #: Steps run and their total time; with step_buckets, a histogram of step durations.
    steps_run: int = 0
    step_seconds_total: float = 0.0
    #: How many steps took at most STEP_BUCKETS[i] seconds (cumulative, as Prometheus wants them).
    step_buckets: list[int] = field(default_factory=lambda: [0] * len(STEP_BUCKETS), repr=False)

    def record_step(self, seconds: float) -> None:
        """Count one step run that took ``seconds``."""
        self.step_seconds.append(seconds)
        self.steps_run += 1
        self.step_seconds_total += seconds
        for i, bound in enumerate(STEP_BUCKETS):
            if seconds <= bound:
                self.step_buckets[i] += 1
