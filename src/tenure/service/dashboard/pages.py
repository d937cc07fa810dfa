"""The dashboard's pages: resources (a filtered keyset page), one resource, the kinds; and the live feed.

Pages are rendered on the server from the store protocol; the resource page carries the buttons that
write (:mod:`.actions` answers them) for a session that may. Each carries the change-feed
position it was read at, so that its script's watch (``/ui/watch``, the API's stream behind the
session cookie) misses no change made after the page was read.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Query, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from tenure.errors import ResourceNotFound, StoreError, TenureError
from tenure.service import watch as api_watch
from tenure.service.config import Principal, Scope
from tenure.service.dashboard import views
from tenure.service.dashboard.diagram import marked_svg
from tenure.service.dashboard.render import STATIC, page, since, static_response
from tenure.service.dashboard.sessions import csrf_token, login_redirect, principal
from tenure.service.problems import UNAUTHORIZED, ProblemError
from tenure.service.resources import check_id
from tenure.store.protocol import Store

__all__ = ["resource_view", "router"]

router = APIRouter()

#: Resources per page unless ``limit`` says otherwise, and the most it may say.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: Journal entries read for a resource's path, and the latest of them shown in its table.
JOURNAL_READ = 2000
JOURNAL_SHOWN = 200

Text = Annotated[str | None, Query(max_length=300)]


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _failed(exc: TenureError, who: str) -> Response:
    status = 404 if isinstance(exc, ResourceNotFound) else 503 if isinstance(exc, StoreError) else 422
    return page("error.html", status, message=str(exc), who=who, section="")


@router.get("/")
def root(request: Request) -> Response:
    """A browser (it accepts HTML) goes to the dashboard; an API client gets the 404 problem naming /v1."""
    if "text/html" not in request.headers.get("accept", ""):
        raise StarletteHTTPException(404)
    return RedirectResponse("/ui/resources", status_code=307)


@router.get("/ui")
@router.get("/ui/")
def home() -> Response:
    return RedirectResponse("/ui/resources", status_code=307)


@router.get("/ui/static/{name}")
def static(name: str, request: Request) -> Response:
    if name not in STATIC:
        return Response("no such file", status_code=404, media_type="text/plain")
    return static_response(name, request)


@router.get("/ui/resources")
def resources_page(
    request: Request,
    kind: Text = None,
    state: Text = None,
    data: Text = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
) -> Response:
    who = principal(request)
    if who is None:
        return login_redirect(request)
    store = _store(request)
    kind, state, data = kind or None, state or None, data or None
    filters = {"kind": kind or "", "state": state or "", "data": data or ""}
    try:
        position = store.latest_position()
        if data is not None and ":" not in data:
            raise ValueError("the data filter must be KEY:TEXT, such as ended:failed")
        key, _, text = (data or "").partition(":")
        found = store.list(
            kind=kind, state=state, after=after, limit=limit, data=(key, text) if data is not None else None
        )
        now = store.now()
        rows = [views.resource_row(store, r, now) for r in found.items]
        counts = views.counts_by_kind(store, [kind] if kind is not None and kind in store.kinds else None)
    except (TenureError, ValueError) as exc:
        if isinstance(exc, StoreError):
            return _failed(exc, who.client)
        return page(
            "resources.html", 422, who=who.client, section="resources", message=str(exc), rows=[],
            counts={}, filters=filters, kinds=sorted(store.kinds), states=_states(store, kind),
            next_url=None, first_url=None, watch_url=None, tail=False, limit=limit,
        )  # fmt: skip
    shown = {k: v for k, v in filters.items() if v}
    watch = {"after": position, **({"kind": kind} if kind else {})}
    return page(
        "resources.html",
        who=who.client,
        section="resources",
        message=None,
        rows=rows,
        counts=counts,
        filters=filters,
        kinds=sorted(store.kinds),
        states=_states(store, kind),
        next_url=_url("/ui/resources", shown, after=found.next_after, limit=limit) if found.next_after else None,
        first_url=_url("/ui/resources", shown, limit=limit) if after else None,
        watch_url=_url("/ui/watch", watch),
        tail=found.next_after is None,
        limit=limit,
    )


def _states(store: Store, kind: str | None) -> list[str]:
    names = [kind] if kind in store.kinds else sorted(store.kinds)
    return sorted({s.name for n in names if n for k in store.kind_versions(n) for s in k.states})


def _url(path: str, params: dict[str, str], **more: object) -> str:
    query = urlencode({**params, **{k: str(v) for k, v in more.items() if v is not None and v != PAGE_SIZE}})
    return f"{path}?{query}" if query else path


@router.get("/ui/resources/{resource_id}")
def resource_page(resource_id: str, request: Request) -> Response:
    who = principal(request)
    if who is None:
        return login_redirect(request)
    return resource_view(request, who, resource_id)


def resource_view(
    request: Request, who: Principal, resource_id: str, status: int = 200, notice: str | None = None
) -> Response:
    """One resource's page for ``who``, with its write buttons if ``who`` may press them, and ``notice``
    (what became of a button pressed, shown above them) answered with ``status``."""
    store = _store(request)
    try:
        check_id(resource_id)
        position = store.latest_position()
        r = store.get(resource_id)
        now = store.now()
        kind = views.kind_of(store, r)
        entries = store.journal(r.id, limit=JOURNAL_READ)
        visited, moves = views.path_of(entries)
        waits = store.pending_waits(r.id)
        flows = views.flows_of(store, r.id)
    except TenureError as exc:
        return _failed(exc, who.client)
    svg = None if kind is None else marked_svg(kind, current=r.state, visited=visited, moves=moves)
    parties = sorted(r.in_use_by.items())
    csrf = csrf_token(request)
    writes = csrf is not None and who.allows(Scope.WRITE)
    return page(
        "resource.html",
        status,
        who=who.client,
        section="resources",
        r=r,
        # The kind's secret data (a callback token a data plane holds) is shown redacted, as by the API.
        data=dict(r.data) if kind is None else kind.shown_data(r.data),
        row=views.resource_row(store, r, now),
        now=now,
        svg=svg,
        journal=entries[-JOURNAL_SHOWN:],
        journal_total=len(entries),
        journal_capped=len(entries) == JOURNAL_READ,
        waits=waits,
        parties=[(party, use, use.live(now), since(use.expires_at, now)) for party, use in parties],
        flows=flows,
        since=since,
        watch_url=_url("/ui/watch", {"resource": r.id, "after": position}),
        notice=notice,
        csrf=csrf or "",
        events=views.client_events(kind, r.state) if writes else [],
        force=writes and who.allows(Scope.ADMIN) and views.force_teardown_allowed(kind, r.state),
        writes=writes,
    )


@router.get("/ui/kinds")
def kinds_page(request: Request) -> Response:
    who = principal(request)
    if who is None:
        return login_redirect(request)
    store = _store(request)
    try:
        position = store.latest_position()
        counts = views.counts_by_kind(store)
    except TenureError as exc:
        return _failed(exc, who.client)
    shown = []
    for name in sorted(store.kinds):
        here = counts.get(name, [])
        occupied = {c.state for c in here}
        drawings = [(k.version, marked_svg(k, occupied=occupied)) for k in reversed(store.kind_versions(name))]
        shown.append((store.kinds[name], drawings, here))
    return page(
        "kinds.html", who=who.client, section="kinds", kinds=shown, watch_url=_url("/ui/watch", {"after": position})
    )


@router.get("/ui/watch")
async def watch(
    request: Request,
    kind: Annotated[str | None, Query(max_length=100)] = None,
    resource: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[str | None, Query(max_length=100)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=100)] = None,
) -> Response:
    """The API's change stream (``/v1/watch``) for a signed-in browser: the session cookie is its credential."""
    who = principal(request)
    if who is None:
        raise ProblemError(UNAUTHORIZED, "sign in at /ui/login first (the session cookie is missing or expired)")
    return await api_watch.watch(
        request,
        _store(request),
        who,
        kind=kind,
        resource=resource,
        state=None,
        after=after,
        last_event_id=last_event_id,
    )
