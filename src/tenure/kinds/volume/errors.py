"""The exceptions of the volume flows: raised by their tasks, and by drivers when a host fails."""

from __future__ import annotations

__all__ = ["InvalidVolumeRequest", "NoValidHost", "RescheduleableError", "VolumeDriverError"]


class InvalidVolumeRequest(ValueError):
    """The request does not describe a volume this deployment can create."""


class NoValidHost(Exception):
    """No host can take the volume (none has room in the zone, or every alternate was tried)."""


class VolumeDriverError(Exception):
    """A driver could not create or delete a volume."""


class RescheduleableError(VolumeDriverError):
    """The host could not create the volume, but another host might (rescheduled by default)."""
