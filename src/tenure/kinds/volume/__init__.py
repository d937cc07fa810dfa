"""The ``volume`` kind: Cinder's create-volume workflow of seed 004, as tenure flows.

Seed 004 splits creating a volume into three workflows of small tasks that consume inputs, provide
outputs and revert what they did when a later task fails. Here each workflow is the step of one
*work* state, so the resource row moves on only when its workflow has finished:

==============  =====  ==========================================================================
state           code   what happens there
==============  =====  ==========================================================================
``requested``   10     the **api** flow: extract and check the request into one standard shape
                       (``volume_request``), reserve quota (reverted by rolling the reservation
                       back), create the database entry (the resource row *is* the entry; the flow
                       records a ``volume_record``), commit the quota (reverted by releasing it)
                       and "cast" to the scheduler (``cast_to``). ``accepted`` / ``rejected``.
``scheduling``  20     the **scheduler** flow: extract the scheduler's ``request_spec``, pick a host
                       through a pluggable :class:`HostScheduler`, and — only when the flow failed —
                       change status & notify. ``scheduled`` / ``unschedulable``.
``creating``    30     the **manager** flow: extract the ``volume_spec`` (broken up into the four
                       sources raw / image / snapshot / volume), create the volume through a
                       pluggable :class:`VolumeDriver` inside a subflow whose :class:`Retry`
                       reschedules to the scheduler's alternate hosts on the chosen exception types
                       (other types fail the flow), notify on success, or — only on failure —
                       change status & notify. ``created`` / ``failed``.
``available``   40     rest: the volume exists. ``delete``.
``error``       50     rest: something failed (the resource's ``error`` says what). ``delete``.
``deleting``    60     the **delete** flow: delete the volume on its host, release the quota,
                       notify. ``deleted`` / ``delete_failed``.
``deleted``     70     final.
==============  =====  ==========================================================================

"Change status" is the step's failure event (``rejected``, ``unschedulable``, ``failed``): it moves
the row and records the error in the same journaled transaction. Quota follows Cinder: a volume
holds its gigabytes from the api flow's commit until it is deleted, also while it is in ``error``;
a request rejected by the api flow holds nothing. So at rest, for every project,
``reserved == 0`` and ``in_use`` is the sum of ``size_gb`` over the volumes that are not deleted
and whose data has a ``quota_commit``.

Resumption (the seed's "future addition") comes with the flow layer: every task's progress is
checkpointed in the store, and running the step again for the same resource version resumes the
same run. A task that was running when its process died runs again (at-least-once), so tasks are
idempotent: the quota reservation is keyed by the task's idempotency key, the driver is asked to
create a volume whose id is the resource id, and notifications carry the idempotency key as
``message_id`` for de-duplication.

The kind itself is plain data (registered by :func:`tenure.kinds.builtin_kinds`); the steps need
collaborators — a quota ledger (a tenure store is one), hosts or a scheduler, a driver, a notifier —
and are built by :func:`volume_steps`.

One module per concept: :mod:`~tenure.kinds.volume.spec` (the request), :mod:`~tenure.kinds.volume.errors`,
the collaborators' protocols (:mod:`~tenure.kinds.volume.quota`, :mod:`~tenure.kinds.volume.drivers`,
:mod:`~tenure.kinds.volume.notifications`; the :class:`~tenure.kinds.volume.scheduler.HostScheduler` lives with
the scheduler flow), one module per flow (:mod:`~tenure.kinds.volume.api`, :mod:`~tenure.kinds.volume.scheduler`,
:mod:`~tenure.kinds.volume.manager`, :mod:`~tenure.kinds.volume.delete`), in-memory collaborators for demos and
tests (:mod:`~tenure.kinds.volume.memory`), and the kind with its steps (:mod:`~tenure.kinds.volume.kind`).

>>> volume.initial.name, [s.code for s in volume.states]
('requested', [10, 20, 30, 40, 50, 60, 70])
>>> volume.validate_spec({"size_gb": 1, "project": "p", "source": "image", "image_id": "img"})["image_id"]
'img'
"""

from __future__ import annotations

from tenure.kinds.volume.api import (
    CastVolume,
    CommitQuota,
    CreateVolumeRecord,
    ExtractVolumeRequest,
    ReserveQuota,
    api_flow,
)
from tenure.kinds.volume.delete import DeleteVolumeOnHost, ReleaseQuota, delete_flow
from tenure.kinds.volume.errors import InvalidVolumeRequest, NoValidHost, RescheduleableError
from tenure.kinds.volume.kind import volume, volume_steps

# What callers import from the package; everything else is imported from its own module.
from tenure.kinds.volume.ledger import VOLUME_TABLES, Quota, Reservation, ReservationState, StoreQuotaLedger
from tenure.kinds.volume.manager import (
    ChooseHost,
    CreateVolumeFromSpec,
    ExtractVolumeSpec,
    NotifyVolumeCreated,
    manager_flow,
)
from tenure.kinds.volume.memory import MemoryNotifier, MemoryVolumeDriver
from tenure.kinds.volume.notifications import NotifyFailure
from tenure.kinds.volume.quota import QuotaLedger, ReservationView
from tenure.kinds.volume.scheduler import CapacityScheduler, ExtractSchedulerSpec, Host, ScheduleVolume, scheduler_flow
from tenure.kinds.volume.spec import VolumeSource, VolumeSpec

__all__ = [
    "VOLUME_TABLES",
    "CapacityScheduler",
    "CastVolume",
    "ChooseHost",
    "CommitQuota",
    "CreateVolumeFromSpec",
    "CreateVolumeRecord",
    "DeleteVolumeOnHost",
    "ExtractSchedulerSpec",
    "ExtractVolumeRequest",
    "ExtractVolumeSpec",
    "Host",
    "InvalidVolumeRequest",
    "MemoryNotifier",
    "MemoryVolumeDriver",
    "NoValidHost",
    "NotifyFailure",
    "NotifyVolumeCreated",
    "Quota",
    "QuotaLedger",
    "ReleaseQuota",
    "RescheduleableError",
    "Reservation",
    "ReservationState",
    "ReservationView",
    "ReserveQuota",
    "ScheduleVolume",
    "StoreQuotaLedger",
    "VolumeSource",
    "VolumeSpec",
    "api_flow",
    "delete_flow",
    "manager_flow",
    "scheduler_flow",
    "volume",
    "volume_steps",
]
