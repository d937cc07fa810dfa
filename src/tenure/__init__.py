"""tenure: durable, race-free lifecycles for provisioned resources.

Declare one :class:`Kind` per type of resource, open a store, and change resources only by firing
events; every change is a compare-and-swap on the resource's version, journaled in the same
transaction.
"""

from __future__ import annotations

from tenure.engine import Advance, Fail, Fatal, Retryable, RetryLater, StepContext, Steps, Wait, Worker
from tenure.engine.provision import Definition, Provisioner, ProvisionRequest, ProvisionResult, ProvisionStep
from tenure.errors import (
    AlreadyExists,
    ClaimLost,
    Conflict,
    FlowChanged,
    FlowFailed,
    IdempotencyKeyReused,
    InvalidArgument,
    InvalidDatabaseURL,
    InvalidFlow,
    InvalidKind,
    InvalidSpec,
    InvalidSteps,
    NotSharable,
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
from tenure.machine import ANY, Backoff, Event, Kind, Role, State
from tenure.store import JournalEntry, Page, Resource, Store, open_store
from tenure.store.inbox import CallbackStatus, Delivery, Receipt

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "Advance",
    "AlreadyExists",
    "Backoff",
    "CallbackStatus",
    "ClaimLost",
    "Conflict",
    "Definition",
    "Delivery",
    "Event",
    "Fail",
    "Fatal",
    "FlowChanged",
    "FlowFailed",
    "IdempotencyKeyReused",
    "InvalidArgument",
    "InvalidDatabaseURL",
    "InvalidFlow",
    "InvalidKind",
    "InvalidSpec",
    "InvalidSteps",
    "NotSharable",
    "JournalEntry",
    "Kind",
    "Page",
    "ProvisionRequest",
    "ProvisionResult",
    "ProvisionStep",
    "Provisioner",
    "QuotaExceeded",
    "QuotaNotFound",
    "Receipt",
    "Resource",
    "ResourceNotFound",
    "RetryLater",
    "Retryable",
    "Role",
    "SchemaNotMigrated",
    "SchemaTooNew",
    "State",
    "StepContext",
    "Steps",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TenureError",
    "TransitionNotAllowed",
    "UnknownEvent",
    "UnknownKind",
    "UnknownState",
    "Wait",
    "Worker",
    "open_store",
    "__version__",
]
