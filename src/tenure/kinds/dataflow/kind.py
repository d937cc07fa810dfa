"""The ``dataflow`` kind's declaration: its spec, states and events, and what its data says.

The guards of the synchronous signals, the steps (:mod:`tenure.kinds.dataflow.steps`) and the
signaling API (:mod:`tenure.service.signaling`) read the flow's data through the same helpers:
:func:`holding`, :func:`addresses`, :func:`touched` and :func:`resource_ids`. The service may not
import a kind (the layering keeps it generic), so the kind object itself carries what the API needs
to know of it (:class:`DataflowKind`): the events the API fires, the groups of states it decides by,
and what a flow wants and holds. The wire's names (the signals, what a transfer id is) are the
contract's, declared once in :mod:`tenure.engine.signaling` and re-exported here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Literal

import pydantic
from pydantic.alias_generators import to_camel

from tenure.engine.planes import Signaling
from tenure.engine.provision import ProvisionStatus, check_definition_types
from tenure.engine.signaling import SIGNALS, TRANSFER_ID_PATTERN
from tenure.kinds._shapes import DEFAULT_RETRY, Shapes
from tenure.kinds.transfer import DefinitionSpec
from tenure.machine import Backoff, Event, Kind, Role, State, Subject

__all__ = [
    "BUILTIN_TYPES",
    "DEFAULT_REQUEST_DEADLINE",
    "DEPROVISIONING_STATES",
    "ENDED_STATES",
    "ENGINE_EVENTS",
    "OPERATIONS",
    "PROVISIONING_STATES",
    "REPORTING_STATES",
    "SIGNALS",
    "SIGNAL_EVENTS",
    "STEP_DATA",
    "TRANSFER_ID_PATTERN",
    "DataflowKind",
    "DataflowSpec",
    "addresses",
    "dataflow",
    "dataflow_for",
    "dataflow_kind",
    "holding",
    "operation_marker",
    "resource_ids",
    "settled",
    "touched",
]

#: How long a ``*_requested`` state waits for the provisioners by default (as :class:`Signaling` does).
DEFAULT_REQUEST_DEADLINE = Signaling().request_deadline


class DataflowSpec(pydantic.BaseModel):
    """What a flow was made for: the transfer, its addresses and resources, and the signal that made it."""

    model_config = pydantic.ConfigDict(extra="forbid", alias_generator=to_camel, serialize_by_alias=True)

    transfer_id: str = pydantic.Field(pattern=TRANSFER_ID_PATTERN)
    type: Literal["consumer", "provider"]
    asset: str = pydantic.Field(min_length=1, max_length=255)
    #: Free-form address objects (``{"type": "s3", "bucket": "in"}``); a provisioner may change them.
    source: dict[str, Any] | None = None
    destination: dict[str, Any] | None = None
    resources: list[DefinitionSpec] = pydantic.Field(default_factory=list, max_length=50)
    #: The signal that created the flow.
    signal: Literal["prepare", "start"]

    @pydantic.model_validator(mode="after")
    def _unique_ids(self) -> DataflowSpec:
        ids = [d.id for d in self.resources]
        if len(ids) != len(set(ids)):
            raise ValueError("resource definition ids must be unique")
        return self


#: The data keys only the engine and the signaling API write (see the package docs).
STEP_DATA = (
    "provision",
    "deprovision",
    "provisioned",
    "addresses",
    "failure",
    "notification",
    "signals",
    "op",
    "callback",
)

#: The events the signaling API fires for the control plane's signals.
SIGNAL_EVENTS = ("prepare", "provision", "start", "suspend", "terminate", "deprovision", "resignal", "renotify")

#: The operation each signal starts when it has work to do asynchronously (the event that starts it).
OPERATIONS = {"prepare": "provision", "start": "provision", "suspend": "deprovision", "terminate": "deprovision"}

#: Every event but ``complete`` is the engine's or the signaling API's: no client fires them.
ENGINE_EVENTS = (
    *SIGNAL_EVENTS,
    "provisioned",
    "provision_requested",
    "provision_retry",
    "provision_timed_out",
    "provision_failed",
    "notified_provisioned",
    "notified_started",
    "notified_failed",
    "deprovisioned",
    "deprovision_requested",
    "deprovision_retry",
    "deprovision_timed_out",
    "deprovision_failed",
    "notified_suspended",
    "notified_deprovisioned",
    "notified_deprovision_failed",
)

_REST_STATES = (
    "received",
    "provisioned",
    "started",
    "completed",
    "suspended",
    "failed",
    "deprovisioned",
    "deprovision_failed",
)
_WORK_STATES = ("provisioning", "provision_notifying", "provision_failed", "deprovisioning", "deprovision_notifying")
#: Where provisioning is under way, before it has succeeded or failed.
_PROVISIONING_STEPS = ("provisioning", "provision_requested", "provision_notifying")
#: Where a provisioning is under way or its outcome is being told: a terminate there deprovisions
#: every definition (what it asked for may exist).
PROVISIONING_STATES = (*_PROVISIONING_STEPS, "provision_failed")
#: Where a deprovisioning is under way or its outcome is being told.
DEPROVISIONING_STATES = ("deprovisioning", "deprovision_requested", "deprovision_notifying")
#: Where an operation has ended and the flow is telling the control plane how (the ``*_notifying``
#: states and ``provision_failed``): it moves on to a rest state as soon as the callback is posted.
REPORTING_STATES = ("provision_notifying", "provision_failed", "deprovision_notifying")
#: The rest states an operation ends in (a repeat of its signal with a new callback is told again,
#: or, in the two failed ones, runs the operation again).
ENDED_STATES = ("provisioned", "started", "failed", "suspended", "deprovisioned", "deprovision_failed")
#: The rest states of a failed operation, by the operation (its starting event).
FAILED_STATES = {"provision": "failed", "deprovision": "deprovision_failed"}
_TOUCHED = (ProvisionStatus.DONE.value, ProvisionStatus.PENDING.value, ProvisionStatus.RETRY.value)


# --- what the data says ----------------------------------------------------------------------------


def _entries(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def resource_ids(spec: Mapping[str, Any]) -> list[str]:
    """The ids of the definitions a flow's spec asks to be provisioned."""
    return [str(d["id"]) for d in spec.get("resources") or [] if isinstance(d, Mapping) and "id" in d]


