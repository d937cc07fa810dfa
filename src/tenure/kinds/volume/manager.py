"""The manager flow of the ``creating`` state: create the volume on a host, rescheduling on failure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tenure.flow import Failure, Flow, Reschedule, Retry, Task, TaskContext, linear
from tenure.kinds.volume.drivers import VolumeDriver
from tenure.kinds.volume.errors import InvalidVolumeRequest, NoValidHost, RescheduleableError
from tenure.kinds.volume.notifications import Notifier, NotifyFailure
from tenure.kinds.volume.spec import SOURCE_ID_FIELDS, VolumeSource

__all__ = ["ChooseHost", "CreateVolumeFromSpec", "ExtractVolumeSpec", "NotifyVolumeCreated", "manager_flow"]


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


def _json_ready(what: str, value: Any) -> Any:
    """``value`` as plain JSON data (a task's outputs are checkpointed as JSON)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON data ({exc})") from None
