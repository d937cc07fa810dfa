"""The rows a flow run is checkpointed as: plain values a store keeps without knowing what a task is.

The flow layer turns its own records into these and back (:mod:`tenure.flow.durable`); any store that
keeps them for it implements :class:`~tenure.flow.durable.FlowRunStore`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["FlowRunRow", "FlowTaskRow"]


@dataclass(frozen=True, slots=True)
class FlowRunRow:
    id: str
    flow: str
    version: int
    fingerprint: str
    state: str
    resource_id: str | None
    inputs: Mapping[str, Any]
    overrides: Mapping[str, Any] = field(default_factory=dict)
    retries: Mapping[str, int] = field(default_factory=dict)
    failure: Mapping[str, Any] | None = None
    pending_retry: Mapping[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class FlowTaskRow:
    task: str
    state: str
    attempt: int
    seq: int
    result: Any = None
    failure: Mapping[str, Any] | None = None
    revert_failure: Mapping[str, Any] | None = None
    inputs: Mapping[str, Any] | None = None
