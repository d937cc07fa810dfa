"""The built-in ``image`` kind: the Glance image status machine of seed 003."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tenure.errors import TenureError, TransitionNotAllowed
from tenure.kinds import builtin_kinds, load_kinds
from tenure.kinds.image import ImageSpec, image
from tenure.machine import Event, Kind, Role, State

EXPECTED_STATES = {
    "queued": (10, Role.REST),
    "saving": (20, Role.WORK),
    "uploading": (30, Role.REST),
    "importing": (40, Role.WORK),
    "active": (50, Role.REST),
    "deactivated": (60, Role.REST),
    "pending_delete": (70, Role.WAIT),
    "killed": (80, Role.REST),
    "deleted": (90, Role.FINAL),
}


def walk(state: str, *events: str) -> str:
    for event in events:
        state = image.transition(state, event).target
    return state


def test_states_codes_and_roles() -> None:
    assert {s.name: (s.code, s.role) for s in image.states} == EXPECTED_STATES
    assert image.name == "image"
    assert image.initial.name == "queued"
    assert image.spec_model is ImageSpec


def test_codes_are_unique_and_stable() -> None:
    codes = [s.code for s in image.states]
    assert len(set(codes)) == len(codes)
    for name, (code, _) in EXPECTED_STATES.items():
        assert image.state_by_code(code).name == name


def test_delete_works_from_every_non_final_state() -> None:
    non_final = [s.name for s in image.states if not s.is_final]
    assert len(non_final) == 8
    for name in non_final:
        assert image.transition(name, "delete").target == "deleted"
    assert image.sources("delete") == tuple(non_final)


def test_deleted_is_final_and_nothing_leaves_it() -> None:
    deleted = image.state("deleted")
    assert deleted.is_final
    assert image.states_with_role(Role.FINAL) == (deleted,)
    assert image.allowed_events("deleted") == ()
    for event in image.event_names:
        assert not image.allows("deleted", event)


def test_pending_delete_waits_for_the_scrubber() -> None:
    pending = image.state("pending_delete")
    assert pending.role is Role.WAIT
    assert pending.deadline == timedelta(days=1)
    assert pending.on_deadline == "scrub"
    assert image.target("pending_delete", "scrub") == "deleted"
    assert image.allowed_events("pending_delete") == ("scrub", "delete")


def test_killed_can_only_be_deleted() -> None:
    assert image.allowed_events("killed") == ("delete",)


def test_upload_path() -> None:
    assert walk("queued", "upload", "activate") == "active"


def test_interoperable_import_path() -> None:
    assert walk("queued", "stage", "import", "activate") == "active"
    assert walk("queued", "import", "activate") == "active"


def test_deactivation_round_trip_and_delayed_delete() -> None:
    assert walk("active", "deactivate", "reactivate", "delay_delete", "scrub") == "deleted"


def test_failed_write_paths() -> None:
    assert walk("queued", "upload", "kill", "delete") == "deleted"
    for state in ("saving", "uploading", "importing"):
        assert image.transition(state, "reset").target == "queued"


@pytest.mark.parametrize(
    ("state", "event"),
    [
        ("queued", "activate"),
        ("active", "upload"),
        ("killed", "activate"),
        ("deleted", "delete"),
        ("pending_delete", "reactivate"),
        ("deactivated", "delay_delete"),
        ("active", "scrub"),
        ("uploading", "upload"),
    ],
)
def test_illegal_transitions_are_refused(state: str, event: str) -> None:
    with pytest.raises(TransitionNotAllowed) as info:
        image.transition(state, event, resource_id="img-1")
    err = info.value
    assert (err.kind, err.state, err.event, err.resource_id) == ("image", state, event, "img-1")
    assert err.allowed == image.allowed_events(state)
    assert repr(state) in str(err)
    assert repr(event) in str(err)


def test_every_state_is_described() -> None:
    assert all(s.description for s in image.states)


def test_describe_is_json_ready_and_complete() -> None:
    d = image.describe()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert [s["name"] for s in d["states"]] == list(EXPECTED_STATES)
    assert {s["name"]: s["code"] for s in d["states"]} == {n: c for n, (c, _) in EXPECTED_STATES.items()}
    pending = next(s for s in d["states"] if s["name"] == "pending_delete")
    assert pending["deadline_seconds"] == 86400
    assert pending["on_deadline"] == "scrub"
    assert {e["name"] for e in d["events"]} == set(image.event_names)


# --- the kinds package ---------------------------------------------------------------------------


def test_builtin_kinds_include_image() -> None:
    kinds = builtin_kinds()
    assert image in kinds
    assert all(isinstance(k, Kind) for k in kinds)
    names = [k.name for k in kinds]
    assert len(names) == len(set(names))


def test_load_kinds_by_module_and_by_attribute() -> None:
    assert load_kinds(["tenure.kinds.image"]) == (image,)
    assert load_kinds(["tenure.kinds.image:image"]) == (image,)
    assert load_kinds([]) == ()


@pytest.fixture
def user_module() -> Iterator[str]:
    name = "tenure_test_user_kinds"
    module = types.ModuleType(name)
    lamp = Kind(
        "lamp",
        states=[State("off", 0), State("gone", 1, Role.FINAL)],
        events=[Event("rm", "off", "gone")],
        initial="off",
    )
    module.lamp = lamp  # type: ignore[attr-defined]
    module.not_a_kind = 42  # type: ignore[attr-defined]
    sys.modules[name] = module
    yield name
    del sys.modules[name]


def test_load_kinds_from_a_user_module(user_module: str) -> None:
    (lamp,) = load_kinds([user_module])
    assert lamp.name == "lamp"
    assert load_kinds([f"{user_module}:lamp", "tenure.kinds.image"]) == (lamp, image)


def test_load_kinds_errors(user_module: str) -> None:
    with pytest.raises(TenureError, match="cannot import kinds from 'no_such_module_xyz'"):
        load_kinds(["no_such_module_xyz"])
    with pytest.raises(TenureError, match="is not a Kind"):
        load_kinds([f"{user_module}:not_a_kind"])
    with pytest.raises(TenureError, match="no kind named 'missing'"):
        load_kinds([f"{user_module}:missing"])
    with pytest.raises(TenureError, match="defines no Kind"):
        load_kinds(["tenure.errors"])
