"""The ``image`` kind: the image status machine of seed 003 (OpenStack Glance's image statuses).

One global graph decides every status change, so concurrent updates cannot race each other into a
status the graph does not allow. Codes are stable and spaced so that states can be added later.
"""

from __future__ import annotations

from datetime import timedelta

import pydantic

from tenure.machine import ANY, Event, Kind, Role, State

__all__ = ["ImageSpec", "image"]


class ImageSpec(pydantic.BaseModel):
    """What a client asks for when it registers an image."""

    model_config = pydantic.ConfigDict(extra="forbid")

    name: str = pydantic.Field(min_length=1, max_length=255)
    disk_format: str = pydantic.Field(default="raw", pattern=r"^(raw|qcow2|vmdk|vdi|iso|ami)$")
    container_format: str = pydantic.Field(default="bare", pattern=r"^(bare|ovf|ova|docker)$")
    size_bytes: int | None = pydantic.Field(default=None, ge=0)
    visibility: str = pydantic.Field(default="private", pattern=r"^(private|shared|community|public)$")


image = Kind(
    "image",
    description="A disk image: registered, uploaded or imported, active, and eventually deleted.",
    spec_model=ImageSpec,
    initial="queued",
    states=[
        State("queued", 10, Role.REST, description="registered; no image data yet"),
        State("saving", 20, Role.WORK, description="data is being written to the store"),
        State("uploading", 30, Role.REST, description="data is being staged by the client (interoperable import)"),
        State("importing", 40, Role.WORK, description="staged data is being imported"),
        State("active", 50, Role.REST, description="available for use"),
        State("deactivated", 60, Role.REST, description="data download refused until reactivated"),
        State(
            "pending_delete",
            70,
            Role.WAIT,
            deadline=timedelta(days=1),
            on_deadline="scrub",
            description="deleted, data kept until the scrubber removes it",
        ),
        State("killed", 80, Role.REST, description="upload failed; can only be deleted"),
        State("deleted", 90, Role.FINAL, description="gone"),
    ],
    events=[
        Event("upload", "queued", "saving", description="client starts sending data"),
        Event("stage", "queued", "uploading", description="client starts staging data for import"),
        Event("import", ["queued", "uploading"], "importing", description="import from staging or a URL"),
        Event("activate", ["saving", "importing"], "active", description="data is complete and verified"),
        Event("reset", ["saving", "uploading", "importing"], "queued", description="a failed write is undone"),
        Event("kill", "saving", "killed", description="data could not be written"),
        Event("deactivate", "active", "deactivated"),
        Event("reactivate", "deactivated", "active"),
        Event("delay_delete", "active", "pending_delete", description="delete, keeping data for the scrubber"),
        Event("scrub", "pending_delete", "deleted", description="the scrubber removes the data"),
        Event("delete", ANY, "deleted", description="delete now"),
    ],
)
