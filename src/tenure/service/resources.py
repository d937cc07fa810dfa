"""``/v1/resources``: create, read, list, fire events, set the desired state, read the history.

Every write is the store's compare-and-swap: ``If-Match`` pins the version a client last saw (412
when the resource has moved on), and an event the state does not allow is answered 409 with the
state and the events it allows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from tenure.errors import Conflict, IdempotencyKeyReused, InvalidArgument, ResourceNotFound
from tenure.service.auth import Caller, require
from tenure.service.bodies import JSONRoute
from tenure.service.config import Principal, Scope
from tenure.service.idempotency import scoped
from tenure.service.models import (
    CreateIn,
    DesiredStateIn,
    EventIn,
    FlowRunOut,
    JournalOut,
    JournalPage,
    ResourceOut,
    ResourcePage,
    WaitOut,
)
from tenure.service.pages import PAGE_BYTES, PageBudget
from tenure.service.problems import (
    ETAG_HEADER,
    INVALID_IF_MATCH,
    LINK_HEADER,
    LOCATION_HEADER,
    PRECONDITION_FAILED,
    REPLAYED_HEADER,
    UNKNOWN_STATE,
    ProblemError,
    problem_responses,
    success,
)
from tenure.service.snapshots import Snapshots
from tenure.store.asyncreads import AsyncReads
from tenure.store.model import Resource, new_id
from tenure.store.protocol import Store as StoreProtocol

__all__ = [
    "IfMatch",
    "Store",
    "Writer",
    "answer",
    "check_id",
    "etag",
    "fetch",
    "parse_if_match",
    "precondition",
    "represent",
    "router",
]

router = APIRouter(prefix="/v1/resources", tags=["resources"], route_class=JSONRoute)

Writer = Annotated[Principal, Depends(require(Scope.WRITE))]

_ETAG = re.compile(r'(W/)?"(\d{1,18})"')
#: What a weak validator in If-Match pins: a version no resource ever has (versions start at 1). RFC 9110
#: compares If-Match strongly, and a weak entity tag never matches strongly, not even the current one.
_NEVER = 0
_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
#: The most one page of resources carries, as JSON (the last resource that fits ends it).


#: Resources read from the store per query while filling a page.
_READ_AT_ONCE = 50
#: The longest Idempotency-Key the store keeps (it takes 1 to 255 characters).
MAX_IDEMPOTENCY_KEY = 255

IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='The version the change is based on, as the ETag header gave it ("3"); 412 if it moved on.',
    ),
]


async def store_of(request: Request) -> StoreProtocol:  # a coroutine: no thread hand-off for a lookup
    store: StoreProtocol = request.app.state.store
    return store


Store = Annotated[StoreProtocol, Depends(store_of)]

JSON = "application/json"


def etag(r: Resource) -> str:
    return f'"{r.version}"'


def represent(store: StoreProtocol, r: Resource) -> ResourceOut:
    """``r`` as the API shows it: its live uses and teardown summary on the store's clock."""
    return ResourceOut.seen_in(store, r)


def answer(request: Request, response: Response, store: StoreProtocol, r: Resource) -> Response:
    """``r`` as the answer: its JSON, its version as the ETag, and what the endpoint set on ``response``.

    The JSON is made here, once: handed back as a model, it would be validated again against the
    route's model and encoded twice over. The status is the one the endpoint set on ``response``,
    else the route's own.
    """
    headers = dict(response.headers)
    headers["ETag"] = etag(r)
    shown = represent(store, r)
    body = shown.model_dump_json().encode()
    snapshots: Snapshots = request.app.state.snapshots
    # The client may pin its next event to this answer. Kept only when the answer shows all of the
    # resource (no secret data redacted, no expired use left out), so that its size is the resource's.
    if len(shown.in_use_by) == len(r.in_use_by) and shown.data == r.data:
        snapshots.keep(r, len(body))
    status = response.status_code or getattr(request.scope.get("route"), "status_code", None) or 200
    return Response(body, status_code=status, headers=headers, media_type=JSON)


