"""Issue 15, seed 001: a control plane and its data planes as real ``tenure serve`` processes.

Each plane is its own process with its own SQLite database and configuration
(:class:`tenure.cli.planes.LocalPlanes`); they talk HTTP and nothing else. The module starts one
control plane with two data planes (dp1, dp2) and every test uses transfers of its own; dp1 is
reached through a :class:`SignalRecorder`, a transparent proxy that shows what the control plane
actually sent. The test that kills a data plane and relies on short deadlines runs its own planes.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenure.cli.planes import LocalPlanes
from tenure.cli.signaling_demo import ROWS, SCENARIOS, Row, Scenario, rows_taken, walk
from tenure.kinds.transfer_v2 import transfer_v2_steps
from tests.support.planes_support import (
    SignalRecorder,
    create_transfer,
    eventually,
    journal,
    memory_async,
    resource,
    transfer_spec,
    wait_state,
)

#: A provisioning that does not end while a test runs (the memory-async provisioner's delay, in ms).
FOREVER_MS = 600_000
#: How many round trips a signal gets before its state fails for good (what ``tenure serve`` configures).
ROUND_TRIPS: int = inspect.signature(transfer_v2_steps).parameters["max_round_trips"].default
#: The operation a signal starts on the data plane when it goes async (its event there).
OPERATION = {"prepare": "provision", "start": "provision", "suspend": "deprovision", "terminate": "deprovision"}
#: The data plane's events a signal fires, settled at once or starting an operation.
SIGNAL_EVENTS = {"prepare", "start", "suspend", "terminate", "provision", "deprovision"}
#: The data plane's states where an operation is under way.
OPERATION_STATES = {
    "provisioning",
    "provision_requested",
    "provision_notifying",
    "deprovisioning",
    "deprovision_requested",
    "deprovision_notifying",
}


@pytest.fixture(scope="module")
def recorder() -> Iterator[SignalRecorder]:
    with SignalRecorder() as proxy:
        yield proxy


@pytest.fixture(scope="module")
def planes(tmp_path_factory: pytest.TempPathFactory, recorder: SignalRecorder) -> Iterator[LocalPlanes]:
    home = tmp_path_factory.mktemp("planes")
    local = LocalPlanes(home, dataplanes=["dp1", "dp2"], signal_urls={"dp1": recorder.url})
    recorder.target = local.dataplanes["dp1"].url
    with local:
        yield local


@pytest.fixture(scope="module")
def cp(planes: LocalPlanes) -> Iterator[httpx.Client]:
    with planes.control.client() as http:
        yield http


@pytest.fixture(scope="module")
def dp1(planes: LocalPlanes) -> Iterator[httpx.Client]:
    with planes.dataplanes["dp1"].client() as http:
        yield http


@pytest.fixture(scope="module")
def dp2(planes: LocalPlanes) -> Iterator[httpx.Client]:
    with planes.dataplanes["dp2"].client() as http:
        yield http


def post_callback(planes: LocalPlanes, body: dict[str, Any], token: str | None) -> httpx.Response:
    """POST ``body`` to the control plane's ``/v1/callbacks`` as a data plane would (``token``: its own)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(f"{planes.control.url}/v1/callbacks", json=body, headers=headers, timeout=10)


def done_callback(planes: LocalPlanes, flow: dict[str, Any]) -> dict[str, Any]:
    """The ``done`` callback dp1 posts for ``flow`` (its dataflow), to the callback it holds.

    The API hides the callback (the kind's secret data): it is read from dp1's own database file.
    """
    assert flow["data"]["callback"] == "<redacted>", "no API answer shows the callback token"
    database = planes.dataplanes["dp1"].home / "tenure.db"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        (raw,) = conn.execute("SELECT data FROM resources WHERE id = ?", (flow["id"],)).fetchone()
    callback = json.loads(raw)["callback"]
    return {
        "resourceId": callback["resourceId"],
        "token": callback["token"],
        "key": callback["key"],
        "status": "done",
        "data": {"dataFlowId": flow["id"], "state": "provisioned", "source": None, "destination": None},
    }


