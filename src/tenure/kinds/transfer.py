"""The ``transfer`` kind: the transfer process of seeds 000/001, with their state codes.

Provisioning and deprovisioning go through provisioner plug-ins: a synchronous one answers at once,
an asynchronous one (an HTTP provisioner, say) answers pending and the transfer waits in
``provisioning_requested`` (or ``deprovisioning_requested``) for its callback, up to a deadline that
asks again. Starting goes through the data plane the same way (``startup_requested``).

A transfer ends by deprovisioning what it provisioned, whether it completed, was terminated or failed:
``completed`` and ``terminated`` are work states that start the deprovisioning, and the data keeps
which way it ended (``ended``: ``completed``, ``terminated`` or ``failed``) and, after a failure, why
(``failure``), after the error itself has given way to the next transitions. A deprovisioning that
fails ends in ``deprovisioning_failed``, its own final
state, never in ``deprovisioned`` with an error.

This is **version 1** of ``transfer``. Version 2 (:mod:`tenure.kinds.transfer_v2`) follows seed 001:
provisioning and deprovisioning moved to the data plane, which the control plane signals (prepare,
start, suspend, terminate) and which calls back when an operation it started ends, so the control
plane needs no knowledge of data-flow protocols. A store that loads both versions makes new transfers
under version 2 and finishes the transfers made under version 1 here, on this graph and these steps;
that is why this module stays, and why its ``*PROVISION*`` states are marked ``deprecated`` (only
transfers already in them still use them; version 2 has none of them).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pydantic

from tenure.engine import Resource
from tenure.engine.outcome import Advance, Outcome
from tenure.engine.provision import (
    Definition,
    MemoryProvisioner,
    ProvisionStatus,
    ProvisionStep,
    check_definition_types,
)
from tenure.engine.steps import StepContext, Steps
from tenure.kinds._shapes import DEFAULT_RETRY, Shapes
from tenure.machine import Backoff, Event, Kind, Role, State

__all__ = [
    "STEP_DATA",
    "DefinitionSpec",
    "TransferSpec",
    "transfer",
    "transfer_kind",
    "transfer_kind_v1",
    "transfer_steps",
    "transfer_steps_v1",
    "transfer_v1",
]


class DefinitionSpec(pydantic.BaseModel):
    """One resource definition the transfer needs provisioned (a bucket, a queue, a token...)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    id: str = pydantic.Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    type: str = pydantic.Field(min_length=1, max_length=100)
    spec: dict[str, Any] = pydantic.Field(default_factory=dict)


class TransferSpec(pydantic.BaseModel):
    """What a client asks for when it starts a transfer."""

    model_config = pydantic.ConfigDict(extra="forbid")

    asset: str = pydantic.Field(min_length=1, max_length=255)
    role: str = pydantic.Field(default="consumer", pattern=r"^(consumer|provider)$")
    resources: list[DefinitionSpec] = pydantic.Field(
        default_factory=lambda: [DefinitionSpec(id="destination", type="memory")], max_length=50
    )
    dataplane: str = pydantic.Field(default="memory", min_length=1, max_length=100)

    @pydantic.model_validator(mode="after")
    def _unique_ids(self) -> TransferSpec:
        ids = [d.id for d in self.resources]
        if len(ids) != len(set(ids)):
            raise ValueError("resource definition ids must be unique")
        return self


#: The data keys the transfer's steps write: each provisioning action's per-definition answers, which
#: way the transfer ended (``completed``, ``terminated`` or ``failed``), and why it failed.
STEP_DATA = ("provision", "start", "deprovision", "ended", "failure")

#: Sources of ``terminate``: every state before the transfer started ending.
_RUNNING = (
    "initial",
    "provisioning",
    "provisioning_requested",
    "provisioned",
    "requesting",
    "requested",
    "starting",
    "startup_requested",
    "started",
    "suspending",
    "suspended",
    "completing",
)


def _spec_for(types: Sequence[str] | None) -> type[TransferSpec]:
    """The spec model of a transfer whose definitions and data plane must be of one of ``types``."""
    if types is None:
        return TransferSpec
    known = frozenset(types)
    listed = ", ".join(sorted(known)) or "none"

    class KnownTypesSpec(TransferSpec):
        @pydantic.field_validator("resources")
        @classmethod
        def _provisioned(cls, resources: list[DefinitionSpec]) -> list[DefinitionSpec]:
            check_definition_types(resources, known)
            return resources

        @pydantic.field_validator("dataplane")
        @classmethod
        def _served(cls, dataplane: str) -> str:
            if dataplane not in known:
                raise ValueError(f"{dataplane!r} has no provisioner here (known types: {listed})")
            return dataplane

    KnownTypesSpec.__name__ = KnownTypesSpec.__qualname__ = "TransferSpec"
    return KnownTypesSpec


