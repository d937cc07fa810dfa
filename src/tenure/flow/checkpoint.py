"""What a flow run remembers, and the protocol of the places that remember it.

Every task transition (started, succeeded, failed, reverted) is written in one transaction, so a run
that was stopped half-way can be resumed from exactly what had been committed.
"""

from __future__ import annotations

import copy
import enum
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from tenure.errors import AlreadyExists, FlowRunNotFound
from tenure.flow.task import Failure

__all__ = ["Checkpoints", "MemoryCheckpoints", "RunRecord", "RunState", "TaskRecord", "TaskState"]


class TaskState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    REVERTED = "reverted"
    REVERT_FAILURE = "revert_failure"


class RunState(enum.StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    #: A task failed and the run is undoing what it did.
    REVERTING = "reverting"
    #: Failed, and everything that ran was reverted.
    REVERTED = "reverted"
    #: A revert itself failed: an operator must retry the revert or mark the run resolved.
    REVERT_FAILED = "revert_failed"
    #: An operator looked at a failed revert and declared it handled.
    RESOLVED = "resolved"

    @property
    def finished(self) -> bool:
        return self in (RunState.SUCCESS, RunState.REVERTED, RunState.RESOLVED)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    task: str
    state: TaskState
    attempt: int = 0
    #: Completion order within the run; reverts go in reverse of it.
    seq: int = 0
    result: Any = None
    #: Why the task's execute failed (None if it did not).
    failure: Failure | None = None
    #: Why its last revert failed (state REVERT_FAILURE); kept apart so a retried revert is still
    #: told truthfully whether the task itself had failed.
    revert_failure: Failure | None = None
    #: The flow values the task was started with (its reverts get these), None before it starts.
    inputs: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    flow: str
    version: int
    fingerprint: str
    state: RunState
    inputs: Mapping[str, Any]
    resource_id: str | None = None
    #: Values replaced by reschedules, and retries used per subflow.
    overrides: Mapping[str, Any] = field(default_factory=dict)
    retries: Mapping[str, int] = field(default_factory=dict)
    failure: Failure | None = None
    #: A subflow retry decided but not yet carried out: {"scope", "round", and "parameter"/"value"}.
    pending_retry: Mapping[str, Any] | None = None
    tasks: Mapping[str, TaskRecord] = field(default_factory=dict)


class Checkpoints(Protocol):
    """Where flow runs are remembered. Each call is one transaction."""

    def create_run(self, run: RunRecord) -> None:
        """Remember a new run (raises if the id exists)."""
        ...

    def load_run(self, run_id: str) -> RunRecord | None:
        """The run with its task records, or None."""
        ...

    def save(self, run_id: str, tasks: Sequence[TaskRecord], run: RunRecord | None = None) -> None:
        """Write task records (and, if given, the run's state, overrides, retries, failure) atomically."""
        ...

    def storable(self, what: str, value: Any) -> None:
        """Raise ``TypeError`` (naming ``what``) if ``value`` cannot be kept."""
        ...


class MemoryCheckpoints:
    """Checkpoints kept in a dict: for tests, and for flows that need no durability."""

    def __init__(self) -> None:
        self._runs: dict[str, RunRecord] = {}
        self._tasks: dict[str, dict[str, TaskRecord]] = {}
        self._lock = threading.Lock()

    def storable(self, what: str, value: Any) -> None:
        """Anything can be kept in memory."""

    def create_run(self, run: RunRecord) -> None:
        with self._lock:
            if run.id in self._runs:
                # The same refusal as the stores' checkpoints (tenure.store.flowruns) give.
                raise AlreadyExists("flow run", run.id)
            self._runs[run.id] = replace(run, inputs=copy.copy(run.inputs), tasks={})
            self._tasks[run.id] = dict(run.tasks)

    def load_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            run = self._runs.get(run_id)
            return None if run is None else replace(run, tasks=dict(self._tasks[run_id]))

    def save(self, run_id: str, tasks: Sequence[TaskRecord], run: RunRecord | None = None) -> None:
        with self._lock:
            if run_id not in self._runs:
                raise FlowRunNotFound(run_id)
            stored = self._tasks[run_id]
            for t in tasks:
                stored[t.task] = t
            if run is not None:
                self._runs[run_id] = replace(run, inputs=copy.copy(run.inputs), tasks={})
