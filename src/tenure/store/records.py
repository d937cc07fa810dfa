"""Rows of the quota ledger: limits per project and resource, and the reservations against them.

Flow-run rows are the flow layer's own (:mod:`tenure.flow.records`): the store keeps them for it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Quota", "Reservation", "ReservationState"]


class ReservationState(enum.StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class Quota:
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
