"""The dashboard's buttons that write: fire an event, and (admins) retry a step backing off now and
force a shared resource's teardown.

Each button posts a form here. The form must carry the session's CSRF token and come from this site's
page (Origin / Sec-Fetch-Site), the session's principal must hold the scope the public API asks for
(write for events, admin for retry now and force teardown), and the write is the same store call the API makes,
pinned to the version the page showed (the API's If-Match). What went wrong comes back as the
resource's page with a readable message and the API's status: 403 refused, 409 not allowed now,
412 the resource moved on since the page was read; what went right redirects to the page.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from tenure.errors import (
    Conflict,
    InputError,
    KindError,
    ResourceNotFound,
    StoreError,
    TenureError,
    TransitionNotAllowed,
    WriteConflict,
)
from tenure.service.config import Principal, Scope
from tenure.service.dashboard.pages import resource_view
from tenure.service.dashboard.render import page
from tenure.service.dashboard.sessions import csrf_ok, principal
from tenure.service.resources import check_id
from tenure.store.model import Resource
from tenure.store.protocol import Store

__all__ = ["router"]

router = APIRouter()

#: The largest form body taken (an event name, a version, a token and a short reason fit easily).
_MAX_FORM = 8192
#: The longest reason a force teardown records.
_MAX_REASON = 500


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_FORM:
        return {}
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    return {name: values[0] for name, values in fields.items() if values}


def _version(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() and len(text) <= 18 else None


def _refused(who: Principal, message: str) -> Response:
    return page("error.html", 403, message=message, who=who.client, section="resources")


def _check(request: Request, form: dict[str, str], scope: Scope, doing: str, resource_id: str) -> Principal | Response:
    """The principal allowed to do this, or the answer refusing it (no session: sign in, then the page)."""
    who = principal(request)
    if who is None:
        return RedirectResponse(f"/ui/login?next={quote(f'/ui/resources/{resource_id}', safe='')}", status_code=303)
    if not csrf_ok(request, form.get("csrf")):
        return _refused(
            who,
            "This form was refused: it did not carry this session's CSRF token or came from another site's page. "
            "Reload the resource's page and press the button again.",
        )
    if not who.allows(scope):
        granted = ", ".join(sorted(s.value for s in who.scopes))
        return _refused(
            who, f"Client {who.client!r} may not {doing}: that needs the {scope.value!r} scope "
            f"(its token grants: {granted}).",
        )  # fmt: skip
    return who


def _write(
    request: Request, who: Principal, resource_id: str, pinned: int | None, what: str, write: Callable[[], Resource]
) -> Response:
    """Make the write; the resource's page again on success (a redirect), or with what went wrong."""
    try:
        check_id(resource_id)
        if pinned is None:
            raise InputError("the form did not say which version of the resource its page showed")
        write()
    except Conflict as exc:
        where = f", now in state {exc.actual_state!r}" if exc.actual_state else ""
        message = (
            f"Not done: {what} was asked of version {exc.expected_version}, but the resource has moved on to "
            f"version {exc.actual_version}{where} since this page was read. Look at it again below and "
            "press a button again if it still applies."
        )
        return resource_view(request, who, resource_id, 412, message)
    except TransitionNotAllowed as exc:
        allowed = ", ".join(exc.allowed) or "none"
        why = f" ({exc.reason})" if exc.reason else ""
        message = (
            f"Not done: {exc.event!r} is not allowed in state {exc.state!r}{why}. Events allowed there: {allowed}."
        )
        return resource_view(request, who, resource_id, 409, message)
    except WriteConflict as exc:
        return resource_view(request, who, resource_id, 409, f"Not done: {exc}")
    except ResourceNotFound as exc:
        return page("error.html", 404, message=str(exc), who=who.client, section="resources")
    except StoreError as exc:
        return page("error.html", 503, message=f"The database did not answer: {exc}", who=who.client, section="")
    except (InputError, KindError) as exc:
        return resource_view(request, who, resource_id, 422, f"Not done: {exc}")
    except TenureError as exc:
        return resource_view(request, who, resource_id, 409, f"Not done: {exc}")
    return RedirectResponse(f"/ui/resources/{resource_id}", status_code=303)


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


@router.post("/ui/resources/{resource_id}/events")
async def fire(resource_id: str, request: Request) -> Response:
    """Fire the form's ``event`` as the session's principal, pinned to the form's ``version``."""
    form = await _form(request)
    who = _check(request, form, Scope.WRITE, "fire events", resource_id)
    if isinstance(who, Response):
        return who
    event = form.get("event", "")[:100]
    pinned = _version(form.get("version"))
    store = _store(request)

    def write() -> Resource:
        if not event:
            raise InputError("the form named no event")
        r = store.fire(resource_id, event, expected_version=pinned, actor=who.client)
        request.app.state.metrics.count_write("event")
        return r

    return _write(request, who, resource_id, pinned, f"{event!r}", write)


@router.post("/ui/resources/{resource_id}/teardown")
async def force_teardown(resource_id: str, request: Request) -> Response:
    """Tear the resource down whoever still uses it (admin), pinned to the form's ``version``."""
    form = await _form(request)
    who = _check(request, form, Scope.ADMIN, "force a teardown", resource_id)
    if isinstance(who, Response):
        return who
    reason = form.get("reason", "").strip()[:_MAX_REASON] or None
    pinned = _version(form.get("version"))
    store = _store(request)

    def write() -> Resource:
        r = store.force_teardown(resource_id, actor=who.client, reason=reason, expected_version=pinned)
        request.app.state.metrics.count_write("force")
        return r

    return _write(request, who, resource_id, pinned, "the force teardown", write)


@router.post("/ui/resources/{resource_id}/retry")
async def retry_now(resource_id: str, request: Request) -> Response:
    """Make the next attempt of a step backing off due now (admin), pinned to the form's ``version``."""
    form = await _form(request)
    who = _check(request, form, Scope.ADMIN, "retry a step now", resource_id)
    if isinstance(who, Response):
        return who
    pinned = _version(form.get("version"))
    store = _store(request)

    def write() -> Resource:
        r = store.retry_now(resource_id, expected_version=pinned, actor=who.client)
        request.app.state.metrics.count_write("retry")
        return r

    return _write(request, who, resource_id, pinned, "retry now", write)
