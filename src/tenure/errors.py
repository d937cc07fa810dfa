"""The one exception hierarchy of tenure.

Every error carries the facts a caller needs to act on it (resource id, state, event, versions) as
attributes, and a message that says what was wrong and what would have been accepted.

>>> err = Conflict(resource_id="r1", expected_version=3, actual_version=5)
>>> str(err)
'resource r1 was changed concurrently: expected version 3, found version 5'
>>> isinstance(err, WriteConflict) and isinstance(err, TenureError)
True

The errors form one tree; catch the group that says what you will do about it:

    TenureError
    ├── KindError
    │   ├── InvalidKind
    │   ├── InvalidSteps
    │   ├── DuplicateKind
    │   ├── ModuleNotImportable
    │   ├── NoKindFound
    │   ├── UnknownKind
    │   ├── UnknownState
    │   └── UnknownEvent
    ├── InputError
    │   ├── InvalidArgument
    │   ├── InvalidSpec
    │   ├── InvalidUsage
    │   └── TooLarge
    ├── ResourceNotFound
    ├── SubscriptionNotFound
    ├── WriteConflict
    │   ├── TransitionNotAllowed
    │   ├── Conflict
    │   │   └── ClaimLost
    │   ├── AlreadyExists
    │   ├── IdempotencyKeyReused
    │   ├── NotSharable
    │   ├── InUse
    │   ├── TeardownStarted
    │   ├── UseNotYours
    │   └── RetryNotAllowed
    ├── QuotaError
    │   ├── QuotaExceeded
    │   └── QuotaNotFound
    ├── FlowError
    │   ├── InvalidFlow
    │   ├── FlowFailed
    │   ├── FlowChanged
    │   ├── FlowRunNotFound
    │   └── FlowActionNotAllowed
    ├── StoreError
    │   ├── InvalidDatabaseURL
    │   ├── StoreUnavailable
    │   ├── SchemaNotMigrated
    │   └── SchemaTooNew
    └── ServiceError
        ├── ConfigError
        ├── ServerFailed
        ├── ApiError
        └── ServerUnreachable

``KindError``
    A kind (or the steps, or the module, that should provide it) is declared wrong, two different
    kinds share a name, or a request names a kind, state or event that is not declared. Fix the
    declaration or the name: trying the same thing again fails the same way.
``InputError``
    An argument, a spec or a command line is outside what the operation accepts; the message says
    what would be accepted. Fix the input.
``ResourceNotFound``
    The id names no resource (never created, or a stale id). It stands alone: it is the one error
    every reader of an id has to expect, and it needs nothing but a different id.
``SubscriptionNotFound``
    Its like for webhook subscriptions: the id names none (never created, or deleted).
``WriteConflict``
    What is stored refuses the change: the resource is at another version (``Conflict``, and
    ``ClaimLost`` for a worker's fenced write), its state does not allow the event
    (``TransitionNotAllowed``), a key is taken (``AlreadyExists``, ``IdempotencyKeyReused``) or
    another party holds it (``NotSharable``), parties still use it (``InUse``), its teardown has
    begun (``TeardownStarted``), the use belongs to another client (``UseNotYours``) or it has no
    step backing off to retry now (``RetryNotAllowed``). Re-read, then decide whether the change
    still makes sense; nothing was written.
``QuotaError``
    A reservation would exceed a project's limit, or names a quota that does not exist.
``FlowError``
    A flow cannot run, a flow run failed or cannot be resumed as asked, or a run id names no run.
``StoreError``
    The database: a URL that cannot be used, a database that cannot be reached (retry later), or a
    schema that is not at this version of tenure (run ``tenure migrate``, or upgrade tenure).

``ServiceError``
    The HTTP service and its client: a configuration that cannot be used, a server that could not
    start, a request the server refused (``ApiError``, with the problem document's members), or a
    server that cannot be reached (retry later).

Catch ``TenureError`` to handle everything tenure refuses on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "AlreadyExists",
    "ApiError",
    "ClaimLost",
    "ConfigError",
    "Conflict",
    "DuplicateKind",
    "FlowActionNotAllowed",
    "FlowChanged",
    "FlowError",
    "FlowFailed",
    "FlowRunNotFound",
    "IdempotencyKeyReused",
    "InUse",
    "InputError",
    "InvalidArgument",
    "InvalidDatabaseURL",
    "InvalidFlow",
    "InvalidKind",
    "InvalidSpec",
    "InvalidSteps",
    "InvalidUsage",
    "KindError",
    "ModuleNotImportable",
    "NoKindFound",
    "NotSharable",
    "QuotaError",
    "QuotaExceeded",
    "QuotaNotFound",
    "ResourceNotFound",
    "RetryNotAllowed",
    "SchemaNotMigrated",
    "SchemaTooNew",
    "ServerFailed",
    "ServerUnreachable",
    "ServiceError",
    "StoreError",
    "StoreUnavailable",
    "SubscriptionNotFound",
    "TeardownStarted",
    "TenureError",
    "TooLarge",
    "TransitionNotAllowed",
    "UnknownEvent",
    "UnknownKind",
    "UnknownState",
    "UseNotYours",
    "WriteConflict",
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


# --- the groups --------------------------------------------------------------------------------
# Each group only classifies: it adds no facts, so raising one directly works like TenureError
# (an optional message). Code raises the specific classes below; callers catch the groups.


class KindError(TenureError):
    """A kind (or what provides it) is declared wrong, or a name is not one a kind declares."""

    default_message = "kind declaration or name not accepted"


class InputError(TenureError):
    """An argument, spec or command line is outside what the operation accepts."""

    default_message = "invalid input"


class WriteConflict(TenureError):
    """What is stored (a version, a state, a key, a holder) refuses the change; nothing was written."""

    default_message = "the change conflicts with what is stored"


class QuotaError(TenureError):
    """A quota refuses a reservation, or is not there."""

    default_message = "quota error"


class FlowError(TenureError):
    """A flow cannot run, a run failed, or a run cannot be found or moved on as asked."""

    default_message = "flow error"


class StoreError(TenureError):
    """The database cannot be used: its URL, its availability, or its schema version."""

    default_message = "store error"


# --- declaring kinds ---------------------------------------------------------------------------


class InvalidKind(KindError):
    """A kind declaration breaks a rule; ``problems`` lists every rule it breaks."""

    default_message = "invalid kind declaration"

    def __init__(self, kind: str, problems: Sequence[str]) -> None:
        self.kind = kind
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"kind {kind!r} is invalid:\n{lines}")


class InvalidSteps(KindError):
    """Steps given to the engine do not fit their kinds; ``problems`` lists every one."""

    default_message = "invalid steps"

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid steps:\n" + "\n".join(f"  - {p}" for p in self.problems))


class DuplicateKind(KindError):
    """A store was given a second, different kind under a name it already has a kind for."""

    default_message = "duplicate kind"

    def __init__(self, kind: str, version: int | None = None) -> None:
        self.kind = kind
        self.version = version
        which = f"{kind!r}" if version is None else f"{kind!r} version {version}"
        super().__init__(f"a different kind named {which} is already registered with this store")


class ModuleNotImportable(KindError):
    """A module named to load kinds (or steps) from cannot be imported; ``reason`` is Python's."""

    default_message = "module cannot be imported"

    def __init__(self, module: str, reason: str, *, what: str = "kinds") -> None:
        self.module = module
        self.reason = reason
        #: What the module was imported for: ``kinds`` or ``steps``.
        self.what = what
        super().__init__(f"cannot import {what} from {module!r}: {reason}")


