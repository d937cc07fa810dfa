"""Turning database rows into values, for each dialect.

Rows come back as tuples in the column order the SQL files select; SQLite keeps JSON and times as
text, PostgreSQL hands back native values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tenure.store.model import NO_USES, JournalEntry, Resource, Use, uses_from_json

__all__ = [
    "from_iso",
    "journal_from_pg",
    "journal_from_sqlite",
    "resource_from_pg",
    "resource_from_sqlite",
    "to_iso",
    "uses_json",
]

_parse_time = datetime.fromisoformat
_loads = json.loads


def to_iso(value: datetime | None) -> str | None:
    """Fixed-width ISO-8601 text, so that stored times compare correctly as strings."""
    return None if value is None else value.isoformat(timespec="microseconds")


def from_iso(value: str | None) -> datetime | None:
    return None if value is None else _parse_time(value)


def resource_from_sqlite(row: tuple[Any, ...]) -> Resource:
    return Resource(
        row[0],
        row[1],
        row[2],
        row[3],
        _loads(row[4]),
        _loads(row[5]),
        row[6],
        row[7],
        row[8],
        bool(row[9]),
        row[10],
        row[11],
        _parse_time(row[12]),
        from_iso(row[13]),
        from_iso(row[14]),
        row[15],
        row[16],
        from_iso(row[17]),
        row[18],
        _parse_time(row[19]),
        _parse_time(row[20]),
        NO_USES if row[21] == "{}" else uses_from_json(_loads(row[21])),
        row[22],
        row[23],
    )


def resource_from_pg(row: tuple[Any, ...]) -> Resource:
    uses = NO_USES if not row[21] else uses_from_json(row[21])
    return Resource(*row[:21], in_use_by=uses, forced_generation=row[22], kind_version=row[23])  # type: ignore[misc]


def journal_from_sqlite(row: tuple[Any, ...]) -> JournalEntry:
    return JournalEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], _parse_time(row[7]), _loads(row[8]))


def journal_from_pg(row: tuple[Any, ...]) -> JournalEntry:
    return JournalEntry(*row)


def uses_json(uses: Mapping[str, Use]) -> dict[str, Any]:
    """``in_use_by`` as the JSON the column keeps (fixed-width times, as every stored time)."""
    return {
        party: {"client": u.client, "registered_at": to_iso(u.registered_at), "expires_at": to_iso(u.expires_at)}
        for party, u in uses.items()
    }
