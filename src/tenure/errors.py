"""The one exception hierarchy of tenure.

Every error carries the facts a caller needs to act on it (resource id, state, event, versions) as
attributes, and a message that says what was wrong and what would have been accepted.

>>> err = Conflict(resource_id="r1", expected_version=3, actual_version=5)
>>> str(err)
'resource r1 was changed concurrently: expected version 3, found version 5'
>>> isinstance(err, TenureError)
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "AlreadyExists",
    "ClaimLost",
    "Conflict",
    "InvalidSteps",
    "IdempotencyKeyReused",
    "InvalidArgument",
    "InvalidDatabaseURL",
    "FlowChanged",
    "FlowFailed",
    "InvalidFlow",
    "InvalidKind",
    "InvalidSpec",
    "NotSharable",
    "QuotaExceeded",
    "QuotaNotFound",
    "ResourceNotFound",
    "SchemaNotMigrated",
    "SchemaTooNew",
    "StoreError",
    "StoreUnavailable",
    "TenureError",
    "TransitionNotAllowed",
    "UnknownEvent",
    "UnknownKind",
    "UnknownState",
]


def _names(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"


class TenureError(Exception):
    """Root of every error tenure raises on purpose."""

    default_message = "tenure error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    def facts(self) -> dict[str, Any]:
        """The structured facts of this error (for logs and problem documents)."""
        return {k: v for k, v in vars(self).items() if k != "message"}

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (workers); rebuild from the facts, not from __init__'s signature.
        return (_restore, (type(self), self.message, self.facts()))


def _restore(cls: type[TenureError], message: str, facts: dict[str, Any]) -> TenureError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.message = message
    err.__dict__.update(facts)
    return err


# --- declaring kinds ---------------------------------------------------------------------------


class InvalidKind(TenureError):
    """A kind declaration breaks a rule; ``problems`` lists every rule it breaks."""

    default_message = "invalid kind declaration"

    def __init__(self, kind: str, problems: Sequence[str]) -> None:
        self.kind = kind
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"kind {kind!r} is invalid:\n{lines}")


class UnknownKind(TenureError):
    default_message = "unknown kind"

    def __init__(self, kind: str, known: Sequence[str]) -> None:
        self.kind = kind
        self.known = tuple(known)
        super().__init__(f"unknown kind {kind!r}; known kinds: {_names(self.known)}")


class UnknownState(TenureError):
    default_message = "unknown state"

    def __init__(self, kind: str, state: str, known: Sequence[str]) -> None:
        self.kind = kind
        self.state = state
        self.known = tuple(known)
        super().__init__(f"kind {kind!r} has no state {state!r}; its states are: {_names(self.known)}")


class UnknownEvent(TenureError):
    default_message = "unknown event"

    def __init__(self, kind: str, event: str, known: Sequence[str]) -> None:
        self.kind = kind
        self.event = event
        self.known = tuple(known)
        super().__init__(f"kind {kind!r} has no event {event!r}; its events are: {_names(self.known)}")


class TransitionNotAllowed(TenureError):
    """The event is not allowed in the resource's current state (or a guard refused it)."""

    default_message = "transition not allowed"

    def __init__(
        self,
        *,
        kind: str,
        state: str,
        event: str,
        allowed: Sequence[str],
        resource_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.kind = kind
        self.state = state
        self.event = event
        self.allowed = tuple(allowed)
        self.resource_id = resource_id
        self.reason = reason
        who = f"resource {resource_id} ({kind})" if resource_id else f"kind {kind!r}"
        why = f": {reason}" if reason else ""
        super().__init__(
            f"event {event!r} is not allowed for {who} in state {state!r}{why}; "
            f"allowed events in {state!r}: {_names(self.allowed)}"
        )


class InvalidSpec(TenureError):
    """A resource's spec does not match what its kind accepts."""

    default_message = "invalid spec"

    def __init__(self, kind: str, problems: Sequence[tuple[str, str]]) -> None:
        self.kind = kind
        self.problems = tuple(problems)
        detail = "; ".join(f"{field}: {constraint}" for field, constraint in self.problems)
        super().__init__(f"invalid spec for kind {kind!r}: {detail}")


class InvalidArgument(TenureError):
    """An argument is outside what the operation accepts."""

    default_message = "invalid argument"

    def __init__(self, field: str, constraint: str, got: Any = None) -> None:
        self.field = field
        self.constraint = constraint
        self.got = got
        super().__init__(f"{field} {constraint}, got {got!r}")


# --- flows -------------------------------------------------------------------------------------


class InvalidFlow(TenureError):
    """A flow or task declaration cannot run; ``problems`` lists why."""

    default_message = "invalid flow"

    def __init__(self, flow: str, problems: Sequence[str]) -> None:
        self.flow = flow
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"flow {flow!r} cannot run:\n{lines}")


class FlowFailed(TenureError):
    """A flow run ended without succeeding (reverted, or its revert failed)."""

    default_message = "flow failed"

    def __init__(self, flow: str, run_id: str, state: str, failures: Mapping[str, str]) -> None:
        self.flow = flow
        self.run_id = run_id
        self.state = state
        self.failures = dict(failures)
        detail = "; ".join(f"{task}: {why}" for task, why in self.failures.items()) or "no failure recorded"
        super().__init__(f"flow {flow!r} run {run_id} ended {state}: {detail}")