class NoKindFound(KindError):
    """A module imported for kinds defines none (or not the one ``module:name`` asks for)."""

    default_message = "no kind found"

    def __init__(self, module: str, name: str | None = None) -> None:
        self.module = module
        self.name = name
        if name is None:
            super().__init__(f"module {module!r} defines no Kind at top level")
        else:
            super().__init__(f"{f'{module}:{name}'!r} is not a Kind (module {module!r} has no kind named {name!r})")


class UnknownKind(KindError):
    """A kind name that is not loaded; ``known`` lists the ones that are."""

    default_message = "unknown kind"

    def __init__(self, kind: str, known: Sequence[str], *, version: int | None = None) -> None:
        self.kind = kind
        self.known = tuple(known)
        self.version = version
        if version is None:
            super().__init__(f"unknown kind {kind!r}; known kinds: {_names(self.known)}")
        else:
            loaded = ", ".join(str(v) for v in self.known) or "none"
            super().__init__(f"version {version} of kind {kind!r} is not loaded; loaded versions: {loaded}")


class UnknownState(KindError):
    """A state name the kind does not declare; ``known`` lists the ones it does."""

    default_message = "unknown state"

    def __init__(self, kind: str, state: str, known: Sequence[str]) -> None:
        self.kind = kind
        self.state = state
        self.known = tuple(known)
        super().__init__(f"kind {kind!r} has no state {state!r}; its states are: {_names(self.known)}")


