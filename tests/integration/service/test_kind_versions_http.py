"""Kind versions through the API: which versions are loaded, each one's graph, and each resource's version."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tenure.store import open_store
from tenure.store.protocol import EngineStore
from tests.kinds_for_tests import order_v1, order_v2
from tests.support.problems import assert_problem
from tests.support.service_support import Live


@pytest.fixture
def two_versions(module_db: str, service_store: EngineStore) -> Iterator[EngineStore]:
    store = open_store(module_db, [order_v1, order_v2], check_schema=False)
    yield store
    store.close()


def test_a_kind_lists_its_loaded_versions_and_shows_each(
    start_live: Callable[..., Live], two_versions: EngineStore
) -> None:
    live = start_live(store=two_versions)
    newest = live.reader.get("/v1/kinds/order").json()
    assert (newest["version"], newest["versions"]) == (2, [1, 2])
    assert newest["diagram"] == "/v1/kinds/order/diagram?version=2"
    assert {e["name"]: e["engineOnly"] for e in newest["events"]}["ship"] is True

    older = live.reader.get("/v1/kinds/order", params={"version": 1}).json()
    assert older["version"] == 1
    deprecated = {s["name"]: s["deprecated"] for s in older["states"]}
    assert deprecated == {"new": False, "packing": True, "shipped": False, "cancelled": False}
    drawn = live.reader.get("/v1/kinds/order/diagram", params={"version": 1, "format": "svg"}).text
    assert 'data-state="packing"' in drawn
    assert 'data-deprecated="true"' in drawn

    missing = live.reader.get("/v1/kinds/order", params={"version": 7})
    assert_problem(missing, 404, "kind-not-found")
    assert "version 7 of kind 'order' is not loaded (loaded versions: 1, 2)" in missing.json()["detail"]


def test_a_resource_shows_the_version_it_lives_on_and_new_ones_take_the_newest(
    start_live: Callable[..., Live], module_db: str, two_versions: EngineStore
) -> None:
    old_store = open_store(module_db, [order_v1], check_schema=False)
    try:
        old = old_store.create("order")
    finally:
        old_store.close()
    live = start_live(store=two_versions)
    assert live.reader.get(f"/v1/resources/{old.id}").json()["kindVersion"] == 1
    made = live.writer.post("/v1/resources", json={"kind": "order"})
    assert made.status_code == 201, made.text
    assert made.json()["kindVersion"] == 2


def test_a_client_event_only_the_engine_fires_is_refused_with_what_it_may_fire(
    start_live: Callable[..., Live], two_versions: EngineStore
) -> None:
    live = start_live(store=two_versions)
    r = two_versions.fire(two_versions.create("order"), "place")
    refused = live.writer.post(f"/v1/resources/{r.id}/events", json={"event": "ship"})
    assert_problem(refused, 409, "transition-not-allowed")
    body = refused.json()
    assert body["allowed"] == ["cancel"]
    assert "only the engine fires it" in body["detail"]
    assert two_versions.get(r.id).version == r.version


def test_metrics_count_the_states_only_an_older_version_has_with_their_role(
    start_live: Callable[..., Live], module_db: str, two_versions: EngineStore
) -> None:
    old_store = open_store(module_db, [order_v1], check_schema=False)
    try:
        old_store.fire(old_store.create("order"), "pack")
    finally:
        old_store.close()
    live = start_live(store=two_versions)
    text = live.reader.get("/metrics").text
    assert 'tenure_resources{kind="order",role="work",state="packing"} 1.0' in text
