"""Planned writes: what a write will change, decided before any database is touched."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tenure.store.model import Resource

__all__ = ["CreatePlan", "FirePlan", "PageQuery"]


# Plans are internal and short-lived; plain slotted classes keep the hot path cheap.
@dataclass(slots=True)
class CreatePlan:
    resource: Resource
    actor: str | None


@dataclass(slots=True)
class FirePlan:
    """One compare-and-swap: move ``before`` (at its version) to ``after`` and journal it."""

    before: Resource
    after: Resource
    event: str
    data_changed: bool
    actor: str | None
    detail: Mapping[str, Any]


@dataclass(slots=True)
class PageQuery:
    """One page of :meth:`list`: the filters (None: not filtered), the keyset cursor and the page size."""

    kind: str | None
    states: list[str] | None
    desired_state: str | None
    party: str | None
    #: The store's clock as the dialect stores times: interests that expired by then do not count.
    now: Any
    after: str | None
    limit: int
