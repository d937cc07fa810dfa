"""Events planned from the answer a client pins them to (tenure.service.snapshots), through a real server.

An event whose ``If-Match`` names the version this process last answered with is planned from that
answer, without reading the row: the store sees one operation, not two. Every answer is the one a
fresh read would have given: 412 when the row moved on since the answer, 409 only when the event is
refused at the pinned version, and the new resource's row, not the old one's, when the id was pruned
and created again at the same version.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tenure import Event, Kind, Role, State
from tenure.store.retention import RetentionPolicy
from tests.store_support import settle
from tests.support.service_support import Live

pytestmark = pytest.mark.timeout(60)

#: A kind whose answers redact part of its data.
VAULT = Kind(
    "vault",
    initial="sealed",
    states=[State("sealed", 1, Role.REST), State("open", 2, Role.REST)],
    events=[Event("unseal", "sealed", "open"), Event("seal", "open", "sealed")],
    secret_data=["token"],
)


def _fire(http: httpx.Client, rid: str, event: str, version: int, data: dict[str, Any] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"event": event} if data is None else {"event": event, "data": data}
    return http.post(f"/v1/resources/{rid}/events", json=body, headers={"If-Match": f'"{version}"'})


def _created(live: Live) -> dict[str, Any]:
    r = live.writer.post("/v1/resources", json={"kind": "image", "spec": {"name": "disk"}})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def test_an_event_pinned_to_the_last_answer_is_one_operation_on_the_store(live: Live) -> None:
    made = _created(live)
    before = live.store.operations
    r = _fire(live.writer, made["id"], "stage", 1)
    assert r.status_code == 200, r.text
    assert live.store.operations - before == 1, "the write alone: the answer it was pinned to was not read again"

    live.store.fire(made["id"], "reset")  # another process: this one never answered version 3
    before = live.store.operations
    r = _fire(live.writer, made["id"], "stage", 3)
    assert r.status_code == 200, r.text
    assert live.store.operations - before == 2, "a version this process did not answer: read, then written"
    assert r.json() == live.reader.get(f"/v1/resources/{made['id']}").json()


def test_an_answer_that_hides_part_of_the_resource_is_not_planned_from(live: Live) -> None:
    live.store.register(VAULT)
    made = live.store.create("vault", data={"token": "s3cret", "n": 1})
    r = live.reader.get(f"/v1/resources/{made.id}")
    assert r.json()["data"] == {"token": "<redacted>", "n": 1}
    before = live.store.operations
    r = _fire(live.writer, made.id, "unseal", 1)
    assert r.status_code == 200, r.text
    assert live.store.operations - before == 2, "its answer's size is not the resource's: not kept, so read"
    assert live.store.get(made.id).data == {"token": "s3cret", "n": 1}


def test_an_event_pinned_to_an_answer_the_row_moved_on_from_is_412(live: Live) -> None:
    made = _created(live)
    live.store.fire(made["id"], "stage")  # version 2, elsewhere
    r = _fire(live.writer, made["id"], "upload", 1)  # allowed in the answer's state, queued
    assert r.status_code == 412, r.text
    assert r.headers["etag"] == '"2"'
    r = _fire(live.writer, made["id"], "activate", 1)  # refused in queued, and the row moved on: still 412
    assert r.status_code == 412, r.text
    row = live.store.get(made["id"])
    assert (row.state, row.version) == ("uploading", 2)


def test_an_event_refused_at_the_answered_version_is_409_with_the_events_allowed(live: Live) -> None:
    made = _created(live)
    r = _fire(live.writer, made["id"], "activate", 1)
    assert r.status_code == 409, r.text
    assert "allowed" in r.json()["detail"]
    assert live.store.get(made["id"]).version == 1


def test_an_event_pinned_after_its_id_was_pruned_and_created_again_applies_to_the_new_resource(live: Live) -> None:
    store = live.store
    store.create("image", {"name": "first"}, resource_id="reused")
    r = _fire(live.writer, "reused", "stage", 1, {"first": True})  # answered: uploading, version 2
    assert r.status_code == 200, r.text
    store.fire("reused", "delete")
    time.sleep(0.01)
    settle(store)
    while store.prune(RetentionPolicy(resources=timedelta(milliseconds=1))).more:
        pass
    assert store.find("reused") is None
    store.create("image", {"name": "second"}, resource_id="reused")
    again = store.fire("reused", "stage")  # uploading at version 2, as the answer this process kept
    assert (again.state, again.version) == ("uploading", 2)

    r = _fire(live.writer, "reused", "import", 2, {"second": True})

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["state"], body["version"], body["data"], body["spec"]["name"]) == (
        "importing",
        3,
        {"second": True},
        "second",
    )
    assert [e.event for e in store.journal("reused")] == ["@create", "stage", "import"]
