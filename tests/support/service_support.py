"""What the HTTP service tests share besides fixtures: their kinds, a running service, a waiting step.

* ``KINDS``: ``image``, ``job`` and ``ticket`` (a work state whose step waits for callbacks);
* ``Live``: a running service, its store, and a client per scope;
* ``Asker`` / ``ticket_worker``: the step that hands out its correlation token and waits for keys.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from tenure import Kind, Resource, StepContext, Steps, Wait, Worker
from tenure.kinds.image import image
from tenure.store.protocol import EngineStore
from tests.kinds_for_tests import job, ticket_kind
from tests.support.live_server import ADMIN, CALLBACK, READER, WRITER, LiveServer

__all__ = ["KINDS", "WAIT_FOR", "Asker", "Live", "Waiting", "access_line", "ticket", "ticket_worker"]

#: The wait state's deadline of the ``ticket`` kind: long, so no deadline fires during a test.
WAIT_FOR = timedelta(hours=1)

ticket = ticket_kind(wait_for=WAIT_FOR)

KINDS: tuple[Kind, ...] = (image, job, ticket)


@dataclass
class Live:
    """A running service, its store, and clients holding each scope's token."""

    server: LiveServer
    store: EngineStore

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, token: str | None = None, **kwargs: object) -> httpx.Client:
        return self.server.client(token, **kwargs)  # type: ignore[arg-type]

    @property
    def admin(self) -> httpx.Client:
        return self.server.shared(ADMIN)

    @property
    def writer(self) -> httpx.Client:
        return self.server.shared(WRITER)

    @property
    def reader(self) -> httpx.Client:
        return self.server.shared(READER)

    @property
    def callbacker(self) -> httpx.Client:
        return self.server.shared(CALLBACK)

    @property
    def anonymous(self) -> httpx.Client:
        return self.server.shared(None)


# --- a resource in a wait state, put there by the engine ------------------------------------------


class Asker:
    """The ``ticket`` step: hands out its correlation token and waits for ``keys``."""

    def __init__(self, keys: Sequence[str] = ("a", "b")) -> None:
        self.keys = list(keys)
        self.tokens: list[str] = []
        self.__name__ = "asker"
        self._lock = threading.Lock()

    def __call__(self, resource: Resource, ctx: StepContext) -> Wait:
        with self._lock:
            self.tokens.append(ctx.token)
        return Wait("ask", self.keys, on_done="answered", on_failed="refused", on_retry="again", data_key="answers")


@dataclass
class Waiting:
    worker: Worker
    asker: Asker
    resource: Resource
    token: str


def ticket_worker(store: EngineStore, asker: Asker | None = None) -> Worker:
    steps = Steps()
    steps.add(ticket, "todo", asker or Asker())
    return Worker(store, steps, name="service-test-worker", rand=lambda: 1.0)


def access_line(caplog: pytest.LogCaptureFixture, path: str) -> logging.LogRecord:
    """The one access-log record of a request to ``path``.

    The service writes it just after the answer has gone out, so it is waited for a little.
    """
    limit = time.monotonic() + 5
    while True:
        found = [r for r in caplog.records if r.name == "tenure.access" and r.__dict__.get("path") == path]
        if found or time.monotonic() > limit:
            break
        time.sleep(0.01)
    assert len(found) == 1, [vars(r) for r in caplog.records]
    return found[0]
