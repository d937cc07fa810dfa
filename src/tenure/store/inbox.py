"""The callback inbox: answers from external parties, recorded durably before anything acts on them.

When a step hands work to an external party (an HTTP provisioner, a data plane), the write that puts
the resource in its wait state also opens a *wait*: the sha-256 of a correlation token, the answers
awaited (keys) and what their roll-up fires. A callback names the resource, presents the token and
answers one key. Delivering it touches only the inbox, never the resource row, so it is accepted
whatever a worker is doing with the resource; the engine applies it afterwards, as a compare-and-swap
that marks the callbacks it used as settled in the same transaction.
"""

from __future__ import annotations

import builtins
import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tenure.clock import Clock
from tenure.errors import AlreadyExists, InvalidArgument, ResourceNotFound
from tenure.rules import MAX_ERROR_TEXT, NUL, json_object, refuse_nul
from tenure.store.database import Database, Executor
from tenure.store.model import Resource
from tenure.store.signal import WorkSignal

__all__ = [
    "AwaitedKey",
    "CallbackRow",
    "CallbackStatus",
    "Delivery",
    "Inbox",
    "Receipt",
    "Refusal",
    "WaitInfo",
    "WaitRow",
    "token_hash",
]


def token_hash(token: str) -> str:
    """The form a correlation token is stored and looked up in (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


class CallbackStatus(enum.StrEnum):
    """What an external party says about one awaited key."""

    #: Finished; ``data`` carries what it produced.
    DONE = "done"
    #: Failed for good.
    FAILED = "failed"
    #: Failed, worth asking again.
    RETRY = "retry"


class Delivery(enum.StrEnum):
    """The answer a callback gets."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REFUSED = "refused"


class Refusal(enum.StrEnum):
    """Why a callback was refused."""

    #: No wait was opened under this token for this resource.
    UNKNOWN_TOKEN = "unknown-token"
    #: The wait does not await this key.
    NOT_AWAITED = "not-awaited"
    #: The resource moved on since the attempt that handed out the token.
    SUPERSEDED = "superseded"
    #: A different answer for the key was already recorded.
    CONFLICTING_ANSWER = "conflicting-answer"
    #: Too many answers came before the step said what it awaits.
    TOO_EARLY = "too-early"


@dataclass(frozen=True, slots=True)
class Receipt:
    """What became of a delivered callback; ``reason`` says why when it was refused."""

    delivery: Delivery
    resource_id: str
    key: str
    reason: str = ""
    seq: int | None = None
    #: Why it was refused (None unless refused).
    refusal: Refusal | None = None

    @property
    def accepted(self) -> bool:
        """Whether the callback is (now or already) recorded."""
        return self.delivery is not Delivery.REFUSED

    def to_json(self) -> dict[str, Any]:
        return {
            "delivery": self.delivery.value,
            "resource_id": self.resource_id,
            "key": self.key,
            "reason": self.reason,
            "seq": self.seq,
            "refusal": None if self.refusal is None else self.refusal.value,
        }


@dataclass(frozen=True, slots=True)
class WaitRow:
    token_hash: str
    resource_id: str
    version: int
    state: str
    keys: tuple[str, ...]
    rules: Mapping[str, Any]
    created_at: datetime
    deadline: datetime | None

    @property
    def provisional(self) -> bool:
        """Opened when a step read its token; the step has not said yet what it waits for."""
        return not self.rules


@dataclass(frozen=True, slots=True)
class CallbackRow:
    seq: int
    token_hash: str
    resource_id: str
    key: str
    status: CallbackStatus
    data: Mapping[str, Any]
    error: str | None
    received_at: datetime
    applied_at: datetime | None
    result: str | None


@dataclass(frozen=True, slots=True)
class AwaitedKey:
    """One answer a wait awaits, and whether it came."""

    key: str
    received: bool
    #: The answer's status (done, failed, retry) once received.
    status: CallbackStatus | None = None
    received_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "received": self.received,
            "status": None if self.status is None else self.status.value,
            "received_at": None if self.received_at is None else self.received_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class WaitInfo:
    """What a resource waits for, for showing to people: no token, and no way to answer with it.

    ``id`` is a short prefix of the token's hash: enough to tell waits apart, useless to call back with.
    """

    id: str
    resource_id: str
    version: int
    state: str
    created_at: datetime
    deadline: datetime | None
    keys: tuple[AwaitedKey, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "resource_id": self.resource_id,
            "version": self.version,
            "state": self.state,
            "created_at": self.created_at.isoformat(),
            "deadline": None if self.deadline is None else self.deadline.isoformat(),
            "keys": [k.to_json() for k in self.keys],
        }


#: How many hex digits of the token hash identify a wait to people.
WAIT_ID_LENGTH = 12

_MAX_KEY = 200
#: How many answers a wait takes while the step that handed out its token still runs.
MAX_EARLY_CALLBACKS = 64


