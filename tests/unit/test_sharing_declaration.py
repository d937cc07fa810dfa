"""Sharing is declared with the kind and validated there; the use policy and party URIs are checked alone.

``Kind(sharing=Sharing(teardown=..., torn_down=..., usable=[...]))`` is refused with one InvalidKind
listing every problem: an unknown event or state, a usable state that is final, no usable state, a
teardown event leaving a state parties cannot use, a torn-down state that is usable or not reached
after the teardown event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta

import pytest

from tenure.errors import InvalidArgument, InvalidKind
from tenure.kinds.deployment import deployment
from tenure.kinds.image import image
from tenure.machine import ANY, Event, Kind, Role, Sharing, State
from tenure.machine.sharing import sharing_problems
from tenure.store.uses import MAX_PARTY, UsePolicy, check_party, usable_states

# --- helpers -------------------------------------------------------------------------------------


def states() -> list[State]:
    """ready and paused (rest) -> tearing (work) -> gone (final); deploying (work) -> ready."""
    return [
        State("deploying", 1, Role.WORK),
        State("ready", 2, Role.REST),
        State("paused", 3, Role.REST),
        State("tearing", 4, Role.WORK),
        State("gone", 9, Role.FINAL),
    ]


def events(teardown_from: str | Sequence[str] = ("ready", "paused")) -> list[Event]:
    return [
        Event("deployed", "deploying", "ready"),
        Event("pause", "ready", "paused"),
        Event("resume", "paused", "ready"),
        Event("teardown", teardown_from, "tearing"),
        Event("finish", "tearing", "gone"),
    ]


def shared(
    *,
    teardown: str = "teardown",
    torn_down: str = "gone",
    usable: Sequence[str] = ("deploying", "ready", "paused"),
    kind_states: Sequence[State] | None = None,
    kind_events: Sequence[Event] | None = None,
    initial: str = "deploying",
) -> Kind:
    return Kind(
        "k",
        states=states() if kind_states is None else kind_states,
        events=events() if kind_events is None else kind_events,
        initial=initial,
        sharing=Sharing(teardown=teardown, torn_down=torn_down, usable=usable),
    )


def problems_of(**kwargs: object) -> tuple[str, ...]:
    with pytest.raises(InvalidKind) as caught:
        shared(**kwargs)  # type: ignore[arg-type]
    assert caught.value.kind == "k"
    assert all(p.startswith("sharing: ") for p in caught.value.problems), caught.value.problems
    return caught.value.problems


def one_problem(*fragments: str, **kwargs: object) -> str:
    problems = problems_of(**kwargs)
    assert len(problems) == 1, problems
    assert all(f in problems[0] for f in fragments), problems[0]
    return problems[0]


# --- valid declarations --------------------------------------------------------------------------


def test_a_valid_sharing_is_kept_on_the_kind_and_described() -> None:
    kind = shared()
    assert kind.sharing == Sharing(teardown="teardown", torn_down="gone", usable=["paused", "ready", "deploying"])
    assert kind.sharing.usable == frozenset({"deploying", "ready", "paused"})
    assert kind.describe()["sharing"] == {
        "teardown": "teardown",
        "torn_down": "gone",
        "usable": ["deploying", "paused", "ready"],
    }
    assert usable_states(kind) == ("deploying", "ready", "paused"), "in the kind's order of states"


def test_sharing_is_immutable_and_takes_any_iterable_of_usable_states() -> None:
    sharing = Sharing(teardown="teardown", torn_down="gone", usable=(s for s in ["ready", "ready"]))
    assert sharing.usable == frozenset({"ready"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        sharing.teardown = "other"  # type: ignore[misc]


def test_a_kind_without_sharing_has_none_and_every_state_but_the_final_ones_is_usable() -> None:
    assert image.sharing is None
    assert image.describe()["sharing"] is None
    assert "deleted" not in usable_states(image)
    assert usable_states(image) == tuple(s.name for s in image.states if s.role is not Role.FINAL)


def test_the_deployment_kind_declares_its_sharing() -> None:
    assert deployment.sharing == Sharing(teardown="undeploy", torn_down="undeployed", usable=["deploying", "deployed"])
    assert usable_states(deployment) == ("deploying", "deployed")


def test_a_teardown_event_from_any_state_is_fine_when_every_state_it_leaves_is_usable() -> None:
    kind_states = [State("ready", 1, Role.REST), State("tearing", 2, Role.WORK), State("gone", 9, Role.FINAL)]
    kind = Kind(
        "k",
        states=kind_states,
        events=[Event("teardown", "ready", "tearing"), Event("finish", "tearing", "gone")],
        initial="ready",
        sharing=Sharing(teardown="teardown", torn_down="gone", usable=["ready"]),
    )
    assert kind.sharing is not None
    # ANY takes in "tearing" too, which parties cannot use.
    problem = one_problem(
        "leaves states that are not usable",
        "(tearing)",
        usable=["ready"],
        kind_states=kind_states,
        kind_events=[Event("teardown", ANY, "tearing"), Event("finish", "tearing", "gone")],
        initial="ready",
    )
    assert "'teardown'" in problem


# --- what is refused -----------------------------------------------------------------------------


def test_an_unknown_teardown_event_is_refused() -> None:
    one_problem("teardown event 'explode'", "is not an event of the kind", teardown="explode")


def test_an_unknown_torn_down_state_is_refused() -> None:
    one_problem("torn_down state 'vanished'", "is not a state of the kind", torn_down="vanished")


def test_an_unknown_usable_state_is_refused() -> None:
    one_problem("usable state 'busy'", "is not a state of the kind", usable=["ready", "paused", "busy"])


def test_a_final_usable_state_is_refused() -> None:
    problems = problems_of(usable=["ready", "paused", "gone"])
    assert any("usable state 'gone' is final" in p for p in problems), problems


def test_no_usable_state_is_refused() -> None:
    problems = problems_of(usable=[])
    assert any("usable must name at least one state" in p for p in problems), problems


def test_a_teardown_leaving_a_state_parties_cannot_use_is_refused() -> None:
    one_problem("teardown event 'teardown' leaves states that are not usable (paused)", usable=["deploying", "ready"])


def test_a_usable_torn_down_state_is_refused() -> None:
    kind_states = [State("ready", 1, Role.REST), State("tearing", 2, Role.WORK), State("down", 3, Role.REST)]
    kind_events = [
        Event("teardown", "ready", "tearing"),
        Event("finish", "tearing", "down"),
        Event("up", "down", "ready"),
    ]
    with pytest.raises(InvalidKind) as caught:
        Kind(
            "k",
            states=kind_states,
            events=kind_events,
            initial="ready",
            sharing=Sharing(teardown="teardown", torn_down="down", usable=["ready", "down"]),
        )
    problems = caught.value.problems
    assert any("torn_down state 'down' cannot also be usable" in p for p in problems), problems


def test_a_torn_down_state_not_reached_after_the_teardown_is_refused() -> None:
    kind_states = [
        State("ready", 1, Role.REST),
        State("tearing", 2, Role.WORK),
        State("broken", 8, Role.FINAL),
        State("gone", 9, Role.FINAL),
    ]
    kind_events = [
        Event("teardown", "ready", "tearing"),
        Event("fail", "tearing", "broken"),
        Event("delete", "ready", "gone"),
    ]
    with pytest.raises(InvalidKind) as caught:
        Kind(
            "k",
            states=kind_states,
            events=kind_events,
            initial="ready",
            sharing=Sharing(teardown="teardown", torn_down="gone", usable=["ready"]),
        )
    assert caught.value.problems == ("sharing: torn_down state 'gone' is not reached after event 'teardown'",)


def test_every_problem_is_listed_at_once() -> None:
    problems = problems_of(teardown="explode", torn_down="vanished", usable=["busy", "gone"])
    assert len(problems) == 4, problems
    for fragment in ("'explode'", "'vanished'", "'busy'", "'gone' is final"):
        assert any(fragment in p for p in problems), (fragment, problems)


def test_sharing_problems_can_be_asked_without_declaring_a_kind() -> None:
    edges = {"ready": {"teardown": "tearing"}, "paused": {"teardown": "tearing"}, "tearing": {"finish": "gone"}}
    good = Sharing(teardown="teardown", torn_down="gone", usable=["ready", "paused"])
    assert sharing_problems(good, states(), events(), edges) == []
    cut = {"ready": {"teardown": "tearing"}, "paused": {"teardown": "tearing"}}
    assert sharing_problems(good, states(), events(), cut) == [
        "sharing: torn_down state 'gone' is not reached after event 'teardown'"
    ]


def test_the_kinds_own_problems_and_the_sharing_ones_come_together() -> None:
    with pytest.raises(InvalidKind) as caught:
        Kind(
            "k",
            states=[State("ready", 1, Role.REST), State("gone", 9, Role.FINAL), State("island", 5, Role.REST)],
            events=[Event("teardown", "ready", "gone"), Event("stay", "island", "gone")],
            initial="ready",
            sharing=Sharing(teardown="teardown", torn_down="nowhere", usable=["ready"]),
        )
    problems = caught.value.problems
    assert any("island" in p for p in problems), problems
    assert any("torn_down state 'nowhere'" in p for p in problems), problems


# --- the use policy ------------------------------------------------------------------------------


def test_the_default_policy_gives_an_hour_and_allows_a_day() -> None:
    policy = UsePolicy()
    assert (policy.default_ttl, policy.max_ttl) == (timedelta(hours=1), timedelta(days=1))
    assert policy.ttl(None) == timedelta(hours=1)
    assert policy.ttl(timedelta(days=1)) == timedelta(days=1)
    assert policy.ttl(timedelta(seconds=1)) == timedelta(seconds=1)


def test_the_default_ttl_never_exceeds_the_maximum() -> None:
    assert UsePolicy(default_ttl=timedelta(hours=2), max_ttl=timedelta(minutes=30)).ttl(None) == timedelta(minutes=30)


@pytest.mark.parametrize(
    ("asked", "got"),
    [
        (timedelta(days=1, seconds=1), 86401),
        (timedelta(0), 0),
        (timedelta(seconds=-5), -5),
        (timedelta(milliseconds=500), 0.5),
    ],
)
def test_a_ttl_outside_one_second_to_the_maximum_is_refused(asked: timedelta, got: float) -> None:
    with pytest.raises(InvalidArgument) as caught:
        UsePolicy().ttl(asked)
    assert (caught.value.field, caught.value.got) == ("ttl_seconds", got)
    assert "86400" in caught.value.constraint
    assert "renew" in caught.value.constraint


def test_the_refusal_names_the_field_the_caller_asks_for() -> None:
    with pytest.raises(InvalidArgument) as caught:
        UsePolicy(max_ttl=timedelta(minutes=10)).ttl(timedelta(hours=1), field="inUseBy.ttlSeconds")
    assert (caught.value.field, caught.value.got) == ("inUseBy.ttlSeconds", 3600)
    assert "600" in caught.value.constraint


def test_a_ttl_that_is_not_a_duration_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        UsePolicy().ttl(60)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.got) == ("ttl_seconds", 60)


def test_a_use_policy_is_a_value() -> None:
    assert UsePolicy() == UsePolicy(timedelta(hours=1), timedelta(days=1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        UsePolicy().max_ttl = timedelta(0)  # type: ignore[misc]


# --- party URIs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "party",
    [
        "tag:example.org,2026:ci/42",
        "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        "http://10.0.0.1/f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        "x:y",
        "a+b.c-d:e",
        "tag:é✓",
        "tag:" + "x" * (MAX_PARTY - 4),
    ],
)
def test_these_parties_are_accepted(party: str) -> None:
    assert check_party(party) == party


@pytest.mark.parametrize(
    "party",
    [
        None,
        42,
        b"tag:x",
        "",
        "alice",
        "tag:",
        ":x",
        "1tag:x",
        "-tag:x",
        "ta g:x",
        "tag:a b",
        "tag:a\tb",
        "tag:a\nb",
        "tag:a\x00b",
        "tag:a\x7fb",
        "tag:a\u00a0b",
        "tag:" + "x" * (MAX_PARTY - 3),
    ],
)
def test_these_parties_are_refused(party: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_party(party)
    assert (caught.value.field, caught.value.got) == ("party", party)
    assert "URI with a scheme" in caught.value.constraint
    assert str(MAX_PARTY) in caught.value.constraint