class UnknownEvent(KindError):
    """An event name the kind does not declare; ``known`` lists the ones it does."""

    default_message = "unknown event"

    def __init__(self, kind: str, event: str, known: Sequence[str]) -> None:
        self.kind = kind
        self.event = event
        self.known = tuple(known)
        super().__init__(f"kind {kind!r} has no event {event!r}; its events are: {_names(self.known)}")


# --- input -------------------------------------------------------------------------------------


class InvalidArgument(InputError):
    """An argument is outside what the operation accepts."""

    default_message = "invalid argument"

    def __init__(self, field: str, constraint: str, got: Any = None) -> None:
        self.field = field
        self.constraint = constraint
        self.got = got
        super().__init__(f"{field} {constraint}, got {got!r}")


class InvalidSpec(InputError):
    """A resource's spec does not match what its kind accepts."""

    default_message = "invalid spec"

    def __init__(self, kind: str, problems: Sequence[tuple[str, str]]) -> None:
        self.kind = kind
        self.problems = tuple(problems)
        detail = "; ".join(f"{field}: {constraint}" for field, constraint in self.problems)
        super().__init__(f"invalid spec for kind {kind!r}: {detail}")


class TooLarge(InputError):
    """A resource would keep more than it may: its spec, or its data after a write merged into it."""

    default_message = "too large to keep"

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.what = what
        self.size = size
        self.limit = limit
        super().__init__(f"{what} would be {size} bytes as JSON; a resource keeps at most {limit}")


class InvalidUsage(InputError):
    """A command line asks for something that cannot be done as given.

    Options that do not go together, a file it names that cannot be read, text that is not the JSON
    asked for: ``problem`` says which, and what would be accepted.
    """

    default_message = "invalid usage"

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


# --- resources ---------------------------------------------------------------------------------


class ResourceNotFound(TenureError):
    """No resource has this id."""

    default_message = "resource not found"

    def __init__(self, resource_id: str) -> None:
        self.resource_id = resource_id
        super().__init__(f"no resource with id {resource_id!r}")


class SubscriptionNotFound(TenureError):
    """No webhook subscription has this id."""

    default_message = "subscription not found"

    def __init__(self, subscription_id: str) -> None:
        self.subscription_id = subscription_id
        super().__init__(f"no subscription with id {subscription_id!r}")


# --- writes that what is stored refuses ----------------------------------------------------------


class TransitionNotAllowed(WriteConflict):
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