def write_pinned(
    request: Request,
    response: Response,
    resource_id: str,
    if_match: str | None,
    metric: str,
    write: Callable[[int | None], Resource],
) -> Response:
    """``write(pinned)`` of a resource, pinned by ``If-Match``, answered with the resource it made.

    412 when the pinned version is stale; the write is counted under ``metric``.
    """
    pinned = parse_if_match(if_match)
    request.state.resource_id = resource_id
    check_id(resource_id)
    try:
        r = write(pinned)
    except Conflict as exc:
        raise precondition(exc, pinned) from None
    request.app.state.metrics.count_write(metric)
    request.state.resource = r
    return answer(request, response, request.app.state.store, r)


async def fetch_on_loop(request: Request, resource_id: str) -> Resource:
    """The resource, or 404, read by the event loop itself (see :mod:`tenure.store.asyncreads`)."""
    check_id(resource_id)
    reads: AsyncReads = request.app.state.reads
    found = await reads.find(resource_id)
    if found is None:
        raise ResourceNotFound(resource_id)
    return found


def parse_if_match(header: str | None) -> int | None:
    """The version an ``If-Match`` header pins, or None (no header, or ``*``: any version).

    A weak validator (``W/"3"``) pins a version no resource has: it never matches (RFC 9110, 13.1.1).
    """
    if header is None:
        return None
    text = header.strip()
    if text == "*":
        return None
    match = _ETAG.fullmatch(text)
    if match is None:
        raise ProblemError(
            INVALID_IF_MATCH,
            f'If-Match must be one version ETag as the ETag header gives it, such as "3", or *; got {text[:100]!r}',
            {"if_match": text[:100]},
        )
    return _NEVER if match.group(1) else int(match.group(2))


def precondition(exc: Conflict, pinned: int | None) -> Exception:
    """A lost compare-and-swap as the answer: 412 when If-Match pinned the version, else the conflict."""
    if pinned is None:
        return exc
    named = "a weak ETag, which If-Match never matches," if pinned == _NEVER else f"{pinned}"
    return ProblemError(
        PRECONDITION_FAILED,
        f"resource {exc.resource_id} is at version {exc.actual_version}, not {named} as If-Match says; "
        "read it again and retry with its current (strong) ETag",
        exc.facts(),
        {"ETag": f'"{exc.actual_version}"'},
    )


def check_state_known(store: StoreProtocol, state: str) -> None:
    """Refuse a state no loaded kind has, in any loaded version (resources of older versions still list)."""
    if not any(k.has_state(state) for name in store.kinds for k in store.kind_versions(name)):
        raise ProblemError(
            UNKNOWN_STATE,
            f"no loaded kind has a state {state[:100]!r}; give a kind, or a state one of "
            f"{', '.join(sorted(store.kinds))} has",
            {"state": state[:100]},
        )


def _matches_any(header: str, r: Resource) -> bool:
    """Whether an If-None-Match list names the resource's current version (weak comparison)."""
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag(r) in tags


def check_id(resource_id: str) -> None:
    """Answer 404 for an id no resource can have, without asking the database."""
    # No resource has such an id: answer 404 without asking the database.
    if not re.fullmatch(_ID_PATTERN, resource_id):
        raise ResourceNotFound(resource_id[:100])


def fetch(store: StoreProtocol, resource_id: str) -> Resource:
    """The resource, or 404."""
    check_id(resource_id)
    return store.get(resource_id)


@router.post(
    "",
    status_code=201,
    response_model=ResourceOut,
    summary="Create a resource",
    responses={
        201: success("The resource, created", {**ETAG_HEADER, **LOCATION_HEADER}),
        200: success(
            "The resource an earlier request with the same Idempotency-Key created",
            {**ETAG_HEADER, **LOCATION_HEADER, **REPLAYED_HEADER},
        ),
        **problem_responses(400, 401, 403, 409, 413, 415, 422, 503),
    },
)
def create_resource(
    body: CreateIn,
    request: Request,
    response: Response,
    store: Store,
    caller: Writer,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=MAX_IDEMPOTENCY_KEY,
            description=f"1 to {MAX_IDEMPOTENCY_KEY} characters; send the same key again to get the same resource",
        ),
    ] = None,
) -> Response:
    # The id is chosen here so that a replay (the store hands back what the key made before) can be
    # told from a creation whatever the timing of concurrent requests with the same key.
    fresh = new_id()
    try:
        r = store.create(
            body.kind,
            body.spec,
            sharable=body.sharable,
            idempotency_key=scoped(caller.client, idempotency_key, MAX_IDEMPOTENCY_KEY),
            actor=caller.client,
            resource_id=fresh,
        )
    except IdempotencyKeyReused as exc:
        # Named as the client sent it, not as stored in its namespace.
        raise IdempotencyKeyReused(str(idempotency_key), exc.resource_id, exc.difference) from None
    response.headers["Location"] = f"/v1/resources/{r.id}"
    if r.id == fresh:
        request.app.state.metrics.count_write("create")
    else:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    request.state.resource = r
    return answer(request, response, store, r)