def signalled(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The signals a data plane's flow took, in order: (signal, the event it fired there)."""
    return [
        (e["detail"].get("signal"), e["event"])
        for e in entries
        if e["actor"] == "controlplane" and e["event"] in SIGNAL_EVENTS
    ]


def waiting_flow(planes: LocalPlanes, cp: httpx.Client, dp1: httpx.Client) -> tuple[str, dict[str, Any]]:
    """A consumer transfer waiting in ``preparation_requested`` for a provisioning that does not end; its flow."""
    rid = create_transfer(cp, transfer_spec("consumer", resources=[memory_async(delay_ms=FOREVER_MS)]))
    wait_state(cp, rid, "preparation_requested")
    return rid, wait_state(dp1, rid, "provision_requested")


# --- 1. every row of seed 001's table --------------------------------------------------------------


#: What each scenario's data plane sees while ``walk`` starts, suspends, resumes and terminates it.
EXPECTED_SIGNALS = {
    Scenario("consumer", False): [
        ("prepare", "prepare"),
        ("start", "start"),
        ("suspend", "suspend"),
        ("start", "start"),
        ("terminate", "terminate"),
    ],
    Scenario("consumer", True): [
        ("prepare", "provision"),
        ("start", "start"),  # everything was provisioned by the prepare: the start settles at once
        ("suspend", "deprovision"),
        ("start", "provision"),
        ("terminate", "deprovision"),
    ],
    Scenario("provider", False): [
        ("start", "start"),
        ("suspend", "suspend"),
        ("start", "start"),
        ("terminate", "terminate"),
    ],
    Scenario("provider", True): [
        ("start", "provision"),
        ("suspend", "deprovision"),
        ("start", "provision"),
        ("terminate", "deprovision"),
    ],
}


@pytest.mark.timeout(180)
def test_every_row_of_the_table_sync_and_async_across_two_processes(
    planes: LocalPlanes, cp: httpx.Client, dp1: httpx.Client
) -> None:
    logs: dict[Scenario, list[str]] = {s: [] for s in SCENARIOS}
    with ThreadPoolExecutor(len(SCENARIOS)) as pool:
        walks = {s: pool.submit(walk, planes, s, logs[s].append) for s in SCENARIOS}
        ids = {s: w.result() for s, w in walks.items()}

    seen: set[tuple[Row, bool]] = set()
    for scenario, rid in ids.items():
        log = "\n".join(logs[scenario])
        taken = rows_taken(scenario.side, journal(cp, rid))
        # Each transfer takes its side's three rows, all async or all not, as its resources say.
        assert {row for row, _ in taken} == {row for row in ROWS if row.side == scenario.side}, log
        assert {is_async for _, is_async in taken} == {scenario.provisions}, log
        seen |= taken

        end = "deprovisioned" if scenario.provisions else "terminated"
        wait_state(dp1, rid, end)
        flow_journal = journal(dp1, rid)
        moves = signalled(flow_journal)
        assert moves == EXPECTED_SIGNALS[scenario], log
        for row, is_async in taken:
            assert (row.signal, OPERATION[row.signal] if is_async else row.signal) in moves, (row, log)
        visited = {e["toState"] for e in flow_journal}
        if scenario.provisions:
            assert {"provisioning", "provision_requested", "deprovisioning", "deprovision_requested"} <= visited
        else:
            assert not visited & OPERATION_STATES, log

    assert seen == {(row, is_async) for row in ROWS for is_async in (True, False)}
    assert len(seen) == 12


# --- 2. a data plane killed while provisioning -------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_data_plane_killed_while_provisioning_is_asked_again_after_the_deadline(tmp_path: Path) -> None:
    with LocalPlanes(tmp_path, dataplanes=["dp1"], request_deadline=2.0) as planes:
        dataplane = planes.dataplanes["dp1"]
        with planes.control.client() as cp, dataplane.client() as dp:
            rid = create_transfer(cp, transfer_spec("consumer", resources=[memory_async(delay_ms=800)]))
            wait_state(dp, rid, "provision_requested")
            dataplane.kill()  # the provisioner's answer dies with the process: no callback will come

            def timed_out() -> bool:
                return any(e["event"] == "prepare_timed_out" for e in journal(cp, rid))

            eventually(timed_out, 15, what="the control plane's preparation_requested deadline")
            dataplane.start()
            done = wait_state(cp, rid, "requested", timeout=60)

            entries = journal(cp, rid)
            moves = [(e["fromState"], e["event"], e["toState"]) for e in entries]
            assert moves[:3] == [
                (None, "@create", "initial"),
                ("initial", "prepare_requested", "preparation_requested"),
                ("preparation_requested", "prepare_timed_out", "initial"),
            ]
            # The retry: asked again, and this time the data plane's callback came.
            assert moves[-3:] == [
                ("initial", "prepare_requested", "preparation_requested"),
                ("preparation_requested", "prepared", "requesting"),
                ("requesting", "requested", "requested"),
            ]
            record = done["data"]["signals"]["prepare"]
            assert record["confirmed"] is True
            assert record["asks"] >= 2

            # The restarted data plane kept its flow (its own database) and finished the provisioning.
            flow = wait_state(dp, rid, "provisioned")
            assert flow["data"]["notification"]["outcome"] == "delivered"
            flow_moves = signalled(journal(dp, rid))
            assert flow_moves[0] == ("prepare", "provision")


# --- 3. a failure callback ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_failure_callback_is_retried_then_the_transfer_ends_failed(cp: httpx.Client, dp1: httpx.Client) -> None:
    resources = [memory_async(delay_ms=20, fail="disk full")]
    rid = create_transfer(cp, transfer_spec("consumer", resources=resources))
    ended = wait_state(cp, rid, "terminated", timeout=40)

    assert ended["data"]["ended"] == "failed"
    assert "disk full" in ended["error"]
    assert "disk full" in ended["data"]["failure"]
    assert ended["data"]["signals"]["prepare"]["asks"] == ROUND_TRIPS

    entries = journal(cp, rid)
    # preparation_requested's declared retry, once per failed round trip, then the failure terminates it.
    retries = [e for e in entries if e["event"] == "prepare_retry"]
    assert len(retries) == ROUND_TRIPS
    assert all((e["fromState"], e["toState"]) == ("preparation_requested", "initial") for e in retries)
    moves = [(e["fromState"], e["event"], e["toState"]) for e in entries]
    assert ("initial", "terminate", "terminating") in moves
    assert moves[-1][1:] == ("terminated", "terminated")
    assert "prepared" not in {e["event"] for e in entries}

    # The data plane told it each time, and released what the failed provisioning touched.
    flow = wait_state(dp1, rid, "deprovisioned", "terminated")
    flow_moves = signalled(journal(dp1, rid))
    assert flow_moves[0] == ("prepare", "provision")
    assert flow_moves[-1][0] == "terminate"
    assert flow["data"]["notification"]["outcome"] == "delivered"


# --- 4. a callback from another data plane ---------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_callback_from_another_data_plane_is_refused(
    planes: LocalPlanes, cp: httpx.Client, dp1: httpx.Client
) -> None:
    rid, flow = waiting_flow(planes, cp, dp1)
    before = resource(cp, rid)
    body = done_callback(planes, flow)  # the right correlation token: only the caller is wrong

    as_dp2 = post_callback(planes, body, planes.callback_tokens["dp2"])
    assert as_dp2.status_code == 403, as_dp2.text
    problem = as_dp2.json()
    assert problem["type"] == "urn:tenure:problem:callback-caller-refused"
    assert problem["caller"] == "dp2"
    assert "expectedCaller" not in problem, "which plane is assigned is not told to another"
    assert "dp1" not in problem["detail"]

    anonymous = post_callback(planes, body, None)
    assert anonymous.status_code in (401, 403), anonymous.text

    after = resource(cp, rid)
    assert (after["state"], after["version"]) == ("preparation_requested", before["version"])
    assert journal(cp, rid)[-1]["version"] == before["version"]
    waits = cp.get(f"/v1/resources/{rid}/waits")
    assert waits.status_code == 200, waits.text
    # The wait is still open, its one key unanswered: the refused callbacks left no trace.
    assert [[(k["key"], k["received"]) for k in w["keys"]] for w in waits.json()] == [[("dataplane", False)]]


