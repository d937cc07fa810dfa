"""``/v1/signaling/{signal}``: a data plane's signaling API (``docs/signaling.md``, seed 001).

The control plane sends ``prepare``, ``start``, ``suspend`` and ``terminate`` for a transfer; the data
plane keeps one ``dataflow`` resource per transfer (its id is the transfer id) and answers at once
whether the signal started an asynchronous operation (``async: true``: provisioning, or
deprovisioning, which the engine carries out and reports to the callback when it ends) or settled
at once (``async: false``). Everything is decided from the request and the flow as stored:

* prepare: resources to provision → ``provisioning``; none → the flow rests prepared (``received``);
* start: a flow that holds everything it needs (or needs nothing) → ``started``; one with resources
  to provision (new, or suspended after its resources were deprovisioned) → ``provisioning``, then
  ``started`` once they are;
* suspend (from ``started``): provisioned resources → ``deprovisioning``, ending in ``suspended``;
  none → ``suspended``;
* terminate: provisioned resources (or a provisioning under way) → ``deprovisioning``, ending in
  ``deprovisioned``; none → ``terminated``.

The first answer to each signal is kept in the flow's data, so a repeated signal answers the same
(``replayed: true``), after a restart too; its callback replaces the one kept, and if the operation
it started is over, the outcome is posted again with it, or, when the operation failed, the
operation runs again (the control plane's retry of a failure callback). Two identical signals at
once make one flow: the store refuses a second create with the same id and a second write on the
same version, and the loser reads the flow again and answers as a replay.

While a flow tells the control plane how its last operation ended (``provision_notifying``,
``provision_failed``, ``deprovision_notifying``), a signal that must wait for that to end (the
control plane, having heard, may send the next one before the flow is at rest) is answered ``503``
with a ``Retry-After`` (1 s, or until the flow's next try to tell): never ``409`` for a flow that is
merely finishing.

The API writes the flow as the engine does (a compare-and-swap on the version it read, through the
engine's store): the data it keeps (answers, the operation, the callback) is the kind's
``step_data``, which no client may write. The service layer may not import a kind, so it reads
what it decides by from the kind object the store loaded (:class:`FlowKind`: the ``dataflow``
kind's groups of states, what a flow wants and holds) and fires the kind's events by name; the
wire's names (the signals, the transfer-id pattern) are :mod:`tenure.engine.signaling`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import pydantic
from fastapi import APIRouter, Depends, Path, Request
from pydantic import Field

from tenure.engine.notify import callback_url_problem
from tenure.engine.planes import Signaling
from tenure.engine.signaling import SIGNALS, TRANSFER_ID_PATTERN
from tenure.errors import AlreadyExists, ConfigError, Conflict
from tenure.machine import Kind
from tenure.service.auth import require
from tenure.service.bodies import JSONRoute
from tenure.service.config import Principal, Scope, ServiceConfig
from tenure.service.models import CallbackIn, In, Out
from tenure.service.problems import (
    ALREADY_EXISTS,
    CONFLICT,
    INVALID_REQUEST,
    NOT_FOUND,
    RESOURCE_NOT_FOUND,
    TRANSITION_NOT_ALLOWED,
    Problem,
    ProblemError,
    problem_responses,
    success,
)
from tenure.store.model import Resource
from tenure.store.protocol import EngineStore

__all__ = [
    "CALLBACK_TOKEN_MAX",
    "FINISHING",
    "KIND",
    "SIGNALS",
    "FlowKind",
    "SignalIn",
    "SignalOut",
    "apply_signal",
    "check_store",
    "router",
]

router = APIRouter(prefix="/v1/signaling", tags=["signaling"], route_class=JSONRoute)

#: The kind of the flows this API keeps.
KIND = "dataflow"

Signaler = Annotated[Principal, Depends(require(Scope.SIGNAL))]

#: A signal that must wait until the flow has told the control plane how its last operation ended.
FINISHING = Problem(503, "flow-finishing", "The data flow is finishing its last operation; send the signal again")

#: How often a signal reads the flow again after losing a race for it.
_ATTEMPTS = 16
#: The longest ``Retry-After`` a finishing flow asks for (the control plane's client honours up to 10 min).
_MAX_RETRY_AFTER = 600


@runtime_checkable
class FlowKind(Protocol):
    """What this API reads of the kind its flows are; :class:`tenure.kinds.dataflow.DataflowKind` declares it.

    The service layer may not import a kind, so the kind object the store loaded carries these: the
    events the API fires, the event each signal's asynchronous operation starts with, the groups of
    states the API decides by, and what a flow wants provisioned and holds (the same rule the kind's
    guards apply).
    """

    signal_events: frozenset[str]
    operations: Mapping[str, str]
    provisioning_states: frozenset[str]
    deprovisioning_states: frozenset[str]
    reporting_states: frozenset[str]
    ended_states: frozenset[str]
    failed_states: Mapping[str, str]

    def wanted(self, flow: Resource, /) -> list[str]: ...

    def holding(self, flow: Resource, /) -> list[str]: ...

    def settled(self, flow: Resource, key: str, /) -> dict[str, Any]: ...


def _max_length(model: type[pydantic.BaseModel], name: str) -> int:
    for constraint in model.model_fields[name].metadata:
        limit = getattr(constraint, "max_length", None)
        if isinstance(limit, int):
            return limit
    raise TypeError(f"{model.__name__}.{name} declares no max_length")


#: The longest callback token taken: the control plane's own limit (its ``CallbackIn.token``), read
#: from that model so the two cannot drift apart: a token longer than that could never be posted back.
CALLBACK_TOKEN_MAX = _max_length(CallbackIn, "token")


class CallbackRef(In):
    """Where and how to tell the control plane: its ``/v1/callbacks``, the resource, token and key it awaits."""

    url: str = Field(min_length=1, max_length=2000, description="The control plane's callback URL")
    resource_id: str = Field(min_length=1, max_length=64, description="The control plane's resource (the transfer)")
    token: str = Field(
        min_length=1, max_length=CALLBACK_TOKEN_MAX, description="The correlation token of its wait (a secret)"
    )
    key: str = Field(min_length=1, max_length=200, description="The key its wait awaits")

    def as_json(self) -> dict[str, str]:
        return {"url": self.url, "resourceId": self.resource_id, "token": self.token, "key": self.key}


class DefinitionIn(In):
    """One resource the flow needs provisioned."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=100)
    type: str = Field(min_length=1, max_length=100)
    spec: dict[str, Any] = Field(default_factory=dict)


