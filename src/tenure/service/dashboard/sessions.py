"""Signing in to the dashboard: a bearer token once, then a session cookie.

The cookie holds a random session id (never the token); the server maps its sha-256 to the
principal the token named, in memory, until the session expires or the user signs out. The cookie is
HttpOnly, SameSite=Strict (a page of another site cannot make the browser send it), Secure when the
request came over https (or from the page of an https ``public_url``, as behind a proxy that
terminates TLS), and scoped to ``/ui``. With authentication off every page opens directly.

Each session also holds a random CSRF token that every form which writes carries in a hidden field
(:func:`csrf_token`, checked by :func:`csrf_ok`); with authentication off the app holds one token
for every browser. A page of another site can neither read it nor make the browser send it.

Every token checked here, the form's or a bearer token's on a page, goes through the app's limiter
of failed token checks (:mod:`tenure.service.limiter`, shared with the API's bearer tokens): after
too many tokens that name no client from one address (or from all together) within a window, the
form answers 429 with ``Retry-After`` and checks nothing, and a page asked with a bearer token the
API's 429 problem. A session cookie is not a token check: signed-in browsers are not slowed down.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from tenure.service.config import ANONYMOUS, Principal, Scope, ServiceConfig
from tenure.service.dashboard.render import page
from tenure.service.limiter import app_object, authenticate, client_address, limiter_of

__all__ = [
    "COOKIE",
    "SESSION_SECONDS",
    "Sessions",
    "csrf_ok",
    "csrf_token",
    "login_redirect",
    "principal",
    "router",
    "same_origin",
    "sessions_of",
]

router = APIRouter()

#: The session cookie's name.
COOKIE = "tenure_session"
#: How long a session lasts after signing in (it does not slide: sign in again after that).
SESSION_SECONDS = 8 * 3600
#: The most live sessions kept; signing in beyond that drops the oldest.
MAX_SESSIONS = 10_000
#: The longest token the form takes (tokens are short; a huge body is refused before this anyway).
_MAX_TOKEN = 4096


@dataclass(frozen=True, slots=True)
class _Session:
    principal: Principal
    expires: float
    csrf: str


class Sessions:
    """Live sessions by the sha-256 of their id, in memory (a restart signs everyone out)."""

    def __init__(self, ttl: float = SESSION_SECONDS) -> None:
        self.ttl = ttl
        self._by_hash: dict[str, _Session] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _hash(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def open(self, who: Principal) -> str:
        """A new session for ``who``; returns its id (for the cookie only)."""
        session_id = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            for key in [k for k, s in self._by_hash.items() if s.expires <= now]:
                del self._by_hash[key]
            while len(self._by_hash) >= MAX_SESSIONS:
                del self._by_hash[next(iter(self._by_hash))]
            self._by_hash[self._hash(session_id)] = _Session(who, now + self.ttl, secrets.token_urlsafe(32))
        return session_id

    def get(self, session_id: str | None) -> Principal | None:
        found = self.lookup(session_id)
        return None if found is None else found.principal

    def csrf(self, session_id: str | None) -> str | None:
        """The CSRF token of a live session (None: no such session)."""
        found = self.lookup(session_id)
        return None if found is None else found.csrf

    def lookup(self, session_id: str | None) -> _Session | None:
        if not session_id or len(session_id) > 100:
            return None
        key = self._hash(session_id)
        with self._lock:
            found = self._by_hash.get(key)
            if found is None:
                return None
            if found.expires <= time.monotonic():
                del self._by_hash[key]
                return None
            return found

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._by_hash.pop(self._hash(session_id), None)


def sessions_of(request: Request) -> Sessions:
    """The app's sessions (made on first use, kept on the app's state)."""
    return app_object(request, "dashboard_sessions", Sessions)


def _config(request: Request) -> ServiceConfig:
    config: ServiceConfig = request.app.state.config
    return config


def principal(request: Request) -> Principal | None:
    """Who is looking: anyone when auth is off, else a session's principal or a bearer token's (None: nobody).

    A bearer token is checked through the limiter: while its address has failed too often the API's
    429 problem is raised instead (:func:`tenure.service.limiter.authenticate`).
    """
    config = _config(request)
    if not config.auth:
        who: Principal | None = ANONYMOUS
    else:
        who = sessions_of(request).get(request.cookies.get(COOKIE))
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if who is None and scheme.lower() == "bearer" and token.strip():
            who = authenticate(request, config, token.strip())
    if who is None or not who.allows(Scope.READ):
        return None
    request.state.client = who.client
    return who


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path of this site, never another site."""
    if target and target.startswith("/ui/") and not target.startswith("/ui/login") and "\\" not in target:
        return target
    return "/ui/resources"


