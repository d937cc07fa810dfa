"""Sharing a resource over HTTP: the parties using it, a merge patch of ``inUseBy``, and force teardown.

Two ways to say that a party uses a resource, both one journaled compare-and-swap in the store:

* ``PATCH /v1/resources/{id}`` with ``Content-Type: application/merge-patch+json`` (RFC 7396), as
  seed 002 proposes: ``{"inUseBy": {"tag:example.org,2026:ci/42": {"ttlSeconds": 600}}}`` registers
  or renews, ``{"inUseBy": {"tag:...": null}}`` releases, and ``desiredState`` may be set with them.
  The whole patch is one write; without ``If-Match`` it is applied to the newest version, so two
  clients patching different parties at once never overwrite each other.
* the ``parties`` sub-resource, for clients that prefer plain verbs: ``GET .../parties``,
  ``PUT .../parties/{party}`` (201 registered, 200 renewed), ``DELETE .../parties/{party}`` (204).
  The party URI is the rest of the path, percent-encoded (``tag:example.org,2026:ci%2F42``; a ``/``
  may also be sent as it is, while ``?``, ``#`` and ``%`` must be encoded).

A use belongs to the client (token) that registered it: another client renewing or releasing it is
refused with 403 unless it holds the admin scope. ``POST .../teardown`` with ``{"force": true}``
(admin only) tears the resource down whoever still uses it; the journal entry names the parties.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Body, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tenure.errors import Conflict, InvalidArgument
from tenure.rules import MAX_ERROR_TEXT
from tenure.service.auth import Admin, Caller
from tenure.service.bodies import JSONRoute
from tenure.service.config import Scope
from tenure.service.models import In, Out, ResourceOut
from tenure.service.problems import (
    ETAG_HEADER,
    INVALID_ARGUMENT,
    INVALID_REQUEST,
    LOCATION_HEADER,
    PARTY_NOT_FOUND,
    ProblemError,
    problem_responses,
    success,
)
from tenure.service.resources import (
    IfMatch,
    Store,
    Writer,
    answer,
    check_id,
    etag,
    fetch,
    parse_if_match,
    precondition,
    write_pinned,
)
from tenure.store.desired import desire_pending
from tenure.store.model import Resource, Use
from tenure.store.protocol import Store as StoreProtocol
from tenure.store.sharing import KEEP, Keep
from tenure.store.uses import check_party

__all__ = ["MERGE_PATCH", "ForceTeardownIn", "PartyIn", "PartyOut", "PatchIn", "router"]

router = APIRouter(prefix="/v1/resources", tags=["sharing"], route_class=JSONRoute)

#: The media type of a PATCH body (RFC 7396).
MERGE_PATCH = "application/merge-patch+json"
#: The members a merge patch of a resource may carry.
PATCHABLE = ("inUseBy", "desiredState")

PartyPath = Annotated[
    str,
    Path(
        description="The party's URI, percent-encoded (tag:example.org,2026:ci%2F42); a '/' may also be sent "
        "as it is, '?', '#' and '%' must be encoded",
        examples=["tag:example.org,2026:ci%2F42"],
    ),
]


class PartyIn(In):
    """A registration or renewal: how long the use should last (absent or null: the provider's default)."""

    ttl_seconds: Annotated[int, Field(strict=True)] | None = None


class PartyOut(Out):
    """A party using a resource, the client that registered it, and until when."""

    party: str
    client: str | None
    registered_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, party: str, use: Use) -> PartyOut:
        return cls(party=party, client=use.client, registered_at=use.registered_at, expires_at=use.expires_at)


class PatchIn(BaseModel):
    """A JSON merge patch (RFC 7396) of a resource: only ``inUseBy`` and ``desiredState`` may be patched.

    ``inUseBy`` maps a party URI to ``{"ttlSeconds": n}`` (register or renew; ``{}`` takes the default
    time to live) or to null (release). ``desiredState`` is a state name, or null for no wish.
    """

    # Other members are kept (not refused by the model), so that the route refuses them naming what is
    # accepted; only the camelCase names are the members' names.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="allow")

    in_use_by: dict[str, PartyIn | None] | None = Field(
        default=None,
        description="party URI -> {ttlSeconds} to register or renew ({} for the default time to live), "
        "or null to release",
        examples=[{"tag:example.org,2026:ci/42": {"ttlSeconds": 600}}],
    )
    desired_state: str | None = Field(default=None, max_length=100, description="a state name, or null")


class ForceTeardownIn(In):
    """Tear the resource down now, whoever still uses it (admin only); ``reason`` goes to the journal."""

    force: Literal[True] = Field(description="Must be true: the teardown does not wait for the parties")
    reason: str | None = Field(default=None, max_length=MAX_ERROR_TEXT)


