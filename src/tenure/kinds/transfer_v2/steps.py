"""``transfer`` version 2's steps: signal the transfer's data plane, and turn its answers into outcomes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tenure.engine.apply import describe
from tenure.engine.outcome import Advance, Fail, Fatal, Outcome, Reconcile, Retryable, RetryLater, Wait
from tenure.engine.signaling import DataPlaneClient, SignalRefused
from tenure.engine.steps import StepContext, Steps
from tenure.errors import InvalidArgument
from tenure.kinds.transfer_v2.kind import CALLBACK, KEY
from tenure.machine import Kind
from tenure.machine.graph import next_hop
from tenure.store.model import Resource

__all__ = ["transfer_v2_steps"]


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
#: Completing ends the flow on the data plane too (a terminate), so that it releases what it holds.
_COMPLETE = _Route("terminate", wait="complete_requested", done="completion_confirmed", retry="complete_retry")

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
        """Tell the data plane the flow is over (a terminate), unless it has none; then completed."""
        signals = _signals(resource)
        data: Data = {"signals": signals, **_settle(resource, signals, "terminate")}

        def finish(d: Data) -> Outcome:
            return Advance("completed", {**d, "ended": "completed"})

        record = signals.get("terminate", {})
        if record.get("confirmed") or not _flow_may_exist(signals):
            return finish(data)
        return self.exchange(resource, ctx, _COMPLETE, signals=signals, data=data, on_sync=finish)

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
