"""The driver protocol: how the manager and delete flows create and delete volumes on a host."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["VolumeDriver"]


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
