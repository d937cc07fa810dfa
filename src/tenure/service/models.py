"""The JSON the API speaks: request bodies (strict: unknown fields refused) and responses.

Field names are camelCase on the wire (``desiredState``, ``observedGeneration``), Kubernetes style;
the Python names are snake_case.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tenure.errors import UnknownKind
from tenure.flow.records import FlowRunRow, FlowTaskRow
from tenure.machine import Kind
from tenure.rules import MAX_ERROR_TEXT
from tenure.service.idempotency import shown_key
from tenure.store.feed import Change
from tenure.store.inbox import AwaitedKey, CallbackStatus, Receipt, WaitInfo
from tenure.store.model import JournalEntry, Resource, Use
from tenure.store.protocol import Store
from tenure.store.uses import held

__all__ = [
    "AwaitedKeyOut",
    "CallbackIn",
    "ChangeOut",
    "CreateIn",
    "DesiredStateIn",
    "EventIn",
    "FlowRunOut",
    "FlowTaskOut",
    "In",
    "JournalOut",
    "JournalPage",
    "KindOut",
    "Out",
    "ReceiptOut",
    "ResourceOut",
    "ResourcePage",
    "TeardownOut",
    "UseOut",
    "WaitOut",
]

#: The longest name (kind, state, event, key) a request may carry.
_NAME = 100
_ID = 64


class Out(BaseModel):
    """An answer's JSON: camelCase on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


class In(BaseModel):
    """A request body: camelCase (snake_case accepted too); an unknown field is refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class UseOut(Out):
    """One party's live use of a resource: the client that registered it, when, and until when."""

    client: str | None
    registered_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, use: Use) -> UseOut:
        return cls(client=use.client, registered_at=use.registered_at, expires_at=use.expires_at)


class TeardownOut(Out):
    """A teardown wish that waits: the resource stays up until these parties are gone (or expire)."""

    pending: bool
    waiting_for: list[str]


class ResourceOut(Out):
    """A resource at one version (``version`` is also its ETag).

    ``inUseBy`` lists the parties whose use is live (party URI -> client, registeredAt, expiresAt);
    ``teardown`` says, while a teardown wish waits for them, which parties it waits for.
    """

    id: str
    kind: str
    #: The version of its kind the resource was created under (and lives its whole life on).
    kind_version: int
    state: str
    version: int
    spec: dict[str, Any]
    data: dict[str, Any]
    desired_state: str | None
    generation: int
    observed_generation: int
    sharable: bool
    in_use_by: dict[str, UseOut]
    teardown: TeardownOut | None
    error: str | None
    attempts: int
    entered_at: datetime
    next_attempt_at: datetime | None
    deadline: datetime | None
    claimed_by: str | None
    claim_expires_at: datetime | None
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def seen_in(cls, store: Store, r: Resource) -> ResourceOut:
        """``r`` as the API shows it, with its kind's version and ``store``'s clock."""
        try:
            kind: Kind | None = store.kind_of(r)
        except UnknownKind:  # a resource of a kind this process does not load is still shown
            kind = None
        return cls.of(r, kind, store.now())

    @classmethod
    def of(cls, r: Resource, kind: Kind | None = None, now: datetime | None = None) -> ResourceOut:
        """``r`` as the API shows it at ``now`` (the store's clock; default: the system's).

        Without its ``kind`` no teardown summary can be made (``teardown`` is null).
        """
        now = now or datetime.now(UTC)
        live = r.live_uses(now)
        teardown = None
        if kind is not None and held(kind, r, now):
            teardown = TeardownOut(pending=True, waiting_for=sorted(live))
        return cls(
            id=r.id,
            kind=r.kind,
            kind_version=r.kind_version,
            state=r.state,
            version=r.version,
            spec=dict(r.spec),
            data=dict(r.data) if kind is None else kind.shown_data(r.data),
            desired_state=r.desired_state,
            generation=r.generation,
            observed_generation=r.observed_generation,
            sharable=r.sharable,
            in_use_by={party: UseOut.of(use) for party, use in sorted(live.items())},
            teardown=teardown,
            error=r.error,
            attempts=r.attempts,
            entered_at=r.entered_at,
            next_attempt_at=r.next_attempt_at,
            deadline=r.deadline,
            claimed_by=r.claimed_by,
            claim_expires_at=r.claim_expires_at,
            idempotency_key=shown_key(r.idempotency_key),
            created_at=r.created_at,
            updated_at=r.updated_at,
        )


class ResourcePage(Out):
    """One page of resources; pass ``next`` back as ``after`` for the next one (null: the last page)."""

    items: list[ResourceOut]
    next: str | None


class JournalOut(Out):
    """One write in a resource's history."""

    seq: int
    resource_id: str
    version: int
    event: str
    from_state: str | None
    to_state: str
    actor: str | None
    at: datetime
    detail: dict[str, Any]

    @classmethod
    def of(cls, j: JournalEntry) -> JournalOut:
        return cls(
            seq=j.seq,
            resource_id=j.resource_id,
            version=j.version,
            event=j.event,
            from_state=j.from_state,
            to_state=j.to_state,
            actor=j.actor,
            at=j.at,
            detail=dict(j.detail),
        )


class ChangeOut(JournalOut):
    """A journal entry in the change feed, with its resource's kind and its feed position."""

    position: str
    kind: str

    @classmethod
    def of_change(cls, c: Change) -> ChangeOut:
        return cls(position=c.position, kind=c.kind, **JournalOut.of(c.entry).model_dump())


