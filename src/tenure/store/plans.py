"""Queries planned before any database is touched: which index a page of ``list`` walks.

A page is read by walking one index in id order, so that it costs what it returns however many
resources the store holds; the filters the walk does not serve are checked on the rows it meets.
The walk is chosen from the filters given, most selective first:

========  ==============================================  ===========================================
driver    when                                            walks
========  ==============================================  ===========================================
party     a party is given                                the party's interests (party, resource_id)
lanes     states are given                                (kind, state, id): one range per lane, merged
desired   a desired state is given                        (desired_state, id)
kind      only a kind is given (with data, say)           (kind, id)
all       nothing but data                                the primary key
========  ==============================================  ===========================================

The filters a walk serves are not checked again on its rows: that would not change the rows, but
it could cost the walk its order (a planner may read ``state = ANY(...)`` or ``kind = 'x'`` as a
reason to walk another index and sort).

A *lane* is one (kind, state) pair: the kind given, or else every kind the store holds, times each
state asked for.

>>> PageQuery.plan(kind="transfer", states=["started"], desired_state=None, party=None, data=None).driver
<Driver.LANES: 'lanes'>
>>> PageQuery.plan(kind="transfer", states=None, desired_state=None, party="tag:a,2026:x", data=None).driver
<Driver.PARTY: 'party'>
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["MAX_LANES", "Driver", "PageQuery"]

#: The most lanes one page merges; beyond it (hundreds of kinds times states) the page walks the kind's
#: index or the primary key instead, checking the states on the rows it meets.
MAX_LANES = 200


class Driver(enum.StrEnum):
    """The index a page walks (the name of its SQL block is ``page_<driver>``)."""

    PARTY = "party"
    LANES = "lanes"
    DESIRED = "desired"
    KIND = "kind"
    ALL = "all"


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
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The last id of the previous page ('' for the first: every id sorts after it).
    after: str = ""
    limit: int = 100
    driver: Driver = Driver.ALL
    #: The (kind, state) pairs a LANES page merges.
    lanes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def key(self) -> str | None:
        """The value the walk is by: the party, the desired state or the kind (None for lanes and all)."""
        return {Driver.PARTY: self.party, Driver.DESIRED: self.desired_state, Driver.KIND: self.kind}.get(self.driver)

    @property
    def residual_kind(self) -> str | None:
        """The kind to check on the rows walked: none when the walk is by kind already."""
        return None if self.driver in (Driver.LANES, Driver.KIND) else self.kind

    @property
    def residual_states(self) -> list[str] | None:
        """The states to check on the rows walked: none when the lanes walked are those states."""
        return None if self.driver is Driver.LANES else self.states

    @property
    def residual_desired(self) -> str | None:
        """The desired state to check on the rows walked: none when the walk is by desired state."""
        return None if self.driver is Driver.DESIRED else self.desired_state

    @classmethod
    def plan(
        cls,
        *,
        kind: str | None,
        states: Sequence[str] | None,
        desired_state: str | None,
        party: str | None,
        data: tuple[str, str] | None,
        now: datetime | None = None,
        after: str | None = None,
        limit: int = 100,
        stored_kinds: Sequence[str] = (),
    ) -> PageQuery:
        """The page's query, its driver chosen from the filters; lanes span ``stored_kinds`` without a kind."""
        wanted = None if states is None else list(dict.fromkeys(states))
        if party is not None:
            driver = Driver.PARTY
        elif wanted is not None:
            driver = Driver.LANES
        elif desired_state is not None:
            driver = Driver.DESIRED
        elif kind is not None:
            driver = Driver.KIND
        else:
            driver = Driver.ALL
        query = cls(kind, wanted, desired_state, party, data, after=after or "", limit=limit, driver=driver)
        if now is not None:
            query.now = now
        if driver is Driver.LANES:
            kinds = [kind] if kind is not None else list(stored_kinds)
            query.lanes = [(k, s) for k in kinds for s in wanted or ()]
            if len(query.lanes) > MAX_LANES:
                query.driver, query.lanes = (Driver.ALL if kind is None else Driver.KIND), []
        return query