def transfer_kind(
    *,
    request_deadline: timedelta = timedelta(minutes=10),
    retry: Backoff | None = None,
    name: str = "transfer",
    provisioner_types: Sequence[str] | None = None,
) -> Kind:
    """The transfer kind, with the deadline of its ``*_requested`` states and the retry policy of its steps.

    ``provisioner_types`` lists the definition types the workers have provisioners for: a transfer
    naming another type is refused when it is created (it could never run), with the known types in
    the refusal. None accepts any type (the workers then fail the transfer, visibly, if they lack one).
    """
    shapes = Shapes(retry or DEFAULT_RETRY, request_deadline)
    work, wait = shapes.work, shapes.wait
    # The work states of the provisioning that version 2 moved to the data plane.
    old_work = functools.partial(shapes.work, deprecated=True)

    return Kind(
        name,
        version=1,
        description="A data transfer: provision, request, start, run, complete or terminate, deprovision.",
        spec_model=_spec_for(provisioner_types),
        # What the provisioners were asked and answered, and how the transfer ended: the steps decide
        # what to deprovision from them, so no client event may write them.
        step_data=STEP_DATA,
        initial="initial",
        states=[
            work("initial", 100, "terminate", "accepted; the manifest is being prepared"),
            old_work("provisioning", 200, "provision_failed", "provisioners are being asked for the resources"),
            wait(
                "provisioning_requested",
                250,
                "provision_timed_out",
                "waiting for async provisioners to call back",
                deprecated=True,
            ),
            old_work("provisioned", 300, "terminate", "every resource is provisioned"),
            work("requesting", 400, "terminate", "the transfer is being requested from the counter-party"),
            work("requested", 500, "terminate", "the counter-party accepted the request"),
            work("starting", 550, "terminate", "the data plane is being asked to start"),
            wait("startup_requested", 570, "start_timed_out", "waiting for the data plane to report it started"),
            State("started", 600, Role.REST, description="data is flowing"),
            work("suspending", 650, "terminate", "the data plane is being asked to pause"),
            State("suspended", 700, Role.REST, description="paused; can be resumed or terminated"),
            work("completing", 750, "terminate", "the data plane is finishing"),
            work("completed", 800, "deprovision", "finished; deprovisioning starts"),
            work("terminating", 825, "terminate_failed", "the transfer is being stopped"),
            work("terminated", 850, "terminate_failed", "stopped; deprovisioning starts"),
            old_work(
                "deprovisioning", 900, "deprovision_failed", "provisioners are being asked to remove the resources"
            ),
            wait(
                "deprovisioning_requested",
                950,
                "deprovision_timed_out",
                "waiting for async deprovisioners",
                deprecated=True,
            ),
            State("deprovisioned", 1000, Role.FINAL, description="every provisioned resource is gone", deprecated=True),
            State(
                "deprovisioning_failed",
                1100,
                Role.FINAL,
                description="deprovisioning failed for good: resources may be left behind (see the error)",
                deprecated=True,
            ),
        ],
        events=[
            Event("provision", "initial", "provisioning"),
            Event("provisioned", ["provisioning", "provisioning_requested"], "provisioned"),
            Event("provision_requested", "provisioning", "provisioning_requested"),
            Event("provision_retry", "provisioning_requested", "provisioning", description="a provisioner asked again"),
            Event("provision_timed_out", "provisioning_requested", "provisioning", description="no callback in time"),
            Event("provision_failed", ["provisioning", "provisioning_requested"], "terminating"),
            Event("request", "provisioned", "requesting"),
            Event("requested", "requesting", "requested"),
            Event("start", "requested", "starting"),
            Event("started", ["starting", "startup_requested"], "started"),
            Event("start_requested", "starting", "startup_requested"),
            Event("start_retry", "startup_requested", "starting"),
            Event("start_timed_out", "startup_requested", "starting"),
            Event("suspend", "started", "suspending"),
            Event("suspended", "suspending", "suspended"),
            Event("resume", "suspended", "starting"),
            Event("complete", "started", "completing"),
            Event("completed", "completing", "completed"),
            Event("terminate", _RUNNING, "terminating"),
            Event("terminated", "terminating", "terminated"),
            Event("terminate_failed", ["terminating", "terminated"], "deprovisioning"),
            Event("deprovision", ["completed", "terminated"], "deprovisioning"),
            Event("deprovisioned", ["deprovisioning", "deprovisioning_requested"], "deprovisioned"),
            Event("deprovision_requested", "deprovisioning", "deprovisioning_requested"),
            Event("deprovision_retry", "deprovisioning_requested", "deprovisioning"),
            Event("deprovision_timed_out", "deprovisioning_requested", "deprovisioning"),
            Event("deprovision_failed", ["deprovisioning", "deprovisioning_requested"], "deprovisioning_failed"),
        ],
    )


