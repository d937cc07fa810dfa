"""What the CLI commands share: consoles, options, error reporting and store access.

Every option more than one command takes is defined here, once, as a typer ``Annotated`` alias, so
that its flags, help text and environment variable are the same wherever it appears.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from tenure.errors import InvalidUsage, TenureError, UnknownKind

if TYPE_CHECKING:
    from tenure.engine.planes import Signaling
    from tenure.machine import Kind
    from tenure.store.protocol import EngineStore

__all__ = [
    "DEFAULT_CONCURRENCY",
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
    "missing_sqlite_file",
    "open_existing_store",
    "reported",
    "with_store",
]

#: The width of a console that is not a terminal: wide enough that no line is ever cut or wrapped.
UNBOUNDED_WIDTH = 1_000_000


def _console(*, stderr: bool) -> Console:
    """A console for stdout or stderr that writes whole lines when they do not go to a terminal.

    Rich lays out for 80 columns when it cannot ask a terminal, which cuts tables and wraps lines in
    a pipe or a file; there nothing is narrow, so lines are as long as they need to be (a COLUMNS in
    the environment still sets the width). A terminal is laid out for its width.
    """
    stream = sys.stderr if stderr else sys.stdout
    piped = not (stream.isatty() or os.environ.get("COLUMNS", "").strip())
    return Console(stderr=stderr, soft_wrap=stderr, width=UNBOUNDED_WIDTH if piped else None)


console = _console(stderr=False)
errors = _console(stderr=True)

T = TypeVar("T")

#: Where ``tenure serve`` keeps the admin token it makes, and where the resource commands look for it.
DEFAULT_TOKEN_FILE = Path("tenure.token")
#: The environment variable naming the server the resource commands talk to when no option says.
SERVER_ENV = "TENURE_SERVER"
#: :data:`tenure.store.url.DATABASE_URL_ENV` and :data:`~tenure.store.url.DEFAULT_DATABASE_URL`, for
#: the help texts: importing the store's module would load the database drivers for every command,
#: ``tenure --help`` and the server commands included (a test checks that they agree).
DATABASE_URL_ENV = "TENURE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///tenure.db"

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

#: Steps a worker process runs at once unless told otherwise: enough in flight for their writes to share
#: commits (a step mostly waits on the database or a provisioner, not on the processor).
DEFAULT_CONCURRENCY = 16
ConcurrencyOption = Annotated[int, typer.Option("--concurrency", "-c", min=1, max=256, help="Steps run at once.")]
LeaseOption = Annotated[
    float, typer.Option("--lease", min=0.1, help="Seconds a claim lasts unless renewed by the heartbeat.")
]


def all_kinds(extra: list[str] | None, signaling: Signaling | None = None) -> tuple[Kind, ...]:
    """The built-in example kinds (the dataflow's deadline from ``signaling``) plus the user's kinds."""
    from tenure.kinds import builtin_kinds, load_kinds

    return builtin_kinds(signaling) + load_kinds(extra or [])


@contextmanager
def reported() -> Iterator[None]:
    """Turn tenure's errors into one red line and exit status 1 instead of a traceback."""
    try:
        yield
    except TenureError as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


def missing_sqlite_file(database: str | None) -> Path | None:
    """The file a ``sqlite:///`` URL names when it does not exist (None: it exists, or not SQLite).

    SQLite makes a missing file on first use; a command that only reads or changes resources must not
    leave an empty database behind wherever it happens to run.
    """
    from tenure.store.url import database_url

    url = database_url(database)
    if not url.startswith("sqlite:///"):
        return None  # another scheme, or a malformed URL that opening it reports
    path = url[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:" or Path(path).exists():
        return None
    return Path(path)


def open_existing_store(database: str | None, kinds: tuple[Kind, ...]) -> EngineStore:
    """The store the URL names, with the built-in kinds' tables; refuses a SQLite file that is not there."""
    from tenure.kinds import builtin_tables
    from tenure.store import open_store

    missing = missing_sqlite_file(database)
    if missing is not None:
        raise InvalidUsage(
            f"there is no database at {missing} (no such file); 'tenure migrate' makes one there "
            f"(and 'tenure serve' does too), or name another with --database or {DATABASE_URL_ENV}"
        )
    return open_store(database, kinds, tables=builtin_tables(), **_configured_store_options())


def _configured_store_options() -> dict[str, Any]:
    """The sharing defaults (``[service]``) of the file ``TENURE_CONFIG`` names, as ``tenure serve`` reads them."""
    if not os.environ.get("TENURE_CONFIG", "").strip():
        return {}
    from tenure.service.config import ServiceConfig

    return ServiceConfig.load().store_options()


def with_store(database: str | None, kinds: list[str] | None, action: Callable[[EngineStore], T]) -> T:
    with reported():
        store = open_existing_store(database, all_kinds(kinds))
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
