"""Declaring a kind: the parts (roles, states, events, transitions), the Kind object, describe()."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pydantic
import pytest

from tenure.machine import ANY, Event, Kind, Role, State, Transition


@dataclass(frozen=True)
class Thing:
    state: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)


def is_ready(subject: Any) -> bool:
    return bool(subject.data.get("ready"))


def make_kind() -> Kind:
    return Kind(
        "order",
        version=3,
        description="an order",
        initial="new",
        states=[
            State("new", 100, Role.REST, description="just created"),
            State("paying", 200, Role.WORK),
            State("awaiting_bank", 250, Role.WAIT, deadline=timedelta(minutes=10), on_deadline="bank_timeout"),
            State("paid", 300, Role.REST),
            State("cancelled", 900, Role.FINAL),
            State("shipped", 1000, Role.FINAL),
        ],
        events=[
            Event("pay", "new", "paying", description="customer pays"),
            Event("ask_bank", "paying", "awaiting_bank"),
            Event("bank_ok", "awaiting_bank", "paid"),
            Event("bank_timeout", "awaiting_bank", "paying"),
            Event("ship", "paid", "shipped", guard=is_ready),
            Event("cancel", ANY, "cancelled"),
            Event("note", ["new", "paid"], "new"),
            Event("note", "paying", "paying"),
        ],
    )


# --- parts ---------------------------------------------------------------------------------------


def test_roles() -> None:
    assert [r.value for r in Role] == ["work", "wait", "rest", "final"]
    assert Role("wait") is Role.WAIT


def test_any_is_star() -> None:
    assert ANY == "*"


def test_state_defaults() -> None:
    s = State("x", 5)
    assert (s.name, s.code, s.role, s.deadline, s.on_deadline, s.description) == ("x", 5, Role.REST, None, None, "")
    assert not s.is_final
    assert State("y", 6, Role.FINAL).is_final
    for role in (Role.WORK, Role.WAIT, Role.REST):
        assert not State("z", 1, role).is_final


def test_state_is_frozen_and_comparable() -> None:
    s = State("x", 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.code = 6  # type: ignore[misc]
    assert s == State("x", 5)
    assert hash(s) == hash(State("x", 5))
    assert s != State("x", 6)


def test_event_sources_are_normalised_to_a_tuple() -> None:
    assert Event("e", "a", "b").sources == ("a",)
    assert Event("e", ["a", "b"], "c").sources == ("a", "b")
    assert Event("e", (s for s in ("a", "b")), "c").sources == ("a", "b")
    assert Event("e", ANY, "c").sources == (ANY,)


def test_event_is_frozen_and_equality_ignores_guard() -> None:
    e = Event("e", "a", "b", guard=is_ready, description="d")
    assert (e.name, e.target, e.guard, e.description) == ("e", "b", is_ready, "d")
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.target = "c"  # type: ignore[misc]
    assert e == Event("e", "a", "b", description="d")


def test_transition_permits() -> None:
    free = Transition("e", "a", "b")
    assert free.permits(None)
    assert free.permits(Thing("a"))
    guarded = Transition("e", "a", "b", guard=is_ready)
    assert not guarded.permits(None)
    assert not guarded.permits(Thing("a"))
    assert guarded.permits(Thing("a", data={"ready": 1}))
    truthy = Transition("e", "a", "b", guard=lambda s: s.spec.get("n"))  # type: ignore[arg-type,return-value]
    assert truthy.permits(Thing("a", spec={"n": 3})) is True


# --- the Kind object -----------------------------------------------------------------------------


def test_kind_attributes() -> None:
    kind = make_kind()
    assert kind.name == "order"
    assert kind.version == 3
    assert kind.description == "an order"
    assert kind.spec_model is None
    assert kind.initial == State("new", 100, Role.REST, description="just created")
    assert isinstance(kind.states, tuple)
    assert isinstance(kind.events, tuple)
    assert [s.name for s in kind.states] == ["new", "paying", "awaiting_bank", "paid", "cancelled", "shipped"]
    assert len(kind.events) == 8
    assert kind.event_names == ("pay", "ask_bank", "bank_ok", "bank_timeout", "ship", "cancel", "note")
    assert repr(kind) == "Kind('order', states=6, events=7)"


def test_kind_defaults() -> None:
    kind = Kind("k", states=[State("only", 1, Role.FINAL)], events=[], initial="only")
    assert kind.version == 1
    assert kind.description == ""
    assert kind.spec_model is None


def test_kind_keeps_a_spec_model() -> None:
    class Spec(pydantic.BaseModel):
        size: int

    kind = Kind("k", states=[State("only", 1, Role.FINAL)], events=[], initial="only", spec_model=Spec)
    assert kind.spec_model is Spec


def test_kind_does_not_see_later_changes_to_the_declaration_lists() -> None:
    states = [State("a", 1), State("z", 2, Role.FINAL)]
    events = [Event("end", "a", "z")]
    kind = Kind("k", states=states, events=events, initial="a")
    states.append(State("late", 3))
    events.append(Event("late", "a", "a"))
    assert len(kind.states) == 2
    assert not kind.has_state("late")
    assert not kind.has_event("late")
    assert kind.allowed_events("a") == ("end",)


def test_kind_has_no_instance_dict() -> None:
    kind = make_kind()
    with pytest.raises(AttributeError):
        kind.extra = 1  # type: ignore[attr-defined]


def test_states_with_role() -> None:
    kind = make_kind()
    assert [s.name for s in kind.states_with_role(Role.REST)] == ["new", "paid"]
    assert [s.name for s in kind.states_with_role(Role.WORK)] == ["paying"]
    assert [s.name for s in kind.states_with_role(Role.WAIT)] == ["awaiting_bank"]
    assert [s.name for s in kind.states_with_role(Role.FINAL)] == ["cancelled", "shipped"]


def test_compiled_graph_matches_the_declaration() -> None:
    kind = make_kind()
    expected = {
        "new": {"pay": "paying", "cancel": "cancelled", "note": "new"},
        "paying": {"ask_bank": "awaiting_bank", "cancel": "cancelled", "note": "paying"},
        "awaiting_bank": {"bank_ok": "paid", "bank_timeout": "paying", "cancel": "cancelled"},
        "paid": {"ship": "shipped", "cancel": "cancelled", "note": "new"},
        "cancelled": {},
        "shipped": {},
    }
    actual = {s.name: {e: t.target for e, t in kind.transitions_from(s.name).items()} for s in kind.states}
    assert actual == expected


# --- describe ------------------------------------------------------------------------------------


def test_describe_is_json_ready() -> None:
    description = make_kind().describe()
    text = json.dumps(description, allow_nan=False)
    # Only JSON types inside: a round trip gives back an equal structure (no tuples, enums, timedeltas).
    assert json.loads(text) == description


def test_describe_is_complete() -> None:
    kind = make_kind()
    d = kind.describe()
    assert set(d) == {"name", "version", "description", "initial", "states", "events", "sharing"}
    assert (d["name"], d["version"], d["description"], d["initial"]) == ("order", 3, "an order", "new")
    assert d["sharing"] is None

    assert [s["name"] for s in d["states"]] == [s.name for s in kind.states]
    by_name = {s["name"]: s for s in d["states"]}
    for state in kind.states:
        entry = by_name[state.name]
        assert set(entry) == {
            "name",
            "code",
            "role",
            "deadline_seconds",
            "on_deadline",
            "on_failure",
            "max_attempts",
            "events",
            "description",
            "deprecated",
        }
        assert entry["deprecated"] is state.deprecated
        assert entry["on_failure"] == state.on_failure
        assert entry["max_attempts"] == (state.backoff.max_attempts if state.role is Role.WORK else None)
        assert entry["code"] == state.code
        assert entry["role"] == state.role.value
        assert entry["events"] == list(kind.allowed_events(state.name))
        assert entry["description"] == state.description
    assert by_name["awaiting_bank"]["deadline_seconds"] == 600
    assert by_name["awaiting_bank"]["on_deadline"] == "bank_timeout"
    assert by_name["new"]["deadline_seconds"] is None
    assert by_name["new"]["on_deadline"] is None
    assert by_name["new"]["description"] == "just created"
    assert by_name["shipped"]["events"] == []

    assert len(d["events"]) == len(kind.events)
    for entry, event in zip(d["events"], kind.events, strict=True):
        assert set(entry) == {"name", "sources", "target", "guarded", "engine_only", "description"}
        assert entry["engine_only"] is (event.name in kind.engine_events)
        assert entry["name"] == event.name
        assert entry["target"] == event.target
        assert entry["guarded"] is (event.guard is not None)
        assert entry["description"] == event.description
    events = d["events"]
    assert events[0]["description"] == "customer pays"
    assert next(e for e in events if e["name"] == "ship")["guarded"] is True
    assert next(e for e in events if e["name"] == "cancel")["sources"] == ["new", "paying", "awaiting_bank", "paid"]
    assert [e["sources"] for e in events if e["name"] == "note"] == [["new", "paid"], ["paying"]]
