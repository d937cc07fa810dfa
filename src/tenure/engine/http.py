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
* ``429`` or ``5xx`` (or a timeout, or no connection at all): try again later;
* any other ``4xx``: the request is refused for good.

The callback token is a secret: it appears only in the request body, never in a log line or an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

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
                raise InvalidArgument(name, "must be an http:// or https:// URL", _public(value))
        if timeout <= 0:
            raise InvalidArgument("timeout", "must be a positive number of seconds", timeout)
        self.url = url
        self.callback_url = callback_url
        self.timeout = timeout
        self.headers = dict(headers or {})
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._where = _public(url)

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
            result = ProvisionResult.failed(f"cannot reach {self._where}: {_scrub(str(exc), request.token)}")
        except httpx.RequestError as exc:
            detail = _scrub(str(exc), request.token) or "no detail"
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
        if code == 429 or code >= 500:
            return ProvisionResult.retry(f"{self._where} answered HTTP {code}{_snippet(response, token)}")
        if code >= 400:
            return ProvisionResult.failed(f"{self._where} refused the request: HTTP {code}{_snippet(response, token)}")
        if code >= 300 or code < 200:
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
        reason = _scrub(str(error), token)[:_SNIPPET] if error else "no reason given"
        if status == "failed":
            return ProvisionResult.failed(f"{self._where} answered failed: {reason}")
        if status == "retry":
            return ProvisionResult.retry(f"{self._where} asked to retry: {reason}")
        return ProvisionResult.failed(
            f"{self._where} answered HTTP {code} with status {_scrub(repr(status), token)[:_SNIPPET]}; "
            "expected done, pending, failed or retry"
        )


def _public(url: str) -> str:
    """``url`` without credentials, query or fragment: safe for messages."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "<token>") if token else text


def _snippet(response: httpx.Response, token: str) -> str:
    """``: <the start of the body>`` on one line, with the token blanked out (empty for an empty body)."""
    # Blank the token out of the whole body first: a cut could leave part of it behind.
    text = " ".join(_scrub(response.content.decode("utf-8", "replace"), token).split())
    if not text:
        return ""
    return f": {text[:_SNIPPET]}{'...' if len(text) > _SNIPPET else ''}"
