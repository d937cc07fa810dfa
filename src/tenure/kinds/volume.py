"""The ``volume`` kind: Cinder's create-volume workflow of seed 004, as tenure flows.

Seed 004 splits creating a volume into three workflows of small tasks that consume inputs, provide
outputs and revert what they did when a later task fails. Here each workflow is the step of one
*work* state, so the resource row moves on only when its workflow has finished:

==============  =====  ==========================================================================
state           code   what happens there
==============  =====  ==========================================================================
``requested``   10     the **api** flow: extract and check the request into one standard shape
                       (``volume_request``), reserve quota (reverted by rolling the reservation
                       back), create the database entry (the resource row *is* the entry; the flow
                       records a ``volume_record``), commit the quota (reverted by releasing it)
                       and "cast" to the scheduler (``cast_to``). ``accepted`` / ``rejected``.
``scheduling``  20     the **scheduler** flow: extract the scheduler's ``request_spec``, pick a host
                       through a pluggable :class:`HostScheduler`, and — only when the flow failed —
                       change status & notify. ``scheduled`` / ``unschedulable``.
``creating``    30     the **manager** flow: extract the ``volume_spec`` (broken up into the four
                       sources raw / image / snapshot / volume), create the volume through a
                       pluggable :class:`VolumeDriver` inside a subflow whose :class:`Retry`
                       reschedules to the scheduler's alternate hosts on the chosen exception types
                       (other types fail the flow), notify on success, or — only on failure —
                       change status & notify. ``created`` / ``failed``.
``available``   40     rest: the volume exists. ``delete``.
``error``       50     rest: something failed (the resource's ``error`` says what). ``delete``.
``deleting``    60     the **delete** flow: delete the volume on its host, release the quota,
                       notify. ``deleted`` / ``delete_failed``.
``deleted``     70     final.
==============  =====  ==========================================================================

"Change status" is the step's failure event (``rejected``, ``unschedulable``, ``failed``): it moves
the row and records the error in the same journaled transaction. Quota follows Cinder: a volume
holds its gigabytes from the api flow's commit until it is deleted, also while it is in ``error``;
a request rejected by the api flow holds nothing. So at rest, for every project,
``reserved == 0`` and ``in_use`` is the sum of ``size_gb`` over the volumes that are not deleted
and whose data has a ``quota_commit``.

Resumption (the seed's "future addition") comes with the flow layer: every task's progress is
checkpointed in the store, and running the step again for the same resource version resumes the
same run. A task that was running when its process died runs again (at-least-once), so tasks are
idempotent: the quota reservation is keyed by the task's idempotency key, the driver is asked to
create a volume whose id is the resource id, and notifications carry the idempotency key as
``message_id`` for de-duplication.

The kind itself is plain data (registered by :func:`tenure.kinds.builtin_kinds`); the steps need
collaborators — a quota ledger (a tenure store is one), hosts or a scheduler, a driver, a notifier —
and are built by :func:`volume_steps`.

>>> volume.initial.name, [s.code for s in volume.states]
('requested', [10, 20, 30, 40, 50, 60, 70])
>>> volume.validate_spec({"size_gb": 1, "project": "p", "source": "image", "image_id": "img"})["image_id"]
'img'
"""

from __future__ import annotations

import contextlib
import enum
import json
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pydantic

from tenure.errors import QuotaExceeded, QuotaNotFound
from tenure.flow import Failure, Flow, Reschedule, Retry, Task, TaskContext, linear
from tenure.flow.step import FlowStep
from tenure.machine import Event, Kind, Role, State

__all__ = [
    "API_OUTPUTS",
    "CapacityScheduler",
    "CastVolume",
    "ChooseHost",
    "CommitQuota",
    "CreateVolumeFromSpec",
    "CreateVolumeRecord",
    "DeleteVolumeOnHost",
    "ExtractSchedulerSpec",
    "ExtractVolumeRequest",
    "ExtractVolumeSpec",
    "Host",
    "HostScheduler",
    "InvalidVolumeRequest",
    "MANAGER_OUTPUTS",
    "MemoryNotifier",
    "MemoryVolumeDriver",
    "NoValidHost",
    "Notification",
    "Notifier",
    "NotifyFailure",
    "NotifyVolumeCreated",
    "NotifyVolumeDeleted",
    "QuotaLedger",
    "ReleaseQuota",
    "ReservationView",
    "RescheduleableError",
    "ReserveQuota",
    "ResourceView",
    "SCHEDULER_OUTPUTS",
    "SOURCE_ID_FIELDS",
    "ScheduleVolume",
    "VolumeDriver",
    "VolumeDriverError",
    "VolumeSource",
    "VolumeSpec",
    "api_flow",
    "delete_flow",
    "manager_flow",
    "scheduler_flow",
    "volume",
    "volume_steps",
]


