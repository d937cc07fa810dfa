"""The store as a step's own code sees it: only what :class:`~tenure.store.protocol.StepStore` allows.

A step changes its resource through the outcome it returns, which the worker writes fenced by the
claim. Handing step code the worker's whole store would let it fire events, take claims or settle
callbacks behind the engine's back; this view forwards the few things a step may do and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tenure.flow.records import FlowRunRow, FlowTaskRow
from tenure.store.inbox import CallbackStatus, Receipt
from tenure.store.model import JournalEntry, Resource
from tenure.store.protocol import StepStore

__all__ = ["StepStoreView"]


class StepStoreView:
    """A :class:`~tenure.store.protocol.StepStore` over a fuller store, exposing nothing more."""

    __slots__ = ("_store",)

    def __init__(self, store: StepStore) -> None:
        self._store = store

    def get(self, resource_id: str) -> Resource:
        return self._store.get(resource_id)

    def journal(self, resource_id: str, *, after_version: int = 0, limit: int = 1000) -> list[JournalEntry]:
        return self._store.journal(resource_id, after_version=after_version, limit=limit)

    def open_wait(self, resource: Resource, hashed: str) -> None:
        self._store.open_wait(resource, hashed)

    def deliver(
        self,
        resource_id: str,
        token: str,
        key: str,
        status: CallbackStatus | str,
        *,
        data: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Receipt:
        return self._store.deliver(resource_id, token, key, status, data=data, error=error)

    def stay_version(self, resource: Resource) -> int:
        return self._store.stay_version(resource)

    def create_flow_run(self, run: FlowRunRow) -> None:
        self._store.create_flow_run(run)

    def save_flow(self, run_id: str, tasks: Sequence[FlowTaskRow], run: FlowRunRow | None = None) -> None:
        self._store.save_flow(run_id, tasks, run)

    def load_flow_run(self, run_id: str) -> tuple[FlowRunRow, list[FlowTaskRow]] | None:
        return self._store.load_flow_run(run_id)
