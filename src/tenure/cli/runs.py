"""``tenure runs``: look at flow runs and their checkpoints; resolve a run whose revert failed."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tenure.cli.common import SERVER_ENV, DatabaseOption, JsonOption, KindsOption, console, reported, with_store
from tenure.errors import FlowRunNotFound, InvalidArgument, InvalidUsage

if TYPE_CHECKING:
    from tenure.flow.records import FlowRunRow, FlowTaskRow
    from tenure.store.protocol import EngineStore, Store

__all__ = ["runs"]

runs = typer.Typer(
    name="runs",
    help="Flow runs: list them, show their checkpoints, resolve failed reverts (on a database, not a server).",
    rich_markup_mode=None,
)

#: ``--server`` here only to be refused clearly: flow runs are read from a database, not through a server.
RunsServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        help=f"Not supported: tenure runs works on a database only (--database), whatever {SERVER_ENV} says.",
        show_default=False,
    ),
]

#: The one state an operator may move by hand, and where it goes.
RESOLVABLE = "revert_failed"
RESOLVED = "resolved"


def _database_only(server: str | None, database: str | None) -> None:
    """Refuse a server: given with --server, or in TENURE_SERVER when no database is named."""
    named = server or ("" if database else os.environ.get(SERVER_ENV, "").strip())
    if named:
        with reported():
            raise InvalidUsage(
                f"tenure runs works on a database only, not on a server ({named}): give --database URL "
                "(or TENURE_DATABASE_URL); through a server, GET /v1/resources/ID/flows shows one resource's flow runs"
            )


def _run_json(row: FlowRunRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "flow": row.flow,
        "version": row.version,
        "state": row.state,
        "resource_id": row.resource_id,
        "retries": dict(row.retries),
        "failure": None if row.failure is None else dict(row.failure).get("message"),
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }


def _task_json(row: FlowTaskRow) -> dict[str, Any]:
    return {
        "task": row.task,
        "state": row.state,
        "attempt": row.attempt,
        "seq": row.seq,
        "result": row.result,
        "failure": None if row.failure is None else dict(row.failure).get("message"),
        "revert_failure": None if row.revert_failure is None else dict(row.revert_failure).get("message"),
    }


@runs.command("list")
def list_runs(
    state: Annotated[str | None, typer.Option("--state", "-s", help="Only runs in this state.")] = None,
    resource: Annotated[str | None, typer.Option("--resource", "-r", help="Only runs of this resource.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    database: DatabaseOption = None,
    kinds: KindsOption = None,
    server: RunsServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """List flow runs, oldest first."""
    _database_only(server, database)
    found = with_store(database, kinds, lambda s: s.flow_runs(resource_id=resource, state=state, limit=limit))
    rows = [_run_json(r) for r in found]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title="flow runs")
    for column in ("id", "flow", "state", "resource", "retries", "failure", "updated"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["id"], f"{r['flow']} v{r['version']}", r["state"], r["resource_id"] or "-",
            json.dumps(r["retries"]) if r["retries"] else "-", r["failure"] or "-", str(r["updated_at"])[:19],
        )  # fmt: skip
    console.print(table)


def _load(store: Store, run_id: str) -> tuple[FlowRunRow, list[FlowTaskRow]]:
    found = store.load_flow_run(run_id)
    if found is None:
        raise FlowRunNotFound(run_id)
    return found


@runs.command("show")
def show_run(
    run_id: Annotated[str, typer.Argument(help="Flow run id.")],
    database: DatabaseOption = None,
    kinds: KindsOption = None,
    server: RunsServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one flow run and the checkpoint of each of its tasks."""
    _database_only(server, database)
    row, tasks = with_store(database, kinds, lambda s: _load(s, run_id))
    doc = {**_run_json(row), "tasks": [_task_json(t) for t in sorted(tasks, key=lambda t: (t.seq, t.task))]}
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    from rich.table import Table

    console.print(f"flow run [bold]{row.id}[/]: {row.flow} v{row.version}, {row.state}")
    table = Table()
    for column in ("seq", "task", "state", "attempt", "failure", "revert failure"):
        table.add_column(column)
    for t in doc["tasks"]:
        table.add_row(
            str(t["seq"]), t["task"], t["state"], str(t["attempt"]), t["failure"] or "-", t["revert_failure"] or "-"
        )
    console.print(table)


@runs.command("resolve")
def resolve_run(
    run_id: Annotated[str, typer.Argument(help="Flow run id.")],
    database: DatabaseOption = None,
    kinds: KindsOption = None,
    server: RunsServerOption = None,
) -> None:
    """Mark a run whose revert failed as resolved by hand (after cleaning up what it left)."""
    _database_only(server, database)

    def resolve(store: EngineStore) -> None:
        row, _ = _load(store, run_id)
        if row.state != RESOLVABLE:
            raise InvalidArgument("run state", f"must be {RESOLVABLE} to be resolved", row.state)
        store.save_flow(run_id, [], replace(row, state=RESOLVED))

    with_store(database, kinds, resolve)
    console.print(f"flow run {run_id} marked {RESOLVED}")
