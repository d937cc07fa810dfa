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

The modules, one concept each: :mod:`~tenure.service.client.api` (the operations),
:mod:`~tenure.service.client.transport` (the wire: address, token, timeouts, answers checked),
:mod:`~tenure.service.client.errors` (problem documents and network failures as exceptions),
:mod:`~tenure.service.client.watch` (the change stream, resumed across drops) and
:mod:`~tenure.service.client.sse` (Server-Sent Events parsing).
"""

from __future__ import annotations

from tenure.service.client.api import Client, JournalPage, Page
from tenure.service.client.errors import ApiError, ServerUnreachable
from tenure.service.client.sse import ServerEvent, SseParser
from tenure.service.client.watch import Change, Watch

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
