"""The quota ledger the volume example keeps in the store's database, as tables the kind owns.

Reserve, commit, roll back and release are each one transaction. A reservation is keyed by an id the
caller chooses (a task's idempotency key), so a reservation made again after a crash finds the first
one instead of taking the quota twice. Every move checks the reservation's current state in the same
statement that changes it. The tables and their SQL live in this package
(:data:`VOLUME_TABLES`); the ledger reaches them through the store's
:class:`~tenure.store.protocol.TableStore` seam.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from tenure.errors import InvalidArgument, QuotaExceeded, QuotaNotFound
from tenure.store.database import Database, Executor
from tenure.store.protocol import TableStore
from tenure.store.tables import OwnedTables

__all__ = ["VOLUME_TABLES", "Quota", "Reservation", "ReservationState", "StoreQuotaLedger"]

#: The tables the volume example owns: quotas and reservations.
VOLUME_TABLES = OwnedTables("volume", "tenure.kinds.volume")


class ReservationState(enum.StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class Quota:
    """A project's limit for one resource, what it uses, and what reservations hold."""

    project: str
    resource: str
    hard_limit: int
    in_use: int
    reserved: int

    @property
    def available(self) -> int:
        return self.hard_limit - self.in_use - self.reserved


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    project: str
    resource: str
    amount: int
    state: ReservationState


_R = ReservationState

#: (from, to) -> how the quota's (reserved, in_use) change, per unit reserved.
_MOVES: dict[tuple[ReservationState, ReservationState], tuple[int, int]] = {
    (_R.RESERVED, _R.COMMITTED): (-1, +1),
    (_R.RESERVED, _R.ROLLED_BACK): (-1, 0),
    (_R.COMMITTED, _R.RELEASED): (0, -1),
}

#: States in which a reservation holds nothing any more.
_GIVEN_BACK = frozenset({_R.ROLLED_BACK, _R.RELEASED})


class StoreQuotaLedger:
    """Quotas and reservations in the store's database (a :class:`~tenure.kinds.volume.QuotaLedger`).

    The store must have been opened with :data:`VOLUME_TABLES` among its ``tables`` and migrated.
    """

    def __init__(self, store: TableStore) -> None:
        self._store = store
        self._db: Database = store.database
        self._sql: Mapping[str, str] = VOLUME_TABLES.queries(self._db.dialect)

    def set_quota(self, project: str, resource: str, hard_limit: int) -> Quota:
        """Create or change a project's limit for ``resource``."""
        if hard_limit < 0:
            raise InvalidArgument("hard_limit", "must be >= 0", hard_limit)
        with self._db.transaction() as tx:
            tx.execute(self._sql["upsert_quota"], (project, resource, hard_limit))
            return self._quota_in(tx, project, resource)

    def quota(self, project: str, resource: str) -> Quota:
        with self._db.reading() as conn:
            return self._quota_in(conn, project, resource)

    def _quota_in(self, conn: Executor, project: str, resource: str) -> Quota:
        row = conn.execute(self._sql["get_quota"], (project, resource)).fetchone()
        if row is None:
            raise QuotaNotFound(f"{project}/{resource}")
        return Quota(row[0], row[1], int(row[2]), int(row[3]), int(row[4]))

    def reservation(self, reservation_id: str) -> Reservation:
        with self._db.reading() as conn:
            found = self._reservation_in(conn, reservation_id)
        if found is None:
            raise QuotaNotFound(f"reservation {reservation_id}")
        return found

    def _reservation_in(self, conn: Executor, reservation_id: str) -> Reservation | None:
        row = conn.execute(self._sql["get_reservation"], (reservation_id,)).fetchone()
        if row is None:
            return None
        return Reservation(row[0], row[1], row[2], int(row[3]), ReservationState(row[4]))

    def reserve(self, reservation_id: str, project: str, resource: str, amount: int) -> Reservation:
        """Hold ``amount`` of the quota; the same id again returns the first reservation."""
        if amount <= 0:
            raise InvalidArgument("amount", "must be > 0", amount)
        now = self._db.time_in(self._store.now())
        with self._db.transaction() as tx:
            self._quota_in(tx, project, resource)  # a clear QuotaNotFound rather than a broken reference
            claimed = tx.execute(
                self._sql["insert_reservation"],
                (reservation_id, project, resource, amount, _R.RESERVED.value, now, now),
            ).rowcount
            if claimed != 1:
                existing = self._reservation_in(tx, reservation_id)
                if existing is None:
                    raise QuotaNotFound(f"reservation {reservation_id}")
                if (existing.project, existing.resource, existing.amount) != (project, resource, amount):
                    raise InvalidArgument(
                        "reservation_id",
                        f"is already used for {existing.amount} {existing.resource} of project {existing.project!r}",
                        reservation_id,
                    )
                return existing
            taken = tx.execute(self._sql["take_quota"], (amount, project, resource, amount)).rowcount
            if taken != 1:
                # Raising rolls the claimed reservation row back with the transaction.
                quota = self._quota_in(tx, project, resource)
                raise QuotaExceeded(
                    project=project,
                    resource=resource,
                    requested=amount,
                    available=quota.available,
                    hard_limit=quota.hard_limit,
                )
        return Reservation(reservation_id, project, resource, amount, _R.RESERVED)

    def commit_reservation(self, reservation_id: str) -> Reservation:
        """Turn a reservation into usage (idempotent)."""
        return self._move(reservation_id, _R.RESERVED, _R.COMMITTED)

    def rollback_reservation(self, reservation_id: str) -> Reservation:
        """Give a reservation back (idempotent; raises :class:`~tenure.errors.QuotaNotFound` for an unknown id)."""
        return self._move(reservation_id, _R.RESERVED, _R.ROLLED_BACK)

    def release_reservation(self, reservation_id: str) -> Reservation:
        """Give back the usage of a committed reservation (idempotent)."""
        return self._move(reservation_id, _R.COMMITTED, _R.RELEASED)

    def _move(self, reservation_id: str, source: ReservationState, target: ReservationState) -> Reservation:
        d_reserved, d_in_use = _MOVES[(source, target)]
        now = self._db.time_in(self._store.now())
        with self._db.transaction() as tx:
            found = self._reservation_in(tx, reservation_id)
            if found is None:
                raise QuotaNotFound(f"reservation {reservation_id}")
            if found.state is target or (found.state in _GIVEN_BACK and target in _GIVEN_BACK):
                # Already where this call wanted it (or given back the other way): nothing to do.
                return found
            if found.state is not source:
                raise InvalidArgument(
                    "reservation", f"must be {source.value} to become {target.value}", found.state.value
                )
            moved = tx.execute(self._sql["move_reservation"], (target.value, now, reservation_id, source.value))
            if moved.rowcount != 1:
                # A concurrent call moved it first: if it went where this one was going, that is
                # this call's answer too.
                again = self._reservation_in(tx, reservation_id)
                if again is not None and again.state is target:
                    return again
                raise InvalidArgument("reservation", "changed while being moved; try again", reservation_id)
            tx.execute(
                self._sql["adjust_quota"],
                (d_reserved * found.amount, d_in_use * found.amount, found.project, found.resource),
            )
        return Reservation(found.id, found.project, found.resource, found.amount, target)
