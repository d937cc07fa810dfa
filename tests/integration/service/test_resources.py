"""``/v1/resources`` and ``/v1/kinds`` through a real server: create, read, list, fire, desired state,
journal, waits, flows; ETag / If-Match / If-None-Match; idempotent creation; keyset pagination.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tenure import Steps, Worker
from tenure.flow.records import FlowRunRow, FlowTaskRow
from tenure.store.inbox import token_hash
from tests.support.live_server import READER, WRITER
from tests.support.problems import assert_problem
from tests.support.service_support import Live, Waiting

pytestmark = pytest.mark.timeout(60)


def create(http: httpx.Client, name: str = "img", **extra: Any) -> dict[str, Any]:
    r = http.post("/v1/resources", json={"kind": "image", "spec": {"name": name}, **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def fire(http: httpx.Client, rid: str, event: str, **headers: str) -> httpx.Response:
    return http.post(f"/v1/resources/{rid}/events", json={"event": event}, headers=headers)


def journal_events(http: httpx.Client, rid: str) -> list[str]:
    r = http.get(f"/v1/resources/{rid}/journal")
    assert r.status_code == 200, r.text
    return [e["event"] for e in r.json()["items"]]


# --- create --------------------------------------------------------------------------------------


def test_create_answers_201_with_location_etag_and_the_resource(live: Live) -> None:
    r = live.writer.post("/v1/resources", json={"kind": "image", "spec": {"name": "disk", "disk_format": "qcow2"}})

    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/v1/resources/{body['id']}"
    assert r.headers["etag"] == '"1"'
    assert r.headers["content-type"] == "application/json"
    assert "idempotent-replayed" not in r.headers
    assert (body["kind"], body["state"], body["version"]) == ("image", "queued", 1)
    assert body["spec"]["name"] == "disk"
    assert body["spec"]["disk_format"] == "qcow2"
    assert body["data"] == {}
    assert (body["desiredState"], body["generation"], body["observedGeneration"]) == (None, 1, 0)
    assert body["sharable"] is True
    assert body["idempotencyKey"] is None

    got = live.reader.get(r.headers["location"])
    assert got.status_code == 200
    assert got.json() == body
    (created,) = live.reader.get(f"/v1/resources/{body['id']}/journal").json()["items"]
    assert (created["event"], created["toState"], created["actor"]) == ("@create", "queued", "writer")
    assert live.store.get(body["id"]).version == 1


def test_create_honours_sharable(live: Live) -> None:
    body = create(live.writer, sharable=False)
    assert body["sharable"] is False
    assert live.store.get(body["id"]).sharable is False


def test_the_same_idempotency_key_gives_the_same_resource_with_200_and_replayed(live: Live) -> None:
    request = {"kind": "image", "spec": {"name": "once"}}
    first = live.writer.post("/v1/resources", json=request, headers={"Idempotency-Key": "key-1"})
    again = live.writer.post("/v1/resources", json=request, headers={"Idempotency-Key": "key-1"})

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == '"1"'
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["idempotencyKey"] == "key-1"
    page = live.reader.get("/v1/resources").json()
    assert [r["id"] for r in page["items"]] == [first.json()["id"]], "nothing is created twice"


def test_a_replay_after_the_resource_moved_on_still_names_it(live: Live) -> None:
    request = {"kind": "image", "spec": {"name": "moving"}}
    first = live.writer.post("/v1/resources", json=request, headers={"Idempotency-Key": "key-2"}).json()
    assert fire(live.writer, first["id"], "upload").status_code == 200

    again = live.writer.post("/v1/resources", json=request, headers={"Idempotency-Key": "key-2"})

    assert again.status_code == 200
    assert (again.json()["id"], again.json()["state"]) == (first["id"], "saving")
    assert again.headers["etag"] == '"2"'


@pytest.mark.parametrize(
    ("other", "difference"),
    [
        ({"kind": "image", "spec": {"name": "different"}}, "the spec differs"),
        ({"kind": "job", "spec": {}}, "kind 'image' there, 'job' here"),
    ],
)
def test_the_same_idempotency_key_for_a_different_request_is_422(
    live: Live, other: dict[str, Any], difference: str
) -> None:
    first = live.writer.post(
        "/v1/resources", json={"kind": "image", "spec": {"name": "x"}}, headers={"Idempotency-Key": "key-3"}
    ).json()

    r = live.writer.post("/v1/resources", json=other, headers={"Idempotency-Key": "key-3"})

    body = assert_problem(r, 422, "idempotency-key-reused")
    assert (body["key"], body["resourceId"], body["difference"]) == ("key-3", first["id"], difference)
    assert len(live.reader.get("/v1/resources").json()["items"]) == 1, "nothing written"


def _race_creates(clients: list[httpx.Client], key: str) -> list[httpx.Response]:
    """The same create with the same key from every client at once."""
    barrier = threading.Barrier(len(clients))
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def post(http: httpx.Client) -> None:
        barrier.wait(10)
        request = {"kind": "image", "spec": {"name": "x"}}
        r = http.post("/v1/resources", json=request, headers={"Idempotency-Key": key})
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=post, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(answers) == len(clients)
    return answers


def test_concurrent_creates_with_one_idempotency_key_create_once_and_say_so(live: Live) -> None:
    clients = [live.client(WRITER) for _ in range(8)]
    for attempt in range(40):
        answers = _race_creates(clients, f"race-{attempt}")
        assert len({r.json()["id"] for r in answers}) == 1, "one resource for one key"
        created = [r for r in answers if r.status_code == 201]
        replayed = [r for r in answers if r.status_code == 200 and r.headers.get("idempotent-replayed") == "true"]
        assert (len(created), len(replayed)) == (1, len(clients) - 1), (attempt, [r.status_code for r in answers])


def test_an_idempotency_key_over_255_characters_is_refused(live: Live) -> None:
    r = live.writer.post(
        "/v1/resources", json={"kind": "image", "spec": {"name": "x"}}, headers={"Idempotency-Key": "k" * 256}
    )
    body = assert_problem(r, 422, "invalid-request")
    assert "Idempotency-Key" in body["detail"]
    assert live.reader.get("/v1/resources").json()["items"] == []


def test_reusing_an_idempotency_key_with_another_sharable_flag_is_refused(live: Live) -> None:
    key = {"Idempotency-Key": "sharable-1"}
    first = live.writer.post("/v1/resources", json={"kind": "job", "sharable": True}, headers=key)
    assert first.status_code == 201, first.text

    again = live.writer.post("/v1/resources", json={"kind": "job", "sharable": False}, headers=key)

    assert again.status_code == 422, again.text


def test_invalid_spec_errors_carry_field_and_constraint_members(live: Live) -> None:
    r = live.writer.post("/v1/resources", json={"kind": "image", "spec": {"name": "x", "disk_format": "floppy"}})
    body = assert_problem(r, 422, "invalid-spec")
    (error,) = body["errors"]
    assert set(error) == {"field", "constraint"}
    assert error["field"] == "disk_format"
    assert "problems" not in body
    assert live.store.list().items == []


def test_invalid_event_data_errors_carry_field_and_constraint_members(live: Live) -> None:
    rid = live.writer.post("/v1/resources", json={"kind": "job"}).json()["id"]
    r = live.writer.post(f"/v1/resources/{rid}/events", json={"event": "request", "data": {"a": "x\u0000y"}})
    body = assert_problem(r, 422, "invalid-spec")
    assert [e["field"] for e in body["errors"]] == ["data.a"]
    assert "U+0000" in body["errors"][0]["constraint"]
    assert live.store.get(rid).version == 1


#: The longest key client "writer" may send: the store keeps 255 characters, "writer:" included.
WRITERS_KEY_LIMIT = 255 - len("writer:")


@pytest.mark.parametrize(
    ("length", "status", "said"),
    [
        (WRITERS_KEY_LIMIT, 201, ""),
        (WRITERS_KEY_LIMIT + 1, 422, f"at most {WRITERS_KEY_LIMIT} characters for client 'writer'"),
        (256, 422, "at most 255"),
        (0, 422, "at least 1"),
    ],
)
def test_the_idempotency_key_limit_is_the_stores_255_less_the_clients_namespace(
    live: Live, length: int, status: int, said: str
) -> None:
    r = live.writer.post("/v1/resources", json={"kind": "job"}, headers={"Idempotency-Key": "k" * length})
    assert r.status_code == status, r.text
    if status == 422:
        body = assert_problem(r, 422, "invalid-request")
        assert [e["field"] for e in body["errors"]] == ["header.Idempotency-Key"]
        assert said in body["detail"], body
        assert live.store.list().items == []
    else:
        assert r.json()["idempotencyKey"] == "k" * length


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


def test_create_with_an_unknown_kind_is_422_naming_the_known_kinds(live: Live) -> None:
    r = live.writer.post("/v1/resources", json={"kind": "teapot", "spec": {}})
    body = assert_problem(r, 422, "unknown-kind")
    assert body["kind"] == "teapot"
    assert set(body["known"]) >= {"image", "job", "ticket"}


def test_create_with_a_spec_the_kind_refuses_is_422_naming_the_field(live: Live) -> None:
    r = live.writer.post("/v1/resources", json={"kind": "image", "spec": {"name": "x", "disk_format": "floppy"}})
    body = assert_problem(r, 422, "invalid-spec")
    assert body["kind"] == "image"
    assert [e["field"] for e in body["errors"]] == ["disk_format"]
    assert all(isinstance(e["constraint"], str) and e["constraint"] for e in body["errors"])
    assert live.reader.get("/v1/resources").json()["items"] == []


# --- get: ETag and If-None-Match -----------------------------------------------------------------


def test_get_gives_the_version_as_etag_and_304_for_a_matching_if_none_match(live: Live) -> None:
    rid = create(live.writer)["id"]
    assert fire(live.writer, rid, "upload").status_code == 200

    r = live.reader.get(f"/v1/resources/{rid}")
    assert r.status_code == 200
    assert r.headers["etag"] == '"2"'
    assert r.json()["version"] == 2

    for tag in ('"2"', 'W/"2"', "*"):
        cached = live.reader.get(f"/v1/resources/{rid}", headers={"If-None-Match": tag})
        assert cached.status_code == 304, tag
        assert cached.headers["etag"] == '"2"'
        assert cached.content == b""

    stale = live.reader.get(f"/v1/resources/{rid}", headers={"If-None-Match": '"1"'})
    assert stale.status_code == 200
    assert stale.json()["version"] == 2


def test_if_none_match_with_a_list_of_etags(live: Live) -> None:
    rid = create(live.writer)["id"]
    r = live.reader.get(f"/v1/resources/{rid}", headers={"If-None-Match": '"7", "1"'})
    assert r.status_code == 304


def test_head_is_answered_where_get_is(live: Live) -> None:
    rid = live.writer.post("/v1/resources", json={"kind": "job"}).json()["id"]

    health = live.anonymous.head("/healthz")
    one = live.reader.head(f"/v1/resources/{rid}")

    assert health.status_code == 200, health.headers
    assert one.status_code == 200, one.headers
    assert one.headers.get("ETag") == '"1"'


def test_get_of_an_unknown_id_is_404_naming_it(live: Live) -> None:
    body = assert_problem(live.reader.get("/v1/resources/no-such-thing"), 404, "resource-not-found")
    assert body["resourceId"] == "no-such-thing"
    assert body["instance"] == "/v1/resources/no-such-thing"


def test_get_of_an_id_no_resource_can_have_is_404(live: Live) -> None:
    for bad in ("has%20space", "x" * 65, "semi%3Bcolon", "%C3%A9t%C3%A9"):
        assert_problem(live.reader.get(f"/v1/resources/{bad}"), 404, "resource-not-found")


# --- fire: If-Match, 409, unknown events ---------------------------------------------------------


def test_fire_moves_the_resource_and_merges_data(live: Live) -> None:
    rid = create(live.writer)["id"]

    r = live.writer.post(f"/v1/resources/{rid}/events", json={"event": "upload", "data": {"bytes": 10}})

    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    assert (r.json()["state"], r.json()["version"], r.json()["data"]) == ("saving", 2, {"bytes": 10})
    last = live.reader.get(f"/v1/resources/{rid}/journal").json()["items"][-1]
    assert (last["event"], last["fromState"], last["toState"]) == ("upload", "queued", "saving")
    assert last["actor"] == "writer"


@pytest.mark.parametrize("if_match", ['"1"', "*"])
def test_fire_with_a_current_strong_if_match_or_a_star_succeeds(live: Live, if_match: str) -> None:
    rid = create(live.writer)["id"]
    r = fire(live.writer, rid, "upload", **{"If-Match": if_match})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2


def weak_etag(named: str) -> str:
    """A weak validator of version 2 (the current one in these tests) or of version 1 (stale)."""
    return 'W/"2"' if named == "current" else 'W/"1"'


@pytest.mark.parametrize("named", ["current", "stale"])
def test_a_weak_if_match_never_matches_so_fire_is_412_and_nothing_is_written(live: Live, named: str) -> None:
    """RFC 9110 (13.1.1): If-Match compares entity tags strongly, and a weak tag never matches strongly:
    not even when it names the current version, and it never stands for any version like ``*``."""
    rid = create(live.writer)["id"]
    assert fire(live.writer, rid, "upload").status_code == 200

    r = fire(live.writer, rid, "activate", **{"If-Match": weak_etag(named)})

    body = assert_problem(r, 412, "precondition-failed")
    assert r.headers["etag"] == '"2"'
    assert (body["resourceId"], body["actualVersion"], body["actualState"]) == (rid, 2, "saving")
    assert live.store.get(rid).version == 2, "nothing written"
    assert journal_events(live.reader, rid) == ["@create", "upload"]


def test_fire_with_a_stale_if_match_is_412_with_the_facts_and_the_current_etag(live: Live) -> None:
    rid = create(live.writer)["id"]
    assert fire(live.writer, rid, "upload", **{"If-Match": '"1"'}).status_code == 200

    r = fire(live.writer, rid, "activate", **{"If-Match": '"1"'})

    body = assert_problem(r, 412, "precondition-failed")
    assert r.headers["etag"] == '"2"'
    assert (body["resourceId"], body["expectedVersion"], body["actualVersion"], body["actualState"]) == (
        rid,
        1,
        2,
        "saving",
    )
    assert live.store.get(rid).version == 2, "nothing written"
    assert journal_events(live.reader, rid) == ["@create", "upload"]


def test_two_writers_with_the_same_if_match_one_wins_one_gets_412(live: Live) -> None:
    rid = create(live.writer)["id"]
    first = fire(live.writer, rid, "upload", **{"If-Match": '"1"'})
    second = fire(live.admin, rid, "stage", **{"If-Match": '"1"'})
    assert first.status_code == 200
    assert_problem(second, 412, "precondition-failed")
    assert live.store.get(rid).state == "saving"


@pytest.mark.parametrize("if_match", ["1", "abc", '"abc"', 'W/"x"', '"-1"', '"1234567890123456789"', ""])
def test_a_malformed_if_match_is_400_and_nothing_is_written(live: Live, if_match: str) -> None:
    rid = create(live.writer)["id"]
    r = fire(live.writer, rid, "upload", **{"If-Match": if_match})
    body = assert_problem(r, 400, "invalid-if-match")
    assert body["ifMatch"] == if_match.strip()
    assert live.store.get(rid).version == 1


def test_an_event_the_state_does_not_allow_is_409_naming_state_event_and_allowed(live: Live) -> None:
    rid = create(live.writer)["id"]

    r = fire(live.writer, rid, "activate")

    body = assert_problem(r, 409, "transition-not-allowed")
    assert (body["resourceId"], body["kind"], body["state"], body["event"]) == (rid, "image", "queued", "activate")
    assert body["allowed"] == ["upload", "stage", "import", "delete"]
    assert "'queued'" in body["detail"]
    assert "upload" in body["detail"]
    assert live.store.get(rid).version == 1


def test_an_event_the_kind_does_not_have_is_422_listing_its_events(live: Live) -> None:
    rid = create(live.writer)["id"]
    body = assert_problem(fire(live.writer, rid, "explode"), 422, "unknown-event")
    assert (body["kind"], body["event"]) == ("image", "explode")
    assert "upload" in body["known"]
    assert live.store.get(rid).version == 1


def test_an_event_refused_by_a_guard_is_409_with_the_reason(live: Live) -> None:
    job = live.writer.post("/v1/resources", json={"kind": "job", "spec": {}}).json()
    live.store.fire(job["id"], "request")
    live.store.fire(job["id"], "callback")

    body = assert_problem(fire(live.writer, job["id"], "finish"), 409, "transition-not-allowed")
    assert (body["state"], body["event"]) == ("held", "finish")
    assert body["reason"]


def test_deeply_nested_event_data_never_gets_a_500_after_firing(live: Live) -> None:
    rid = live.writer.post("/v1/resources", json={"kind": "job"}).json()["id"]
    body = f'{{"event": "request", "data": {{"a": {_nested(300)}}}}}'

    r = live.writer.post(f"/v1/resources/{rid}/events", content=body, headers={"Content-Type": "application/json"})

    # Either refused up front and nothing fired, or fired and then readable like any resource.
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert live.store.get(rid).version == 1, "a refused event fires nothing"
    assert live.reader.get(f"/v1/resources/{rid}").status_code == 200


def test_fire_on_an_unknown_resource_is_404(live: Live) -> None:
    assert_problem(fire(live.writer, "nobody", "upload"), 404, "resource-not-found")
    assert_problem(fire(live.writer, "nobody", "upload", **{"If-Match": '"1"'}), 404, "resource-not-found")


def test_a_final_state_allows_nothing(live: Live) -> None:
    rid = create(live.writer)["id"]
    assert fire(live.writer, rid, "delete").json()["state"] == "deleted"
    body = assert_problem(fire(live.writer, rid, "upload"), 409, "transition-not-allowed")
    assert (body["state"], body["allowed"]) == ("deleted", [])


# --- list: filters and keyset pagination ---------------------------------------------------------


def _follow(http: httpx.Client, first: str) -> tuple[list[list[str]], list[str | None]]:
    """Page through a listing by its Link headers; returns the ids of each page and each Link."""
    pages: list[list[str]] = []
    links: list[str | None] = []
    url: str | None = first
    while url is not None:
        r = http.get(url)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([item["id"] for item in body["items"]])
        link = r.headers.get("link")
        links.append(link)
        if link is None:
            assert body["next"] is None
            url = None
        else:
            assert link.endswith('>; rel="next"'), link
            url = link[1 : link.index(">")]
            assert parse_qs(urlsplit(url).query)["after"] == [body["next"]]
        assert len(pages) < 20, "the pages do not end"
    return pages, links


def test_keyset_pagination_walks_every_resource_once_in_creation_order(live: Live) -> None:
    ids = [create(live.writer, f"img-{i}")["id"] for i in range(7)]

    pages, links = _follow(live.reader, "/v1/resources?limit=3")

    assert [len(p) for p in pages] == [3, 3, 1]
    assert [rid for page in pages for rid in page] == ids
    assert all(link is not None and link.startswith("</v1/resources?") for link in links[:-1])


#: The byte budget of one page of resources, as the list endpoint documents it.
PAGE_BUDGET = 4 * 1024 * 1024


def test_a_page_of_big_resources_ends_at_the_byte_budget_and_next_continues(live: Live) -> None:
    # About 1 MB each: a page of 1000 would be over 6 MB.
    ids = [live.store.create("job", {"pad": str(i) * 1_000_000}).id for i in range(6)]

    sizes = []
    url: str | None = "/v1/resources?limit=1000"
    pages = []
    while url is not None:
        r = live.reader.get(url)
        assert r.status_code == 200, r.text[:300]
        sizes.append(len(r.content))
        body = r.json()
        pages.append([item["id"] for item in body["items"]])
        if body["next"] is not None:
            assert body["next"] == pages[-1][-1], "next continues after the last resource included"
            assert r.headers["link"].startswith("</v1/resources?")
        url = None if body["next"] is None else f"/v1/resources?limit=1000&after={body['next']}"
        assert len(pages) < 10

    assert [len(p) for p in pages] == [4, 2]
    assert [rid for page in pages for rid in page] == ids
    assert all(size <= PAGE_BUDGET + 1024 for size in sizes), sizes


def test_a_resource_bigger_than_the_page_budget_comes_alone(live: Live) -> None:
    # As big as a resource may get (spec and data each under what the store keeps), more than a page holds.
    big = live.store.create("job", {"pad": "x" * 900_000}, data={"pad": "y" * (PAGE_BUDGET - 500_000)}).id
    small = live.store.create("job", {}).id

    first = live.reader.get("/v1/resources", params={"limit": 10}).json()
    second = live.reader.get("/v1/resources", params={"limit": 10, "after": first["next"]}).json()

    assert ([i["id"] for i in first["items"]], first["next"]) == ([big], big)
    assert ([i["id"] for i in second["items"]], second["next"]) == ([small], None)


def test_a_page_of_big_journal_entries_ends_at_the_byte_budget_and_next_continues(live: Live) -> None:
    r = live.store.create("job", {})
    for event in ("request", "callback", "retry", "request", "callback", "retry"):
        r = live.store.fire(r, event, detail={"pad": event * (1_000_000 // len(event))})  # about 1 MB each

    url = f"/v1/resources/{r.id}/journal?limit=1000"
    first = live.reader.get(url)
    assert first.status_code == 200, first.text[:300]
    body = first.json()
    assert [e["version"] for e in body["items"]] == [1, 2, 3, 4, 5]  # the sixth megabyte would not fit
    assert body["nextAfterVersion"] == 5
    assert len(first.content) <= PAGE_BUDGET + 1024
    rest = live.reader.get(url + "&afterVersion=5").json()
    assert ([e["version"] for e in rest["items"]], rest["nextAfterVersion"]) == ([6, 7], None)


def test_the_list_documents_its_page_byte_budget(live: Live) -> None:
    operation = live.reader.get("/openapi.json").json()["paths"]["/v1/resources"]["get"]
    assert "4 MiB" in operation["description"]


def test_pagination_keeps_the_filters_in_the_link(live: Live) -> None:
    images = [create(live.writer, f"img-{i}")["id"] for i in range(5)]
    for rid in images[:4]:
        assert fire(live.writer, rid, "upload").status_code == 200
    live.writer.post("/v1/resources", json={"kind": "job", "spec": {}})

    pages, links = _follow(live.reader, "/v1/resources?kind=image&state=saving&limit=2")

    assert [rid for page in pages for rid in page] == images[:4]
    assert links[0] is not None
    query = parse_qs(urlsplit(links[0][1 : links[0].index(">")]).query)
    assert (query["kind"], query["state"], query["limit"]) == (["image"], ["saving"], ["2"])


def test_a_page_that_ends_exactly_at_the_limit_is_followed_by_an_empty_last_page(live: Live) -> None:
    ids = [create(live.writer, f"img-{i}")["id"] for i in range(4)]
    pages, links = _follow(live.reader, "/v1/resources?limit=2")
    assert [rid for page in pages for rid in page] == ids
    assert links[-1] is None


def test_list_filters_by_kind_and_by_one_or_several_states(live: Live) -> None:
    queued = create(live.writer, "a")["id"]
    saving = create(live.writer, "b")["id"]
    fire(live.writer, saving, "upload")
    staged = create(live.writer, "c")["id"]
    fire(live.writer, staged, "stage")
    job = live.writer.post("/v1/resources", json={"kind": "job", "spec": {}}).json()["id"]

    def ids(query: str) -> list[str]:
        r = live.reader.get(f"/v1/resources?{query}")
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["items"]]

    assert ids("") == [queued, saving, staged, job]
    assert ids("kind=image") == [queued, saving, staged]
    assert ids("kind=job") == [job]
    assert ids("kind=image&state=saving") == [saving]
    assert ids("kind=image&state=queued&state=uploading") == [queued, staged]
    assert ids("state=pending") == [job]
    assert ids("kind=image&state=deleted") == []


def test_list_with_an_unknown_kind_or_state_is_422(live: Live) -> None:
    assert_problem(live.reader.get("/v1/resources?kind=teapot"), 422, "unknown-kind")
    body = assert_problem(live.reader.get("/v1/resources?kind=image&state=boiling"), 422, "unknown-state")
    assert (body["kind"], body["state"]) == ("image", "boiling")
    assert "queued" in body["known"]


def test_list_with_a_state_no_kind_has_is_422(live: Live) -> None:
    assert_problem(live.reader.get("/v1/resources?state=boiling"), 422, "unknown-state")


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten"])
def test_list_with_a_limit_out_of_range_is_422(live: Live, limit: str) -> None:
    body = assert_problem(live.reader.get(f"/v1/resources?limit={limit}"), 422, "invalid-request")
    assert body["errors"][0]["field"] == "query.limit"


# --- desired state -------------------------------------------------------------------------------


def put_desired(http: httpx.Client, rid: str, desired: str | None, **headers: str) -> httpx.Response:
    return http.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": desired}, headers=headers)


def test_set_desired_state_is_202_and_bumps_the_generation(live: Live) -> None:
    rid = create(live.writer)["id"]

    r = put_desired(live.writer, rid, "deleted", **{"If-Match": '"1"'})

    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["desiredState"], body["generation"], body["version"], body["state"]) == ("deleted", 2, 2, "queued")
    assert r.headers["etag"] == '"2"'
    assert live.store.get(rid).desired_state == "deleted"
    assert journal_events(live.reader, rid)[-1] == "@desired"

    cleared = put_desired(live.writer, rid, None)
    assert cleared.status_code == 202
    assert (cleared.json()["desiredState"], cleared.json()["generation"]) == (None, 3)


def test_the_engine_takes_the_resource_to_its_desired_state_later(live: Live) -> None:
    rid = create(live.writer)["id"]
    accepted = put_desired(live.writer, rid, "deleted")
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["state"] == "queued", "accepted, not done: the engine acts later"
    assert accepted.json()["observedGeneration"] < accepted.json()["generation"]

    Worker(live.store, Steps(), name="reconciler").run_until_idle()

    got = live.reader.get(f"/v1/resources/{rid}").json()
    assert (got["state"], got["desiredState"]) == ("deleted", "deleted")
    assert got["observedGeneration"] == got["generation"] == 2
    history = live.reader.get(f"/v1/resources/{rid}/journal").json()["items"]
    assert [(e["event"], e["actor"]) for e in history] == [
        ("@create", "writer"),
        ("@desired", "writer"),
        ("delete", "reconciler"),
    ]


def test_putting_the_same_desired_state_again_changes_nothing(live: Live) -> None:
    rid = live.writer.post("/v1/resources", json={"kind": "job"}).json()["id"]

    first = live.writer.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": "done"})
    again = live.writer.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": "done"})

    assert first.status_code in (200, 202), first.text
    assert again.status_code in (200, 202), again.text
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.json()["generation"] == first.json()["generation"]


def test_set_desired_state_with_a_stale_if_match_is_412(live: Live) -> None:
    rid = create(live.writer)["id"]
    fire(live.writer, rid, "upload")
    body = assert_problem(put_desired(live.writer, rid, "deleted", **{"If-Match": '"1"'}), 412, "precondition-failed")
    assert (body["expectedVersion"], body["actualVersion"]) == (1, 2)
    assert live.store.get(rid).desired_state is None


@pytest.mark.parametrize("if_match", ['"2"', "*"])
def test_set_desired_state_with_a_current_strong_if_match_or_a_star_succeeds(live: Live, if_match: str) -> None:
    rid = create(live.writer)["id"]
    fire(live.writer, rid, "upload")
    r = put_desired(live.writer, rid, "deleted", **{"If-Match": if_match})
    assert r.status_code == 202, r.text
    assert (r.json()["desiredState"], r.json()["version"]) == ("deleted", 3)


@pytest.mark.parametrize("named", ["current", "stale"])
def test_a_weak_if_match_never_matches_so_set_desired_state_is_412_and_nothing_is_written(
    live: Live, named: str
) -> None:
    """As for events (RFC 9110, 13.1.1): a weak validator in If-Match never matches."""
    rid = create(live.writer)["id"]
    fire(live.writer, rid, "upload")

    r = put_desired(live.writer, rid, "deleted", **{"If-Match": weak_etag(named)})

    body = assert_problem(r, 412, "precondition-failed")
    assert r.headers["etag"] == '"2"'
    assert (body["resourceId"], body["actualVersion"], body["actualState"]) == (rid, 2, "saving")
    after = live.store.get(rid)
    assert (after.version, after.desired_state, after.generation) == (2, None, 1), "nothing written"
    assert journal_events(live.reader, rid) == ["@create", "upload"]


def test_set_desired_state_refuses_unknown_and_unreachable_states(live: Live) -> None:
    rid = create(live.writer)["id"]
    fire(live.writer, rid, "delete")

    body = assert_problem(put_desired(live.writer, rid, "boiling"), 422, "unknown-state")
    assert body["state"] == "boiling"
    assert_problem(put_desired(live.writer, rid, "active"), 422, "invalid-argument")
    assert live.store.get(rid).generation == 1


def test_set_desired_state_validates_the_body(live: Live) -> None:
    rid = create(live.writer)["id"]
    assert_problem(live.writer.put(f"/v1/resources/{rid}/desired-state", json={}), 422, "invalid-request")
    assert_problem(
        live.writer.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": "deleted", "force": True}),
        422,
        "invalid-request",
    )
    assert_problem(
        live.writer.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": 5}), 422, "invalid-request"
    )
    assert_problem(put_desired(live.writer, "nobody", "deleted"), 404, "resource-not-found")
    assert live.store.get(rid).generation == 1


def test_list_filters_by_desired_state(live: Live) -> None:
    a = create(live.writer, "a")["id"]
    b = create(live.writer, "b")["id"]
    put_desired(live.writer, b, "deleted")

    r = live.reader.get("/v1/resources?desiredState=deleted")
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["items"]] == [b]
    r = live.reader.get("/v1/resources?kind=image&desiredState=deleted")
    assert [i["id"] for i in r.json()["items"]] == [b]
    assert a not in [i["id"] for i in r.json()["items"]]
    assert_problem(live.reader.get("/v1/resources?kind=image&desiredState=boiling"), 422, "unknown-state")


def test_list_filters_by_party(live: Live) -> None:
    a = create(live.writer, "a")["id"]
    b = create(live.writer, "b")["id"]
    live.store.use(b, "urn:example:party-1", ttl=timedelta(hours=1), client="writer")
    live.store.use(a, "urn:example:party-2", ttl=timedelta(hours=1), client="writer")

    r = live.reader.get("/v1/resources", params={"party": "urn:example:party-1"})
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["items"]] == [b]
    r = live.reader.get("/v1/resources", params={"party": "urn:example:nobody"})
    assert r.json()["items"] == []
    assert_problem(live.reader.get("/v1/resources", params={"party": "not a uri"}), 422, "invalid-argument")


# --- journal -------------------------------------------------------------------------------------


def test_the_journal_pages_by_version(live: Live) -> None:
    rid = create(live.writer)["id"]
    events = ["upload", "activate", "deactivate", "reactivate", "deactivate", "reactivate"]
    for event in events:
        assert fire(live.writer, rid, event).status_code == 200

    seen: list[dict[str, Any]] = []
    after = 0
    pages = 0
    while True:
        r = live.reader.get(f"/v1/resources/{rid}/journal", params={"afterVersion": after, "limit": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        seen.extend(body["items"])
        pages += 1
        if body["nextAfterVersion"] is None:
            break
        after = body["nextAfterVersion"]
        assert after == seen[-1]["version"]

    assert pages == 4
    assert [e["version"] for e in seen] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["event"] for e in seen] == ["@create", *events]
    assert [(e["fromState"], e["toState"]) for e in seen[:2]] == [(None, "queued"), ("queued", "saving")]
    assert all(e["resourceId"] == rid and e["actor"] == "writer" for e in seen)
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(seqs)

    tail = live.reader.get(f"/v1/resources/{rid}/journal", params={"afterVersion": 4}).json()
    assert [e["version"] for e in tail["items"]] == [5, 6, 7]
    assert tail["nextAfterVersion"] is None


def test_the_journal_of_an_unknown_resource_is_404_and_bad_paging_is_422(live: Live) -> None:
    assert_problem(live.reader.get("/v1/resources/nobody/journal"), 404, "resource-not-found")
    rid = create(live.writer)["id"]
    for query in ("afterVersion=-1", "limit=0", "limit=1001", "afterVersion=x"):
        assert_problem(live.reader.get(f"/v1/resources/{rid}/journal?{query}"), 422, "invalid-request")


# --- waits and flows ------------------------------------------------------------------------------


def test_waits_show_what_a_waiting_resource_awaits_and_its_deadline(live: Live, make_waiting: Any) -> None:
    waiting: Waiting = make_waiting(("a", "b"))
    rid = waiting.resource.id
    live.store.deliver(rid, waiting.token, "a", "done", data={"x": 1})

    r = live.reader.get(f"/v1/resources/{rid}/waits")

    assert r.status_code == 200, r.text
    (wait,) = r.json()
    assert waiting.token not in r.text, "the correlation token is a credential: never shown"
    assert token_hash(waiting.token) not in r.text, "nor its whole hash"
    assert (wait["state"], wait["version"]) == ("awaiting", waiting.resource.version)
    assert wait["deadline"] is not None
    deadline = datetime.fromisoformat(wait["deadline"])
    assert waiting.resource.deadline is not None
    assert deadline == waiting.resource.deadline
    assert [(k["key"], k["received"], k["status"]) for k in wait["keys"]] == [("a", True, "done"), ("b", False, None)]
    assert wait["id"]


def test_waits_speak_camel_case_like_the_rest_of_the_api(live: Live, make_waiting: Any) -> None:
    waiting: Waiting = make_waiting(("a",))
    (wait,) = live.reader.get(f"/v1/resources/{waiting.resource.id}/waits").json()
    assert {"resourceId", "createdAt"} <= set(wait), wait
    assert "receivedAt" in wait["keys"][0], wait


def test_waits_of_a_resource_that_waits_for_nothing_are_empty(live: Live) -> None:
    rid = create(live.writer)["id"]
    r = live.reader.get(f"/v1/resources/{rid}/waits")
    assert r.status_code == 200, r.text
    assert r.json() == []
    assert_problem(live.reader.get("/v1/resources/nobody/waits"), 404, "resource-not-found")


def test_flows_show_each_run_with_its_task_checkpoints(live: Live) -> None:
    rid = create(live.writer)["id"]
    assert live.reader.get(f"/v1/resources/{rid}/flows").json() == []
    live.store.create_flow_run(
        FlowRunRow(
            id="run-1", flow="copy", version=1, fingerprint="f", state="running", resource_id=rid, inputs={"n": 1}
        )
    )
    live.store.save_flow(
        "run-1",
        [FlowTaskRow("fetch", "done", 1, 1, result={"bytes": 3}), FlowTaskRow("write", "running", 2, 2)],
    )

    r = live.reader.get(f"/v1/resources/{rid}/flows")

    assert r.status_code == 200, r.text
    (run,) = r.json()
    assert (run["id"], run["flow"], run["state"], run["failure"]) == ("run-1", "copy", "running", None)
    assert run["tasks"] == [
        {"task": "fetch", "state": "done", "attempt": 1, "result": {"bytes": 3}, "failure": None},
        {"task": "write", "state": "running", "attempt": 2, "result": None, "failure": None},
    ]
    assert_problem(live.reader.get("/v1/resources/nobody/flows"), 404, "resource-not-found")
    assert_problem(live.reader.get(f"/v1/resources/{rid}/flows?limit=0"), 422, "invalid-request")


def test_flows_come_a_page_at_a_time_and_a_page_ends_early_at_its_byte_budget(live: Live) -> None:
    rid = create(live.writer)["id"]
    big = "x" * (1024 * 1024)  # four of these fill a page's 4 MiB budget
    for n in range(7):
        run = FlowRunRow(
            id=f"run-{n}", flow="copy", version=1, fingerprint="f", state="done", resource_id=rid, inputs={}
        )
        live.store.create_flow_run(run)
        live.store.save_flow(run.id, [FlowTaskRow("fetch", "done", 1, 1, result={"blob": big})])
    seen: list[str] = []
    url: str | None = f"/v1/resources/{rid}/flows?limit=5"
    sizes = []
    while url is not None:
        r = live.reader.get(url)
        assert r.status_code == 200, r.text
        page = [run["id"] for run in r.json()]
        sizes.append(len(page))
        seen += page
        link = r.headers.get("link")
        url = link.split(">")[0].lstrip("<") if link else None
    assert seen == [f"run-{n}" for n in range(7)], "every run once, in order"
    assert max(sizes) < 5, "the byte budget ended pages before the limit"
    assert all(size >= 1 for size in sizes)


# --- kinds -----------------------------------------------------------------------------------------


def test_kinds_are_listed_and_described_with_states_roles_and_events(live: Live) -> None:
    r = live.reader.get("/v1/kinds")
    assert r.status_code == 200
    assert [k["name"] for k in r.json()] == ["image", "job", "ticket"]

    ticket = live.reader.get("/v1/kinds/ticket").json()
    assert ticket["initial"] == "todo"
    roles = {s["name"]: s["role"] for s in ticket["states"]}
    assert roles == {
        "todo": "work",
        "awaiting": "wait",
        "done": "final",
        "failed": "final",
        "expired": "final",
        "cancelled": "final",
    }
    codes = {s["name"]: s["code"] for s in ticket["states"]}
    assert codes["awaiting"] == 2
    events = {e["name"]: (e["sources"], e["target"]) for e in ticket["events"]}
    assert events["ask"] == (["todo"], "awaiting")
    assert ticket["diagram"] == "/v1/kinds/ticket/diagram"
    image = live.reader.get("/v1/kinds/image").json()
    assert image["specSchema"]["properties"]["name"]["type"] == "string"


def test_kinds_speak_camel_case_like_the_rest_of_the_api(live: Live) -> None:
    state = live.reader.get("/v1/kinds/ticket").json()["states"][1]
    assert {"deadlineSeconds", "onDeadline", "onFailure", "maxAttempts"} <= set(state), state


def test_an_unknown_kind_is_404(live: Live) -> None:
    body = assert_problem(live.reader.get("/v1/kinds/teapot"), 404, "kind-not-found")
    assert body["kind"] == "teapot"
    assert_problem(live.reader.get("/v1/kinds/teapot/diagram"), 404, "kind-not-found")


@pytest.mark.parametrize(
    ("fmt", "media", "marker"),
    [
        (None, "text/vnd.mermaid", "stateDiagram"),
        ("mermaid", "text/vnd.mermaid", "stateDiagram"),
        ("dot", "text/vnd.graphviz", "digraph"),
        ("svg", "image/svg+xml", "<svg"),
    ],
)
def test_the_diagram_comes_as_mermaid_dot_or_svg(live: Live, fmt: str | None, media: str, marker: str) -> None:
    params = {} if fmt is None else {"format": fmt}
    # A fresh connection each: a failure here must not spoil the shared clients' connections.
    with live.client(READER) as http:
        r = http.get("/v1/kinds/image/diagram", params=params)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(media)
        assert marker in r.text
        assert "pending_delete" in r.text
    with live.client(READER) as http:
        r = http.get("/v1/kinds/ticket/diagram", params=params)
        assert r.status_code == 200, r.text
        assert "awaiting" in r.text


def test_an_unknown_diagram_format_is_422(live: Live) -> None:
    body = assert_problem(live.reader.get("/v1/kinds/image/diagram?format=png"), 422, "invalid-request")
    assert body["errors"][0]["field"] == "query.format"