class SignalIn(In):
    """A signal: the transfer, and for prepare and start of a new flow what it is made of."""

    transfer_id: str = Field(pattern=TRANSFER_ID_PATTERN, description="The transfer, and the data flow's id")
    type: Literal["consumer", "provider"] | None = Field(default=None, description="Needed by a new flow")
    asset: str | None = Field(default=None, min_length=1, max_length=255, description="Needed by a new flow")
    source: dict[str, Any] | None = None
    destination: dict[str, Any] | None = None
    resources: list[DefinitionIn] = Field(default_factory=list, max_length=50)
    callback: CallbackRef


class SignalOut(Out):
    """The answer: whether an asynchronous operation started, the flow's state and addresses."""

    transfer_id: str
    data_flow_id: str
    signal: str
    #: True: the data plane started provisioning or deprovisioning and will call back when it ends.
    async_: bool = Field(alias="async")
    state: str
    source: dict[str, Any] | None
    destination: dict[str, Any] | None
    #: True: an earlier identical signal got this answer first.
    replayed: bool


async def _store(request: Request) -> EngineStore:
    store: EngineStore = request.app.state.store
    return store


Store = Annotated[EngineStore, Depends(_store)]


def check_store(store: EngineStore) -> None:
    """Refuse to serve signaling over a store that does not load a ``dataflow`` kind this API can drive."""
    if KIND not in store.kinds:
        raise ConfigError(f"a data plane keeps its flows as {KIND!r} resources, and this store does not load that kind")
    kind = store.kinds[KIND]
    if not isinstance(kind, FlowKind):
        raise ConfigError(f"the {KIND!r} kind does not declare what the signaling API drives it by (a FlowKind)")
    missing = sorted(e for e in kind.signal_events if e not in kind.event_names)
    if missing:
        raise ConfigError(f"the {KIND!r} kind lacks the signaling events {', '.join(missing)}")