def login_redirect(request: Request) -> RedirectResponse:
    """To the sign-in form, coming back here afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?next={quote(here, safe='')}", status_code=303)


def csrf_token(request: Request) -> str | None:
    """The token a write form of this browser must carry (None: no session, so no form may write)."""
    if not _config(request).auth:
        return app_object(request, "dashboard_open_csrf", lambda: secrets.token_urlsafe(32))
    return sessions_of(request).csrf(request.cookies.get(COOKIE))


def csrf_ok(request: Request, sent: str | None) -> bool:
    """Whether a posted form carries this browser's CSRF token and came from this site's page."""
    wanted = csrf_token(request)
    if wanted is None or not sent or not same_origin(request):
        return False
    return secrets.compare_digest(sent.encode(), wanted.encode())


def same_origin(request: Request) -> bool:
    """Whether a form post came from this site's own page (browsers say where a post comes from).

    This site is the address the request was sent to, or the configured ``public_url``: the server
    takes no forwarded headers, so behind a proxy that terminates TLS the request itself says http.
    """
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin in (f"{request.url.scheme}://{request.url.netloc}", _public_origin(request))


def _public_origin(request: Request) -> str | None:
    """The origin (scheme://host[:port]) of the configured ``public_url``, if any."""
    url = _config(request).public_url
    parts = urlsplit(url) if url else None
    return f"{parts.scheme}://{parts.netloc}" if parts is not None and parts.scheme and parts.netloc else None


def _secure(request: Request) -> bool:
    """Whether the browser reached this page over https: directly, or at an https ``public_url`` it came from."""
    public = _public_origin(request)
    came_from = request.headers.get("origin")
    return request.url.scheme == "https" or (
        public is not None and public.startswith("https://") and came_from == public
    )


@router.get("/ui/login")
def login_form(request: Request, next: str | None = None) -> Response:
    if not _config(request).auth:
        return RedirectResponse(_safe_next(next), status_code=303)
    return page("login.html", next=_safe_next(next), message=None, who=None)


@router.post("/ui/login")
async def login(request: Request) -> Response:
    config = _config(request)
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
    target = _safe_next(form.get("next", [""])[0])
    if not config.auth:
        return RedirectResponse(target, status_code=303)
    if not same_origin(request):
        message = "This sign-in came from another site's page and was refused; sign in from this page."
        return page("login.html", 403, next=target, message=message, who=None)
    limiter, address = limiter_of(request), client_address(request)
    refused = limiter.refusal(address)
    if refused is not None:
        headers = {"Retry-After": str(refused.seconds)}
        return page("login.html", 429, headers, next=target, message=refused.message, who=None)
    token = (form.get("token") or [""])[0].strip()
    found = config.authenticate(token) if 0 < len(token) <= _MAX_TOKEN else None
    if found is None:
        if token:  # an empty form guesses nothing
            limiter.failed(address, token[:_MAX_TOKEN])
        message = "That token is not valid: paste a client token from the service's configuration."
        return page("login.html", 401, next=target, message=message, who=None)
    limiter.succeeded(address)
    if not found.allows(Scope.READ):
        granted = ", ".join(sorted(s.value for s in found.scopes))
        message = f"Client {found.client!r} may not read (its token grants: {granted}); use a token with read."
        return page("login.html", 403, next=target, message=message, who=None)
    session_id = sessions_of(request).open(found)
    cookie = f"{COOKIE}={session_id}; Path=/ui; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Strict"
    if _secure(request):
        cookie += "; Secure"
    response = RedirectResponse(target, status_code=303)
    response.headers["Set-Cookie"] = cookie
    return response


@router.post("/ui/logout")
def logout(request: Request) -> Response:
    if same_origin(request):
        sessions_of(request).close(request.cookies.get(COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.headers["Set-Cookie"] = f"{COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict"
    return response
