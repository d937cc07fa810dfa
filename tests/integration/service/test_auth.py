"""Bearer tokens and scopes through a real server: 401 without a valid token (with a challenge), 403
without the scope, each scope's reach, auth off admitting everyone, and tokens never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tenure.service import ServiceConfig
from tenure.service.logs import JsonFormatter, TextFormatter
from tests.support.live_server import ADMIN, CALLBACK, TOKENS, WRITER
from tests.support.problems import assert_problem
from tests.support.service_support import Live, access_line

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def dialect() -> str:
    return "sqlite"


def _read_requests(rid: str) -> list[tuple[str, str]]:
    return [
        ("GET", "/v1/kinds"),
        ("GET", "/v1/kinds/image"),
        ("GET", "/v1/kinds/image/diagram"),
        ("GET", "/v1/resources"),
        ("GET", f"/v1/resources/{rid}"),
        ("GET", f"/v1/resources/{rid}/journal"),
        ("GET", f"/v1/resources/{rid}/flows"),
    ]


def _send(http: httpx.Client, method: str, path: str, body: object = None) -> httpx.Response:
    return http.request(method, path, json=body)


def _write_requests(live: Live) -> list[tuple[str, str, object]]:
    """Write requests that each succeed once (a fresh resource for each)."""
    a = live.store.create("image", {"name": "a"}).id
    b = live.store.create("image", {"name": "b"}).id
    return [
        ("POST", "/v1/resources", {"kind": "image", "spec": {"name": "new"}}),
        ("POST", f"/v1/resources/{a}/events", {"event": "upload"}),
        ("PUT", f"/v1/resources/{b}/desired-state", {"desiredState": "deleted"}),
    ]


def _open_requests() -> list[str]:
    return ["/healthz", "/readyz", "/openapi.json"]


# --- 401 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-a-token-of-this-service",
        f"Bearer {ADMIN}x",
        f"Bearer {ADMIN[:-1]}",
        f"Basic {ADMIN}",
        "Bearer",
        ADMIN,
    ],
)
def test_no_valid_token_is_401_with_a_bearer_challenge(live: Live, authorization: str | None) -> None:
    rid = live.store.create("image", {"name": "x"}).id
    headers = {} if authorization is None else {"Authorization": authorization}
    with live.client(headers=headers) as http:
        for method, path in _read_requests(rid):
            r = http.request(method, path)
            assert_problem(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer"), path
        r = http.post("/v1/resources", json={"kind": "image", "spec": {"name": "y"}})
        assert_problem(r, 401, "unauthorized")
        r = http.post(f"/v1/resources/{rid}/events", json={"event": "upload"})
        assert_problem(r, 401, "unauthorized")
    assert [x.id for x in live.store.list().items] == [rid], "nothing written"
    assert live.store.get(rid).version == 1


def test_the_401_does_not_echo_the_token(live: Live) -> None:
    wrong = "Bearer wrong-token-that-must-not-be-echoed"
    with live.client(headers={"Authorization": wrong}) as http:
        r = http.get("/v1/kinds")
    assert_problem(r, 401, "unauthorized")
    assert "wrong-token" not in r.text
    assert all("wrong-token" not in v for v in r.headers.values())


# --- 403 and each scope's reach --------------------------------------------------------------------


def test_read_scope_reads_but_cannot_write(live: Live) -> None:
    rid = live.store.create("image", {"name": "x"}).id
    for method, path in _read_requests(rid):
        assert live.reader.request(method, path).status_code == 200, path
    for method, path, body in _write_requests(live):
        problem = assert_problem(_send(live.reader, method, path, body), 403, "forbidden")
        assert (problem["client"], problem["requiredScope"]) == ("reader", "write")
        assert "'write'" in problem["detail"]
    assert len(live.store.list().items) == 3, "nothing written"
    assert all(r.version == 1 for r in live.store.list().items)


def test_write_scope_reads_and_writes(live: Live) -> None:
    rid = live.store.create("image", {"name": "x"}).id
    for method, path in _read_requests(rid):
        assert live.writer.request(method, path).status_code == 200, path
    for method, path, body in _write_requests(live):
        r = _send(live.writer, method, path, body)
        assert r.status_code in (200, 201, 202), (path, r.text)


def test_admin_scope_does_everything(live: Live) -> None:
    rid = live.store.create("image", {"name": "x"}).id
    for method, path in _read_requests(rid):
        assert live.admin.request(method, path).status_code == 200, path
    for method, path, body in _write_requests(live):
        r = _send(live.admin, method, path, body)
        assert r.status_code in (200, 201, 202), (path, r.text)


def test_callback_scope_cannot_read_or_write(live: Live) -> None:
    rid = live.store.create("image", {"name": "x"}).id
    for method, path in _read_requests(rid):
        problem = assert_problem(live.callbacker.request(method, path), 403, "forbidden")
        assert (problem["client"], problem["requiredScope"]) == ("callback", "read")
    for method, path, body in _write_requests(live):
        assert_problem(_send(live.callbacker, method, path, body), 403, "forbidden")
    assert live.store.get(rid).version == 1


def test_the_watch_stream_needs_the_read_scope(live: Live) -> None:
    assert_problem(live.anonymous.get("/v1/watch"), 401, "unauthorized")
    assert_problem(live.callbacker.get("/v1/watch"), 403, "forbidden")


@pytest.mark.parametrize("token", [None, CALLBACK])
def test_callbacks_are_authenticated_by_the_correlation_token_not_a_client_token(live: Live, token: str | None) -> None:
    # No client token is needed: a wrong correlation token is the refusal (403 callback-token-refused).
    # A client token that is sent must grant the callback scope (test_callbacks.py shows the refusal).
    rid = live.store.create("image", {"name": "x"}).id
    with live.client(token) as http:
        r = http.post("/v1/callbacks", json={"resourceId": rid, "token": "t" * 20, "key": "k", "status": "done"})
    problem = assert_problem(r, 403, "callback-token-refused")
    assert problem["refusal"] == "unknown-token"


@pytest.mark.parametrize("path", _open_requests())
def test_operations_endpoints_need_no_token(live: Live, path: str) -> None:
    assert live.anonymous.get(path).status_code == 200


def test_metrics_need_no_token(live: Live) -> None:
    with live.client() as http:
        assert http.get("/metrics").status_code == 200


def test_a_scope_implied_by_another_is_granted(start_live: Callable[..., Live]) -> None:
    from tenure.service import ClientToken

    both = "read-and-callback-token-0123456789"
    live = start_live(ServiceConfig(tokens=(ClientToken.make("both", both, ["read", "callback"]),)))
    with live.client(both) as http:
        assert http.get("/v1/kinds").status_code == 200
        assert_problem(http.post("/v1/resources", json={"kind": "image", "spec": {"name": "x"}}), 403, "forbidden")


def test_a_service_without_tokens_admits_nobody(start_live: Callable[..., Live]) -> None:
    live = start_live(ServiceConfig(auth=True, tokens=()))
    for token in (None, ADMIN):
        with live.client(token) as http:
            assert_problem(http.get("/v1/kinds"), 401, "unauthorized")


# --- auth off -------------------------------------------------------------------------------------------


def test_auth_off_admits_everyone_as_anonymous(start_live: Callable[..., Live]) -> None:
    live = start_live(ServiceConfig(auth=False))
    for token in (None, "whatever-garbage", CALLBACK):
        with live.client(token) as http:
            assert http.get("/v1/kinds").status_code == 200
            r = http.post("/v1/resources", json={"kind": "image", "spec": {"name": "x"}})
            assert r.status_code == 201, r.text
            rid = r.json()["id"]
            assert http.post(f"/v1/resources/{rid}/events", json={"event": "upload"}).status_code == 200
    actors = {e.actor for r in live.store.list().items for e in live.store.journal(r.id)}
    assert actors == {"anonymous"}


# --- tokens never logged ------------------------------------------------------------------------------


def _every_line(records: list[logging.LogRecord]) -> str:
    text = TextFormatter()
    as_json = JsonFormatter()
    lines = []
    for record in records:
        lines.append(text.format(record))
        lines.append(as_json.format(record))
        lines.append(repr(vars(record)))
    return "\n".join(lines)


def test_no_token_appears_in_the_logs(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-but-secret-token-987654321"
    rid = live.store.create("image", {"name": "x"}).id
    for token in (*(t for t, _ in TOKENS.values()), wrong):
        with live.client(token) as http:
            http.get("/v1/kinds")
            http.get(f"/v1/resources/{rid}")
            http.post(f"/v1/resources/{rid}/events", json={"event": "explode"})
            http.post("/v1/resources", content=b"{", headers={"Content-Type": "application/json"})
            http.post("/v1/callbacks", json={"resourceId": rid, "token": wrong, "key": "k", "status": "done"})
    with live.client(headers={"Authorization": f"Basic {wrong}"}) as http:
        http.get("/v1/kinds")

    expected = 5 * (len(TOKENS) + 1) + 1
    limit = time.monotonic() + 5
    while len([r for r in caplog.records if r.name == "tenure.access"]) < expected:  # written after each answer
        assert time.monotonic() < limit, "every request is logged"
        time.sleep(0.01)
    logged = _every_line(caplog.records)
    for secret in (*(t for t, _ in TOKENS.values()), wrong):
        assert secret not in logged


def test_the_access_log_names_the_client_not_the_token(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tenure.access")
    assert live.writer.get("/v1/kinds").status_code == 200
    record = access_line(caplog, "/v1/kinds")
    assert record.__dict__["client"] == "writer"
    assert WRITER not in _every_line([record])


# --- where the tokens come from ------------------------------------------------------------------------


def test_tokens_from_the_environment(start_live: Callable[..., Live]) -> None:
    ops, bot = "ops-token-from-env-0123456789", "bot-token-from-env-0123456789"
    config = ServiceConfig.load(env={"TENURE_TOKENS": f"ops:{ops}:admin;bot:{bot}:read"})
    live = start_live(config)
    with live.client(ops) as http:
        r = http.post("/v1/resources", json={"kind": "image", "spec": {"name": "x"}})
        assert r.status_code == 201, r.text
    with live.client(bot) as http:
        assert http.get("/v1/kinds").status_code == 200
        problem = assert_problem(http.post("/v1/resources", json={"kind": "image"}), 403, "forbidden")
        assert problem["client"] == "bot"
    with live.client(ADMIN) as http:
        assert_problem(http.get("/v1/kinds"), 401, "unauthorized")
    (entry,) = live.store.journal(r.json()["id"])
    assert entry.actor == "ops"


def test_tokens_from_a_config_file_with_the_secret_in_the_environment(
    start_live: Callable[..., Live], tmp_path: Path
) -> None:
    secret = "file-token-kept-in-the-env-0123456789"
    path = tmp_path / "tenure.toml"
    path.write_text('[[tokens]]\nclient = "ci"\ntoken_env = "CI_TOKEN"\nscopes = ["write"]\n')
    live = start_live(ServiceConfig.load(path, env={"CI_TOKEN": secret}))
    with live.client(secret) as http:
        r = http.post("/v1/resources", json={"kind": "image", "spec": {"name": "x"}})
    assert r.status_code == 201, r.text


def test_auth_off_from_the_environment_wins_over_the_file(start_live: Callable[..., Live], tmp_path: Path) -> None:
    path = tmp_path / "tenure.toml"
    path.write_text("[auth]\nenabled = true\n")
    live = start_live(ServiceConfig.load(path, env={"TENURE_AUTH": "off"}))
    with live.client() as http:
        assert http.get("/v1/resources").status_code == 200
