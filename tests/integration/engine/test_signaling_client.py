"""``HttpDataPlane`` against a real HTTP server on 127.0.0.1: answers, refusals, outages, and no token in any error."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import pytest

from tenure import Backoff, Kind, Worker
from tenure.engine.outcome import Fatal, Retryable
from tenure.engine.planes import DataPlaneRef, Signaling
from tenure.engine.signaling import (
    DataPlaneClient,
    HttpDataPlane,
    SignalAnswer,
    SignalRefused,
    close_dataplanes,
    dataplanes,
)
from tenure.errors import InvalidArgument
from tenure.kinds.transfer_v2 import transfer_v2_kind, transfer_v2_steps
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock

pytestmark = pytest.mark.timeout(60)

BEARER = "bearer-secret-the-cp-presents-7f3a"
CALLBACK_TOKEN = "callback-secret-of-the-wait-91c2"


@dataclass
class Reply:
    """What the server answers: a status, a JSON body (or raw bytes), headers, and a delay first."""

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/json"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class SignalingServer:
    """A stand-in data plane: answers every POST with :attr:`reply` and keeps what it was sent."""

    def __init__(self) -> None:
        self.reply = Reply()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="signaling-server", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> SignalingServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._thread.join(5)
        self._server.server_close()

    def answer(self, request: BaseHTTPRequestHandler) -> Reply:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length)
        with self._lock:
            self.seen.append(
                Seen(request.command, request.path, {k.lower(): v for k, v in request.headers.items()}, json.loads(raw))
            )
            return self.reply


def _handler(server: SignalingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            reply = server.answer(self)
            if reply.delay:
                time.sleep(reply.delay)
            payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

    return Handler


def body(transfer: str = "t-1") -> dict[str, Any]:
    return {
        "transferId": transfer,
        "type": "consumer",
        "asset": "asset-7",
        "source": {"type": "s3", "bucket": "in"},
        "resources": [{"id": "bucket", "type": "memory", "spec": {}}],
        "callback": {
            "url": "http://127.0.0.1:8800/v1/callbacks",
            "resourceId": transfer,
            "token": CALLBACK_TOKEN,
            "key": "dataplane",
        },
    }


def answer(signal: str = "prepare", *, asynchronous: bool, **more: Any) -> dict[str, Any]:
    return {
        "transferId": "t-1",
        "dataFlowId": "t-1",
        "signal": signal,
        "async": asynchronous,
        "state": "provisioning" if asynchronous else "received",
        "source": {"type": "s3", "bucket": "in"},
        "destination": None,
        "replayed": False,
        **more,
    }


def problem(status: int, detail: str) -> dict[str, Any]:
    return {"type": "urn:tenure:problem:x", "title": "refused", "status": status, "detail": detail}


@pytest.fixture
def server() -> Iterator[SignalingServer]:
    with SignalingServer() as s:
        yield s


@pytest.fixture
def plane(server: SignalingServer) -> Iterator[HttpDataPlane]:
    with HttpDataPlane(DataPlaneRef("dp1", server.url + "/", BEARER), timeout=2.0) as p:
        yield p


def assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), *map(str, exc.args)):
        assert BEARER not in text
        assert CALLBACK_TOKEN not in text
    for value in vars(exc).values():
        assert BEARER not in str(value)
        assert CALLBACK_TOKEN not in str(value)


# --- answers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_an_answer_is_read_and_the_signal_is_sent_as_the_contract_says(
    server: SignalingServer, plane: HttpDataPlane, asynchronous: bool
) -> None:
    changed = {"type": "s3", "bucket": "in", "region": "eu"}
    server.reply = Reply(200, answer("start", asynchronous=asynchronous, source=changed, replayed=True))

    got = plane.signal("start", body())

    assert got == SignalAnswer(
        asynchronous, "provisioning" if asynchronous else "received", "t-1", changed, None, replayed=True
    )
    assert got.source == changed
    (seen,) = server.seen
    assert (seen.method, seen.path) == ("POST", "/v1/signaling/start")
    assert seen.headers["authorization"] == f"Bearer {BEARER}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == body()


def test_every_signal_has_its_own_path(server: SignalingServer, plane: HttpDataPlane) -> None:
    for signal in ("prepare", "start", "suspend", "terminate"):
        server.reply = Reply(200, answer(signal, asynchronous=False))
        plane.signal(signal, body())
    assert [s.path for s in server.seen] == [f"/v1/signaling/{s}" for s in ("prepare", "start", "suspend", "terminate")]
    with pytest.raises(Fatal):
        plane.signal("provision", body())
    assert len(server.seen) == 4, "an unknown signal is not sent"


def test_no_token_no_authorization_header(server: SignalingServer) -> None:
    server.reply = Reply(200, answer(asynchronous=False))
    with HttpDataPlane(DataPlaneRef("dp1", server.url)) as open_plane:
        open_plane.signal("prepare", body())
    assert "authorization" not in server.seen[0].headers


# --- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "detail"),
    [
        (409, "signal 'suspend' is not allowed in state 'completed' (allowed: terminate)"),
        (404, "no flow for transfer 't-1'"),
        (422, "body.transferId: String should match pattern"),
        (403, "the token lacks the signal scope"),
    ],
)
def test_a_4xx_is_fatal_and_quotes_the_problems_detail(
    server: SignalingServer, plane: HttpDataPlane, status: int, detail: str
) -> None:
    server.reply = Reply(status, problem(status, detail), content_type="application/problem+json")
    with pytest.raises(SignalRefused) as caught:
        plane.signal("suspend", body())
    assert isinstance(caught.value, Fatal)
    assert (caught.value.status, caught.value.detail) == (status, detail)
    assert f"HTTP {status}: {detail}" in str(caught.value)
    assert "'dp1'" in str(caught.value)


def test_an_answer_that_is_no_answer_is_fatal(server: SignalingServer, plane: HttpDataPlane) -> None:
    for reply, says in (
        (Reply(200, raw=b"<html>proxy</html>", content_type="text/html"), "cannot be read"),
        (Reply(200, {"state": "x"}), "'async'"),
        (Reply(200, answer(asynchronous=True, transferId="t-2")), "not 't-1'"),
        (Reply(200, answer(asynchronous=True, source="s3://in")), "'source'"),
        (Reply(202, {}), "HTTP 202 is not an answer"),
    ):
        server.reply = reply
        with pytest.raises(SignalRefused) as caught:
            plane.signal("prepare", body())
        assert says in str(caught.value)


# --- outages ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 500, 429, 408, 425])
def test_an_overloaded_or_failing_data_plane_is_retryable(
    server: SignalingServer, plane: HttpDataPlane, status: int
) -> None:
    server.reply = Reply(status, problem(status, "database unavailable"))
    with pytest.raises(Retryable) as caught:
        plane.signal("prepare", body())
    assert not isinstance(caught.value, Fatal)
    assert f"HTTP {status}: database unavailable" in str(caught.value)
    assert caught.value.delay is None


def test_retry_after_is_honoured_up_to_a_cap(server: SignalingServer, plane: HttpDataPlane) -> None:
    server.reply = Reply(503, problem(503, "busy"), headers={"Retry-After": "7"})
    with pytest.raises(Retryable) as caught:
        plane.signal("prepare", body())
    assert caught.value.delay == timedelta(seconds=7)
    server.reply = Reply(429, problem(429, "slow down"), headers={"Retry-After": "999999"})
    with pytest.raises(Retryable) as capped:
        plane.signal("prepare", body())
    assert capped.value.delay == timedelta(minutes=10)


def test_the_control_planes_step_asks_again_when_retry_after_says_not_after_its_backoff(
    server: SignalingServer,
    plane: HttpDataPlane,
    open_engine_store: Callable[..., EngineStore],
    clock: FakeClock,
) -> None:
    """A data plane answers 503 with ``Retry-After: 1`` while a flow finishes reporting; the transfer's
    step asks again a second later, however long its own backoff has grown."""
    slow = Backoff(max_attempts=8, base=timedelta(minutes=1), cap=timedelta(minutes=10), jitter=0)
    kind: Kind = transfer_v2_kind(dataplanes=["dp1"], request_deadline=timedelta(minutes=5), retry=slow)
    store = open_engine_store([kind], clock=clock)
    steps = transfer_v2_steps({"dp1": plane}, callback_url="http://127.0.0.1:8800/v1/callbacks", kind=kind)
    worker = Worker(store, steps, name="cp", rand=lambda: 1.0)
    server.reply = Reply(503, problem(503, "finishing its last operation"), headers={"Retry-After": "1"})
    rid = store.create("transfer", {"asset": "asset-7", "type": "consumer"}).id

    for attempt in range(1, 5):
        worker.run_until_idle()
        transfer = store.get(rid)
        assert (transfer.state, transfer.attempts) == ("initial", attempt)
        assert transfer.next_attempt_at == clock.now + timedelta(seconds=1)
        clock.now = transfer.next_attempt_at

    server.reply = Reply(200, answer(asynchronous=False, transferId=rid))
    worker.run_until_idle()
    assert store.get(rid).state == "requested"
    assert [s.path for s in server.seen] == ["/v1/signaling/prepare"] * 5


def test_a_timeout_is_retryable(server: SignalingServer) -> None:
    server.reply = Reply(200, answer(asynchronous=False), delay=1.0)
    with (
        HttpDataPlane(DataPlaneRef("dp1", server.url, BEARER), timeout=0.2) as slow,
        pytest.raises(Retryable) as caught,
    ):
        slow.signal("prepare", body())
    assert "timed out" in str(caught.value)
    assert "0.2s" in str(caught.value)


def test_a_refused_connection_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port any more.
    ref = DataPlaneRef("dp1", f"http://127.0.0.1:{port}", BEARER)
    with HttpDataPlane(ref, timeout=2.0) as gone, pytest.raises(Retryable) as caught:
        gone.signal("prepare", body())
    assert "ConnectError" in str(caught.value)
    assert_no_secret(caught.value)


# --- secrets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 409, 503])
def test_no_token_appears_in_an_error_even_when_the_data_plane_echoes_them(
    server: SignalingServer, plane: HttpDataPlane, status: int
) -> None:
    echo = f"bad token {CALLBACK_TOKEN} from Bearer {BEARER}"
    if status == 200:
        server.reply = Reply(200, {"async": echo, "transferId": echo * 3})
        expected: type[Exception] = SignalRefused
    else:
        server.reply = Reply(status, problem(status, echo))
        expected = SignalRefused if status < 500 else Retryable
    with pytest.raises(expected) as caught:
        plane.signal("prepare", body())
    assert_no_secret(caught.value)
    if status != 200:
        assert "<token>" in str(caught.value)
    # Not even a part of one: a cut made before the scrub would leave a prefix behind.
    assert BEARER[:12] not in str(caught.value)
    assert CALLBACK_TOKEN[:12] not in str(caught.value)


def test_the_url_and_repr_carry_no_credentials() -> None:
    ref = DataPlaneRef("dp1", "http://user:pass@127.0.0.1:9/base?x=1", BEARER)
    assert BEARER not in repr(ref)
    with HttpDataPlane(ref) as p:
        assert "pass" not in repr(p)
        assert BEARER not in repr(p)
    with pytest.raises(InvalidArgument) as caught:
        HttpDataPlane(DataPlaneRef("dp1", "ftp://user:pass@host/", BEARER))
    assert "pass" not in str(caught.value)
    with pytest.raises(InvalidArgument):
        HttpDataPlane(DataPlaneRef("dp1", "http://127.0.0.1:9"), timeout=0)


# --- lifetime and configuration ----------------------------------------------------------------------


def test_dataplanes_makes_one_client_per_configured_plane(server: SignalingServer) -> None:
    signaling = Signaling(dataplanes=(DataPlaneRef("dp1", server.url, BEARER), DataPlaneRef("dp2", server.url)))
    planes = dataplanes(signaling, timeout=3.0)
    try:
        assert sorted(planes) == ["dp1", "dp2"]
        assert all(isinstance(p, HttpDataPlane) and p.timeout == 3.0 for p in planes.values())
        client: DataPlaneClient = planes["dp2"]
        server.reply = Reply(200, answer(asynchronous=False))
        assert client.signal("prepare", body()).async_ is False
    finally:
        close_dataplanes(planes)
    with pytest.raises(Retryable):
        planes["dp1"].signal("prepare", body())  # closed: the step asks again, after a restart
    with pytest.raises(InvalidArgument):
        dataplanes(Signaling(dataplanes=(DataPlaneRef("dp1", server.url), DataPlaneRef("dp1", server.url))))
    assert dataplanes(Signaling()) == {}
