"""The scheduler flow of the ``scheduling`` state: the hosts, how one is picked, and the flow that picks it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tenure.flow import Flow, Task, linear
from tenure.kinds.volume.errors import InvalidVolumeRequest, NoValidHost
from tenure.kinds.volume.notifications import Notifier, NotifyFailure

__all__ = ["CapacityScheduler", "ExtractSchedulerSpec", "Host", "HostScheduler", "ScheduleVolume", "scheduler_flow"]


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


def scheduler_flow(scheduler: HostScheduler, notifier: Notifier) -> Flow:
    """The scheduler workflow. Inputs: ``resource_id`` and ``volume_record``."""
    return linear(
        "volume-scheduler",
        ExtractSchedulerSpec(),
        ScheduleVolume(scheduler),
        NotifyFailure(notifier, "volume.schedule.error", name="notify_scheduling_failed"),
    )
