"""Flow-run checkpoints: one row per run, one row per task, written together in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tenure.errors import AlreadyExists, InvalidArgument
from tenure.store.ops import Dialect
from tenure.store.records import FlowRunRow, FlowTaskRow

__all__ = ["FlowRuns"]


class FlowRuns(Dialect):
    """Flow-run persistence shared by both stores."""

    def create_flow_run(self, run: FlowRunRow) -> None:
        now = self._time_in(self._now())
        try:
            self._insert_flow_run(run, now)
        except AlreadyExists:
            raise AlreadyExists("flow run", run.id) from None

    def _insert_flow_run(self, run: FlowRunRow, now: Any) -> None:
        with self._transaction() as tx:
            tx.execute(
                self._sql["insert_flow_run"],
                (
                    run.id, run.flow, run.version, run.fingerprint, run.state, run.resource_id,
                    self._json_in(run.inputs), self._json_in(run.overrides), self._json_in(run.retries),
                    self._maybe_json(run.failure), self._maybe_json(run.pending_retry), now, now,
                ),
            )  # fmt: skip

    def save_flow(self, run_id: str, tasks: Sequence[FlowTaskRow], run: FlowRunRow | None = None) -> None:
        """Write task checkpoints and, if given, the run's new state, atomically."""
        now = self._time_in(self._now())
        with self._transaction() as tx:
            for t in tasks:
                tx.execute(
                    self._sql["upsert_flow_task"],
                    (
                        run_id, t.task, t.state, t.attempt, t.seq,
                        None if t.result is None else self._json_in(t.result),
                        None if t.failure is None else self._json_in(t.failure),
                        None if t.revert_failure is None else self._json_in(t.revert_failure),
                        None if t.inputs is None else self._json_in(t.inputs), now,
                    ),
                )  # fmt: skip
            if run is not None:
                changed = tx.execute(
                    self._sql["update_flow_run"],
                    (
                        run.state, self._json_in(run.overrides), self._json_in(run.retries),
                        self._maybe_json(run.failure), self._maybe_json(run.pending_retry), now, run_id,
                    ),
                )  # fmt: skip
                if changed.rowcount != 1:
                    raise InvalidArgument("run_id", "must name an existing flow run", run_id)

    def load_flow_run(self, run_id: str) -> tuple[FlowRunRow, list[FlowTaskRow]] | None:
        with self._reading() as conn:
            row = conn.execute(self._sql["get_flow_run"], (run_id,)).fetchone()
            if row is None:
                return None
            tasks = conn.execute(self._sql["get_flow_tasks"], (run_id,)).fetchall()
        return self._run_row(row), [
            FlowTaskRow(
                t[0], t[1], int(t[2]), int(t[3]),
                None if t[4] is None else self._json_out(t[4]),
                None if t[5] is None else self._json_out(t[5]),
                None if t[6] is None else self._json_out(t[6]),
                None if t[7] is None else self._json_out(t[7]),
            )
            for t in tasks
        ]  # fmt: skip

    def flow_runs(
        self, *, resource_id: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[FlowRunRow]:
        """Runs, oldest first, optionally of one resource or in one state (e.g. those to resume)."""
        with self._reading() as conn:
            found = conn.execute(
                self._sql["list_flow_runs"], (resource_id, resource_id, state, state, limit)
            ).fetchall()
        return [self._run_row(r) for r in found]

    def _run_row(self, row: Any) -> FlowRunRow:
        return FlowRunRow(
            id=row[0],
            flow=row[1],
            version=int(row[2]),
            fingerprint=row[3],
            state=row[4],
            resource_id=row[5],
            inputs=self._json_out(row[6]),
            overrides=self._json_out(row[7]),
            retries=self._json_out(row[8]),
            failure=None if row[9] is None else self._json_out(row[9]),
            pending_retry=None if row[10] is None else self._json_out(row[10]),
            created_at=self._time_out(row[11]),
            updated_at=self._time_out(row[12]),
        )

    def _maybe_json(self, value: Any) -> Any:
        return None if value is None else self._json_in(value)