# --- the spec and the kind -------------------------------------------------------------------------


class VolumeSource(enum.StrEnum):
    """What a new volume's content comes from."""

    RAW = "raw"
    IMAGE = "image"
    SNAPSHOT = "snapshot"
    VOLUME = "volume"


#: The spec field that names the source of each kind of source (raw has none).
SOURCE_ID_FIELDS: Mapping[VolumeSource, str] = {
    VolumeSource.IMAGE: "image_id",
    VolumeSource.SNAPSHOT: "snapshot_id",
    VolumeSource.VOLUME: "source_volume_id",
}


class VolumeSpec(pydantic.BaseModel):
    """What a client asks for: a size, a project to charge, and where the content comes from.

    ``source`` names one of the four ways to create a volume; exactly the id field of that source
    is set (``image_id``, ``snapshot_id`` or ``source_volume_id``; none for ``raw``).
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    size_gb: int = pydantic.Field(gt=0, le=1_000_000)
    project: str = pydantic.Field(min_length=1, max_length=255)
    source: VolumeSource = VolumeSource.RAW
    image_id: str | None = pydantic.Field(default=None, min_length=1, max_length=255)
    snapshot_id: str | None = pydantic.Field(default=None, min_length=1, max_length=255)
    source_volume_id: str | None = pydantic.Field(default=None, min_length=1, max_length=255)
    availability_zone: str | None = pydantic.Field(default=None, min_length=1, max_length=255)

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> VolumeSpec:
        wanted = SOURCE_ID_FIELDS.get(self.source)
        for src, name in SOURCE_ID_FIELDS.items():
            given = getattr(self, name) is not None
            if name == wanted and not given:
                raise ValueError(f"source {self.source.value!r} needs {name}")
            if name != wanted and given:
                raise ValueError(f"{name} is only used with source {src.value!r}, not {self.source.value!r}")
        return self

    @property
    def source_id(self) -> str | None:
        """The id of the image, snapshot or volume the content comes from (None for raw)."""
        name = SOURCE_ID_FIELDS.get(self.source)
        return None if name is None else getattr(self, name)


#: The volume kind: its states, codes, roles and events (the steps come from :func:`volume_steps`).
volume = Kind(
    "volume",
    description="A block-storage volume created by Cinder's api / scheduler / manager workflows (seed 004).",
    spec_model=VolumeSpec,
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


# --- errors --------------------------------------------------------------------------------------


class InvalidVolumeRequest(ValueError):
    """The request does not describe a volume this deployment can create."""


class NoValidHost(Exception):
    """No host can take the volume (none has room in the zone, or every alternate was tried)."""


class VolumeDriverError(Exception):
    """A driver could not create or delete a volume."""


class RescheduleableError(VolumeDriverError):
    """The host could not create the volume, but another host might (rescheduled by default)."""


# --- the collaborators the flows are given -----------------------------------------------------------


class ResourceView(Protocol):
    """What the steps read from a resource to build a flow's inputs (a tenure ``Resource`` is one)."""

    @property
    def id(self) -> str: ...

    @property
    def spec(self) -> Mapping[str, Any]: ...

    @property
    def data(self) -> Mapping[str, Any]: ...


class ReservationView(Protocol):
    """A quota reservation as a ledger reports it."""

    @property
    def id(self) -> str: ...

    @property
    def amount(self) -> int: ...

    @property
    def state(self) -> str:
        """``reserved``, ``committed``, ``rolled_back`` or ``released``."""
        ...


