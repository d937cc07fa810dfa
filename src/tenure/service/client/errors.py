"""What the client raises: a refusal from the server, or no server to answer.

A refusal is an ``application/problem+json`` document (RFC 9457); :func:`problem_error` reads one
into an :class:`ApiError`, and stands in for an error answer that is not one (a proxy's HTML page,
say). A network failure or a timeout is a :class:`ServerUnreachable` naming the server's URL. No
message built here includes the client's token.
"""

from __future__ import annotations

from typing import Any, Final

import httpx

from tenure.errors import ApiError, ServerUnreachable

__all__ = ["ApiError", "ServerUnreachable", "problem_error", "unreachable_reason"]

#: The members every problem document has; the rest are extension members (RFC 9457).
_PROBLEM_MEMBERS: Final = frozenset({"type", "title", "status", "detail", "instance"})


def problem_error(response: httpx.Response) -> ApiError:
    """The problem document of an error response, or a stand-in for an answer that is not one."""
    body: Any = None
    if "json" in response.headers.get("content-type", ""):
        try:
            body = response.json()
        except ValueError:
            body = None
    where = f"{response.request.method} {response.request.url.path}"
    if isinstance(body, dict) and ("title" in body or "detail" in body):
        status = body.get("status")
        return ApiError(
            status if isinstance(status, int) else response.status_code,
            str(body.get("type") or "about:blank"),
            str(body.get("title") or response.reason_phrase),
            str(body.get("detail") or body.get("title") or ""),
            {k: v for k, v in body.items() if k not in _PROBLEM_MEMBERS},
            instance=body.get("instance") if isinstance(body.get("instance"), str) else None,
        )
    text = " ".join(response.text.split())[:200] if response.content else ""
    detail = f"{where} answered HTTP {response.status_code} {response.reason_phrase}"
    return ApiError(
        response.status_code, "about:blank", response.reason_phrase, f"{detail}: {text}" if text else detail
    )


def unreachable_reason(exc: httpx.TransportError) -> str:
    """Why a request got no answer, for :class:`ServerUnreachable`."""
    text = str(exc).strip()
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed ({text})" if text else "connection failed"
    return text or type(exc).__name__
