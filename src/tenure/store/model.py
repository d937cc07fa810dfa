"""The values a store reads and writes: resources, journal entries and pages of results."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Generic, TypeVar

__all__ = [
    "CREATE_EVENT",
    "NO_USES",
    "BacklogRow",
    "JournalEntry",
    "Page",
    "Resource",
    "Use",
    "new_id",
    "uses_from_json",
]

#: The journal event recorded when a resource is created (user event names cannot start with '@').
CREATE_EVENT = "@create"

T = TypeVar("T")


_id_lock = threading.Lock()
_last_ms = 0
_last_seq = 0


def new_id() -> str:
    """A new resource id: 32 hex digits, time-ordered (UUIDv7 layout), so keyset pages follow creation order.

    Within one process ids strictly increase: the 12 bits after the version nibble are a counter that
    starts at a random value each millisecond and is bumped for every further id in that millisecond
    (RFC 9562, method 1), borrowing the next millisecond when it would overflow.
    """
    global _last_ms, _last_seq
    rand = int.from_bytes(os.urandom(10), "big")
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            seq = rand >> 69 & 0x7FF  # random start in the lower half leaves room to count up
        else:
            ms, seq = _last_ms, _last_seq + 1
            if seq > 0xFFF:
                ms, seq = ms + 1, 0
        _last_ms, _last_seq = ms, seq
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | rand & ((1 << 62) - 1)
    return f"{value:032x}"


@dataclass(frozen=True, slots=True)
class Use:
    """One party's use of a resource: who registered it, when, and until when it counts.

    The use is live while ``expires_at`` lies ahead on the store's clock; after that it no longer holds
    the resource, and the engine removes it (journaled) soon after.
    """

    #: The client (token) that registered the use: only it, or an admin, may renew or release it.
    client: str | None
    registered_at: datetime
    expires_at: datetime

    def live(self, now: datetime) -> bool:
        return self.expires_at > now

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "registered_at": self.registered_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


#: No party uses the resource.
NO_USES: Mapping[str, Use] = MappingProxyType({})


def uses_from_json(value: Mapping[str, Any] | None) -> Mapping[str, Use]:
    """The ``in_use_by`` column as values (party URI -> :class:`Use`)."""
    if not value:
        return NO_USES
    return {
        party: Use(u.get("client"), datetime.fromisoformat(u["registered_at"]), datetime.fromisoformat(u["expires_at"]))
        for party, u in value.items()
    }


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource as stored at one ``version``.

    ``version`` is bumped by every write; it is the ETag clients send back and the fencing token the
    engine writes with. A snapshot never changes: writes return a new one.
    """

    id: str
    kind: str
    state: str
    version: int
    spec: Mapping[str, Any]
    data: Mapping[str, Any]
    desired_state: str | None
    generation: int
    observed_generation: int
    sharable: bool
    error: str | None
    attempts: int
    entered_at: datetime
    next_attempt_at: datetime | None
    deadline: datetime | None
    claim_token: str | None = field(repr=False)
    claimed_by: str | None
    claim_expires_at: datetime | None
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    #: Who uses the resource: party URI -> :class:`Use` (expired uses stay until the engine removes them).
    in_use_by: Mapping[str, Use] = field(default_factory=lambda: NO_USES)
    #: The generation whose teardown an admin forced (it waits for no party; None: never forced).
    forced_generation: int | None = None
    #: The version of its kind the resource was created under: it lives its whole life on that graph.
    kind_version: int = 1

    def live_uses(self, now: datetime) -> dict[str, Use]:
        """The uses that still hold the resource at ``now``."""
        return {party: use for party, use in self.in_use_by.items() if use.expires_at > now}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of the resource (the claim token is a secret and is left out)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "version": self.version,
            "spec": dict(self.spec),
            "data": dict(self.data),
            "desired_state": self.desired_state,
            "generation": self.generation,
            "observed_generation": self.observed_generation,
            "sharable": self.sharable,
            "error": self.error,
            "attempts": self.attempts,
            "entered_at": self.entered_at.isoformat(),
            "next_attempt_at": _iso(self.next_attempt_at),
            "deadline": _iso(self.deadline),
            "claimed_by": self.claimed_by,
            "claim_expires_at": _iso(self.claim_expires_at),
            "idempotency_key": self.idempotency_key,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "in_use_by": {party: use.to_json() for party, use in self.in_use_by.items()},
            "forced_generation": self.forced_generation,
            "kind_version": self.kind_version,
        }


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One write in a resource's history; ``seq`` orders entries across all resources."""

    seq: int
    resource_id: str
    version: int
    event: str
    from_state: str | None
    to_state: str
    actor: str | None
    at: datetime
    detail: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "resource_id": self.resource_id,
            "version": self.version,
            "event": self.event,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "detail": dict(self.detail),
        }


@dataclass(frozen=True, slots=True)
class BacklogRow:
    """How many resources of a kind are in a state, and for a wait state how long the oldest has waited."""

    kind: str
    state: str
    #: The state's role (None for a state the kind no longer declares).
    role: str | None
    count: int
    #: Seconds since the longest-waiting resource entered the state (wait states with resources only).
    oldest_seconds: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "state": self.state,
            "role": self.role,
            "count": self.count,
            "oldest_seconds": self.oldest_seconds,
        }


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """A page of results; pass ``next_after`` back as ``after`` to get the next page."""

    items: Sequence[T]
    next_after: str | None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