class QuotaLedger(Protocol):
    """The quota operations the flows use; both tenure stores provide them.

    ``reserve`` with an id that exists returns that reservation instead of reserving again; the
    moves are idempotent; a missing quota or reservation raises :class:`~tenure.errors.QuotaNotFound`,
    a reservation over the limit :class:`~tenure.errors.QuotaExceeded`.
    """

    def reserve(self, reservation_id: str, project: str, resource: str, amount: int) -> ReservationView: ...

    def reservation(self, reservation_id: str) -> ReservationView: ...

    def commit_reservation(self, reservation_id: str) -> ReservationView: ...

    def rollback_reservation(self, reservation_id: str) -> ReservationView: ...

    def release_reservation(self, reservation_id: str) -> ReservationView: ...


@dataclass(frozen=True, slots=True)
class Host:
    """A volume host, with the capacity it has left and the availability zone it is in."""

    name: str
    free_gb: int
    availability_zone: str = "nova"


class HostScheduler(Protocol):
    """Picks hosts for a volume: the best candidate first, then the alternates to reschedule to."""

    def candidates(self, request_spec: Mapping[str, Any]) -> Sequence[str]:
        """Host names that can take the volume described by ``request_spec``, best first (may be empty)."""
        ...


class CapacityScheduler:
    """Hosts in the requested zone with room for the volume, the emptiest first (ties by name).

    >>> CapacityScheduler([Host("a", 10), Host("b", 50), Host("c", 5)]).candidates({"size_gb": 8})
    ['b', 'a']
    """

    def __init__(self, hosts: Iterable[Host]) -> None:
        self.hosts: tuple[Host, ...] = tuple(hosts)

    def candidates(self, request_spec: Mapping[str, Any]) -> list[str]:
        size = int(request_spec["size_gb"])
        zone = request_spec.get("availability_zone")
        fit = [h for h in self.hosts if h.free_gb >= size and (zone is None or h.availability_zone == zone)]
        return [h.name for h in sorted(fit, key=lambda h: (-h.free_gb, h.name))]


class VolumeDriver(Protocol):
    """Creates and deletes volumes on a host; one method per source, as in Cinder's create flow.

    ``volume`` is the manager's ``volume_spec`` (its ``volume_id`` is stable for the resource, so a
    create that runs again after a crash must find the volume it made). Each create returns the
    driver's model update (JSON-ready, e.g. ``{"provider_location": ...}``). ``delete`` of a volume
    that is not there does nothing.
    """

    def create_raw(self, volume: Mapping[str, Any], host: str) -> Mapping[str, Any]: ...

    def create_from_image(self, volume: Mapping[str, Any], host: str, image_id: str) -> Mapping[str, Any]: ...

    def create_from_snapshot(self, volume: Mapping[str, Any], host: str, snapshot_id: str) -> Mapping[str, Any]: ...

    def create_from_volume(self, volume: Mapping[str, Any], host: str, source_volume_id: str) -> Mapping[str, Any]: ...

    def delete(self, volume_id: str, host: str) -> None: ...


