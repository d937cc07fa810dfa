"""The quota ledger the api and delete flows charge volumes to (a tenure store is one)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["QuotaLedger", "ReservationView"]


class ReservationView(Protocol):
    """A quota reservation as a ledger reports it."""

    @property
    def id(self) -> str: ...

    @property
    def amount(self) -> int: ...

    @property
    def state(self) -> str:
        """``reserved``, ``committed``, ``rolled_back`` or ``released``."""
        ...


class QuotaLedger(Protocol):
    """The quota operations the flows use; both tenure stores provide them.

    ``reserve`` with an id that exists returns that reservation instead of reserving again; the
    moves are idempotent; a missing quota or reservation raises :class:`~tenure.errors.QuotaNotFound`,
    a reservation over the limit :class:`~tenure.errors.QuotaExceeded`.
    """

    def reserve(self, reservation_id: str, project: str, resource: str, amount: int) -> ReservationView: ...

    def reservation(self, reservation_id: str) -> ReservationView: ...

    def commit_reservation(self, reservation_id: str) -> ReservationView: ...

    def rollback_reservation(self, reservation_id: str) -> ReservationView: ...

    def release_reservation(self, reservation_id: str) -> ReservationView: ...
