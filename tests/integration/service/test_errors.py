"""Bad input through a real server: each is a 4xx problem document saying what was wrong, and nothing
is written. Malformed JSON, wrong types, unknown fields, oversized bodies (declared and chunked),
unknown routes and methods.

What is refused here is refused before the store is asked, so one dialect is enough.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.support.live_server import ADMIN, all_scopes_config
from tests.support.problems import assert_problem
from tests.support.service_support import Live

pytestmark = pytest.mark.timeout(60)

LIMIT = 2048


@pytest.fixture(scope="module")
def dialect() -> str:
    return "sqlite"


@pytest.fixture
def small(start_live: Callable[..., Live]) -> Live:
    """A service that reads bodies of at most ``LIMIT`` bytes."""
    return start_live(all_scopes_config(max_body=LIMIT))


def nothing_written(live: Live) -> None:
    assert live.store.list().items == [], "nothing may be written"


def _image(rid_name: str = "x") -> dict[str, object]:
    return {"kind": "image", "spec": {"name": rid_name}}


# --- malformed bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b'{"kind": ', b"{kind: 'image'}", b'{"kind": "image",}', b"\xff\xfe", b"nul"])
def test_malformed_json_is_400_saying_where(live: Live, body: bytes) -> None:
    r = live.writer.post("/v1/resources", content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(r, 400, "malformed-json")
    assert "not valid JSON" in problem["detail"]
    assert "position" in problem
    nothing_written(live)


def test_malformed_json_on_events_and_callbacks_is_400(live: Live) -> None:
    rid = live.writer.post("/v1/resources", json=_image()).json()["id"]
    headers = {"Content-Type": "application/json"}
    assert_problem(
        live.writer.post(f"/v1/resources/{rid}/events", content=b"{", headers=headers), 400, "malformed-json"
    )
    assert_problem(
        live.writer.put(f"/v1/resources/{rid}/desired-state", content=b"[", headers=headers), 400, "malformed-json"
    )
    assert_problem(live.anonymous.post("/v1/callbacks", content=b'{"a"', headers=headers), 400, "malformed-json")
    assert live.store.get(rid).version == 1


NOT_JSON_NUMBERS = [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e400", "1e400")]


@pytest.mark.parametrize(("token", "named"), NOT_JSON_NUMBERS)
def test_numbers_json_has_not_are_400_malformed_json_naming_token_and_path(live: Live, token: str, named: str) -> None:
    rid = live.writer.post("/v1/resources", json={"kind": "job"}).json()["id"]
    headers = {"Content-Type": "application/json"}
    for method, path, body, where in [
        ("POST", "/v1/resources", f'{{"kind": "job", "spec": {{"ratio": {token}}}}}', "$.spec.ratio"),
        (
            "POST",
            f"/v1/resources/{rid}/events",
            f'{{"event": "request", "data": {{"n": [1, {token}]}}}}',
            "$.data.n[1]",
        ),
        (
            "POST",
            "/v1/callbacks",
            f'{{"resourceId": "{rid}", "token": "t", "key": "k", "status": "done", "data": {{"x": {token}}}}}',
            "$.data.x",
        ),
    ]:
        r = live.writer.request(method, path, content=body.encode(), headers=headers)
        problem = assert_problem(r, 400, "malformed-json")
        assert problem["token"] == named, problem
        assert problem["path"] == where, problem
        assert named in problem["detail"], problem
        assert where in problem["detail"], problem
    assert [r.id for r in live.store.list().items] == [rid], "nothing but the first resource is written"
    assert live.store.get(rid).version == 1, "no event is fired"


def test_an_integer_too_long_to_convert_is_400_not_a_server_error(live: Live) -> None:
    body = b'{"kind": "job", "spec": {"n": ' + b"9" * 5000 + b"}}"
    r = live.writer.post("/v1/resources", content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(r, 400, "malformed-json")
    assert problem["path"] == "$.spec.n"
    nothing_written(live)


def test_invalid_utf8_is_400_saying_it_is_not_utf8_and_where(live: Live) -> None:
    body = b'{"kind": "job", "spec": {"name": "caf\xe9"}}'
    r = live.writer.post("/v1/resources", content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(r, 400, "malformed-json")
    assert "UTF-8" in problem["detail"]
    assert problem["position"] == body.index(b"\xe9")
    nothing_written(live)


@pytest.mark.parametrize("depth", [40, 5000])
def test_too_deep_nesting_is_400_naming_the_limit(live: Live, depth: int) -> None:
    body = b'{"kind": "job", "spec": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    r = live.writer.post("/v1/resources", content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(r, 400, "too-deeply-nested")
    assert problem["maxDepth"] == 33
    assert "33 levels" in problem["detail"]
    nothing_written(live)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": 3}, "kind"),
        ({"kind": ["image"]}, "kind"),
        ({"kind": "image", "spec": "name=x"}, "spec"),
        ({"kind": "image", "spec": ["x"]}, "spec"),
        ({"kind": "image", "spec": {"name": "x"}, "sharable": "sometimes"}, "sharable"),
        ({"kind": ""}, "kind"),
        ({"kind": "k" * 101}, "kind"),
        ({"spec": {"name": "x"}}, "kind"),
    ],
)
def test_wrong_types_are_422_naming_the_field(live: Live, body: dict[str, object], field: str) -> None:
    problem = assert_problem(live.writer.post("/v1/resources", json=body), 422, "invalid-request")
    assert [e["field"] for e in problem["errors"]] == [field], problem
    assert field in problem["detail"]
    nothing_written(live)


@pytest.mark.parametrize("body", [[], "image", 3, None])
def test_a_body_that_is_not_an_object_is_422(live: Live, body: object) -> None:
    problem = assert_problem(live.writer.post("/v1/resources", json=body), 422, "invalid-request")
    assert problem["errors"]
    nothing_written(live)


def test_a_missing_body_is_422(live: Live) -> None:
    problem = assert_problem(live.writer.post("/v1/resources"), 422, "invalid-request")
    assert problem["errors"]
    nothing_written(live)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", None, "application/json; charset=latin-1"]
)
def test_a_body_not_sent_as_json_is_415_naming_application_json(live: Live, content_type: str | None) -> None:
    rid = live.writer.post("/v1/resources", json=_image()).json()["id"]
    for method, path, body in [
        ("POST", "/v1/resources", _image()),
        ("POST", f"/v1/resources/{rid}/events", {"event": "upload"}),
        ("PUT", f"/v1/resources/{rid}/desired-state", {"desiredState": "deleted"}),
        ("POST", "/v1/callbacks", {"resourceId": rid, "token": "t", "key": "k", "status": "done"}),
    ]:
        request = live.writer.build_request(method, path, content=json.dumps(body).encode())
        if content_type is None:
            request.headers.pop("Content-Type", None)
        else:
            request.headers["Content-Type"] = content_type
        assert request.headers.get("content-type") == content_type
        problem = assert_problem(live.writer.send(request), 415, "unsupported-media-type")
        assert "application/json" in problem["accepted"], problem
        assert "application/json" in problem["detail"]
    assert [r.id for r in live.store.list().items] == [rid]
    assert live.store.get(rid).version == 1


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/merge-patch+json"])
def test_json_media_type_variants_are_accepted(live: Live, content_type: str) -> None:
    r = live.writer.post("/v1/resources", content=json.dumps(_image()).encode(), headers={"Content-Type": content_type})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/resources", {"kind": "image", "spec": {"name": "x"}, "owner": "me"}),
        ("/v1/resources", {"kind": "image", "spec": {"name": "x"}, "desiredState": "active"}),
    ],
)
def test_unknown_fields_are_422_naming_them(live: Live, path: str, body: dict[str, object]) -> None:
    problem = assert_problem(live.writer.post(path, json=body), 422, "invalid-request")
    (error,) = problem["errors"]
    assert error["field"] in body
    assert "unknown field" in error["constraint"]
    nothing_written(live)


def test_unknown_fields_on_events_desired_state_and_callbacks_are_422(live: Live) -> None:
    rid = live.writer.post("/v1/resources", json=_image()).json()["id"]
    for method, path, body in [
        ("POST", f"/v1/resources/{rid}/events", {"event": "upload", "force": True}),
        ("PUT", f"/v1/resources/{rid}/desired-state", {"desiredState": "deleted", "force": True}),
        ("POST", "/v1/callbacks", {"resourceId": rid, "token": "t", "key": "k", "status": "done", "extra": 1}),
    ]:
        problem = assert_problem(live.writer.request(method, path, json=body), 422, "invalid-request")
        assert any("unknown field" in e["constraint"] for e in problem["errors"]), problem
    assert live.store.get(rid).version == 1


def test_an_event_body_of_the_wrong_types_is_422(live: Live) -> None:
    rid = live.writer.post("/v1/resources", json=_image()).json()["id"]
    for body in ({"event": 1}, {"event": ""}, {"event": "upload", "data": [1]}, {}):
        problem = assert_problem(live.writer.post(f"/v1/resources/{rid}/events", json=body), 422, "invalid-request")
        assert problem["errors"]
    assert live.store.get(rid).version == 1


def test_spec_values_json_cannot_carry_into_the_store_are_refused(live: Live) -> None:
    r = live.writer.post("/v1/resources", json={"kind": "job", "spec": {"note": "a\u0000b"}})
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    nothing_written(live)


# --- oversized bodies -------------------------------------------------------------------------------


def _padded(size: int) -> bytes:
    body = json.dumps({"kind": "job", "spec": {"pad": ""}}).encode()
    return body.replace(b'""', b'"' + b"x" * (size - len(body)) + b'"')


def test_a_body_over_the_limit_by_content_length_is_413(small: Live) -> None:
    body = _padded(LIMIT + 1)
    r = small.writer.post("/v1/resources", content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(r, 413, "body-too-large")
    assert problem["limit"] == LIMIT
    nothing_written(small)


def test_a_body_at_the_limit_is_read(small: Live) -> None:
    body = _padded(LIMIT)
    assert len(body) == LIMIT
    r = small.writer.post("/v1/resources", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text


def _chunks(body: bytes, size: int = 512) -> Iterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def test_a_chunked_body_under_the_limit_is_read(small: Live) -> None:
    r = small.writer.post(
        "/v1/resources", content=_chunks(_padded(LIMIT - 100)), headers={"Content-Type": "application/json"}
    )
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    assert r.status_code == 201, r.text


def test_a_chunked_body_over_the_limit_without_content_length_is_413(small: Live) -> None:
    r = small.writer.post(
        "/v1/resources", content=_chunks(_padded(LIMIT * 3)), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    problem = assert_problem(r, 413, "body-too-large")
    assert problem["limit"] == LIMIT


def test_a_chunked_body_over_the_limit_is_refused_and_nothing_written(small: Live) -> None:
    # Whatever the status (see the 413 test above), the body is not read to its end or stored.
    r = small.writer.post(
        "/v1/resources", content=_chunks(_padded(LIMIT * 3)), headers={"Content-Type": "application/json"}
    )
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    nothing_written(small)


def test_a_raw_chunked_request_over_the_limit_is_refused(small: Live) -> None:
    body = _padded(LIMIT * 2)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in _chunks(body)) + b"0\r\n\r\n"
    answer = small.server.raw(
        b"POST /v1/resources HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + ADMIN.encode() + b"\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked
    )
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:300]
    nothing_written(small)


def test_event_and_callback_data_over_the_limit_are_413_naming_it(small: Live) -> None:
    rid = small.writer.post("/v1/resources", json={"kind": "job"}).json()["id"]
    pad = "x" * LIMIT
    for path, body in [
        (f"/v1/resources/{rid}/events", {"event": "request", "data": {"pad": pad}}),
        ("/v1/callbacks", {"resourceId": rid, "token": "t", "key": "k", "status": "done", "data": {"pad": pad}}),
    ]:
        problem = assert_problem(small.writer.post(path, json=body), 413, "body-too-large")
        assert problem["limit"] == LIMIT
        assert str(LIMIT) in problem["detail"]
    assert small.store.get(rid).version == 1


def test_the_default_limit_is_one_mebibyte(live: Live) -> None:
    body = _padded(1024 * 1024 + 1)
    r = live.writer.post("/v1/resources", content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(r, 413, "body-too-large")
    assert problem["limit"] == 1024 * 1024
    nothing_written(live)


# --- unknown routes, methods, ids ------------------------------------------------------------------


def test_an_unknown_route_is_a_404_problem(live: Live) -> None:
    for path in ("/v2/resources", "/v1/resource", "/v1/resources/x/y/z", "/"):
        problem = assert_problem(live.reader.get(path), 404, "not-found")
        assert problem["instance"] == path


WRONG_METHODS = [
    ("DELETE", "/v1/resources", {"GET", "POST"}),
    ("DELETE", "/v1/resources/x", {"GET", "PATCH"}),
    ("GET", "/v1/resources/x/teardown", {"POST"}),
    ("GET", "/v1/resources/x/events", {"POST"}),
    ("POST", "/v1/kinds", {"GET"}),
    ("GET", "/v1/callbacks", {"POST"}),
    ("POST", "/healthz", {"GET"}),
]


@pytest.mark.parametrize(("method", "path", "allowed"), WRONG_METHODS)
def test_a_wrong_method_is_a_405_problem(live: Live, method: str, path: str, allowed: set[str]) -> None:
    r = live.admin.request(method, path)
    assert_problem(r, 405, "method-not-allowed")
    assert "allow" in r.headers


@pytest.mark.parametrize(("method", "path", "allowed"), WRONG_METHODS)
def test_a_405_names_every_allowed_method(live: Live, method: str, path: str, allowed: set[str]) -> None:
    r = live.admin.request(method, path)
    assert_problem(r, 405, "method-not-allowed")
    named = {m.strip() for m in r.headers["allow"].split(",")} - {"HEAD"}
    assert named == allowed
    assert all(m in r.json()["detail"] for m in allowed)


def test_every_resource_endpoint_answers_404_for_an_unknown_id(live: Live) -> None:
    for method, path, body in [
        ("GET", "/v1/resources/nobody", None),
        ("POST", "/v1/resources/nobody/events", {"event": "upload"}),
        ("PUT", "/v1/resources/nobody/desired-state", {"desiredState": "deleted"}),
        ("GET", "/v1/resources/nobody/journal", None),
        ("GET", "/v1/resources/nobody/waits", None),
        ("GET", "/v1/resources/nobody/flows", None),
    ]:
        problem = assert_problem(live.admin.request(method, path, json=body), 404, "resource-not-found")
        assert problem["resourceId"] == "nobody", path


def test_header_fields_over_the_limit_are_431_before_anything_runs(live: Live) -> None:
    body = json.dumps({"kind": "job", "spec": {}}).encode()
    padding = {f"X-Pad-{i}": "p" * 8000 for i in range(10)}  # 80 kB of header fields
    r = live.writer.post("/v1/resources", content=body, headers={"Content-Type": "application/json", **padding})
    problem = assert_problem(r, 431, "headers-too-large")
    assert problem["limit"] == 64 * 1024
    assert problem["size"] > problem["limit"]
    nothing_written(live)
    fine = {f"X-Pad-{i}": "p" * 8000 for i in range(2)}
    assert live.writer.get("/v1/resources", headers=fine).status_code == 200


def test_a_resource_too_big_to_keep_is_413_too_large() -> None:
    from tenure.errors import TooLarge
    from tenure.service.problems import problem_for

    problem = problem_for(TooLarge("the data", 5_000_000, 4_194_304))
    assert (problem.status, problem.slug) == (413, "too-large")
