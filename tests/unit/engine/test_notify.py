"""The data plane's Notifier: what it classifies as worth another try, what it keeps, its timeout and client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tenure.engine.notify import Notifier
from tenure.engine.planes import ControlPlaneRef

CP = "http://127.0.0.1:8800"
URL = f"{CP}/v1/callbacks"
BEARER = "dp1-bearer-0123456789abcdef"
TOKEN = "callback-token-0123456789abcdef"
BODY = {"resourceId": "t-1", "token": TOKEN, "key": "dataplane", "status": "done"}


def client(answer: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request] | None = None) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return answer(request)

    return httpx.Client(transport=httpx.MockTransport(handle), timeout=30.0)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        *[(200, "delivered"), (202, "delivered")],
        *[(408, "retry"), (425, "retry"), (429, "retry"), (503, "retry")],
        *[(302, "refused"), (403, "refused"), (409, "refused")],
    ],
)
def test_each_answer_is_delivered_retried_or_refused(status: int, outcome: str) -> None:
    with client(lambda r: httpx.Response(status, json={"detail": "x"})) as http:
        sent = Notifier(ControlPlaneRef(CP, BEARER), client=http).post(URL, BODY)
    assert (sent.outcome, sent.status) == (outcome, status)


@pytest.mark.parametrize("status", [409, 503])
def test_what_the_notifier_keeps_of_an_answer_has_no_token(status: int) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        said = f"refused {request.content.decode()} from {request.headers['Authorization']}"
        return httpx.Response(status, json={"detail": said})

    with client(echo) as http:
        sent = Notifier(ControlPlaneRef(CP, BEARER), client=http).post(URL, BODY)

    assert sent.error is not None
    assert TOKEN not in sent.error
    assert BEARER not in sent.error
    assert TOKEN[:10] not in sent.error
    assert "<token>" in sent.error
    assert sent.error.startswith(f"{CP} answered {status}: ")


def test_the_timeout_holds_for_a_client_passed_in_too() -> None:
    seen: list[httpx.Request] = []
    with client(lambda r: httpx.Response(202), seen) as http:
        Notifier(ControlPlaneRef(CP, BEARER), timeout=0.25, client=http).post(URL, BODY)
    timeouts: dict[str, Any] = seen[0].extensions["timeout"]
    assert set(timeouts.values()) == {0.25}
    assert seen[0].headers["Authorization"] == f"Bearer {BEARER}"


def test_a_redirect_is_not_followed_even_by_a_client_that_would() -> None:
    seen: list[httpx.Request] = []

    def moved(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"Location": "http://collector.example/"})

    transport = httpx.MockTransport(lambda r: (seen.append(r), moved(r))[1])
    with httpx.Client(transport=transport, follow_redirects=True) as http:
        sent = Notifier(ControlPlaneRef(CP, BEARER), client=http).post(URL, BODY)
    assert (sent.outcome, sent.status) == ("refused", 307)
    assert [str(r.url) for r in seen] == [URL]


def test_close_closes_only_a_client_it_made() -> None:
    made = Notifier(ControlPlaneRef(CP, BEARER))
    with made:
        pass
    assert made._client.is_closed
    with client(lambda r: httpx.Response(202)) as http:
        shared = Notifier(ControlPlaneRef(CP, BEARER), client=http)
        shared.close()
        assert not http.is_closed
        assert shared.post(URL, BODY).outcome == "delivered"


def test_a_callback_url_off_the_control_plane_is_refused_unsent() -> None:
    seen: list[httpx.Request] = []
    with client(lambda r: httpx.Response(202), seen) as http:
        sent = Notifier(ControlPlaneRef(CP, BEARER), client=http).post("http://collector.example/v1/callbacks", BODY)
    assert sent.outcome == "refused"
    assert seen == []
