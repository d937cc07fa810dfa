"""tenure: durable, race-free lifecycles for provisioned resources.

Declare one :class:`Kind` per type of resource, open a store, and change resources only by firing
events; every change is a compare-and-swap on the resource's version, journaled in the same
transaction.
"""

from __future__ import annotations

from tenure.errors import (
    AlreadyExists,
    Conflict,
    FlowChanged,
    FlowFailed,
    IdempotencyKeyReused,
    InvalidArgument,
    InvalidDatabaseURL,
    InvalidFlow,
    InvalidKind,
    InvalidSpec,
    QuotaExceeded,
    QuotaNotFound,
    ResourceNotFound,
    SchemaNotMigrated,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
    TenureError,
    TransitionNotAllowed,
    UnknownEvent,
    UnknownKind,
    UnknownState,
)
from tenure.machine import ANY, Event, Kind, Role, State
from tenure.store import JournalEntry, Page, Resource, Store, open_store

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "AlreadyExists",
    "Conflict",
    "Event",
    "FlowChanged",
    "FlowFailed",
    "IdempotencyKeyReused",
    "InvalidArgument",
    "InvalidDatabaseURL",
    "InvalidFlow",
    "InvalidKind",
    "InvalidSpec",
    "JournalEntry",
    "Kind",
    "Page",
    "QuotaExceeded",
    "QuotaNotFound",
    "Resource",
    "ResourceNotFound",
    "Role",
    "SchemaNotMigrated",
    "SchemaTooNew",
    "State",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TenureError",
    "TransitionNotAllowed",
    "UnknownEvent",
    "UnknownKind",
    "UnknownState",
    "__version__",
    "open_store",
]
