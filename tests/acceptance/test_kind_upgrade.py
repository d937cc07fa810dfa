"""Issue 15: upgrading a running control plane from ``transfer`` version 1 to version 2 without disruption.

A control plane (a real ``tenure serve``, its own SQLite database) first runs with no data planes:
``transfer`` is version 1 there and the control plane provisions transfers itself. Transfers are
brought mid-flight: resting in ``started`` and ``suspended``, and (from an API-only run of the same
process, whose workers are off) not yet begun, in ``initial``. Then it is stopped with SIGTERM and
started again with a data plane configured: that loads version 2 next to version 1. The transfers
made before finish on version 1, through its deprecated ``*PROVISION*`` states and without a signal
to the data plane, while a new transfer is made under version 2 and signals the data plane. No
journal loses or skips a version across the restarts.

Note: a version 1 transfer cannot be left in a version 1 *wait* state with the built-in kinds: its
only provisioner type is the synchronous ``memory`` (the spec refuses any other), so the ``initial``
transfers stand for "mid-flight with its next steps still to run".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tenure.cli.planes import LocalPlanes
from tests.support.planes_support import (
    create_transfer,
    eventually,
    journal,
    memory_async,
    resource,
    transfer_spec,
    wait_state,
)

#: Version 1's states that version 2 moved to the data plane (deprecated in version 1, absent from 2).
PROVISION_STATES = {
    "provisioning",
    "provisioning_requested",
    "provisioned",
    "deprovisioning",
    "deprovisioning_requested",
    "deprovisioned",
    "deprovisioning_failed",
}
#: Version 1's path from ``initial`` to ``started`` (its steps: it provisions, requests and starts).
V1_TO_STARTED = ["initial", "provisioning", "provisioned", "requesting", "requested", "starting", "started"]
#: Version 1's path from ``started`` after ``complete`` (it deprovisions what it provisioned).
V1_COMPLETE = ["completing", "completed", "deprovisioning", "deprovisioned"]


def fire(http: httpx.Client, rid: str, event: str) -> None:
    fired = http.post(f"/v1/resources/{rid}/events", json={"event": event})
    assert fired.status_code == 200, fired.text


def kind(http: httpx.Client, **params: Any) -> dict[str, Any]:
    got = http.get("/v1/kinds/transfer", params=params)
    assert got.status_code == 200, got.text
    value: dict[str, Any] = got.json()
    return value


def stop_gracefully(planes: LocalPlanes) -> None:
    """SIGTERM the control plane; it must exit cleanly (a crash would be no upgrade)."""
    planes.control.stop()
    assert planes.control.returncode == 0, planes.control.log.read_text()[-4000:]


def path(entries: list[dict[str, Any]]) -> list[str]:
    return [e["toState"] for e in entries]


def assert_contiguous(entries: list[dict[str, Any]]) -> None:
    assert [e["version"] for e in entries] == list(range(1, len(entries) + 1)), entries


@pytest.mark.timeout(180)
def test_a_control_plane_upgrades_from_transfer_v1_to_v2_without_disrupting_transfers(tmp_path: Path) -> None:
    planes = LocalPlanes(tmp_path, dataplanes=())
    control = planes.control
    with planes:
        # --- before: no data planes, transfer version 1 only --------------------------------------
        with control.client() as cp:
            v1 = kind(cp)
            assert (v1["version"], v1["versions"]) == (1, [1])
            assert {s["name"] for s in v1["states"]} >= PROVISION_STATES

            started = [create_transfer(cp, {"asset": f"running-{i}.csv"}) for i in range(2)]
            paused = create_transfer(cp, {"asset": "paused.csv"})
            for rid in [*started, paused]:
                wait_state(cp, rid, "started")
            fire(cp, paused, "suspend")
            wait_state(cp, paused, "suspended")

        # The same process API-only (no workers): transfers accepted now have not begun at the upgrade.
        stop_gracefully(planes)
        control.workers = 0
        control.start()
        with control.client() as cp:
            waiting = [create_transfer(cp, {"asset": f"waiting-{i}.csv"}) for i in range(2)]
            old = [*started, paused, *waiting]
            for rid in old:
                assert resource(cp, rid)["kindVersion"] == 1
            assert {resource(cp, rid)["state"] for rid in waiting} == {"initial"}
            before = {rid: journal(cp, rid) for rid in old}
        for rid in old:
            assert_contiguous(before[rid])

        # --- the upgrade: SIGTERM, then the same database with a data plane configured ----------------
        planes.add_dataplane("dp1")
        stop_gracefully(planes)
        control.workers = 1
        planes.start()
        with control.client() as cp, planes.dataplanes["dp1"].client() as dp:
            v2 = kind(cp)
            assert (v2["version"], v2["versions"]) == (2, [1, 2])
            v2_states = {s["name"] for s in v2["states"]}
            assert not v2_states & PROVISION_STATES
            old_graph = kind(cp, version=1)
            assert old_graph["version"] == 1
            deprecated = {s["name"] for s in old_graph["states"] if s["deprecated"]}
            assert deprecated == PROVISION_STATES

            # The transfers that had not begun run version 1's steps: the control plane provisions them.
            for rid in waiting:
                wait_state(cp, rid, "started")
                assert path(journal(cp, rid)) == V1_TO_STARTED
            # The paused one resumes on version 1 too.
            fire(cp, paused, "resume")
            wait_state(cp, paused, "started")

            # Every old transfer completes on version 1, through states version 2 does not have.
            for rid in old:
                fire(cp, rid, "complete")
            for rid in old:
                done = wait_state(cp, rid, "deprovisioned")
                assert done["kindVersion"] == 1
                assert done["data"]["ended"] == "completed"
                after = journal(cp, rid)
                assert after[: len(before[rid])] == before[rid]  # the journal kept its past as it was
                assert_contiguous(after)
                assert path(after)[-len(V1_COMPLETE) :] == V1_COMPLETE
                assert {"provisioning", "deprovisioning", "deprovisioned"} <= set(path(after)) - v2_states
                # Version 1 provisions in the control plane: the data plane never heard of them.
                assert dp.get(f"/v1/resources/{rid}").status_code == 404

            # --- a new transfer: version 2, signalled to the data plane ----------------------------------
            refused = cp.post("/v1/resources", json={"kind": "transfer", "spec": {"asset": "old-style.csv"}})
            assert refused.status_code == 422, refused.text  # version 2 needs a type: it is version 2's spec
            assert "type" in refused.text

            new = create_transfer(cp, transfer_spec("provider", resources=[memory_async(delay_ms=50)]))
            assert resource(cp, new)["kindVersion"] == 2
            wait_state(cp, new, "started")
            assert wait_state(dp, new, "started")["spec"]["signal"] == "start"
            asked = cp.put(f"/v1/resources/{new}/desired-state", json={"desiredState": "terminated"})
            assert asked.status_code == 202, asked.text
            ended = wait_state(cp, new, "terminated")
            assert (ended["kindVersion"], ended["data"]["ended"]) == (2, "terminated")
            eventually(lambda: resource(dp, new)["state"] == "deprovisioned", 20, what="the flow's deprovisioning")
            new_journal = journal(cp, new)
            assert_contiguous(new_journal)
            assert path(new_journal) == [
                "initial",
                "startup_requested",
                "starting",
                "started",
                "started",  # the desired state (@desired), then the signal
                "termination_requested",
                "terminating",
                "terminated",
            ]
            assert not set(path(new_journal)) & PROVISION_STATES