def touched(data: Mapping[str, Any], definition_id: str) -> bool:
    """Whether provisioning touched the definition: done, or asked and maybe made."""
    entry = _entries(data, "provision").get(definition_id)
    if not isinstance(entry, Mapping):
        return False
    return entry.get("status") in _TOUCHED or entry.get("last_status") in _TOUCHED


def holding(resource: Subject) -> list[str]:
    """The definitions the flow holds: touched by provisioning and not deprovisioned since."""
    gone = _entries(resource.data, "deprovision")
    return [
        i
        for i in resource_ids(resource.spec)
        if touched(resource.data, i)
        and not (isinstance(gone.get(i), Mapping) and gone[i].get("status") == ProvisionStatus.DONE.value)
    ]


def addresses(resource: Subject) -> dict[str, Any]:
    """``{"source", "destination"}`` as they are now: the spec's, changed by the provisioners' answers."""
    out: dict[str, Any] = {"source": resource.spec.get("source"), "destination": resource.spec.get("destination")}
    answers = _entries(resource.data, "provision")
    for i in resource_ids(resource.spec):
        entry = answers.get(i)
        if not isinstance(entry, Mapping) or entry.get("status") != ProvisionStatus.DONE.value:
            continue
        made = entry.get("data")
        for which in ("source", "destination"):
            if isinstance(made, Mapping) and isinstance(made.get(which), Mapping):
                out[which] = dict(made[which])
    return out


def settled(resource: Subject, key: str) -> dict[str, Any]:
    """The answers under ``data[key]`` (``provision`` or ``deprovision``) that are ``done``.

    What a new run of a failed operation keeps: a definition done stays done (made, or removed), and
    is not asked again; the others are asked afresh.
    """
    return {
        i: dict(entry)
        for i, entry in _entries(resource.data, key).items()
        if isinstance(entry, Mapping) and entry.get("status") == ProvisionStatus.DONE.value
    }


def operation_marker(resource: Subject) -> object:
    """What tells the flow's operations apart: the version of the write that started the one under way.

    The signaling API keeps it in ``data.op.at``; the (de)provisioning steps put it in their
    idempotency keys, so each operation asks under keys of its own while its retries and deadline
    re-asks keep them. None for a flow whose operation did not record one.
    """
    op = resource.data.get("op")
    marker = op.get("at") if isinstance(op, Mapping) else None
    return marker if isinstance(marker, int) and not isinstance(marker, bool) else None


# Guards: the sync signal events happen only when there is indeed nothing to do asynchronously, so no
# desired state (or anything else outside the signaling API) can skip a provisioning or leak resources.


