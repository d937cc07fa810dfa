"""The dashboard's pages: resources (a filtered keyset page), one resource, the kinds; and the live feed.

Pages are rendered on the server from the store protocol; the resource page carries the buttons that
write (:mod:`.actions` answers them) for a session that may. Each carries the change-feed
position it was read at, so that its script's watch (``/ui/watch``, the API's stream behind the
session cookie) misses no change made after the page was read.

The resources page filters with the store's ``list`` filters only: a kind, a state, a role (the
states with that role in the kinds shown) and one search text, which is an exact resource id (the
page opens it), ``KEY:TEXT`` (the data key holds that text), or a party URI (``tag:``, ``urn:`` or
``scheme://``: the resources that party uses). Pages are keyset pages; the resource page's journal
too (by version, one page read at a time).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Header, Query, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from tenure.errors import ResourceNotFound, StoreError, TenureError, UnknownKind
from tenure.service import watch as api_watch
from tenure.service.config import Principal, Scope
from tenure.service.dashboard import views
from tenure.service.dashboard.diagram import marked_svg
from tenure.service.dashboard.render import STATIC, page, since, static_response
from tenure.service.dashboard.sessions import csrf_token, login_redirect, principal
from tenure.service.problems import UNAUTHORIZED, ProblemError
from tenure.service.resources import check_id
from tenure.store.model import JournalEntry, Resource
from tenure.store.protocol import Store
from tenure.store.write import retry_now_refusal

__all__ = ["resource_view", "router"]

router = APIRouter()

#: Resources per page unless ``limit`` says otherwise, and the most it may say.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: Store pages read at most to fill one page of resources when the role filter drops some rows.
MAX_READS = 5
#: Journal entries per page of a resource's journal.
JOURNAL_PAGE = 50
#: The latest journal entries read to draw the path a resource took on its diagram.
PATH_READ = 500
#: What the search box takes, as its placeholder and help say.
SEARCH_HELP = (
    "an exact resource id (opens it); KEY:TEXT (its data key holds that text, e.g. ended:failed); "
    "or a party URI: tag:…, urn:… or scheme://… (the resources it uses)"
)

Text = Annotated[str | None, Query(max_length=300)]

#: A URI with an authority (``https://…``).
_SCHEME_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


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


@dataclass(frozen=True, slots=True)
class Search:
    """What the search text means: a party URI, a data filter, or (neither) the id of a resource."""

    party: str | None = None
    data: tuple[str, str] | None = None
    resource_id: str | None = None


def parse_search(text: str) -> Search:
    """``tag:``/``urn:``/``scheme://`` is a party; ``KEY:TEXT`` a data filter; anything else an id."""
    if text.lower().startswith(("tag:", "urn:")) or _SCHEME_URI.match(text):
        return Search(party=text)
    data = _data_filter(text)
    return Search(resource_id=text) if data is None else Search(data=data)


def _data_filter(text: str) -> tuple[str, str] | None:
    """``KEY:TEXT`` as (key, text); None without a colon."""
    key, colon, value = text.partition(":")
    return (key, value) if colon else None


def _may_be_id(text: str) -> bool:
    """Whether some resource could have ``text`` as its id (as the API accepts ids)."""
    try:
        check_id(text)
    except ResourceNotFound:
        return False
    return True