def _digest(status: str, data: Mapping[str, Any], error: str | None) -> str:
    body = json.dumps([status, data, error], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


class Inbox:
    """Waits and callbacks, over any database."""

    def __init__(self, db: Database, clock: Clock, signal: WorkSignal) -> None:
        self._db = db
        self._clock = clock
        self._signal = signal

    def deliver(
        self,
        resource_id: str,
        token: str,
        key: str,
        status: CallbackStatus | str,
        *,
        data: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Receipt:
        """Record a callback answering ``key`` of the wait that ``token`` was handed out for.

        Never blocks on, or is refused because of, a worker holding the resource. The answer says
        whether the callback was accepted (recorded, to be applied by the engine), a duplicate of
        one already recorded (same content: nothing changes), or refused, and why: an unknown or
        wrong token, a key the wait does not await, a different answer already recorded for the
        key, or an attempt that has been superseded (the resource moved on since it asked).
        """
        try:
            answer = CallbackStatus(status)
        except ValueError:
            allowed = ", ".join(s.value for s in CallbackStatus)
            raise InvalidArgument("status", f"must be one of {allowed}", status) from None
        if not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY:
            raise InvalidArgument("key", f"must be 1 to {_MAX_KEY} characters", key)
        if error is not None and (not isinstance(error, str) or len(error) > MAX_ERROR_TEXT):
            raise InvalidArgument("error", f"must be text of at most {MAX_ERROR_TEXT} characters", error)
        refuse_nul(key=key, error=error)
        clean = json_object("callback", "data", data)
        hashed = token_hash(token)
        digest = _digest(answer.value, clean, error)
        db = self._db
        now = self._clock()
        try:
            with db.transaction() as tx:
                refusal = self._check_delivery(tx, resource_id, hashed, key, digest)
                if refusal is not None:
                    return refusal
                row = tx.execute(
                    db.sql["insert_callback"],
                    (hashed, resource_id, key, answer.value, db.json_in(clean), error, digest, db.time_in(now)),
                ).fetchone()  # fmt: skip
                seq = int(row[0])
        except AlreadyExists:
            # A concurrent delivery of the same key won the insert; answer as if it came first.
            with db.reading() as conn:
                refusal = self._check_delivery(conn, resource_id, hashed, key, digest)
            assert refusal is not None, "the key was just taken, so it must be recorded now"
            return refusal
        self._signal.notify(callback=True)
        return Receipt(Delivery.ACCEPTED, resource_id, key, seq=seq)

    def _check_delivery(
        self, conn: Executor, resource_id: str, hashed: str, key: str, digest: str, *, again: bool = True
    ) -> Receipt | None:
        """The receipt of a callback that must not be inserted, or None if it may be."""
        wait = self._wait_in(conn, hashed)
        if wait is None or wait.resource_id != resource_id:
            # Whether the token exists for another resource is not the caller's business.
            return Receipt(
                Delivery.REFUSED,
                resource_id,
                key,
                "unknown correlation token for this resource",
                refusal=Refusal.UNKNOWN_TOKEN,
            )
        found = conn.execute(self._db.sql["get_callback_by_key"], (hashed, key)).fetchone()
        if found is not None:
            seq, their_digest, result = found
            if their_digest == digest:
                settled = f" (applied: {result})" if result else " (not applied yet)"
                return Receipt(Delivery.DUPLICATE, resource_id, key, f"already recorded{settled}", seq=int(seq))
            return Receipt(
                Delivery.REFUSED,
                resource_id,
                key,
                f"a different answer for {key!r} was already recorded",
                seq=int(seq),
                refusal=Refusal.CONFLICTING_ANSWER,
            )
        if not wait.provisional and key not in wait.keys:
            return Receipt(
                Delivery.REFUSED,
                resource_id,
                key,
                f"{key!r} is not awaited; expected one of {', '.join(wait.keys)}",
                refusal=Refusal.NOT_AWAITED,
            )
        if wait.provisional:
            # The step has not said yet which keys it awaits, so any key is taken, but not without end.
            (early,) = conn.execute(self._db.sql["count_callbacks_of_wait"], (hashed,)).fetchone()
            if int(early) >= MAX_EARLY_CALLBACKS:
                return Receipt(
                    Delivery.REFUSED,
                    resource_id,
                    key,
                    f"{MAX_EARLY_CALLBACKS} answers were already recorded before the step said what it awaits; "
                    "send the rest once the resource is waiting",
                    refusal=Refusal.TOO_EARLY,
                )
        current = conn.execute(self._db.sql["get_version_state"], (resource_id,)).fetchone()
        if current is not None and int(current[0]) != wait.version and again:
            # The wait and the row are two reads: the step's write entering the wait state may have
            # committed between them (PostgreSQL reads each statement afresh). Read the wait again.
            return self._check_delivery(conn, resource_id, hashed, key, digest, again=False)
        if current is None or int(current[0]) != wait.version:
            where = "" if current is None else f"; the resource is now in state {current[1]!r} at version {current[0]}"
            return Receipt(
                Delivery.REFUSED,
                resource_id,
                key,
                f"the attempt this token was issued for has been superseded (it waited in state "
                f"{wait.state!r} at version {wait.version}{where})",
                refusal=Refusal.SUPERSEDED,
            )
        return None

    def open_wait(self, resource: Resource, hashed: str) -> None:
        """Open a provisional wait under ``hashed`` for ``resource`` at its current version.

        Callbacks under it are recorded at once; they are applied when a fenced write puts the
        resource in a wait state and completes the wait (its keys and rules), and refused as
        superseded if the resource moves on otherwise.
        """
        db = self._db
        params = (hashed, resource.id, resource.version, resource.state, db.time_in(self._clock()))
        # Every step that calls out opens one: shared commits, like the steps' own writes.
        db.batched(lambda tx: tx.execute(db.sql["insert_provisional_wait"], params), key=resource.id)

    def wait(self, hashed: str) -> WaitRow | None:
        """The wait opened under the token whose hash is ``hashed``."""
        with self._db.reading() as conn:
            return self._wait_in(conn, hashed)

    def current_wait(self, resource_id: str, version: int) -> WaitRow | None:
        """The wait opened when the resource entered ``version``, if that write opened one."""
        with self._db.reading() as conn:
            row = conn.execute(self._db.sql["get_wait_at"], (resource_id, version)).fetchone()
        return None if row is None else self._wait_out(row)

    def pending_waits(self, resource_id: str) -> builtins.list[WaitInfo]:
        """The waits of the resource at its current version that say what they await, with the answers so far.

        Raises :class:`~tenure.errors.ResourceNotFound` for an unknown resource. Provisional waits (a
        step handed out a token and has not said yet what it waits for) are left out.
        """
        if NUL in resource_id:
            raise ResourceNotFound(resource_id)  # no resource can have such an id
        with self._db.reading() as conn:
            rows = conn.execute(self._db.sql["pending_waits"], (resource_id,)).fetchall()
        if not rows:
            raise ResourceNotFound(resource_id)
        waits: dict[str, tuple[Sequence[Any], dict[str, AwaitedKey]]] = {}
        for row in rows:
            hashed = row[1]
            if hashed is None:
                continue  # the resource, waiting for nothing
            _, answers = waits.setdefault(hashed, (row, {}))
            if row[6] is not None:
                answers[row[6]] = AwaitedKey(row[6], True, CallbackStatus(row[7]), self._db.time_out(row[8]))
        out: list[WaitInfo] = []
        for hashed, (row, answers) in waits.items():
            created = self._db.time_out(row[4])
            assert created is not None
            keys = tuple(answers.get(key) or AwaitedKey(key, False) for key in self._db.json_out(row[3]))
            out.append(
                WaitInfo(
                    hashed[:WAIT_ID_LENGTH], resource_id, int(row[0]), row[2], created, self._db.time_out(row[5]), keys
                )
            )
        return out

    def _wait_in(self, conn: Executor, hashed: str) -> WaitRow | None:
        row = conn.execute(self._db.sql["get_wait"], (hashed,)).fetchone()
        return None if row is None else self._wait_out(row)

    def _wait_out(self, row: Sequence[Any]) -> WaitRow:
        created = self._db.time_out(row[6])
        assert created is not None
        return WaitRow(
            token_hash=row[0],
            resource_id=row[1],
            version=int(row[2]),
            state=row[3],
            keys=tuple(self._db.json_out(row[4])),
            rules=self._db.json_out(row[5]),
            created_at=created,
            deadline=self._db.time_out(row[7]),
        )

    def callbacks(self, hashed: str) -> builtins.list[CallbackRow]:
        """Every callback recorded for the wait ``hashed``, oldest first."""
        with self._db.reading() as conn:
            rows = conn.execute(self._db.sql["callbacks_of_wait"], (hashed,)).fetchall()
        return [self._callback_out(r) for r in rows]

    def unsettled(self, kinds: Sequence[str], *, limit: int = 100) -> builtins.list[CallbackRow]:
        """Callbacks for resources of ``kinds`` recorded but not yet applied by the engine, oldest first."""
        with self._db.reading() as conn:
            rows = conn.execute(self._db.sql["unsettled_callbacks"], (self._db.array_in(list(kinds)), limit)).fetchall()
        return [self._callback_out(r) for r in rows]

    def mark_settled(self, seqs: Sequence[int], result: str) -> int:
        """Mark callbacks applied without a resource write (still waiting for others, or superseded).

        Returns how many were settled by this call (a callback already settled is left as it is).
        """
        now = self._db.time_in(self._clock())
        settled = 0
        with self._db.transaction() as tx:
            for seq in seqs:
                settled += tx.execute(self._db.sql["settle_callback"], (now, result, seq)).rowcount
        return settled

    def _callback_out(self, row: Sequence[Any]) -> CallbackRow:
        received = self._db.time_out(row[7])
        assert received is not None
        return CallbackRow(
            seq=int(row[0]),
            token_hash=row[1],
            resource_id=row[2],
            key=row[3],
            status=CallbackStatus(row[4]),
            data=self._db.json_out(row[5]),
            error=row[6],
            received_at=received,
            applied_at=self._db.time_out(row[8]),
            result=row[9],
        )
