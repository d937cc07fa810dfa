"""``transfer`` version 2: the transfer process of seed 001, with provisioning moved to the data plane.

The control plane no longer provisions anything. It signals the transfer's data plane (``prepare``,
``start``, ``suspend``, ``terminate``; the wire contract is ``docs/signaling.md``) and learns at once
whether the data plane started an asynchronous (de)provisioning. If it did not, the transfer goes on
along the standard path; if it did, the transfer waits in a ``*_requested`` state for the data
plane's callback (key ``dataplane``), up to a deadline that asks again. Seed 001's table:

=========  ========  =========  =========================  ======================
from       type      signal     async                      not async
=========  ========  =========  =========================  ======================
initial    consumer  prepare    ``preparation_requested``  ``requesting``
initial    provider  start      ``startup_requested``      ``starting``
started    either    suspend    ``suspension_requested``   ``suspending``
started    either    terminate  ``termination_requested``  ``terminating``
=========  ========  =========  =========================  ======================

A consumer has ``requesting`` and ``requested`` (it asks the provider, then rests until the
provider's start message, the client event ``start``); a provider starts straight from ``initial``
(guards on ``spec.type`` keep each to its own edges, as in EDC's ``TransferProcess``).

Each transfer is served by one data plane (``spec.dataplane``, one of the configured ones), for its
whole life: the plane that prepared a flow is the plane that starts, suspends and terminates it, and
only that plane's callbacks are accepted for it (``Kind.answered_by``).

**Who moves it.** Clients ask with ``desiredState`` (``suspended``, ``started`` to resume,
``terminated``, ``completed``); the engine does the signaling. ``started`` is a rest state whose step
runs only while a desired state asks to leave it: it signals ``suspend`` or ``terminate`` per the
table, or fires ``complete`` (no signal). The only events a client fires itself are the
counter-party's messages: ``start`` (the provider's start message, to a consumer in ``requested``)
and ``complete``. Every other event is the engine's (``Kind.engine_events``).

**Retries.** A work state that signals asks the data plane again when the answer was an error worth
retrying (no connection, 429, 5xx), with the state's backoff. A callback that says ``failed`` or
``retry``, and a wait whose deadline passes, go back to the state that signals again
(``preparation_requested`` to ``initial``, the others to ``starting``, ``suspending`` and
``terminating``), which asks again with a fresh callback token. The round trips per signal are
counted (``data.signals[signal].asks``) and bounded: past the bound the state fails for good.

**Endings.** ``completed`` and ``terminated`` are final. A failure anywhere leads to ``terminating``,
which signals ``terminate`` if a flow may exist on the data plane, and ends in ``terminated`` with
the failure kept as the resource's error and in ``data.failure``. ``data.ended`` says how the
lifecycle ended, for a client to filter on: ``completed``, ``terminated`` (asked for) or ``failed``.

**Data the steps own** (``Kind.step_data``; no client writes them): ``signals`` (per signal: round
trips, the last answer, whether the data plane confirmed it), ``callback`` (the last wait's answer),
``source`` and ``destination`` (the addresses as the data plane last reported them: a provisioner may
change them, and later signals send them as changed), ``dataFlowId``, ``ended`` and ``failure``.

State codes are EDC's ``TransferProcessStates`` where EDC has the state (``STARTUP_REQUESTED`` 570
among them). The seed's three new states get codes of their own: ``preparation_requested`` 150
(EDC files its preparation under 250, which version 1 uses for ``provisioning_requested``),
``suspension_requested`` 660 and ``termination_requested`` 830. EDC's ``SUSPENDING_REQUESTED`` (675)
and ``TERMINATING_REQUESTED`` (840) are other states: the counter-party asked to suspend or
terminate. Waiting for the data plane to deprovision is a different thing, and a code names one state
for good, so those two codes stay free for them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import pydantic

from tenure.engine.apply import describe
from tenure.engine.outcome import Advance, Fail, Fatal, Outcome, Reconcile, Retryable, RetryLater, Wait
from tenure.engine.planes import Signaling
from tenure.engine.signaling import DataPlaneClient, SignalRefused
from tenure.engine.steps import StepContext, Steps
from tenure.errors import InvalidArgument
from tenure.kinds.transfer import DefinitionSpec
from tenure.machine import Backoff, Event, Kind, Role, State, Subject
from tenure.machine.graph import next_hop
from tenure.store.model import Resource

__all__ = [
    "CALLBACK",
    "CLIENT_EVENTS",
    "KEY",
    "STEP_DATA",
    "TransferV2Spec",
    "transfer_v2_for",
    "transfer_v2_kind",
    "transfer_v2_steps",
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
    policy = retry or Backoff(max_attempts=8, base=timedelta(seconds=1), cap=timedelta(minutes=2))

    def work(state: str, code: int, on_failure: str, description: str) -> State:
        return State(state, code, Role.WORK, on_failure=on_failure, retry=policy, description=description)

    def wait(state: str, code: int, on_deadline: str, description: str) -> State:
        return State(
            state, code, Role.WAIT, deadline=request_deadline, on_deadline=on_deadline, description=description
        )

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
        Event("complete", "started", "completing", description="the transfer completed (no signal)"),
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
                on_failure="terminate",
                retry=policy,
                description="data is flowing; leaving it (suspend, terminate) signals the data plane",
            ),
            work("suspending", 650, "terminate", "the data plane is pausing the flow"),
            wait("suspension_requested", 660, "suspend_timed_out", "waiting for the data plane to deprovision"),
            State("suspended", 700, Role.REST, description="paused; can be resumed or terminated"),
            work("completing", 750, "terminate", "the transfer is finishing"),
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


# --- steps ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Route:
    """One signal: the event into its wait state, and the wait's events when the data plane answers.

    ``done`` takes the standard path (seed 001's "not async" column); ``retry`` goes back to the state
    that signals again (on a ``failed`` or ``retry`` callback). What a synchronous answer fires
    depends on the state that signaled, so each step says it.
    """

    signal: str
    wait: str
    done: str
    retry: str


_PREPARE = _Route("prepare", wait="prepare_requested", done="prepared", retry="prepare_retry")
_START = _Route("start", wait="start_requested", done="dataplane_started", retry="start_retry")
_SUSPEND = _Route("suspend", wait="suspend_requested", done="suspend", retry="suspend_retry")
_TERMINATE = _Route("terminate", wait="terminate_requested", done="terminate", retry="terminate_retry")

Data = dict[str, Any]


def _signals(resource: Resource) -> dict[str, dict[str, Any]]:
    """A copy of what the steps know of each signal (``data.signals``)."""
    raw = resource.data.get("signals")
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): dict(v) for k, v in raw.items() if isinstance(v, Mapping)}


def _addresses(source: object, destination: object, flow: object) -> Data:
    """The data plane's addresses and flow id, as data (what it did not report is left alone)."""
    out: Data = {}
    if isinstance(source, Mapping):
        out["source"] = dict(source)
    if isinstance(destination, Mapping):
        out["destination"] = dict(destination)
    if isinstance(flow, str) and flow:
        out["dataFlowId"] = flow
    return out


def _settle(resource: Resource, signals: dict[str, dict[str, Any]], signal: str) -> Data:
    """Read the answer to the wait for ``signal``, if the transfer just left one; the data it brings.

    A ``done`` answer confirms the signal and its addresses are kept; a ``failed`` or ``retry``
    answer, or none (the deadline passed), leaves it unconfirmed, to be asked again.
    """
    record = signals.get(signal)
    if record is None or not record.get("awaiting"):
        return {}
    record["awaiting"] = False
    callbacks = resource.data.get(CALLBACK)
    answer = callbacks.get(KEY) if isinstance(callbacks, Mapping) else None
    if not isinstance(answer, Mapping):
        record.update(confirmed=False, error="the data plane did not call back before the deadline")
        return {}
    status = answer.get("status")
    if status != "done":
        reason = answer.get("error") or "no reason given"
        record.update(confirmed=False, error=f"the data plane called back {status}: {reason}")
        return {}
    record.update(confirmed=True, error=None)
    data = answer.get("data")
    if not isinstance(data, Mapping):
        return {}
    if isinstance(data.get("state"), str):
        record["state"] = data["state"]
    return _addresses(data.get("source"), data.get("destination"), data.get("dataFlowId"))


def _flow_may_exist(signals: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether the data plane may hold a flow for the transfer: it was sent a signal about it."""
    return bool(signals)


def _afresh(signals: dict[str, dict[str, Any]], signal: str) -> None:
    """Forget the last exchange of ``signal`` (its next one counts its round trips from zero).

    The record stays, emptied: that the data plane once heard of the flow is never forgotten.
    """
    if signal in signals:
        signals[signal] = {"asks": 0}


def _last_attempt(resource: Resource, ctx: StepContext) -> bool:
    return ctx.attempt >= ctx.kind.state(resource.state).backoff.max_attempts


class _Signaler:
    """Signals a transfer's data plane and turns its answer into the transfer's next outcome."""

    def __init__(self, planes: Mapping[str, DataPlaneClient], callback_url: str, max_round_trips: int) -> None:
        self.planes = dict(planes)
        self.callback_url = callback_url
        self.max_round_trips = max_round_trips

    def body(self, resource: Resource, ctx: StepContext, data: Mapping[str, Any]) -> Data:
        """The signal's body: the transfer, its addresses as they now are, and where to call back."""
        spec = resource.spec
        body: Data = {"transferId": resource.id, "type": spec["type"], "asset": spec["asset"]}
        for name in ("source", "destination"):
            value = data.get(name, resource.data.get(name, spec.get(name)))
            if value is not None:
                body[name] = value
        body["resources"] = list(spec.get("resources") or [])
        # Reading ctx.token opens the wait before the call: a callback faster than the answer is kept.
        body["callback"] = {"url": self.callback_url, "resourceId": resource.id, "token": ctx.token, "key": KEY}
        return body

    def exchange(
        self,
        resource: Resource,
        ctx: StepContext,
        route: _Route,
        *,
        signals: dict[str, dict[str, Any]],
        data: Data,
        on_sync: Callable[[Data], Outcome],
    ) -> Outcome:
        """Send ``route.signal``: wait for the callback if the data plane went async, else ``on_sync``.

        ``data`` (with ``signals``) is what the step has learnt so far; it goes with every outcome.
        """
        plane_id = str(resource.spec.get("dataplane"))
        plane = self.planes.get(plane_id)
        if plane is None:
            configured = ", ".join(sorted(self.planes)) or "none"
            error = f"data plane {plane_id!r} is not configured here (configured: {configured})"
            return Fail(error, data={**data, "signals": signals, "failure": error})
        # From here on the data plane may have heard of the flow: the record says it was asked.
        record = signals.setdefault(route.signal, {})
        asks = int(record.setdefault("asks", 0))
        if asks >= self.max_round_trips:
            last = record.get("error") or "no confirmation"
            error = f"the data plane did not confirm {route.signal} in {asks} round trips (last: {last})"
            return Fail(error, data={**data, "signals": signals, "failure": error})
        body = self.body(resource, ctx, data)
        try:
            answer = plane.signal(route.signal, body)
        except Fatal as exc:
            error = describe(exc)
            status = exc.status if isinstance(exc, SignalRefused) else None
            if route.signal == "terminate" and status == 404:
                # The data plane has no flow for the transfer: there is nothing to stop.
                record.update(confirmed=True, awaiting=False, state=None, error=None, absent=True)
                return on_sync({**data, "signals": signals})
            record.update(error=error, refused=status or True)
            return Fail(error, data={**data, "signals": signals, "failure": error})
        except Exception as exc:  # Retryable, or a client's bug: asking again may help
            error = describe(exc)
            record["error"] = error
            delay = exc.delay if isinstance(exc, Retryable) else None
            if _last_attempt(resource, ctx):
                failure = f"gave up after {ctx.attempt} attempts: {error}"
                return Fail(failure, data={**data, "signals": signals, "failure": failure})
            return RetryLater(error, delay, data={**data, "signals": signals})
        record.update(
            asks=asks + 1,
            answered={"async": answer.async_, "state": answer.state, "replayed": answer.replayed},
            state=answer.state,
            confirmed=not answer.async_,
            awaiting=answer.async_,
            error=None,
        )
        record.pop("refused", None)
        data = {**data, "signals": signals, **_addresses(answer.source, answer.destination, answer.data_flow_id)}
        if answer.async_:
            return Wait(
                route.wait,
                [KEY],
                on_done=route.done,
                on_failed=route.retry,
                on_retry=route.retry,
                data_key=CALLBACK,
                # The answers of an earlier wait are no answer to this one.
                data={**data, CALLBACK: {}},
            )
        return on_sync(data)

    # --- the steps, one per state --------------------------------------------------------------

    def initial(self, resource: Resource, ctx: StepContext) -> Outcome:
        """A consumer asks its data plane to prepare; a provider asks it to start."""
        signals = _signals(resource)
        if resource.spec.get("type") == "consumer":
            data: Data = {"signals": signals, **_settle(resource, signals, "prepare")}
            return self.exchange(
                resource, ctx, _PREPARE, signals=signals, data=data, on_sync=lambda d: Advance("prepared", d)
            )
        data = {"signals": signals, **_settle(resource, signals, "start")}
        return self.exchange(
            resource, ctx, _START, signals=signals, data=data, on_sync=lambda d: Advance("dataplane_started", d)
        )

    def requesting(self, resource: Resource, ctx: StepContext) -> Outcome:
        """Keep what the preparation's callback reported; the request to the provider is made."""
        signals = _signals(resource)
        data: Data = {"signals": signals, **_settle(resource, signals, "prepare")}
        return Advance("requested", data)

    def starting(self, resource: Resource, ctx: StepContext) -> Outcome:
        """Signal start to the transfer's data plane, unless it already confirmed the start."""
        signals = _signals(resource)
        data: Data = {"signals": signals, **_settle(resource, signals, "start")}

        def started(d: Data) -> Outcome:
            # A new run: a later suspend counts its round trips afresh.
            _afresh(signals, "suspend")
            return Advance("started", {**d, "signals": signals})

        if signals.get("start", {}).get("confirmed"):
            return started(data)
        return self.exchange(resource, ctx, _START, signals=signals, data=data, on_sync=started)

    def started(self, resource: Resource, ctx: StepContext) -> Outcome:
        """Leave ``started`` as the desired state asks: signal suspend or terminate, or complete."""
        desired = resource.desired_state
        hop = next_hop(ctx.kind, resource.state, desired) if desired else None
        signals = _signals(resource)
        data: Data = {"signals": signals}
        if hop in ("suspend", "suspend_requested"):
            _afresh(signals, "suspend")
            return self.exchange(
                resource, ctx, _SUSPEND, signals=signals, data=data, on_sync=lambda d: Advance("suspend", d)
            )
        if hop in ("terminate", "terminate_requested"):
            _afresh(signals, "terminate")
            return self.exchange(
                resource, ctx, _TERMINATE, signals=signals, data=data, on_sync=lambda d: Advance("terminate", d)
            )
        # Completing takes no signal, and a wish the guards make unreachable (a provider asked to be
        # "requested", say) is the engine's to give up: both go the plain way.
        return Reconcile()

    def suspending(self, resource: Resource, ctx: StepContext) -> Outcome:
        """Signal suspend, unless the data plane already confirmed it; then the transfer is suspended."""
        signals = _signals(resource)
        data: Data = {"signals": signals, **_settle(resource, signals, "suspend")}

        def suspended(d: Data) -> Outcome:
            # A resume asks the data plane to start again, counting its round trips afresh.
            _afresh(signals, "start")
            return Advance("suspended", {**d, "signals": signals})

        if signals.get("suspend", {}).get("confirmed"):
            return suspended(data)
        return self.exchange(resource, ctx, _SUSPEND, signals=signals, data=data, on_sync=suspended)

    def completing(self, resource: Resource, ctx: StepContext) -> Outcome:
        return Advance("completed", {"ended": "completed"})

    def terminating(self, resource: Resource, ctx: StepContext) -> Outcome:
        """Signal terminate if a flow may exist on the data plane; end in ``terminated``, saying how."""
        signals = _signals(resource)
        returning = bool(signals.get("terminate", {}).get("awaiting"))
        data: Data = {"signals": signals, **_settle(resource, signals, "terminate")}
        failure = resource.data.get("failure")
        if not failure and resource.error and resource.attempts == 0 and not returning:
            # A failure brought it here (its error, before this state's own attempts): keep why.
            failure = resource.error
            data["failure"] = failure

        def finish(d: Data) -> Outcome:
            if failure:
                return Fail(str(failure), event="terminated", data={**d, "ended": "failed"})
            return Advance("terminated", {**d, "ended": "terminated"})

        record = signals.get("terminate", {})
        if record.get("confirmed") or not _flow_may_exist(signals):
            return finish(data)
        if record.get("refused"):
            # The data plane refused a terminate for good already (from started): asking again won't help.
            error = str(record.get("error") or "the data plane refused to terminate")
            return Fail(error, data={**data, "ended": "failed", "failure": failure or error})
        outcome = self.exchange(resource, ctx, _TERMINATE, signals=signals, data=data, on_sync=finish)
        if isinstance(outcome, Fail) and outcome.event is None:
            # Giving up on terminating: the lifecycle failed, whatever brought it here.
            return Fail(outcome.error, data={**outcome.data, "ended": "failed", "failure": failure or outcome.error})
        return outcome


def transfer_v2_steps(
    planes: Mapping[str, DataPlaneClient],
    *,
    callback_url: str,
    kind: Kind,
    max_round_trips: int = 5,
) -> Steps:
    """The steps of ``kind`` (a :func:`transfer_v2_kind`), signaling ``planes`` (clients by data plane id).

    ``callback_url`` is this control plane's ``/v1/callbacks``, handed to the data plane with every
    signal. A signal whose callbacks keep failing (or whose deadline keeps passing) is sent at most
    ``max_round_trips`` times before its state fails for good.
    """
    if max_round_trips < 1:
        raise InvalidArgument("max_round_trips", "must be at least 1", max_round_trips)
    if not callback_url:
        raise InvalidArgument("callback_url", "must be the control plane's callback URL", callback_url)
    signaler = _Signaler(planes, callback_url, max_round_trips)
    steps = Steps()
    for state, step in (
        ("initial", signaler.initial),
        ("requesting", signaler.requesting),
        ("starting", signaler.starting),
        ("started", signaler.started),
        ("suspending", signaler.suspending),
        ("completing", signaler.completing),
        ("terminating", signaler.terminating),
    ):
        steps.add(kind, state, step)
    return steps


@functools.cache
def _built_in(dataplanes: tuple[str, ...], request_deadline: timedelta) -> Kind:
    return transfer_v2_kind(dataplanes=dataplanes, request_deadline=request_deadline)


def transfer_v2_for(signaling: Signaling) -> Kind:
    """The built-in transfer version 2 for the data planes ``signaling`` configures (the same object each time).

    The store and the engine's steps must hold one and the same kind object.
    """
    return _built_in(tuple(p.id for p in signaling.dataplanes), signaling.request_deadline)