class MemoryVolumeDriver:
    """A driver that keeps volumes in a dict keyed by (host, volume id): for demos and tests."""

    def __init__(self) -> None:
        self.volumes: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _create(self, volume: Mapping[str, Any], host: str, source: str) -> Mapping[str, Any]:
        key = (host, str(volume["volume_id"]))
        with self._lock:
            made = self.volumes.setdefault(
                key, {"provider_location": f"{host}:/volumes/{key[1]}", "size_gb": volume["size_gb"], "source": source}
            )
            return {"provider_location": made["provider_location"]}

    def create_raw(self, volume: Mapping[str, Any], host: str) -> Mapping[str, Any]:
        return self._create(volume, host, "raw")

    def create_from_image(self, volume: Mapping[str, Any], host: str, image_id: str) -> Mapping[str, Any]:
        return self._create(volume, host, f"image:{image_id}")

    def create_from_snapshot(self, volume: Mapping[str, Any], host: str, snapshot_id: str) -> Mapping[str, Any]:
        return self._create(volume, host, f"snapshot:{snapshot_id}")

    def create_from_volume(self, volume: Mapping[str, Any], host: str, source_volume_id: str) -> Mapping[str, Any]:
        return self._create(volume, host, f"volume:{source_volume_id}")

    def delete(self, volume_id: str, host: str) -> None:
        with self._lock:
            self.volumes.pop((host, volume_id), None)


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification: an event type (``volume.create.end``, ...) and a JSON-ready payload."""

    event_type: str
    payload: Mapping[str, Any]


class Notifier(Protocol):
    """Where the flows send notifications (a message bus in Cinder)."""

    def notify(self, event_type: str, payload: Mapping[str, Any]) -> None: ...


@dataclass
class MemoryNotifier:
    """A notifier that keeps every notification in a list."""

    events: list[Notification] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def notify(self, event_type: str, payload: Mapping[str, Any]) -> None:
        with self._lock:
            self.events.append(Notification(event_type, dict(payload)))

    def of_type(self, event_type: str) -> list[Notification]:
        """The notifications of one event type, in the order they were sent."""
        with self._lock:
            return [n for n in self.events if n.event_type == event_type]


# --- helpers ------------------------------------------------------------------------------------


def _json_ready(what: str, value: Any) -> Any:
    """``value`` as plain JSON data (a task's outputs are checkpointed as JSON)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON data ({exc})") from None


def _failures_text(flow_failures: Mapping[str, Failure]) -> str:
    return "; ".join(f"{name}: {failure}" for name, failure in flow_failures.items()) or "unknown failure"


def _give_back(ledger: QuotaLedger, reservation_id: str) -> None:
    """Undo a reservation whatever it became: roll back if reserved, release if committed."""
    try:
        found = ledger.reservation(reservation_id)
    except QuotaNotFound:
        return
    if found.state == "reserved":
        ledger.rollback_reservation(reservation_id)
    elif found.state == "committed":
        ledger.release_reservation(reservation_id)


# --- the api flow --------------------------------------------------------------------------------


class ExtractVolumeRequest(Task):
    """Check the request's types and values and turn it into the standard ``volume_request``.

    The standard shape is what every later task reads, so tasks can be added to the chain without
    knowing how a request was spelled: ``size_gb``, ``project``, ``source_type``, ``source_id``,
    ``availability_zone`` (the request's, or the default). A zone not in ``availability_zones``
    (when given) is refused.
    """

    provides = ("volume_request",)

    def __init__(
        self,
        *,
        availability_zones: Collection[str] | None = None,
        default_availability_zone: str | None = None,
        name: str = "extract_volume_request",
    ) -> None:
        super().__init__(name)
        self.availability_zones = None if availability_zones is None else frozenset(availability_zones)
        self.default_availability_zone = default_availability_zone

    def execute(self, request: Mapping[str, Any]) -> dict[str, Any]:
        try:
            spec = VolumeSpec.model_validate(dict(request))
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'request'}: {err['msg']}" for err in exc.errors()
            )
            raise InvalidVolumeRequest(problems) from None
        zone = spec.availability_zone or self.default_availability_zone
        if zone is not None and self.availability_zones is not None and zone not in self.availability_zones:
            known = ", ".join(sorted(self.availability_zones)) or "none"
            raise InvalidVolumeRequest(f"availability zone {zone!r} does not exist (known: {known})")
        return {
            "size_gb": spec.size_gb,
            "project": spec.project,
            "source_type": spec.source.value,
            "source_id": spec.source_id,
            "availability_zone": zone,
        }


class ReserveQuota(Task):
    """Reserve ``size_gb`` of the project's quota; reverted by rolling the reservation back.

    The reservation id is the task's idempotency key, so a run resumed after a crash finds the
    reservation it made instead of taking the quota twice.
    """

    provides = ("reservation",)

    def __init__(self, ledger: QuotaLedger, *, resource: str = "gigabytes", name: str = "reserve_quota") -> None:
        super().__init__(name)
        self.ledger = ledger
        self.resource = resource

    def execute(self, volume_request: Mapping[str, Any], context: TaskContext) -> dict[str, Any]:
        project = str(volume_request["project"])
        amount = int(volume_request["size_gb"])
        reservation_id = context.idempotency_key
        try:
            made = self.ledger.reserve(reservation_id, project, self.resource, amount)
        except Exception as exc:
            # A revert is not told the idempotency key, so if the reservation was taken before the
            # error (a connection lost after the commit, say), give it back here.
            if not isinstance(exc, QuotaNotFound | QuotaExceeded):
                with contextlib.suppress(Exception):
                    _give_back(self.ledger, reservation_id)
            raise
        return {"id": made.id, "project": project, "resource": self.resource, "amount": int(made.amount)}

    def revert(self, *args: Any, result: Any, failure: Failure | None, **inputs: Any) -> None:
        # The engine passes the inputs by name (read from ``inputs`` in these reverts, because
        # Task.revert's signature does not let a subclass name them and still type-check). Without
        # a result execute failed, and gave back what it had taken itself.
        if result is not None:
            _give_back(self.ledger, str(result["id"]))


