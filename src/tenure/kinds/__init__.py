"""Built-in example kinds, and loading user kinds by import path."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from tenure.errors import TenureError
from tenure.kinds.image import image
from tenure.kinds.volume import volume
from tenure.machine import Kind

__all__ = ["builtin_kinds", "load_kinds"]


def builtin_kinds() -> tuple[Kind, ...]:
    """The example kinds that ship with tenure."""
    return (image, volume)


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
        if not kinds:
            raise TenureError(f"module {module_name!r} defines no Kind at top level")
        found.extend(kinds)
    return tuple(found)
