"""A small Server-Sent Events reader for tests (the parsing rules of the HTML standard, minus retry).

    with http.stream("GET", "/v1/watch") as response:
        events = SseReader(response)
        first = events.next()

Comment lines (``: ping``) are skipped; an event is dispatched at a blank line; ``data`` lines are
joined with newlines; ``id`` persists across events as the last event id, as a browser keeps it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["SseEvent", "SseReader", "parse_sse"]


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """The events in a stream of lines (without their line endings)."""
    event = ""
    data: list[str] = []
    last_id: str | None = None
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value


class SseReader:
    """Reads events from a streaming httpx response, one at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._events = parse_sse(response.iter_lines())
        #: The ``position`` event the stream opens with (where it starts), once read.
        self.start: SseEvent | None = None

    def next(self) -> SseEvent:
        """The next change (the response's read timeout bounds the wait); the opening position is kept aside."""
        event = next(self._events)
        if event.event == "position" and self.start is None:
            self.start = event
            event = next(self._events)
        return event

    def take(self, n: int) -> list[SseEvent]:
        return [self.next() for _ in range(n)]
