"""Sharing over HTTP: inUseBy merge patches, the parties sub-resource, ownership, teardown waits and force.

A real server on 127.0.0.1 over real stores (SQLite and PostgreSQL). The ``deployment`` kind is
moved to ``deployed`` by firing its event directly (no engine): what is pinned here is what the API
answers and writes, and the store itself starts the teardown when the last party leaves.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenure import open_store
from tenure.errors import ConfigError
from tenure.kinds.deployment import deployment
from tenure.service import ServiceConfig
from tenure.store.protocol import EngineStore
from tenure.store.uses import UsePolicy
from tests.support.problems import assert_problem
from tests.support.service_support import KINDS, Live

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
PARTY = "tag:example.org,2026:ci/42"
#: The party in a path: one percent-encoded segment (its slash as %2F).
PARTY_PATH = "tag:example.org,2026:ci%2F42"
MAX_TTL = 7200


@pytest.fixture(scope="module")
def module_store(module_db: str) -> Iterator[EngineStore]:
    """The service tests' store, with the deployment kind and a two-hour maximum time to live."""
    policy = UsePolicy(default_ttl=timedelta(minutes=10), max_ttl=timedelta(seconds=MAX_TTL))
    s = open_store(module_db, (*KINDS, deployment), check_schema=False, uses=policy)
    try:
        s.migrate()
        yield s
    finally:
        s.close()


def deployed(live: Live, *, sharable: bool | None = None) -> str:
    body: dict[str, Any] = {"kind": "deployment", "spec": {"name": "web", "image": "nginx:1"}}
    if sharable is not None:
        body["sharable"] = sharable
    made = live.writer.post("/v1/resources", json=body)
    assert made.status_code == 201, made.text
    rid: str = made.json()["id"]
    live.store.fire(rid, "deployed", actor="test-engine")
    return rid


def patch(http: httpx.Client, rid: str, body: Any, **headers: str) -> httpx.Response:
    return http.patch(f"/v1/resources/{rid}", content=json.dumps(body), headers={**MERGE_PATCH, **headers})


def parties_of(live: Live, rid: str) -> dict[str, Any]:
    found: dict[str, Any] = live.reader.get(f"/v1/resources/{rid}").json()["inUseBy"]
    return found


# --- PATCH (merge patch of inUseBy and desiredState) -----------------------------------------------


def test_a_merge_patch_registers_renews_and_releases_in_one_journaled_write(live: Live) -> None:
    rid = deployed(live)
    first = patch(live.writer, rid, {"inUseBy": {PARTY: {"ttlSeconds": 600}, "urn:example:b": {}}})
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body["inUseBy"]) == {PARTY, "urn:example:b"}
    assert body["inUseBy"][PARTY]["client"] == "writer"
    assert first.headers["etag"] == f'"{body["version"]}"'
    assert body["teardown"] is None

    both = patch(live.writer, rid, {"inUseBy": {PARTY: {"ttlSeconds": 1200}, "urn:example:b": None}})
    assert both.status_code == 200, both.text
    assert set(both.json()["inUseBy"]) == {PARTY}
    assert both.json()["version"] == body["version"] + 1
    entry = live.store.journal(rid)[-1]
    assert entry.detail["uses"] == {PARTY: "renewed", "urn:example:b": "released"}
    assert entry.actor == "writer"


