"""The ``memory-async`` provisioner of the built-in data plane, and the callback inbox it answers through."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from tenure.engine.delayed import Delayed
from tenure.engine.provision import ProvisionRequest, ProvisionResult, ProvisionStatus
from tenure.store.inbox import Receipt

__all__ = ["MAX_DELAY_MS", "CallbackInbox", "MemoryAsyncProvisioner"]

log = logging.getLogger("tenure.kinds.dataflow")


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

        token = request.token  # issued (its wait opened) before answering pending, not when the timer fires

        def answer() -> None:
            status = ProvisionStatus.FAILED if failure else ProvisionStatus.DONE
            try:
                receipt = self.inbox.deliver(
                    request.resource_id,
                    token,
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
