"""The way to a desired state through a kind's graph: what is reachable, and the first event of a shortest path."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tenure.kinds.image import image
from tenure.machine import ANY, Event, Kind, Role, State
from tenure.machine.graph import next_hop, reachable_states
from tenure.store.desired import desire_pending
from tenure.store.model import Resource

#: Two equally short ways from a to d (by b, declared first, and by c), a longer one, and a dead end.
diamond = Kind(
    "diamond",
    initial="a",
    states=[
        State("a", 1, Role.REST),
        State("b", 2, Role.WORK),
        State("c", 3, Role.WORK),
        State("d", 4, Role.REST),
        State("e", 5, Role.REST),
        State("z", 9, Role.FINAL),
    ],
    events=[
        Event("long", "a", "e"),
        Event("to_b", "a", "b"),
        Event("to_c", "a", "c"),
        Event("b_to_d", "b", "d"),
        Event("c_to_d", "c", "d"),
        Event("e_to_b", "e", "b"),
        Event("end", ANY, "z"),
    ],
)


def test_reachable_states_include_the_state_itself_in_declaration_order() -> None:
    assert reachable_states(diamond, "a") == ["a", "b", "c", "d", "e", "z"]
    assert reachable_states(diamond, "d") == ["d", "z"]
    assert reachable_states(diamond, "z") == ["z"]
    assert reachable_states(image, "active") == ["active", "deactivated", "pending_delete", "deleted"]


def test_the_first_event_of_a_shortest_path_ties_broken_by_declaration_order() -> None:
    assert next_hop(diamond, "a", "d") == "to_b"  # not 'long' (three events), and to_b before to_c
    assert next_hop(diamond, "e", "d") == "e_to_b"
    assert next_hop(diamond, "a", "z") == "end"
    assert next_hop(image, "active", "deleted") == "delete"
    assert next_hop(image, "queued", "active") == "upload"  # upload and import both take two events


@pytest.mark.parametrize(("state", "desired"), [("d", "d"), ("d", "a"), ("z", "d")])
def test_no_hop_where_there_is_no_need_or_no_way(state: str, desired: str) -> None:
    assert next_hop(diamond, state, desired) is None


def _resource(state: str, desired: str | None, generation: int, observed: int) -> Resource:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    return Resource(
        "r", "diamond", state, 1, {}, {}, desired, generation, observed, True, None, 0, now, None, None,
        None, None, None, None, now, now,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("state", "desired", "generation", "observed", "pending"),
    [
        ("a", "d", 2, 0, True),
        ("a", "d", 2, 2, False),  # the engine is done with this generation
        ("d", "d", 2, 0, False),  # there already
        ("a", None, 2, 0, False),
    ],
)
def test_a_desire_is_pending_while_unmet_and_unobserved(
    state: str, desired: str | None, generation: int, observed: int, pending: bool
) -> None:
    assert desire_pending(_resource(state, desired, generation, observed)) is pending
