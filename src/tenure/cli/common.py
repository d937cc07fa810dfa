"""What the CLI commands share: consoles, options, error reporting and store access."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from tenure.errors import TenureError, UnknownKind
from tenure.kinds import builtin_kinds, load_kinds
from tenure.machine import Kind
from tenure.store import open_store
from tenure.store.core import StoreCore

__all__ = [
    "DatabaseOption",
    "JsonOption",
    "KindsOption",
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

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        "-d",
        envvar="TENURE_DATABASE_URL",
        help="sqlite:///path/to/file.db or postgresql://user@host:port/db [default: sqlite:///tenure.db]",
        show_default=False,
    ),
]
KindsOption = Annotated[
    list[str] | None,
    typer.Option("--kinds", "-k", help="Import path of a module defining kinds (repeatable), e.g. mypkg.kinds"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


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


def with_store(database: str | None, kinds: list[str] | None, action: Callable[[StoreCore], T]) -> T:
    with reported():
        store = open_store(database, all_kinds(kinds))
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
