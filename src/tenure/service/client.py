"""A small synchronous Python client for tenure's HTTP API, over httpx.

>>> from tenure.service.client import Client
>>> with Client("http://127.0.0.1:8080", token=token) as api:  # doctest: +SKIP
...     volume = api.create("volume", {"size_gb": 5, "project": "p1"}, idempotency_key="vol-1")
...     with api.watch(resource=volume["id"]) as changes:
...         for change in changes:
...             if change.to_state == "available":
...                 break

Answers are the API's JSON as plain dicts, camelCase as on the wire (``desiredState``, ``version``);
pages and stream events are small frozen dataclasses. A refusal (an ``application/problem+json``
document) raises :class:`ApiError` with the document's status, type, title, detail and extension
members; a server that cannot be reached raises :class:`ServerUnreachable` naming its URL. The
token is sent as ``Authorization: Bearer`` and appears in no error message, ``repr`` or log line.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from tenure import __version__
from tenure.errors import InvalidArgument, TenureError

__all__ = [
    "ApiError",
    "Change",
    "Client",
    "JournalPage",
    "Page",
    "ServerEvent",
    "ServerUnreachable",
    "SseParser",
    "Watch",
]

#: One JSON object as the API sends it.
Json = dict[str, Any]

#: The members every problem document has; the rest are extension members (RFC 9457).
_PROBLEM_MEMBERS: Final = frozenset({"type", "title", "status", "detail", "instance"})

#: Seconds without a byte on the watch stream before the client assumes the connection is dead;
#: the server sends a keep-alive comment every 15 s.
WATCH_READ_TIMEOUT: Final = 45.0


class ApiError(TenureError):
    """The server refused a request; the attributes are the problem document's members.

    ``extensions`` holds the document's other members (``resourceId``, ``state``, ``allowed``,
    ``expectedVersion``, ``errors``, ...), as the server sent them.
    """

    default_message = "the server refused the request"

    def __init__(
        self,
        status: int,
        type: str,
        title: str,
        detail: str,
        extensions: Mapping[str, Any] | None = None,
        *,
        instance: str | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.instance = instance
        self.extensions = dict(extensions or {})
        super().__init__(detail or title)

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, type={self.type!r}, detail={self.detail!r})"


class ServerUnreachable(TenureError):
    """The server could not be reached, or did not answer in time."""

    default_message = "the tenure server cannot be reached"

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the tenure server at {url}: {reason}")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of resources; pass ``next`` back as ``after`` for the next one (None: the last page)."""

    items: tuple[Json, ...]
    next: str | None


@dataclass(frozen=True, slots=True)
class JournalPage:
    """One page of a resource's journal; ``next_after_version`` continues it (None: nothing more)."""

    items: tuple[Json, ...]
    next_after_version: int | None


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One Server-Sent Event as it came off the wire."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One change from the watch stream: a journal entry, at ``position`` in the store's feed.

    Pass ``position`` as ``after`` to a later :meth:`Client.watch` to continue after this change.
    """

    position: str
    data: Json = field(default_factory=dict)

    @property
    def resource_id(self) -> str | None:
        value = self.data.get("resourceId")
        return value if isinstance(value, str) else None

    @property
    def to_state(self) -> str | None:
        value = self.data.get("toState")
        return value if isinstance(value, str) else None

    @property
    def version(self) -> int | None:
        value = self.data.get("version")
        return value if isinstance(value, int) else None


class SseParser:
    """Turns the text of an event stream into events, incrementally (the WHATWG parsing rules).

    Lines end in CR LF, LF or CR, also when a chunk boundary splits them; ``:`` starts a comment;
    ``data`` lines are joined with newlines; an event without data is not dispatched, but its ``id``
    still counts (see :attr:`last_id`).

    >>> p = SseParser()
    >>> p.feed("id: 7\\nevent: change\\ndata: {}\\n") + p.feed("\\n")
    [ServerEvent(event='change', data='{}', id='7', retry=None)]
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._pending_cr = False
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None
        #: The last ``id`` the stream set, whether or not its event was dispatched.
        self.last_id: str | None = None

    def feed(self, text: str) -> list[ServerEvent]:
        """The events that ``text`` completes (most chunks complete none or one)."""
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CR LF split across chunks
        self._pending_cr = False
        self._buffer += text
        out: list[ServerEvent] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            line, sep_len = self._buffer[:cut], 1
            if self._buffer[cut] == "\r":
                if cut + 1 == len(self._buffer):
                    self._pending_cr = True
                elif self._buffer[cut + 1] == "\n":
                    sep_len = 2
            self._buffer = self._buffer[cut + sep_len :]
            event = self._line(line)
            if event is not None:
                out.append(event)
        return out

    def _line(self, line: str) -> ServerEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
                self.last_id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerEvent | None:
        event = ServerEvent(self._event or "message", "\n".join(self._data), self._id, self._retry)
        had_data = bool(self._data)
        self._event, self._data, self._retry = "", [], None
        # The id persists between events (it is the stream's last event id), the rest does not.
        return event if had_data else None


