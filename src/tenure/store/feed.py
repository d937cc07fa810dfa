"""The change feed: journal entries of every resource, read in pages that a reader can resume from.

Each page comes with a *position*; passing it back as ``after`` returns what came after, without
missing anything and without repeating anything, however the writers' transactions interleave.
Positions are opaque strings (32 hexadecimal digits) ordered the way the feed delivers entries.

On SQLite, one writer at a time hands out journal ``seq`` values in commit order, so the position is
the ``seq``. On PostgreSQL, ``seq`` values come from a sequence when the row is inserted, but
transactions commit in another order: a reader that has read up to seq N can later see seq N-1 commit,
and a cursor on ``seq`` alone would skip it for ever. So every journal row records the transaction
that wrote it (``txid``), and the feed returns only rows of transactions older than the oldest one
still running (``pg_snapshot_xmin``): every transaction below that horizon has finished, so no row can
ever appear there again. It reads in (txid, seq) order and the position encodes both. A transaction
left open holds the feed back until it ends (the price of never skipping).

Each resource's entries still come in version order. Every journal row is written by a transaction
whose first write is the compare-and-swap on that row's resource (or its insert), and a transaction
gets its txid at its first write. The write of version v+1 matched ``version = v``, so the statement
that made it saw version v committed; its txid was therefore handed out after the writer of version v
had finished, and txids are handed out in increasing order: txid(v) < txid(v+1).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tenure.errors import InvalidArgument
from tenure.machine import Kind
from tenure.rules import refuse_nul
from tenure.store.database import Database
from tenure.store.model import JournalEntry

__all__ = ["BEGINNING", "Change", "ChangeFeed", "Changes"]

#: The position before the first entry (what ``after=None`` means).
BEGINNING = "0" * 32
#: The most entries one call returns.
MAX_CHANGES = 1000

_POSITION = re.compile(r"[0-9a-f]{32}")
_NO_TXID = "0" * 16
#: Journal seqs are signed 64-bit integers in both databases.
_MAX_SEQ = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Change:
    """A journal entry in the change feed, with its resource's kind and its position in the feed."""

    position: str
    kind: str
    seq: int
    resource_id: str
    version: int
    event: str
    from_state: str | None
    to_state: str
    actor: str | None
    at: datetime
    detail: Mapping[str, Any]

    @property
    def entry(self) -> JournalEntry:
        """The journal entry itself."""
        return JournalEntry(
            self.seq,
            self.resource_id,
            self.version,
            self.event,
            self.from_state,
            self.to_state,
            self.actor,
            self.at,
            self.detail,
        )

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "kind": self.kind, **self.entry.to_json()}


@dataclass(frozen=True, slots=True)
class Changes:
    """A page of the change feed; pass ``position`` back as ``after`` to read on from there."""

    entries: builtins.list[Change]
    position: str

    def to_json(self) -> dict[str, Any]:
        return {"entries": [c.to_json() for c in self.entries], "position": self.position}


def _position(txid: int, seq: int) -> str:
    return f"{txid:016x}{seq:016x}"


class ChangeFeed:
    """The change feed over any database (each dialect's SQL keeps the order it can guarantee)."""

    def __init__(self, db: Database, kind: Callable[[str], Kind]) -> None:
        self._db = db
        self._kind = kind

    def changes(
        self,
        after: str | None = None,
        *,
        kind: str | None = None,
        resource_id: str | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> Changes:
        """Up to ``limit`` journal entries after the position ``after`` (None: from the beginning).

        Filters: ``kind`` (the resource's), ``resource_id``, and ``state`` (the state an entry moved
        to). The answer's ``position`` is where to read on from: when nothing new came, it is ``after``
        again; it may move past entries the filters left out. Entries of transactions still running
        (and, on PostgreSQL, of any transaction that began after the oldest one still running) come
        in a later call, never out of order and never skipped.
        """
        start = self._parse_position(after)
        if kind is not None:
            k = self._kind(kind)
            if state is not None:
                k.state(state)
        refuse_nul(resource_id=resource_id, state=state)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CHANGES:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_CHANGES}", limit)
        params = {
            "txid": str(start[0]),
            "seq": start[1],
            "kind": kind,
            "resource_id": resource_id,
            "state": state,
            "limit": limit,
        }
        with self._db.reading() as conn:
            rows = conn.execute(self._db.sql["changes"], params).fetchall()
        entries = [self._change_out(row) for row in rows if row[3] is not None]
        if len(entries) == limit:
            end = (int(rows[-1][2]), int(rows[-1][3]))
        elif rows:
            # Nothing else up to the frontier matches the filters: read on from there next time.
            end = max(start, (int(rows[0][0]), int(rows[0][1])))
        else:
            end = start
        return Changes(entries, _position(*end))

    def latest_position(self) -> str:
        """The position of now: ``changes(after=latest_position())`` returns only what comes after.

        On PostgreSQL, entries that committed while an older transaction was still running may come
        too (the feed cannot yet tell them from what is still to come); nothing is ever missed.
        """
        with self._db.reading() as conn:
            row = conn.execute(self._db.sql["latest_position"]).fetchone()
        if row is None or row[1] is None:
            return BEGINNING
        return _position(int(row[0]), int(row[1]))

    def _parse_position(self, after: str | None) -> tuple[int, int]:
        if after is None:
            return 0, 0
        if (
            not isinstance(after, str)
            or _POSITION.fullmatch(after) is None
            or (not self._db.txid_positions and not after.startswith(_NO_TXID))
            or int(after[16:], 16) > _MAX_SEQ
        ):
            raise InvalidArgument(
                "after",
                "must be a position returned by changes() or latest_position() of this store "
                "(32 lowercase hexadecimal digits), or None for the beginning",
                after,
            )
        return int(after[:16], 16), int(after[16:], 16)

    def _change_out(self, row: Sequence[Any]) -> Change:
        at = self._db.time_out(row[10])
        assert at is not None
        return Change(
            position=_position(int(row[2]), int(row[3])),
            kind=row[12],
            seq=int(row[3]),
            resource_id=row[4],
            version=int(row[5]),
            event=row[6],
            from_state=row[7],
            to_state=row[8],
            actor=row[9],
            at=at,
            detail=self._db.json_out(row[11]),
        )
