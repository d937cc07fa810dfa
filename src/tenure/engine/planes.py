"""Who talks to whom in data-plane signaling (seed 001): a control plane and its data planes.

A control plane knows its data planes (:class:`DataPlaneRef`: an id, the URL of its signaling API,
the token the control plane presents there). A data plane knows itself and the control plane it
answers to (:class:`ControlPlaneRef`: the URL of its ``/v1/callbacks`` and the token the data plane
presents there, whose client name on the control plane is the data plane's id). The service's
configuration file fills these in (``[[dataplanes]]`` and ``[dataplane]``); the engine and the
kinds only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

__all__ = ["ControlPlaneRef", "DataPlaneRef", "Signaling"]


@dataclass(frozen=True, slots=True)
class DataPlaneRef:
    """One data plane as its control plane sees it."""

    id: str
    #: The data plane's base URL (``http://127.0.0.1:8801``); signaling lives under ``/v1/signaling``.
    url: str
    #: The bearer token the control plane presents to it.
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ControlPlaneRef:
    """The control plane a data plane reports to."""

    #: The control plane's base URL; callbacks go to ``{url}/v1/callbacks``.
    url: str
    #: The bearer token the data plane presents there (its client name there is the data plane's id).
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Signaling:
    """The signaling roles of one process: a control plane (``dataplanes``), a data plane, or both."""

    dataplanes: tuple[DataPlaneRef, ...] = ()
    #: This process's id as a data plane (None: it is not one).
    dataplane_id: str | None = None
    controlplane: ControlPlaneRef | None = None
    #: How long a ``*_requested`` state waits for the other side before asking again.
    request_deadline: timedelta = timedelta(seconds=60)
    #: Where this control plane takes callbacks (``{its public URL}/v1/callbacks``), handed to data planes.
    callback_url: str | None = None

    @property
    def is_dataplane(self) -> bool:
        return self.dataplane_id is not None

    def dataplane(self, plane_id: str) -> DataPlaneRef | None:
        return next((p for p in self.dataplanes if p.id == plane_id), None)