@router.get(
    "",
    response_model=ResourcePage,
    summary="List resources, oldest first, a page at a time",
    responses={200: success(headers=LINK_HEADER), **problem_responses(401, 403, 422, 503)},
    description=(
        "A page holds at most `limit` resources and at most "
        f"{PAGE_BYTES // (1024 * 1024)} MiB of them as JSON: a page that would grow past that ends "
        "early, and its `next` (and `Link: rel=next`) continues after the last resource it holds. A "
        "single resource bigger than that still comes, alone on its page."
    ),
)
def list_resources(
    store: Store,
    caller: Caller,
    response: Response,
    request: Request,
    kind: Annotated[str | None, Query(max_length=100)] = None,
    state: Annotated[list[str] | None, Query(max_length=100, description="Repeat for several states")] = None,
    desired_state: Annotated[str | None, Query(alias="desiredState", max_length=100)] = None,
    party: Annotated[str | None, Query(max_length=500, description="Resources this party is using")] = None,
    after: Annotated[str | None, Query(max_length=64, description="The 'next' of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    data: Annotated[
        str | None,
        Query(
            max_length=300,
            description="KEY:TEXT: resources whose data holds TEXT under the top-level KEY (e.g. ended:failed)",
        ),
    ] = None,
) -> ResourcePage:
    if kind is None:
        for name in state or []:
            check_state_known(store, name)
    filters: dict[str, Any] = {}
    if data is not None:
        key, colon, text = data.partition(":")
        if not colon:
            raise InvalidArgument("data", "must be KEY:TEXT, such as ended:failed", data)
        filters["data"] = (key, text)
    if desired_state is not None:
        filters["desired_state"] = desired_state
    if party is not None:
        filters["party"] = party
    items: list[ResourceOut] = []
    budget = PageBudget()
    cursor = after
    nxt: str | None = None
    while True:
        # Read a little at a time, so that a page cut short by the byte budget was not read whole.
        page = store.list(kind=kind, state=state, after=cursor, limit=min(limit - len(items), _READ_AT_ONCE), **filters)
        for r in page.items:
            out = represent(store, r)
            if not budget.fits(out):
                nxt = items[-1].id
                break
            items.append(out)
        else:
            cursor = page.next_after
            if cursor is not None and len(items) < limit:
                continue
            nxt = cursor
        break
    if nxt is not None:
        link = request.url.include_query_params(after=nxt)
        response.headers["Link"] = f'<{link.path}?{link.query}>; rel="next"'
    return ResourcePage(items=items, next=nxt)


@router.get(
    "/{resource_id}",
    response_model=ResourceOut,
    summary="Get a resource (ETag: its version)",
    responses={
        200: success(headers=ETAG_HEADER),
        304: success("Not modified: If-None-Match names the current version", ETAG_HEADER),
        **problem_responses(401, 403, 404, 503),
    },
)
async def get_resource(
    resource_id: str,
    store: Store,
    caller: Caller,
    response: Response,
    request: Request,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    request.state.resource_id = resource_id
    r = await fetch_on_loop(request, resource_id)
    request.state.resource = r
    if if_none_match is not None and _matches_any(if_none_match, r):
        return Response(status_code=304, headers={"ETag": etag(r)})
    return answer(request, response, store, r)


@router.post(
    "/{resource_id}/events",
    response_model=ResourceOut,
    summary="Fire an event (409 if the state does not allow it; 412 if If-Match is stale)",
    responses={
        200: success(headers=ETAG_HEADER),
        **problem_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 503),
    },
)
def fire_event(
    resource_id: str,
    body: EventIn,
    store: Store,
    caller: Writer,
    response: Response,
    request: Request,
    if_match: IfMatch = None,
) -> Response:
    snapshots: Snapshots = request.app.state.snapshots

    def fire(pinned: int | None) -> Resource:
        def planned_from(resource: Resource | str) -> Resource:
            return store.fire(resource, body.event, expected_version=pinned, data=body.data, actor=caller.client)

        # Pinned to an answer this process gave, the event needs no read of the row (tenure.service.snapshots).
        return snapshots.write(resource_id, pinned, planned_from)

    return write_pinned(request, response, resource_id, if_match, "event", fire)


@router.put(
    "/{resource_id}/desired-state",
    status_code=202,
    response_model=ResourceOut,
    summary="Set the state the resource should end up in; the engine gets it there",
    responses={
        202: success(headers=ETAG_HEADER),
        **problem_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 503),
    },
)
def set_desired_state(
    resource_id: str,
    body: DesiredStateIn,
    store: Store,
    caller: Writer,
    response: Response,
    request: Request,
    if_match: IfMatch = None,
) -> Response:
    def desire(pinned: int | None) -> Resource:
        return store.set_desired_state(
            resource_id, body.desired_state, expected_version=pinned, actor=caller.client, client=caller.client
        )

    return write_pinned(request, response, resource_id, if_match, "desired", desire)