@router.get("/ui/resources")
def resources_page(
    request: Request,
    kind: Text = None,
    state: Text = None,
    role: Annotated[str | None, Query(max_length=20)] = None,
    q: Text = None,
    data: Text = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
) -> Response:
    """The resources, a keyset page at a time, filtered by kind, state, role and a search text.

    ``data=KEY:TEXT`` (a data filter, as older links give it) is taken as the search text.
    """
    who = principal(request)
    if who is None:
        return login_redirect(request)
    store = _store(request)
    kind, state, role, q, data = kind or None, state or None, role or None, (q or "").strip() or None, data or None
    legacy = q is None and data is not None
    if legacy:
        q = data
    filters = {"kind": kind or "", "state": state or "", "role": role or "", "q": q or ""}
    note: str | None = None
    found: list[Resource] = []
    next_after: str | None = None
    try:
        position = store.latest_position()
        if kind is not None and kind not in store.kinds:
            raise UnknownKind(kind, sorted(store.kinds))
        if role is not None and role not in views.ROLES:
            raise ValueError(f"the role must be one of {', '.join(views.ROLES)}; got {role!r}")
        if q is None:
            search = Search()
        elif legacy:
            data_filter = _data_filter(q)
            if data_filter is None:
                raise ValueError("the data filter must be KEY:TEXT, such as ended:failed")
            search = Search(data=data_filter)
        else:
            if _may_be_id(q) and store.find(q) is not None:
                return RedirectResponse(f"/ui/resources/{quote(q, safe='')}", status_code=303)
            search = parse_search(q)
        states, note = _states_of_role(store, kind, state, role)
        if search.resource_id is not None:
            note = f"No resource has the id {search.resource_id!r}. The search box takes {SEARCH_HELP}."
        if note is None:
            found, next_after = _page(
                store, kind=kind, states=states, role=role, search=search, after=after, limit=limit
            )
            if not found and next_after is not None:
                note = (
                    f"None of the resources read for this page is in a {role} state of its own kind version "
                    "(their state has another role there); the next page goes on after them."
                )
        now = store.now()
        rows = [views.resource_row(store, r, now) for r in found]
        counts = views.counts_by_kind(store, [kind] if kind is not None else None)
    except (TenureError, ValueError) as exc:
        if isinstance(exc, StoreError):
            return _failed(exc, who.client)
        return page(
            "resources.html", 422, who=who.client, section="resources", message=str(exc), note=None, rows=[],
            counts={}, filters=filters, kinds=sorted(store.kinds), states=_states(store, kind), roles=views.ROLES,
            search_help=SEARCH_HELP, next_url=None, first_url=None, watch_url=None, tail=False, limit=limit,
            near=views.NEAR_DEADLINE,
        )  # fmt: skip
    shown = {k: v for k, v in filters.items() if v}
    watch = {"after": position, **({"kind": kind} if kind else {})}
    return page(
        "resources.html",
        who=who.client,
        section="resources",
        message=None,
        note=note,
        rows=rows,
        counts=counts,
        filters=filters,
        kinds=sorted(store.kinds),
        states=_states(store, kind),
        roles=views.ROLES,
        search_help=SEARCH_HELP,
        next_url=_url("/ui/resources", shown, after=next_after, limit=limit) if next_after else None,
        first_url=_url("/ui/resources", shown, limit=limit) if after else None,
        watch_url=_url("/ui/watch", watch),
        tail=next_after is None,
        limit=limit,
        near=views.NEAR_DEADLINE,
    )


def _states_of_role(
    store: Store, kind: str | None, state: str | None, role: str | None
) -> tuple[str | list[str] | None, str | None]:
    """The states to list (None: any) and, when no state can have ``role``, the note saying why."""
    if role is None:
        return state, None
    within = views.role_states(store, kind, role)
    where = f"kind {kind}" if kind else "any loaded kind"
    if state is None:
        return within, None if within else f"No state of {where} is a {role} state."
    if state in within:
        return [state], None
    return [], f"State {state!r} is not a {role} state in {where}."


def _page(
    store: Store,
    *,
    kind: str | None,
    states: str | list[str] | None,
    role: str | None,
    search: Search,
    after: str | None,
    limit: int,
) -> tuple[list[Resource], str | None]:
    """One page of resources, and where the next starts (None: this is the last).

    With a role, ``states`` are the states of that role (in the kinds shown), and the store's list
    reads only them. A state's name may have another role in another kind (or kind version) than in
    one where the role filter found it: rows whose own kind gives their state another role are dropped,
    and further store pages read to fill this one, :data:`MAX_READS` at most (the page may then come
    short, even empty; its next link goes on from the last resource read).
    """
    items: list[Resource] = []
    cursor = after
    for _ in range(MAX_READS):
        got = store.list(
            kind=kind, state=states, party=search.party, data=search.data, after=cursor, limit=limit - len(items)
        )
        items += [r for r in got.items if role is None or views.role_of(views.kind_of(store, r), r.state) == role]
        cursor = got.next_after
        if cursor is None or len(items) >= limit:
            break
    return items, cursor


def _states(store: Store, kind: str | None) -> list[str]:
    names = [kind] if kind in store.kinds else sorted(store.kinds)
    return sorted({s.name for n in names if n for k in store.kind_versions(n) for s in k.states})


def _url(path: str, params: dict[str, str], **more: object) -> str:
    query = urlencode({**params, **{k: str(v) for k, v in more.items() if v is not None and v != PAGE_SIZE}})
    return f"{path}?{query}" if query else path


@router.get("/ui/resources/{resource_id}")
def resource_page(
    resource_id: str, request: Request, before: Annotated[int | None, Query(ge=1, le=10**15)] = None
) -> Response:
    who = principal(request)
    if who is None:
        return login_redirect(request)
    return resource_view(request, who, resource_id, before=before)


