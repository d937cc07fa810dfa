"""Lookups on a declared kind, refusing transitions, guards, and spec validation."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import pytest

from tenure.errors import InvalidSpec, TransitionNotAllowed, UnknownEvent, UnknownState
from tenure.kinds.image import image
from tenure.machine import ANY, Event, Kind, Role, State, Subject, Transition


@dataclass(frozen=True)
class Thing:
    state: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)


def has_owner(subject: Subject) -> bool:
    return "owner" in subject.spec


@pytest.fixture(scope="module")
def kind() -> Kind:
    return Kind(
        "site",
        initial="draft",
        states=[
            State("draft", 1),
            State("building", 2, Role.WORK),
            State("waiting", 3, Role.WAIT, deadline=timedelta(seconds=60), on_deadline="timeout"),
            State("live", 4),
            State("gone", 9, Role.FINAL),
        ],
        events=[
            Event("build", "draft", "building"),
            Event("request", "building", "waiting"),
            Event("done", "waiting", "live"),
            Event("timeout", "waiting", "building"),
            Event("publish", "draft", "live", guard=has_owner),
            Event("retire", ANY, "gone"),
            Event("touch", "live", "live"),
        ],
    )


# --- allows / target / allowed_events ------------------------------------------------------------

EDGES = {
    ("draft", "build"): "building",
    ("draft", "publish"): "live",
    ("draft", "retire"): "gone",
    ("building", "request"): "waiting",
    ("building", "retire"): "gone",
    ("waiting", "done"): "live",
    ("waiting", "timeout"): "building",
    ("waiting", "retire"): "gone",
    ("live", "touch"): "live",
    ("live", "retire"): "gone",
}


def test_allows_and_target_match_the_graph(kind: Kind) -> None:
    for state in kind.states:
        for event in kind.event_names:
            expected = EDGES.get((state.name, event))
            assert kind.allows(state.name, event) is (expected is not None)
            if expected is not None:
                assert kind.target(state.name, event) == expected
            else:
                with pytest.raises(TransitionNotAllowed):
                    kind.target(state.name, event)


def test_allows_is_false_for_unknown_names(kind: Kind) -> None:
    assert not kind.allows("nowhere", "build")
    assert not kind.allows("draft", "fly")


def test_allows_and_target_ignore_guards(kind: Kind) -> None:
    assert kind.allows("draft", "publish")
    assert kind.target("draft", "publish") == "live"


def test_allowed_events_in_declaration_order(kind: Kind) -> None:
    assert kind.allowed_events("draft") == ("build", "publish", "retire")
    assert kind.allowed_events("building") == ("request", "retire")
    assert kind.allowed_events("waiting") == ("done", "timeout", "retire")
    assert kind.allowed_events("live") == ("retire", "touch")
    assert kind.allowed_events("gone") == ()


def test_transitions_from(kind: Kind) -> None:
    out = kind.transitions_from("waiting")
    assert list(out) == ["done", "timeout", "retire"]
    assert out["timeout"] == Transition("timeout", "waiting", "building")
    assert all(isinstance(t, Transition) and t.source == "waiting" for t in out.values())
    assert kind.transitions_from("draft")["publish"].guard is has_owner
    assert dict(kind.transitions_from("gone")) == {}


def test_transitions_from_is_read_only(kind: Kind) -> None:
    out = kind.transitions_from("draft")
    with pytest.raises(TypeError):
        out["fly"] = Transition("fly", "draft", "gone")  # type: ignore[index]
    assert not kind.allows("draft", "fly")


def test_sources(kind: Kind) -> None:
    assert kind.sources("build") == ("draft",)
    assert kind.sources("retire") == ("draft", "building", "waiting", "live")
    assert kind.sources("touch") == ("live",)


def test_sources_of_unknown_event(kind: Kind) -> None:
    with pytest.raises(UnknownEvent) as info:
        kind.sources("fly")
    assert info.value.event == "fly"
    assert info.value.kind == "site"
    assert info.value.known == kind.event_names


def test_state_lookups(kind: Kind) -> None:
    assert kind.state("waiting").code == 3
    assert kind.state("waiting").role is Role.WAIT
    assert kind.state_by_code(9).name == "gone"
    assert kind.has_state("live")
    assert not kind.has_state("Live")
    assert kind.has_event("retire")
    assert not kind.has_event("gone")
    for s in kind.states:
        assert kind.state(s.name) is s
        assert kind.state_by_code(s.code) is s


def test_unknown_state_lists_the_known_states(kind: Kind) -> None:
    with pytest.raises(UnknownState) as info:
        kind.state("nowhere")
    err = info.value
    assert (err.kind, err.state) == ("site", "nowhere")
    assert err.known == ("draft", "building", "waiting", "live", "gone")
    assert "'nowhere'" in str(err)
    assert "draft, building, waiting, live, gone" in str(err)


def test_unknown_code_lists_the_known_codes(kind: Kind) -> None:
    with pytest.raises(UnknownState) as info:
        kind.state_by_code(42)
    assert info.value.state == "42"
    assert info.value.known == ("1", "2", "3", "4", "9")


# --- transition() --------------------------------------------------------------------------------


def test_transition_returns_the_edge(kind: Kind) -> None:
    t = kind.transition("draft", "build")
    assert t == Transition("build", "draft", "building")
    assert kind.transition("live", "touch").target == "live"


def test_refused_transition_names_state_event_and_allowed_events(kind: Kind) -> None:
    with pytest.raises(TransitionNotAllowed) as info:
        kind.transition("building", "done")
    err = info.value
    assert err.kind == "site"
    assert err.state == "building"
    assert err.event == "done"
    assert err.allowed == ("request", "retire")
    assert err.resource_id is None
    assert err.reason is None
    message = str(err)
    assert "'done'" in message
    assert "'building'" in message
    assert "request, retire" in message
    assert "kind 'site'" in message


def test_refused_transition_names_the_resource(kind: Kind) -> None:
    with pytest.raises(TransitionNotAllowed) as info:
        kind.transition("live", "build", resource_id="r-17")
    assert info.value.resource_id == "r-17"
    assert "resource r-17 (site)" in str(info.value)


def test_nothing_is_allowed_in_a_final_state(kind: Kind) -> None:
    with pytest.raises(TransitionNotAllowed) as info:
        kind.transition("gone", "retire")
    assert info.value.allowed == ()
    assert "allowed events in 'gone': none" in str(info.value)


def test_target_refuses_like_transition(kind: Kind) -> None:
    with pytest.raises(TransitionNotAllowed) as info:
        kind.target("gone", "touch")
    assert (info.value.state, info.value.event, info.value.allowed) == ("gone", "touch", ())


@pytest.mark.parametrize("call", ["transition", "target"])
def test_undeclared_state(kind: Kind, call: str) -> None:
    with pytest.raises(UnknownState) as info:
        getattr(kind, call)("limbo", "build")
    assert info.value.state == "limbo"
    assert "draft" in info.value.known


@pytest.mark.parametrize("call", ["transition", "target"])
def test_undeclared_event(kind: Kind, call: str) -> None:
    with pytest.raises(UnknownEvent) as info:
        getattr(kind, call)("draft", "fly")
    assert info.value.event == "fly"
    assert info.value.known == ("build", "request", "done", "timeout", "publish", "retire", "touch")
    assert "'fly'" in str(info.value)


def test_undeclared_state_is_reported_before_undeclared_event(kind: Kind) -> None:
    with pytest.raises(UnknownState):
        kind.transition("limbo", "fly")


def test_unknown_names_are_not_transition_not_allowed(kind: Kind) -> None:
    with pytest.raises(UnknownEvent) as info:
        kind.transition("draft", "fly")
    assert not isinstance(info.value, TransitionNotAllowed)


# --- guards --------------------------------------------------------------------------------------


def test_guard_that_refuses(kind: Kind) -> None:
    with pytest.raises(TransitionNotAllowed) as info:
        kind.transition("draft", "publish", Thing("draft"), resource_id="r1")
    err = info.value
    assert err.reason is not None
    assert "has_owner" in err.reason
    assert "has_owner" in str(err)
    assert (err.state, err.event, err.resource_id) == ("draft", "publish", "r1")
    assert err.allowed == ("build", "publish", "retire")


def test_guarded_edge_without_subject_is_refused(kind: Kind) -> None:
    with pytest.raises(TransitionNotAllowed) as info:
        kind.transition("draft", "publish")
    assert info.value.reason is not None
    assert "has_owner" in info.value.reason


def test_guard_that_permits(kind: Kind) -> None:
    t = kind.transition("draft", "publish", Thing("draft", spec={"owner": "ann"}))
    assert t.target == "live"


def test_unguarded_edge_needs_no_subject(kind: Kind) -> None:
    assert kind.transition("draft", "build", None).target == "building"


def test_guard_sees_the_spec_and_data_of_the_subject() -> None:
    seen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def quota_left(subject: Subject) -> bool:
        seen.append((subject.state, dict(subject.spec), dict(subject.data)))
        return bool(subject.data.get("used", 0) < subject.spec.get("quota", 0))

    kind = Kind(
        "box",
        initial="open",
        states=[State("open", 1), State("closed", 2, Role.FINAL)],
        events=[Event("fill", "open", "open", guard=quota_left), Event("close", "open", "closed")],
    )
    ok = Thing("open", spec={"quota": 2}, data={"used": 1})
    full = Thing("open", spec={"quota": 2}, data={"used": 2})
    assert kind.transition("open", "fill", ok).target == "open"
    with pytest.raises(TransitionNotAllowed) as info:
        kind.transition("open", "fill", full)
    assert info.value.reason == "guard quota_left refused it"
    assert seen == [("open", {"quota": 2}, {"used": 1}), ("open", {"quota": 2}, {"used": 2})]


def test_guard_is_not_called_when_the_graph_refuses() -> None:
    calls: list[Subject] = []

    def spy(subject: Subject) -> bool:
        calls.append(subject)
        return True

    kind = Kind(
        "box",
        initial="open",
        states=[State("open", 1), State("closed", 2, Role.FINAL)],
        events=[Event("close", "open", "closed", guard=spy)],
    )
    with pytest.raises(TransitionNotAllowed):
        kind.transition("closed", "close", Thing("closed"))
    assert calls == []


# --- validate_spec without a model ----------------------------------------------------------------


def test_spec_none_is_an_empty_object(kind: Kind) -> None:
    assert kind.validate_spec(None) == {}


def test_spec_is_returned_as_plain_json_data(kind: Kind) -> None:
    spec = {"name": "x", "sizes": (1, 2), "nested": {"ok": True, "none": None}, "ratio": 0.5}
    out = kind.validate_spec(spec)
    assert type(out) is dict
    assert out == {"name": "x", "sizes": [1, 2], "nested": {"ok": True, "none": None}, "ratio": 0.5}
    assert out is not spec
    assert json.loads(json.dumps(out)) == out


def test_spec_result_is_a_copy(kind: Kind) -> None:
    spec: dict[str, Any] = {"tags": ["a"]}
    out = kind.validate_spec(spec)
    out["tags"].append("b")
    assert spec == {"tags": ["a"]}


def test_spec_may_be_any_mapping(kind: Kind) -> None:
    assert kind.validate_spec(MappingProxyType({"a": 1})) == {"a": 1}


def test_spec_keys_come_back_as_a_json_reader_sees_them(kind: Kind) -> None:
    assert kind.validate_spec({1: "one"}) == {"1": "one"}  # type: ignore[dict-item]


@pytest.mark.parametrize(("spec", "type_name"), [([1, 2], "list"), ("text", "str"), (3, "int"), ((("a", 1),), "tuple")])
def test_spec_must_be_a_mapping(kind: Kind, spec: Any, type_name: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        kind.validate_spec(spec)
    assert info.value.kind == "site"
    assert info.value.problems == (("spec", f"must be a JSON object, got {type_name}"),)


@pytest.mark.parametrize(
    "value",
    [{1, 2}, float("nan"), float("inf"), -math.inf, b"bytes", object(), {("tuple", "key"): 1}],
    ids=["set", "nan", "inf", "-inf", "bytes", "object", "tuple-key"],
)
def test_spec_must_be_json_serialisable(kind: Kind, value: Any) -> None:
    with pytest.raises(InvalidSpec) as info:
        kind.validate_spec({"field": value})
    (problem,) = info.value.problems
    assert problem[0] == "spec"
    assert "JSON-serialisable" in problem[1]


def test_circular_spec_is_invalid(kind: Kind) -> None:
    spec: dict[str, Any] = {}
    spec["me"] = spec
    with pytest.raises(InvalidSpec):
        kind.validate_spec(spec)


# --- validate_spec with a pydantic model (the image kind's ImageSpec) -------------------------------


def test_valid_image_spec_gets_defaults() -> None:
    out = image.validate_spec({"name": "ubuntu"})
    assert type(out) is dict
    assert out == {
        "name": "ubuntu",
        "disk_format": "raw",
        "container_format": "bare",
        "size_bytes": None,
        "visibility": "private",
    }
    assert json.loads(json.dumps(out)) == out


def test_full_image_spec_round_trips() -> None:
    spec = {"name": "win", "disk_format": "qcow2", "container_format": "ovf", "size_bytes": 10, "visibility": "public"}
    assert image.validate_spec(spec) == spec
    assert image.validate_spec(MappingProxyType(spec)) == spec


def only_problem(spec: Any) -> tuple[str, str]:
    with pytest.raises(InvalidSpec) as info:
        image.validate_spec(spec)
    assert info.value.kind == "image"
    (problem,) = info.value.problems
    field, constraint = problem
    assert field in str(info.value)
    assert constraint in str(info.value)
    return problem


def test_image_spec_missing_name() -> None:
    assert only_problem({"disk_format": "raw"}) == ("name", "Field required")
    assert only_problem(None) == ("name", "Field required")


def test_image_spec_wrong_type() -> None:
    field, constraint = only_problem({"name": 42})
    assert field == "name"
    assert "valid string" in constraint
    field, constraint = only_problem({"name": "x", "size_bytes": "lots"})
    assert field == "size_bytes"
    assert "valid integer" in constraint


def test_image_spec_extra_field_is_forbidden() -> None:
    assert only_problem({"name": "x", "colour": "red"}) == ("colour", "Extra inputs are not permitted")


def test_image_spec_pattern_violation() -> None:
    field, constraint = only_problem({"name": "x", "disk_format": "exe"})
    assert field == "disk_format"
    assert "pattern" in constraint
    assert "qcow2" in constraint


def test_image_spec_bounds() -> None:
    assert only_problem({"name": ""})[0] == "name"
    field, constraint = only_problem({"name": "x", "size_bytes": -1})
    assert field == "size_bytes"
    assert "greater than or equal to 0" in constraint


def test_image_spec_lists_every_problem() -> None:
    with pytest.raises(InvalidSpec) as info:
        image.validate_spec({"disk_format": "exe", "visibility": "everyone", "colour": "red"})
    fields = [f for f, _ in info.value.problems]
    assert sorted(fields) == ["colour", "disk_format", "name", "visibility"]
    assert all(isinstance(c, str) and c for _, c in info.value.problems)


def test_image_spec_must_be_a_mapping() -> None:
    assert only_problem(["name", "x"]) == ("spec", "must be a JSON object, got list")