class CreateVolumeRecord(Task):
    """Create the database entry: the resource row is the entry; this records the ``volume_record``.

    Nothing to revert: the row stays, and the api step's failure event moves it to ``error``.
    """

    provides = ("volume_record",)

    def __init__(self, *, name: str = "create_volume_record") -> None:
        super().__init__(name)

    def execute(self, resource_id: str, volume_request: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": resource_id,
            "size_gb": int(volume_request["size_gb"]),
            "project": volume_request["project"],
            "source_type": volume_request["source_type"],
            "source_id": volume_request["source_id"],
            "availability_zone": volume_request["availability_zone"],
        }


class CommitQuota(Task):
    """Turn the reservation into usage; reverted by releasing the usage again."""

    provides = ("quota_commit",)

    def __init__(self, ledger: QuotaLedger, *, name: str = "commit_quota") -> None:
        super().__init__(name)
        self.ledger = ledger

    def execute(self, reservation: Mapping[str, Any]) -> dict[str, Any]:
        committed = self.ledger.commit_reservation(str(reservation["id"]))
        return {
            "reservation_id": committed.id,
            "project": reservation["project"],
            "resource": reservation["resource"],
            "amount": int(committed.amount),
        }

    def revert(self, *args: Any, result: Any, failure: Failure | None, **inputs: Any) -> None:
        # Read the inputs, not the result: a commit that failed may still have taken effect.
        try:
            found = self.ledger.reservation(str(inputs["reservation"]["id"]))
        except QuotaNotFound:
            return
        if found.state == "committed":
            self.ledger.release_reservation(found.id)


class CastVolume(Task):
    """Hand the volume on: to the scheduler (the ``scheduling`` state's step does the scheduling)."""

    provides = ("cast_to",)

    def __init__(self, *, name: str = "cast_volume") -> None:
        super().__init__(name)

    def execute(self, volume_record: Mapping[str, Any]) -> str:
        return "scheduler"


# --- the scheduler flow ----------------------------------------------------------------------------


class ExtractSchedulerSpec(Task):
    """Extract what the scheduler needs from the volume record: the ``request_spec``."""

    provides = ("request_spec",)

    def __init__(self, *, name: str = "extract_scheduler_spec") -> None:
        super().__init__(name)

    def execute(self, resource_id: str, volume_record: Mapping[str, Any] | None) -> dict[str, Any]:
        if not volume_record:
            raise InvalidVolumeRequest(f"volume {resource_id} has no volume record; the api flow did not run")
        return {
            "volume_id": resource_id,
            "size_gb": int(volume_record["size_gb"]),
            "availability_zone": volume_record.get("availability_zone"),
            "source_type": volume_record.get("source_type", "raw"),
        }


class ScheduleVolume(Task):
    """The scheduler driver call: pick the best host, keep the others as alternates, cast to its manager."""

    provides = ("host", "alternate_hosts", "cast_to")

    def __init__(self, scheduler: HostScheduler, *, name: str = "schedule_volume") -> None:
        super().__init__(name)
        self.scheduler = scheduler

    def execute(self, request_spec: Mapping[str, Any]) -> dict[str, Any]:
        found = [str(h) for h in self.scheduler.candidates(request_spec)]
        if not found:
            zone = request_spec.get("availability_zone")
            raise NoValidHost(
                f"no host{'' if zone is None else f' in zone {zone!r}'} has {request_spec['size_gb']} GB free"
            )
        return {"host": found[0], "alternate_hosts": found[1:], "cast_to": f"volume-manager@{found[0]}"}


class NotifyFailure(Task):
    """Change status & notify, run only when the flow failed (the step's failure event changes status)."""

    on_failure_only = True

    def __init__(self, notifier: Notifier, event_type: str, *, name: str) -> None:
        super().__init__(name)
        self.notifier = notifier
        self.event_type = event_type

    def execute(self, resource_id: str, flow_failures: Mapping[str, Failure], context: TaskContext) -> None:
        self.notifier.notify(
            self.event_type,
            {
                "volume_id": resource_id,
                "reason": _failures_text(flow_failures),
                "message_id": context.idempotency_key,
            },
        )


