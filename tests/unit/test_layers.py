"""The layering of the package, read from the source with ast: arrows point down only.

Adding a layer is one line in RULES (and, if only some layers may import it, one in ONLY_IMPORTED_BY).
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "tenure"


@dataclass(frozen=True)
class Rule:
    """What the modules of ``layer`` may import from tenure.

    ``may_import``: the only tenure packages/modules allowed (None: anything not forbidden).
    ``must_not_import``: tenure packages/modules that are never allowed.
    """

    layer: str
    may_import: frozenset[str] | None = None
    must_not_import: frozenset[str] = frozenset()


def allow(*names: str) -> frozenset[str]:
    return frozenset(names)


#: The modules that make a concrete store: only the store package (and open_store) builds one.
CONCRETE_STORES = ("tenure.store.assembly", "tenure.store.sqlite", "tenure.store.postgres")

RULES: tuple[Rule, ...] = (
    Rule("tenure.errors", may_import=allow("tenure.errors")),
    Rule("tenure.clock", may_import=allow("tenure.clock")),
    # What a value must be to be stored: every layer calls these rules, and they call nothing but errors.
    Rule("tenure.rules", may_import=allow("tenure.errors", "tenure.rules")),
    # The state machine knows nothing of how it is drawn: drawing reads kinds, never the other way round.
    Rule("tenure.machine", may_import=allow("tenure.errors", "tenure.machine"), must_not_import=allow("tenure.draw")),
    Rule("tenure.draw", may_import=allow("tenure.machine", "tenure.draw")),
    # The store keeps flow runs for the flow layer, in the flow layer's own row types.
    Rule(
        "tenure.store",
        may_import=allow(
            "tenure.errors", "tenure.clock", "tenure.rules", "tenure.machine", "tenure.flow", "tenure.store"
        ),
    ),
    # Kinds reach the store through its seams only (protocols, the tables they own): see ONLY_IMPORTED_BY.
    Rule("tenure.kinds", must_not_import=allow("tenure.cli")),
    # Flows checkpoint through the FlowRunStore protocol they declare themselves: they import no store.
    Rule(
        "tenure.flow",
        may_import=allow("tenure.errors", "tenure.clock", "tenure.rules", "tenure.machine", "tenure.flow"),
    ),
    Rule("tenure.engine", must_not_import=allow("tenure.kinds", "tenure.service", "tenure.cli")),
    # The service knows the engine and the store, never the example kinds or the command line.
    Rule("tenure.service", must_not_import=allow("tenure.kinds", "tenure.cli")),
)

#: Layers that need nothing but the standard library (and the tenure layers RULES lets them import).
STDLIB_ONLY: tuple[str, ...] = ("tenure.draw",)

#: target -> the only layers that may import it.
ONLY_IMPORTED_BY: dict[str, frozenset[str]] = {
    # ``python -m tenure`` is the command line too.
    "tenure.cli": allow("tenure.cli", "tenure.__main__"),
    # Callers depend on the store's protocols; open_store is the one place a concrete store is built.
    **{concrete: allow("tenure.store") for concrete in CONCRETE_STORES},
}


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def iter_modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield module_name(path), path


KNOWN_MODULES = {name for name, _ in iter_modules()}


def imports_of(module: str, source: str, *, is_package: bool = False) -> set[str]:
    """Every tenure module ``module`` imports, anywhere in its body (top level, functions, TYPE_CHECKING)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in KNOWN_MODULES else target)
    return {name for name in found if within(name, "tenure")}


def violations(module: str, imported: set[str]) -> list[str]:
    out: list[str] = []
    for rule in RULES:
        if not within(module, rule.layer):
            continue
        for name in sorted(imported):
            if rule.may_import is not None and not any(within(name, ok) for ok in rule.may_import):
                out.append(f"{module} imports {name}; {rule.layer} may only import {sorted(rule.may_import)}")
            if any(within(name, bad) for bad in rule.must_not_import):
                out.append(f"{module} imports {name}; {rule.layer} must not import {sorted(rule.must_not_import)}")
    for target, importers in ONLY_IMPORTED_BY.items():
        if any(within(module, ok) for ok in importers):
            continue
        out.extend(
            f"{module} imports {name}; only {sorted(importers)} may import {target}"
            for name in sorted(imported)
            if within(name, target)
        )
    return out


