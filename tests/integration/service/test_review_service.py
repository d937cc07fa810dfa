"""Review findings on the HTTP service, each pinned by a test against a real server and database.

Each test shows a defect found by reviewing the service; they were fixed, and the tests keep them so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from live_server import all_scopes_config
from service_support import Live, Waiting

pytestmark = pytest.mark.timeout(60)

MakeWaiting = Callable[..., Waiting]


def _answer(waiting: Waiting, key: str, status: str = "done") -> dict[str, Any]:
    return {"resourceId": waiting.resource.id, "token": waiting.token, "key": key, "status": status}


# --- desired state vs. waits ----------------------------------------------------------------------


def test_a_desired_state_set_while_waiting_does_not_supersede_the_awaited_callbacks(
    live: Live, make_waiting: MakeWaiting
) -> None:
    waiting = make_waiting()
    rid = waiting.resource.id

    put = live.writer.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": "done"})
    assert put.status_code == 202, put.text

    # The provisioner answers the attempt that asked: nothing about that attempt changed.
    r = live.anonymous.post("/v1/callbacks", json=_answer(waiting, "a"))
    assert r.status_code == 202, r.text
    r = live.anonymous.post("/v1/callbacks", json=_answer(waiting, "b"))
    assert r.status_code == 202, r.text
    waiting.worker.apply_callbacks()
    assert live.reader.get(f"/v1/resources/{rid}").json()["state"] == "done"


def test_callbacks_accepted_before_a_desired_state_is_set_are_still_applied(
    live: Live, make_waiting: MakeWaiting
) -> None:
    waiting = make_waiting()
    rid = waiting.resource.id
    assert live.anonymous.post("/v1/callbacks", json=_answer(waiting, "a")).status_code == 202
    assert live.anonymous.post("/v1/callbacks", json=_answer(waiting, "b")).status_code == 202

    put = live.writer.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": "done"})
    assert put.status_code == 202, put.text
    waiting.worker.apply_callbacks()

    assert live.reader.get(f"/v1/resources/{rid}").json()["state"] == "done"


# --- PUT is idempotent ----------------------------------------------------------------------------


def test_putting_the_same_desired_state_again_changes_nothing(live: Live) -> None:
    rid = live.writer.post("/v1/resources", json={"kind": "job"}).json()["id"]

    first = live.writer.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": "done"})
    again = live.writer.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": "done"})

    assert first.status_code in (200, 202), first.text
    assert again.status_code in (200, 202), again.text
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.json()["generation"] == first.json()["generation"]


# --- bodies that are stored, then cannot be answered -------------------------------------------------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_deeply_nested_spec_never_gets_a_500_after_it_is_stored(live: Live) -> None:
    body = f'{{"kind": "job", "spec": {{"a": {_nested(300)}}}}}'

    r = live.writer.post("/v1/resources", content=body, headers={"Content-Type": "application/json"})

    # Either refused up front and nothing stored, or stored and then readable like any resource.
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert live.store.list().items == [], "a refused request writes nothing"
    else:
        assert live.reader.get(f"/v1/resources/{r.json()['id']}").status_code == 200
    assert live.reader.get("/v1/resources").status_code == 200


def test_deeply_nested_event_data_never_gets_a_500_after_firing(live: Live) -> None:
    rid = live.writer.post("/v1/resources", json={"kind": "job"}).json()["id"]
    body = f'{{"event": "request", "data": {{"a": {_nested(300)}}}}}'

    r = live.writer.post(f"/v1/resources/{rid}/events", content=body, headers={"Content-Type": "application/json"})

    # Either refused up front and nothing fired, or fired and then readable like any resource.
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert live.store.get(rid).version == 1, "a refused event fires nothing"
    assert live.reader.get(f"/v1/resources/{rid}").status_code == 200


# --- the watch stream ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"kind": "job", "state": "no-such-state"}, id="unknown-state-of-kind"),
        pytest.param({"resource": "a\x00b"}, id="nul-in-resource"),
    ],
)
def test_watch_refuses_bad_filters_up_front(live: Live, params: dict[str, str]) -> None:
    live.writer.post("/v1/resources", json={"kind": "job"})
    with live.reader.stream("GET", "/v1/watch", params=params, timeout=10) as r:
        status = r.status_code
    assert 400 <= status < 500


# --- HTTP semantics ----------------------------------------------------------------------------------


def test_head_is_answered_where_get_is(live: Live) -> None:
    rid = live.writer.post("/v1/resources", json={"kind": "job"}).json()["id"]

    health = live.anonymous.head("/healthz")
    one = live.reader.head(f"/v1/resources/{rid}")

    assert health.status_code == 200, health.headers
    assert one.status_code == 200, one.headers
    assert one.headers.get("ETag") == '"1"'


# --- metrics --------------------------------------------------------------------------------------


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


# --- idempotent creation --------------------------------------------------------------------------


def test_reusing_an_idempotency_key_with_another_sharable_flag_is_refused(live: Live) -> None:
    key = {"Idempotency-Key": "review-sharable-1"}
    first = live.writer.post("/v1/resources", json={"kind": "job", "sharable": True}, headers=key)
    assert first.status_code == 201, first.text

    again = live.writer.post("/v1/resources", json={"kind": "job", "sharable": False}, headers=key)

    assert again.status_code == 422, again.text
