"""Numbered schema migrations, one folder of ``NNNN_name.sql`` files per database dialect.

A migration is applied once, in its own transaction, together with its row in ``tenure_migrations``
(tenure's own) or ``tenure_owned_migrations`` (those of tables a kind owns, see
:mod:`tenure.store.tables`). Numbers start at 1 and have no gaps; a migration never changes once
released.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["Migration", "current_schema", "latest_version", "migrations"]

_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@cache
def migrations(dialect: str, package: str = "tenure.store") -> tuple[Migration, ...]:
    """Every migration of ``dialect`` ('sqlite' or 'postgres') in ``package``'s ``migrations`` folder, in order."""
    folder = resources.files(package).joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILENAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    numbers = [m.version for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{package}: {dialect} migrations must be numbered 1..N without gaps, found {numbers}")
    return tuple(found)


def latest_version(dialect: str) -> int:
    """The version a fully migrated ``dialect`` database is at."""
    return len(migrations(dialect))


def current_schema(dialect: str) -> str:
    """The schema all migrations together must produce (checked by the test suite)."""
    return resources.files("tenure.store").joinpath("schema", f"{dialect}.sql").read_text(encoding="utf-8")
