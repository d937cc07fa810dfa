"""Named SQL blocks, kept in ``.sql`` files beside the code that runs them.

A file holds blocks introduced by ``-- name: <block>`` lines; everything up to the next such line
is that block's SQL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

__all__ = ["load_queries"]

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def load_queries(filename: str, package: str = "tenure.store") -> Mapping[str, str]:
    """The blocks of ``sql/<filename>`` in ``package`` (tenure's own: ``tenure/store/sql/``), by name."""
    text = resources.files(package).joinpath("sql", filename).read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{filename}: query {name!r} is defined twice")
        queries[name] = body.strip()
    return MappingProxyType(queries)
