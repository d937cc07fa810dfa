"""Errors as ``application/problem+json`` documents (RFC 9457).

Every refusal the service makes is a problem document: a ``type`` per error class, a ``title``, the
HTTP ``status``, a ``detail`` sentence saying what was wrong and what would be accepted, and the
error's facts (resource id, state, event, allowed events, expected and actual version, ...) as
extension members. Nothing about the server's internals (no stack trace) ever reaches the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from starlette.requests import Request
from starlette.responses import JSONResponse

from tenure import errors as e

__all__ = [
    "ETAG_HEADER",
    "LINK_HEADER",
    "LOCATION_HEADER",
    "PROBLEM_JSON",
    "REPLAYED_HEADER",
    "Problem",
    "ProblemError",
    "ProblemModel",
    "problem_for",
    "problem_response",
    "problem_responses",
    "success",
]

log = logging.getLogger("tenure.service")

PROBLEM_JSON = "application/problem+json"
_TYPE = "urn:tenure:problem:"


class ProblemModel(BaseModel):
    """A problem document, as the OpenAPI document describes it."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str


@dataclass(frozen=True, slots=True)
class Problem:
    """One kind of refusal: its status and type slug."""

    status: int
    slug: str
    title: str

    @property
    def type(self) -> str:
        return _TYPE + self.slug