class JournalPage(Out):
    items: list[JournalOut]
    #: The version to pass as ``afterVersion`` for the next page (null: nothing more).
    next_after_version: int | None


class CreateIn(In):
    """A resource to create in its kind's initial state."""

    kind: str = Field(min_length=1, max_length=_NAME)
    spec: dict[str, Any] = Field(default_factory=dict)
    sharable: bool | None = None


class EventIn(In):
    """An event to fire; ``data`` is merged into the resource's data."""

    event: str = Field(min_length=1, max_length=_NAME)
    data: dict[str, Any] | None = None


class DesiredStateIn(In):
    """The state the resource should end up in (null: no preference); the engine acts on it later."""

    desired_state: str | None = Field(max_length=_NAME)


class CallbackIn(In):
    """An external party's answer for one awaited key, authenticated by the attempt's token."""

    resource_id: str = Field(min_length=1, max_length=_ID, validation_alias=AliasChoices("resourceId", "resource_id"))
    token: str = Field(min_length=1, max_length=500)
    key: str = Field(min_length=1, max_length=200)
    status: CallbackStatus
    data: dict[str, Any] | None = None
    error: str | None = Field(default=None, max_length=MAX_ERROR_TEXT)


class ReceiptOut(Out):
    """What became of a callback."""

    delivery: Literal["accepted", "duplicate"]
    resource_id: str
    key: str
    reason: str
    seq: int | None

    @classmethod
    def of(cls, r: Receipt) -> ReceiptOut:
        delivery: Literal["accepted", "duplicate"] = "accepted" if r.delivery.value == "accepted" else "duplicate"
        return cls(delivery=delivery, resource_id=r.resource_id, key=r.key, reason=r.reason, seq=r.seq)


class AwaitedKeyOut(Out):
    """One answer a wait awaits, and whether (and how) it came."""

    key: str
    received: bool
    status: CallbackStatus | None
    received_at: datetime | None

    @classmethod
    def of(cls, k: AwaitedKey) -> AwaitedKeyOut:
        return cls(key=k.key, received=k.received, status=k.status, received_at=k.received_at)


class WaitOut(Out):
    """What a waiting resource awaits (``id`` is a short prefix of the token's hash, never the token)."""

    id: str
    resource_id: str
    version: int
    state: str
    created_at: datetime
    deadline: datetime | None
    keys: list[AwaitedKeyOut]

    @classmethod
    def of(cls, w: WaitInfo) -> WaitOut:
        return cls(
            id=w.id,
            resource_id=w.resource_id,
            version=w.version,
            state=w.state,
            created_at=w.created_at,
            deadline=w.deadline,
            keys=[AwaitedKeyOut.of(k) for k in w.keys],
        )


class FlowTaskOut(Out):
    """One task's checkpoint in a flow run."""

    task: str
    state: str
    attempt: int
    result: Any = None
    failure: dict[str, Any] | None = None

    @classmethod
    def of(cls, t: FlowTaskRow) -> FlowTaskOut:
        failure = None if t.failure is None else dict(t.failure)
        return cls(task=t.task, state=t.state, attempt=t.attempt, result=t.result, failure=failure)


class FlowRunOut(Out):
    """A flow run of a resource's step, with each task's checkpoint."""

    id: str
    flow: str
    version: int
    state: str
    failure: dict[str, Any] | None
    created_at: datetime | None
    updated_at: datetime | None
    tasks: list[FlowTaskOut]

    @classmethod
    def of(cls, run: FlowRunRow, tasks: list[FlowTaskRow]) -> FlowRunOut:
        return cls(
            id=run.id,
            flow=run.flow,
            version=run.version,
            state=run.state,
            failure=None if run.failure is None else dict(run.failure),
            created_at=run.created_at,
            updated_at=run.updated_at,
            tasks=[FlowTaskOut.of(t) for t in tasks],
        )


class StateOut(Out):
    """One state of a kind: its stable code, its role, and what the engine does there."""

    name: str
    code: int
    role: Literal["work", "wait", "rest", "final"]
    deadline_seconds: float | None
    on_deadline: str | None
    on_failure: str | None
    max_attempts: int | None
    #: The events allowed in this state.
    events: list[str]
    description: str
    #: Kept so that resources already in it can finish; newer versions of the kind do not have it.
    deprecated: bool = False


class EventOut(Out):
    """One event: the states it leaves from and the state it leads to."""

    name: str
    sources: list[str]
    target: str
    guarded: bool
    #: Fired by the engine only (a client firing it is refused).
    engine_only: bool = False
    description: str


class KindOut(Out):
    """A kind: its state machine, and the JSON schema its resources' spec must satisfy (if any)."""

    name: str
    version: int
    #: Every loaded version of the kind: resources made under an older one finish on it.
    versions: list[int]
    description: str
    initial: str
    states: list[StateOut]
    events: list[EventOut]
    spec_schema: dict[str, Any] | None
    diagram: str

    @classmethod
    def of(cls, kind: Kind, *, versions: list[int] | None = None) -> KindOut:
        described = kind.describe()
        return cls(
            name=kind.name,
            version=kind.version,
            versions=versions or [kind.version],
            description=kind.description,
            initial=kind.initial.name,
            states=[StateOut.model_validate(s) for s in described["states"]],
            events=[EventOut.model_validate(e) for e in described["events"]],
            spec_schema=kind.spec_model.model_json_schema() if kind.spec_model is not None else None,
            diagram=f"/v1/kinds/{kind.name}/diagram"
            + (f"?version={kind.version}" if versions and len(versions) > 1 else ""),
        )
