"""Operations through a real server: /healthz, /readyz, Prometheus /metrics, structured access logs,
and a database outage answered 503 with Retry-After (never a stack trace).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from tenure import open_store
from tenure.service.logs import JsonFormatter, TextFormatter
from tenure.store.migrator import latest_version
from tenure.store.protocol import EngineStore
from tests.support.live_server import ADMIN, READER, all_scopes_config
from tests.support.problems import assert_problem
from tests.support.service_support import KINDS, Asker, Live, access_line, ticket_worker

pytestmark = pytest.mark.timeout(60)


# --- health and readiness ------------------------------------------------------------------------


def test_healthz_says_ok_without_a_token(live: Live) -> None:
    r = live.anonymous.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_readyz_says_ready_with_the_schema_version(live: Live) -> None:
    r = live.anonymous.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "schemaVersion": latest_version(live.store.dialect),
        "database": live.store.dialect,
    }


@pytest.fixture
def unmigrated(tmp_path: Path) -> Any:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()  # an empty database file: no tables at all
    s = open_store(f"sqlite:///{path}", KINDS, check_schema=False)
    yield s
    s.close()


def test_readyz_is_503_with_retry_after_on_a_database_not_migrated(
    start_live: Callable[..., Live], unmigrated: EngineStore
) -> None:
    live = start_live(store=unmigrated)
    with live.client() as http:
        r = http.get("/readyz")
    problem = assert_problem(r, 503, "not-ready")
    assert (problem["schemaVersion"], problem["requiredVersion"]) == (0, latest_version("sqlite"))
    assert "tenure migrate" in problem["detail"]
    with live.client() as http:
        assert http.get("/healthz").status_code == 200, "the process is alive all the same"


def test_requests_on_a_database_not_migrated_are_503_not_500(
    start_live: Callable[..., Live], unmigrated: EngineStore
) -> None:
    live = start_live(store=unmigrated)
    for method, path, body in [
        ("GET", "/v1/resources", None),
        ("GET", "/v1/resources/some-id", None),
        ("POST", "/v1/resources", {"kind": "image", "spec": {"name": "x"}}),
    ]:
        with live.client(ADMIN) as http:
            problem = assert_problem(http.request(method, path, json=body), 503, "not-ready")
        assert "Traceback" not in problem["detail"]


# --- metrics --------------------------------------------------------------------------------------------


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(family: Any, suffix: str = "", **labels: str) -> float:
    for s in family.samples:
        if s.name == family.name + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {family.name}{suffix} {labels} in {family.samples}")


def test_metrics_parse_and_have_every_family(start_live: Callable[..., Live], service_store: EngineStore) -> None:
    asker = Asker(("a",))
    worker = ticket_worker(service_store, asker)
    live = start_live(workers=[worker])
    for name in ("a", "b"):
        service_store.create("image", {"name": name})
    ticket = service_store.create("ticket")
    worker.start()
    try:
        assert live.reader.get("/v1/kinds").status_code == 200
        limit = time.monotonic() + 10
        with live.client() as http:
            while True:  # until the worker has counted the step it ran
                r = http.get("/metrics")
                assert r.status_code == 200, r.text
                if "tenure_engine_steps_waited_total 1.0" in r.text:
                    break
                assert time.monotonic() < limit, r.text
                time.sleep(0.02)
        assert service_store.get(ticket.id).state == "awaiting"
    finally:
        worker.stop(timeout=10)

    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    families = _families(r.text)
    for name in (
        "tenure_transitions",
        "tenure_engine_step_seconds",
        "tenure_engine_retries",
        "tenure_engine_claim_takeovers",
        "tenure_engine_claims",
        "tenure_engine_steps_waited",
        "tenure_engine_callbacks_applied",
        "tenure_resources",
        "tenure_oldest_wait_seconds",
        "tenure_workers",
        "tenure_http_requests",
    ):
        assert name in families, f"{name} missing from {sorted(families)}"

    assert _value(families["tenure_transitions"], "_total", source="engine", operation="step") == 1
    assert _value(families["tenure_engine_steps_waited"], "_total") == 1
    assert _value(families["tenure_engine_claims"], "_total") == 1
    assert _value(families["tenure_engine_retries"], "_total") == 0
    assert _value(families["tenure_engine_claim_takeovers"], "_total") == 0
    assert _value(families["tenure_engine_step_seconds"], "_count") == 1
    assert _value(families["tenure_workers"]) == 1
    resources = families["tenure_resources"]
    assert _value(resources, kind="image", state="queued", role="rest") == 2
    assert _value(resources, kind="ticket", state="awaiting", role="wait") == 1
    assert _value(families["tenure_oldest_wait_seconds"], kind="ticket", state="awaiting") >= 0

    # Requests are counted once answered: between two scrapes, the reads in between and the first scrape.
    with live.client() as http:
        before = _families(http.get("/metrics").text)
        for _ in range(3):
            assert live.reader.get("/v1/kinds").status_code == 200
        after = _families(http.get("/metrics").text)
    gets = [_value(f["tenure_http_requests"], "_total", method="GET", status="200") for f in (before, after)]
    assert gets[1] - gets[0] == 3 + 1, gets


def _transitions(families: dict[str, Any], source: str, operation: str) -> float:
    return _value(families["tenure_transitions"], "_total", source=source, operation=operation)


def test_metrics_without_workers_still_show_the_backlog(live: Live) -> None:
    # The module's server is shared by its tests: its counters say what this test did by their change.
    with live.client() as http:
        before = _families(http.get("/metrics").text)
    live.store.create("image", {"name": "x"})  # straight into the store: not a write through the API
    created = live.writer.post("/v1/resources", json={"kind": "image", "spec": {"name": "y"}})
    assert live.writer.post(f"/v1/resources/{created.json()['id']}/events", json={"event": "upload"}).is_success
    with live.client() as http:
        r = http.get("/metrics")
    assert r.status_code == 200, r.text
    families = _families(r.text)
    assert _value(families["tenure_resources"], kind="image", state="queued", role="rest") == 1
    deltas = {
        (source, operation): _transitions(families, source, operation) - _transitions(before, source, operation)
        for source, operation in [("engine", "step"), ("api", "create"), ("api", "event"), ("api", "desired")]
    }
    assert deltas == {("engine", "step"): 0, ("api", "create"): 1, ("api", "event"): 1, ("api", "desired"): 0}


def _requests_by_status(live: Live, method: str, status: int) -> float:
    text = live.anonymous.get("/metrics").text
    prefix = f'tenure_http_requests_total{{method="{method}",status="{status}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def test_a_body_too_large_is_counted_in_the_request_metrics(start_live: Callable[..., Live]) -> None:
    live = start_live(all_scopes_config(max_body=1024))
    before = _requests_by_status(live, "POST", 413)

    r = live.writer.post("/v1/resources", json={"kind": "job", "spec": {"x": "y" * 4096}})
    assert r.status_code == 413

    assert _requests_by_status(live, "POST", 413) == before + 1


# --- structured logs -----------------------------------------------------------------------------------


def test_each_request_is_one_access_line_with_resource_id_and_kind(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tenure.access")
    created = live.writer.post("/v1/resources", json={"kind": "image", "spec": {"name": "x"}})
    rid = created.json()["id"]
    live.reader.get(f"/v1/resources/{rid}")
    live.writer.post(f"/v1/resources/{rid}/events", json={"event": "upload"})

    line = access_line(caplog, f"/v1/resources/{rid}")
    fields = line.__dict__
    assert (fields["method"], fields["status"], fields["client"]) == ("GET", 200, "reader")
    assert (fields["resource_id"], fields["kind"]) == (rid, "image")
    assert fields["duration_ms"] >= 0
    assert f"resource_id={rid}" in TextFormatter().format(line)
    assert '"kind": "image"' in JsonFormatter().format(line)
    event_line = access_line(caplog, f"/v1/resources/{rid}/events").__dict__
    assert (event_line["resource_id"], event_line["kind"], event_line["status"]) == (rid, "image", 200)
    create_line = access_line(caplog, "/v1/resources").__dict__
    assert (create_line["resource_id"], create_line["status"]) == (rid, 201)


def test_a_refused_request_on_a_resource_is_logged_with_its_id(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tenure.access")
    rid = live.store.create("image", {"name": "x"}).id
    assert live.writer.post(f"/v1/resources/{rid}/events", json={"event": "activate"}).status_code == 409
    line = access_line(caplog, f"/v1/resources/{rid}/events").__dict__
    assert (line["status"], line.get("resource_id")) == (409, rid)


def test_a_callback_is_logged_with_its_resource_id(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tenure.access")
    rid = live.store.create("image", {"name": "x"}).id
    live.anonymous.post("/v1/callbacks", json={"resourceId": rid, "token": "t" * 20, "key": "k", "status": "done"})
    line = access_line(caplog, "/v1/callbacks").__dict__
    assert (line["status"], line["resource_id"]) == (403, rid)


# --- a database outage ----------------------------------------------------------------------------------


@pytest.fixture
def outage(request: pytest.FixtureRequest, dialect: str, tmp_path: Path) -> Any:
    """(store, cut): a store of ``dialect`` on its own database, and a function that takes it away."""
    if dialect == "postgres":
        make = request.getfixturevalue("make_pg_database")
        admin = request.getfixturevalue("pg_admin_url")
        url = make()
        name = url.rsplit("/", 1)[1]
        s = open_store(url + "?connect_timeout=1", KINDS, check_schema=False)

        def cut() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))

    else:
        s = open_store(f"sqlite:///{tmp_path}/gone.db", KINDS, check_schema=False)

        def cut() -> None:
            s.close()  # every later query finds the store unavailable

    s.migrate()
    yield s, cut
    s.close()


def test_a_database_outage_is_503_with_retry_after_and_no_internals(
    start_live: Callable[..., Live], outage: Any, dialect: str
) -> None:
    store, cut = outage
    live = start_live(store=store)
    rid = live.admin.post("/v1/resources", json={"kind": "image", "spec": {"name": "x"}}).json()["id"]

    cut()

    for method, path, body in [
        ("GET", f"/v1/resources/{rid}", None),
        ("POST", "/v1/resources", {"kind": "image", "spec": {"name": "y"}}),
        ("POST", f"/v1/resources/{rid}/events", {"event": "upload"}),
    ]:
        with live.client(ADMIN) as http:
            r = http.request(method, path, json=body)
        problem = assert_problem(r, 503, "unavailable")
        text = r.text.lower()
        for leak in ("psycopg", "sqlite", "tenure_test_", "127.0.0.1", "traceback", "connection"):
            assert leak not in text, (leak, r.text)
        assert problem["instance"] == path
    with live.client() as http:
        assert http.get("/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/readyz", "/metrics"])
def test_readiness_and_metrics_during_an_outage_are_503(
    start_live: Callable[..., Live], outage: Any, path: str
) -> None:
    store, cut = outage
    live = start_live(store=store)
    cut()
    with live.client(READER) as http:
        r = http.get(path)
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["retry-after"]) > 0


# --- the OpenAPI document and /docs ---------------------------------------------------------------

#: The operations anyone may call, without a token.
PUBLIC = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}


def _operations(live: Live) -> dict[tuple[str, str], dict[str, Any]]:
    document = live.anonymous.get("/openapi.json").json()
    return {(method, path): op for path, item in document["paths"].items() for method, op in item.items()}


def test_openapi_lists_only_the_statuses_each_operation_can_answer(live: Live) -> None:
    operations = _operations(live)

    # 431 and 500 are any operation's: header fields are refused before routing, and a bug is a bug.
    assert set(operations["get", "/healthz"]["responses"]) == {"200", "431", "500"}
    for key in PUBLIC:
        assert not {"401", "403"} & set(operations[key]["responses"]), key
    for key, op in operations.items():
        if key not in PUBLIC:
            assert {"401", "403"} <= set(op["responses"]), key
        for status, response in op["responses"].items():
            if int(status) >= 400:
                assert set(response["content"]) == {"application/problem+json"}, (key, status)
    assert set(operations["get", "/v1/kinds"]["responses"]) == {"200", "401", "403", "431", "500"}
    assert "415" in operations["post", "/v1/resources"]["responses"]
    assert "415" not in operations["get", "/v1/resources"]["responses"]
    assert "412" not in operations["get", "/v1/resources"]["responses"]


def test_openapi_documents_the_response_headers_set(live: Live) -> None:
    operations = _operations(live)

    def headers(key: tuple[str, str], status: str) -> set[str]:
        return set(operations[key]["responses"][status].get("headers", {}))

    create = ("post", "/v1/resources")
    assert headers(create, "201") >= {"ETag", "Location"}
    assert headers(create, "200") >= {"ETag", "Location", "Idempotent-Replayed"}
    assert headers(("get", "/v1/resources/{resource_id}"), "200") >= {"ETag"}
    assert headers(("get", "/v1/resources/{resource_id}"), "304") >= {"ETag"}
    assert headers(("post", "/v1/resources/{resource_id}/events"), "200") >= {"ETag"}
    assert headers(("put", "/v1/resources/{resource_id}/desired-state"), "202") >= {"ETag"}
    assert headers(("get", "/v1/resources"), "200") >= {"Link"}
    with_503 = [key for key, op in operations.items() if "503" in op["responses"]]
    assert ("get", "/readyz") in with_503
    assert all("Retry-After" in headers(key, "503") for key in with_503), with_503


def test_docs_loads_every_script_and_stylesheet_from_the_same_server(live: Live) -> None:
    page = live.anonymous.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")

    urls = re.findall(r'<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)"', page.text)
    assert any(url.endswith(".js") for url in urls), urls
    assert any(url.endswith(".css") for url in urls), urls
    for url in urls:
        assert url.startswith("/"), f"{url} is not on this server"
        assert not url.startswith("//"), f"{url} is not on this server"
        asset = live.anonymous.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