class ProblemError(Exception):
    """Raised by a route to answer with a problem document."""

    def __init__(
        self,
        problem: Problem,
        detail: str,
        facts: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail
        self.facts = dict(facts or {})
        self.headers = dict(headers or {})


BAD_REQUEST = Problem(400, "bad-request", "The request is malformed")
MALFORMED_JSON = Problem(400, "malformed-json", "The body is not valid JSON")
TOO_DEEP = Problem(400, "too-deeply-nested", "The body nests deeper than accepted")
INVALID_IF_MATCH = Problem(400, "invalid-if-match", "The If-Match header is not a version ETag")
INVALID_CURSOR = Problem(400, "invalid-cursor", "The position or page cursor is not valid")
UNAUTHORIZED = Problem(401, "unauthorized", "Authentication is required")
FORBIDDEN = Problem(403, "forbidden", "The token does not grant this")
CALLBACK_REFUSED = Problem(403, "callback-token-refused", "The callback token is not valid for this resource")
CALLBACK_WRONG_CALLER = Problem(403, "callback-caller-refused", "Only the party assigned to the resource may answer")
NOT_FOUND = Problem(404, "not-found", "No such thing")
RESOURCE_NOT_FOUND = Problem(404, "resource-not-found", "No such resource")
KIND_NOT_FOUND = Problem(404, "kind-not-found", "No such kind")
SUBSCRIPTION_NOT_FOUND = Problem(404, "subscription-not-found", "No such subscription")
METHOD_NOT_ALLOWED = Problem(405, "method-not-allowed", "The method is not allowed here")
NOT_ACCEPTABLE = Problem(406, "not-acceptable", "No representation matches the Accept header")
TRANSITION_NOT_ALLOWED = Problem(409, "transition-not-allowed", "The event is not allowed in the resource's state")
CONFLICT = Problem(409, "conflict", "The resource was changed concurrently")
ALREADY_EXISTS = Problem(409, "already-exists", "It already exists")
CALLBACK_SUPERSEDED = Problem(409, "callback-superseded", "The attempt the callback answers has been superseded")
CALLBACK_CONFLICT = Problem(409, "callback-conflict", "A different answer was already recorded")
QUOTA_EXCEEDED = Problem(409, "quota-exceeded", "A quota would be exceeded")
NOT_SHARABLE = Problem(409, "not-sharable", "The resource is not sharable and another party uses it")
IN_USE = Problem(409, "in-use", "Parties still use the resource")
TEARDOWN_STARTED = Problem(409, "teardown-started", "The resource's teardown has started; it can no longer be used")
RETRY_NOT_ALLOWED = Problem(409, "retry-not-allowed", "The resource has no step backing off to retry now")
USE_NOT_YOURS = Problem(403, "use-not-yours", "Another client registered this party's use")
PARTY_NOT_FOUND = Problem(404, "party-not-found", "The party does not use the resource")
PRECONDITION_FAILED = Problem(412, "precondition-failed", "The resource is not at the version If-Match names")
TOO_LARGE = Problem(413, "body-too-large", "The request body is too large")
STORED_TOO_LARGE = Problem(413, "too-large", "The resource would keep more than it may")
TOO_MANY_FAILURES = Problem(429, "too-many-failed-authentications", "Too many tokens that name no client")
HEADERS_TOO_LARGE = Problem(431, "headers-too-large", "The request's header fields are too large")
UNSUPPORTED_MEDIA = Problem(415, "unsupported-media-type", "The body is not sent in a media type accepted here")
INVALID_REQUEST = Problem(422, "invalid-request", "The request does not match what this endpoint accepts")
INVALID_SPEC = Problem(422, "invalid-spec", "The spec does not match what the kind accepts")
INVALID_ARGUMENT = Problem(422, "invalid-argument", "An argument is outside what is accepted")
UNKNOWN_KIND = Problem(422, "unknown-kind", "The kind is not loaded")
UNKNOWN_STATE = Problem(422, "unknown-state", "The kind has no such state")
UNKNOWN_EVENT = Problem(422, "unknown-event", "The kind has no such event")
IDEMPOTENCY_KEY_REUSED = Problem(422, "idempotency-key-reused", "The Idempotency-Key was used for another request")
CALLBACK_NOT_AWAITED = Problem(422, "callback-not-awaited", "The callback answers a key that is not awaited")
INTERNAL = Problem(500, "internal-error", "The server failed")
UNAVAILABLE = Problem(503, "unavailable", "The database is unavailable; try again shortly")
NOT_READY = Problem(503, "not-ready", "The service is not ready")

#: Most specific class first: the first match wins.
_BY_CLASS: Sequence[tuple[type[e.TenureError], Problem]] = (
    (e.ResourceNotFound, RESOURCE_NOT_FOUND),
    (e.SubscriptionNotFound, SUBSCRIPTION_NOT_FOUND),
    (e.TransitionNotAllowed, TRANSITION_NOT_ALLOWED),
    (e.Conflict, CONFLICT),
    (e.IdempotencyKeyReused, IDEMPOTENCY_KEY_REUSED),
    (e.AlreadyExists, ALREADY_EXISTS),
    (e.InvalidSpec, INVALID_SPEC),
    (e.TooLarge, STORED_TOO_LARGE),
    (e.InvalidArgument, INVALID_ARGUMENT),
    (e.UnknownKind, UNKNOWN_KIND),
    (e.UnknownState, UNKNOWN_STATE),
    (e.UnknownEvent, UNKNOWN_EVENT),
    (e.QuotaExceeded, QUOTA_EXCEEDED),
    (e.NotSharable, NOT_SHARABLE),
    (e.InUse, IN_USE),
    (e.TeardownStarted, TEARDOWN_STARTED),
    (e.UseNotYours, USE_NOT_YOURS),
    (e.RetryNotAllowed, RETRY_NOT_ALLOWED),
    (e.StoreUnavailable, UNAVAILABLE),
    (e.SchemaNotMigrated, NOT_READY),
    (e.SchemaTooNew, NOT_READY),
)

#: Seconds a client should wait before retrying when the database is unavailable.
RETRY_AFTER = 5


def problem_for(exc: e.TenureError) -> Problem:
    for cls, problem in _BY_CLASS:
        if isinstance(exc, cls):
            return problem
    return Problem(422, _slug(type(exc).__name__), exc.default_message.capitalize())


def _slug(name: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in name).lstrip("-")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def problem_response(
    problem: Problem,
    detail: str,
    facts: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    request: Request | None = None,
) -> JSONResponse:
    """A problem document response; ``facts`` become camelCase extension members."""
    body: dict[str, Any] = {"type": problem.type, "title": problem.title, "status": problem.status, "detail": detail}
    for key, value in (facts or {}).items():
        name = to_camel(key)
        if name not in body:
            body[name] = _jsonable(value)
    if request is not None:
        body.setdefault("instance", request.url.path)
    out = dict(headers or {})
    if problem.status == 503:
        out.setdefault("Retry-After", str(RETRY_AFTER))
    return JSONResponse(body, status_code=problem.status, headers=out, media_type=PROBLEM_JSON)


def tenure_error_response(request: Request, exc: e.TenureError) -> JSONResponse:
    problem = problem_for(exc)
    if problem.status >= 500:
        # The database's address and the driver's words stay in the log, not in the answer.
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return problem_response(problem, f"{problem.title} (retry after {RETRY_AFTER} s)", request=request)
    facts = exc.facts()
    if isinstance(exc, e.InvalidSpec):
        # What the README promises: each refused field with the constraint it breaks.
        facts.pop("problems", None)
        facts["errors"] = [{"field": field, "constraint": constraint} for field, constraint in exc.problems]
    return problem_response(problem, str(exc), facts, request=request)


_DESCRIBED = {
    400: "Malformed request (bad JSON, a bad If-Match or cursor)",
    401: "No valid client token",
    403: "The token lacks the scope, the callback token is refused, or another client's party is named",
    404: "No such resource, kind, subscription, party or endpoint",
    405: "Method not allowed",
    409: "The state does not allow it, or a concurrent change won",
    412: "If-Match names a version the resource has moved past",
    413: "The body is too large, or the resource would keep more than it may",
    415: "The body is not JSON",
    422: "The request does not match what is accepted",
    429: "Too many tokens that name no client from this address, or from all (see Retry-After); nothing was checked",
    431: "The request's header fields are too large",
    500: "The server failed (logged; no details given)",
    503: "The database is unavailable or not migrated (see Retry-After)",
}

#: Response headers, as the OpenAPI document describes them.
ETAG_HEADER = {
    "ETag": {"description": 'The resource\'s version as a strong entity tag ("3")', "schema": {"type": "string"}}
}
LOCATION_HEADER = {"Location": {"description": "The resource's URL", "schema": {"type": "string"}}}
REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "true: an earlier request with the same Idempotency-Key created the resource",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
LINK_HEADER = {
    "Link": {"description": 'The next page, as rel="next" (absent on the last page)', "schema": {"type": "string"}}
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer (RFC 6750)", "schema": {"type": "string"}}},
    412: ETAG_HEADER,
    429: {
        "Retry-After": {
            "description": "Seconds until a token from this address is checked again",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
    503: {
        "Retry-After": {
            "description": "Seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers an operation can give, for the OpenAPI document.

    431 and 500 can be any operation's: header fields are refused before routing, and a bug is a bug.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, 431, 500}):
        entry: dict[str, Any] = {
            "description": _DESCRIBED[status],
            "model": ProblemModel,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemModel"}}},
        }
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        out[status] = entry
    return out


def success(description: str | None = None, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A success answer's entry for an operation's ``responses``: its description and headers."""
    entry: dict[str, Any] = {}
    if description is not None:
        entry["description"] = description
    if headers:
        entry["headers"] = dict(headers)
    return entry