class Conflict(WriteConflict):
    """A compare-and-swap lost: the resource is not at the version the writer expected.

    ``recreated``: the resource the writer saw was deleted (pruned) and another created under its id
    since, whatever its version now.
    """

    default_message = "concurrent modification"
    #: Set on the instance (a fact) only when true: most conflicts are plain ones.
    recreated = False

    def __init__(
        self,
        *,
        resource_id: str,
        expected_version: int,
        actual_version: int,
        actual_state: str | None = None,
        recreated: bool = False,
    ) -> None:
        self.resource_id = resource_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        self.actual_state = actual_state
        where = f" (now in state {actual_state!r})" if actual_state else ""
        if recreated:
            self.recreated = True
            what = f"was deleted and created again since version {expected_version} was read: found version"
        else:
            what = f"was changed concurrently: expected version {expected_version}, found version"
        super().__init__(f"resource {resource_id} {what} {actual_version}{where}")


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


class AlreadyExists(WriteConflict):
    """Something was created with a key that is already taken."""

    default_message = "already exists"

    def __init__(self, what: str, key: str) -> None:
        self.what = what
        self.key = key
        super().__init__(f"a {what} with key {key!r} already exists; use another key or read the existing one")


class IdempotencyKeyReused(WriteConflict):
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


class NotSharable(WriteConflict):
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


class InUse(WriteConflict):
    """A resource's teardown was asked for while parties still use it (force teardown is the admin's way)."""

    default_message = "resource in use"

    def __init__(self, *, resource_id: str, event: str, parties: Sequence[str]) -> None:
        self.resource_id = resource_id
        #: The event that starts the kind's teardown.
        self.event = event
        #: The parties whose use has not expired.
        self.parties = tuple(parties)
        super().__init__(
            f"resource {resource_id} is in use by {_names(self.parties)}; event {event!r} tears it down and "
            f"waits until they release it or their use expires (set the desired state to wait for them, "
            f"or force the teardown with the admin scope)"
        )


class TeardownStarted(WriteConflict):
    """A party asked to use a resource that is being (or has been) torn down."""

    default_message = "teardown started"

    def __init__(self, *, resource_id: str, state: str, usable: Sequence[str]) -> None:
        self.resource_id = resource_id
        self.state = state
        #: The states in which parties may register.
        self.usable = tuple(usable)
        super().__init__(
            f"resource {resource_id} is in state {state!r}: it can no longer be used "
            f"(parties may register in: {_names(self.usable)})"
        )


class UseNotYours(WriteConflict):
    """A client tried to renew or release a use that another client registered."""

    default_message = "use registered by another client"

    def __init__(self, *, resource_id: str, party: str, owner: str | None, client: str | None) -> None:
        self.resource_id = resource_id
        self.party = party
        #: The client that registered the use.
        self.owner = owner
        #: The client that was refused.
        self.client = client
        super().__init__(
            f"party {party} on resource {resource_id} was registered by client {owner!r}; "
            f"client {client!r} may not renew or release it (only its owner or an admin may)"
        )


class RetryNotAllowed(WriteConflict):
    """A retry now was asked of a resource that has no step backing off: nothing to make due sooner.

    Only a resource in a work state, or a rest state on its way to a desired state, whose next
    attempt is scheduled later (after a failed attempt) can be retried now; ``reason`` says what is
    the case instead.
    """

    default_message = "retry now not allowed"

    def __init__(self, *, resource_id: str, kind: str, state: str, role: str, reason: str) -> None:
        self.resource_id = resource_id
        self.kind = kind
        self.state = state
        #: The state's role (work, wait, rest, final; unknown for a state the kind does not declare).
        self.role = role
        #: Why not: what is the case instead.
        self.reason = reason
        super().__init__(
            f"resource {resource_id} ({kind}) cannot be retried now: it is in state {state!r} (role: {role}) "
            f"and {reason}; retry now is accepted only for a resource in a work state, or a rest state on its "
            "way to a desired state, whose next attempt is scheduled later (backing off after a failed attempt)"
        )


# --- quotas ------------------------------------------------------------------------------------


class QuotaExceeded(QuotaError):
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