def test_two_clients_patching_different_parties_at_once_both_survive(live: Live) -> None:
    rid = deployed(live)
    clients = [live.writer, live.admin] * 4
    barrier = threading.Barrier(len(clients))
    answers: list[int] = []

    def register(i: int, http: httpx.Client) -> None:
        barrier.wait()
        answers.append(patch(http, rid, {"inUseBy": {f"urn:example:party-{i}": {}}}).status_code)

    threads = [threading.Thread(target=register, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200] * len(clients)
    uses = parties_of(live, rid)
    assert set(uses) == {f"urn:example:party-{i}" for i in range(len(clients))}
    assert {uses[f"urn:example:party-{i}"]["client"] for i in range(2)} == {"writer", "admin"}


def test_a_patch_with_a_stale_if_match_is_412_and_writes_nothing(live: Live) -> None:
    rid = deployed(live)
    version = live.store.get(rid).version
    assert patch(live.writer, rid, {"inUseBy": {PARTY: {}}}, **{"If-Match": f'"{version}"'}).status_code == 200
    stale = patch(live.writer, rid, {"inUseBy": {"urn:example:late": {}}}, **{"If-Match": f'"{version}"'})
    body = assert_problem(stale, 412, "precondition-failed")
    assert body["actualVersion"] == version + 1
    assert set(parties_of(live, rid)) == {PARTY}
    # An empty patch changes nothing, yet If-Match still holds it to the version.
    assert_problem(patch(live.writer, rid, {}, **{"If-Match": f'"{version}"'}), 412, "precondition-failed")
    assert patch(live.writer, rid, {}).status_code == 200


def test_a_patch_sent_as_plain_json_is_415_naming_merge_patch(live: Live) -> None:
    rid = deployed(live)
    refused = live.writer.patch(f"/v1/resources/{rid}", json={"inUseBy": {PARTY: {}}})
    body = assert_problem(refused, 415, "unsupported-media-type")
    assert body["accepted"] == ["application/merge-patch+json"]
    assert "application/merge-patch+json" in body["detail"]
    assert parties_of(live, rid) == {}


def test_a_patch_with_other_members_is_422_naming_them_and_what_is_accepted(live: Live) -> None:
    rid = deployed(live)
    for member in ("state", "in_use_by", "spec"):
        body = assert_problem(patch(live.writer, rid, {member: {}}), 422, "invalid-request")
        assert member in body["detail"]
        assert body["accepted"] == ["inUseBy", "desiredState"]
    null = assert_problem(patch(live.writer, rid, {"inUseBy": None}), 422, "invalid-request")
    assert "release parties by name" in null["detail"]
    assert live.store.get(rid).version == 2


def test_a_bad_party_uri_or_a_ttl_over_the_maximum_is_422_naming_the_limit(live: Live) -> None:
    rid = deployed(live)
    bad = assert_problem(patch(live.writer, rid, {"inUseBy": {"ci 42": {}}}), 422, "invalid-argument")
    assert bad["field"] == "party"
    assert "URI" in bad["detail"]
    over = patch(live.writer, rid, {"inUseBy": {PARTY: {"ttlSeconds": MAX_TTL + 1}}})
    body = assert_problem(over, 422, "invalid-argument")
    assert body["maximum"] == MAX_TTL
    assert f"at most {MAX_TTL}" in body["detail"]
    assert body["field"] == f"inUseBy.{PARTY}.ttlSeconds"
    put = live.writer.put(f"/v1/resources/{rid}/parties/{PARTY_PATH}", json={"ttlSeconds": 0})
    assert assert_problem(put, 422, "invalid-argument")["field"] == "ttlSeconds"
    assert parties_of(live, rid) == {}


def test_another_clients_party_is_403_naming_owner_and_client_but_an_admin_may(live: Live) -> None:
    rid = deployed(live)
    assert patch(live.admin, rid, {"inUseBy": {PARTY: {}}}).status_code == 200
    for refused in (
        patch(live.writer, rid, {"inUseBy": {PARTY: None}}),
        patch(live.writer, rid, {"inUseBy": {PARTY: {"ttlSeconds": 60}}}),
        live.writer.delete(f"/v1/resources/{rid}/parties/{PARTY_PATH}"),
        live.writer.put(f"/v1/resources/{rid}/parties/{PARTY_PATH}"),
    ):
        body = assert_problem(refused, 403, "use-not-yours")
        assert (body["owner"], body["client"], body["party"]) == ("admin", "writer", PARTY)
    assert patch(live.writer, rid, {"inUseBy": {"urn:example:writers": {}}}).status_code == 200
    # The admin scope may release another client's party.
    assert patch(live.admin, rid, {"inUseBy": {"urn:example:writers": None}}).status_code == 200
    assert set(parties_of(live, rid)) == {PARTY}


def test_a_resource_that_is_not_sharable_refuses_a_second_party_with_409(live: Live) -> None:
    rid = deployed(live, sharable=False)
    assert live.reader.get(f"/v1/resources/{rid}").json()["sharable"] is False
    assert patch(live.writer, rid, {"inUseBy": {PARTY: {}}}).status_code == 200
    body = assert_problem(patch(live.writer, rid, {"inUseBy": {"urn:example:second": {}}}), 409, "not-sharable")
    assert (body["party"], body["refused"]) == (PARTY, "urn:example:second")


def test_a_desired_teardown_answers_202_at_once_and_waits_for_the_parties(live: Live) -> None:
    rid = deployed(live)
    assert patch(live.admin, rid, {"inUseBy": {PARTY: {}}}).status_code == 200
    assert patch(live.writer, rid, {"inUseBy": {"urn:example:creator": {}}}).status_code == 200
    wish = patch(live.writer, rid, {"desiredState": "undeployed"})
    assert wish.status_code == 202, wish.text
    body = wish.json()
    # The caller's own party is released by its wish; the other one holds the teardown back.
    assert (body["state"], body["desiredState"]) == ("deployed", "undeployed")
    assert body["teardown"] == {"pending": True, "waitingFor": [PARTY]}
    assert set(body["inUseBy"]) == {PARTY}
    # Still usable while teardown is pending: a party may join, and the teardown waits for it too.
    joined = live.writer.put(f"/v1/resources/{rid}/parties/urn:example:late", json={"ttlSeconds": 60})
    assert joined.status_code == 201, joined.text
    assert live.admin.delete(f"/v1/resources/{rid}/parties/{PARTY_PATH}").status_code == 204
    assert live.reader.get(f"/v1/resources/{rid}").json()["teardown"] == {
        "pending": True,
        "waitingFor": ["urn:example:late"],
    }
    assert live.writer.delete(f"/v1/resources/{rid}/parties/urn:example:late").status_code == 204
    gone = live.reader.get(f"/v1/resources/{rid}").json()
    assert (gone["state"], gone["teardown"], gone["inUseBy"]) == ("undeploying", None, {})
    # Teardown started: registering now is refused, naming where parties may register.
    late = assert_problem(patch(live.writer, rid, {"inUseBy": {PARTY: {}}}), 409, "teardown-started")
    assert late["usable"] == ["deploying", "deployed"]


def test_put_desired_state_of_a_shared_kind_is_202_and_releases_the_callers_own_parties(live: Live) -> None:
    rid = deployed(live)
    assert live.writer.put(f"/v1/resources/{rid}/parties/urn:example:mine").status_code == 201
    assert live.admin.put(f"/v1/resources/{rid}/parties/{PARTY_PATH}").status_code == 201
    put = live.writer.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": "undeployed"})
    assert put.status_code == 202, put.text
    assert set(put.json()["inUseBy"]) == {PARTY}
    assert put.json()["teardown"]["waitingFor"] == [PARTY]


def test_the_teardown_event_while_parties_use_it_is_409_in_use(live: Live) -> None:
    rid = deployed(live)
    assert live.admin.put(f"/v1/resources/{rid}/parties/{PARTY_PATH}").status_code == 201
    body = assert_problem(live.writer.post(f"/v1/resources/{rid}/events", json={"event": "undeploy"}), 409, "in-use")
    assert body["parties"] == [PARTY]
    assert "force" in body["detail"]


# --- the parties sub-resource ------------------------------------------------------------------------


def test_parties_put_registers_201_renews_200_lists_and_deletes_204_then_404(live: Live) -> None:
    rid = deployed(live)
    url = f"/v1/resources/{rid}/parties/{PARTY_PATH}"
    made = live.writer.put(url, json={"ttlSeconds": 600})
    assert made.status_code == 201, made.text
    assert made.json()["party"] == PARTY
    assert made.headers["location"] == f"/v1/resources/{rid}/parties/tag%3Aexample.org%2C2026%3Aci%2F42"
    assert live.reader.get(made.headers["location"].rsplit("/", 1)[0]).status_code == 200
    renewed = live.writer.put(url, json={"ttlSeconds": 1200})
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["registeredAt"] == made.json()["registeredAt"]
    assert renewed.json()["expiresAt"] > made.json()["expiresAt"]
    # No body: the provider's default time to live. A raw slash in the path names the same party.
    assert live.writer.put(f"/v1/resources/{rid}/parties/{PARTY}").status_code == 200
    listed = live.reader.get(f"/v1/resources/{rid}/parties")
    assert listed.status_code == 200
    assert [p["party"] for p in listed.json()] == [PARTY]
    assert listed.headers["etag"] == f'"{live.store.get(rid).version}"'
    deleted = live.writer.delete(url)
    assert deleted.status_code == 204
    assert deleted.headers["etag"] == f'"{live.store.get(rid).version}"'
    missing = assert_problem(live.writer.delete(url), 404, "party-not-found")
    assert missing["parties"] == []
    assert_problem(live.writer.put(f"/v1/resources/{rid}/parties/not%20a%20uri"), 422, "invalid-argument")
    assert_problem(live.writer.put(f"/v1/resources/nobody/parties/{PARTY_PATH}"), 404, "resource-not-found")
    assert_problem(live.reader.put(url), 403, "forbidden")


def test_force_teardown_is_admin_only_and_its_journal_entry_names_the_parties(live: Live) -> None:
    rid = deployed(live)
    assert live.writer.put(f"/v1/resources/{rid}/parties/{PARTY_PATH}").status_code == 201
    refused = live.writer.post(f"/v1/resources/{rid}/teardown", json={"force": True})
    assert assert_problem(refused, 403, "forbidden")["requiredScope"] == "admin"
    assert_problem(live.admin.post(f"/v1/resources/{rid}/teardown", json={"force": False}), 422, "invalid-request")
    forced = live.admin.post(f"/v1/resources/{rid}/teardown", json={"force": True, "reason": "maintenance"})
    assert forced.status_code == 202, forced.text
    assert forced.json()["inUseBy"] == {}
    assert forced.json()["desiredState"] == "undeployed"
    entry = next(e for e in live.store.journal(rid) if e.detail.get("forced"))
    assert entry.actor == "admin"
    assert entry.detail["reason"] == "maintenance"
    assert set(entry.detail["parties"]) == {PARTY}
    assert entry.detail["parties"][PARTY]["client"] == "writer"


# --- idempotency keys per client ---------------------------------------------------------------------


def test_idempotency_keys_are_per_client(live: Live) -> None:
    request = {"kind": "job", "spec": {}}
    key = {"Idempotency-Key": "order-42"}
    mine = live.writer.post("/v1/resources", json=request, headers=key)
    again = live.writer.post("/v1/resources", json=request, headers=key)
    theirs = live.admin.post("/v1/resources", json=request, headers=key)
    assert (mine.status_code, again.status_code, theirs.status_code) == (201, 200, 201)
    assert again.json()["id"] == mine.json()["id"] != theirs.json()["id"]
    assert mine.json()["idempotencyKey"] == theirs.json()["idempotencyKey"] == "order-42"
    reused = live.writer.post("/v1/resources", json={"kind": "image", "spec": {"name": "x"}}, headers=key)
    assert assert_problem(reused, 422, "idempotency-key-reused")["key"] == "order-42"


# --- the OpenAPI document ----------------------------------------------------------------------------


def test_the_openapi_document_lists_each_sharing_operations_answers_and_headers(live: Live) -> None:
    paths = live.anonymous.get("/openapi.json").json()["paths"]
    patched = paths["/v1/resources/{resource_id}"]["patch"]
    assert list(patched["requestBody"]["content"]) == ["application/merge-patch+json"]
    assert set(patched["responses"]) == {"200", "202", "400", "401", "403", "404", "409", "412", "413", "415"} | {
        "422",
        "431",
        "500",
        "503",
    }
    assert "ETag" in patched["responses"]["202"]["headers"]
    put = paths["/v1/resources/{resource_id}/parties/{party}"]["put"]
    assert {"200", "201"} <= set(put["responses"])
    assert {"ETag", "Location"} <= set(put["responses"]["201"]["headers"])
    deleted = paths["/v1/resources/{resource_id}/parties/{party}"]["delete"]
    assert "204" in deleted["responses"]
    assert "415" not in deleted["responses"]
    assert set(paths["/v1/resources/{resource_id}/parties"]["get"]["responses"]) == {
        "200",
        "401",
        "403",
        "404",
        "431",
        "500",
        "503",
    }
    assert "202" in paths["/v1/resources/{resource_id}/teardown"]["post"]["responses"]


# --- configuration -----------------------------------------------------------------------------------


def test_the_sharing_keys_of_the_configuration_are_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "tenure.toml"
    path.write_text("[service]\ndefault_sharable = false\ndefault_interest_ttl = 60\nmax_interest_ttl = 600\n")
    loaded = ServiceConfig.load(path, env={})
    options = loaded.store_options()
    assert options["default_sharable"] is False
    assert options["uses"] == UsePolicy(default_ttl=timedelta(seconds=60), max_ttl=timedelta(seconds=600))
    assert ServiceConfig().store_options()["uses"] == UsePolicy(timedelta(hours=1), timedelta(days=1))
    for text, named in (
        ("default_interest_ttl = 700\nmax_interest_ttl = 600", "default_interest_ttl"),
        ("max_interest_ttl = 0", "max_interest_ttl"),
        ("default_interest_ttl = true", "default_interest_ttl"),
        ('default_sharable = "yes"', "default_sharable"),
    ):
        path.write_text(f"[service]\n{text}\n")
        with pytest.raises(ConfigError, match=named):
            ServiceConfig.load(path, env={})
