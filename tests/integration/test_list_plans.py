"""Every combination of list filters gives, page by page, exactly the resources the filters describe.

Each combination is read by walking one index (see :mod:`tenure.store.plans`); this pins that the walk
and the filters it checks on the way agree with the plain meaning of the filters, on both stores, for
any page size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tenure import Resource
from tenure.store import open_store
from tenure.store.plans import Driver, PageQuery
from tenure.store.protocol import EngineStore
from tests.kinds_for_tests import job, share
from tests.store_support import FakeClock

PARTIES = ("tag:example.com,2026:alpha", "tag:example.com,2026:beta")
STATES = {"job": ["pending", "waiting", "held", "done", "expired"], "share": ["ready", "paused", "tearing", "gone"]}


@dataclass
class Population:
    store: EngineStore
    clock: FakeClock
    #: Every resource, and the parties whose use of it is live.
    resources: list[Resource]
    users: dict[str, set[str]]


@pytest.fixture
def population(store_url: str, clock: FakeClock) -> Iterator[Population]:
    s = open_store(store_url, [job, share], clock=clock, check_schema=False)
    s.migrate()
    users: dict[str, set[str]] = {}
    try:
        for i in range(24):
            r = s.create("job", data={"ended": "failed"} if i % 5 == 0 else {"ended": "completed"})
            for event in (["request", "callback", "cancel"])[: i % 4]:
                r = s.fire(r, event)
            if i % 6 == 1:
                r = s.set_desired_state(r, "expired")
        for i in range(18):
            r = s.create("share", data={"ended": "failed"} if i % 4 == 0 else {})
            users[r.id] = set()
            for party in PARTIES[: i % 3]:
                r = s.use(r.id, party, ttl=timedelta(minutes=5 if party == PARTIES[0] else 60))
                users[r.id].add(party)
            if i % 3 == 0:
                r = s.fire(r, "pause")
            if i % 5 == 2:
                r = s.set_desired_state(r, "paused")
        # The alpha party's uses expire: they no longer count, though the rows are still there.
        clock.advance(timedelta(minutes=10))
        for parties in users.values():
            parties.discard(PARTIES[0])
        everything = sorted((s.get(r.id) for r in _all(s)), key=lambda r: r.id)
        yield Population(s, clock, everything, users)
    finally:
        s.close()


def _all(s: EngineStore) -> Iterator[Resource]:
    after = None
    while True:
        page = s.list(after=after, limit=7)
        yield from page.items
        if page.next_after is None:
            return
        after = page.next_after


@st.composite
def filters(draw: st.DrawFn) -> dict[str, object]:
    kind = draw(st.sampled_from([None, "job", "share"]))
    pool = STATES[kind] if kind else sorted({s for states in STATES.values() for s in states})
    states = draw(st.none() | st.lists(st.sampled_from(pool), max_size=3))
    desired = draw(st.sampled_from([None, "expired", "paused"] if kind is None else [None, STATES[kind][-1]]))
    if kind == "share" and desired is not None:
        desired = draw(st.sampled_from([None, "paused"]))
    return {
        "kind": kind,
        "state": states,
        "desired_state": desired,
        "party": draw(st.sampled_from([None, *PARTIES])),
        "data": draw(st.sampled_from([None, ("ended", "failed")])),
    }


def _matches(p: Population, r: Resource, f: dict[str, object]) -> bool:
    states = f["state"]
    data = f["data"]
    return (
        (f["kind"] is None or r.kind == f["kind"])
        and (states is None or r.state in states)  # type: ignore[operator]
        and (f["desired_state"] is None or r.desired_state == f["desired_state"])
        and (f["party"] is None or f["party"] in p.users.get(r.id, set()))
        and (data is None or r.data.get(data[0]) == data[1])  # type: ignore[index]
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=filters(), limit=st.integers(min_value=1, max_value=9))
def test_every_filter_combination_pages_through_exactly_what_it_describes(
    population: Population, f: dict[str, object], limit: int
) -> None:
    want = [r.id for r in population.resources if _matches(population, r, f)]
    got: list[str] = []
    after = None
    for _ in range(100):
        page = population.store.list(after=after, limit=limit, **f)  # type: ignore[arg-type]
        got.extend(r.id for r in page.items)
        assert len(page.items) <= limit
        if page.next_after is None:
            break
        after = page.next_after
    assert got == want


def test_a_list_by_state_alone_finds_the_state_in_every_kind_stored(population: Population) -> None:
    held = [r.id for r in population.resources if r.state in ("held", "ready")]
    assert [r.id for r in population.store.list(state=["held", "ready"], limit=500).items] == held
    assert {r.kind for r in population.store.list(state=["held", "ready"], limit=500).items} == {"job", "share"}


@pytest.mark.parametrize(
    ("filters", "driver"),
    [
        ({"party": "tag:x", "kind": "job", "states": ["held"]}, Driver.PARTY),
        ({"kind": "job", "states": ["held"], "desired_state": "done"}, Driver.LANES),
        ({"kind": "job", "desired_state": "done"}, Driver.DESIRED),
        ({"kind": "job", "data": ("ended", "failed")}, Driver.KIND),
        ({"data": ("ended", "failed")}, Driver.ALL),
    ],
)
def test_a_page_walks_the_index_of_its_most_selective_filter(filters: dict[str, object], driver: Driver) -> None:
    args: dict[str, object] = {"kind": None, "states": None, "desired_state": None, "party": None, "data": None}
    args.update(filters)
    assert PageQuery.plan(**args).driver is driver  # type: ignore[arg-type]


def test_states_of_many_kinds_are_merged_lane_by_lane_up_to_a_bound() -> None:
    few = PageQuery.plan(
        kind=None, states=["a", "b"], desired_state=None, party=None, data=None, stored_kinds=["k1", "k2"]
    )
    assert few.driver is Driver.LANES
    assert few.lanes == [("k1", "a"), ("k1", "b"), ("k2", "a"), ("k2", "b")]
    kinds = [f"k{i}" for i in range(150)]
    many = PageQuery.plan(kind=None, states=["a", "b"], desired_state=None, party=None, data=None, stored_kinds=kinds)
    assert (many.driver, many.lanes) == (Driver.ALL, [])
