"""How many resources are in each state, read at the cost of the changes since the last read.

Counting a table of millions on every scrape grows with history: most resources are finished and
never change again. Instead the store keeps a count per (kind, state) in ``state_counts`` and folds
the journal into it: each journal row that changed a resource's state takes one from the state it
left and adds one to the one it entered. A read folds what was journaled since the last one (in
bounded batches, each its own short transaction) and then reads the counts, so it costs the
changes since, not the resources.

The fold follows the journal in commit order, as the change feed does (on PostgreSQL, by
``(txid, seq)`` below the oldest transaction still running), so no row is counted twice or
missed, and readers in several processes share the work: the position is a row, locked while a
batch is folded. A read adds to the folded counts the rows its snapshot sees beyond the position
(on PostgreSQL, those a long transaction elsewhere keeps above the horizon), so counts are exact as
of the read.

Whatever deletes journal rows (retention) must delete only rows already folded, and whatever
deletes a resource must take it off its state's count in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from tenure.errors import StoreUnavailable
from tenure.store.database import Database
from tenure.store.sqlfile import load_queries

__all__ = ["FOLD_BATCH", "StateCounts"]

#: Journal rows folded per transaction.
FOLD_BATCH = 20_000
#: Reads of the counts before giving up, should a fold move the position under each of them.
_READS = 8


@cache
def _queries(dialect: str) -> Mapping[str, str]:
    return load_queries(f"counts_{dialect}.sql")


class StateCounts:
    """The counts per (kind, state) of one database, and the fold that keeps them."""

    def __init__(self, db: Database, *, batch: int = FOLD_BATCH) -> None:
        self._db = db
        self._sql = _queries(db.dialect)
        self._batch = batch

    def fold(self) -> int:
        """Fold every journal row written since the last fold into the counts; returns how many."""
        total = 0
        while True:
            folded = self._fold_batch()
            total += folded
            if folded < self._batch:
                return total

    def _fold_batch(self) -> int:
        db, sql = self._db, self._sql
        with db.transaction() as tx:
            row = tx.execute(sql["position"]).fetchone()
            if row is None:
                tx.execute(sql["start"])
                row = tx.execute(sql["position"]).fetchone()
                assert row is not None, "the position row was just made"
            at: dict[str, Any] = {"txid": row[0], "seq": int(row[1]), "batch": self._batch}
            upto = tx.execute(sql["upto"], at).fetchone()
            if upto is None or upto[1] is None:
                return 0
            at["to_txid"], at["to_seq"] = upto[0], int(upto[1])
            tx.execute(sql["fold"], at)
            tx.execute(sql["advance"], at)
        return int(upto[2])

    def counts(self, kinds: Sequence[str]) -> dict[tuple[str, str], int]:
        """The counts of ``kinds``' states that hold any resource, exact as of the read.

        Cheap after a :meth:`fold` (it adds only what was journaled since).
        """
        db, sql = self._db, self._sql
        with db.reading() as conn:
            for _ in range(_READS):
                position = conn.execute(sql["read_position"]).fetchone()
                at = {
                    "txid": position[0] if position else "0",
                    "seq": int(position[1]) if position else 0,
                    "kinds": db.array_in(list(kinds)),
                }
                rows = conn.execute(sql["counts"], at).fetchall()
                if rows and rows[0][3]:
                    return {(row[0], row[1]): int(row[2]) for row in rows[1:]}
        raise StoreUnavailable(db.target, f"the counts moved under {_READS} reads in a row")

    def oldest(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], datetime]:
        """When the longest-staying resource of each (kind, state) entered it (pairs with none left out)."""
        if not pairs:
            return {}
        db = self._db
        out: dict[tuple[str, str], datetime] = {}
        with db.reading() as conn:
            for kind, state in pairs:
                row = conn.execute(self._sql["oldest"], (kind, state)).fetchone()
                when = db.time_out(row[0]) if row is not None else None
                if when is not None:
                    out[(kind, state)] = when
        return out
