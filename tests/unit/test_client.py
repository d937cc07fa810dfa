"""The HTTP client's side of the wire: requests it builds, answers and problems it parses, the event stream.

No server here: an ``httpx.MockTransport`` plays it, so each test says exactly what comes back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tenure.errors import InvalidArgument, TenureError
from tenure.service.client import ApiError, Change, Client, ServerEvent, ServerUnreachable, SseParser

TOKEN = "s3cret-token-0123456789"
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, token: str | None = TOKEN) -> Client:
    return Client("http://tenure.test:8080/", token=token, transport=httpx.MockTransport(handler))


def resource(**changes: Any) -> dict[str, Any]:
    return {"id": "r1", "kind": "image", "state": "queued", "version": 1, **changes}


def problem(status: int, slug: str, detail: str, **extensions: Any) -> httpx.Response:
    body = {"type": f"urn:tenure:problem:{slug}", "title": slug.replace("-", " "), "status": status, "detail": detail}
    return httpx.Response(
        status, json={**body, "instance": "/v1/x", **extensions}, headers={"content-type": "application/problem+json"}
    )


# --- requests ------------------------------------------------------------------------------------


def test_token_goes_in_the_authorization_header_and_nowhere_else() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=resource())

    api = client(handler)
    assert api.get("r1")["state"] == "queued"
    assert seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen[0].url == "http://tenure.test:8080/v1/resources/r1"
    assert TOKEN not in repr(api)
    anonymous = client(handler, token=None)
    anonymous.get("r1")
    assert "Authorization" not in seen[1].headers


def test_list_sends_only_the_filters_given_and_repeats_states() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"items": [resource()], "next": "r1"})

    page = client(handler).list(kind="image", state=["queued", "active"], desired_state="deleted", limit=1)
    assert page.items == (resource(),)
    assert page.next == "r1"
    params = seen[0].params
    assert params.get_list("state") == ["queued", "active"]
    assert (params["kind"], params["desiredState"], params["limit"]) == ("image", "deleted", "1")
    assert "party" not in params
    assert "after" not in params


def test_iter_walks_every_page() -> None:
    pages = {None: (["a", "b"], "b"), "b": (["c", "d"], "d"), "d": (["e"], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        ids, nxt = pages[request.url.params.get("after")]
        return httpx.Response(200, json={"items": [resource(id=i) for i in ids], "next": nxt})

    assert [r["id"] for r in client(handler).iter(page_size=2)] == ["a", "b", "c", "d", "e"]


def test_writes_send_the_body_if_match_and_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201 if request.method == "POST" else 202, json=resource(version=4))

    api = client(handler)
    api.create("image", {"name": "x"}, sharable=True, idempotency_key="k1")
    api.fire("r1", "upload", data={"size": 3}, if_version=3)
    api.fire("r1", "upload")
    api.set_desired_state("r1", None, if_version=4)
    create, fire, unpinned, desire = seen
    assert json.loads(create.content) == {"kind": "image", "spec": {"name": "x"}, "sharable": True}
    assert create.headers["Idempotency-Key"] == "k1"
    assert (fire.url.path, fire.headers["If-Match"]) == ("/v1/resources/r1/events", '"3"')
    assert json.loads(fire.content) == {"event": "upload", "data": {"size": 3}}
    assert "If-Match" not in unpinned.headers
    assert json.loads(unpinned.content) == {"event": "upload"}
    assert (desire.method, desire.url.path) == ("PUT", "/v1/resources/r1/desired-state")
    assert json.loads(desire.content) == {"desiredState": None}


def test_ids_cannot_reach_another_route() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json=resource())

    client(handler).get("../kinds?x=1")
    assert seen == ["/v1/resources/..%2Fkinds%3Fx%3D1"]


def test_journal_and_history_page_by_version() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        after = int(request.url.params["afterVersion"])
        limit = int(request.url.params["limit"])
        versions = [v for v in range(1, 6) if v > after][:limit]
        nxt = versions[-1] if len(versions) == limit else None
        return httpx.Response(200, json={"items": [{"version": v} for v in versions], "nextAfterVersion": nxt})

    api = client(handler)
    page = api.journal("r1", after_version=1, limit=2)
    assert ([e["version"] for e in page.items], page.next_after_version) == ([2, 3], 3)
    assert [e["version"] for e in api.history("r1", page_size=2)] == [1, 2, 3, 4, 5]


def test_callback_and_diagram() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/diagram"):
            return httpx.Response(200, text="digraph {}", headers={"content-type": "text/vnd.graphviz"})
        return httpx.Response(202, json={"delivery": "accepted"})

    api = client(handler)
    assert api.callback("r1", "tok", "disk", "done", data={"a": 1})["delivery"] == "accepted"
    assert json.loads(seen[0].content) == {
        "resourceId": "r1", "token": "tok", "key": "disk", "status": "done", "data": {"a": 1},
    }  # fmt: skip
    assert api.diagram("image", "dot") == "digraph {}"
    assert seen[1].url.params["format"] == "dot"


# --- errors --------------------------------------------------------------------------------------


def test_problem_documents_become_api_errors_with_every_member() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return problem(
            409, "transition-not-allowed", "event 'x' is not allowed", state="queued", allowed=["upload", "delete"]
        )

    with pytest.raises(ApiError) as caught:
        client(handler).fire("r1", "x")
    err = caught.value
    assert isinstance(err, TenureError)
    assert (err.status, err.type, err.title) == (
        409,
        "urn:tenure:problem:transition-not-allowed",
        "transition not allowed",
    )
    assert str(err) == err.detail == "event 'x' is not allowed"
    assert err.extensions == {"state": "queued", "allowed": ["upload", "delete"]}
    assert err.instance == "/v1/x"


def test_an_error_that_is_no_problem_document_still_says_what_happened() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            502, text="<html><body>Bad   Gateway</body></html>", headers={"content-type": "text/html"}
        )

    with pytest.raises(ApiError) as caught:
        client(handler).get("r1")
    assert caught.value.status == 502
    assert "GET /v1/resources/r1 answered HTTP 502 Bad Gateway: <html><body>Bad Gateway" in str(caught.value)


def test_a_success_that_is_not_json_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="hello", headers={"content-type": "text/plain"})

    with pytest.raises(ApiError, match="not JSON"):
        client(handler).get("r1")


def test_unreachable_servers_are_named_without_credentials_or_token() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    api = Client("http://user:pw@tenure.test:8080", token=TOKEN, transport=httpx.MockTransport(refuse))
    with pytest.raises(ServerUnreachable) as caught:
        api.kinds()
    message = str(caught.value)
    assert message == "cannot reach the tenure server at http://tenure.test:8080: connection failed ([Errno 111] " + (
        "Connection refused)"
    )
    assert TOKEN not in message
    assert "pw" not in message

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ServerUnreachable, match="no answer within 10 s"):
        client(slow).health()


def test_the_url_needs_a_scheme() -> None:
    with pytest.raises(InvalidArgument, match="must start with http:// or https://"):
        Client("localhost:8080")


# --- the event stream ----------------------------------------------------------------------------


def test_sse_parser_follows_the_line_rules() -> None:
    p = SseParser()
    text = ': keep-alive\r\nid: 1\r\nevent: change\r\ndata: {"a":\r\ndata:  1}\r\n\r\nretry: 250\n\nid: 2\rdata: x\r\r'
    events: list[ServerEvent] = []
    # Every way of cutting the text into chunks gives the same events (CR LF split included).
    for cut in range(len(text) + 1):
        p = SseParser()
        events = p.feed(text[:cut]) + p.feed(text[cut:])
        assert events == [
            ServerEvent("change", '{"a":\n 1}', "1", None),
            ServerEvent("message", "x", "2", None),
        ], cut
    assert p.last_id == "2"
    # An event without data is not dispatched, but its id still counts.
    p = SseParser()
    assert p.feed("id: 9\n\n") == []
    assert p.last_id == "9"
    assert p.feed("data: y\n\n") == [ServerEvent("message", "y", "9", None)]
    assert p.feed("id: a\0b\ndata: z\n\n") == [ServerEvent("message", "z", "9", None)]


class _Stream(httpx.SyncByteStream):
    """An event stream body that ends by dropping the connection (or cleanly)."""

    def __init__(self, chunks: list[str], *, drop: bool = True) -> None:
        self.chunks = chunks
        self.drop = drop

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            yield chunk.encode()
        if self.drop:
            raise httpx.ReadError("connection reset by peer")


def _change(position: str, state: str) -> str:
    return f"retry: 1\nid: {position}\nevent: change\ndata: {json.dumps({'resourceId': 'r1', 'toState': state})}\n\n"


def test_watch_resumes_after_a_dropped_connection_with_last_event_id() -> None:
    seen: list[httpx.Request] = []
    bodies = [[_change("p1", "saving"), ": ping\n\n", _change("p2", "active")], [_change("p3", "deleted")]]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if not bodies:
            return problem(400, "invalid-cursor", "enough")
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Stream(bodies.pop(0)))

    connects: list[int] = []
    api = client(handler)
    with api.watch(resource="r1", state="active", on_connect=lambda: connects.append(len(seen))) as changes:
        got = [next(changes) for _ in range(3)]
        assert changes.reconnected == 1
    assert got == [
        Change("p1", {"resourceId": "r1", "toState": "saving"}),
        Change("p2", {"resourceId": "r1", "toState": "active"}),
        Change("p3", {"resourceId": "r1", "toState": "deleted"}),
    ]
    assert [c.to_state for c in got] == ["saving", "active", "deleted"]
    assert got[0].resource_id == "r1"
    assert connects == [1, 2]
    first, second = seen
    assert first.url.params["resource"] == "r1"
    assert first.url.params["state"] == "active"
    assert "Last-Event-ID" not in first.headers
    assert second.headers["Last-Event-ID"] == "p2"
    assert first.headers["Accept"] == "text/event-stream"


def test_watch_refusals_are_raised_at_once_and_endless_drops_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown_kind(request: httpx.Request) -> httpx.Response:
        return problem(422, "unknown-kind", "unknown kind 'x'")

    with pytest.raises(ApiError, match="unknown kind 'x'"):
        next(client(unknown_kind).watch(kind="x"))

    slept: list[float] = []
    monkeypatch.setattr("tenure.service.client.watch.time.sleep", slept.append)
    calls = 0

    def dropping(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Stream([]))

    with pytest.raises(ServerUnreachable, match="failed 4 times in a row"):
        next(client(dropping).watch(reconnects=3))
    assert calls == 4
    assert slept == [1.0, 2.0, 4.0]  # backing off exponentially

    # A stream that delivers something between drops is working: it is resumed however often it drops.
    calls = 0

    def pinging(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls > 6:
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, stream=_Stream([_change("p9", "x")])
            )
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Stream([": ping\n\n"]))

    assert next(client(pinging).watch(reconnects=1)).position == "p9"
    assert calls == 7


def test_watch_close_ends_the_iteration() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = _Stream([_change("p1", "saving"), _change("p2", "active")], drop=False)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)

    watch = client(handler).watch()
    assert next(watch).position == "p1"
    watch.close()
    assert list(watch) == []