def _flow_kind(kind: Kind) -> FlowKind:
    if not isinstance(kind, FlowKind):  # check_store refused such a store already
        raise ConfigError(f"the {kind.name!r} kind does not declare what the signaling API drives it by")
    return kind


_RESPONSES = problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 503)
_RESPONSES[503] = {
    **_RESPONSES[503],
    "description": "The flow is finishing its last operation (ask again after Retry-After), or the database is "
    "unavailable",
}


@router.post(
    "/{signal}",
    response_model=SignalOut,
    summary="Signal a transfer's data flow: prepare, start, suspend or terminate",
    description=(
        "Answers at once whether the data plane started an asynchronous operation (`async`); if it did, "
        "it POSTs the outcome to `callback` when the operation ends. A repeated signal answers as the first "
        "did (`replayed: true`) and its callback replaces the one kept."
    ),
    responses={
        200: success("The answer, first or replayed: whether an operation started, the flow's state and addresses"),
        **_RESPONSES,
    },
)
def post_signal(
    signal: Annotated[str, Path(description="prepare, start, suspend or terminate")],
    body: SignalIn,
    request: Request,
    store: Store,
    caller: Signaler,
) -> SignalOut:
    _check_signal(signal)
    config: ServiceConfig = request.app.state.config
    signaling = config.signaling or Signaling()
    problem = callback_url_problem(body.callback.url, signaling.controlplane)
    if problem is not None:
        raise ProblemError(
            INVALID_REQUEST,
            f"callback.url: {problem}",
            {"errors": [{"field": "callback.url", "constraint": problem}]},
        )
    request.state.resource_id = body.transfer_id
    return SignalOut.model_validate(apply_signal(store, signal, body, caller.client))


# --- what a signal does ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """The event a signal fires (None: nothing to write) with its data, and the answer."""

    event: str | None
    answer: Mapping[str, Any]
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Move:
    """What a new signal does to a flow: the event, whether it starts an operation, on everything."""

    event: str
    asynchronous: bool
    everything: bool = False


def _check_signal(signal: str) -> None:
    if signal not in SIGNALS:
        raise ProblemError(
            NOT_FOUND,
            f"there is no signal {signal[:100]!r}; the signals are {', '.join(SIGNALS)}",
            {"signal": signal[:100], "accepted": list(SIGNALS)},
        )


def apply_signal(store: EngineStore, signal: str, body: SignalIn, actor: str) -> Mapping[str, Any]:
    """Create or move the flow for ``signal`` as ``actor``, one compare-and-swap; the answer (replayed or not).

    The answer is the JSON of :class:`SignalOut`. Refusals are :class:`~tenure.service.problems.ProblemError`.
    """
    _check_signal(signal)
    for _ in range(_ATTEMPTS):
        flow = store.find(body.transfer_id)
        if flow is None:
            flow = _create(store, signal, body, actor)
            if flow is None:
                continue  # an identical signal made it just now: read it and answer as a replay
        if flow.kind != KIND:
            raise ProblemError(
                ALREADY_EXISTS,
                f"resource {flow.id} is a {flow.kind!r}, not a data flow; a transfer id names one flow",
                {"resource_id": flow.id, "kind": flow.kind},
            )
        plan = _plan(store, flow, signal, body)
        if plan.event is None:
            return plan.answer
        try:
            store.fire_settling(flow, plan.event, (), result="", data=plan.data, actor=actor, detail={"signal": signal})
        except Conflict:
            continue  # the flow moved on (the engine, or the same signal at once): decide again
        return plan.answer
    raise ProblemError(
        CONFLICT,
        f"data flow {body.transfer_id} kept changing while the {signal} was applied ({_ATTEMPTS} tries); send it again",
        {"resource_id": body.transfer_id},
    )


