"""In-memory collaborators of the volume flows (a driver and a notifier), for demos and tests."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tenure.kinds.volume.notifications import Notification

__all__ = ["NOTIFICATIONS_KEPT", "MemoryNotifier", "MemoryVolumeDriver"]

#: How many of its most recent notifications a :class:`MemoryNotifier` keeps (older ones are dropped).
NOTIFICATIONS_KEPT = 1000


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


@dataclass
class MemoryNotifier:
    """A notifier that keeps the most recent :data:`NOTIFICATIONS_KEPT` notifications, oldest first.

    A bounded window: a worker running for weeks with it does not keep every notification it sent.
    """

    events: deque[Notification] = field(default_factory=lambda: deque(maxlen=NOTIFICATIONS_KEPT))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def notify(self, event_type: str, payload: Mapping[str, Any]) -> None:
        with self._lock:
            self.events.append(Notification(event_type, dict(payload)))

    def of_type(self, event_type: str) -> list[Notification]:
        """The notifications of one event type, in the order they were sent."""
        with self._lock:
            return [n for n in self.events if n.event_type == event_type]
