"""Rows the store keeps for other layers: flow-run checkpoints and quota ledgers.

They are plain values (JSON-ready mappings, no flow or task objects): the flow layer turns its own
records into these and back, so the store never needs to know what a task is.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["FlowRunRow", "FlowTaskRow", "Quota", "Reservation", "ReservationState"]


@dataclass(frozen=True, slots=True)
class FlowRunRow:
    id: str
    flow: str
    version: int
    fingerprint: str
    state: str
    resource_id: str | None
    inputs: Mapping[str, Any]
    overrides: Mapping[str, Any] = field(default_factory=dict)
    retries: Mapping[str, int] = field(default_factory=dict)
    failure: Mapping[str, Any] | None = None
    pending_retry: Mapping[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class FlowTaskRow:
    task: str
    state: str
    attempt: int
    seq: int
    result: Any = None
    failure: Mapping[str, Any] | None = None
    revert_failure: Mapping[str, Any] | None = None
    inputs: Mapping[str, Any] | None = None


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
