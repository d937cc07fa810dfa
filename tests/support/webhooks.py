"""What the subscription tests share: a real webhook receiver on 127.0.0.1, and waiting for the feed.

    with Receiver() as receiver:
        subs.create(receiver.url, kind="image")
        ...
        receiver.down()      # the port refuses connections
        receiver.up()        # listening again, on the same port
        receiver.fail_next(500, 500)

The receiver answers 200 unless told otherwise and records every request it got (headers and body).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from tenure.machine import Kind
from tenure.store.protocol import EngineStore, TableStore
from tenure.store.subscriptions import Subscriptions

__all__ = ["Received", "Receiver", "settle", "subscriptions_of", "wait_until"]

#: How long ``wait_until`` and ``settle`` wait: generous, since a loaded machine may be slow.
PATIENCE = 20.0


@dataclass(frozen=True)
class Received:
    """One request the receiver got, and the status it answered."""

    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.body)
        return doc

    @property
    def delivery(self) -> str:
        return self.headers["tenure-delivery"]


class Receiver:
    """A webhook receiver on ``http://127.0.0.1:<port>/hook`` that can go down and come back."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._answers: list[int] = []
        self._holds: list[threading.Event] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> Receiver:
        """Listen (again, on the same port once it had one)."""
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-receiver", daemon=True
        )
        self._thread.start()
        return self

    def down(self) -> None:
        """Stop listening: connections to the port are refused until :meth:`up`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def fail_next(self, *statuses: int) -> None:
        """Answer the next requests with ``statuses``, in order, then 200 again."""
        with self._lock:
            self._answers.extend(statuses)

    def hold_next(self, gate: threading.Event) -> None:
        """Keep the next request waiting, unanswered, until ``gate`` is set (a stalled delivery)."""
        with self._lock:
            self._holds.append(gate)

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            hold = self._holds.pop(0) if self._holds else None
        if hold is not None:
            hold.wait(PATIENCE)
        with self._lock:
            status = self._answers.pop(0) if self._answers else 200
            self.requests.append(Received(headers, body, status))
        return status

    @property
    def accepted(self) -> list[Received]:
        """The requests answered 2xx, in the order they came."""
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def __enter__(self) -> Receiver:
        return self.up()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status = receiver.answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


def subscriptions_of(store: EngineStore) -> Subscriptions:
    """The subscriptions part over a store's database (both built-in stores are TableStores too)."""
    tables: TableStore = store  # type: ignore[assignment]

    def kind(name: str) -> Kind | None:
        return store.kinds.get(name)  # looked up each time: kinds may be registered later

    return Subscriptions(tables.database, tables.now, kinds=kind)


def settle(store: EngineStore) -> None:
    """Wait until the change feed can deliver every committed journal entry.

    On PostgreSQL the feed holds back entries above the oldest transaction still running anywhere on
    the server (other tests' included), so right after a write it may not be deliverable yet.
    """
    if store.dialect != "postgres":
        return
    tables: TableStore = store  # type: ignore[assignment]
    deadline = time.monotonic() + PATIENCE
    with tables.database.reading() as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM journal WHERE txid >= pg_snapshot_xmin(pg_current_snapshot())"
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            assert time.monotonic() < deadline, f"a transaction on the server held the feed back for {PATIENCE} s"
            time.sleep(0.005)


def wait_until(check: Callable[[], bool], *, what: str, patience: float = PATIENCE) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while not check():
        assert time.monotonic() < deadline, f"still not true after {patience} s: {what}"
        time.sleep(0.01)