def resource_view(
    request: Request,
    who: Principal,
    resource_id: str,
    status: int = 200,
    notice: str | None = None,
    *,
    before: int | None = None,
) -> Response:
    """One resource's page for ``who``, with its write buttons if ``who`` may press them, and ``notice``
    (what became of a button pressed, shown above them) answered with ``status``.

    The journal shows one page: the latest :data:`JOURNAL_PAGE` entries, or with ``before`` those just
    before that version (keyset by version), with links to older and newer pages.
    """
    store = _store(request)
    try:
        check_id(resource_id)
        position = store.latest_position()
        r = store.get(resource_id)
        now = store.now()
        kind = views.kind_of(store, r)
        top = r.version if before is None else min(before - 1, r.version)
        entries, recent = _journal_page(store, r, top)
        visited, moves = views.path_of(recent)
        waits = store.pending_waits(r.id)
        flows = views.flows_of(store, r.id)
        counts = views.counts_by_kind(store, [r.kind]).get(r.kind, []) if r.kind in store.kinds else []
    except TenureError as exc:
        return _failed(exc, who.client)
    held, failing = views.badges(counts)
    svg = (
        None
        if kind is None
        else marked_svg(kind, current=r.state, visited=visited, moves=moves, counts=held, failing=failing)
    )
    parties = sorted(r.in_use_by.items())
    csrf = csrf_token(request)
    writes = csrf is not None and who.allows(Scope.WRITE)
    admin = writes and who.allows(Scope.ADMIN)
    here = f"/ui/resources/{quote(r.id, safe='')}"
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
        journal=entries,
        older_url=f"{here}?before={entries[0].version}" if entries and entries[0].version > 1 else None,
        newer_url=_newer(here, entries, top, r.version),
        journal_gaps=any(b.version - a.version > 1 for a, b in itertools.pairwise(entries)),
        path_partial=bool(recent) and recent[0].version > 1,
        path_read=PATH_READ,
        waits=waits,
        parties=[(party, use, use.live(now), since(use.expires_at, now)) for party, use in parties],
        flows=flows,
        since=since,
        watch_url=_url("/ui/watch", {"resource": r.id, "after": position}),
        notice=notice,
        csrf=csrf or "",
        events=views.client_events(kind, r.state) if writes else [],
        force=admin and views.force_teardown_allowed(kind, r.state),
        retry=admin and kind is not None and retry_now_refusal(kind, r, now) is None,
        writes=writes,
    )


def _journal_page(store: Store, r: Resource, top: int) -> tuple[list[JournalEntry], list[JournalEntry]]:
    """The page of ``r``'s journal ending at version ``top`` (its latest :data:`JOURNAL_PAGE` entries up to
    there), and the latest :data:`PATH_READ` entries (the path drawn on the diagram).

    Both are keyset reads by version: the page comes out of the latest entries when they hold it (one
    read in all), else from the window of versions just below ``top``. Finished resources may have had
    the middle of their history pruned: a window found empty gives way to the oldest entries below it,
    and the page's links go on from the versions it shows.
    """
    start = max(0, r.version - PATH_READ)
    recent = store.journal(r.id, after_version=start, limit=PATH_READ)
    held = [e for e in recent if e.version <= top]
    if start == 0 or len(held) >= JOURNAL_PAGE:
        return held[-JOURNAL_PAGE:], recent
    low = max(0, top - JOURNAL_PAGE)
    entries = [e for e in store.journal(r.id, after_version=low, limit=JOURNAL_PAGE) if e.version <= top]
    if not entries and low > 0:
        entries = [e for e in store.journal(r.id, after_version=0, limit=JOURNAL_PAGE) if e.version <= top]
    return entries, recent


def _newer(here: str, entries: list[JournalEntry], top: int, version: int) -> str | None:
    """The page after the one ending at version ``top`` (the latest page has none): the next versions up,
    or the latest page (also for a page that found no entries, before version 1 or in a pruned stretch)."""
    if top >= version:
        return None
    if not entries:
        return here
    last = entries[-1].version
    return f"{here}?before={last + JOURNAL_PAGE + 1}" if last + JOURNAL_PAGE < version else here


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
        held, failing = views.badges(here)
        drawings = [
            (k.version, marked_svg(k, occupied=set(held), counts=held, failing=failing))
            for k in reversed(store.kind_versions(name))
        ]
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