def _line_end(text: str) -> int | None:
    cr, lf = text.find("\r"), text.find("\n")
    ends = [i for i in (cr, lf) if i >= 0]
    return min(ends) if ends else None


def _redacted(url: str) -> str:
    """``url`` without a user or password, for messages."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _segment(value: str) -> str:
    # An id with a '/' or '?' must not reach another route.
    return quote(value, safe="")


def _etag(version: int | None) -> dict[str, str]:
    return {} if version is None else {"If-Match": f'"{version}"'}


class Client:
    """A client for one tenure server; use it as a context manager, or call :meth:`close`.

    ``timeout`` bounds every request (seconds); the watch stream waits longer between bytes, since
    the server only sends keep-alives when nothing happens. ``transport`` replaces the network (an
    ``httpx.MockTransport`` in tests).
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
            raise InvalidArgument("the server URL", "must start with http:// or https://", _redacted(base_url))
        self.base_url = base_url.rstrip("/")
        #: The server's address as messages show it (without credentials).
        self.url = _redacted(self.base_url)
        self.timeout = timeout
        headers = {"Accept": "application/json", "User-Agent": f"tenure-client/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport, follow_redirects=False
        )

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections this client keeps open."""
        self._http.close()

    # --- requests ------------------------------------------------------------------------------

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            response = self._http.send(request, stream=stream)
        except httpx.TimeoutException:
            raise ServerUnreachable(self.url, f"no answer within {self.timeout:g} s") from None
        except httpx.TransportError as exc:
            raise ServerUnreachable(self.url, _reason(exc)) from None
        if response.status_code >= 400:
            try:
                if stream:
                    response.read()
                raise _api_error(response)
            finally:
                response.close()
        return response

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        request = self._http.build_request(method, path, params=query, json=body, headers=dict(headers or {}))
        return self._send(request)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
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

    def _object(self, method: str, path: str, **kwargs: Any) -> Json:
        value = self._json(method, path, **kwargs)
        if not isinstance(value, dict):
            raise ApiError(200, "about:blank", "Unexpected answer", f"{method} {path} answered JSON that is no object")
        return value

    def _array(self, method: str, path: str, **kwargs: Any) -> builtins.list[Json]:
        value = self._json(method, path, **kwargs)
        if not isinstance(value, list):
            raise ApiError(200, "about:blank", "Unexpected answer", f"{method} {path} answered JSON that is no array")
        return value

    # --- operations ----------------------------------------------------------------------------

    def health(self) -> Json:
        """``/healthz``: the process is up."""
        return self._object("GET", "/healthz")

    def ready(self) -> Json:
        """``/readyz``: the database is reachable and migrated (raises :class:`ApiError` 503 if not)."""
        return self._object("GET", "/readyz")

    # --- kinds ---------------------------------------------------------------------------------

    def kinds(self) -> builtins.list[Json]:
        """The kinds the server has loaded: states, events, roles, spec schema."""
        return self._array("GET", "/v1/kinds")

    def kind(self, name: str) -> Json:
        """One kind's description."""
        return self._object("GET", f"/v1/kinds/{_segment(name)}")

    def diagram(self, name: str, fmt: str = "mermaid") -> str:
        """A kind's state graph as text: ``mermaid``, ``dot`` (Graphviz) or ``svg``."""
        return self._request("GET", f"/v1/kinds/{_segment(name)}/diagram", params={"format": fmt}).text

    # --- resources -----------------------------------------------------------------------------

    def create(
        self,
        kind: str,
        spec: Mapping[str, Any] | None = None,
        *,
        sharable: bool | None = None,
        idempotency_key: str | None = None,
    ) -> Json:
        """Create a resource in its kind's initial state.

        With an ``idempotency_key``, sending the same request again returns the resource the first
        one created instead of a second one.
        """
        body: Json = {"kind": kind, "spec": dict(spec or {})}
        if sharable is not None:
            body["sharable"] = sharable
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        return self._object("POST", "/v1/resources", body=body, headers=headers)

    def get(self, resource_id: str) -> Json:
        """One resource; its ``version`` is the value to pass as ``if_version``."""
        return self._object("GET", f"/v1/resources/{_segment(resource_id)}")

    def list(
        self,
        *,
        kind: str | None = None,
        state: str | Sequence[str] | None = None,
        desired_state: str | None = None,
        party: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> Page:
        """One page of resources, oldest first; filters combine (several states: any of them)."""
        params: Json = {
            "kind": kind,
            "state": [state] if isinstance(state, str) else (builtins.list(state) if state else None),
            "desiredState": desired_state,
            "party": party,
            "after": after,
            "limit": limit,
        }
        page = self._object("GET", "/v1/resources", params=params)
        return Page(tuple(page.get("items") or ()), page.get("next"))

    def iter(
        self,
        *,
        kind: str | None = None,
        state: str | Sequence[str] | None = None,
        desired_state: str | None = None,
        party: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Json]:
        """Every matching resource, oldest first, fetching a page at a time as the loop needs it."""
        after: str | None = None
        while True:
            page = self.list(
                kind=kind, state=state, desired_state=desired_state, party=party, after=after, limit=page_size
            )
            yield from page.items
            if page.next is None:
                return
            after = page.next

    def fire(
        self,
        resource_id: str,
        event: str,
        data: Mapping[str, Any] | None = None,
        if_version: int | None = None,
    ) -> Json:
        """Fire an event; ``data`` is merged into the resource's data.

        Refused with 409 when the state does not allow the event, and with 412 when ``if_version``
        is given and the resource has moved past it.
        """
        body: Json = {"event": event}
        if data is not None:
            body["data"] = dict(data)
        return self._object(
            "POST", f"/v1/resources/{_segment(resource_id)}/events", body=body, headers=_etag(if_version)
        )

    def set_desired_state(self, resource_id: str, state: str | None, if_version: int | None = None) -> Json:
        """Say which state the resource should end up in (None: no wish); the engine gets it there."""
        return self._object(
            "PUT",
            f"/v1/resources/{_segment(resource_id)}/desired-state",
            body={"desiredState": state},
            headers=_etag(if_version),
        )

    def journal(self, resource_id: str, after_version: int = 0, limit: int = 100) -> JournalPage:
        """One page of the resource's history, oldest first, after ``after_version``."""
        page = self._object(
            "GET",
            f"/v1/resources/{_segment(resource_id)}/journal",
            params={"afterVersion": after_version, "limit": limit},
        )
        return JournalPage(tuple(page.get("items") or ()), page.get("nextAfterVersion"))

    def history(self, resource_id: str, page_size: int = 100) -> Iterator[Json]:
        """The resource's whole journal, oldest first, a page at a time."""
        after = 0
        while True:
            page = self.journal(resource_id, after_version=after, limit=page_size)
            yield from page.items
            if page.next_after_version is None:
                return
            after = page.next_after_version

    def waits(self, resource_id: str) -> builtins.list[Json]:
        """What the resource waits for: awaited keys, deadline, the answers so far."""
        return self._array("GET", f"/v1/resources/{_segment(resource_id)}/waits")

    def flows(self, resource_id: str) -> builtins.list[Json]:
        """The resource's flow runs with each task's checkpoint."""
        return self._array("GET", f"/v1/resources/{_segment(resource_id)}/flows")

    def callback(
        self,
        resource_id: str,
        token: str,
        key: str,
        status: str,
        data: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Json:
        """Answer one awaited key with the correlation token of the attempt that asked.

        ``status`` is ``done``, ``failed`` or ``retry``. Returns the receipt (``delivery``:
        ``accepted`` or ``duplicate``); a refused callback raises :class:`ApiError`.
        """
        body: Json = {"resourceId": resource_id, "token": token, "key": key, "status": str(status)}
        if data is not None:
            body["data"] = dict(data)
        if error is not None:
            body["error"] = error
        return self._object("POST", "/v1/callbacks", body=body)

    def watch(
        self,
        *,
        kind: str | None = None,
        resource: str | None = None,
        state: str | None = None,
        after: str | None = None,
        reconnects: int = 5,
        on_connect: Callable[[], None] | None = None,
    ) -> Watch:
        """Changes as they are committed, from the ``/v1/watch`` event stream.

        Without ``after`` the stream starts from now; ``after="beginning"`` replays the whole
        journal first; a :attr:`Change.position` continues after that change. A dropped connection
        is resumed with ``Last-Event-ID`` (none missed, none twice), giving up after ``reconnects``
        failures in a row. ``on_connect`` runs after every (re)connection, before any of its
        changes: a caller that reads the current state there misses nothing in between.
        """
        params = {"kind": kind, "resource": resource, "state": state, "after": after}
        return Watch(self, {k: v for k, v in params.items() if v is not None}, reconnects, on_connect)

    def _open_stream(self, params: Mapping[str, str], last_id: str | None) -> httpx.Response:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        timeout = httpx.Timeout(self.timeout, read=max(WATCH_READ_TIMEOUT, self.timeout))
        request = self._http.build_request("GET", "/v1/watch", params=dict(params), headers=headers, timeout=timeout)
        return self._send(request, stream=True)


class Watch:
    """An open watch stream: iterate it for :class:`Change` values; close it when done.

    Made by :meth:`Client.watch`. It connects when entered as a context manager or on the first
    ``next()``; :attr:`position` is the last change seen (pass it as ``after`` to continue later).
    """

    def __init__(
        self,
        client: Client,
        params: Mapping[str, str],
        reconnects: int,
        on_connect: Callable[[], None] | None,
    ) -> None:
        self._client = client
        self._params = dict(params)
        self._reconnects = reconnects
        self._on_connect = on_connect
        self._response: httpx.Response | None = None
        self._retry = 1.0
        self._closed = False
        self._changes = self._run()
        #: The position of the last change seen, or None.
        self.position: str | None = None
        #: How many times the stream was reconnected.
        self.reconnected = 0

    def __enter__(self) -> Watch:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> Change:
        return next(self._changes)

    def open(self) -> None:
        """Connect now (raises :class:`ApiError` if the server refuses, e.g. an unknown kind)."""
        if self._response is None and not self._closed:
            response = self._client._open_stream(self._params, self.position)
            if self._on_connect is not None:
                try:
                    self._on_connect()
                except BaseException:
                    response.close()
                    raise
            self._response = response

    def close(self) -> None:
        """Stop watching and drop the connection."""
        self._closed = True
        if self._response is not None:
            self._response.close()
            self._response = None

    def _run(self) -> Iterator[Change]:
        failures = 0
        while not self._closed:
            try:
                self.open()
            except ServerUnreachable:
                failures = self._failed(failures)
                continue
            except ApiError as exc:
                if exc.status < 500:
                    raise  # the request itself is wrong: asking again gets the same answer
                failures = self._failed(failures, exc)
                continue
            response = self._response
            assert response is not None
            parser = SseParser()
            try:
                for chunk in response.iter_text():
                    # Bytes arrived (a keep-alive will do): the connection worked, so a later drop
                    # starts the count afresh; proxies that cut idle streams now and then are fine.
                    failures = 0
                    for event in parser.feed(chunk):
                        if event.retry is not None:
                            self._retry = event.retry / 1000
                        if self._closed:
                            return
                        if event.event != "change" or event.id is None:
                            continue
                        self.position = event.id
                        yield Change(event.id, _parse_data(event.data))
                    if parser.last_id is not None:
                        self.position = parser.last_id
            except (httpx.TransportError, httpx.StreamError):
                pass  # the connection dropped: resume below from the last position
            finally:
                response.close()
                self._response = None
            if not self._closed:
                self.reconnected += 1
                failures = self._failed(failures)

    def _failed(self, failures: int, exc: TenureError | None = None) -> int:
        failures += 1
        if failures > self._reconnects:
            self.close()
            if exc is not None:
                raise exc
            raise ServerUnreachable(self._client.url, f"the watch stream failed {failures} times in a row")
        # Back off exponentially from the server's suggested retry delay, up to 10 s.
        time.sleep(min(self._retry * 2 ** (failures - 1), 10.0))
        return failures


def _parse_data(text: str) -> Json:
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc).strip()
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed ({text})" if text else "connection failed"
    return text or type(exc).__name__


def _api_error(response: httpx.Response) -> ApiError:
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
