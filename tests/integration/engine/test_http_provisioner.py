"""The HTTP provisioner, against real local HTTP servers and, end to end, a real external process.

First the response mapping, one answer at a time, against a scripted server in this process: what
each status class becomes, timeouts and refused connections (retry), and that the callback token
never shows in an error or a log line.

Then the whole loop on both stores: a real :class:`~tenure.engine.Worker` runs the ``transfer`` kind
(a 2-second request deadline), the HTTP provisioner POSTs to ``fake_provisioner.py`` running as its
own process, which answers 202 and calls back later to a callback server in this process that
delivers into the store's inbox. The fake's behaviour is picked per definition by ``spec["mode"]``.
Every wait is a poll with a generous limit; no test asserts how long anything took.
"""

from __future__ import annotations

import json
import logging
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tenure import open_store
from tenure.engine import Worker
from tenure.engine.http import HttpProvisioner
from tenure.engine.provision import Definition, MemoryProvisioner, ProvisionRequest, ProvisionStatus
from tenure.errors import InvalidArgument
from tenure.kinds.transfer import transfer_kind, transfer_steps
from tenure.machine import Backoff
from tenure.store.model import Resource
from tenure.store.protocol import EngineStore
from tests.support.callback_server import CallbackServer

pytestmark = pytest.mark.timeout(120)