#: The built-in transfer kind, served by the built-in steps' one provisioner type.
transfer = transfer_kind(provisioner_types=("memory",))
#: Version 1 by its version's name (version 2 is :mod:`tenure.kinds.transfer_v2`).
transfer_v1 = transfer
transfer_kind_v1 = transfer_kind


def _manifest(resource: Resource) -> list[Definition]:
    return [Definition(d["id"], d["type"], d.get("spec") or {}) for d in resource.spec.get("resources", [])]


def _dataplane(resource: Resource) -> list[Definition]:
    return [Definition("dataplane", str(resource.spec.get("dataplane", "memory")), {"asset": resource.spec["asset"]})]


def _never_provisioned(resource: Resource, definition: Definition) -> bool:
    """Deprovision only what provisioning touched (done, or asked for and maybe made)."""
    provisioning = resource.data.get("provision")
    entry = provisioning.get(definition.id) if isinstance(provisioning, Mapping) else None
    if not isinstance(entry, Mapping):
        return True
    touched = (ProvisionStatus.DONE, ProvisionStatus.PENDING, ProvisionStatus.RETRY)
    return entry.get("status") not in touched and entry.get("last_status") not in touched


def _terminating(resource: Resource, ctx: StepContext) -> Outcome:
    """Stop the transfer; if a failure brought it here (its error), keep why, for the rest of its life."""
    if resource.error:
        return Advance("terminated", {"failure": resource.error})
    return Advance("terminated")


def _terminated(resource: Resource, ctx: StepContext) -> Outcome:
    """Deprovision what was provisioned; the data says whether the transfer was stopped or failed."""
    return Advance("deprovision", {"ended": "failed" if resource.data.get("failure") else "terminated"})


def transfer_steps(
    provisioners: Mapping[str, object] | None = None,
    *,
    kind: Kind = transfer,
    max_attempts: int = 5,
) -> Steps:
    """The steps of ``kind``, driving ``provisioners`` (by definition type; data planes too).

    By default every type is served by one synchronous :class:`MemoryProvisioner` named ``memory``.
    """
    plugins: Mapping[str, object] = provisioners if provisioners is not None else {"memory": MemoryProvisioner()}
    steps = Steps()

    def goto(event: str, **data: Any) -> Any:
        def step(resource: Resource, ctx: StepContext) -> Outcome:
            return Advance(event, data)

        step.__name__ = f"then_{event}"
        return step

    steps.add(kind, "initial", goto("provision"))
    steps.add(
        kind,
        "provisioning",
        ProvisionStep(
            plugins,
            _manifest,
            done="provisioned",
            requested="provision_requested",
            failed="provision_failed",
            retry="provision_retry",
            max_attempts=max_attempts,
        ),
    )
    steps.add(kind, "provisioned", goto("request"))
    steps.add(kind, "requesting", goto("requested"))
    steps.add(kind, "requested", goto("start"))
    steps.add(
        kind,
        "starting",
        ProvisionStep(
            plugins,
            _dataplane,
            action="start",
            done="started",
            requested="start_requested",
            failed="terminate",
            retry="start_retry",
            max_attempts=max_attempts,
        ),
    )
    # Forgetting the data plane's last answer makes a resume ask it to start again.
    steps.add(kind, "suspending", goto("suspended", start={}))
    steps.add(kind, "completing", goto("completed"))
    steps.add(kind, "completed", goto("deprovision", ended="completed"))
    steps.add(kind, "terminating", _terminating)
    steps.add(kind, "terminated", _terminated)
    steps.add(
        kind,
        "deprovisioning",
        ProvisionStep(
            plugins,
            _manifest,
            action="deprovision",
            done="deprovisioned",
            requested="deprovision_requested",
            failed="deprovision_failed",
            retry="deprovision_retry",
            max_attempts=max_attempts,
            skip=_never_provisioned,
        ),
    )
    return steps


#: Version 1's steps by its version's name.
transfer_steps_v1 = transfer_steps
