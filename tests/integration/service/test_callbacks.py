"""``/v1/callbacks`` through a real server, with a resource the engine put in a wait state.

The external party posts its answer with the correlation token the step handed out: accepted (202),
duplicate (200), or refused with a problem saying why (wrong token 403, superseded 409, conflicting
answer 409, key not awaited 422); a refusal writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tenure.store.inbox import token_hash
from tests.support.problems import assert_problem
from tests.support.service_support import Live, Waiting

pytestmark = pytest.mark.timeout(60)

MakeWaiting = Callable[..., Waiting]


def answer(waiting: Waiting, key: str, status: str = "done", **extra: Any) -> dict[str, Any]:
    return {"resourceId": waiting.resource.id, "token": waiting.token, "key": key, "status": status, **extra}


def inbox(live: Live, waiting: Waiting) -> list[tuple[str, str, dict[str, Any]]]:
    return [(c.key, c.status.value, dict(c.data)) for c in live.store.callbacks(token_hash(waiting.token))]


def test_an_accepted_callback_is_202_with_a_receipt_and_recorded(live: Live, make_waiting: MakeWaiting) -> None:
    waiting = make_waiting()

    r = live.anonymous.post("/v1/callbacks", json=answer(waiting, "a", data={"url": "u-a"}))

    assert r.status_code == 202, r.text
    receipt = r.json()
    assert (receipt["delivery"], receipt["resourceId"], receipt["key"]) == ("accepted", waiting.resource.id, "a")
    assert isinstance(receipt["seq"], int)
    assert inbox(live, waiting) == [("a", "done", {"url": "u-a"})]
    assert live.store.get(waiting.resource.id).version == waiting.resource.version, "only the inbox is written"


def test_answers_are_applied_by_the_engine(live: Live, make_waiting: MakeWaiting) -> None:
    waiting = make_waiting()
    rid = waiting.resource.id

    assert live.anonymous.post("/v1/callbacks", json=answer(waiting, "a", data={"n": 1})).status_code == 202
    assert live.anonymous.post("/v1/callbacks", json=answer(waiting, "b", data={"n": 2})).status_code == 202
    assert waiting.worker.apply_callbacks() == 2

    got = live.reader.get(f"/v1/resources/{rid}").json()
    assert got["state"] == "done"
    assert got["data"]["answers"]["a"]["data"] == {"n": 1}
    assert got["data"]["answers"]["b"]["data"] == {"n": 2}
    last = live.reader.get(f"/v1/resources/{rid}/journal").json()["items"][-1]
    assert (last["event"], last["fromState"], last["toState"]) == ("answered", "awaiting", "done")


def test_the_same_answer_again_is_a_duplicate_200_and_nothing_more_is_recorded(
    live: Live, make_waiting: MakeWaiting
) -> None:
    waiting = make_waiting()
    first = live.anonymous.post("/v1/callbacks", json=answer(waiting, "a", data={"x": 1}))
    again = live.anonymous.post("/v1/callbacks", json=answer(waiting, "a", data={"x": 1}))

    assert first.status_code == 202
    assert again.status_code == 200, again.text
    assert again.json()["delivery"] == "duplicate"
    assert again.json()["seq"] == first.json()["seq"]
    assert again.json()["reason"]
    assert inbox(live, waiting) == [("a", "done", {"x": 1})]


def test_a_duplicate_after_the_engine_applied_it_is_still_200(live: Live, make_waiting: MakeWaiting) -> None:
    waiting = make_waiting(("a",))
    assert live.anonymous.post("/v1/callbacks", json=answer(waiting, "a")).status_code == 202
    assert waiting.worker.apply_callbacks() == 1
    assert live.store.get(waiting.resource.id).state == "done"

    again = live.anonymous.post("/v1/callbacks", json=answer(waiting, "a"))

    assert again.status_code == 200, again.text
    assert again.json()["delivery"] == "duplicate"
    assert "applied" in again.json()["reason"]


@pytest.mark.parametrize("which", ["unknown", "other-resource"])
def test_a_wrong_token_is_403_and_nothing_is_recorded(live: Live, make_waiting: MakeWaiting, which: str) -> None:
    waiting = make_waiting()
    other = make_waiting()
    body = answer(waiting, "a")
    body["token"] = "not-the-token-0123456789" if which == "unknown" else other.token

    r = live.anonymous.post("/v1/callbacks", json=body)

    problem = assert_problem(r, 403, "callback-token-refused")
    assert (problem["resourceId"], problem["key"], problem["refusal"]) == (waiting.resource.id, "a", "unknown-token")
    assert inbox(live, waiting) == []
    assert inbox(live, other) == []


def test_a_token_for_an_unknown_resource_is_403(live: Live, make_waiting: MakeWaiting) -> None:
    waiting = make_waiting()
    body = answer(waiting, "a")
    body["resourceId"] = "no-such-resource"
    problem = assert_problem(live.anonymous.post("/v1/callbacks", json=body), 403, "callback-token-refused")
    assert problem["resourceId"] == "no-such-resource"
    assert inbox(live, waiting) == []


def test_a_key_the_wait_does_not_await_is_422_naming_the_awaited_ones(live: Live, make_waiting: MakeWaiting) -> None:
    waiting = make_waiting(("a", "b"))

    problem = assert_problem(
        live.anonymous.post("/v1/callbacks", json=answer(waiting, "c")), 422, "callback-not-awaited"
    )

    assert (problem["key"], problem["refusal"]) == ("c", "not-awaited")
    assert "a, b" in problem["detail"]
    assert inbox(live, waiting) == []


def test_a_different_answer_for_an_answered_key_is_409_and_the_first_stays(
    live: Live, make_waiting: MakeWaiting
) -> None:
    waiting = make_waiting()
    assert live.anonymous.post("/v1/callbacks", json=answer(waiting, "a", data={"v": 1})).status_code == 202

    for different in (answer(waiting, "a", data={"v": 2}), answer(waiting, "a", "failed", error="boom")):
        problem = assert_problem(live.anonymous.post("/v1/callbacks", json=different), 409, "callback-conflict")
        assert (problem["key"], problem["refusal"]) == ("a", "conflicting-answer")

    assert inbox(live, waiting) == [("a", "done", {"v": 1})]


def test_a_callback_for_a_superseded_attempt_is_409_and_nothing_is_recorded(
    live: Live, make_waiting: MakeWaiting
) -> None:
    waiting = make_waiting()
    rid = waiting.resource.id
    cancelled = live.writer.post(f"/v1/resources/{rid}/events", json={"event": "cancel"})
    assert cancelled.status_code == 200, cancelled.text

    r = live.anonymous.post("/v1/callbacks", json=answer(waiting, "a"))

    problem = assert_problem(r, 409, "callback-superseded")
    assert (problem["resourceId"], problem["refusal"]) == (rid, "superseded")
    assert "cancelled" in problem["detail"]
    assert inbox(live, waiting) == []
    assert live.store.get(rid).state == "cancelled"


def test_a_retry_answer_starts_a_new_attempt_whose_token_differs(live: Live, make_waiting: MakeWaiting) -> None:
    waiting = make_waiting(("a",))
    assert live.anonymous.post("/v1/callbacks", json=answer(waiting, "a", "retry", error="busy")).status_code == 202
    assert waiting.worker.apply_callbacks() == 1
    assert live.store.get(waiting.resource.id).state == "todo"
    assert waiting.worker.tick() == 1
    assert live.store.get(waiting.resource.id).state == "awaiting"
    new_token = waiting.asker.tokens[-1]
    assert new_token != waiting.token

    stale = live.anonymous.post("/v1/callbacks", json=answer(waiting, "a"))
    assert stale.status_code == 409, stale.text
    assert stale.json()["refusal"] in ("superseded", "conflicting-answer")
    fresh = {**answer(waiting, "a"), "token": new_token}
    assert live.anonymous.post("/v1/callbacks", json=fresh).status_code == 202


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "finished"}, "status"),
        ({"key": ""}, "key"),
        ({"key": "k" * 201}, "key"),
        ({"token": ""}, "token"),
        ({"resourceId": ""}, "resourceId"),
        ({"data": [1, 2]}, "data"),
        ({"error": "e" * 4001}, "error"),
    ],
)
def test_an_invalid_callback_is_422_and_nothing_is_recorded(
    live: Live, make_waiting: MakeWaiting, change: dict[str, Any], field: str
) -> None:
    waiting = make_waiting()
    problem = assert_problem(
        live.anonymous.post("/v1/callbacks", json={**answer(waiting, "a"), **change}), 422, "invalid-request"
    )
    assert [e["field"] for e in problem["errors"]] == [field], problem
    assert inbox(live, waiting) == []


def test_a_callback_missing_fields_is_422(live: Live, make_waiting: MakeWaiting) -> None:
    waiting = make_waiting()
    problem = assert_problem(
        live.anonymous.post("/v1/callbacks", json={"resourceId": waiting.resource.id}), 422, "invalid-request"
    )
    assert {e["field"] for e in problem["errors"]} == {"token", "key", "status"}
    assert inbox(live, waiting) == []


def test_a_callback_with_a_nul_character_is_refused_and_nothing_recorded(live: Live, make_waiting: MakeWaiting) -> None:
    waiting = make_waiting(("a",))
    r = live.anonymous.post("/v1/callbacks", json=answer(waiting, "a", data={"v": "x\u0000y"}))
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert inbox(live, waiting) == []


def test_the_snake_case_resource_id_is_accepted_too(live: Live, make_waiting: MakeWaiting) -> None:
    waiting = make_waiting()
    body = answer(waiting, "a")
    body["resource_id"] = body.pop("resourceId")
    assert live.anonymous.post("/v1/callbacks", json=body).status_code == 202


# --- client tokens on callbacks --------------------------------------------------------------------


def test_a_client_token_sent_with_a_callback_must_grant_the_callback_scope(
    live: Live, make_waiting: MakeWaiting
) -> None:
    waiting = make_waiting()

    refused = live.reader.post("/v1/callbacks", json=answer(waiting, "a"))
    accepted = live.callbacker.post("/v1/callbacks", json=answer(waiting, "a"))

    problem = assert_problem(refused, 403, "forbidden")
    assert problem["requiredScope"] == "callback"
    assert accepted.status_code == 202, accepted.text
    assert inbox(live, waiting) == [("a", "done", {})]


def test_callbacks_can_be_configured_to_need_a_client_token(
    start_live: Callable[..., Live], make_waiting: MakeWaiting
) -> None:
    from tests.support.live_server import all_scopes_config

    strict = start_live(config=all_scopes_config(callbacks_need_client=True))
    waiting = make_waiting()

    assert_problem(strict.anonymous.post("/v1/callbacks", json=answer(waiting, "a")), 401, "unauthorized")
    assert strict.callbacker.post("/v1/callbacks", json=answer(waiting, "a")).status_code == 202


# --- callbacks and desired state ---------------------------------------------------------------------


def test_a_desired_state_set_while_waiting_does_not_supersede_the_awaited_callbacks(
    live: Live, make_waiting: MakeWaiting
) -> None:
    waiting = make_waiting()
    rid = waiting.resource.id

    put = live.writer.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": "done"})
    assert put.status_code == 202, put.text

    # The provisioner answers the attempt that asked: nothing about that attempt changed.
    r = live.anonymous.post("/v1/callbacks", json=answer(waiting, "a"))
    assert r.status_code == 202, r.text
    r = live.anonymous.post("/v1/callbacks", json=answer(waiting, "b"))
    assert r.status_code == 202, r.text
    waiting.worker.apply_callbacks()
    assert live.reader.get(f"/v1/resources/{rid}").json()["state"] == "done"


def test_callbacks_accepted_before_a_desired_state_is_set_are_still_applied(
    live: Live, make_waiting: MakeWaiting
) -> None:
    waiting = make_waiting()
    rid = waiting.resource.id
    assert live.anonymous.post("/v1/callbacks", json=answer(waiting, "a")).status_code == 202
    assert live.anonymous.post("/v1/callbacks", json=answer(waiting, "b")).status_code == 202

    put = live.writer.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": "done"})
    assert put.status_code == 202, put.text
    waiting.worker.apply_callbacks()

    assert live.reader.get(f"/v1/resources/{rid}").json()["state"] == "done"
