"""A tiny callback receiver for tests: POSTed JSON callbacks go into a store's inbox.

It stands in for the HTTP service until that exists. Each POST carries
``{"resource_id", "token", "key", "status", "data"?, "error"?}`` and is handed to
:meth:`~tenure.store.inbox.Inbox.deliver`; the answer is the receipt as JSON, with 202 when the
callback was accepted, 200 for a duplicate and 409 when it was refused. A body that is not such an
object, or that ``deliver`` rejects as invalid, gets 400 (and 503 when the store is unreachable).

    with CallbackServer(store) as server:
        provisioner = HttpProvisioner(url, callback_url=server.url)
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from tenure.errors import StoreUnavailable, TenureError
from tenure.store.inbox import Delivery, Inbox, Receipt

__all__ = ["CallbackServer"]

_CODES = {Delivery.ACCEPTED: 202, Delivery.DUPLICATE: 200, Delivery.REFUSED: 409}
_MAX_BODY = 1 << 20


class CallbackServer:
    """Receives callbacks on ``http://127.0.0.1:<port>/callbacks`` (any path is accepted) in a thread.

    :attr:`receipts` lists every receipt handed out, in order; :attr:`bad` counts the 400 answers.
    """

    def __init__(self, store: Inbox) -> None:
        self.store = store
        self.receipts: list[Receipt] = []
        self.bad = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callbacks"

    def start(self) -> CallbackServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="callback-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> CallbackServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def receive(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """The status code and JSON answer for one POSTed body."""
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError("the body must be a JSON object")
            fields: dict[str, Any] = {name: doc.get(name) for name in ("resource_id", "token", "key", "status")}
            missing = [name for name, value in fields.items() if not isinstance(value, str) or not value]
            if missing:
                raise ValueError(f"missing or not text: {', '.join(missing)}")
            data, error = doc.get("data"), doc.get("error")
            if data is not None and not isinstance(data, dict):
                raise ValueError("data must be an object")
            receipt = self.store.deliver(
                fields["resource_id"], fields["token"], fields["key"], fields["status"], data=data, error=error
            )
        except StoreUnavailable as exc:
            return 503, {"error": str(exc)}
        except (ValueError, TenureError) as exc:
            with self._lock:
                self.bad += 1
            return 400, {"error": str(exc)}
        with self._lock:
            self.receipts.append(receipt)
        return _CODES[receipt.delivery], receipt.to_json()


def _handler(server: CallbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                code, answer = 400, {"error": f"the body is over {_MAX_BODY} bytes"}
            else:
                code, answer = server.receive(self.rfile.read(length))
            payload = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler
