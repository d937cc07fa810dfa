"""The delete flow of the ``deleting`` state: delete the volume on its host, release its quota, notify."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tenure.flow import Flow, Task, TaskContext, linear
from tenure.kinds.volume.drivers import VolumeDriver
from tenure.kinds.volume.notifications import Notifier
from tenure.kinds.volume.quota import QuotaLedger

__all__ = ["DeleteVolumeOnHost", "NotifyVolumeDeleted", "ReleaseQuota", "delete_flow"]


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


def delete_flow(ledger: QuotaLedger, driver: VolumeDriver, notifier: Notifier) -> Flow:
    """The delete workflow. Inputs: ``resource_id``, ``volume`` and ``quota_commit`` (either may be None)."""
    return linear(
        "volume-delete",
        DeleteVolumeOnHost(driver),
        ReleaseQuota(ledger),
        NotifyVolumeDeleted(notifier),
    )
