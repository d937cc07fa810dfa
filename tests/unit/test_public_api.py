"""The top-level public API: what ``import tenure`` promises."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from typing import Any

import pytest

import tenure
import tenure.draw
import tenure.errors
import tenure.machine


def test_every_name_in_all_exists() -> None:
    missing = [name for name in tenure.__all__ if not hasattr(tenure, name)]
    assert missing == []


def test_all_has_no_duplicates() -> None:
    assert len(tenure.__all__) == len(set(tenure.__all__))


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, Any] = {}
    exec("from tenure import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(tenure.__all__)


@pytest.mark.parametrize("module", ["tenure.draw", "tenure.errors", "tenure.machine", "tenure.kinds", "tenure.store"])
def test_sub_package_all_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    assert [name for name in mod.__all__ if not hasattr(mod, name)] == []


def test_every_error_is_exported_at_the_top() -> None:
    classes = {
        name
        for name, obj in inspect.getmembers(tenure.errors, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == "tenure.errors"
    }
    assert classes <= set(tenure.__all__)
    for name in classes:
        assert getattr(tenure, name) is getattr(tenure.errors, name)


def test_machine_parts_are_the_same_objects_at_the_top() -> None:
    for name in ("ANY", "Event", "Kind", "Role", "State"):
        assert name in tenure.__all__
        assert getattr(tenure, name) is getattr(tenure.machine, name)


def test_drawing_is_its_own_package_not_kind_methods() -> None:
    assert tenure.draw.__all__ == sorted(tenure.draw.__all__)
    for name in ("to_dot", "to_mermaid", "to_svg"):
        assert callable(getattr(tenure.draw, name))
        # Drawing reads a kind from outside: the state machine has no drawing methods to keep in step.
        assert not hasattr(tenure.Kind, name)


def test_store_entry_points_are_exported() -> None:
    for name in ("Store", "EngineStore", "StepStore", "TableStore", "OwnedTables", "Resource", "JournalEntry", "Page"):
        assert name in tenure.__all__
    assert callable(tenure.open_store)


def test_the_store_package_offers_its_seams_not_its_concrete_classes() -> None:
    """Callers depend on protocols; open_store builds the concrete store, whose class is nobody's business."""
    import tenure.store

    concrete = {"DatabaseStore", "SQLiteStore", "PostgresStore", "SQLiteDatabase", "PostgresDatabase"}
    assert concrete.isdisjoint(tenure.store.__all__)
    assert concrete.isdisjoint(tenure.__all__)
    assert {"Store", "EngineStore", "StepStore", "TableStore", "open_store"} <= set(tenure.store.__all__)


def test_version_matches_the_distribution() -> None:
    assert isinstance(tenure.__version__, str)
    assert tenure.__version__ == importlib.metadata.version("tenure")


def test_a_kind_can_be_declared_and_used_from_the_top_level_only() -> None:
    lamp = tenure.Kind(
        "lamp",
        states=[tenure.State("off", 0), tenure.State("on", 1), tenure.State("broken", 9, tenure.Role.FINAL)],
        events=[
            tenure.Event("switch", "off", "on"),
            tenure.Event("switch", "on", "off"),
            tenure.Event("smash", tenure.ANY, "broken"),
        ],
        initial="off",
    )
    assert lamp.transition("off", "switch").target == "on"
    with pytest.raises(tenure.TransitionNotAllowed) as info:
        lamp.transition("broken", "switch")
    assert isinstance(info.value, tenure.TenureError)
    with pytest.raises(tenure.InvalidKind):
        tenure.Kind("bad", states=[tenure.State("x", 1)], events=[], initial="x")
