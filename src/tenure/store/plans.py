"""Queries planned before any database is touched."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["PageQuery"]


@dataclass(slots=True)
class PageQuery:
    """One page of ``list``: the filters (None: not filtered), the keyset cursor and the page size."""

    kind: str | None
    states: list[str] | None
    desired_state: str | None
    party: str | None
    #: A top-level key of ``data`` and the text it must hold (``("ended", "failed")``), or None.
    data: tuple[str, str] | None
    #: The store's clock: interests that expired by then do not count.
    now: datetime
    after: str | None
    limit: int