def _nothing_to_provision(resource: Subject) -> bool:
    return not resource_ids(resource.spec)


def _all_provisioned(resource: Subject) -> bool:
    return set(resource_ids(resource.spec)) <= set(holding(resource))


def _nothing_held(resource: Subject) -> bool:
    return not holding(resource)


# --- the kind ----------------------------------------------------------------------------------------


class DataflowKind(Kind):
    """The dataflow kind, carrying what the signaling API reads of it.

    :mod:`tenure.service.signaling` decides what a signal does from these (its ``FlowKind``
    protocol) and the kind's own graph and guards, so the groups of states and the meaning of the
    flow's data are declared here only.
    """

    __slots__ = ()

    #: The events the signaling API fires.
    signal_events: frozenset[str] = frozenset(SIGNAL_EVENTS)
    #: The event each signal's asynchronous operation starts with.
    operations: Mapping[str, str] = MappingProxyType(OPERATIONS)
    provisioning_states: frozenset[str] = frozenset(PROVISIONING_STATES)
    deprovisioning_states: frozenset[str] = frozenset(DEPROVISIONING_STATES)
    reporting_states: frozenset[str] = frozenset(REPORTING_STATES)
    ended_states: frozenset[str] = frozenset(ENDED_STATES)
    #: The rest state of a failed operation, by the event that starts the operation.
    failed_states: Mapping[str, str] = MappingProxyType(FAILED_STATES)

    def wanted(self, flow: Subject) -> list[str]:
        """The definitions the flow needs provisioned."""
        return resource_ids(flow.spec)

    def holding(self, flow: Subject) -> list[str]:
        """The definitions the flow holds (:func:`holding`): what the guards and the API count as held."""
        return holding(flow)

    def settled(self, flow: Subject, key: str) -> dict[str, Any]:
        """The ``done`` answers under ``data[key]`` a new run of a failed operation keeps (:func:`settled`)."""
        return settled(flow, key)


