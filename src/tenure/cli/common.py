"""What the CLI commands share: consoles, options, error reporting and store access.

Every option more than one command takes is defined here, once, as a typer ``Annotated`` alias, so
that its flags, help text and environment variable are the same wherever it appears.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from tenure.errors import TenureError, UnknownKind
from tenure.kinds import builtin_kinds, builtin_tables, load_kinds
from tenure.machine import Kind
from tenure.store import open_store
from tenure.store.protocol import EngineStore
from tenure.store.url import DATABASE_URL_ENV, DEFAULT_DATABASE_URL

__all__ = [
    "DEFAULT_TOKEN_FILE",
    "SERVER_ENV",
    "ConcurrencyOption",
    "DatabaseOption",
    "DirectDatabaseOption",
    "IfVersionOption",
    "JsonOption",
    "KindsOption",
    "LeaseOption",
    "ResourceIdArgument",
    "ServerOption",
    "TokenFileOption",
    "VerboseOption",
    "all_kinds",
    "console",
    "errors",
    "find_kind",
    "reported",
    "with_store",
]

console = Console()
errors = Console(stderr=True, soft_wrap=True)

T = TypeVar("T")

#: Where ``tenure serve`` keeps the admin token it makes, and where the resource commands look for it.
DEFAULT_TOKEN_FILE = Path("tenure.token")
#: The environment variable naming the server the resource commands talk to when no option says.
SERVER_ENV = "TENURE_SERVER"

# --- where the work goes: a database, or a server --------------------------------------------------

#: The URL forms both ``--database`` helps name.
_URL_FORMS = "sqlite:///path/to/file.db or postgresql://user@host:port/db"


def _database_option(help_text: str, *, envvar: str | None) -> Any:
    """``--database`` / ``-d``: the one definition both database options below are made from.

    Which URL is used in the end is decided by :func:`tenure.store.url.database_url` alone; the two
    options differ only in what their help says and in whether typer may fill them from the
    environment variable (see each one).
    """
    return typer.Option("--database", "-d", envvar=envvar, help=help_text, show_default=False)


#: ``--database`` of the commands that only ever work on a database (migrate, serve, worker, runs,
#: demo). Typer fills it from TENURE_DATABASE_URL, so ``--help`` lists the variable; that is the URL
#: the resolver would pick at that point anyway (the option first, then the variable).
DatabaseOption = Annotated[
    str | None,
    _database_option(f"{_URL_FORMS} [default: {DEFAULT_DATABASE_URL}]", envvar=DATABASE_URL_ENV),
]
#: ``--database`` of the resource commands, the alternative to ``--server``. Typer must not fill it
#: from TENURE_DATABASE_URL: a database in the environment would then look typed on the command line
#: and clash with ``--server`` (a shell may well set both variables); the resolver reads it instead.
DirectDatabaseOption = Annotated[
    str | None,
    _database_option(
        f"Work on the database directly: {_URL_FORMS} "
        f"(env var: {DATABASE_URL_ENV}; default: {DEFAULT_DATABASE_URL}, unless {SERVER_ENV} is set).",
        envvar=None,
    ),
]
# Like DirectDatabaseOption, it does not read its variable by itself: tenure.cli.backend.connect
# does, so that an option typed on the command line always beats a variable.
ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        help=f"URL of a running tenure server, e.g. http://127.0.0.1:8080 (env var: {SERVER_ENV}). "
        "The token comes from TENURE_TOKEN or --token-file, never from the command line.",
        show_default=False,
    ),
]
TokenFileOption = Annotated[
    Path,
    typer.Option(
        "--token-file",
        envvar="TENURE_TOKEN_FILE",
        help="File holding the bearer token for --server when TENURE_TOKEN is not set (tenure serve writes one there).",
    ),
]
KindsOption = Annotated[
    list[str] | None,
    typer.Option("--kinds", "-k", help="Import path of a module defining kinds (repeatable), e.g. mypkg.kinds"),
]

# --- output --------------------------------------------------------------------------------------

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log what the engine does.")]

# --- resources -----------------------------------------------------------------------------------

ResourceIdArgument = Annotated[str, typer.Argument(help="Resource id.")]
IfVersionOption = Annotated[
    int | None,
    typer.Option("--if-version", min=1, help="Refuse unless the resource is still at this version."),
]

# --- running the engine (tenure worker, tenure serve) ----------------------------------------------

ConcurrencyOption = Annotated[int, typer.Option("--concurrency", "-c", min=1, max=256, help="Steps run at once.")]
LeaseOption = Annotated[
    float, typer.Option("--lease", min=0.1, help="Seconds a claim lasts unless renewed by the heartbeat.")
]


def all_kinds(extra: list[str] | None) -> tuple[Kind, ...]:
    """The built-in example kinds plus the user's kinds."""
    return builtin_kinds() + load_kinds(extra or [])


@contextmanager
def reported() -> Iterator[None]:
    """Turn tenure's errors into one red line and exit status 1 instead of a traceback."""
    try:
        yield
    except TenureError as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


def with_store(database: str | None, kinds: list[str] | None, action: Callable[[EngineStore], T]) -> T:
    with reported():
        store = open_store(database, all_kinds(kinds), tables=builtin_tables())
        try:
            return action(store)
        finally:
            store.close()


def find_kind(name: str, kinds: list[str] | None) -> Kind:
    with reported():
        found = {k.name: k for k in all_kinds(kinds)}
        if name not in found:
            raise UnknownKind(name, sorted(found))
        return found[name]
