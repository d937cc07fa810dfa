"""The client's side of the wire: one server's address, its token, timeouts, and answers checked.

:class:`Transport` sends the requests the client's operations and the watch stream build, turns a
network failure into :class:`~tenure.service.client.errors.ServerUnreachable` and an error answer
into :class:`~tenure.service.client.errors.ApiError`, and checks that a JSON answer has the shape
the caller expects. The token is a default header of the connection: it is in no attribute,
message or ``repr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from tenure import __version__
from tenure.errors import InvalidArgument
from tenure.service.client.errors import ApiError, ServerUnreachable, problem_error, unreachable_reason

__all__ = ["Json", "Transport", "redacted"]

#: One JSON object as the API sends it.
Json = dict[str, Any]


def redacted(url: str) -> str:
    """``url`` without a user or password, for messages."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class Transport:
    """The HTTP connections to one tenure server; :meth:`close` them when done.

    ``timeout`` bounds every request (seconds) unless a request sets its own; ``transport``
    replaces the network (an ``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 10,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise InvalidArgument("the server URL", "must start with http:// or https://", redacted(base_url))
        self.base_url = base_url.rstrip("/")
        #: The server's address as messages show it (without credentials).
        self.url = redacted(self.base_url)
        self.timeout = timeout
        headers = {"Accept": "application/json", "User-Agent": f"tenure-client/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport, follow_redirects=False
        )

    def __repr__(self) -> str:
        return f"Transport({self.url!r})"

    def close(self) -> None:
        """Close the connections kept open."""
        self._http.close()

    def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """Send ``request``; an answer of 400 or more is raised as :class:`ApiError` (and closed)."""
        try:
            response = self._http.send(request, stream=stream)
        except httpx.TimeoutException:
            raise ServerUnreachable(self.url, f"no answer within {self.timeout:g} s") from None
        except httpx.TransportError as exc:
            raise ServerUnreachable(self.url, unreachable_reason(exc)) from None
        if response.status_code >= 400:
            try:
                if stream:
                    response.read()
                raise problem_error(response)
            finally:
                response.close()
        return response

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request with a JSON ``body``; query parameters that are None are left out."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        request = self._http.build_request(method, path, params=query, json=body, headers=dict(headers or {}))
        return self.send(request)

    def json_value(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of :meth:`call` (an answer that is no JSON raises :class:`ApiError`)."""
        response = self.call(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                response.status_code,
                "about:blank",
                "Unexpected answer",
                f"{method} {path} answered {response.status_code} with "
                f"{response.headers.get('content-type', 'no content type')}, not JSON",
            ) from None

    def json_object(self, method: str, path: str, **kwargs: Any) -> Json:
        """The answer of :meth:`call`, which must be a JSON object."""
        value = self.json_value(method, path, **kwargs)
        if not isinstance(value, dict):
            raise ApiError(200, "about:blank", "Unexpected answer", f"{method} {path} answered JSON that is no object")
        return value

    def json_array(self, method: str, path: str, **kwargs: Any) -> list[Json]:
        """The answer of :meth:`call`, which must be a JSON array."""
        value = self.json_value(method, path, **kwargs)
        if not isinstance(value, list):
            raise ApiError(200, "about:blank", "Unexpected answer", f"{method} {path} answered JSON that is no array")
        return value

    def open_stream(
        self, path: str, *, params: Mapping[str, str], headers: Mapping[str, str], read_timeout: float
    ) -> httpx.Response:
        """A ``GET`` whose body is read as it arrives, waiting up to ``read_timeout`` between bytes.

        The caller closes the response.
        """
        timeout = httpx.Timeout(self.timeout, read=max(read_timeout, self.timeout))
        request = self._http.build_request("GET", path, params=dict(params), headers=dict(headers), timeout=timeout)
        return self.send(request, stream=True)
