"""The ``tenure`` command line."""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from tenure import __version__
from tenure.cli.common import (
    DatabaseOption,
    JsonOption,
    KindsOption,
    all_kinds,
    console,
    find_kind,
    journal_table,
    reported,
    with_store,
)
from tenure.cli.demo import demo
from tenure.cli.runs import runs
from tenure.cli.serve import serve
from tenure.cli.worker import worker
from tenure.errors import TenureError
from tenure.store import open_store
from tenure.store.core import StoreCore
from tenure.store.model import Resource

__all__ = ["app", "main"]


class DrawFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"


app = typer.Typer(
    name="tenure",
    help="Durable, race-free lifecycles for provisioned resources.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(f"tenure {__version__}")
        raise typer.Exit()


@app.command()
def migrate(database: DatabaseOption = None) -> None:
    """Apply pending schema migrations to the database."""
    with reported():
        store = open_store(database, check_schema=False)
        try:
            applied = store.migrate()
            version = store.schema_version()
        finally:
            store.close()
    if applied:
        console.print(
            f"applied migrations {', '.join(map(str, applied))} to {store.target}; schema at version {version}"
        )
    else:
        console.print(f"{store.target} is up to date (schema version {version})")


@app.command("kinds")
def list_kinds(kinds: KindsOption = None, as_json: JsonOption = False) -> None:
    """List the kinds that are loaded."""
    with reported():
        loaded = all_kinds(kinds)
    if as_json:
        print(json.dumps([k.describe() for k in loaded], indent=2))
        return
    table = Table(title="kinds")
    for column in ("name", "version", "initial", "states", "events", "description"):
        table.add_column(column)
    for k in loaded:
        table.add_row(
            k.name, str(k.version), k.initial.name, str(len(k.states)), str(len(k.event_names)), k.description
        )
    console.print(table)


@app.command()
def draw(
    kind: Annotated[str, typer.Argument(help="Name of the kind to draw.")],
    fmt: Annotated[DrawFormat, typer.Option("--format", "-f", help="Output format.")] = DrawFormat.mermaid,
    kinds: KindsOption = None,
) -> None:
    """Print a kind's state graph as Mermaid or Graphviz DOT."""
    found = find_kind(kind, kinds)
    sys.stdout.write(found.to_mermaid() if fmt is DrawFormat.mermaid else found.to_dot())


@app.command()
def show(
    resource_id: Annotated[str, typer.Argument(help="Resource id.")],
    database: DatabaseOption = None,
    kinds: KindsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one resource."""
    resource = with_store(database, kinds, lambda s: s.get(resource_id))
    if as_json:
        print(json.dumps(resource.to_json(), indent=2))
        return
    table = Table(show_header=False, title=f"resource {resource.id}")
    for key, value in resource.to_json().items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    console.print(table)


@app.command()
def history(
    resource_id: Annotated[str, typer.Argument(help="Resource id.")],
    database: DatabaseOption = None,
    kinds: KindsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a resource's journal: every write, oldest first."""

    def read(store: StoreCore) -> list[dict[str, object]]:
        store.get(resource_id)
        return [e.to_json() for e in store.journal(resource_id)]

    entries = with_store(database, kinds, read)
    if as_json:
        print(json.dumps(entries, indent=2))
        return
    console.print(journal_table(entries, title=f"history of {resource_id}"))


def _json_object(text: str | None, what: str) -> dict[str, object]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TenureError(f"{what} is not valid JSON ({exc.msg} at position {exc.pos}); give a JSON object") from None
    if not isinstance(value, dict):
        raise TenureError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


@app.command()
def create(
    kind: Annotated[str, typer.Argument(help="Kind of the new resource.")],
    spec: Annotated[str | None, typer.Argument(help="The spec, a JSON object.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Send the same key again to get the same resource.")
    ] = None,
    database: DatabaseOption = None,
    kinds: KindsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a resource in its kind's initial state."""

    def make(store: StoreCore) -> Resource:
        return store.create(kind, _json_object(spec, "the spec"), idempotency_key=idempotency_key, actor="cli")

    resource = with_store(database, kinds, make)
    if as_json:
        print(json.dumps(resource.to_json(), indent=2))
        return
    console.print(f"{resource.id} {resource.kind} {resource.state} (version {resource.version})")


@app.command()
def event(
    resource_id: Annotated[str, typer.Argument(help="Resource id.")],
    name: Annotated[str, typer.Argument(help="The event to fire.")],
    if_version: Annotated[
        int | None, typer.Option("--if-version", help="Refuse unless the resource is still at this version.")
    ] = None,
    data: Annotated[str | None, typer.Option("--data", help="JSON object merged into the resource's data.")] = None,
    database: DatabaseOption = None,
    kinds: KindsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fire an event on a resource (a compare-and-swap, journaled)."""

    def fire(store: StoreCore) -> Resource:
        extra = _json_object(data, "--data")
        return store.fire(resource_id, name, expected_version=if_version, data=extra or None, actor="cli")

    resource = with_store(database, kinds, fire)
    if as_json:
        print(json.dumps(resource.to_json(), indent=2))
        return
    console.print(f"{resource.id} {resource.kind} {resource.state} (version {resource.version})")


app.command()(demo)
app.command()(worker)
app.command()(serve)
app.add_typer(runs)


def main() -> None:
    """Entry point of the ``tenure`` script."""
    # The pool logs every failed connection attempt; the CLI reports the outcome as one error line.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    app()
