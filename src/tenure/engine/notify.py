"""Telling a control plane: POST a callback to the URL it gave, with this data plane's bearer token.

A data plane reports the end of an asynchronous operation to its control plane's ``/v1/callbacks``
(``docs/signaling.md``). The data plane's token goes only to its control plane: a callback URL on
another origin is refused, never sent to. The callback's correlation token is in the body only, and
never in a log line or an error; redirects are not followed.

>>> from tenure.engine.planes import ControlPlaneRef
>>> callback_url_problem("http://127.0.0.1:8800/v1/callbacks", ControlPlaneRef("http://127.0.0.1:8800"))
>>> callback_url_problem("http://evil.example/v1/callbacks", ControlPlaneRef("http://127.0.0.1:8800"))
'the callback URL must be on the control plane (http://127.0.0.1:8800)'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from tenure.engine.planes import ControlPlaneRef

__all__ = ["Notifier", "Sent", "callback_url_problem"]


@dataclass(frozen=True, slots=True)
class Sent:
    """How one callback POST went: ``delivered``, ``refused`` (for good) or ``retry`` (try again later)."""

    outcome: Literal["delivered", "refused", "retry"]
    status: int | None = None
    error: str | None = None


#: Answers worth trying again: the control plane is busy, restarting, or timed out.
_RETRY_STATUSES = frozenset({408, 425, 429})
_SNIPPET = 200


class Notifier:
    """POSTs callbacks to the control plane with the data plane's bearer token; never logs the callback's token.

    With a ``controlplane``, a callback URL elsewhere is refused (the data plane's token goes only to
    its control plane). Redirects are not followed.
    """

    def __init__(
        self, controlplane: ControlPlaneRef | None, *, timeout: float = 10.0, client: httpx.Client | None = None
    ) -> None:
        self.controlplane = controlplane
        self._client = client or httpx.Client(timeout=timeout, follow_redirects=False)

    def post(self, url: str, body: Mapping[str, Any]) -> Sent:
        problem = callback_url_problem(url, self.controlplane)
        if problem is not None:
            return Sent("refused", None, problem)
        headers = {"Content-Type": "application/json"}
        if self.controlplane is not None and self.controlplane.token:
            headers["Authorization"] = f"Bearer {self.controlplane.token}"
        try:
            answer = self._client.post(url, json=dict(body), headers=headers)
        except httpx.TimeoutException:
            return Sent("retry", None, f"no answer from {_origin(url)} in time")
        except httpx.HTTPError as exc:
            return Sent("retry", None, f"cannot reach {_origin(url)}: {type(exc).__name__}")
        status = answer.status_code
        if 200 <= status < 300:
            return Sent("delivered", status)
        said = f"{_origin(url)} answered {status}: {answer.text[:_SNIPPET]}".strip()
        if status >= 500 or status in _RETRY_STATUSES:
            return Sent("retry", status, said)
        return Sent("refused", status, said)


def _origin(url: str) -> str:
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "the callback URL"
    return f"{u.scheme}://{u.host}" + (f":{u.port}" if u.port else "")


def callback_url_problem(url: str, controlplane: ControlPlaneRef | None) -> str | None:
    """What is wrong with ``url`` as a callback URL (None: nothing): http(s), and on the control plane if known."""
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "the callback URL is not a URL"
    if target.scheme not in ("http", "https") or not target.host:
        return "the callback URL must be an http:// or https:// URL"
    if controlplane is not None:
        home = httpx.URL(controlplane.url)
        if (target.scheme, target.host, target.port) != (home.scheme, home.host, home.port):
            return f"the callback URL must be on the control plane ({_origin(controlplane.url)})"
    return None
