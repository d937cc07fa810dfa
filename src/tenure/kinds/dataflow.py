"""The ``dataflow`` kind: a data plane's side of one transfer (seed 001), with Eclipse EDC's state codes.

A data plane (a ``tenure serve`` with a ``[dataplane]`` section) runs one dataflow per transfer; its
id is the transfer id. The control plane's signals (``prepare``, ``start``, ``suspend``,
``terminate``; see ``docs/signaling.md`` and :mod:`tenure.service.signaling`) create and move it.
Each signal either settles at once (the answer says ``async: false``) or starts an operation the
engine carries out (``async: true``): provisioning for prepare and start when the flow has
resources to provision, deprovisioning for suspend and terminate when it holds provisioned ones.
When the operation ends, a ``*_notifying`` state posts the outcome to the control plane's callback.

::

    received ──prepare──▶ received                      (nothing to provision)
    received ──provision─▶ provisioning ⇄ provision_requested ──provisioned──▶ provision_notifying
    provision_notifying ──notified_provisioned──▶ provisioned   (prepare)
    provision_notifying ──notified_started──────▶ started       (start)
    provisioning / provision_requested ──provision_failed──▶ provision_failed ──notified_failed──▶ failed
    received / provisioned / suspended ──start──▶ started        (everything it needs is provisioned)
    started ──suspend──▶ suspended   |   … ──terminate──▶ terminated   (nothing provisioned)
    started / … ──deprovision──▶ deprovisioning ⇄ deprovision_requested ──deprovisioned──▶ deprovision_notifying
    deprovision_notifying ──notified_suspended──▶ suspended | ──notified_deprovisioned──▶ deprovisioned
                           ──notified_deprovision_failed──▶ deprovision_failed

Every wait state's deadline asks the provisioners again (a provisioner that answers pending and
never calls back, as one whose process died, is asked again with a fresh token). A repeated signal
with a new callback stores it (``resignal``) and, when the operation it started has ended already,
posts the outcome again with it (``renotify``): a control plane re-asks after its own deadline
because it did not get the first callback.

What the flow keeps in its data, all of it written only by the engine or the signaling API
(``step_data``, refused to clients):

* ``provision`` / ``deprovision``: per-definition answers of the provisioners (as in ``transfer``);
* ``provisioned``: the ids of the definitions the flow holds now (touched by provisioning and not
  deprovisioned since), written when an operation ends;
* ``addresses``: ``{"source", "destination"}`` as they are now (a provisioner's ``done`` data may
  carry a changed ``source`` or ``destination``);
* ``failure``: why the last operation failed (None after one that did not);
* ``notification``: how the last callback went (``delivered``, ``refused``, ``undeliverable``,
  ``skipped``, with the HTTP status and the error; never the token);
* ``signals``: the first answer to each signal (repeats answer the same), ``op``: the signal the
  flow acts on now (``signal``, ``async``, ``everything`` when a terminate cut a provisioning short),
  ``callback``: the newest callback the control plane gave for it (``url``, ``resourceId``,
  ``token``, ``key``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal, Protocol, runtime_checkable

import httpx
import pydantic
from pydantic.alias_generators import to_camel

from tenure.engine import Resource
from tenure.engine.delayed import Delayed
from tenure.engine.notify import Notifier
from tenure.engine.outcome import Advance, Outcome, RetryLater
from tenure.engine.planes import ControlPlaneRef, Signaling
from tenure.engine.provision import (
    Definition,
    MemoryProvisioner,
    ProvisionRequest,
    ProvisionResult,
    ProvisionStatus,
    ProvisionStep,
)
from tenure.engine.steps import StepContext, Steps
from tenure.kinds.transfer import DefinitionSpec
from tenure.machine import Backoff, Event, Kind, Role, State, Subject
from tenure.rules import error_text
from tenure.store.inbox import Receipt
from tenure.store.model import JournalEntry

__all__ = [
    "DEFAULT_REQUEST_DEADLINE",
    "ENGINE_EVENTS",
    "SIGNAL_EVENTS",
    "STEP_DATA",
    "CallbackInbox",
    "DataflowSpec",
    "MemoryAsyncProvisioner",
    "addresses",
    "dataflow",
    "dataflow_for",
    "dataflow_kind",
    "dataflow_steps",
    "holding",
]

log = logging.getLogger("tenure.kinds.dataflow")

#: How long a ``*_requested`` state waits for the provisioners by default (as :class:`Signaling` does).
DEFAULT_REQUEST_DEADLINE = Signaling().request_deadline


class DataflowSpec(pydantic.BaseModel):
    """What a flow was made for: the transfer, its addresses and resources, and the signal that made it."""

    model_config = pydantic.ConfigDict(extra="forbid", alias_generator=to_camel, serialize_by_alias=True)

    transfer_id: str = pydantic.Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    type: Literal["consumer", "provider"]
    asset: str = pydantic.Field(min_length=1, max_length=255)
    #: Free-form address objects (``{"type": "s3", "bucket": "in"}``); a provisioner may change them.
    source: dict[str, Any] | None = None
    destination: dict[str, Any] | None = None
    resources: list[DefinitionSpec] = pydantic.Field(default_factory=list, max_length=50)
    #: The signal that created the flow.
    signal: Literal["prepare", "start"]

    @pydantic.model_validator(mode="after")
    def _unique_ids(self) -> DataflowSpec:
        ids = [d.id for d in self.resources]
        if len(ids) != len(set(ids)):
            raise ValueError("resource definition ids must be unique")
        return self


#: The data keys only the engine and the signaling API write (see the module docs).
STEP_DATA = (
    "provision",
    "deprovision",
    "provisioned",
    "addresses",
    "failure",
    "notification",
    "signals",
    "op",
    "callback",
)

#: The events the signaling API fires for the control plane's signals.
SIGNAL_EVENTS = ("prepare", "provision", "start", "suspend", "terminate", "deprovision", "resignal", "renotify")

#: Every event but ``complete`` is the engine's or the signaling API's: no client fires them.
ENGINE_EVENTS = (
    *SIGNAL_EVENTS,
    "provisioned",
    "provision_requested",
    "provision_retry",
    "provision_timed_out",
    "provision_failed",
    "notified_provisioned",
    "notified_started",
    "notified_failed",
    "deprovisioned",
    "deprovision_requested",
    "deprovision_retry",
    "deprovision_timed_out",
    "deprovision_failed",
    "notified_suspended",
    "notified_deprovisioned",
    "notified_deprovision_failed",
)

_REST_STATES = (
    "received",
    "provisioned",
    "started",
    "completed",
    "suspended",
    "failed",
    "deprovisioned",
    "deprovision_failed",
)
_WORK_STATES = ("provisioning", "provision_notifying", "provision_failed", "deprovisioning", "deprovision_notifying")
#: Where provisioning is under way, before it has succeeded or failed.
_PROVISIONING_STEPS = ("provisioning", "provision_requested", "provision_notifying")
#: Where a terminate finds a provisioning under way: it deprovisions every definition.
_PROVISIONING = (*_PROVISIONING_STEPS, "provision_failed")
_TOUCHED = (ProvisionStatus.DONE.value, ProvisionStatus.PENDING.value, ProvisionStatus.RETRY.value)


# --- what the data says ----------------------------------------------------------------------------


def _entries(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _resource_ids(spec: Mapping[str, Any]) -> list[str]:
    return [str(d["id"]) for d in spec.get("resources") or [] if isinstance(d, Mapping) and "id" in d]


def _touched(data: Mapping[str, Any], definition_id: str) -> bool:
    """Whether provisioning touched the definition: done, or asked and maybe made."""
    entry = _entries(data, "provision").get(definition_id)
    if not isinstance(entry, Mapping):
        return False
    return entry.get("status") in _TOUCHED or entry.get("last_status") in _TOUCHED


def holding(resource: Subject) -> list[str]:
    """The definitions the flow holds: touched by provisioning and not deprovisioned since."""
    gone = _entries(resource.data, "deprovision")
    return [
        i
        for i in _resource_ids(resource.spec)
        if _touched(resource.data, i)
        and not (isinstance(gone.get(i), Mapping) and gone[i].get("status") == ProvisionStatus.DONE.value)
    ]


def addresses(resource: Subject) -> dict[str, Any]:
    """``{"source", "destination"}`` as they are now: the spec's, changed by the provisioners' answers."""
    out: dict[str, Any] = {"source": resource.spec.get("source"), "destination": resource.spec.get("destination")}
    answers = _entries(resource.data, "provision")
    for i in _resource_ids(resource.spec):
        entry = answers.get(i)
        if not isinstance(entry, Mapping) or entry.get("status") != ProvisionStatus.DONE.value:
            continue
        made = entry.get("data")
        for which in ("source", "destination"):
            if isinstance(made, Mapping) and isinstance(made.get(which), Mapping):
                out[which] = dict(made[which])
    return out


def _op(resource: Subject) -> Mapping[str, Any]:
    op = resource.data.get("op")
    return op if isinstance(op, Mapping) else {}


# Guards: the sync signal events happen only when there is indeed nothing to do asynchronously, so no
# desired state (or anything else outside the signaling API) can skip a provisioning or leak resources.


def _nothing_to_provision(resource: Subject) -> bool:
    return not _resource_ids(resource.spec)


def _all_provisioned(resource: Subject) -> bool:
    return set(_resource_ids(resource.spec)) <= set(holding(resource))


def _nothing_held(resource: Subject) -> bool:
    return not holding(resource)


# --- the kind ----------------------------------------------------------------------------------------


def dataflow_kind(
    *,
    request_deadline: timedelta = DEFAULT_REQUEST_DEADLINE,
    retry: Backoff | None = None,
    name: str = "dataflow",
    provisioner_types: Sequence[str] | None = None,
) -> Kind:
    """The dataflow kind, with the deadline of its ``*_requested`` states and the retry policy of its steps.

    ``provisioner_types`` lists the definition types the data plane provisions: a flow naming another
    is refused when it is created, naming the known ones (None accepts any type).
    """
    policy = retry or Backoff(max_attempts=8, base=timedelta(seconds=1), cap=timedelta(minutes=2))

    def work(state: str, code: int, on_failure: str, description: str) -> State:
        return State(state, code, Role.WORK, on_failure=on_failure, retry=policy, description=description)

    def wait(state: str, code: int, on_deadline: str, description: str) -> State:
        return State(
            state, code, Role.WAIT, deadline=request_deadline, on_deadline=on_deadline, description=description
        )

    resignal = [Event("resignal", s, s, description="the control plane repeated its signal") for s in _REST_STATES]
    resignal += [Event("resignal", s, s, description="the control plane repeated its signal") for s in _WORK_STATES]
    return Kind(
        name,
        description="A data plane's flow for one transfer: provision, start, suspend, terminate, deprovision.",
        spec_model=_spec_for(provisioner_types),
        step_data=STEP_DATA,
        engine_events=ENGINE_EVENTS,
        initial="received",
        states=[
            work("provisioning", 25, "provision_failed", "the provisioners are being asked for the resources"),
            wait("provision_requested", 40, "provision_timed_out", "waiting for async provisioners to call back"),
            work("provision_notifying", 45, "provision_failed", "telling the control plane provisioning is done"),
            State("provisioned", 50, Role.REST, description="prepared: every resource is provisioned"),
            work("provision_failed", 60, "notified_failed", "telling the control plane provisioning failed"),
            State("received", 100, Role.REST, description="received a signal; prepared with nothing to provision"),
            State("started", 150, Role.REST, description="data is flowing"),
            State("completed", 200, Role.REST, description="the data has flowed; terminate releases what is held"),
            State("suspended", 225, Role.REST, description="paused with nothing held; can be started again"),
            State("terminated", 250, Role.FINAL, description="stopped, with nothing to deprovision"),
            State("failed", 300, Role.REST, description="provisioning failed; terminate releases what it touched"),
            work("deprovisioning", 500, "deprovision_failed", "the provisioners are being asked to remove resources"),
            wait("deprovision_requested", 550, "deprovision_timed_out", "waiting for async deprovisioners"),
            work("deprovision_notifying", 575, "notified_deprovision_failed", "telling the control plane"),
            State("deprovisioned", 600, Role.REST, description="terminated; every provisioned resource is gone"),
            State(
                "deprovision_failed",
                700,
                Role.REST,
                description="deprovisioning failed (see failure); told, and told again if asked",
            ),
        ],
        events=[
            # The signals (fired by the signaling API).
            Event("prepare", "received", "received", guard=_nothing_to_provision, description="prepared at once"),
            Event("provision", ["received", "suspended"], "provisioning", description="prepare or start, async"),
            Event("start", ["received", "provisioned", "suspended"], "started", guard=_all_provisioned),
            Event("suspend", "started", "suspended", guard=_nothing_held),
            Event(
                "terminate",
                ["received", "provisioned", "started", "completed", "suspended", "failed"],
                "terminated",
                guard=_nothing_held,
            ),
            Event(
                "deprovision",
                ["provisioned", "started", "completed", "failed", "deprovision_failed", *_PROVISIONING],
                "deprovisioning",
                description="suspend or terminate, async",
            ),
            *resignal,
            Event("resignal", "provision_requested", "provisioning", description="asked again: ask again"),
            Event("resignal", "deprovision_requested", "deprovisioning", description="asked again: ask again"),
            Event("renotify", ["provisioned", "started"], "provision_notifying", description="tell it again"),
            Event("renotify", "failed", "provision_failed", description="tell it again"),
            Event("renotify", ["suspended", "deprovisioned", "deprovision_failed"], "deprovision_notifying"),
            # Provisioning.
            Event("provisioned", ["provisioning", "provision_requested"], "provision_notifying"),
            Event("provision_requested", "provisioning", "provision_requested"),
            Event("provision_retry", "provision_requested", "provisioning", description="a provisioner asked again"),
            Event("provision_timed_out", "provision_requested", "provisioning", description="no callback in time"),
            Event("provision_failed", _PROVISIONING_STEPS, "provision_failed"),
            Event("notified_provisioned", "provision_notifying", "provisioned"),
            Event("notified_started", "provision_notifying", "started"),
            Event("notified_failed", "provision_failed", "failed"),
            # Running.
            Event("complete", "started", "completed", description="the data has flowed"),
            # Deprovisioning (a failure is told too, then rests in deprovision_failed).
            Event("deprovisioned", ["deprovisioning", "deprovision_requested"], "deprovision_notifying"),
            Event("deprovision_requested", "deprovisioning", "deprovision_requested"),
            Event("deprovision_retry", "deprovision_requested", "deprovisioning"),
            Event("deprovision_timed_out", "deprovision_requested", "deprovisioning", description="no answer in time"),
            Event("deprovision_failed", ["deprovisioning", "deprovision_requested"], "deprovision_notifying"),
            Event("notified_suspended", "deprovision_notifying", "suspended"),
            Event("notified_deprovisioned", "deprovision_notifying", "deprovisioned"),
            Event("notified_deprovision_failed", "deprovision_notifying", "deprovision_failed"),
        ],
    )


def _spec_for(types: Sequence[str] | None) -> type[DataflowSpec]:
    """The spec model of a flow whose definitions must be of one of ``types``."""
    if types is None:
        return DataflowSpec
    known = frozenset(types)
    listed = ", ".join(sorted(known)) or "none"

    class KnownTypesSpec(DataflowSpec):
        @pydantic.field_validator("resources")
        @classmethod
        def _provisioned(cls, resources: list[DefinitionSpec]) -> list[DefinitionSpec]:
            for index, d in enumerate(resources):
                if d.type not in known:
                    raise ValueError(f"[{index}].type {d.type!r} has no provisioner here (known types: {listed})")
            return resources

    KnownTypesSpec.__name__ = KnownTypesSpec.__qualname__ = "DataflowSpec"
    return KnownTypesSpec


#: The definition types the built-in data plane provisions.
BUILTIN_TYPES = ("memory", "memory-async")


@functools.lru_cache(maxsize=16)
def _built_in(request_deadline: timedelta) -> Kind:
    return dataflow_kind(request_deadline=request_deadline, provisioner_types=BUILTIN_TYPES)


def dataflow_for(signaling: Signaling | None = None) -> Kind:
    """The built-in dataflow kind with the request deadline ``signaling`` configures (the same object each time).

    The store and the engine's steps must hold one and the same kind object; asking twice with the
    same settings answers the same kind.
    """
    return _built_in(DEFAULT_REQUEST_DEADLINE if signaling is None else signaling.request_deadline)


#: The built-in dataflow kind, with the default request deadline.
dataflow = dataflow_for()


# --- provisioners --------------------------------------------------------------------------------


@runtime_checkable
class CallbackInbox(Protocol):
    """Where an asynchronous answer goes: the data plane's own store (its callback inbox)."""

    def deliver(
        self,
        resource_id: str,
        token: str,
        key: str,
        status: str,
        *,
        data: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Receipt: ...


#: The longest ``delayMs`` the memory-async provisioner takes (an hour).
MAX_DELAY_MS = 3_600_000


class MemoryAsyncProvisioner:
    """The ``memory-async`` provisioner: answers pending, then answers for real after ``spec["delayMs"]``.

    The later answer goes through ``inbox`` (the data plane's store) with the request's token, from a
    timer thread (:class:`~tenure.engine.delayed.Delayed`, at most ``limit`` answers waiting). Per
    definition spec: ``delayMs`` (default ``default_delay_ms``), ``fail`` (provisioning answers failed
    with it), ``failDeprovision`` (deprovisioning does), ``source`` / ``destination`` (provisioning's
    answer carries them: a changed address). Answers still waiting when the process dies are lost; the
    wait's deadline asks again. When ``limit`` answers already wait, it asks to be retried.
    """

    def __init__(
        self,
        inbox: CallbackInbox,
        *,
        timers: Delayed | None = None,
        default_delay_ms: int = 200,
        limit: int = 1000,
    ) -> None:
        self.inbox = inbox
        self.timers = timers or Delayed(limit=limit, name="tenure-memory-async")
        self.default_delay_ms = default_delay_ms

    def provision(self, request: ProvisionRequest) -> ProvisionResult:
        spec = request.definition.spec
        made: dict[str, Any] = {"name": f"{request.resource_id}/{request.definition.id}"}
        for which in ("source", "destination"):
            if which in spec:
                if not isinstance(spec[which], Mapping):
                    return ProvisionResult.failed(f"spec.{which} must be an address object")
                made[which] = dict(spec[which])
        return self._later(request, spec.get("fail"), made)

    def deprovision(self, request: ProvisionRequest) -> ProvisionResult:
        return self._later(request, request.definition.spec.get("failDeprovision"), {})

    def _later(self, request: ProvisionRequest, failure: object, made: Mapping[str, Any]) -> ProvisionResult:
        delay = request.definition.spec.get("delayMs", self.default_delay_ms)
        if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= MAX_DELAY_MS:
            return ProvisionResult.failed(f"spec.delayMs must be a whole number of milliseconds, 0 to {MAX_DELAY_MS}")
        if failure is not None and not isinstance(failure, str):
            return ProvisionResult.failed("spec.fail and spec.failDeprovision must be text (why it fails)")

        def answer() -> None:
            status = ProvisionStatus.FAILED if failure else ProvisionStatus.DONE
            try:
                receipt = self.inbox.deliver(
                    request.resource_id,
                    request.token,
                    request.key,
                    status.value,
                    data=None if failure else made,
                    error=failure or None,
                )
            except Exception as exc:  # the store is down: the answer is lost, the deadline asks again
                log.warning("memory-async: the answer for %s/%s was lost: %s", request.resource_id, request.key, exc)
                return
            if not receipt.accepted:
                why = receipt.reason
                log.info("memory-async: the answer for %s/%s was refused: %s", request.resource_id, request.key, why)

        if not self.timers.call_later(delay / 1000, answer):
            return ProvisionResult.retry(f"{self.timers.limit} answers already wait; asking again later")
        return ProvisionResult.pending()


# --- telling the control plane ------------------------------------------------------------------------


# --- the steps ------------------------------------------------------------------------------------------


def _manifest(resource: Resource) -> list[Definition]:
    return [Definition(d["id"], d["type"], d.get("spec") or {}) for d in resource.spec.get("resources", [])]


def _not_to_deprovision(resource: Resource, definition: Definition) -> bool:
    """Deprovision what provisioning touched (everything when a terminate cut provisioning short)."""
    return not _op(resource).get("everything") and not _touched(resource.data, definition.id)


#: How far back in the journal a notifying step looks for what brought the flow to its state.
_LOOK_BACK = 500


def _arrival(resource: Resource, ctx: StepContext) -> JournalEntry | None:
    """The journal entry that brought the flow to its state (retries and repeated signals left aside)."""
    entries = ctx.store.journal(resource.id, after_version=max(0, resource.version - _LOOK_BACK), limit=_LOOK_BACK)
    for entry in reversed(entries):
        if entry.event.startswith("@") or entry.event == "resignal":
            continue
        return entry
    return None


class _Notifying:
    """The steps of the ``*_notifying`` and ``provision_failed`` states: tell the control plane, then move on.

    Connection errors, timeouts, 429 and 5xx are tried again with the state's backoff; any other
    refusal is final for this callback (recorded in ``notification``); so is running out of attempts.
    Either way the flow moves on: a control plane that did not hear asks again, and a repeated signal
    tells it again.
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def notify_provisioned(self, resource: Resource, ctx: StepContext) -> Outcome:
        end = "provisioned" if _op(resource).get("signal") == "prepare" else "started"
        kept = {"failure": None, "provisioned": holding(resource), "addresses": addresses(resource)}
        return self._tell(resource, ctx, event=f"notified_{end}", end=end, failure=None, kept=kept)

    def notify_provision_failed(self, resource: Resource, ctx: StepContext) -> Outcome:
        arrival = _arrival(resource, ctx)
        failure: str | None
        if arrival is not None and arrival.event == "renotify":
            failure = resource.data.get("failure")
        else:
            failure = (arrival.detail.get("error") if arrival is not None else None) or resource.error
        failure = error_text(str(failure or "provisioning failed"))
        kept = {"failure": failure, "provisioned": holding(resource), "addresses": addresses(resource)}
        return self._tell(resource, ctx, event="notified_failed", end="failed", failure=failure, kept=kept)

    def notify_deprovisioned(self, resource: Resource, ctx: StepContext) -> Outcome:
        arrival = _arrival(resource, ctx)
        failure: str | None = None
        if arrival is not None and arrival.event == "renotify":
            end = arrival.from_state or "deprovisioned"
            if end == "deprovision_failed":
                failure = str(resource.data.get("failure") or "deprovisioning failed")
        elif arrival is not None and arrival.event == "deprovision_failed":
            end = "deprovision_failed"
            failure = str(arrival.detail.get("error") or "deprovisioning failed")
        else:
            end = "suspended" if _op(resource).get("signal") == "suspend" else "deprovisioned"
        failure = None if failure is None else error_text(failure)
        kept = {"failure": failure, "provisioned": holding(resource)}
        return self._tell(resource, ctx, event=f"notified_{end}", end=end, failure=failure, kept=kept)

    def _tell(
        self,
        resource: Resource,
        ctx: StepContext,
        *,
        event: str,
        end: str,
        failure: str | None,
        kept: Mapping[str, Any],
    ) -> Outcome:
        op = _op(resource)
        callback = resource.data.get("callback")
        record: dict[str, Any] = {"signal": op.get("signal"), "state": end, "attempt": ctx.attempt}
        if not isinstance(callback, Mapping) or not isinstance(callback.get("url"), str):
            record.update(outcome="skipped", status=None, error="no callback to tell")
            return Advance(event, {**kept, "notification": record}, detail={"notification": "skipped"})
        where = addresses(resource)
        body: dict[str, Any] = {
            "resourceId": callback.get("resourceId"),
            "token": callback.get("token"),
            "key": callback.get("key"),
            "status": "failed" if failure else "done",
            "data": {
                "dataFlowId": resource.id,
                "state": end,
                "source": where["source"],
                "destination": where["destination"],
            },
        }
        if failure:
            body["error"] = failure
        sent = self.notifier.post(callback["url"], body)
        record.update(status=sent.status, error=sent.error)
        if sent.outcome == "retry":
            max_attempts = ctx.kind.state(resource.state).backoff.max_attempts
            if ctx.attempt < max_attempts:
                record["outcome"] = "retrying"
                why = f"the callback was not delivered: {sent.error}"
                return RetryLater(why, data={**kept, "notification": record})
            record["outcome"] = "undeliverable"
            log.warning("dataflow %s: gave up telling the control plane (%s)", resource.id, sent.error)
        else:
            record["outcome"] = sent.outcome
            if sent.outcome == "refused":
                log.warning("dataflow %s: the control plane refused the callback (%s)", resource.id, sent.error)
        detail = {"notification": record["outcome"], "status": sent.status}
        if sent.error:
            detail["notification_error"] = sent.error
        return Advance(event, {**kept, "notification": record}, detail=detail)


def dataflow_steps(
    provisioners: Mapping[str, object] | None,
    controlplane: ControlPlaneRef | None,
    *,
    kind: Kind = dataflow,
    max_attempts: int = 5,
    timeout: float = 10.0,
    client: httpx.Client | None = None,
) -> Steps:
    """The steps of ``kind``: ``provisioners`` by definition type, callbacks to ``controlplane``.

    By default every type is served by one synchronous :class:`MemoryProvisioner` named ``memory``.
    Callbacks go with the control plane's token (none without a control plane); ``timeout`` bounds each
    in seconds, and ``client`` may be an :class:`httpx.Client` to send them with.
    """
    plugins: Mapping[str, object] = provisioners if provisioners is not None else {"memory": MemoryProvisioner()}
    tell = _Notifying(Notifier(controlplane, timeout=timeout, client=client))
    steps = Steps()
    steps.add(
        kind,
        "provisioning",
        ProvisionStep(
            plugins,
            _manifest,
            done="provisioned",
            requested="provision_requested",
            failed="provision_failed",
            retry="provision_retry",
            max_attempts=max_attempts,
        ),
    )
    steps.add(kind, "provision_notifying", tell.notify_provisioned)
    steps.add(kind, "provision_failed", tell.notify_provision_failed)
    steps.add(
        kind,
        "deprovisioning",
        ProvisionStep(
            plugins,
            _manifest,
            action="deprovision",
            done="deprovisioned",
            requested="deprovision_requested",
            failed="deprovision_failed",
            retry="deprovision_retry",
            max_attempts=max_attempts,
            skip=_not_to_deprovision,
        ),
    )
    steps.add(kind, "deprovision_notifying", tell.notify_deprovisioned)
    return steps
