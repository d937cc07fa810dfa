"""Rendering the dashboard's pages: one Jinja2 environment (autoescaped), filters, and safe headers.

Every value a page shows goes through Jinja2's autoescaping; the only markup inserted as it is
comes from :mod:`tenure.draw.svg`, which escapes every name it draws.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from tenure import __version__

_PACKAGE = "tenure.service.dashboard"

__all__ = ["STATIC", "asset", "page", "since", "static_response"]

#: What every page answers with: nothing inline runs, nothing loads from elsewhere, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

#: The static files the package ships, by name: (media type, bytes).
STATIC: dict[str, tuple[str, bytes]] = {
    name: (media, resources.files(_PACKAGE).joinpath("static", name).read_bytes())
    for name, media in (
        ("dashboard.css", "text/css; charset=utf-8"),
        ("dashboard.js", "text/javascript; charset=utf-8"),
    )
}
_HASHES = {name: hashlib.sha256(body).hexdigest()[:12] for name, (_, body) in STATIC.items()}


def asset(name: str) -> str:
    """The URL of a static file, with its content hash (so that a browser may cache it for long)."""
    return f"/ui/static/{name}?v={_HASHES[name]}"


def static_response(name: str, request: Request) -> Response:
    media, body = STATIC[name]
    etag = f'"{_HASHES[name]}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media, headers=headers)


def since(when: datetime | None, now: datetime) -> str:
    """``when`` relative to ``now``, in the largest whole unit: "3m ago", "in 2h", "now"."""
    if when is None:
        return ""
    seconds = (when - now).total_seconds()
    amount = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if amount >= size:
            text = f"{int(amount // size)}{unit}"
            return f"in {text}" if seconds > 0 else f"{text} ago"
    return "now"


def _stamp(when: datetime | None) -> str:
    return "" if when is None else when.isoformat(timespec="seconds")


def _as_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _short_json(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_env = Environment(
    loader=PackageLoader(_PACKAGE, "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["stamp"] = _stamp
_env.filters["as_json"] = _as_json
_env.filters["short_json"] = _short_json
_env.globals["asset"] = asset
_env.globals["version"] = __version__


def page(template: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """``template`` rendered with ``context`` (escaped), with the dashboard's security headers."""
    body = _env.get_template(template).render({"section": "", "who": None, **context})
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})
