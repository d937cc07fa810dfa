"""Reading another party's HTTP answer: whether to ask again, and what an error may quote of it.

tenure calls out over HTTP in three places: the HTTP provisioner (:mod:`tenure.engine.http`), a
control plane signaling its data planes (:mod:`tenure.engine.signaling`) and a data plane posting
callbacks to its control plane (:mod:`tenure.engine.notify`). They read a status the same way
(:func:`verdict`):

* ``2xx``: an answer (each caller reads the body its own way, and may still find it is none);
* ``408``, ``425``, ``429`` and ``5xx``: the other side is busy, restarting or timed out: ask again
  later (a connection error or a timeout is, too; each caller catches those);
* anything else (``1xx``, ``3xx``, since no caller follows redirects, and every other ``4xx``):
  refused for good; asking again would get the same answer.

Their errors quote the other side's words (a body, a problem document's ``detail``) scrubbed of the
secrets the request carried (tokens), on one line, cut short: :func:`excerpt`, :func:`problem_detail`.
The scrub comes before the cut, so no prefix of a secret is left behind.

>>> verdict(503), verdict(425), verdict(404), verdict(204)
(<Verdict.RETRY: 'retry'>, <Verdict.RETRY: 'retry'>, <Verdict.REFUSED: 'refused'>, <Verdict.SUCCESS: 'success'>)
>>> excerpt("token  s3cr3t\\nwas refused", ["s3cr3t"], limit=20)
'token <token> was re...'
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from datetime import timedelta

import httpx

__all__ = [
    "RETRY_STATUSES",
    "Verdict",
    "excerpt",
    "origin",
    "problem_detail",
    "public_url",
    "quoted",
    "retry_after",
    "scrub",
    "verdict",
]


class Verdict(enum.StrEnum):
    """What an HTTP status means for the request that got it."""

    SUCCESS = "success"
    RETRY = "retry"
    REFUSED = "refused"


#: The statuses below 500 worth asking again for: Request Timeout, Too Early, Too Many Requests.
RETRY_STATUSES = frozenset({408, 425, 429})


def verdict(status: int) -> Verdict:
    """Whether ``status`` is an answer, a reason to ask again later, or a refusal for good."""
    if 200 <= status < 300:
        return Verdict.SUCCESS
    if status >= 500 or status in RETRY_STATUSES:
        return Verdict.RETRY
    return Verdict.REFUSED


def retry_after(response: httpx.Response, *, cap: timedelta) -> timedelta | None:
    """The answer's ``Retry-After`` in seconds, at most ``cap`` (None when absent or given as a date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value.isdigit():
        return None
    return min(timedelta(seconds=int(value)), cap)


# --- what an error may quote -------------------------------------------------------------------------


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every (non-empty) secret replaced by ``<token>``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<token>")
    return text


def excerpt(text: str, secrets: Iterable[str | None], *, limit: int) -> str:
    """``text`` scrubbed of ``secrets``, on one line, cut to ``limit`` characters (``...`` when cut)."""
    line = " ".join(scrub(text, secrets).split())
    return line[:limit] + ("..." if len(line) > limit else "")


def problem_detail(response: httpx.Response, secrets: Iterable[str | None], *, limit: int) -> str:
    """What an answer says: a problem document's ``detail`` (or ``title``, or an ``error``), else its body.

    Scrubbed, on one line and cut short as :func:`excerpt` does; empty for an empty body.
    """
    raw = response.content.decode("utf-8", "replace")
    text = raw
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for name in ("detail", "title", "error"):
            value = doc.get(name)
            if isinstance(value, str) and value.strip():
                text = value
                break
    return excerpt(text, secrets, limit=limit)


def quoted(detail: str) -> str:
    """``": <detail>"``, or nothing for an empty detail: the tail of an error that quotes an answer."""
    return f": {detail}" if detail else ""


# --- where a request went, without credentials ---------------------------------------------------------


def public_url(url: str | httpx.URL) -> str:
    """``url`` without credentials, query or fragment: safe for messages (``<invalid URL>`` if it is none)."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


def origin(url: str, *, unknown: str = "the URL") -> str:
    """``scheme://host[:port]`` of ``url`` (``unknown`` when it is not a URL)."""
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return unknown
    return f"{u.scheme}://{u.host}" + (f":{u.port}" if u.port else "")
