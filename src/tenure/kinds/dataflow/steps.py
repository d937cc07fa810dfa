"""The ``dataflow`` kind's steps: (de)provisioning, and telling the control plane how it went."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

from tenure.engine import Resource
from tenure.engine.notify import Notifier
from tenure.engine.outcome import Advance, Outcome, RetryLater
from tenure.engine.planes import ControlPlaneRef
from tenure.engine.provision import Definition, MemoryProvisioner, ProvisionStep
from tenure.engine.steps import StepContext, Steps
from tenure.kinds.dataflow.kind import addresses, dataflow, holding, operation_marker, touched
from tenure.machine import Kind, Subject
from tenure.rules import error_text
from tenure.store.model import JournalEntry

__all__ = ["dataflow_steps"]

log = logging.getLogger("tenure.kinds.dataflow")


def _op(resource: Subject) -> Mapping[str, Any]:
    op = resource.data.get("op")
    return op if isinstance(op, Mapping) else {}


def _manifest(resource: Resource) -> list[Definition]:
    return [Definition(d["id"], d["type"], d.get("spec") or {}) for d in resource.spec.get("resources", [])]


def _not_to_deprovision(resource: Resource, definition: Definition) -> bool:
    """Deprovision what provisioning touched (everything when a terminate cut provisioning short)."""
    return not _op(resource).get("everything") and not touched(resource.data, definition.id)


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

    Connection errors, timeouts, 408, 425, 429 and 5xx are tried again with the state's backoff (the
    :class:`~tenure.engine.notify.Notifier` decides which); any other refusal is final for this
    callback (recorded in ``notification``, scrubbed of tokens); so is running out of attempts.
    Either way the flow moves on: a control plane that did not hear asks again, and a repeated signal
    tells it again (or, after a failure, runs the operation again).
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
            # Told again (only flows renotified from failed before a repeat ran provisioning again).
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
            # (From deprovision_failed only before a repeat ran the deprovisioning again.)
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
    Each provisioning and each deprovisioning asks under idempotency keys of its own
    (:func:`~tenure.kinds.dataflow.kind.operation_marker`). Callbacks go with the control plane's
    token (none without a control plane); ``timeout`` bounds each in seconds, and ``client`` may be an
    :class:`httpx.Client` to send them with (it is then shared, and left open).
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
            operation=operation_marker,
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
            operation=operation_marker,
        ),
    )
    steps.add(kind, "deprovision_notifying", tell.notify_deprovisioned)
    return steps
