"""Review findings on the HTTP service, each pinned by a test against a real server and database.

Every test here is marked ``xfail(strict=True)`` with the defect it shows: it fails today and is
meant to pass once the defect is fixed (then the marker goes).
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


@pytest.mark.xfail(
    strict=True,
    reason="BUG: store/core.py:386 (_plan_desired bumps version) + store/inbox.py:312 (wait.version must equal "
    "resource version): setting a desired state on a resource that waits for a callback makes the provisioner's "
    "answer 'superseded' (409), so the resource sits until its deadline and re-asks",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="BUG: store/core.py:386 + store/inbox.py:312: callbacks accepted (202) before a desired state is set "
    "are later settled as superseded by the engine, because the desired-state write moved the version the wait "
    "is keyed on; an accepted answer is silently dropped",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="BUG: service/resources.py:266 + store/core.py:365-389: repeating the same PUT desired-state bumps version "
    "and generation and journals again, so a PUT retried by a client or proxy changes the ETag (their If-Match "
    "then fails 412) and disturbs the engine (a claimed step's write is refused)",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="BUG: service/models.py:138 (CreateIn.spec: dict[str, Any], no depth bound) + "
    "service/resources.py:158-173: a spec nested ~300 deep is stored, then the answer cannot be serialised (500); "
    "the resource exists anyway and every GET of it and every list page holding it answers 500 for good",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="BUG: service/models.py:146 (EventIn.data, no depth bound) + service/resources.py:239-244: event data "
    "nested ~300 deep fires the event and merges the data, then the answer fails with 500, so a client retries "
    "an event that already happened",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="BUG: service/watch.py:114-137: the filters are only checked inside the stream (store.changes), after "
    "200 went out: an unknown state of the given kind, or a NUL in resource=, crashes the stream mid-response "
    "('response already started', logged as an unexpected error) and EventSource clients reconnect for ever",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="BUG: service/app.py:145-155 (_methods_for adds HEAD to Allow) but FastAPI routes never serve HEAD: "
    "HEAD answers 405 with 'Allow: GET, HEAD', contradicting itself (RFC 9110 9.3.2: servers that serve GET "
    "should serve HEAD)",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="BUG: service/app.py:98-99: _BodyLimit is added after _Logged, so it wraps it: a 413 is answered "
    "before the logging middleware runs and is neither access-logged nor counted in tenure_http_requests, "
    "hiding oversized-body floods from the metrics",
)
def test_a_body_too_large_is_counted_in_the_request_metrics(start_live: Callable[..., Live]) -> None:
    live = start_live(all_scopes_config(max_body=1024))
    before = _requests_by_status(live, "POST", 413)

    r = live.writer.post("/v1/resources", json={"kind": "job", "spec": {"x": "y" * 4096}})
    assert r.status_code == 413

    assert _requests_by_status(live, "POST", 413) == before + 1


# --- idempotent creation --------------------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="BUG: store/core.py:152-160 (_check_replay compares kind and spec only): a request reusing an "
    "Idempotency-Key with a different 'sharable' is answered 200 Idempotent-Replayed with the first resource, so "
    "the client believes it holds a non-sharable resource that other parties may join; it should be refused (422)",
)
def test_reusing_an_idempotency_key_with_another_sharable_flag_is_refused(live: Live) -> None:
    key = {"Idempotency-Key": "review-sharable-1"}
    first = live.writer.post("/v1/resources", json={"kind": "job", "sharable": True}, headers=key)
    assert first.status_code == 201, first.text

    again = live.writer.post("/v1/resources", json={"kind": "job", "sharable": False}, headers=key)

    assert again.status_code == 422, again.text