class FlowChanged(TenureError):
    """A stored run was made by a different definition of its flow than the one resuming it."""

    default_message = "flow definition changed"

    def __init__(self, run_id: str, *, stored: str, current: str) -> None:
        self.run_id = run_id
        self.stored = stored
        self.current = current
        super().__init__(
            f"flow run {run_id} was started by {stored} but the flow is now {current}; "
            "resume it with the definition that started it, or bump the flow's version and migrate the run"
        )


# --- resources ---------------------------------------------------------------------------------


class ResourceNotFound(TenureError):
    default_message = "resource not found"

    def __init__(self, resource_id: str) -> None:
        self.resource_id = resource_id
        super().__init__(f"no resource with id {resource_id!r}")


class Conflict(TenureError):
    """A compare-and-swap lost: the resource is not at the version the writer expected."""

    default_message = "concurrent modification"

    def __init__(
        self,
        *,
        resource_id: str,
        expected_version: int,
        actual_version: int,
        actual_state: str | None = None,
    ) -> None:
        self.resource_id = resource_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        self.actual_state = actual_state
        where = f" (now in state {actual_state!r})" if actual_state else ""
        super().__init__(
            f"resource {resource_id} was changed concurrently: expected version {expected_version}, "
            f"found version {actual_version}{where}"
        )


class ClaimLost(Conflict):
    """A worker's fenced write was refused: it no longer holds the claim it ran the step under.

    Its claim expired and another worker took the resource over, or the resource moved on (a client
    event, a deadline) while the step ran. Nothing was written; the step's outcome is dropped.
    """

    default_message = "claim lost"

    def __init__(
        self,
        *,
        resource_id: str,
        expected_version: int,
        actual_version: int,
        actual_state: str | None = None,
        claimed_by: str | None = None,
    ) -> None:
        super().__init__(
            resource_id=resource_id,
            expected_version=expected_version,
            actual_version=actual_version,
            actual_state=actual_state,
        )
        self.claimed_by = claimed_by
        holder = f", now claimed by {claimed_by}" if claimed_by else ""
        self.message = (
            f"the claim on resource {resource_id} at version {expected_version} was lost "
            f"(found version {actual_version}{f' in state {actual_state!r}' if actual_state else ''}{holder}); "
            "the late write was refused"
        )
        self.args = (self.message,)


class InvalidSteps(TenureError):
    """Steps given to the engine do not fit their kinds; ``problems`` lists every one."""

    default_message = "invalid steps"

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid steps:\n" + "\n".join(f"  - {p}" for p in self.problems))


class AlreadyExists(TenureError):
    """Something was created with a key that is already taken."""

    default_message = "already exists"

    def __init__(self, what: str, key: str) -> None:
        self.what = what
        self.key = key
        super().__init__(f"a {what} with key {key!r} already exists; use another key or read the existing one")


class IdempotencyKeyReused(TenureError):
    """An idempotency key was sent again with a different request."""

    default_message = "idempotency key reused with a different request"

    def __init__(self, key: str, resource_id: str, difference: str) -> None:
        self.key = key
        self.resource_id = resource_id
        self.difference = difference
        super().__init__(
            f"idempotency key {key!r} already created resource {resource_id} from a different request "
            f"({difference}); send the same request again or use a new key"
        )


class QuotaExceeded(TenureError):
    """A reservation would take a project over its limit."""

    default_message = "quota exceeded"

    def __init__(self, *, project: str, resource: str, requested: int, available: int, hard_limit: int) -> None:
        self.project = project
        self.resource = resource
        self.requested = requested
        self.available = available
        self.hard_limit = hard_limit
        super().__init__(
            f"project {project!r} cannot reserve {requested} {resource}: only {available} of its "
            f"limit of {hard_limit} are free"
        )


class QuotaNotFound(TenureError):
    """A quota or reservation that does not exist."""

    default_message = "no such quota"

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"no such quota or reservation: {what}")


# --- stores ------------------------------------------------------------------------------------


class NotSharable(TenureError):
    """A second party asked to use a resource that is not sharable."""

    default_message = "resource not sharable"

    def __init__(self, *, resource_id: str, party: str, refused: str) -> None:
        self.resource_id = resource_id
        #: The party using the resource now.
        self.party = party
        #: The party that was refused.
        self.refused = refused
        super().__init__(
            f"resource {resource_id} is not sharable and is in use by {party}; {refused} cannot register "
            f"an interest until that party deregisters or its interest expires"
        )


class StoreError(TenureError):
    default_message = "store error"


class InvalidDatabaseURL(StoreError):
    default_message = "invalid database URL"

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(
            f"cannot use database URL {url!r}: {reason}; accepted forms are "
            "sqlite:///relative/path.db, sqlite:////absolute/path.db and "
            "postgresql://user@host:port/dbname"
        )


class StoreUnavailable(StoreError):
    default_message = "database unavailable"

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"database {target} is unavailable: {reason}")


class SchemaNotMigrated(StoreError):
    default_message = "database schema is not migrated"

    def __init__(self, target: str, current: int, required: int) -> None:
        self.target = target
        self.current = current
        self.required = required
        super().__init__(
            f"database {target} is at schema version {current} but tenure needs version {required}; "
            f"run `tenure migrate --database <url>` first"
        )


class SchemaTooNew(StoreError):
    default_message = "database schema is newer than this tenure"

    def __init__(self, target: str, current: int, known: int) -> None:
        self.target = target
        self.current = current
        self.known = known
        super().__init__(
            f"database {target} is at schema version {current}, newer than the {known} this version of "
            "tenure knows; upgrade tenure"
        )
