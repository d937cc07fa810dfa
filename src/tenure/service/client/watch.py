"""The watch stream: changes as the server commits them, resumed where a dropped connection left off.

``/v1/watch`` is a Server-Sent Events stream whose event ids are positions in the store's feed. A
:class:`Watch` reads it into :class:`Change` values and, when the connection drops, reconnects with
``Last-Event-ID`` so that no change is missed or seen twice; it gives up after a number of failures
in a row, backing off between them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final

import httpx

from tenure.errors import TenureError
from tenure.service.client.errors import ApiError, ServerUnreachable
from tenure.service.client.sse import SseParser
from tenure.service.client.transport import Json, Transport

__all__ = ["WATCH_READ_TIMEOUT", "Change", "Watch"]

#: Seconds without a byte on the watch stream before the client assumes the connection is dead;
#: the server sends a keep-alive comment every 15 s.
WATCH_READ_TIMEOUT: Final = 45.0


@dataclass(frozen=True, slots=True)
class Change:
    """One change from the watch stream: a journal entry, at ``position`` in the store's feed.

    Pass ``position`` as ``after`` to a later :meth:`~tenure.service.client.Client.watch` to
    continue after this change.
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


class Watch:
    """An open watch stream: iterate it for :class:`Change` values; close it when done.

    Made by :meth:`~tenure.service.client.Client.watch`. It connects when entered as a context
    manager or on the first ``next()``; :attr:`position` is the last change seen (pass it as
    ``after`` to continue later).
    """

    def __init__(
        self,
        transport: Transport,
        params: Mapping[str, str],
        reconnects: int,
        on_connect: Callable[[], None] | None,
    ) -> None:
        self._transport = transport
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
            response = _connect(self._transport, self._params, self.position)
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
            raise ServerUnreachable(self._transport.url, f"the watch stream failed {failures} times in a row")
        # Back off exponentially from the server's suggested retry delay, up to 10 s.
        time.sleep(min(self._retry * 2 ** (failures - 1), 10.0))
        return failures


def _connect(transport: Transport, params: Mapping[str, str], last_id: str | None) -> httpx.Response:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    return transport.open_stream("/v1/watch", params=params, headers=headers, read_timeout=WATCH_READ_TIMEOUT)


def _parse_data(text: str) -> Json:
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}