def dataflow_kind(
    *,
    request_deadline: timedelta = DEFAULT_REQUEST_DEADLINE,
    retry: Backoff | None = None,
    name: str = "dataflow",
    provisioner_types: Sequence[str] | None = None,
) -> DataflowKind:
    """The dataflow kind, with the deadline of its ``*_requested`` states and the retry policy of its steps.

    ``provisioner_types`` lists the definition types the data plane provisions: a flow naming another
    is refused when it is created, naming the known ones (None accepts any type).
    """
    shapes = Shapes(retry or DEFAULT_RETRY, request_deadline)
    work, wait = shapes.work, shapes.wait

    resignal = [
        Event("resignal", s, s, description="the control plane repeated its signal")
        for s in (*_REST_STATES, *_WORK_STATES)
    ]
    return DataflowKind(
        name,
        description="A data plane's flow for one transfer: provision, start, suspend, terminate, deprovision.",
        spec_model=_spec_for(provisioner_types),
        step_data=STEP_DATA,
        # The control plane's callback token: the engine posts with it, nobody reads it.
        secret_data=["callback"],
        engine_events=ENGINE_EVENTS,
        initial="received",
        states=[
            work("provisioning", 25, "provision_failed", "the provisioners are being asked for the resources"),
            wait("provision_requested", 40, "provision_timed_out", "waiting for async provisioners to call back"),
            work("provision_notifying", 45, "provision_failed", "telling the control plane provisioning is done"),
            State("provisioned", 50, Role.REST, description="prepared: every resource is provisioned"),
            work("provision_failed", 60, "notified_failed", "telling the control plane provisioning failed"),
            State("received", 100, Role.REST, description="received a signal; prepared with nothing to provision"),
            State("started", 150, Role.REST, description="data is flowing"),
            State("completed", 200, Role.REST, description="the data has flowed; terminate releases what is held"),
            State("suspended", 225, Role.REST, description="paused with nothing held; can be started again"),
            State("terminated", 250, Role.FINAL, description="stopped, with nothing to deprovision"),
            State(
                "failed",
                300,
                Role.REST,
                description="provisioning failed; its signal again provisions again, terminate frees what it touched",
            ),
            work("deprovisioning", 500, "deprovision_failed", "the provisioners are being asked to remove resources"),
            wait("deprovision_requested", 550, "deprovision_timed_out", "waiting for async deprovisioners"),
            work("deprovision_notifying", 575, "notified_deprovision_failed", "telling the control plane"),
            State("deprovisioned", 600, Role.REST, description="terminated; every provisioned resource is gone"),
            State(
                "deprovision_failed",
                700,
                Role.REST,
                description="deprovisioning failed (see failure); its signal again deprovisions again",
            ),
        ],
        events=[
            # The signals (fired by the signaling API).
            Event("prepare", "received", "received", guard=_nothing_to_provision, description="prepared at once"),
            Event(
                "provision",
                ["received", "suspended", "failed"],
                "provisioning",
                description="prepare or start, async (from failed: the control plane's retry, provision again)",
            ),
            Event("start", ["received", "provisioned", "suspended"], "started", guard=_all_provisioned),
            Event("suspend", "started", "suspended", guard=_nothing_held),
            Event(
                "terminate",
                ["received", "provisioned", "started", "completed", "suspended", "failed"],
                "terminated",
                guard=_nothing_held,
            ),
            Event(
                "deprovision",
                ["provisioned", "started", "completed", "failed", "deprovision_failed", *PROVISIONING_STATES],
                "deprovisioning",
                description="suspend or terminate, async (from deprovision_failed: deprovision again)",
            ),
            *resignal,
            Event("resignal", "provision_requested", "provisioning", description="asked again: ask again"),
            Event("resignal", "deprovision_requested", "deprovisioning", description="asked again: ask again"),
            Event("renotify", ["provisioned", "started"], "provision_notifying", description="tell it again"),
            Event("renotify", ["suspended", "deprovisioned"], "deprovision_notifying", description="tell it again"),
            # Provisioning.
            Event("provisioned", ["provisioning", "provision_requested"], "provision_notifying"),
            Event("provision_requested", "provisioning", "provision_requested"),
            Event("provision_retry", "provision_requested", "provisioning", description="a provisioner asked again"),
            Event("provision_timed_out", "provision_requested", "provisioning", description="no callback in time"),
            Event("provision_failed", _PROVISIONING_STEPS, "provision_failed"),
            Event("notified_provisioned", "provision_notifying", "provisioned"),
            Event("notified_started", "provision_notifying", "started"),
            Event("notified_failed", "provision_failed", "failed"),
            # Running.
            Event("complete", "started", "completed", description="the data has flowed"),
            # Deprovisioning (a failure is told too, then rests in deprovision_failed).
            Event("deprovisioned", ["deprovisioning", "deprovision_requested"], "deprovision_notifying"),
            Event("deprovision_requested", "deprovisioning", "deprovision_requested"),
            Event("deprovision_retry", "deprovision_requested", "deprovisioning"),
            Event("deprovision_timed_out", "deprovision_requested", "deprovisioning", description="no answer in time"),
            Event("deprovision_failed", ["deprovisioning", "deprovision_requested"], "deprovision_notifying"),
            Event("notified_suspended", "deprovision_notifying", "suspended"),
            Event("notified_deprovisioned", "deprovision_notifying", "deprovisioned"),
            Event("notified_deprovision_failed", "deprovision_notifying", "deprovision_failed"),
        ],
    )


def _spec_for(types: Sequence[str] | None) -> type[DataflowSpec]:
    """The spec model of a flow whose definitions must be of one of ``types``."""
    if types is None:
        return DataflowSpec
    known = frozenset(types)

    class KnownTypesSpec(DataflowSpec):
        @pydantic.field_validator("resources")
        @classmethod
        def _provisioned(cls, resources: list[DefinitionSpec]) -> list[DefinitionSpec]:
            check_definition_types(resources, known)
            return resources

    KnownTypesSpec.__name__ = KnownTypesSpec.__qualname__ = "DataflowSpec"
    return KnownTypesSpec


#: The definition types the built-in data plane provisions.
BUILTIN_TYPES = ("memory", "memory-async")


@functools.lru_cache(maxsize=16)
def _built_in(request_deadline: timedelta) -> DataflowKind:
    return dataflow_kind(request_deadline=request_deadline, provisioner_types=BUILTIN_TYPES)


def dataflow_for(signaling: Signaling | None = None) -> DataflowKind:
    """The built-in dataflow kind with the request deadline ``signaling`` configures (the same object each time).

    The store and the engine's steps must hold one and the same kind object; asking twice with the
    same settings answers the same kind.
    """
    return _built_in(DEFAULT_REQUEST_DEADLINE if signaling is None else signaling.request_deadline)


#: The built-in dataflow kind, with the default request deadline.
dataflow = dataflow_for()
