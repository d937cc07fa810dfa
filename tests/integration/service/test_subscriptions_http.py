"""``/v1/subscriptions`` through a real server on both stores: the secret shown once, ownership, refusals.

The last test goes end to end: a subscription made over HTTP hears, signed, of a change made over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tenure.engine.deliveries import Deliverer
from tenure.engine.signing import verify_signature
from tenure.service import ClientToken
from tests.support.live_server import TOKENS, all_scopes_config
from tests.support.problems import assert_problem
from tests.support.service_support import Live
from tests.support.webhooks import Receiver, settle, wait_until

pytestmark = pytest.mark.timeout(60)

HOOK = "https://hooks.example.com/tenure?team=storage"
OTHER_WRITER = "other-writer-token-0123456789"


def _create(live: Live, **body: Any) -> dict[str, Any]:
    r = live.writer.post("/v1/subscriptions", json={"url": HOOK, "kind": "image", **body})
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    assert r.headers["location"] == f"/v1/subscriptions/{doc['id']}"
    return doc


def test_creating_answers_201_with_its_location_and_the_secret_shown_once(live: Live) -> None:
    made = _create(live, states=["active", "deleted"])
    assert len(made["secret"]) >= 40
    assert made["createdBy"] == "writer"
    assert (made["url"], made["kind"], made["states"], made["resource"]) == (HOOK, "image", ["active", "deleted"], None)
    assert (made["attempts"], made["delivered"], made["lastError"], made["nextAttemptAt"]) == (0, 0, None, None)

    got = live.writer.get(f"/v1/subscriptions/{made['id']}")
    assert got.status_code == 200, got.text
    assert "secret" not in got.json()
    assert made["secret"] not in got.text
    assert {k: v for k, v in made.items() if k != "secret"} == got.json()
    listed = live.writer.get("/v1/subscriptions")
    assert [s["id"] for s in listed.json()["items"]] == [made["id"]]
    assert made["secret"] not in listed.text


def test_a_chosen_secret_and_a_resource_filter_are_kept(live: Live) -> None:
    rid = live.store.create("image", {"name": "x"}).id
    r = live.writer.post("/v1/subscriptions", json={"url": HOOK, "resource": rid, "secret": "s" * 20})
    assert r.status_code == 201, r.text
    assert (r.json()["secret"], r.json()["resource"], r.json()["kind"]) == ("s" * 20, rid, None)


def test_another_clients_subscription_is_403_while_its_owner_and_admins_may_read_and_delete_it(
    live: Live, start_live: Callable[..., Live]
) -> None:
    made = _create(live)
    path = f"/v1/subscriptions/{made['id']}"
    body = assert_problem(live.reader.get(path), 403, "forbidden")
    assert body["subscriptionId"] == made["id"]
    tokens = (*all_scopes_config().tokens, ClientToken.make("other", OTHER_WRITER, ["write"]))
    other = start_live(all_scopes_config().with_tokens(tokens)).client(OTHER_WRITER)
    assert_problem(other.delete(path), 403, "forbidden")
    assert other.get("/v1/subscriptions").json()["items"] == []

    assert live.admin.get(path).status_code == 200
    assert [s["id"] for s in live.admin.get("/v1/subscriptions").json()["items"]] == [made["id"]]
    deleted = live.writer.delete(path)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem(live.writer.get(path), 404, "subscription-not-found")


def test_subscribing_needs_the_write_scope(live: Live) -> None:
    r = live.reader.post("/v1/subscriptions", json={"url": HOOK, "kind": "image"})
    assert_problem(r, 403, "forbidden")
    assert_problem(live.anonymous.get("/v1/subscriptions"), 401, "unauthorized")


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"url": "ftp://hooks.example.com/x", "kind": "image"}, "url", "http://"),
        ({"url": "hooks.example.com/x", "kind": "image"}, "url", "absolute"),
        ({"url": "https://user:pw@hooks.example.com/", "kind": "image"}, "url", "credentials"),
        ({"url": HOOK}, "filter", "resource or a kind"),
        ({"url": HOOK, "kind": "image", "resource": "r1"}, "filter", "not both"),
        ({"url": HOOK, "kind": "image", "states": ["flying"]}, "states", "states of kind 'image'"),
        ({"url": HOOK, "resource": "no-such-resource"}, "resource", "existing resource"),
        ({"url": HOOK, "kind": "image", "secret": "too-short"}, "secret", "16"),
    ],
)
def test_a_bad_url_filter_or_secret_is_422_naming_the_field_and_constraint(
    live: Live, body: dict[str, Any], field: str, says: str
) -> None:
    problem = assert_problem(live.writer.post("/v1/subscriptions", json=body), 422, "invalid-argument")
    assert problem["field"] == field
    assert says in problem["constraint"]
    assert "too-short" not in str(problem)  # a secret is never echoed
    assert live.admin.get("/v1/subscriptions").json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [({"url": 5, "kind": "image"}, "url"), ({"url": HOOK, "kind": "image", "extra": 1}, "extra"), ({}, "url")],
)
def test_a_body_of_the_wrong_shape_is_422_naming_the_field(live: Live, body: dict[str, Any], field: str) -> None:
    problem = assert_problem(live.writer.post("/v1/subscriptions", json=body), 422, "invalid-request")
    assert field in [e["field"] for e in problem["errors"]]
    assert all(e["constraint"] for e in problem["errors"])


def test_an_unknown_kind_is_422_as_for_the_watch(live: Live) -> None:
    problem = assert_problem(
        live.writer.post("/v1/subscriptions", json={"url": HOOK, "kind": "ghost"}), 422, "unknown-kind"
    )
    assert problem["kind"] == "ghost"


@pytest.mark.parametrize("sub_id", ["0" * 32, "not-a-subscription-id"])
def test_an_unknown_subscription_is_404(live: Live, sub_id: str) -> None:
    body = assert_problem(live.writer.get(f"/v1/subscriptions/{sub_id}"), 404, "subscription-not-found")
    assert body["subscriptionId"] == sub_id
    assert_problem(live.writer.delete(f"/v1/subscriptions/{sub_id}"), 404, "subscription-not-found")


def test_the_openapi_document_lists_what_each_subscription_operation_answers(live: Live) -> None:
    paths = live.reader.get("/openapi.json").json()["paths"]
    answers = {
        (method, path): sorted(op["responses"])
        for path, item in paths.items()
        if path.startswith("/v1/subscriptions")
        for method, op in item.items()
    }
    assert answers == {
        ("post", "/v1/subscriptions"): ["201", "400", "401", "403", "413", "415", "422", "431", "500", "503"],
        ("get", "/v1/subscriptions"): ["200", "401", "403", "422", "431", "500", "503"],
        ("get", "/v1/subscriptions/{subscription_id}"): ["200", "401", "403", "404", "431", "500", "503"],
        ("delete", "/v1/subscriptions/{subscription_id}"): ["204", "401", "403", "404", "431", "500", "503"],
    }


def test_a_subscription_made_over_http_hears_signed_of_a_change_made_over_http(live: Live) -> None:
    assert TOKENS["writer"][1] == "write"
    with Receiver() as receiver:
        made = live.writer.post("/v1/subscriptions", json={"url": receiver.url, "kind": "image"}).json()
        created = live.writer.post("/v1/resources", json={"kind": "image", "spec": {"name": "seen"}})
        assert created.status_code == 201, created.text
        settle(live.store)
        deliverer = Deliverer(live.store, poll_interval=0.2).start()  # type: ignore[arg-type]
        try:
            wait_until(lambda: len(receiver.accepted) == 1, what="the delivery of the creation")
        finally:
            deliverer.stop()
        delivery = receiver.accepted[0]
        assert delivery.json["resourceId"] == created.json()["id"]
        assert delivery.json["actor"] == "writer"
        assert verify_signature(
            made["secret"], delivery.body, delivery.headers["tenure-signature"], now=live.store.now()
        )
        shown = live.writer.get(f"/v1/subscriptions/{made['id']}").json()
        assert (shown["delivered"], shown["position"]) == (1, delivery.json["position"])