#: The fake provisioner, run as a script of its own (it imports nothing but the standard library).
FAKE_SCRIPT = Path(__file__).resolve().parents[2] / "support" / "fake_provisioner.py"
#: The deadline of the transfer's ``*_requested`` states, and how late a ``late`` callback comes.
DEADLINE = timedelta(seconds=2)
LATE_DELAY = 3.5
#: How long any one thing may take to happen before a test gives up (CI machines are slow).
PATIENCE = 20.0
MAX_ATTEMPTS = 3
#: Short step retries, so the ``error500`` case does not sit through seconds of backoff.
FAST_RETRY = Backoff(max_attempts=8, base=timedelta(milliseconds=100), cap=timedelta(milliseconds=400))
KIND = transfer_kind(request_deadline=DEADLINE, retry=FAST_RETRY)

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = PATIENCE) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    limit = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > limit:
            pytest.fail(f"gave up after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(0.05)


# --- the response mapping, against a scripted server ---------------------------------------------


class Scripted:
    """A local HTTP server answering every POST with ``code`` and ``body`` (after ``delay`` seconds)."""

    def __init__(self) -> None:
        self.code = 202
        self.body: bytes = b""
        self.delay = 0.0
        self.seen: list[tuple[dict[str, str], dict[str, Any]]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                scripted.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(scripted.delay)
                self.send_response(scripted.code)
                self.send_header("Content-Length", str(len(scripted.body)))
                self.end_headers()
                self.wfile.write(scripted.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/provision"

    def answer(self, code: int, body: bytes | dict[str, Any] = b"", delay: float = 0.0) -> None:
        self.code, self.delay = code, delay
        self.body = json.dumps(body).encode() if isinstance(body, dict) else body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


@pytest.fixture
def provisioner(scripted: Scripted) -> Iterator[HttpProvisioner]:
    with HttpProvisioner(
        scripted.url, callback_url="http://127.0.0.1:9/callbacks", timeout=2.0, headers={"X-Test": "yes"}
    ) as p:
        yield p


def make_request(token: str | None = None, action: str = "provision") -> ProvisionRequest:
    return ProvisionRequest(
        action=action,
        resource_id="res-1",
        definition=Definition("bucket", "http", {"size": 3}),
        token=token or secrets.token_urlsafe(24),
        key="bucket",
        attempt=2,
        idempotency_key="res-1@4/bucket",
    )


def test_the_request_carries_the_protocol(scripted: Scripted, provisioner: HttpProvisioner) -> None:
    request = make_request()
    assert provisioner.provision(request).status is ProvisionStatus.PENDING
    headers, body = scripted.seen[-1]
    assert body == {
        "action": "provision",
        "resource_id": "res-1",
        "definition": {"id": "bucket", "type": "http", "spec": {"size": 3}},
        "key": "bucket",
        "attempt": 2,
        "idempotency_key": "res-1@4/bucket",
        "callback": {"url": "http://127.0.0.1:9/callbacks", "token": request.token, "key": "bucket"},
    }
    assert headers["idempotency-key"] == "res-1@4/bucket"
    assert headers["x-test"] == "yes"
    assert headers["content-type"] == "application/json"


def test_each_action_is_named_in_its_request(scripted: Scripted, provisioner: HttpProvisioner) -> None:
    provisioner.deprovision(make_request(action="deprovision"))
    provisioner.start(make_request(action="start"))
    assert [body["action"] for _, body in scripted.seen] == ["deprovision", "start"]


@pytest.mark.parametrize(
    ("code", "body", "status", "data"),
    [
        pytest.param(200, {"status": "done", "data": {"arn": "x:1"}}, "done", {"arn": "x:1"}, id="200-done"),
        pytest.param(200, {"status": "done"}, "done", {}, id="200-done-no-data"),
        pytest.param(201, {"status": "done", "data": {"n": 1}}, "done", {"n": 1}, id="201-done"),
        pytest.param(202, b"", "pending", {}, id="202-empty"),
        pytest.param(202, {"status": "done"}, "pending", {}, id="202-ignores-body"),
        pytest.param(200, b"", "pending", {}, id="200-empty"),
        pytest.param(200, b"  \n", "pending", {}, id="200-blank"),
        pytest.param(200, {"status": "pending"}, "pending", {}, id="200-pending"),
        pytest.param(204, b"", "pending", {}, id="204"),
    ],
)
def test_successes(
    scripted: Scripted,
    provisioner: HttpProvisioner,
    *,
    code: int,
    body: bytes | dict[str, Any],
    status: str,
    data: dict[str, Any],
) -> None:
    scripted.answer(code, body)
    result = provisioner.provision(make_request())
    assert (result.status.value, dict(result.data), result.error) == (status, data, None)


@pytest.mark.parametrize(
    ("code", "body", "status", "words"),
    [
        pytest.param(500, b"internal", "retry", ["HTTP 500", "internal"], id="500"),
        pytest.param(502, b"", "retry", ["HTTP 502"], id="502"),
        pytest.param(503, {"error": "busy"}, "retry", ["HTTP 503", "busy"], id="503"),
        pytest.param(429, b"slow down", "retry", ["HTTP 429", "slow down"], id="429"),
        pytest.param(408, b"", "retry", ["HTTP 408"], id="408"),
        pytest.param(425, b"too early", "retry", ["HTTP 425", "too early"], id="425"),
        pytest.param(400, {"error": "no such region"}, "failed", ["HTTP 400", "no such region"], id="400"),
        pytest.param(404, b"not here", "failed", ["HTTP 404", "not here"], id="404"),
        pytest.param(409, b"", "failed", ["HTTP 409"], id="409"),
        pytest.param(302, b"", "failed", ["HTTP 302"], id="302"),
        pytest.param(200, b"{not json", "failed", ["not JSON", "{not json"], id="200-malformed"),
        pytest.param(200, b"[1, 2]", "failed", ["not an object"], id="200-array"),
        pytest.param(200, {"data": {}}, "failed", ["status None"], id="200-no-status"),
        pytest.param(200, {"status": "maybe"}, "failed", ["'maybe'"], id="200-unknown-status"),
        pytest.param(200, {"status": "done", "data": [1]}, "failed", ["'data'"], id="200-data-not-object"),
        pytest.param(200, {"status": "failed", "error": "quota"}, "failed", ["quota"], id="200-failed"),
        pytest.param(200, {"status": "retry", "error": "later"}, "retry", ["later"], id="200-retry"),
    ],
)
def test_errors(
    scripted: Scripted,
    provisioner: HttpProvisioner,
    *,
    code: int,
    body: bytes | dict[str, Any],
    status: str,
    words: list[str],
) -> None:
    scripted.answer(code, body)
    result = provisioner.provision(make_request())
    assert result.status.value == status
    assert result.error is not None
    for word in words:
        assert word in result.error
    assert scripted.url in result.error


def test_a_long_body_is_cut_to_a_snippet(scripted: Scripted, provisioner: HttpProvisioner) -> None:
    scripted.answer(400, b"oops\n" * 10_000)
    error = provisioner.provision(make_request()).error
    assert error is not None
    assert "oops oops" in error
    assert error.endswith("...")
    assert len(error) < 400


def test_a_timeout_is_retried(scripted: Scripted) -> None:
    scripted.answer(202, delay=1.5)
    with HttpProvisioner(scripted.url, callback_url="http://127.0.0.1:9/cb", timeout=0.2) as p:
        result = p.provision(make_request())
    assert result.status is ProvisionStatus.RETRY
    assert result.error is not None
    assert "timed out" in result.error
    assert "ReadTimeout" in result.error


def test_a_refused_connection_is_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port any more.
    with HttpProvisioner(f"http://127.0.0.1:{port}/p", callback_url="http://127.0.0.1:9/cb", timeout=2) as p:
        result = p.provision(make_request())
    assert result.status is ProvisionStatus.RETRY
    assert result.error is not None
    assert "ConnectError" in result.error
    assert f"127.0.0.1:{port}" in result.error


@pytest.mark.parametrize("code", [400, 500, 200])
def test_the_token_never_shows(
    scripted: Scripted, provisioner: HttpProvisioner, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    """A careless service that quotes the token back does not get it into errors or logs."""
    token = secrets.token_urlsafe(24)
    body = {"status": "failed", "error": f"bad token {token}"} if code == 200 else {"echo": token}
    scripted.answer(code, body)
    caplog.set_level(logging.DEBUG)
    result = provisioner.provision(make_request(token))
    assert result.error is not None
    assert token not in result.error
    assert "<token>" in result.error
    assert token not in caplog.text
    assert caplog.records  # it did log the answer, without the token


def test_credentials_in_the_url_stay_out_of_errors(scripted: Scripted) -> None:
    url = scripted.url.replace("http://", "http://user:hunter2@") + "?api_key=sesame"
    scripted.answer(503)
    with HttpProvisioner(url, callback_url="http://127.0.0.1:9/cb") as p:
        error = p.provision(make_request()).error
    assert error is not None
    assert "hunter2" not in error
    assert "sesame" not in error
    assert "HTTP 503" in error


def test_a_shared_client_is_used_and_left_open(scripted: Scripted) -> None:
    with httpx.Client() as client:
        p = HttpProvisioner(scripted.url, callback_url="http://127.0.0.1:9/cb", client=client)
        assert p.provision(make_request()).status is ProvisionStatus.PENDING
        p.close()
        assert not client.is_closed


@pytest.mark.parametrize(
    ("url", "callback", "timeout"),
    [("ftp://x/y", "http://cb", 1.0), ("http://x/y", "not a url", 1.0), ("http://x/y", "http://cb", 0.0)],
)
def test_bad_configuration_is_refused(url: str, callback: str, timeout: float) -> None:
    with pytest.raises(InvalidArgument):
        HttpProvisioner(url, callback_url=callback, timeout=timeout)


# --- end to end: worker, fake provisioner process, callback server, both stores ------------------


@dataclass
class FakeProvisioner:
    """The fake provisioner process and what it logged."""

    url: str
    log_path: Path

    def entries(self, resource_id: str, event: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line being written
            if entry.get("resource_id") == resource_id and event in (None, entry["event"]):
                found.append(entry)
        return found


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProvisioner]:
    log_path = tmp_path_factory.mktemp("fake_provisioner") / "log.jsonl"
    argv = [sys.executable, str(FAKE_SCRIPT), "--log", str(log_path), "--delay", "0.2"]
    process = subprocess.Popen([*argv, "--late-delay", str(LATE_DELAY)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], PATIENCE)
        line = process.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            pytest.fail(f"the fake provisioner did not print its port (got {line!r}, exit code {process.poll()})")
        yield FakeProvisioner(f"http://127.0.0.1:{int(line)}/provision", log_path)
    finally:
        process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@dataclass
class Engine:
    store: EngineStore
    worker: Worker
    callbacks: CallbackServer
    fake: FakeProvisioner

    def create(self, spec: dict[str, Any], *, dataplane: str = "memory") -> str:
        resources = [{"id": "bucket", "type": "http", "spec": spec}]
        return self.store.create("transfer", {"asset": "a1", "resources": resources, "dataplane": dataplane}).id

    def reaches(self, resource_id: str, *states: str) -> Resource:
        def probe() -> Resource | None:
            r = self.store.get(resource_id)
            return r if r.state in states else None

        return wait_for(f"{resource_id} to reach {' or '.join(states)}", probe)

    def events(self, resource_id: str) -> list[str]:
        return [e.event for e in self.store.journal(resource_id)]


@pytest.fixture
def engine(store_url: str, fake: FakeProvisioner) -> Iterator[Engine]:
    store = open_store(store_url, [KIND], check_schema=False)  # the real clock: deadlines must fire
    try:
        store.migrate()
        with (
            CallbackServer(store) as callbacks,
            HttpProvisioner(fake.url, callback_url=callbacks.url, timeout=5.0) as http,
        ):
            steps = transfer_steps({"http": http, "memory": MemoryProvisioner()}, kind=KIND, max_attempts=MAX_ATTEMPTS)
            worker = Worker(store, steps, name="test-worker", poll_interval=0.2, lease=timedelta(seconds=10)).start()
            try:
                yield Engine(store, worker, callbacks, fake)
            finally:
                worker.stop(timeout=10)
    finally:
        store.close()


HAPPY_PATH = ["@create", "provision", "provision_requested", "provisioned", "request", "requested", "start"]
#: After a provisioning failure: the transfer is terminated and cleaned up (nothing to deprovision
#: when the provisioner itself said no).
AFTER_FAILURE = ["provision_failed", "terminated", "deprovision", "deprovisioned"]


def test_ok_runs_through_every_action_over_http(engine: Engine) -> None:
    rid = engine.create({"mode": "ok"}, dataplane="http")
    sync = engine.create({"mode": "sync"})  # alongside: a service that answers at once
    r = engine.reaches(rid, "started")
    assert engine.events(rid) == [*HAPPY_PATH, "start_requested", "started"]
    assert r.data["provision"]["bucket"]["status"] == "done"
    assert r.data["provision"]["bucket"]["data"] == {"name": f"{rid}/bucket", "action": "provision", "mode": "ok"}
    assert r.data["start"]["dataplane"]["data"]["action"] == "start"

    engine.store.fire(rid, "terminate")
    r = engine.reaches(rid, "deprovisioned", "deprovisioning_failed")
    assert r.state == "deprovisioned"
    assert engine.events(rid)[-3:] == ["deprovision", "deprovision_requested", "deprovisioned"]
    requests = engine.fake.entries(rid, "request")
    assert [(e["action"], e["key"], e["attempt"]) for e in requests] == [
        ("provision", "bucket", 1),
        ("start", "dataplane", 1),
        ("deprovision", "bucket", 1),
    ]
    assert all(e["idempotency_header"] == e["idempotency_key"] for e in requests)
    assert [e["http_status"] for e in engine.fake.entries(rid, "callback")] == [202, 202, 202]

    s = engine.reaches(sync, "started")
    assert engine.events(sync)[:4] == ["@create", "provision", "provisioned", "request"]
    assert s.data["provision"]["bucket"]["data"]["mode"] == "sync"
    assert engine.fake.entries(sync, "callback") == []


def test_a_duplicate_callback_is_harmless(engine: Engine) -> None:
    rid = engine.create({"mode": "twice"})
    engine.reaches(rid, "started")
    callbacks = wait_for("both callbacks", lambda: _exactly(engine.fake.entries(rid, "callback"), 2))
    assert [e["http_status"] for e in callbacks] == [202, 200]
    assert [e["receipt"]["delivery"] for e in callbacks] == ["accepted", "duplicate"]
    assert callbacks[0]["receipt"]["seq"] == callbacks[1]["receipt"]["seq"]
    assert engine.events(rid).count("provisioned") == 1
    assert engine.events(rid) == [*HAPPY_PATH, "started"]


def failure_of(engine: Engine, resource_id: str) -> str | None:
    """The error the journal kept with the ``provision_failed`` write (the row's is gone by now)."""
    (entry,) = [e for e in engine.store.journal(resource_id) if e.event == "provision_failed"]
    return entry.detail.get("error")


def _exactly(items: list[T], n: int) -> list[T] | None:
    return items if len(items) == n else None


def test_no_callback_times_out_asks_again_then_gives_up(engine: Engine) -> None:
    rid = engine.create({"mode": "never", "deprovision_mode": "ok"})
    r = engine.reaches(rid, "deprovisioned", "deprovisioning_failed")
    asked = ["provision", "provision_requested"]
    for _ in range(MAX_ATTEMPTS - 1):
        asked += ["provision_timed_out", "provision_requested"]
    # Given up while pending, the bucket may exist: the transfer ends by deprovisioning it.
    cleanup = [*AFTER_FAILURE[:3], "deprovision_requested", "deprovisioned"]
    assert engine.events(rid) == ["@create", *asked, "provision_timed_out", *cleanup]
    assert r.state == "deprovisioned"
    entry = r.data["provision"]["bucket"]
    assert (entry["status"], entry["error"]) == ("failed", f"gave up after {MAX_ATTEMPTS} attempts")
    timeouts = [e for e in engine.store.journal(rid) if e.event == "provision_timed_out"]
    assert all("before its deadline" in e.detail["error"] for e in timeouts)
    requests = engine.fake.entries(rid, "request")
    asks = [e for e in requests if e["action"] == "provision"]
    assert [e["attempt"] for e in asks] == list(range(1, MAX_ATTEMPTS + 1))
    assert [e["action"] for e in requests if e["action"] != "provision"] == ["deprovision"]
    # Every ask about the bucket carries the same idempotency key, so the service can tell a repeat;
    # each re-ask after a deadline hands out a new callback token.
    assert len({e["idempotency_key"] for e in asks}) == 1
    assert [e["repeat"] for e in asks] == [False] + [True] * (MAX_ATTEMPTS - 1)
    assert len({e["token_sha"] for e in asks}) == MAX_ATTEMPTS


def test_server_errors_are_retried_then_fail(engine: Engine) -> None:
    rid = engine.create({"mode": "error500", "deprovision_mode": "ok"})
    r = engine.reaches(rid, "deprovisioned", "deprovisioning_failed")
    journal = engine.store.journal(rid)
    retries = [e for e in journal if e.event == "@retry"]
    assert len(retries) == MAX_ATTEMPTS
    for e in retries:
        assert "HTTP 500" in e.detail["error"]
        assert "broken on purpose" in e.detail["error"]
    # A service that answered 500 may have made the bucket anyway: it is deprovisioned too.
    assert [e.event for e in journal] == [
        "@create",
        "provision",
        *["@retry"] * MAX_ATTEMPTS,
        *AFTER_FAILURE[:3],
        "deprovision_requested",
        "deprovisioned",
    ]
    assert r.state == "deprovisioned"
    assert r.data["provision"]["bucket"]["error"] == f"gave up after {MAX_ATTEMPTS} attempts"
    assert failure_of(engine, rid) == f"bucket: gave up after {MAX_ATTEMPTS} attempts"
    asks = [e for e in engine.fake.entries(rid, "request") if e["action"] == "provision"]
    assert len(asks) == MAX_ATTEMPTS
    # Retries send the same idempotency key: the service can tell a repeat.
    assert len({e["idempotency_key"] for e in asks}) == 1
    assert [e["repeat"] for e in asks] == [False] + [True] * (MAX_ATTEMPTS - 1)


def test_a_failure_or_a_rejection_fails_at_once(engine: Engine) -> None:
    failing, rejected = engine.create({"mode": "fail"}), engine.create({"mode": "reject"})

    r = engine.reaches(failing, "deprovisioned", "deprovisioning_failed")
    assert engine.events(failing) == ["@create", "provision", "provision_requested", *AFTER_FAILURE]
    entry = r.data["provision"]["bucket"]
    assert (entry["status"], entry["error"]) == ("failed", "the fake provisioner failed on purpose")
    assert [e["http_status"] for e in engine.fake.entries(failing, "callback")] == [202]
    assert failure_of(engine, failing) == "bucket: the fake provisioner failed on purpose"

    r = engine.reaches(rejected, "deprovisioned", "deprovisioning_failed")
    assert engine.events(rejected) == ["@create", "provision", *AFTER_FAILURE]
    error = r.data["provision"]["bucket"]["error"]
    assert "HTTP 400" in error
    assert "refused on purpose (token was <token>)" in error  # the fake quoted the token back
    assert len(engine.fake.entries(rejected, "request")) == 1
    assert failure_of(engine, rejected) == f"bucket: {error}"


def test_a_late_callback_is_refused_as_superseded(engine: Engine) -> None:
    rid = engine.create({"mode": "late"})
    r = engine.reaches(rid, "started")
    callbacks = wait_for("the late callback", lambda: _exactly(engine.fake.entries(rid, "callback"), 2))
    by_attempt = {e["attempt"]: e for e in callbacks}
    # The re-ask (attempt 2, after the deadline) answered first and was applied ...
    assert by_attempt[2]["http_status"] == 202
    assert by_attempt[2]["receipt"]["delivery"] == "accepted"
    # ... and the answer to the first ask, arriving after that, is refused.
    assert by_attempt[1]["http_status"] == 409
    assert by_attempt[1]["receipt"]["delivery"] == "refused"
    assert "superseded" in by_attempt[1]["receipt"]["reason"]
    events = engine.events(rid)
    assert events[:5] == ["@create", "provision", "provision_requested", "provision_timed_out", "provision_requested"]
    assert events.count("provisioned") == 1
    assert r.data["provision"]["bucket"]["attempts"] == 2
    assert engine.callbacks.receipts[-1].delivery.value == "refused"
