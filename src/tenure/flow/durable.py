"""Checkpoints kept in a tenure store (SQLite or PostgreSQL), so that runs survive their process.

Task results and flow inputs are stored as JSON: a durable flow's values must be JSON values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from tenure.flow.checkpoint import RunRecord, RunState, TaskRecord, TaskState
from tenure.flow.records import FlowRunRow, FlowTaskRow
from tenure.flow.task import Failure

__all__ = ["FlowRunStore", "StoreCheckpoints"]


class FlowRunStore(Protocol):
    """The part of a store that keeps flow runs (both built-in stores have it)."""

    def create_flow_run(self, run: FlowRunRow) -> None: ...

    def save_flow(self, run_id: str, tasks: Sequence[FlowTaskRow], run: FlowRunRow | None = None) -> None: ...

    def load_flow_run(self, run_id: str) -> tuple[FlowRunRow, list[FlowTaskRow]] | None: ...


def _failure_out(failure: Failure | None) -> dict[str, str] | None:
    return None if failure is None else failure.to_json()


def _failure_in(data: Mapping[str, Any] | None) -> Failure | None:
    return None if data is None else Failure.from_json(data)


def _json_ready(what: str, value: Any) -> Any:
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} cannot be checkpointed: it must be a JSON value ({exc})") from None
    if "\\u0000" in encoded:
        raise TypeError(f"{what} cannot be checkpointed: it contains a NUL character, which PostgreSQL cannot store")
    return value


class StoreCheckpoints:
    """:class:`~tenure.flow.checkpoint.Checkpoints` on a store's ``flow_runs``/``flow_tasks`` tables."""

    def __init__(self, store: FlowRunStore) -> None:
        self.store = store

    def _run_row(self, run: RunRecord) -> FlowRunRow:
        return FlowRunRow(
            id=run.id,
            flow=run.flow,
            version=run.version,
            fingerprint=run.fingerprint,
            state=run.state.value,
            resource_id=run.resource_id,
            inputs=_json_ready("the flow's inputs", dict(run.inputs)),
            overrides=_json_ready("a rescheduled value", dict(run.overrides)),
            retries=dict(run.retries),
            failure=_failure_out(run.failure),
            pending_retry=None if run.pending_retry is None else dict(run.pending_retry),
        )

    def storable(self, what: str, value: Any) -> None:
        _json_ready(what, value)

    def create_run(self, run: RunRecord) -> None:
        self.store.create_flow_run(self._run_row(run))

    def save(self, run_id: str, tasks: Sequence[TaskRecord], run: RunRecord | None = None) -> None:
        rows = [
            FlowTaskRow(
                task=t.task,
                state=t.state.value,
                attempt=t.attempt,
                seq=t.seq,
                result=t.result,
                failure=_failure_out(t.failure),
                revert_failure=_failure_out(t.revert_failure),
                inputs=None if t.inputs is None else dict(t.inputs),
            )
            for t in tasks
        ]
        self.store.save_flow(run_id, rows, None if run is None else self._run_row(run))

    def load_run(self, run_id: str) -> RunRecord | None:
        found = self.store.load_flow_run(run_id)
        if found is None:
            return None
        row, task_rows = found
        return RunRecord(
            id=row.id,
            flow=row.flow,
            version=row.version,
            fingerprint=row.fingerprint,
            state=RunState(row.state),
            inputs=dict(row.inputs),
            resource_id=row.resource_id,
            overrides=dict(row.overrides),
            retries=dict(row.retries),
            failure=_failure_in(row.failure),
            pending_retry=None if row.pending_retry is None else dict(row.pending_retry),
            tasks={
                t.task: TaskRecord(
                    t.task,
                    TaskState(t.state),
                    t.attempt,
                    t.seq,
                    t.result,
                    _failure_in(t.failure),
                    _failure_in(t.revert_failure),
                    None if t.inputs is None else dict(t.inputs),
                )
                for t in task_rows
            },
        )
