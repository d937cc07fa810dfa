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
    assert image.allowed_events("pending_delete") == ("scrub", "restore", "delete")


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


# --- the moves, against Glance ------------------------------------------------------------------

#: ``Image.valid_state_targets`` from glance/domain/__init__.py in the openstack/glance repository,
#: copied as Glance writes it (current status -> the statuses it may jump to).
GLANCE_VALID_STATE_TARGETS: dict[str, tuple[str, ...]] = {
    "queued": ("saving", "uploading", "importing", "active", "deleted"),
    "saving": ("active", "killed", "deleted", "queued"),
    "uploading": ("importing", "queued", "deleted"),
    "importing": ("active", "deleted", "queued"),
    "active": ("pending_delete", "deleted", "deactivated"),
    "killed": ("deleted",),
    "pending_delete": ("deleted", "active"),
    "deleted": (),
    "deactivated": ("active", "deleted"),
}

GLANCE_MOVES = {(src, dst) for src, targets in GLANCE_VALID_STATE_TARGETS.items() for dst in targets}

#: Glance moves the kind leaves out on purpose (each one explained in the kind's docstring).
NOT_MODELLED = {("queued", "active")}

#: Moves the kind has that Glance forbids: none, and it should stay that way.
EXTRA_MOVES: set[tuple[str, str]] = set()

#: Every event with its sources and target: the names other code and tests fire.
EXPECTED_EVENTS: dict[str, tuple[tuple[str, ...], str]] = {
    "upload": (("queued",), "saving"),
    "stage": (("queued",), "uploading"),
    "import": (("queued", "uploading"), "importing"),
    "activate": (("saving", "importing"), "active"),
    "reset": (("saving", "uploading", "importing"), "queued"),
    "kill": (("saving",), "killed"),
    "deactivate": (("active",), "deactivated"),
    "reactivate": (("deactivated",), "active"),
    "delay_delete": (("active",), "pending_delete"),
    "scrub": (("pending_delete",), "deleted"),
    "restore": (("pending_delete",), "active"),
    "delete": (tuple(EXPECTED_STATES)[:-1], "deleted"),
}


def kind_moves() -> set[tuple[str, str]]:
    """Every (source, target) pair some event of the kind makes."""
    return {(s.name, t.target) for s in image.states for t in image.transitions_from(s.name).values()}


def test_glance_table_covers_exactly_the_kinds_states() -> None:
    assert set(GLANCE_VALID_STATE_TARGETS) == set(EXPECTED_STATES)
    assert len(GLANCE_MOVES) == 23


def test_the_kind_makes_exactly_glances_moves_less_the_documented_deviations() -> None:
    assert NOT_MODELLED <= GLANCE_MOVES
    assert EXTRA_MOVES.isdisjoint(GLANCE_MOVES)
    assert kind_moves() == (GLANCE_MOVES - NOT_MODELLED) | EXTRA_MOVES


@pytest.mark.parametrize("source", list(GLANCE_VALID_STATE_TARGETS))
def test_each_state_reaches_what_glance_allows_from_it(source: str) -> None:
    reached = {t.target for t in image.transitions_from(source).values()}
    expected = {dst for src, dst in GLANCE_MOVES - NOT_MODELLED if src == source}
    assert reached == expected, f"from {source!r}: kind {sorted(reached)}, Glance {sorted(expected)}"


def test_every_event_keeps_its_sources_and_target() -> None:
    assert set(image.event_names) == set(EXPECTED_EVENTS)
    for name, (sources, target) in EXPECTED_EVENTS.items():
        assert image.sources(name) == sources, name
        assert all(image.target(src, name) == target for src in sources), name


def test_queued_cannot_jump_to_active() -> None:
    """Deviation 1: no location in the spec, so data must pass through saving or importing."""
    assert "active" not in {t.target for t in image.transitions_from("queued").values()}
    assert image.allowed_events("queued") == ("upload", "stage", "import", "delete")


def test_only_active_enters_pending_delete() -> None:
    """Deviation 2: delay_delete is Glance's delete() under delayed_delete, and only from active."""
    assert [src for src, dst in kind_moves() if dst == "pending_delete"] == ["active"]
    assert image.target("active", "delay_delete") == "pending_delete"
    assert image.target("active", "delete") == "deleted"
    for state in ("queued", "saving", "uploading", "importing", "deactivated", "killed"):
        assert not image.allows(state, "delay_delete")


def test_delete_from_pending_delete_is_the_scrub_move() -> None:
    """Deviation 4: an early purge, the same pair as the scrubber's."""
    assert image.target("pending_delete", "delete") == image.target("pending_delete", "scrub") == "deleted"


def test_repeated_deactivate_and_reactivate_are_refused() -> None:
    """Deviation 5: Glance's no-ops are not moves, so the kind refuses them."""
    for state, event in (("deactivated", "deactivate"), ("active", "reactivate")):
        with pytest.raises(TransitionNotAllowed):
            image.transition(state, event)


def test_restore_undoes_a_delayed_delete() -> None:
    assert walk("active", "delay_delete", "restore") == "active"
    assert image.sources("restore") == ("pending_delete",)


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
