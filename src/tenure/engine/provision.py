"""Provisioners (seed 000): plug-ins keyed by resource-definition type, and the step that drives them.

A kind's step turns a resource into a manifest of :class:`Definition` s. Each definition goes to the
provisioner registered for its type, which answers done, pending (it will call back), retry, or
failed. The answers roll up to the resource: any failure fails it, any retry retries the step, any
pending puts it in the wait state until the callbacks come, and all done advances it. Per-definition
sub-states live in the resource's data (``data[data_key][definition id]``), so a retry provisions only
the definitions not yet done. Deprovisioning, and any other action a plug-in offers (a data plane's
``start``, say), works the same way through the method named by the step's ``action``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenure.engine.outcome import Advance, Fail, Outcome, RetryLater, Wait
from tenure.engine.steps import StepContext
from tenure.errors import InvalidArgument, StoreUnavailable, TenureError
from tenure.store.model import Resource

__all__ = [
    "REQUESTS_KEPT",
    "Definition",
    "MemoryProvisioner",
    "ProvisionRequest",
    "ProvisionResult",
    "ProvisionStatus",
    "ProvisionStep",
    "Provisioner",
    "check_definition_types",
]


#: How many of its most recent requests a :class:`MemoryProvisioner` keeps (older ones are dropped).
REQUESTS_KEPT = 1000


@dataclass(frozen=True, slots=True)
class Definition:
    """One thing to provision: ``type`` picks the provisioner, ``spec`` says what to make."""

    id: str
    type: str
    spec: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "spec": dict(self.spec)}


def check_definition_types(definitions: Sequence[Any], known: frozenset[str]) -> None:
    """Refuse (ValueError, for a spec model's validator) a definition whose type has no provisioner here.

    ``definitions`` are the spec's resource definitions (anything with a ``type``), in order; the
    refusal names the first unknown one by its index and lists the known types.
    """
    for index, d in enumerate(definitions):
        if d.type not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise ValueError(f"[{index}].type {d.type!r} has no provisioner here (known types: {listed})")


class ProvisionStatus(enum.StrEnum):
    DONE = "done"
    PENDING = "pending"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    """A provisioner's answer for one definition.

    >>> ProvisionResult.pending().status.value, ProvisionResult.failed("quota").error
    ('pending', 'quota')
    """

    status: ProvisionStatus
    data: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def done(cls, data: Mapping[str, Any] | None = None) -> ProvisionResult:
        return cls(ProvisionStatus.DONE, dict(data or {}))

    @classmethod
    def pending(cls) -> ProvisionResult:
        return cls(ProvisionStatus.PENDING)

    @classmethod
    def retry(cls, error: str) -> ProvisionResult:
        return cls(ProvisionStatus.RETRY, error=error)

    @classmethod
    def failed(cls, error: str) -> ProvisionResult:
        return cls(ProvisionStatus.FAILED, error=error)


class ProvisionRequest:
    """What a provisioner is asked: do ``action`` for ``definition`` of ``resource_id``.

    An asynchronous provisioner answers pending and later calls back with ``token`` for ``key``.
    ``idempotency_key`` is the same for every ask about this definition and action within one
    operation (after a crash, a retry or a deadline), so the provisioner can recognise a repeat; it
    must answer a repeat with the token of the latest ask, since answers under an older one are
    refused as superseded. A kind whose resources provision the same definition more than once (a
    data plane's flow, provisioned again after a suspension) marks each operation, and a new
    operation asks under a new key (see :class:`ProvisionStep`'s ``operation``).

    ``token`` may be given as a function that issues it: the engine passes the step's, which opens
    the wait a callback is recorded under the first time it is read. A provisioner that answers at
    once never reads it and costs no write; one that will call back reads it before it hands it out.
    """

    __slots__ = ("_token", "action", "attempt", "definition", "idempotency_key", "key", "resource_id")

    def __init__(
        self,
        action: str,
        resource_id: str,
        definition: Definition,
        *,
        token: str | Callable[[], str],
        key: str,
        attempt: int,
        idempotency_key: str,
    ) -> None:
        self.action = action
        self.resource_id = resource_id
        self.definition = definition
        self._token = token
        self.key = key
        self.attempt = attempt
        self.idempotency_key = idempotency_key

    @property
    def token(self) -> str:
        """The secret a callback about this ask must carry (issued on the first read)."""
        if not isinstance(self._token, str):
            self._token = self._token()
        return self._token

    def __repr__(self) -> str:  # the token is a secret: never in logs
        return (
            f"ProvisionRequest(action={self.action!r}, resource_id={self.resource_id!r}, "
            f"definition={self.definition!r}, key={self.key!r}, attempt={self.attempt})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "resource_id": self.resource_id,
            "definition": self.definition.to_json(),
            "token": self.token,
            "key": self.key,
            "attempt": self.attempt,
            "idempotency_key": self.idempotency_key,
        }


class Provisioner(Protocol):
    """Provisions and deprovisions the definitions of one type."""

    def provision(self, request: ProvisionRequest, /) -> ProvisionResult: ...

    def deprovision(self, request: ProvisionRequest, /) -> ProvisionResult: ...


Manifest = Callable[[Resource], Sequence[Definition]]


def manifest_from_data(key: str = "manifest") -> Manifest:
    """A manifest read from ``resource.data[key]`` (a list of definition objects)."""

    def read(resource: Resource) -> list[Definition]:
        return [Definition(d["id"], d["type"], d.get("spec") or {}) for d in resource.data.get(key, [])]

    return read


class ProvisionStep:
    """The step that provisions (or deprovisions, or ``action`` s) a resource's manifest.

    ``done``/``requested``/``failed``/``retry`` name the kind's events: every definition done,
    some pending (into the wait state), some failed, and every answer in with some asking for a
    retry (from the wait state back to this one). A definition is tried ``max_attempts`` times
    at most, counting retries and deadline expiries, before the resource fails.
    """

    def __init__(
        self,
        provisioners: Mapping[str, object],
        manifest: Manifest,
        *,
        done: str,
        requested: str,
        failed: str,
        retry: str | None = None,
        action: str = "provision",
        data_key: str | None = None,
        max_attempts: int = 5,
        skip: Callable[[Resource, Definition], bool] | None = None,
        operation: Callable[[Resource], object] | None = None,
    ) -> None:
        self.provisioners = dict(provisioners)
        self.manifest = manifest
        self.done, self.requested, self.failed, self.retry = done, requested, failed, retry
        self.action = action
        self.data_key = data_key or action
        self.max_attempts = max_attempts
        self.skip = skip
        self.operation = operation
        self.__name__ = f"{action}_step"

    def _call(self, request: ProvisionRequest) -> ProvisionResult:
        plugin = self.provisioners.get(request.definition.type)
        if plugin is None:
            known = ", ".join(sorted(self.provisioners)) or "none"
            return ProvisionResult.failed(f"no provisioner for type {request.definition.type!r} (known: {known})")
        method = getattr(plugin, self.action, None)
        if not callable(method):
            return ProvisionResult.failed(f"the {request.definition.type!r} provisioner cannot {self.action}")
        try:
            result = method(request)
        except StoreUnavailable:
            # tenure's own database (issuing the callback token opens a wait there), not the
            # provisioner's answer: the step fails and is retried, as for any outage.
            raise
        except TenureError as exc:
            return ProvisionResult.failed(str(exc))
        except Exception as exc:
            return ProvisionResult.retry(f"{type(exc).__name__}: {exc}")
        if not isinstance(result, ProvisionResult):
            return ProvisionResult.failed(f"the {request.definition.type!r} provisioner answered {result!r}")
        return result

    def idempotency_key(self, resource: Resource, definition: Definition) -> str:
        """The key of every ask about ``definition`` in the operation under way (see the class docs)."""
        key = f"{resource.id}/{self.action}/{definition.id}"
        marker = self.operation(resource) if self.operation is not None else None
        return key if marker is None else f"{key}@{marker}"

    def __call__(self, resource: Resource, ctx: StepContext) -> Outcome:
        definitions = [d for d in self.manifest(resource) if not (self.skip and self.skip(resource, d))]
        previous = resource.data.get(self.data_key)
        states: dict[str, Any] = {k: dict(v) for k, v in previous.items()} if isinstance(previous, Mapping) else {}
        pending: list[str] = []
        retrying: list[str] = []
        failed: list[str] = []
        for d in definitions:
            entry = states.get(d.id) or {"type": d.type}
            if entry.get("status") == ProvisionStatus.DONE:
                continue
            attempts = int(entry.get("attempts", 0)) + 1
            if attempts > self.max_attempts:
                # What the last answer was is kept: a definition given up on while pending may exist.
                entry.update(
                    status=ProvisionStatus.FAILED.value,
                    last_status=entry.get("status"),
                    error=f"gave up after {self.max_attempts} attempts",
                )
                states[d.id] = entry
                failed.append(d.id)
                continue
            # The key is the same for every ask about this definition in this operation (retries,
            # deadline re-asks), so a provisioner can tell a repeat from a new request; the token is
            # the latest ask's.
            key = self.idempotency_key(resource, d)
            request = ProvisionRequest(
                self.action, resource.id, d, token=lambda: ctx.token, key=d.id, attempt=attempts, idempotency_key=key
            )
            result = self._call(request)
            entry.update(type=d.type, status=result.status.value, attempts=attempts, error=result.error)
            entry["data"] = dict(result.data)
            states[d.id] = entry
            {
                ProvisionStatus.PENDING: pending,
                ProvisionStatus.RETRY: retrying,
                ProvisionStatus.FAILED: failed,
                ProvisionStatus.DONE: [],
            }[result.status].append(d.id)
        data = {self.data_key: states}
        if failed:
            return Fail(_errors(states, failed), self.failed, data)
        if retrying:
            return RetryLater(_errors(states, retrying), data=data)
        if pending:
            return Wait(
                self.requested,
                pending,
                on_done=self.done,
                on_failed=self.failed,
                on_retry=self.retry,
                data_key=self.data_key,
                data=data,
            )
        return Advance(self.done, data)


def _errors(states: Mapping[str, Any], ids: Sequence[str]) -> str:
    return "; ".join(f"{i}: {states[i].get('error') or states[i].get('status')}" for i in ids)


class MemoryProvisioner:
    """A provisioner that keeps what it made in memory: synchronous, or asynchronous on request.

    :attr:`made` holds what is provisioned now (deprovisioning removes it), so it grows with the
    live resources only. :attr:`requests` holds the most recent ``keep_requests`` requests (default
    :data:`REQUESTS_KEPT`), newest last: with ``asynchronous=True`` it answers pending, and a test
    or demo answers the requests it finds there through the store's callback inbox. A worker that
    runs for weeks with it keeps a bounded window, not every request it ever got.
    """

    def __init__(self, *, asynchronous: bool = False, keep_requests: int = REQUESTS_KEPT) -> None:
        if keep_requests < 1:
            raise InvalidArgument("keep_requests", "must be at least 1", keep_requests)
        self.asynchronous = asynchronous
        self.made: dict[str, dict[str, Any]] = {}
        self.requests: deque[ProvisionRequest] = deque(maxlen=keep_requests)

    def _answer(self, request: ProvisionRequest, data: Mapping[str, Any]) -> ProvisionResult:
        self.requests.append(request)
        if self.asynchronous:
            _ = request.token  # handed out now, as a real one would before answering pending
            return ProvisionResult.pending()
        return ProvisionResult.done(data)

    def provision(self, request: ProvisionRequest) -> ProvisionResult:
        name = f"{request.resource_id}/{request.definition.id}"
        self.made[name] = dict(request.definition.spec)
        return self._answer(request, {"name": name})

    def deprovision(self, request: ProvisionRequest) -> ProvisionResult:
        self.made.pop(f"{request.resource_id}/{request.definition.id}", None)
        return self._answer(request, {})

    def start(self, request: ProvisionRequest) -> ProvisionResult:
        return self._answer(request, {"endpoint": f"memory://{request.resource_id}"})
