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
from types import TracebackType
from typing import Any, Literal

import httpx

from tenure.engine.answers import Verdict, excerpt, origin, quoted, verdict
from tenure.engine.planes import ControlPlaneRef

__all__ = ["Notifier", "Sent", "callback_url_problem"]


@dataclass(frozen=True, slots=True)
class Sent:
    """How one callback POST went: ``delivered``, ``refused`` (for good) or ``retry`` (try again later).

    ``error`` quotes the control plane's answer, scrubbed of the callback's token and the data
    plane's bearer token: it is kept in the flow's data and journal.
    """

    outcome: Literal["delivered", "refused", "retry"]
    status: int | None = None
    error: str | None = None


#: How much of the control plane's answer an error quotes.
_SNIPPET = 200


class Notifier:
    """POSTs callbacks to the control plane with the data plane's bearer token; never logs the callback's token.

    With a ``controlplane``, a callback URL elsewhere is refused (the data plane's token goes only to
    its control plane). Redirects are not followed. Which answers are worth another try is
    :func:`tenure.engine.answers.verdict`'s call (``408``, ``425``, ``429``, ``5xx``, and no answer at
    all). ``timeout`` bounds each POST in seconds, with a ``client`` passed in too (it is then shared:
    :meth:`close` leaves it open); otherwise one is made, and :meth:`close` (or leaving a ``with``
    block) closes it.
    """

    def __init__(
        self, controlplane: ControlPlaneRef | None, *, timeout: float = 10.0, client: httpx.Client | None = None
    ) -> None:
        self.controlplane = controlplane
        self.timeout = timeout
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout, follow_redirects=False)

    def post(self, url: str, body: Mapping[str, Any]) -> Sent:
        problem = callback_url_problem(url, self.controlplane)
        if problem is not None:
            return Sent("refused", None, problem)
        headers = {"Content-Type": "application/json"}
        bearer = self.controlplane.token if self.controlplane is not None else None
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        token = body.get("token")
        secrets = (token if isinstance(token, str) else None, bearer)
        where = origin(url, unknown="the callback URL")
        try:
            answer = self._client.post(
                url, json=dict(body), headers=headers, timeout=self.timeout, follow_redirects=False
            )
        except httpx.TimeoutException:
            return Sent("retry", None, f"no answer from {where} in time")
        except httpx.HTTPError as exc:
            return Sent("retry", None, f"cannot reach {where}: {type(exc).__name__}")
        status = answer.status_code
        judged = verdict(status)
        if judged is Verdict.SUCCESS:
            return Sent("delivered", status)
        said = f"{where} answered {status}{quoted(excerpt(answer.text, secrets, limit=_SNIPPET))}"
        return Sent("retry" if judged is Verdict.RETRY else "refused", status, said)

    # --- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP client, if this notifier made it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


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
            return f"the callback URL must be on the control plane ({origin(controlplane.url)})"
    return None
