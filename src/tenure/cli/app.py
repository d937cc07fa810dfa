"""The ``tenure`` command line."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from tenure import __version__
from tenure.cli.common import DatabaseOption, console, reported
from tenure.cli.demo import demo
from tenure.cli.resources import create, desire, draw, event, history, list_kinds, ls, retry, show, wait
from tenure.cli.runs import runs
from tenure.cli.serve import serve
from tenure.cli.sharing import parties, release, renew, teardown, use
from tenure.cli.signaling_demo import signaling
from tenure.cli.worker import worker

__all__ = ["app", "main"]

app = typer.Typer(
    name="tenure",
    help="Durable, race-free lifecycles for provisioned resources.\n\n"
    "The resource commands (ls, show, history, create, event, desire, retry, wait, use, renew, release, "
    "parties, teardown, kinds, draw) talk to a running "
    "server with --server URL (or TENURE_SERVER; the token comes from TENURE_TOKEN or ./tenure.token), or "
    "straight to a database with --database URL (or TENURE_DATABASE_URL; default sqlite:///tenure.db).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help, as click writes it: typer's Rich help shows every flag as "--all <bool>" (and
    # "--help <bool>"), a type where a flag takes no value; the plain one lists flags bare.
    rich_markup_mode=None,
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
    from tenure.kinds import builtin_tables
    from tenure.store import open_store

    with reported():
        store = open_store(database, check_schema=False, tables=builtin_tables())
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


app.command()(ls)
app.command()(show)
app.command()(history)
app.command()(create)
app.command()(event)
app.command()(desire)
app.command()(retry)
app.command()(wait)
app.command()(use)
app.command()(renew)
app.command()(release)
app.command()(parties)
app.command()(teardown)
app.command("kinds")(list_kinds)
app.command()(draw)
app.command()(serve)
app.command()(worker)
demos = typer.Typer(name="demo", add_completion=False, rich_markup_mode=None)
demos.callback(invoke_without_command=True)(demo)
demos.command("signaling")(signaling)
app.add_typer(demos)
app.add_typer(runs)


def main() -> None:
    """Entry point of the ``tenure`` script."""
    # The pool logs every failed connection attempt; the CLI reports the outcome as one error line.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    app()
