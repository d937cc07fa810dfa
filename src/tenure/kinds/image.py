"""The ``image`` kind: the image status machine of seed 003 (OpenStack Glance's image statuses).

One global graph decides every status change, so concurrent updates cannot race each other into a
status the graph does not allow. Codes are stable and spaced so that states can be added later.

Users read this kind as Glance's machine, so its moves are checked against Glance's own table:
``Image.valid_state_targets`` in ``glance/domain/__init__.py`` of the ``openstack/glance``
repository (with ``Image.delete``, ``Image.deactivate`` and ``Image.reactivate`` beside it, and the
diagram ``doc/source/images_src/image_status_transition.dot``). Glance's table lists target
statuses, not events: apart from delete, deactivate and reactivate, its API sets the status inside
the call that uploads, stages or imports. So the event names here are ours; naming a move Glance
leaves implicit changes no pair.

Every (source, target) pair, Glance against this kind::

    Glance move                     this kind
    queued      -> saving           upload
    queued      -> uploading        stage
    queued      -> importing        import
    queued      -> active           NOT MODELLED (deviation 1)
    queued      -> deleted          delete
    saving      -> active           activate
    saving      -> killed           kill
    saving      -> queued           reset
    saving      -> deleted          delete
    uploading   -> importing        import
    uploading   -> queued           reset
    uploading   -> deleted          delete
    importing   -> active           activate
    importing   -> queued           reset
    importing   -> deleted          delete
    active      -> deactivated      deactivate
    active      -> pending_delete   delay_delete (deviation 2)
    active      -> deleted          delete (deviation 2)
    deactivated -> active           reactivate
    deactivated -> deleted          delete
    killed      -> deleted          delete
    pending_delete -> deleted       scrub, on a deadline (deviation 3); also delete (deviation 4)
    pending_delete -> active        restore
    deleted     -> (nothing)        deleted is final

No pair exists here that Glance's table forbids. The deliberate differences, move by move:

1. ``queued -> active`` is not modelled. In Glance's v2 API it happens when a client attaches a
   location, i.e. data that already sits in a store Glance did not write (``_do_add_locations`` and
   ``_do_replace_locations`` in ``glance/api/v2/images.py``), and Glance refuses that location
   update unless the operator turns on ``show_multiple_locations``, off by default. The spec
   (:class:`ImageSpec`) has no location, so here an image gets data only through ``saving`` or
   ``importing``; a queued image that could jump to ``active`` would be active with no data at
   all. ``activate`` is therefore refused from ``queued``, as the store and HTTP contracts expect.
2. Glance has one ``Image.delete()`` that goes to ``pending_delete`` when the deployment sets
   ``delayed_delete`` and the image has locations, and to ``deleted`` otherwise. A kind has no
   deployment configuration, so the caller chooses per call: ``delay_delete`` or ``delete``. The
   pairs are Glance's; as in Glance's table, only ``active`` may enter ``pending_delete``.
3. ``pending_delete`` is a wait state with a one-day deadline that fires ``scrub``. Glance has no
   deadline: its scrubber wakes up periodically and removes images whose delete time is older than
   ``scrub_time``. A tenure wait state needs a deadline so that the engine, not an outside daemon,
   ends it; one day leaves an operator time to ``restore``.
4. ``delete`` is allowed from every non-final state, ``pending_delete`` included, where it makes
   the same ``pending_delete -> deleted`` move as ``scrub``. Glance's API has no call for that move
   (a delayed delete already marks the image row deleted, hiding it from ordinary callers); only
   the scrubber makes it. Keeping ``delete`` here lets an operator purge without waiting out the
   deadline, and keeps ``delete`` meaning "to ``deleted``, now" in every state. It adds an event,
   not a pair.
5. Glance answers ``deactivate`` on a deactivated image and ``reactivate`` on an active one as
   successful no-ops. This kind has no self-loops, so those are refused (a 409 over HTTP): a no-op
   is not a move, and the refusal tells a racing client that someone else already made it.

Two notes that are not deviations. ``restore`` is the move that ``glance-scrubber --restore``
makes (``Scrubber.revert_image_status`` in ``glance/scrubber.py``, which calls ``image_restore`` in
``glance/db/sqlalchemy/api.py``: only from ``pending_delete``, only to ``active``). ``kill`` is kept
although Glance's v2 API now resets a failed upload to ``queued`` instead: ``saving -> killed``
is still in Glance's table. Glance's extra check that ``disk_format`` and ``container_format`` are
set before data arrives always holds here, because :class:`ImageSpec` defaults both.
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
            description="deleted, data kept until the scrubber removes it or an operator restores it",
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
        Event("restore", "pending_delete", "active", description="an operator undoes a delayed delete"),
        Event("delete", ANY, "deleted", description="delete now"),
    ],
)
