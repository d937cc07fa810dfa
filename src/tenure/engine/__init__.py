"""The engine: workers that claim due resources, run their steps, and apply outcomes as fenced writes."""

from __future__ import annotations

from tenure.engine.outcome import Advance, Fail, Fatal, Outcome, Reconcile, Retryable, RetryLater, Wait
from tenure.engine.reconcile import Reconciled, Reconciler
from tenure.engine.steps import Step, StepContext, Steps
from tenure.engine.worker import Worker, WorkerStats
from tenure.store.model import Resource

__all__ = [
    "Advance",
    "Fail",
    "Fatal",
    "Outcome",
    "Reconcile",
    "Reconciled",
    "Reconciler",
    "Resource",
    "RetryLater",
    "Retryable",
    "Step",
    "StepContext",
    "Steps",
    "Wait",
    "Worker",
    "WorkerStats",
]