def _ttl(store: StoreProtocol, seconds: int | None, field: str) -> timedelta | None:
    """The asked time to live, refused (422, naming ``field`` and the maximum) beyond the provider's."""
    if seconds is None:
        return None
    try:
        # Beyond timedelta's range is beyond the policy's maximum too: the policy says so, in its words.
        return store.use_policy.ttl(timedelta(seconds=seconds) if abs(seconds) < 10**12 else timedelta.max, field=field)
    except InvalidArgument as exc:
        raise ProblemError(
            INVALID_ARGUMENT,
            f"{exc.field} {exc.constraint}, got {seconds}",
            {
                "field": exc.field,
                "constraint": exc.constraint,
                "got": seconds,
                "maximum": int(store.use_policy.max_ttl.total_seconds()),
            },
        ) from None


def _live(store: StoreProtocol, r: Resource) -> dict[str, Use]:
    return r.live_uses(store.now())


@router.patch(
    "/{resource_id}",
    response_model=ResourceOut,
    summary="Merge-patch a resource's inUseBy (register, renew, release parties) and desiredState",
    description=(
        "A JSON merge patch (RFC 7396), sent as `application/merge-patch+json`: "
        '`{"inUseBy": {"tag:example.org,2026:ci/42": {"ttlSeconds": 600}}}` registers or renews a party '
        '(`{}`: the default time to live), `{"inUseBy": {"tag:...": null}}` releases it, and '
        "`desiredState` sets (or with null clears) the state to end up in. The whole patch is one write. "
        "A use belongs to the client that registered it (403 for another, unless admin). Answers 202 "
        "when the patch set a desired state the engine still has to reach (a teardown waits for the "
        "parties still using the resource), else 200."
    ),
    responses={
        200: success("The resource, patched", ETAG_HEADER),
        202: success("The resource, patched; the engine works towards its desired state", ETAG_HEADER),
        **problem_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 503),
    },
)
def patch_resource(
    resource_id: str,
    body: Annotated[PatchIn, Body(media_type=MERGE_PATCH)],
    store: Store,
    caller: Writer,
    response: Response,
    request: Request,
    if_match: IfMatch = None,
) -> Response:
    pinned = parse_if_match(if_match)
    request.state.resource_id = resource_id
    check_id(resource_id)
    register, release = _uses_patch(store, body)
    desired: str | Keep | None = body.desired_state if "desired_state" in body.model_fields_set else KEEP
    if not register and not release and isinstance(desired, Keep):
        # An empty patch changes nothing (RFC 7396); If-Match still holds it to the version.
        r = fetch(store, resource_id)
        if pinned is not None and pinned != r.version:
            conflict = Conflict(resource_id=r.id, expected_version=pinned, actual_version=r.version)
            raise precondition(conflict, pinned)
    else:
        try:
            r = store.change_uses(
                resource_id,
                register=register,
                release=release,
                client=caller.client,
                admin=caller.allows(Scope.ADMIN),
                desired=desired,
                expected_version=pinned,
                actor=caller.client,
            )
        except Conflict as exc:
            raise precondition(exc, pinned) from None
        request.app.state.metrics.count_write("patch")
    if not isinstance(desired, Keep) and desire_pending(r):
        response.status_code = 202
    request.state.resource = r
    return answer(request, response, store, r)


def _uses_patch(store: StoreProtocol, body: PatchIn) -> tuple[dict[str, timedelta | None], list[str]]:
    """The parties to register (party -> ttl) and to release; any other member is refused (422)."""
    extra = sorted(body.model_extra or {})
    if extra:
        named = ", ".join(repr(m[:100]) for m in extra)
        raise ProblemError(
            INVALID_REQUEST,
            f"a merge patch of a resource may carry only {' and '.join(PATCHABLE)}; {named} cannot be patched",
            {"errors": [{"field": m[:100], "constraint": "cannot be patched"} for m in extra], "accepted": PATCHABLE},
        )
    if "in_use_by" in body.model_fields_set and body.in_use_by is None:
        raise ProblemError(
            INVALID_REQUEST,
            "inUseBy cannot be null (that would release every party at once); release parties by name: "
            '{"inUseBy": {"tag:example.org,2026:ci/42": null}}',
            {"errors": [{"field": "inUseBy", "constraint": "must be an object of party URI -> {ttlSeconds} or null"}]},
        )
    register: dict[str, timedelta | None] = {}
    release: list[str] = []
    for party, wanted in (body.in_use_by or {}).items():
        check_party(party)
        if wanted is None:
            release.append(party)
        else:
            register[party] = _ttl(store, wanted.ttl_seconds, f"inUseBy.{party[:100]}.ttlSeconds")
    return register, release