# --- the manager flow ------------------------------------------------------------------------------


class ExtractVolumeSpec(Task):
    """Extract the manager's ``volume_spec``, broken up by source into the four kinds of creation."""

    provides = ("volume_spec",)

    def __init__(self, *, name: str = "extract_volume_spec") -> None:
        super().__init__(name)

    def execute(self, resource_id: str, volume_record: Mapping[str, Any] | None) -> dict[str, Any]:
        if not volume_record:
            raise InvalidVolumeRequest(f"volume {resource_id} has no volume record; the api flow did not run")
        source = VolumeSource(volume_record.get("source_type", "raw"))
        spec: dict[str, Any] = {
            "volume_id": resource_id,
            "size_gb": int(volume_record["size_gb"]),
            "type": source.value,
        }
        id_field = SOURCE_ID_FIELDS.get(source)
        if id_field is not None:
            if not volume_record.get("source_id"):
                raise InvalidVolumeRequest(f"volume {resource_id} from a {source.value} names no {id_field}")
            spec[id_field] = str(volume_record["source_id"])
        return spec


class ChooseHost(Task):
    """The host of this try: the scheduled one, then after the n-th reschedule the n-th alternate."""

    provides = ("volume_host",)

    def __init__(self, *, name: str = "choose_host") -> None:
        super().__init__(name)

    def execute(self, host: str | None, alternate_hosts: Sequence[str], reschedules: int) -> str:
        if host is None:
            raise NoValidHost("the volume was never scheduled to a host")
        if reschedules == 0:
            return host
        if reschedules > len(alternate_hosts):
            raise NoValidHost(f"no host left to reschedule to; tried {', '.join([host, *alternate_hosts])}")
        return str(alternate_hosts[reschedules - 1])


class CreateVolumeFromSpec(Task):
    """Create the volume on ``volume_host`` from raw, an image, a snapshot or another volume.

    Reverted (also when it failed, since a driver may fail half-way) by deleting the volume on that
    host, which is what makes a reschedule start clean on the next host.
    """

    provides = ("volume",)

    def __init__(self, driver: VolumeDriver, *, name: str = "create_volume") -> None:
        super().__init__(name)
        self.driver = driver

    def execute(self, volume_spec: Mapping[str, Any], volume_host: str) -> dict[str, Any]:
        source = VolumeSource(volume_spec["type"])
        if source is VolumeSource.RAW:
            update = self.driver.create_raw(volume_spec, volume_host)
        elif source is VolumeSource.IMAGE:
            update = self.driver.create_from_image(volume_spec, volume_host, str(volume_spec["image_id"]))
        elif source is VolumeSource.SNAPSHOT:
            update = self.driver.create_from_snapshot(volume_spec, volume_host, str(volume_spec["snapshot_id"]))
        else:
            update = self.driver.create_from_volume(volume_spec, volume_host, str(volume_spec["source_volume_id"]))
        return {
            **_json_ready("the driver's model update", dict(update or {})),
            "id": volume_spec["volume_id"],
            "host": volume_host,
            "size_gb": volume_spec["size_gb"],
            "type": source.value,
        }

    def revert(self, *args: Any, result: Any, failure: Failure | None, **inputs: Any) -> None:
        self.driver.delete(str(inputs["volume_spec"]["volume_id"]), str(inputs["volume_host"]))


class NotifyVolumeCreated(Task):
    """Change status & notify on success (the step's ``created`` event changes status)."""

    def __init__(self, notifier: Notifier, *, name: str = "notify_volume_created") -> None:
        super().__init__(name)
        self.notifier = notifier

    def execute(self, resource_id: str, volume: Mapping[str, Any], context: TaskContext) -> None:
        self.notifier.notify(
            "volume.create.end",
            {
                "volume_id": resource_id,
                "host": volume["host"],
                "size_gb": volume["size_gb"],
                "message_id": context.idempotency_key,
            },
        )


# --- the delete flow -----------------------------------------------------------------------------


class DeleteVolumeOnHost(Task):
    """Delete the volume on the host it was created on (nothing to do if it never got one)."""

    def __init__(self, driver: VolumeDriver, *, name: str = "delete_volume") -> None:
        super().__init__(name)
        self.driver = driver

    def execute(self, resource_id: str, volume: Mapping[str, Any] | None) -> None:
        if volume:
            self.driver.delete(str(volume.get("id", resource_id)), str(volume["host"]))