@router.get(
    "/{resource_id}/journal",
    response_model=JournalPage,
    summary="A resource's history, oldest first",
    description=(
        f"A page holds at most `limit` entries and at most {PAGE_BYTES // (1024 * 1024)} MiB of them as "
        "JSON: a page that would grow past that ends early, and `nextAfterVersion` continues after its "
        "last entry."
    ),
    responses=problem_responses(401, 403, 404, 422, 503),
)
def read_journal(
    resource_id: str,
    store: Store,
    caller: Caller,
    after_version: Annotated[int, Query(alias="afterVersion", ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JournalPage:
    fetch(store, resource_id)
    entries = store.journal(resource_id, after_version=after_version, limit=limit)
    items: list[JournalOut] = []
    budget = PageBudget()
    for entry in entries:
        out = JournalOut.of(entry)
        if not budget.fits(out):
            return JournalPage(items=items, next_after_version=items[-1].version)
        items.append(out)
    return JournalPage(items=items, next_after_version=entries[-1].version if len(entries) == limit else None)


@router.get(
    "/{resource_id}/waits",
    response_model=list[WaitOut],
    summary="What the resource waits for: awaited keys, deadline, answers so far",
    responses=problem_responses(401, 403, 404, 503),
)
def read_waits(resource_id: str, store: Store, caller: Caller) -> list[WaitOut]:
    fetch(store, resource_id)
    return [WaitOut.of(w) for w in store.pending_waits(resource_id)]


@router.get(
    "/{resource_id}/flows",
    response_model=list[FlowRunOut],
    summary="The resource's flow runs with each task's checkpoint, oldest first, a page at a time",
    responses={200: success(headers=LINK_HEADER), **problem_responses(401, 403, 404, 422, 503)},
    description=(
        f"At most `limit` runs and at most {PAGE_BYTES // (1024 * 1024)} MiB of them as JSON: a page that "
        "would grow past that ends early, and its `Link: rel=next` continues after its last run."
    ),
)
def read_flows(
    resource_id: str,
    store: Store,
    caller: Caller,
    request: Request,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=64, description="The last run of the previous page")] = None,
) -> list[FlowRunOut]:
    fetch(store, resource_id)
    runs: list[FlowRunOut] = []
    budget = PageBudget()
    found = store.flow_runs(resource_id=resource_id, limit=limit, after=after)
    for run in found:
        loaded = store.load_flow_run(run.id)
        out = FlowRunOut.of(run, loaded[1] if loaded is not None else [])
        if not budget.fits(out):
            break
        runs.append(out)
    if runs and (len(runs) < len(found) or len(found) == limit):
        link = request.url.include_query_params(after=runs[-1].id)
        response.headers["Link"] = f'<{link.path}?{link.query}>; rel="next"'
    return runs
