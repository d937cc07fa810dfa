"""Built-in example kinds, and loading user kinds by import path."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from tenure.engine.steps import Steps
from tenure.errors import TenureError
from tenure.kinds.image import image
from tenure.kinds.transfer import transfer, transfer_steps
from tenure.kinds.volume import volume
from tenure.machine import Kind

__all__ = ["builtin_kinds", "builtin_steps", "load_kinds", "load_steps"]


def builtin_kinds() -> tuple[Kind, ...]:
    """The example kinds that ship with tenure."""
    return (image, transfer, volume)


def builtin_steps() -> Steps:
    """The engine steps of the example kinds, with in-memory plug-ins (for the demo and tests)."""
    return transfer_steps()


def load_kinds(paths: Iterable[str]) -> tuple[Kind, ...]:
    """Import each module path and collect the :class:`Kind` objects it defines at top level.

    ``"mypkg.kinds"`` loads every kind in that module; ``"mypkg.kinds:volume"`` loads one.
    """
    found: list[Kind] = []
    for path in paths:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise TenureError(f"cannot import kinds from {module_name!r}: {exc}") from None
        if attr:
            obj = getattr(module, attr, None)
            if not isinstance(obj, Kind):
                raise TenureError(f"{path!r} is not a Kind (module {module_name!r} has no kind named {attr!r})")
            found.append(obj)
            continue
        kinds = [v for v in vars(module).values() if isinstance(v, Kind)]
        kinds = list({id(k): k for k in kinds}.values())
        if not kinds:
            raise TenureError(f"module {module_name!r} defines no Kind at top level")
        found.extend(kinds)
    return tuple(found)


def load_steps(paths: Iterable[str]) -> Steps:
    """The :class:`Steps` objects each module path defines at top level, combined."""
    combined = Steps()
    for path in paths:
        module_name = path.partition(":")[0]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise TenureError(f"cannot import steps from {module_name!r}: {exc}") from None
        for value in vars(module).values():
            if isinstance(value, Steps):
                combined = combined | value
    return combined
