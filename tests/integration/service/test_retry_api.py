"""``POST /v1/resources/{id}/retry`` through a real server, on both stores: an admin makes a step that
backs off after a failure due now. The admin scope only, If-Match pins the version (412), anything but
a step backing off is a 409 problem naming the state and its role (wherever RetryNotAllowed is
raised), an unpinned retry that loses every race is a 409 conflict; the client and the ``tenure
retry`` command call it, and the command also works on a database directly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tenure import RetryNotAllowed, open_store
from tenure.kinds import builtin_kinds, builtin_tables
from tenure.service.client import Client
from tenure.service.problems import RETRY_NOT_ALLOWED, problem_for
from tenure.store.model import Resource
from tenure.store.protocol import EngineStore
from tenure.store.resources import BLIND_FIRE_ATTEMPTS
from tenure.store.write import RETRY_NOW_EVENT
from tests.acceptance.test_cli_service import clean, tenure
from tests.integration.test_retry_now import MeddlingClock
from tests.support.live_server import ADMIN, WRITER
from tests.support.problems import assert_problem
from tests.support.service_support import KINDS, Live

pytestmark = pytest.mark.timeout(60)

BACKOFF = timedelta(hours=1)


def backing_off(store: EngineStore, kind: str = "job", state: str = "pending", rid: str | None = None) -> Resource:
    """A resource in a work state whose first attempt failed, its next one scheduled an hour later."""
    if rid is None:
        rid = store.create(kind).id
    claims = store.claim("w1", [(kind, state)], lease=timedelta(seconds=30))
    assert [c.resource.id for c in claims] == [rid]
    return store.retry_later(claims[0], error="provider said 503", at=store.now() + BACKOFF, attempts=1, actor="w1")


def test_an_admin_makes_a_step_backing_off_due_now(live: Live) -> None:
    before = backing_off(live.store)
    assert before.next_attempt_at is not None

    r = live.admin.post(f"/v1/resources/{before.id}/retry", headers={"If-Match": f'"{before.version}"'})

    assert r.status_code == 200, r.text
    assert r.headers["etag"] == f'"{before.version + 1}"'
    body = r.json()
    assert (body["state"], body["version"], body["attempts"], body["error"]) == (
        "pending",
        before.version + 1,
        1,
        "provider said 503",
    )
    due = datetime.fromisoformat(body["nextAttemptAt"])
    assert due < before.next_attempt_at
    assert due <= live.store.now()
    after = live.store.get(before.id)
    assert after.next_attempt_at == due
    entry = live.store.journal(before.id)[-1]
    assert (entry.version, entry.event, entry.actor) == (after.version, RETRY_NOW_EVENT, "admin")
    assert entry.detail["previous_next_attempt_at"] == before.next_attempt_at.isoformat()
    # due now: a worker claims it at once
    assert [c.resource.id for c in live.store.claim("w2", [("job", "pending")], lease=timedelta(seconds=30))] == [
        before.id
    ]


def test_retry_now_needs_the_admin_scope(live: Live) -> None:
    before = backing_off(live.store)
    for http in (live.writer, live.reader):
        answer = http.post(f"/v1/resources/{before.id}/retry")
        assert assert_problem(answer, 403, "forbidden")["requiredScope"] == "admin"
    assert_problem(live.anonymous.post(f"/v1/resources/{before.id}/retry"), 401, "unauthorized")
    assert live.store.get(before.id) == before


def test_a_resource_with_no_step_backing_off_is_a_409_naming_its_state_and_role(live: Live) -> None:
    resting = live.store.create("image", {"name": "disk"})
    due = live.store.create("job")  # a new job's first attempt is due at once

    rest = assert_problem(live.admin.post(f"/v1/resources/{resting.id}/retry"), 409, "retry-not-allowed")
    assert (rest["resourceId"], rest["kind"], rest["state"], rest["role"]) == (resting.id, "image", "queued", "rest")
    assert rest["reason"] == "no desired state is pending, so no step runs there"
    assert "in state 'queued' (role: rest)" in rest["detail"]
    assert (
        "accepted only for a resource in a work state, or a rest state on its way to a desired state, whose next "
        "attempt is scheduled later"
    ) in rest["detail"]
    work = assert_problem(live.admin.post(f"/v1/resources/{due.id}/retry"), 409, "retry-not-allowed")
    assert (work["state"], work["role"]) == ("pending", "work")
    assert work["reason"].startswith("its next attempt is due already")
    assert live.store.get(resting.id) == resting
    assert live.store.get(due.id) == due


def test_retry_not_allowed_is_a_409_wherever_it_is_raised() -> None:
    """The error table answers it (not one route): 409 ``retry-not-allowed``, like the other write conflicts."""
    refused = RetryNotAllowed(resource_id="r1", kind="job", state="waiting", role="wait", reason="no step runs there")
    assert problem_for(refused) == RETRY_NOT_ALLOWED
    assert (RETRY_NOT_ALLOWED.status, RETRY_NOT_ALLOWED.slug) == (409, "retry-not-allowed")


def test_a_rest_state_backing_off_on_its_way_to_a_desired_state_is_retried_now(live: Live) -> None:
    rid = live.store.set_desired_state(live.store.create("image", {"name": "disk"}).id, "deleted").id
    before = backing_off(live.store, "image", "queued", rid)
    waiting = live.store.fire(live.store.create("job").id, "request")

    r = live.admin.post(f"/v1/resources/{rid}/retry", headers={"If-Match": f'"{before.version}"'})

    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["desiredState"], r.json()["version"]) == (
        "queued",
        "deleted",
        before.version + 1,
    )
    wait = assert_problem(live.admin.post(f"/v1/resources/{waiting.id}/retry"), 409, "retry-not-allowed")
    assert (wait["state"], wait["role"], wait["reason"]) == ("waiting", "wait", "no step runs there")


def test_an_unpinned_retry_that_loses_every_race_is_a_409_conflict(
    start_live: Callable[..., Live], module_db: str, service_store: EngineStore
) -> None:
    """Each time the server plans the retry, another writer moves the resource on first: after a bounded
    number of tries the answer is the conflict, and nothing was written."""
    meddling = MeddlingClock(datetime.now(UTC))
    store = open_store(module_db, KINDS, clock=meddling, check_schema=False)
    try:
        live = start_live(store=store)
        before = backing_off(service_store)
        renewals: list[Resource] = []
        meddling.meddle = lambda: renewals.append(
            service_store.use(before.id, "urn:example:renewer", ttl=timedelta(hours=1), client="ops", admin=True)
        )
        try:
            answer = live.admin.post(f"/v1/resources/{before.id}/retry")
        finally:
            meddling.meddle = None

        problem = assert_problem(answer, 409, "conflict")
        assert len(renewals) >= BLIND_FIRE_ATTEMPTS
        assert problem["resourceId"] == before.id
        after = service_store.get(before.id)
        assert RETRY_NOW_EVENT not in [e.event for e in service_store.journal(before.id)]
        assert after.next_attempt_at == before.next_attempt_at
    finally:
        store.close()


def test_if_match_pins_the_version(live: Live) -> None:
    before = backing_off(live.store)
    path = f"/v1/resources/{before.id}/retry"

    stale = live.admin.post(path, headers={"If-Match": f'"{before.version - 1}"'})
    assert assert_problem(stale, 412, "precondition-failed")["actualVersion"] == before.version
    assert stale.headers["etag"] == f'"{before.version}"'
    assert_problem(live.admin.post(path, headers={"If-Match": f'W/"{before.version}"'}), 412, "precondition-failed")
    assert_problem(live.admin.post(path, headers={"If-Match": "three"}), 400, "invalid-if-match")
    assert live.store.get(before.id) == before
    assert_problem(live.admin.post("/v1/resources/nobody/retry"), 404, "resource-not-found")
    assert_problem(live.admin.post("/v1/resources/bad%20id/retry"), 404, "resource-not-found")
    # pressed twice on the same version: the second is stale
    assert live.admin.post(path, headers={"If-Match": f'"{before.version}"'}).status_code == 200
    assert_problem(live.admin.post(path, headers={"If-Match": f'"{before.version}"'}), 412, "precondition-failed")


def test_the_openapi_document_lists_what_retry_answers(live: Live) -> None:
    operation = live.anonymous.get("/openapi.json").json()["paths"]["/v1/resources/{resource_id}/retry"]["post"]
    assert set(operation["responses"]) == {"200", "400", "401", "403", "404", "409", "412", "422", "431", "500", "503"}
    assert "ETag" in operation["responses"]["200"]["headers"]
    assert "ETag" in operation["responses"]["412"]["headers"]
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert "requestBody" not in operation
    assert [p["name"] for p in operation["parameters"] if p["in"] == "header"] == ["If-Match"]
    assert "admin" in operation["summary"]


def test_the_client_and_the_command_retry_now(live: Live, tmp_path: Path) -> None:
    first = backing_off(live.store)
    with Client(live.url, token=ADMIN) as api:
        retried = api.retry_now(first.id, if_version=first.version)
    assert (retried["id"], retried["version"]) == (first.id, first.version + 1)
    taken = live.store.claim("w2", [("job", "pending")], lease=timedelta(seconds=30))  # due now, and out of the way
    assert [c.resource.id for c in taken] == [first.id]

    second = backing_off(live.store)
    (tmp_path / "admin.token").write_text(ADMIN)
    (tmp_path / "writer.token").write_text(WRITER)
    on = ("--server", live.url)
    done = tenure("retry", second.id, "--json", *on, "--token-file", str(tmp_path / "admin.token"), cwd=tmp_path)
    assert done.json()["version"] == second.version + 1
    again = tenure("retry", second.id, *on, "--token-file", str(tmp_path / "admin.token"), cwd=tmp_path)
    clean(again)
    assert again.returncode == 1
    assert "cannot be retried now" in again.stderr
    assert "its next attempt is due already" in again.stderr
    writer = tenure("retry", second.id, *on, "--token-file", str(tmp_path / "writer.token"), cwd=tmp_path)
    clean(writer)
    assert writer.returncode == 1
    assert "admin" in writer.stderr


def test_the_command_retries_now_on_a_database_directly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tenure.db'}"
    assert tenure("migrate", "--database", url, cwd=tmp_path).returncode == 0
    store = open_store(url, builtin_kinds(), tables=builtin_tables())
    try:
        rid = store.fire(store.create("image", {"name": "disk"}).id, "upload").id
        before = backing_off(store, "image", "saving", rid)
    finally:
        store.close()

    done = tenure("retry", rid, "--if-version", str(before.version), "--database", url, cwd=tmp_path)
    clean(done)
    assert done.returncode == 0, done.stderr
    assert f"{rid} image saving (version {before.version + 1}); next attempt due now" in done.stdout
    stale = tenure("retry", rid, "--if-version", str(before.version), "--database", url, cwd=tmp_path)
    clean(stale)
    assert stale.returncode == 1
    assert "expected version" in stale.stderr
    history = tenure("history", rid, "--json", "--database", url, cwd=tmp_path).json()
    assert (history[-1]["event"], history[-1]["actor"]) == (RETRY_NOW_EVENT, "cli")
