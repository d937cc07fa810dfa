"""Tables a kind owns: its own schema in the store's database, migrated with the store's.

Most kinds need nothing but the resource row (``spec`` in, ``data`` out). A kind whose plug-ins keep
records of their own — the volume example's quota ledger, say — declares them as an :class:`OwnedTables`
beside its code::

    mypkg/
      migrations/sqlite/0001_ledger.sql      numbered from 1, without gaps, never changed once released
      migrations/postgres/0001_ledger.sql
      sql/sqlite.sql                         named blocks: "-- name: <block>" lines, as the store's own
      sql/postgres.sql

and hands it to :func:`~tenure.store.open_store` (``tables=[...]``). ``store.migrate()`` then applies the
store's own migrations, then each owner's, recording them per owner in ``tenure_owned_migrations``; a
store that checks its schema refuses to open while an owner's tables are behind. The owner's code
reaches its tables through :class:`~tenure.store.protocol.TableStore` (the database layer, with its
transactions and value adapters, and the store's clock), running its own named blocks from
:meth:`OwnedTables.queries`. Tables a kind owns are its business: no store write goes through them,
and they must not change the store's own tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from tenure.store.migrator import Migration, migrations
from tenure.store.sqlfile import load_queries

__all__ = ["OwnedTables"]

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class OwnedTables:
    """The tables ``owner`` keeps in the store's database; their migrations and SQL live in ``package``.

    >>> from tenure.kinds.volume import VOLUME_TABLES
    >>> VOLUME_TABLES.owner, [m.version for m in VOLUME_TABLES.migrations("sqlite")]
    ('volume', [1])
    """

    owner: str
    package: str

    def __post_init__(self) -> None:
        if _NAME.fullmatch(self.owner) is None:
            raise ValueError(f"an owner of tables is named in lowercase letters, digits and _: {self.owner!r}")

    def migrations(self, dialect: str) -> tuple[Migration, ...]:
        """The owner's migrations for ``dialect``, in order."""
        return migrations(dialect, self.package)

    def latest_version(self, dialect: str) -> int:
        return len(self.migrations(dialect))

    def queries(self, dialect: str) -> Mapping[str, str]:
        """The owner's named SQL blocks for ``dialect``."""
        return _queries(self.package, dialect)


@cache
def _queries(package: str, dialect: str) -> Mapping[str, str]:
    return load_queries(f"{dialect}.sql", package)
