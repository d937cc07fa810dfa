"""The volume kind's state machine, and the steps that run a flow in each of its work states."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, Protocol

from tenure.engine.flows import FlowStep
from tenure.kinds.volume.api import api_flow
from tenure.kinds.volume.delete import delete_flow
from tenure.kinds.volume.drivers import VolumeDriver
from tenure.kinds.volume.errors import RescheduleableError
from tenure.kinds.volume.manager import manager_flow
from tenure.kinds.volume.notifications import Notifier
from tenure.kinds.volume.quota import QuotaLedger
from tenure.kinds.volume.scheduler import CapacityScheduler, Host, HostScheduler, scheduler_flow
from tenure.kinds.volume.spec import VolumeSpec
from tenure.machine import Event, Kind, Role, State

__all__ = ["API_OUTPUTS", "MANAGER_OUTPUTS", "SCHEDULER_OUTPUTS", "ResourceView", "volume", "volume_steps"]


#: What each step copies from its flow into the resource's data.
API_OUTPUTS = ("volume_record", "reservation", "quota_commit", "cast_to")
SCHEDULER_OUTPUTS = ("host", "alternate_hosts", "cast_to")
MANAGER_OUTPUTS = ("volume",)


#: The volume kind: its states, codes, roles and events (the steps come from :func:`volume_steps`).
volume = Kind(
    "volume",
    description="A block-storage volume created by Cinder's api / scheduler / manager workflows (seed 004).",
    spec_model=VolumeSpec,
    # What the flows produced (the quota reservation and commit among them): a client's event must not
    # rewrite it, or a delete would release a commitment it never made.
    step_data=(*API_OUTPUTS, *SCHEDULER_OUTPUTS, *MANAGER_OUTPUTS),
    initial="requested",
    states=[
        State(
            "requested",
            10,
            Role.WORK,
            on_failure="rejected",
            description="api flow: check, reserve quota, record, commit, cast",
        ),
        State(
            "scheduling",
            20,
            Role.WORK,
            on_failure="unschedulable",
            description="scheduler flow: pick a host (notify on failure)",
        ),
        State(
            "creating",
            30,
            Role.WORK,
            on_failure="failed",
            description="manager flow: create on the host, rescheduling on failure",
        ),
        State("available", 40, Role.REST, description="the volume exists"),
        State("error", 50, Role.REST, description="a workflow failed; the error says why"),
        State(
            "deleting",
            60,
            Role.WORK,
            on_failure="delete_failed",
            description="delete flow: delete on the host, release quota",
        ),
        State("deleted", 70, Role.FINAL, description="gone; its quota is released"),
    ],
    events=[
        Event("accepted", "requested", "scheduling", description="quota committed; cast to the scheduler"),
        Event("rejected", "requested", "error", description="invalid request or quota exceeded; quota untouched"),
        Event("scheduled", "scheduling", "creating", description="a host was chosen; cast to its manager"),
        Event("unschedulable", "scheduling", "error", description="no host can take the volume"),
        Event("created", "creating", "available", description="the driver created the volume"),
        Event("failed", "creating", "error", description="creation failed on every host it was tried on"),
        Event("delete", ["available", "error"], "deleting", description="a client deletes the volume"),
        Event("deleted", "deleting", "deleted", description="deleted on its host, quota released"),
        Event("delete_failed", "deleting", "error", description="the host could not delete it"),
    ],
)


class ResourceView(Protocol):
    """What the steps read from a resource to build a flow's inputs (a tenure ``Resource`` is one)."""

    @property
    def id(self) -> str: ...

    @property
    def spec(self) -> Mapping[str, Any]: ...

    @property
    def data(self) -> Mapping[str, Any]: ...


def _api_inputs(resource: ResourceView) -> dict[str, Any]:
    return {"request": dict(resource.spec), "resource_id": resource.id}


def _scheduler_inputs(resource: ResourceView) -> dict[str, Any]:
    return {"resource_id": resource.id, "volume_record": resource.data.get("volume_record")}


def _manager_inputs(resource: ResourceView) -> dict[str, Any]:
    return {
        "resource_id": resource.id,
        "volume_record": resource.data.get("volume_record"),
        "host": resource.data.get("host"),
        "alternate_hosts": list(resource.data.get("alternate_hosts") or []),
        "reschedules": 0,
    }


def _delete_inputs(resource: ResourceView) -> dict[str, Any]:
    return {
        "resource_id": resource.id,
        "volume": resource.data.get("volume"),
        "quota_commit": resource.data.get("quota_commit"),
    }


def volume_steps(
    ledger: QuotaLedger,
    *,
    driver: VolumeDriver,
    notifier: Notifier,
    hosts: Iterable[Host] = (),
    scheduler: HostScheduler | None = None,
    reschedule_on: tuple[type[BaseException], ...] = (RescheduleableError,),
    max_reschedules: int = 3,
    quota_resource: str = "gigabytes",
    availability_zones: Collection[str] | None = None,
    default_availability_zone: str | None = None,
) -> dict[str, FlowStep]:
    """The steps of the volume kind's work states, by state name, ready for ``run_step``.

    The scheduler picks among ``hosts`` by free capacity (:class:`CapacityScheduler`) unless a
    ``scheduler`` is given. Without ``availability_zones`` the zones of ``hosts`` are the known ones
    (any zone, when neither is given).
    """
    host_list = tuple(hosts)
    if scheduler is None:
        scheduler = CapacityScheduler(host_list)
    if availability_zones is None and host_list:
        availability_zones = {h.availability_zone for h in host_list}
    api = api_flow(
        ledger,
        quota_resource=quota_resource,
        availability_zones=availability_zones,
        default_availability_zone=default_availability_zone,
    )
    manager = manager_flow(driver, notifier, reschedule_on=reschedule_on, max_reschedules=max_reschedules)
    return {
        "requested": FlowStep(api, "accepted", "rejected", inputs=_api_inputs, outputs=API_OUTPUTS),
        "scheduling": FlowStep(
            scheduler_flow(scheduler, notifier),
            "scheduled",
            "unschedulable",
            inputs=_scheduler_inputs,
            outputs=SCHEDULER_OUTPUTS,
        ),
        "creating": FlowStep(manager, "created", "failed", inputs=_manager_inputs, outputs=MANAGER_OUTPUTS),
        "deleting": FlowStep(
            delete_flow(ledger, driver, notifier), "deleted", "delete_failed", inputs=_delete_inputs, outputs=()
        ),
    }