def _create(store: EngineStore, signal: str, body: SignalIn, actor: str) -> Resource | None:
    """A new flow for prepare or start, resting in its initial state until the signal moves it (None: lost a race)."""
    if signal in ("suspend", "terminate"):
        raise ProblemError(
            RESOURCE_NOT_FOUND,
            f"there is no data flow for transfer {body.transfer_id} here; a {signal} needs the flow that a prepare "
            "or start made on this data plane",
            {"resource_id": body.transfer_id, "signal": signal},
        )
    missing = [name for name in ("type", "asset") if getattr(body, name) is None]
    if missing:
        problems = [{"field": name, "constraint": f"is required by a {signal} that makes a flow"} for name in missing]
        raise ProblemError(
            INVALID_REQUEST,
            f"a {signal} of transfer {body.transfer_id}, which has no flow here yet, needs {' and '.join(missing)} "
            "(type: consumer or provider; asset: the asset's id)",
            {"errors": problems},
        )
    spec = {
        "transferId": body.transfer_id,
        "type": body.type,
        "asset": body.asset,
        "source": body.source,
        "destination": body.destination,
        "resources": [d.model_dump() for d in body.resources],
        "signal": signal,
    }
    try:
        return store.create(KIND, spec, actor=actor, resource_id=body.transfer_id)
    except AlreadyExists:
        return None


def _plan(store: EngineStore, flow: Resource, signal: str, body: SignalIn) -> _Plan:
    kind = store.kind_of(flow)
    rules = _flow_kind(kind)
    data = flow.data
    answers = dict(_mapping(data.get("signals")))
    op = _mapping(data.get("op"))
    callback = body.callback.as_json()
    first = answers.get(signal)
    if isinstance(first, Mapping):
        replay = _replay(store, flow, rules, signal, first, op, callback)
        if isinstance(replay, _Plan):
            return replay
        move = replay  # the operation failed and the control plane retries it: a new run
    else:
        found = _decide(kind, rules, flow, signal, op)
        if found is None:
            if flow.state in rules.reporting_states:
                raise _finishing(store, flow, signal)
            raise _not_allowed(kind, rules, flow, signal, op, answers)
        move = found
    target = kind.target(flow.state, move.event)
    where = _mapping(data.get("addresses")) or {
        "source": flow.spec.get("source"),
        "destination": flow.spec.get("destination"),
    }
    answer = {
        "transferId": body.transfer_id,
        "dataFlowId": flow.id,
        "signal": signal,
        "async": move.asynchronous,
        "state": target,
        "source": where.get("source"),
        "destination": where.get("destination"),
        "replayed": False,
    }
    answers[signal] = answer
    # A suspended flow may be started again, and a started one suspended again: those are new signals.
    reopened = {"start": "suspend", "suspend": "start"}.get(signal)
    if reopened is not None:
        answers.pop(reopened, None)
    new_op: dict[str, Any] = {"signal": signal, "async": move.asynchronous}
    if move.everything:
        new_op["everything"] = True
    written: dict[str, Any] = {"signals": answers, "op": new_op, "callback": callback}
    if move.event in rules.operations.values():
        # A new operation: its idempotency keys are its own (the steps read ``op.at``), the version
        # this write makes. Running a failed one again keeps what it got done, and asks the rest afresh.
        new_op["at"] = flow.version + 1
        again = flow.state == rules.failed_states.get(move.event)
        if move.event == "provision":
            written.update(provision=rules.settled(flow, "provision") if again else {}, deprovision={})
        else:
            written["deprovision"] = rules.settled(flow, "deprovision") if again else {}
    elif move.asynchronous and "at" in op:
        new_op["at"] = op["at"]  # the operation under way goes on (a terminate during a suspension's)
    return _Plan(move.event, answer, written)


def _not_allowed(
    kind: Kind, rules: FlowKind, flow: Resource, signal: str, op: Mapping[str, Any], answers: Mapping[str, Any]
) -> ProblemError:
    allowed = [s for s in SIGNALS if s not in answers and _decide(kind, rules, flow, s, op) is not None]
    repeats = [s for s in SIGNALS if s in answers]
    said = f"; repeats of {', '.join(repeats)} answer as before" if repeats else ""
    return ProblemError(
        TRANSITION_NOT_ALLOWED,
        f"data flow {flow.id} is {flow.state!r}, where a {signal} is not accepted "
        f"(signals accepted there: {', '.join(allowed) or 'none'}{said})",
        {"resource_id": flow.id, "state": flow.state, "signal": signal, "allowed": allowed, "answered": repeats},
    )


