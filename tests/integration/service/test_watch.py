"""``/v1/watch`` through a real server: Server-Sent Events of resource changes, filtered, and resumed
after a disconnect with ``Last-Event-ID`` so that nothing is lost and nothing comes twice.

Each test ends a stream's wait with a change it knows must come next (a sentinel): that proves that
nothing else came in between without waiting for silence.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tenure.service import create_app
from tests.support.live_server import READER, LiveServer, all_scopes_config
from tests.support.problems import assert_problem
from tests.support.service_support import Live
from tests.support.sse import SseEvent, SseReader

pytestmark = pytest.mark.timeout(60)

#: Longest wait for the next event (the service looks for changes at least once a second).
READ_TIMEOUT = 10.0


@contextmanager
def watching(live: Live, *, last_event_id: str | None = None, **params: str) -> Iterator[SseReader]:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    timeout = httpx.Timeout(READ_TIMEOUT, read=READ_TIMEOUT)
    with (
        live.client(READER, timeout=timeout) as http,
        http.stream("GET", "/v1/watch", params=params, headers=headers) as r,
    ):
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-store"
        yield SseReader(r)


def key(e: SseEvent) -> tuple[str, int, str]:
    data = e.json()
    return (data["resourceId"], data["version"], data["event"])


def create(live: Live, name: str = "img") -> str:
    r = live.writer.post("/v1/resources", json={"kind": "image", "spec": {"name": name}})
    assert r.status_code == 201, r.text
    rid: str = r.json()["id"]
    return rid


def fire(live: Live, rid: str, *events: str) -> None:
    for event in events:
        r = live.writer.post(f"/v1/resources/{rid}/events", json={"event": event})
        assert r.status_code == 200, r.text


def test_changes_arrive_as_events_with_ids_and_the_journal_entry(live: Live) -> None:
    with watching(live) as stream:
        rid = create(live)
        fire(live, rid, "upload", "activate")
        got = stream.take(3)

    assert [e.event for e in got] == ["change"] * 3
    assert [key(e) for e in got] == [(rid, 1, "@create"), (rid, 2, "upload"), (rid, 3, "activate")]
    ids = [e.id for e in got]
    assert all(ids)
    assert len(set(ids)) == 3
    data: dict[str, Any] = got[1].json()
    assert (data["fromState"], data["toState"], data["actor"]) == ("queued", "saving", "writer")
    assert data.get("kind", "image") == "image"


def test_without_a_position_the_stream_starts_from_now(live: Live) -> None:
    before = create(live, "before")
    fire(live, before, "upload")
    with watching(live) as stream:
        after = create(live, "after")
        got = [key(stream.next())]
        while got[-1][0] != after:
            got.append(key(stream.next()))
    if live.store.dialect == "sqlite":
        assert got == [(after, 1, "@create")]
    else:
        # PostgreSQL's feed may start a little before now (while any older transaction in the cluster
        # is still running it cannot tell what committed before the stream began): never after it.
        assert got[-1] == (after, 1, "@create")
        assert set(got[:-1]) <= {(before, 1, "@create"), (before, 2, "upload")}


def test_changes_made_by_the_engine_and_the_store_are_streamed_too(live: Live) -> None:
    with watching(live) as stream:
        r = live.store.create("image", {"name": "direct"})
        live.store.fire(r.id, "stage")
        assert [key(e) for e in stream.take(2)] == [(r.id, 1, "@create"), (r.id, 2, "stage")]


def test_the_kind_filter(live: Live) -> None:
    with watching(live, kind="job") as stream:
        create(live)
        job = live.writer.post("/v1/resources", json={"kind": "job", "spec": {}}).json()["id"]
        live.store.fire(job, "request")
        assert [key(e) for e in stream.take(2)] == [(job, 1, "@create"), (job, 2, "request")]


def test_the_resource_filter(live: Live) -> None:
    mine = create(live, "mine")
    with watching(live, resource=mine, after="beginning") as stream:
        other = create(live, "other")
        fire(live, other, "upload", "activate")
        fire(live, mine, "upload")
        fire(live, other, "deactivate")
        fire(live, mine, "activate")
        assert [key(e) for e in stream.take(3)] == [(mine, 1, "@create"), (mine, 2, "upload"), (mine, 3, "activate")]


def test_the_state_filter_gives_changes_into_that_state(live: Live) -> None:
    a, b = create(live, "a"), create(live, "b")
    with watching(live, state="active") as stream:
        fire(live, a, "upload", "activate", "deactivate")
        fire(live, b, "stage")
        fire(live, a, "reactivate")
        got = stream.take(2)
    assert [key(e) for e in got] == [(a, 3, "activate"), (a, 5, "reactivate")]
    assert {e.json()["toState"] for e in got} == {"active"}


def test_filters_combine(live: Live) -> None:
    a, b = create(live, "a"), create(live, "b")
    with watching(live, kind="image", resource=b, state="saving") as stream:
        fire(live, a, "upload")
        fire(live, b, "stage", "reset", "upload")
        assert [key(e) for e in stream.take(1)] == [(b, 4, "upload")]


def test_a_reconnect_with_last_event_id_gets_exactly_the_missed_changes(live: Live) -> None:
    with watching(live) as stream:
        r = create(live, "r")
        fire(live, r, "upload")
        seen = stream.take(2)
    last = seen[-1].id
    assert last is not None
    assert [key(e) for e in seen] == [(r, 1, "@create"), (r, 2, "upload")]

    # Disconnected: these must all come after the reconnect, once each.
    fire(live, r, "activate", "deactivate")
    s = create(live, "s")
    fire(live, r, "reactivate")
    missed = [(r, 3, "activate"), (r, 4, "deactivate"), (s, 1, "@create"), (r, 5, "reactivate")]

    with watching(live, last_event_id=last) as stream:
        again = stream.take(len(missed))
        fire(live, s, "upload")  # the sentinel: the next event after the missed ones
        sentinel = stream.next()

    assert [key(e) for e in again] == missed
    assert key(sentinel) == (s, 2, "upload")
    all_ids = [e.id for e in [*seen, *again, sentinel]]
    assert len(set(all_ids)) == len(all_ids), "no change twice"


def test_after_a_position_in_the_query_resumes_like_last_event_id(live: Live) -> None:
    with watching(live) as stream:
        r = create(live)
        position = stream.next().id
    assert position is not None
    fire(live, r, "upload")
    with watching(live, after=position) as stream:
        assert key(stream.next()) == (r, 2, "upload")


def test_last_event_id_wins_over_after(live: Live) -> None:
    with watching(live) as stream:
        r = create(live)
        fire(live, r, "upload")
        first, second = stream.take(2)
    assert first.id is not None
    assert second.id is not None
    fire(live, r, "activate")
    with watching(live, last_event_id=second.id, after=first.id) as stream:
        assert key(stream.next()) == (r, 3, "activate")


def test_after_beginning_replays_the_whole_journal_then_follows(live: Live) -> None:
    a = create(live, "a")
    fire(live, a, "upload", "activate")
    b = create(live, "b")
    fire(live, b, "stage")
    history = [(a, 1, "@create"), (a, 2, "upload"), (a, 3, "activate"), (b, 1, "@create"), (b, 2, "stage")]

    with watching(live, after="beginning") as stream:
        replayed = stream.take(len(history))
        fire(live, a, "deactivate")
        follow = stream.next()

    assert [key(e) for e in replayed] == history
    assert key(follow) == (a, 4, "deactivate")


def test_a_replay_longer_than_one_batch_comes_whole_and_in_order(live: Live) -> None:
    r = live.store.create("image", {"name": "busy"})
    live.store.fire(r.id, "upload")
    live.store.fire(r.id, "activate")
    for i in range(130):
        live.store.fire(r.id, "deactivate" if i % 2 == 0 else "reactivate")
    total = 3 + 130

    with watching(live, after="beginning", resource=r.id) as stream:
        got = stream.take(total)
        fire(live, r.id, "deactivate" if total % 2 == 1 else "reactivate")
        last = stream.next()

    assert [e.json()["version"] for e in got] == list(range(1, total + 1))
    assert last.json()["version"] == total + 1


@pytest.mark.parametrize("position", ["nonsense", "-1", "999999999999999999999", "beginning2", "0:0:0"])
def test_an_invalid_position_is_400(live: Live, position: str) -> None:
    body = assert_problem(live.reader.get("/v1/watch", params={"after": position}), 400, "invalid-cursor")
    assert body["detail"]
    body = assert_problem(live.reader.get("/v1/watch", headers={"Last-Event-ID": position}), 400, "invalid-cursor")


@pytest.mark.parametrize("header", [True, False], ids=["last-event-id", "after"])
def test_an_invalid_position_says_what_a_valid_one_looks_like(live: Live, header: bool) -> None:
    request = {"headers": {"Last-Event-ID": "nonsense"}} if header else {"params": {"after": "nonsense"}}
    body = assert_problem(live.reader.get("/v1/watch", **request), 400, "invalid-cursor")  # type: ignore[arg-type]
    named = "Last-Event-ID" if header else "after"
    assert body["field"] == named
    assert body["detail"].startswith(named)
    assert "32 lowercase hexadecimal digits" in body["detail"]
    assert "beginning" in body["detail"]
    assert "()" not in body["detail"], "no internal function is named"
    assert "latest_position" not in body["detail"]


def test_watch_with_a_state_no_kind_has_is_422_before_streaming_like_the_list(live: Live) -> None:
    listed = assert_problem(live.reader.get("/v1/resources", params={"state": "nosuch"}), 422, "unknown-state")
    with live.reader.stream("GET", "/v1/watch", params={"state": "nosuch"}, timeout=5) as r:
        r.read()
        watched = assert_problem(r, 422, "unknown-state")
    assert watched["state"] == listed["state"] == "nosuch"
    assert watched["detail"] == listed["detail"]


def test_an_unknown_kind_filter_is_422(live: Live) -> None:
    body = assert_problem(live.reader.get("/v1/watch", params={"kind": "teapot"}), 422, "unknown-kind")
    assert body["kind"] == "teapot"


def test_overlong_filters_are_422(live: Live) -> None:
    assert_problem(live.reader.get("/v1/watch", params={"resource": "r" * 65}), 422, "invalid-request")
    assert_problem(live.reader.get("/v1/watch", headers={"Last-Event-ID": "1" * 101}), 422, "invalid-request")


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


def test_a_stream_cut_by_a_server_restart_resumes_on_the_next_server(live: Live) -> None:
    first = LiveServer(create_app(live.store, all_scopes_config()), graceful_seconds=0.5).start()
    try:
        with (
            first.client(READER, timeout=httpx.Timeout(READ_TIMEOUT)) as http,
            http.stream("GET", "/v1/watch") as r,
        ):
            stream = SseReader(r)
            rid = create(live)
            fire(live, rid, "upload")
            seen = stream.take(2)
            first.stop()  # the server goes away under the open stream
            with pytest.raises((httpx.HTTPError, StopIteration)):
                stream.take(1)
    finally:
        first.stop()
    fire(live, rid, "activate")  # while no server was there to tell

    second = LiveServer(create_app(live.store, all_scopes_config())).start()
    try:
        with (
            second.client(READER, timeout=httpx.Timeout(READ_TIMEOUT)) as http,
            http.stream("GET", "/v1/watch", headers={"Last-Event-ID": str(seen[-1].id)}) as r,
        ):
            stream = SseReader(r)
            assert key(stream.next()) == (rid, 3, "activate")
            fire(live, rid, "deactivate")
            assert key(stream.next()) == (rid, 4, "deactivate")
    finally:
        second.stop()
    assert [key(e) for e in seen] == [(rid, 1, "@create"), (rid, 2, "upload")]
