"""What a client asks for when it requests a volume: its size, project and content source."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import pydantic

__all__ = ["SOURCE_ID_FIELDS", "VolumeSource", "VolumeSpec"]


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
