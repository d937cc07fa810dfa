"""The engine's logger, and the fields its records carry about the resource they concern.

Every part of the worker logs to the one ``tenure.engine`` logger, so that one setting covers the
engine; the structured fields let a JSON log be filtered by resource or kind.
"""

from __future__ import annotations

import logging

from tenure.store.model import Resource

__all__ = ["about", "log"]

log = logging.getLogger("tenure.engine")


def about(r: Resource) -> dict[str, str]:
    """The ``extra`` of a log record about ``r``."""
    return {"resource_id": r.id, "kind": r.kind}
