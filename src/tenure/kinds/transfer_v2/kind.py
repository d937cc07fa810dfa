"""``transfer`` version 2's declaration: its spec, guards, states and events (see the package docs)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

import pydantic

from tenure.engine.planes import Signaling
from tenure.errors import InvalidArgument
from tenure.kinds._shapes import DEFAULT_RETRY, Shapes
from tenure.kinds.transfer import DefinitionSpec
from tenure.machine import Backoff, Event, Kind, Role, State, Subject

__all__ = [
    "CALLBACK",
    "CLIENT_EVENTS",
    "KEY",
    "STEP_DATA",
    "TransferV2Spec",
    "transfer_v2_for",
    "transfer_v2_kind",
]

#: The key a transfer's waits await: the data plane's one answer.
KEY = "dataplane"
#: The data key the wait's answers are kept under (``data.callback.dataplane``: status, data, error).
CALLBACK = "callback"
#: The data keys only the transfer's steps write.
STEP_DATA = ("signals", CALLBACK, "source", "destination", "dataFlowId", "ended", "failure")
#: The events a client may fire: the counter-party's start and completion messages.
CLIENT_EVENTS = ("start", "complete")


class TransferV2Spec(pydantic.BaseModel):
    """What a client asks for when it starts a transfer (version 2)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    asset: str = pydantic.Field(min_length=1, max_length=255)
    type: Literal["consumer", "provider"] = pydantic.Field(description="which side of the transfer this is")
    source: dict[str, Any] | None = pydantic.Field(default=None, description="where the data comes from")
    destination: dict[str, Any] | None = pydantic.Field(default=None, description="where the data goes")
    resources: list[DefinitionSpec] = pydantic.Field(
        default_factory=list, max_length=50, description="what the data plane provisions for the flow"
    )
    dataplane: str = pydantic.Field(
        min_length=1, max_length=100, description="the id of the data plane that serves this transfer"
    )

    @pydantic.model_validator(mode="after")
    def _unique_ids(self) -> TransferV2Spec:
        ids = [d.id for d in self.resources]
        if len(ids) != len(set(ids)):
            raise ValueError("resource definition ids must be unique")
        return self


def _spec_for(dataplanes: Sequence[str]) -> type[TransferV2Spec]:
    """The spec model of a transfer served by one of ``dataplanes`` (default: the first)."""
    known = tuple(dict.fromkeys(dataplanes))
    listed = ", ".join(known)

    class Spec(TransferV2Spec):
        dataplane: str = pydantic.Field(
            default=known[0],
            min_length=1,
            max_length=100,
            description=f"the id of the data plane that serves this transfer (one of: {listed})",
        )

        @pydantic.field_validator("dataplane")
        @classmethod
        def _configured(cls, dataplane: str) -> str:
            if dataplane not in known:
                raise ValueError(f"{dataplane!r} is not a data plane here (known data planes: {listed})")
            return dataplane

    Spec.__name__ = Spec.__qualname__ = "TransferV2Spec"
    return Spec


def _consumer(subject: Subject) -> bool:
    return subject.spec.get("type") == "consumer"


def _provider(subject: Subject) -> bool:
    return subject.spec.get("type") == "provider"


def _assigned_plane(subject: Subject) -> str:
    """The one client whose callbacks a transfer takes: its data plane (nobody, if it names none)."""
    return str(subject.spec.get("dataplane") or "")


#: Sources of ``terminate``: where a failure, or a wish to terminate, leaves from; and the callback
#: that confirms a termination (from ``termination_requested``).
_TERMINABLE = (
    "initial",
    "requesting",
    "requested",
    "starting",
    "started",
    "suspending",
    "suspended",
    "completing",
    "termination_requested",
)