# --- 5. duplicate callbacks ------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_duplicate_callback_is_answered_200_and_moves_nothing(
    planes: LocalPlanes, cp: httpx.Client, dp1: httpx.Client
) -> None:
    rid, flow = waiting_flow(planes, cp, dp1)
    body = done_callback(planes, flow)
    token = planes.callback_tokens["dp1"]

    first = post_callback(planes, body, token)
    assert first.status_code == 202, first.text
    assert first.json()["delivery"] == "accepted"
    second = post_callback(planes, body, token)
    assert second.status_code == 200, second.text
    assert second.json()["delivery"] == "duplicate"

    moved = wait_state(cp, rid, "requested")
    late = post_callback(planes, body, token)  # after it was applied, too
    assert late.status_code == 200, late.text
    assert late.json()["delivery"] == "duplicate"

    entries = journal(cp, rid)
    answered = [e for e in entries if e["detail"].get("callbacks")]
    assert [(e["fromState"], e["event"]) for e in answered] == [("preparation_requested", "prepared")]
    assert [e["event"] for e in entries].count("prepared") == 1
    assert resource(cp, rid)["version"] == moved["version"] == entries[-1]["version"]


# --- 6. changed addresses -------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_an_address_the_provisioner_changed_is_kept_and_sent_with_later_signals(
    cp: httpx.Client, recorder: SignalRecorder
) -> None:
    requested_at = {"type": "s3", "bucket": "landing"}
    provisioned_at = {"type": "s3", "bucket": "landing-provisioned-7", "region": "eu-west-1"}
    resources = [memory_async(delay_ms=20, destination=provisioned_at)]
    rid = create_transfer(cp, transfer_spec("consumer", resources=resources, destination=requested_at))

    prepared = wait_state(cp, rid, "requested")
    assert prepared["spec"]["destination"] == requested_at
    assert prepared["data"]["destination"] == provisioned_at

    assert cp.post(f"/v1/resources/{rid}/events", json={"event": "start"}).status_code == 200
    wait_state(cp, rid, "started")
    for wish in ("suspended", "terminated"):
        asked = cp.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": wish})
        assert asked.status_code == 202, asked.text
        ended = wait_state(cp, rid, wish)
    assert ended["data"]["destination"] == provisioned_at

    sent = recorder.signals(rid)
    assert [s.name for s in sent] == ["prepare", "start", "suspend", "terminate"]
    assert all(s.status == 200 for s in sent)
    assert sent[0].body["destination"] == requested_at
    for later in sent[1:]:
        assert later.body["destination"] == provisioned_at, later


# --- 7. two data planes ------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_transfer_assigned_to_dp2_is_signalled_on_dp2_only(
    cp: httpx.Client, dp1: httpx.Client, dp2: httpx.Client, recorder: SignalRecorder
) -> None:
    rid = create_transfer(cp, transfer_spec("consumer", dataplane="dp2", resources=[memory_async(delay_ms=20)]))
    wait_state(cp, rid, "requested")
    assert wait_state(dp2, rid, "provisioned")["spec"]["transferId"] == rid
    assert dp1.get(f"/v1/resources/{rid}").status_code == 404

    assert cp.post(f"/v1/resources/{rid}/events", json={"event": "start"}).status_code == 200
    started = wait_state(cp, rid, "started")
    assert started["data"]["signals"]["start"]["confirmed"] is True
    wait_state(dp2, rid, "started")
    assert signalled(journal(dp2, rid)) == [("prepare", "provision"), ("start", "start")]
    assert dp1.get(f"/v1/resources/{rid}").status_code == 404
    assert dp1.get(f"/v1/resources/{rid}/journal").status_code == 404
    assert recorder.signals(rid) == []  # nothing for it went to dp1, not even a refused signal