def outside_imports(source: str) -> set[str]:
    """The top-level name of every absolute import in ``source`` (``os`` for ``from os.path import join``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.partition(".")[0])
    return found


@functools.cache
def all_imports() -> dict[str, set[str]]:
    return {
        name: imports_of(name, path.read_text(encoding="utf-8"), is_package=path.name == "__init__.py")
        for name, path in iter_modules()
    }


# --- the package obeys the rules -----------------------------------------------------------------


def test_the_walk_sees_the_layers() -> None:
    names = KNOWN_MODULES
    expected = {"tenure", "tenure.errors", "tenure.clock", "tenure.machine.kind", "tenure.store", "tenure.kinds.image"}
    assert expected <= names
    assert {"tenure.draw", "tenure.draw.svg", "tenure.draw.text"} <= names
    imports = all_imports()
    assert "tenure.errors" in imports["tenure.machine.kind"]
    assert "tenure.machine.parts" in imports["tenure.machine.validation"]
    assert "tenure.machine" in imports["tenure.kinds.image"]
    assert "tenure.machine" in imports["tenure.draw.text"]


@pytest.mark.parametrize("module", sorted(KNOWN_MODULES))
def test_module_respects_the_layers(module: str) -> None:
    assert violations(module, all_imports()[module]) == []


@pytest.mark.parametrize("module", sorted(m for m in KNOWN_MODULES if any(within(m, layer) for layer in STDLIB_ONLY)))
def test_module_needs_only_the_standard_library(module: str) -> None:
    path = dict(iter_modules())[module]
    found = outside_imports(path.read_text(encoding="utf-8"))
    assert sorted(found - set(sys.stdlib_module_names) - {"tenure"}) == []


def test_rule_table_is_well_formed() -> None:
    layers = [rule.layer for rule in RULES]
    assert len(layers) == len(set(layers))
    for rule in RULES:
        assert rule.layer.startswith("tenure.")
        assert rule.may_import is None or rule.layer in rule.may_import, "a layer may always import itself"
        assert rule.layer not in rule.must_not_import


# --- the checker itself catches what it should ---------------------------------------------------


def test_checker_resolves_absolute_relative_and_nested_imports() -> None:
    source = "\n".join(
        [
            "import os",
            "import tenure.store",
            "from tenure import errors",
            "from tenure import Kind",
            "from . import parts",
            "from .kind import Kind",
            "from ..cli import main",
            "def late():",
            "    from tenure.clock import system_clock",
            "if TYPE_CHECKING:",
            "    from tenure.kinds.image import image",
        ]
    )
    assert imports_of("tenure.machine.fake", source) == {
        "tenure.store",
        "tenure.errors",
        "tenure",
        "tenure.machine.parts",
        "tenure.machine.kind",
        "tenure.cli",
        "tenure.clock",
        "tenure.kinds.image",
    }
    assert imports_of("tenure.machine", "from .parts import State", is_package=True) == {"tenure.machine.parts"}


def test_checker_reports_machine_importing_store_or_the_facade() -> None:
    found = violations("tenure.machine.kind", {"tenure.errors", "tenure.machine.parts", "tenure.store", "tenure"})
    assert len(found) == 2
    assert any("imports tenure.store" in v for v in found)
    assert any("imports tenure;" in v for v in found)


def test_checker_reports_machine_importing_draw() -> None:
    # Even a lazy import inside a method counts (imports_of walks function bodies too).
    found = violations("tenure.machine.kind", {"tenure.errors", "tenure.machine.parts", "tenure.draw.svg"})
    assert any("must not import ['tenure.draw']" in v for v in found)
    assert violations("tenure.machine.kind", {"tenure.errors", "tenure.machine.parts"}) == []


def test_checker_lets_draw_import_only_the_machine() -> None:
    assert violations("tenure.draw.svg", {"tenure.machine", "tenure.machine.validation", "tenure.draw._layout"}) == []
    for other in ("tenure.errors", "tenure.store", "tenure.engine", "tenure.service", "tenure"):
        assert violations("tenure.draw.text", {"tenure.machine", other}) != [], other


def test_outside_imports_sees_third_party_packages_but_not_relative_imports() -> None:
    source = "import os.path\nimport pydantic\nfrom xml.etree import ElementTree\nfrom . import parts\n"
    source += "def late():\n    from fastapi import APIRouter\n"
    assert outside_imports(source) == {"os", "pydantic", "xml", "fastapi"}
    assert sorted(outside_imports(source) - set(sys.stdlib_module_names)) == ["fastapi", "pydantic"]


def test_checker_reports_store_importing_kinds() -> None:
    assert violations("tenure.store.core", {"tenure.clock", "tenure.kinds.image"}) != []
    assert violations("tenure.store.core", {"tenure.clock", "tenure.machine", "tenure.errors"}) == []


def test_checker_reports_kinds_importing_a_concrete_store_or_cli() -> None:
    found = violations("tenure.kinds.image", {"tenure.machine", "tenure.store.sqlite", "tenure.cli"})
    assert len(found) == 3  # a concrete store (only the store builds one), cli (kinds rule), cli (only cli imports cli)
    assert violations("tenure.kinds.volume.ledger", {"tenure.store.protocol", "tenure.store.tables"}) == []


def test_checker_reports_any_layer_importing_a_concrete_store() -> None:
    for module in ("tenure.service.app", "tenure.engine.worker", "tenure.cli.worker", "tenure.flow.engine"):
        assert violations(module, {"tenure.store.assembly"}) != []
    assert violations("tenure.store.url", {"tenure.store.sqlite", "tenure.store.postgres"}) == []


def test_checker_lets_only_cli_import_cli() -> None:
    assert violations("tenure.cli.inspect", {"tenure.cli", "tenure.store"}) == []
    assert violations("tenure", {"tenure.cli"}) != []
    assert violations("tenure.engine.worker", {"tenure.cli.main"}) != []
