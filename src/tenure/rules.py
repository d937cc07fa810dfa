"""What a value must be to be stored: each rule once, called by every layer that takes values in.

PostgreSQL cannot keep U+0000 in ``text`` or ``jsonb``, so both stores refuse it everywhere and behave
alike; JSON values are checked to be plain, finite, not too deep; error texts are capped. The store,
the engine, the flow layer and the HTTP service all call these functions instead of keeping copies.

>>> refuse_nul(actor="ops")
>>> refuse_nul(actor="o\\x00ps")
Traceback (most recent call last):
    ...
tenure.errors.InvalidArgument: actor must not contain the NUL character (U+0000), got 'o\\x00ps'
>>> error_text("disk \\x00 full")
'disk \\\\x00 full'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tenure.errors import InvalidArgument, InvalidSpec, TooLarge

__all__ = [
    "MAX_DATA_BYTES",
    "MAX_ERROR_TEXT",
    "MAX_JSON_DEPTH",
    "MAX_SPEC_BYTES",
    "NUL",
    "NUL_RULE",
    "error_text",
    "json_object",
    "printable",
    "refuse_deep_json",
    "refuse_nul",
    "refuse_nul_json",
    "refuse_oversized",
]

NUL = "\x00"
NUL_RULE = "must not contain the NUL character (U+0000)"
#: The longest error text kept on a resource, a journal entry or a callback.
MAX_ERROR_TEXT = 4000
#: How deep JSON objects and arrays may nest in a spec, data or detail.
MAX_JSON_DEPTH = 32
#: The most a resource keeps, as compact JSON: its spec, and its data (which every write merges into).
MAX_SPEC_BYTES = 1024 * 1024
MAX_DATA_BYTES = 4 * 1024 * 1024


def refuse_nul(**fields: str | None) -> None:
    """Raise :class:`~tenure.errors.InvalidArgument` naming the first field whose text holds U+0000."""
    for name, value in fields.items():
        if value is not None and NUL in value:
            raise InvalidArgument(name, NUL_RULE, value)


def printable(text: str) -> str:
    """``text`` with U+0000 escaped, so that any database can keep it and people can still read it."""
    return text.replace(NUL, "\\x00")


def error_text(text: str) -> str:
    """An error as a resource keeps it: printable, and at most :data:`MAX_ERROR_TEXT` characters."""
    return printable(text)[:MAX_ERROR_TEXT]


def json_object(kind: str, field: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    """``value`` as a storable JSON object (None is the empty one), or :class:`~tenure.errors.InvalidSpec`.

    Refused, naming ``field``: not an object, not JSON (NaN and infinities included), nested deeper
    than :data:`MAX_JSON_DEPTH`, or holding U+0000 anywhere (keys included). Nothing is changed silently.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidSpec(kind, [(field, f"must be a JSON object, got {type(value).__name__}")])
    refuse_deep_json(kind, field, value)
    try:
        out: dict[str, Any] = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidSpec(kind, [(field, f"must be JSON-serialisable ({exc})")]) from None
    refuse_nul_json(kind, field, out)
    return out


def refuse_oversized(what: str, value: Any, limit: int) -> None:
    """Refuse (:class:`~tenure.errors.TooLarge`) a JSON value bigger than ``limit`` bytes as compact JSON."""
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limit:
        raise TooLarge(what, size, limit)


def refuse_deep_json(kind: str, field: str, value: Any) -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH`: it would be stored, then fail every reader."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            if depth > MAX_JSON_DEPTH:
                raise InvalidSpec(kind, [(field or "spec", f"must not nest deeper than {MAX_JSON_DEPTH} levels")])
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)


def refuse_nul_json(kind: str, field: str, value: Any) -> None:
    """Raise :class:`~tenure.errors.InvalidSpec` naming the first path in ``value`` (keys included) holding U+0000."""
    path = _nul_path(value)
    if path is not None:
        name = ".".join(p for p in (field, *path) if p) or "spec"
        raise InvalidSpec(kind, [(name, NUL_RULE)])


def _nul_path(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return () if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if NUL in key:
                return (key,)
            found = _nul_path(item)
            if found is not None:
                return (key, *found)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item)
            if found is not None:
                return (str(index), *found)
    return None