class ReleaseQuota(Task):
    """Give back the quota the api flow committed (nothing if it never committed any)."""

    def __init__(self, ledger: QuotaLedger, *, name: str = "release_quota") -> None:
        super().__init__(name)
        self.ledger = ledger

    def execute(self, quota_commit: Mapping[str, Any] | None) -> None:
        if quota_commit:
            self.ledger.release_reservation(str(quota_commit["reservation_id"]))


class NotifyVolumeDeleted(Task):
    """Notify that the volume is gone."""

    def __init__(self, notifier: Notifier, *, name: str = "notify_volume_deleted") -> None:
        super().__init__(name)
        self.notifier = notifier

    def execute(self, resource_id: str, context: TaskContext) -> None:
        self.notifier.notify("volume.delete.end", {"volume_id": resource_id, "message_id": context.idempotency_key})


# --- the flows and the steps -----------------------------------------------------------------------

#: What each step copies from its flow into the resource's data.
API_OUTPUTS = ("volume_record", "reservation", "quota_commit", "cast_to")
SCHEDULER_OUTPUTS = ("host", "alternate_hosts", "cast_to")
MANAGER_OUTPUTS = ("volume",)


def api_flow(
    ledger: QuotaLedger,
    *,
    quota_resource: str = "gigabytes",
    availability_zones: Collection[str] | None = None,
    default_availability_zone: str | None = None,
) -> Flow:
    """The api workflow. Inputs: ``request`` (the spec) and ``resource_id``."""
    return linear(
        "volume-api",
        ExtractVolumeRequest(
            availability_zones=availability_zones, default_availability_zone=default_availability_zone
        ),
        ReserveQuota(ledger, resource=quota_resource),
        CreateVolumeRecord(),
        CommitQuota(ledger),
        CastVolume(),
    )


def scheduler_flow(scheduler: HostScheduler, notifier: Notifier) -> Flow:
    """The scheduler workflow. Inputs: ``resource_id`` and ``volume_record``."""
    return linear(
        "volume-scheduler",
        ExtractSchedulerSpec(),
        ScheduleVolume(scheduler),
        NotifyFailure(notifier, "volume.schedule.error", name="notify_scheduling_failed"),
    )


def _reschedule_number(retry: int, failure: Failure, values: Mapping[str, Any]) -> int:
    return retry


def manager_flow(
    driver: VolumeDriver,
    notifier: Notifier,
    *,
    reschedule_on: tuple[type[BaseException], ...] = (RescheduleableError,),
    max_reschedules: int = 3,
) -> Flow:
    """The manager workflow. Inputs: ``resource_id``, ``volume_record``, ``host``, ``alternate_hosts``, ``reschedules``.

    The create subflow's :class:`Retry` catches the ``reschedule_on`` exception types, reverts the
    try (the driver deletes what it made) and runs the subflow again with ``reschedules`` one
    higher, which :class:`ChooseHost` turns into the next alternate host the scheduler proposed. The
    reschedule moves a counter rather than the host itself because the alternates are per-volume
    data, and a :class:`Reschedule` is fixed when the flow is declared. Any other exception type, or
    running out of alternates or of ``max_reschedules``, fails the flow.
    """
    return linear(
        "volume-manager",
        ExtractVolumeSpec(),
        linear(
            "volume-manager.create",
            ChooseHost(),
            CreateVolumeFromSpec(driver),
            retry=Retry(
                times=max_reschedules,
                on=reschedule_on,
                reschedule=Reschedule("reschedules", _reschedule_number),
            ),
        ),
        NotifyVolumeCreated(notifier),
        NotifyFailure(notifier, "volume.create.error", name="notify_create_failed"),
    )


def delete_flow(ledger: QuotaLedger, driver: VolumeDriver, notifier: Notifier) -> Flow:
    """The delete workflow. Inputs: ``resource_id``, ``volume`` and ``quota_commit`` (either may be None)."""
    return linear(
        "volume-delete",
        DeleteVolumeOnHost(driver),
        ReleaseQuota(ledger),
        NotifyVolumeDeleted(notifier),
    )


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