def transfer_v2_kind(
    *,
    dataplanes: Sequence[str],
    request_deadline: timedelta,
    retry: Backoff | None = None,
) -> Kind:
    """``transfer`` version 2, served by ``dataplanes`` (ids; a transfer names one, default the first).

    ``request_deadline`` is how long a ``*_requested`` state waits for the data plane's callback
    before asking again; ``retry`` is the backoff of the states that signal, when the data plane
    cannot be reached (default: 8 attempts, 1 s doubling up to 2 min).
    """
    planes = [dataplanes] if isinstance(dataplanes, str) else list(dataplanes)
    if not planes or not all(isinstance(p, str) and p for p in planes):
        raise InvalidArgument("dataplanes", "must name at least one data plane, each by a non-empty id", planes)
    shapes = Shapes(retry or DEFAULT_RETRY, request_deadline)
    work, wait = shapes.work, shapes.wait

    events = [
        # initial: a consumer prepares, a provider starts (seed 001's first two rows).
        Event("prepare_requested", "initial", "preparation_requested", guard=_consumer,
              description="the data plane is provisioning for the flow and will call back"),
        Event("prepared", "initial", "requesting", guard=_consumer, description="the data plane prepared at once"),
        Event("prepared", "preparation_requested", "requesting", description="the data plane called back: prepared"),
        Event("prepare_retry", "preparation_requested", "initial", description="the callback failed: prepare again"),
        Event("prepare_timed_out", "preparation_requested", "initial", description="no callback in time"),
        Event("requested", "requesting", "requested", description="the provider accepted the request"),
        Event("start", "requested", "starting", guard=_consumer, description="the provider's start message"),
        Event("start_requested", "initial", "startup_requested", guard=_provider,
              description="the data plane is provisioning to start and will call back"),
        Event("start_requested", "starting", "startup_requested",
              description="the data plane is provisioning to start and will call back"),
        Event("dataplane_started", "initial", "starting", guard=_provider,
              description="the data plane started at once"),
        Event("dataplane_started", "startup_requested", "starting", description="the data plane called back: started"),
        Event("start_retry", "startup_requested", "starting", description="the callback failed: start again"),
        Event("start_timed_out", "startup_requested", "starting", description="no callback in time"),
        Event("started", "starting", "started"),
        # started: suspend and terminate (seed 001's last two rows), or complete.
        Event("suspend_requested", ["started", "suspending"], "suspension_requested",
              description="the data plane is deprovisioning and will call back"),
        Event("suspend", ["started", "suspension_requested"], "suspending",
              description="the data plane suspended (at once, or called back)"),
        Event("suspend_retry", "suspension_requested", "suspending", description="the callback failed: suspend again"),
        Event("suspend_timed_out", "suspension_requested", "suspending", description="no callback in time"),
        Event("suspended", "suspending", "suspended"),
        Event("resume", "suspended", "starting", description="the same data plane is asked to start again"),
        Event("complete", "started", "completing", description="the transfer completed"),
        # completing: the data plane is told to terminate the flow, so it releases what it provisioned.
        Event("complete_requested", "completing", "completion_requested",
              description="the data plane is deprovisioning the finished flow and will call back"),
        Event("completion_confirmed", "completion_requested", "completing",
              description="the data plane called back: the flow is over"),
        Event("complete_retry", "completion_requested", "completing", description="the callback failed: ask again"),
        Event("complete_timed_out", "completion_requested", "completing", description="no callback in time"),
        Event("completed", "completing", "completed"),
        Event("terminate_requested", ["started", "terminating"], "termination_requested",
              description="the data plane is deprovisioning and will call back"),
        Event("terminate", _TERMINABLE, "terminating",
              description="stop the transfer (asked for, failed, or the data plane called back: terminated)"),
        Event("terminate_retry", "termination_requested", "terminating",
              description="the callback failed: terminate again"),
        Event("terminate_timed_out", "termination_requested", "terminating", description="no callback in time"),
        Event("terminated", "terminating", "terminated"),
        Event("terminate_failed", "terminating", "terminated", description="terminating failed for good"),
    ]  # fmt: skip
    return Kind(
        "transfer",
        version=2,
        description=(
            "A data transfer whose data plane provisions what it needs: prepare or start, run, "
            "suspend and resume, complete or terminate."
        ),
        spec_model=_spec_for(planes),
        step_data=STEP_DATA,
        engine_events=sorted({e.name for e in events} - set(CLIENT_EVENTS)),
        answered_by=_assigned_plane,
        initial="initial",
        states=[
            work("initial", 100, "terminate", "accepted; the data plane is asked to prepare (consumer) or start"),
            wait("preparation_requested", 150, "prepare_timed_out", "waiting for the data plane to prepare the flow"),
            work("requesting", 400, "terminate", "the transfer is being requested from the provider"),
            State("requested", 500, Role.REST, description="requested; waiting for the provider's start message"),
            work("starting", 550, "terminate", "the data plane is asked to start (unless it already confirmed)"),
            wait("startup_requested", 570, "start_timed_out", "waiting for the data plane to report it started"),
            State(
                "started",
                600,
                Role.REST,
                retry=shapes.retry,
                # A signal that fails for good gives the wish up: the flow keeps flowing.
                description="data is flowing; leaving it (suspend, terminate) signals the data plane",
            ),
            work("suspending", 650, "terminate", "the data plane is pausing the flow"),
            wait("suspension_requested", 660, "suspend_timed_out", "waiting for the data plane to deprovision"),
            State("suspended", 700, Role.REST, description="paused; can be resumed or terminated"),
            work("completing", 750, "terminate", "the transfer is finishing: the data plane ends the flow"),
            wait("completion_requested", 760, "complete_timed_out", "waiting for the data plane to deprovision"),
            State("completed", 800, Role.FINAL, description="finished (data.ended: completed)"),
            work("terminating", 825, "terminate_failed", "the data plane is asked to stop the flow"),
            wait("termination_requested", 830, "terminate_timed_out", "waiting for the data plane to deprovision"),
            State(
                "terminated",
                850,
                Role.FINAL,
                description="stopped (data.ended: terminated, or failed with the error kept)",
            ),
        ],
        events=events,
    )


@functools.cache
def _built_in(dataplanes: tuple[str, ...], request_deadline: timedelta) -> Kind:
    return transfer_v2_kind(dataplanes=dataplanes, request_deadline=request_deadline)


def transfer_v2_for(signaling: Signaling) -> Kind:
    """The built-in transfer version 2 for the data planes ``signaling`` configures (the same object each time).

    The store and the engine's steps must hold one and the same kind object.
    """
    return _built_in(tuple(p.id for p in signaling.dataplanes), signaling.request_deadline)