def _finishing(store: EngineStore, flow: Resource, signal: str) -> ProblemError:
    """The 503 for a signal that must wait until the flow has told how its last operation ended."""
    wait = 1
    due = flow.next_attempt_at
    if due is not None:
        # The flow is waiting to tell again (the control plane did not take the callback): until then.
        left = (due - store.now()).total_seconds()
        wait = min(_MAX_RETRY_AFTER, max(1, math.ceil(left)))
    return ProblemError(
        FINISHING,
        f"data flow {flow.id} is {flow.state!r}: it is finishing its last operation (telling the control plane "
        f"how it ended) and will be at rest shortly; send the {signal} again in {wait} s",
        {"resource_id": flow.id, "state": flow.state, "signal": signal, "retry_after": wait},
        headers={"Retry-After": str(wait)},
    )


def _replay(
    store: EngineStore,
    flow: Resource,
    rules: FlowKind,
    signal: str,
    first: Mapping[str, Any],
    op: Mapping[str, Any],
    callback: Mapping[str, Any],
) -> _Plan | _Move:
    """A repeat of ``signal``: the first answer again; a new callback for the operation it started is kept.

    With a new callback: an operation still under way goes on and tells it; one that ended is told
    it again, unless it failed, which runs it again (a :class:`_Move`: the control plane's retry);
    while the flow is still telling how it ended, the repeat is answered 503, to come back at rest.
    """
    answer = {**first, "replayed": True}
    if op.get("signal") != signal or _mapping(flow.data.get("callback")) == callback:
        return _Plan(None, answer)
    state = flow.state
    if state in rules.reporting_states:
        raise _finishing(store, flow, signal)
    operation = rules.operations.get(signal)
    if first.get("async") and operation is not None and state == rules.failed_states.get(operation):
        return _Move(operation, True, everything=bool(op.get("everything")))
    if state in rules.provisioning_states or state in rules.deprovisioning_states:
        event = "resignal"  # the operation goes on (the provisioners are asked again) and tells the new callback
    elif first.get("async") and state in rules.ended_states:
        event = "renotify"  # it ended, and the control plane did not hear: tell it again
    elif state != "terminated":
        event = "resignal"
    else:
        return _Plan(None, answer)  # nothing leaves a final state, and nothing is left to tell
    return _Plan(event, answer, {"callback": callback})


def _decide(kind: Kind, rules: FlowKind, flow: Resource, signal: str, op: Mapping[str, Any]) -> _Move | None:
    """What a new ``signal`` does to ``flow`` where it is (None: not accepted there)."""
    move = _move(rules, flow, signal, op)
    if move is None:
        return None
    # The kind has the last word: its graph, and the guards that keep the sync signals honest.
    edge = kind.transitions_from(flow.state).get(move.event)
    return move if edge is not None and edge.permits(flow) else None


def _move(rules: FlowKind, flow: Resource, signal: str, op: Mapping[str, Any]) -> _Move | None:
    """The move ``signal`` asks of ``flow`` where it is, by the kind's groups and what the flow holds."""
    state = flow.state
    wanted = rules.wanted(flow)
    held = rules.holding(flow)
    if signal == "prepare" and state == "received":
        return _Move("provision", True) if wanted else _Move("prepare", False)
    if signal == "start" and state in ("received", "provisioned", "suspended"):
        missing = [i for i in wanted if i not in held]
        return _Move("provision", True) if missing else _Move("start", False)
    if signal == "suspend" and state == "started":
        return _Move("deprovision", True) if held else _Move("suspend", False)
    if signal != "terminate":
        return None
    if state in rules.provisioning_states:
        return _Move("deprovision", True, everything=True)  # what it asked for may exist: remove all of it
    if state in rules.deprovisioning_states:
        # The suspension's deprovisioning goes on and ends terminated; a terminate's own is a repeat.
        return _Move("resignal", True) if op.get("signal") == "suspend" else None
    if state == rules.failed_states["deprovision"]:
        return _Move("deprovision", True)  # try the failed deprovisioning again
    return _Move("deprovision", True) if held else _Move("terminate", False)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