class QuotaNotFound(QuotaError):
    """A quota or reservation that does not exist."""

    default_message = "no such quota"

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"no such quota or reservation: {what}")


# --- flows -------------------------------------------------------------------------------------


class InvalidFlow(FlowError):
    """A flow or task declaration cannot run; ``problems`` lists why."""

    default_message = "invalid flow"

    def __init__(self, flow: str, problems: Sequence[str]) -> None:
        self.flow = flow
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"flow {flow!r} cannot run:\n{lines}")


class FlowFailed(FlowError):
    """A flow run ended without succeeding (reverted, or its revert failed)."""

    default_message = "flow failed"

    def __init__(self, flow: str, run_id: str, state: str, failures: Mapping[str, str]) -> None:
        self.flow = flow
        self.run_id = run_id
        self.state = state
        self.failures = dict(failures)
        detail = "; ".join(f"{task}: {why}" for task, why in self.failures.items()) or "no failure recorded"
        super().__init__(f"flow {flow!r} run {run_id} ended {state}: {detail}")


class FlowChanged(FlowError):
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


class FlowRunNotFound(FlowError):
    """No flow run has this id."""

    default_message = "flow run not found"

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no flow run with id {run_id!r}")


class FlowActionNotAllowed(FlowError):
    """An operator's action on a flow run (retry its revert, resolve it) does not fit the run's state."""

    default_message = "action not allowed in the flow run's state"

    def __init__(self, run_id: str, *, state: str, action: str, required: str) -> None:
        self.run_id = run_id
        self.state = state
        #: What was asked, as the message says it ("retry its revert", "be resolved").
        self.action = action
        #: The state the run must be in for it.
        self.required = required
        super().__init__(f"flow run {run_id} is {state}; only a {required} run can {action}")


# --- stores ------------------------------------------------------------------------------------


class InvalidDatabaseURL(StoreError):
    """A database URL that names no store tenure can open; the message lists the accepted forms."""

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
    """The database cannot be reached or did not answer; trying again later may succeed."""

    default_message = "database unavailable"

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"database {target} is unavailable: {reason}")


class SchemaNotMigrated(StoreError):
    """The database's schema is older than this tenure needs; ``tenure migrate`` brings it up."""

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
    """The database's schema is newer than this tenure knows; upgrade tenure."""

    default_message = "database schema is newer than this tenure"

    def __init__(self, target: str, current: int, known: int) -> None:
        self.target = target
        self.current = current
        self.known = known
        super().__init__(
            f"database {target} is at schema version {current}, newer than the {known} this version of "
            "tenure knows; upgrade tenure"
        )


# --- the HTTP service and its client ------------------------------------------------------------


class ServiceError(TenureError):
    """The HTTP service or its client: configuration, starting, a refused request, an unreachable server."""

    default_message = "the tenure service failed"


class ConfigError(ServiceError):
    """The service configuration is wrong (the message says where and what would be accepted)."""

    default_message = "invalid service configuration"


class ServerFailed(ServiceError):
    """The HTTP server could not start (the address is taken, say)."""

    default_message = "the HTTP server could not start"


class ApiError(ServiceError):
    """The server refused a request; the attributes are the problem document's members.

    ``extensions`` holds the document's other members (``resourceId``, ``state``, ``allowed``,
    ``expectedVersion``, ``errors``, ...), as the server sent them.
    """

    default_message = "the server refused the request"

    def __init__(
        self,
        status: int,
        type: str,
        title: str,
        detail: str,
        extensions: Mapping[str, Any] | None = None,
        *,
        instance: str | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.instance = instance
        self.extensions = dict(extensions or {})
        super().__init__(detail or title)

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, type={self.type!r}, detail={self.detail!r})"


class ServerUnreachable(ServiceError):
    """The server could not be reached, or did not answer in time."""

    default_message = "the tenure server cannot be reached"

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the tenure server at {url}: {reason}")
