"""Helpers for the tests that drive a control plane and its data planes as real processes.

The planes are :class:`tenure.cli.planes.LocalPlanes`; these helpers poll them over HTTP with a
deadline (never a fixed sleep), and :class:`SignalRecorder` sits between the control plane and a
data plane to show what the control plane actually sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar

import httpx

__all__ = [
    "Signal",
    "SignalRecorder",
    "create_transfer",
    "eventually",
    "journal",
    "memory_async",
    "resource",
    "transfer_spec",
    "wait_state",
]

T = TypeVar("T")

#: How often :func:`eventually` asks again.
POLL = 0.05


def eventually(condition: Callable[[], T], timeout: float, *, what: str = "the condition") -> T:
    """``condition()`` once it is truthy, asking every 50 ms; fails the test after ``timeout`` seconds.

    The failure shows the last value ``condition`` returned (or what it raised), to say where it got stuck.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
        except AssertionError as exc:  # a condition may assert, to say precisely what it waits for
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not hold within {timeout:g} s; last: {last!r}")
        time.sleep(POLL)


def memory_async(definition_id: str = "bucket", *, delay_ms: int = 100, **spec: Any) -> dict[str, Any]:
    """A resource definition for the data plane's ``memory-async`` provisioner (``spec``: fail, destination, ...)."""
    return {"id": definition_id, "type": "memory-async", "spec": {"delayMs": delay_ms, **spec}}


def transfer_spec(
    side: str,
    *,
    dataplane: str = "dp1",
    resources: Iterable[Mapping[str, Any]] = (),
    destination: Mapping[str, Any] | None = None,
    asset: str = "q3-report.csv",
) -> dict[str, Any]:
    """The spec of a ``transfer`` (version 2) of ``side`` served by ``dataplane``."""
    return {
        "asset": asset,
        "type": side,
        "dataplane": dataplane,
        "destination": dict(destination or {"type": "memory", "path": f"/landing/{side}"}),
        "resources": [dict(r) for r in resources],
    }


def create_transfer(http: httpx.Client, spec: Mapping[str, Any]) -> str:
    """Create a transfer; its id."""
    made = http.post("/v1/resources", json={"kind": "transfer", "spec": dict(spec)})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def resource(http: httpx.Client, rid: str) -> dict[str, Any]:
    got = http.get(f"/v1/resources/{rid}")
    assert got.status_code == 200, got.text
    value: dict[str, Any] = got.json()
    return value


def wait_state(http: httpx.Client, rid: str, *states: str, timeout: float = 20.0) -> dict[str, Any]:
    """The resource once it is in one of ``states``."""

    def there() -> dict[str, Any]:
        now = resource(http, rid)
        assert now["state"] in states, f"{rid} is {now['state']!r} (error: {now['error']!r}), not in {states}"
        return now

    return eventually(there, timeout, what=f"{rid} reaching {' or '.join(states)}")


def journal(http: httpx.Client, rid: str) -> list[dict[str, Any]]:
    """The resource's whole journal, oldest first."""
    got = http.get(f"/v1/resources/{rid}/journal", params={"limit": 1000})
    assert got.status_code == 200, got.text
    items: list[dict[str, Any]] = got.json()["items"]
    return items


@dataclass(frozen=True, slots=True)
class Signal:
    """One signal the control plane sent through a :class:`SignalRecorder`, and the answer's status."""

    name: str
    body: dict[str, Any]
    status: int

    @property
    def transfer_id(self) -> str:
        return str(self.body.get("transferId"))


class SignalRecorder:
    """An HTTP proxy in front of a data plane that keeps every signal passing through it.

    Give its :attr:`url` to the control plane as the data plane's URL (``LocalPlanes(signal_urls=...)``)
    and set :attr:`target` to the data plane's own URL: requests are forwarded as they are (method,
    path, body, bearer token) and answered with the data plane's answer; the control plane cannot tell.
    """

    def __init__(self) -> None:
        self.target: str | None = None
        self._signals: list[Signal] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=30.0)
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                recorder._forward(self, "POST")

            def do_GET(self) -> None:
                recorder._forward(self, "GET")

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="signal-recorder", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> SignalRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def __enter__(self) -> SignalRecorder:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def signals(self, transfer_id: str | None = None) -> list[Signal]:
        """The signals recorded (for ``transfer_id`` only, if given), in the order they were answered."""
        with self._lock:
            return [s for s in self._signals if transfer_id is None or s.transfer_id == transfer_id]

    def _forward(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items() if k.lower() in ("authorization", "content-type")}
        try:
            if self.target is None:
                raise httpx.ConnectError("the recorder has no target yet")
            answer = self._http.request(method, self.target + handler.path, content=raw, headers=headers)
        except httpx.HTTPError as exc:
            # The data plane is unreachable: so is the recorder (a 502 the control plane retries).
            answer = httpx.Response(502, json={"error": f"proxy: {exc}"})
        if method == "POST" and handler.path.startswith("/v1/signaling/"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            with self._lock:
                self._signals.append(Signal(handler.path.rsplit("/", 1)[-1], body, answer.status_code))
        handler.send_response(answer.status_code)
        handler.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        handler.send_header("Content-Length", str(len(answer.content)))
        handler.end_headers()
        handler.wfile.write(answer.content)
