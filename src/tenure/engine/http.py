"""The HTTP provisioner: a provisioner plug-in that asks an external service over HTTP.

The protocol, for every action (``provision``, ``deprovision``, ``start``): tenure POSTs one JSON
request per definition to the service's URL, with the idempotency key also in an ``Idempotency-Key``
header::

    {"action": "provision", "resource_id": "...", "definition": {"id": ..., "type": ..., "spec": {...}},
     "key": "...", "attempt": 1, "idempotency_key": "...",
     "callback": {"url": "...", "token": "...", "key": "..."}}

The service answers in one of these ways:

* ``200`` with ``{"status": "done", "data": {...}}``: finished synchronously (``data`` is kept);
* ``202``, or ``200`` with ``{"status": "pending"}`` or an empty body: accepted; the service will POST
  ``{"resource_id", "token", "key", "status": "done"|"failed"|"retry", "data", "error"}`` to the
  callback URL later (``200`` with status ``failed`` or ``retry`` answers that way at once);
* ``408``, ``425``, ``429`` or ``5xx`` (or a timeout, or no connection at all): try again later;
* any other ``4xx`` (or a ``1xx`` or ``3xx``: redirects are not followed): the request is refused for good.

Which statuses are tried again is :func:`tenure.engine.answers.verdict`'s call, the same for every
party tenure calls over HTTP.

The callback token is a secret: it appears only in the request body, never in a log line or an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from tenure.engine.answers import Verdict, excerpt, public_url, quoted, scrub, verdict
from tenure.engine.provision import ProvisionRequest, ProvisionResult
from tenure.errors import InvalidArgument

__all__ = ["HttpProvisioner"]

log = logging.getLogger("tenure.engine.http")

#: How much of a response body an error quotes.
_SNIPPET = 200


class HttpProvisioner:
    """Provisions, deprovisions and starts definitions by POSTing them to ``url`` (see the module docs).

    ``callback_url`` is where the service sends its asynchronous answers; ``headers`` go with every
    request (authentication, say); ``timeout`` bounds each request in seconds. Pass ``client`` to share
    an :class:`httpx.Client` (it is then not closed here; ``timeout`` still applies to each request);
    otherwise one is made, and :meth:`close` (or leaving a ``with`` block) closes it. Safe to use from
    several threads, as the worker's steps do.
    """

    def __init__(
        self,
        url: str,
        *,
        callback_url: str,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        for name, value in (("url", url), ("callback_url", callback_url)):
            try:
                scheme = httpx.URL(value).scheme
            except (httpx.InvalidURL, TypeError):
                scheme = ""
            if scheme not in ("http", "https"):
                raise InvalidArgument(name, "must be an http:// or https:// URL", public_url(value))
        if timeout <= 0:
            raise InvalidArgument("timeout", "must be a positive number of seconds", timeout)
        self.url = url
        self.callback_url = callback_url
        self.timeout = timeout
        self.headers = dict(headers or {})
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._where = public_url(url)

    # --- the provisioner protocol -------------------------------------------------------------

    def provision(self, request: ProvisionRequest, /) -> ProvisionResult:
        """Ask the service to make ``request.definition``."""
        return self._send("provision", request)

    def deprovision(self, request: ProvisionRequest, /) -> ProvisionResult:
        """Ask the service to remove ``request.definition``."""
        return self._send("deprovision", request)

    def start(self, request: ProvisionRequest, /) -> ProvisionResult:
        """Ask the service (a data plane) to start ``request.definition``."""
        return self._send("start", request)

    # --- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP client, if this provisioner made it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> HttpProvisioner:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- one request --------------------------------------------------------------------------

    def body(self, action: str, request: ProvisionRequest) -> dict[str, Any]:
        """The JSON document POSTed for ``request`` (it carries the callback token)."""
        return {
            "action": action,
            "resource_id": request.resource_id,
            "definition": request.definition.to_json(),
            "key": request.key,
            "attempt": request.attempt,
            "idempotency_key": request.idempotency_key,
            "callback": {"url": self.callback_url, "token": request.token, "key": request.key},
        }

    def _send(self, action: str, request: ProvisionRequest) -> ProvisionResult:
        what = f"{action} {request.resource_id}/{request.key} (attempt {request.attempt})"
        headers = {**self.headers, "Idempotency-Key": request.idempotency_key}
        try:
            response = self._client.post(
                self.url, json=self.body(action, request), headers=headers, timeout=self.timeout
            )
        except httpx.TimeoutException as exc:
            result = ProvisionResult.retry(f"{self._where} timed out ({type(exc).__name__}, limit {self.timeout}s)")
        except httpx.UnsupportedProtocol as exc:
            result = ProvisionResult.failed(f"cannot reach {self._where}: {scrub(str(exc), [request.token])}")
        except httpx.RequestError as exc:
            detail = scrub(str(exc), [request.token]) or "no detail"
            result = ProvisionResult.retry(f"request to {self._where} failed: {type(exc).__name__}: {detail}")
        else:
            result = self._interpret(response, request.token)
        log.log(
            logging.DEBUG if result.error is None else logging.INFO,
            "http provisioner: %s -> %s%s",
            what,
            result.status.value,
            f" ({result.error})" if result.error else "",
            extra={"resource_id": request.resource_id},
        )
        return result

    def _interpret(self, response: httpx.Response, token: str) -> ProvisionResult:
        code = response.status_code
        judged = verdict(code)
        if judged is Verdict.RETRY:
            return ProvisionResult.retry(f"{self._where} answered HTTP {code}{_snippet(response, token)}")
        if judged is Verdict.REFUSED and 400 <= code < 500:
            return ProvisionResult.failed(f"{self._where} refused the request: HTTP {code}{_snippet(response, token)}")
        if judged is Verdict.REFUSED:
            return ProvisionResult.failed(f"{self._where} answered HTTP {code}, which is not an answer to a request")
        if code in (202, 204) or not response.content.strip():
            return ProvisionResult.pending()
        try:
            answer = json.loads(response.content)
        except ValueError:
            return ProvisionResult.failed(
                f"{self._where} answered HTTP {code} with a body that is not JSON{_snippet(response, token)}"
            )
        if not isinstance(answer, dict):
            return ProvisionResult.failed(f"{self._where} answered HTTP {code} with JSON that is not an object")
        status, data, error = answer.get("status"), answer.get("data"), answer.get("error")
        if status == "pending":
            return ProvisionResult.pending()
        if status == "done":
            if data is not None and not isinstance(data, dict):
                return ProvisionResult.failed(f"{self._where} answered done with a 'data' that is not an object")
            return ProvisionResult.done(data)
        reason = excerpt(str(error), [token], limit=_SNIPPET) if error else "no reason given"
        if status == "failed":
            return ProvisionResult.failed(f"{self._where} answered failed: {reason}")
        if status == "retry":
            return ProvisionResult.retry(f"{self._where} asked to retry: {reason}")
        return ProvisionResult.failed(
            f"{self._where} answered HTTP {code} with status {excerpt(repr(status), [token], limit=_SNIPPET)}; "
            "expected done, pending, failed or retry"
        )


def _snippet(response: httpx.Response, token: str) -> str:
    """``: <the start of the body>`` on one line, with the token blanked out (empty for an empty body)."""
    return quoted(excerpt(response.content.decode("utf-8", "replace"), [token], limit=_SNIPPET))
