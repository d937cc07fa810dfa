"""The api flow of the ``requested`` state: check the request, reserve quota, record, commit, cast."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from typing import Any

import pydantic

from tenure.errors import QuotaExceeded, QuotaNotFound
from tenure.flow import Failure, Flow, Task, TaskContext, linear
from tenure.kinds.volume.errors import InvalidVolumeRequest
from tenure.kinds.volume.quota import QuotaLedger
from tenure.kinds.volume.spec import VolumeSpec

__all__ = ["CastVolume", "CommitQuota", "CreateVolumeRecord", "ExtractVolumeRequest", "ReserveQuota", "api_flow"]


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