@router.get(
    "/{resource_id}/parties",
    response_model=list[PartyOut],
    summary="The parties using the resource (live uses only), by party URI",
    responses={200: success(headers=ETAG_HEADER), **problem_responses(401, 403, 404, 503)},
)
def list_parties(resource_id: str, store: Store, caller: Caller, response: Response) -> list[PartyOut]:
    r = fetch(store, resource_id)
    response.headers["ETag"] = etag(r)
    return [PartyOut.of(party, use) for party, use in sorted(_live(store, r).items())]


@router.put(
    "/{resource_id}/parties/{party:path}",
    response_model=PartyOut,
    summary="Register a party as using the resource, or renew its use (201 registered, 200 renewed)",
    description=(
        'The body `{"ttlSeconds": n}` (optional) asks for a time to live up to the provider\'s maximum; '
        "without it the default applies. Renewing counts from now, so a party may stay longer than the "
        "maximum by renewing. 409 when the resource is not sharable and another party uses it, or its "
        "teardown has started; 403 when another client registered this party (unless admin)."
    ),
    responses={
        200: success("The use, renewed", ETAG_HEADER),
        201: success("The use, registered", {**ETAG_HEADER, **LOCATION_HEADER}),
        **problem_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 503),
    },
)
def put_party(
    resource_id: str,
    party: PartyPath,
    store: Store,
    caller: Writer,
    response: Response,
    request: Request,
    body: PartyIn | None = None,
    if_match: IfMatch = None,
) -> PartyOut:
    pinned = parse_if_match(if_match)
    request.state.resource_id = resource_id
    check_party(party)
    ttl = _ttl(store, body.ttl_seconds if body is not None else None, "ttlSeconds")
    try:
        r = store.use(
            resource_id,
            party,
            ttl=ttl,
            client=caller.client,
            admin=caller.allows(Scope.ADMIN),
            expected_version=pinned,
        )
    except Conflict as exc:
        raise precondition(exc, pinned) from None
    request.app.state.metrics.count_write("use")
    request.state.resource = r
    use = r.in_use_by[party]
    response.headers["ETag"] = etag(r)
    # A use registered anew (first time, or after the last one expired) starts with the write that made it;
    # a renewal keeps the start of an earlier write. The answer tells them apart without reading first.
    if use.registered_at == r.updated_at:
        response.status_code = 201
        response.headers["Location"] = f"/v1/resources/{r.id}/parties/{quote(party, safe='')}"
    return PartyOut.of(party, use)


@router.delete(
    "/{resource_id}/parties/{party:path}",
    status_code=204,
    response_class=Response,
    summary="Release a party's use of the resource (the last one may start a waiting teardown)",
    responses={
        204: success("Released", ETAG_HEADER),
        **problem_responses(400, 401, 403, 404, 409, 412, 422, 503),
    },
)
def delete_party(
    resource_id: str,
    party: PartyPath,
    store: Store,
    caller: Writer,
    request: Request,
    if_match: IfMatch = None,
) -> Response:
    pinned = parse_if_match(if_match)
    request.state.resource_id = resource_id
    check_party(party)
    before = fetch(store, resource_id)
    live = _live(store, before)
    if party not in live:
        using = ", ".join(sorted(live)) or "none"
        raise ProblemError(
            PARTY_NOT_FOUND,
            f"party {party[:200]} does not use resource {before.id} (or its use expired); parties using it: {using}",
            {"resource_id": before.id, "party": party[:200], "parties": sorted(live)},
        )
    try:
        r = store.release_use(
            resource_id, party, client=caller.client, admin=caller.allows(Scope.ADMIN), expected_version=pinned
        )
    except Conflict as exc:
        raise precondition(exc, pinned) from None
    request.app.state.metrics.count_write("release")
    request.state.resource = r
    return Response(status_code=204, headers={"ETag": etag(r)})


@router.post(
    "/{resource_id}/teardown",
    status_code=202,
    response_model=ResourceOut,
    summary="Force the resource's teardown whoever still uses it (admin scope)",
    description=(
        'The body must say `{"force": true}`, with an optional `reason`. Every party still using the '
        "resource is dropped and named in the journal entry, with the reason; the engine tears the "
        "resource down. To tear down once the parties are gone, set `desiredState` instead."
    ),
    responses={
        202: success("The resource; its teardown is under way", ETAG_HEADER),
        **problem_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 503),
    },
)
def force_teardown(
    resource_id: str,
    body: ForceTeardownIn,
    store: Store,
    caller: Admin,
    response: Response,
    request: Request,
    if_match: IfMatch = None,
) -> Response:
    def force(pinned: int | None) -> Resource:
        return store.force_teardown(resource_id, actor=caller.client, reason=body.reason, expected_version=pinned)

    return write_pinned(request, response, resource_id, if_match, "force", force)
