"""tenure: durable, race-free lifecycles for provisioned resources.

Declare one :class:`Kind` per type of resource, open a store, and change resources only by firing
events; every change is a compare-and-swap on the resource's version, journaled in the same
transaction.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tenure.errors import (
    AlreadyExists,
    ApiError,
    ClaimLost,
    ConfigError,
    Conflict,
    DuplicateKind,
    FlowActionNotAllowed,
    FlowChanged,
    FlowError,
    FlowFailed,
    FlowRunNotFound,
    IdempotencyKeyReused,
    InputError,
    InUse,
    InvalidArgument,
    InvalidDatabaseURL,
    InvalidFlow,
    InvalidKind,
    InvalidSpec,
    InvalidSteps,
    InvalidUsage,
    KindError,
    ModuleNotImportable,
    NoKindFound,
    NotSharable,
    QuotaError,
    QuotaExceeded,
    QuotaNotFound,
    ResourceNotFound,
    RetryNotAllowed,
    SchemaNotMigrated,
    SchemaTooNew,
    ServerFailed,
    ServerUnreachable,
    ServiceError,
    StoreError,
    StoreUnavailable,
    SubscriptionNotFound,
    TeardownStarted,
    TenureError,
    TooLarge,
    TransitionNotAllowed,
    UnknownEvent,
    UnknownKind,
    UnknownState,
    UseNotYours,
    WriteConflict,
)

if TYPE_CHECKING:
    from tenure.engine import Advance, Fail, Fatal, Retryable, RetryLater, StepContext, Steps, Wait, Worker
    from tenure.engine.provision import Definition, Provisioner, ProvisionRequest, ProvisionResult, ProvisionStep
    from tenure.machine import ANY, Backoff, Event, Kind, Role, Sharing, State
    from tenure.store import (
        EngineStore,
        JournalEntry,
        OwnedTables,
        Page,
        Resource,
        StepStore,
        Store,
        TableStore,
        Use,
        UsePolicy,
        open_store,
    )
    from tenure.store.inbox import CallbackStatus, Delivery, Receipt

#: The names whose modules pull in pydantic, the engine and the database drivers: imported when first
#: used, so that ``import tenure`` (and the command line, which starts with it) stays quick.
_LAZY = {
    **dict.fromkeys(("ANY", "Backoff", "Event", "Kind", "Role", "Sharing", "State"), "tenure.machine"),
    **dict.fromkeys(
        ("Advance", "Fail", "Fatal", "Retryable", "RetryLater", "StepContext", "Steps", "Wait", "Worker"),
        "tenure.engine",
    ),
    **dict.fromkeys(
        ("Definition", "Provisioner", "ProvisionRequest", "ProvisionResult", "ProvisionStep"),
        "tenure.engine.provision",
    ),
    **dict.fromkeys(
        (
            "EngineStore",
            "JournalEntry",
            "OwnedTables",
            "Page",
            "Resource",
            "StepStore",
            "Store",
            "TableStore",
            "Use",
            "UsePolicy",
        ),
        "tenure.store",
    ),
    "open_store": "tenure.store",
    **dict.fromkeys(("CallbackStatus", "Delivery", "Receipt"), "tenure.store.inbox"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tenure' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "ANY",
    "Advance",
    "AlreadyExists",
    "ApiError",
    "Backoff",
    "CallbackStatus",
    "ClaimLost",
    "ConfigError",
    "Conflict",
    "Definition",
    "Delivery",
    "DuplicateKind",
    "EngineStore",
    "Event",
    "Fail",
    "Fatal",
    "FlowActionNotAllowed",
    "FlowChanged",
    "FlowError",
    "FlowFailed",
    "FlowRunNotFound",
    "IdempotencyKeyReused",
    "InUse",
    "InputError",
    "InvalidArgument",
    "InvalidDatabaseURL",
    "InvalidFlow",
    "InvalidKind",
    "InvalidSpec",
    "InvalidSteps",
    "InvalidUsage",
    "JournalEntry",
    "Kind",
    "KindError",
    "ModuleNotImportable",
    "NoKindFound",
    "NotSharable",
    "OwnedTables",
    "Page",
    "ProvisionRequest",
    "ProvisionResult",
    "ProvisionStep",
    "Provisioner",
    "QuotaError",
    "QuotaExceeded",
    "QuotaNotFound",
    "Receipt",
    "Resource",
    "ResourceNotFound",
    "RetryLater",
    "RetryNotAllowed",
    "Retryable",
    "Role",
    "SchemaNotMigrated",
    "SchemaTooNew",
    "ServerFailed",
    "ServerUnreachable",
    "ServiceError",
    "Sharing",
    "State",
    "StepContext",
    "StepStore",
    "Steps",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "SubscriptionNotFound",
    "TableStore",
    "TeardownStarted",
    "TenureError",
    "TooLarge",
    "TransitionNotAllowed",
    "UnknownEvent",
    "UnknownKind",
    "UnknownState",
    "Use",
    "UseNotYours",
    "UsePolicy",
    "Wait",
    "Worker",
    "WriteConflict",
    "__version__",
    "open_store",
]
