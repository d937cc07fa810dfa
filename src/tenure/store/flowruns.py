"""Flow-run checkpoints: one row per run, one row per task, written together in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tenure.clock import Clock
from tenure.errors import AlreadyExists, InvalidArgument
from tenure.flow.records import FlowRunRow, FlowTaskRow
from tenure.store.database import Database

__all__ = ["FlowRuns"]


class FlowRuns:
    """Flow-run persistence over any database: the store the flow layer's checkpoints write through."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def create_flow_run(self, run: FlowRunRow) -> None:
        db = self._db
        now = db.time_in(self._clock())
        try:
            with db.transaction() as tx:
                tx.execute(
                    db.sql["insert_flow_run"],
                    (
                        run.id, run.flow, run.version, run.fingerprint, run.state, run.resource_id,
                        db.json_in(run.inputs), db.json_in(run.overrides), db.json_in(run.retries),
                        self._maybe_json(run.failure), self._maybe_json(run.pending_retry), now, now,
                    ),
                )  # fmt: skip
        except AlreadyExists:
            raise AlreadyExists("flow run", run.id) from None

    def save_flow(self, run_id: str, tasks: Sequence[FlowTaskRow], run: FlowRunRow | None = None) -> None:
        """Write task checkpoints and, if given, the run's new state, atomically."""
        if not self._db.save_flow(run_id, tasks, run, self._clock()):
            raise InvalidArgument("run_id", "must name an existing flow run", run_id)

    def load_flow_run(self, run_id: str) -> tuple[FlowRunRow, list[FlowTaskRow]] | None:
        db = self._db
        with db.reading() as conn:
            row = conn.execute(db.sql["get_flow_run"], (run_id,)).fetchone()
            if row is None:
                return None
            tasks = conn.execute(db.sql["get_flow_tasks"], (run_id,)).fetchall()
        return self._run_row(row), [
            FlowTaskRow(
                t[0], t[1], int(t[2]), int(t[3]),
                None if t[4] is None else db.json_out(t[4]),
                None if t[5] is None else db.json_out(t[5]),
                None if t[6] is None else db.json_out(t[6]),
                None if t[7] is None else db.json_out(t[7]),
            )
            for t in tasks
        ]  # fmt: skip

    def flow_runs(
        self, *, resource_id: str | None = None, state: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[FlowRunRow]:
        """Runs, oldest first, optionally of one resource or in one state (e.g. those to resume).

        ``after`` is a run's id: the runs that follow it (a page's last run, to read the next page).
        """
        db = self._db
        params = (resource_id, resource_id, state, state, after, after, limit)
        with db.reading() as conn:
            found = conn.execute(db.sql["list_flow_runs"], params).fetchall()
        return [self._run_row(r) for r in found]

    def _run_row(self, row: Any) -> FlowRunRow:
        out = self._db.json_out
        return FlowRunRow(
            id=row[0],
            flow=row[1],
            version=int(row[2]),
            fingerprint=row[3],
            state=row[4],
            resource_id=row[5],
            inputs=out(row[6]),
            overrides=out(row[7]),
            retries=out(row[8]),
            failure=None if row[9] is None else out(row[9]),
            pending_retry=None if row[10] is None else out(row[10]),
            created_at=self._db.time_out(row[11]),
            updated_at=self._db.time_out(row[12]),
        )

    def _maybe_json(self, value: Any) -> Any:
        return None if value is None else self._db.json_in(value)
