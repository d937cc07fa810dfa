"""``transfer`` version 2 as declared: codes, roles, deadlines, guards, who may fire what; version 1's deprecations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from tenure.errors import InvalidArgument, InvalidSpec, TransitionNotAllowed
from tenure.kinds.transfer import transfer, transfer_kind, transfer_steps, transfer_v1
from tenure.kinds.transfer_v2 import CLIENT_EVENTS, STEP_DATA, transfer_v2_kind, transfer_v2_steps
from tenure.machine import Kind, Role
from tenure.machine.graph import next_hop

DEADLINE = timedelta(seconds=45)

#: EDC's TransferProcessStates (0.16): the codes of the states version 2 shares with EDC.
EDC = {
    "initial": 100,
    "requesting": 400,
    "requested": 500,
    "starting": 550,
    "startup_requested": 570,
    "started": 600,
    "suspending": 650,
    "suspended": 700,
    "completing": 750,
    "completed": 800,
    "terminating": 825,
    "terminated": 850,
}

EXPECTED = {
    **EDC,
    # The seed's new states: codes of their own (EDC's 675 and 840 are counter-party requests).
    "suspension_requested": 660,
    "termination_requested": 830,
    "preparation_requested": 150,
    # Completing tells the data plane the flow is over, and may wait for its deprovisioning.
    "completion_requested": 760,
}

ROLES = {
    "initial": Role.WORK,
    "preparation_requested": Role.WAIT,
    "requesting": Role.WORK,
    "requested": Role.REST,
    "starting": Role.WORK,
    "startup_requested": Role.WAIT,
    "started": Role.REST,
    "suspending": Role.WORK,
    "suspension_requested": Role.WAIT,
    "suspended": Role.REST,
    "completing": Role.WORK,
    "completion_requested": Role.WAIT,
    "completed": Role.FINAL,
    "terminating": Role.WORK,
    "termination_requested": Role.WAIT,
    "terminated": Role.FINAL,
}

#: The codes version 1 uses, each for its own state.
V1_CODES = (100, 200, 250, 300, 400, 500, 550, 570, 600, 650, 700, 750, 800, 825, 850, 900, 950, 1000, 1100)


@dataclass
class Subject:
    """What a guard looks at."""

    state: str
    spec: Mapping[str, Any]
    data: Mapping[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def kind() -> Kind:
    return transfer_v2_kind(dataplanes=["dp1", "dp2"], request_deadline=DEADLINE)


def consumer(state: str = "initial") -> Subject:
    return Subject(state, {"asset": "a", "type": "consumer", "dataplane": "dp1"})


def provider(state: str = "initial") -> Subject:
    return Subject(state, {"asset": "a", "type": "provider", "dataplane": "dp2"})


def test_it_is_version_2_of_transfer(kind: Kind) -> None:
    assert (kind.name, kind.version) == ("transfer", 2)
    assert (transfer.name, transfer.version) == ("transfer", 1)
    assert kind.initial.name == "initial"


def test_codes_are_edcs_where_edc_has_the_state(kind: Kind) -> None:
    assert {s.name: s.code for s in kind.states} == EXPECTED
    for name, code in EDC.items():
        assert kind.state_by_code(code).name == name


def test_no_code_of_version_1_means_another_state(kind: Kind) -> None:
    v1 = {s.code: s.name for s in transfer.states}
    assert sorted(v1) == sorted(V1_CODES)
    for s in kind.states:
        if s.code in v1:
            assert v1[s.code] == s.name, f"code {s.code} is {v1[s.code]!r} in version 1 and {s.name!r} in version 2"


def test_roles(kind: Kind) -> None:
    assert {s.name: s.role for s in kind.states} == ROLES


def test_every_wait_has_the_request_deadline_and_asks_again_at_it(kind: Kind) -> None:
    back_to = {
        "preparation_requested": "initial",
        "startup_requested": "starting",
        "suspension_requested": "suspending",
        "termination_requested": "terminating",
        "completion_requested": "completing",
    }
    waits = kind.states_with_role(Role.WAIT)
    assert {s.name for s in waits} == set(back_to)
    for s in waits:
        assert s.deadline == DEADLINE
        assert s.on_deadline is not None
        assert kind.target(s.name, s.on_deadline) == back_to[s.name], "the deadline goes back to signal again"


def test_the_seed_table(kind: Kind) -> None:
    """Each row: from the starting state, the async answer's event and the synchronous one's."""
    rows = [
        (consumer(), "prepare_requested", "preparation_requested", "prepared", "requesting"),
        (provider(), "start_requested", "startup_requested", "dataplane_started", "starting"),
        (consumer("started"), "suspend_requested", "suspension_requested", "suspend", "suspending"),
        (provider("started"), "suspend_requested", "suspension_requested", "suspend", "suspending"),
        (consumer("started"), "terminate_requested", "termination_requested", "terminate", "terminating"),
        (provider("started"), "terminate_requested", "termination_requested", "terminate", "terminating"),
    ]
    for subject, asynchronous, waiting, synchronous, standard in rows:
        assert kind.transition(subject.state, asynchronous, subject).target == waiting
        assert kind.transition(subject.state, synchronous, subject).target == standard


def test_a_provider_cannot_take_a_consumers_edges_nor_the_other_way_round(kind: Kind) -> None:
    for event in ("prepare_requested", "prepared"):
        with pytest.raises(TransitionNotAllowed) as caught:
            kind.transition("initial", event, provider())
        assert "guard" in str(caught.value)
    for event in ("start_requested", "dataplane_started"):
        with pytest.raises(TransitionNotAllowed):
            kind.transition("initial", event, consumer())
    # A provider has no requesting or requested (EDC's TransferProcess): the start message is a consumer's.
    with pytest.raises(TransitionNotAllowed):
        kind.transition("requested", "start", provider("requested"))
    assert kind.transition("requested", "start", consumer("requested")).target == "starting"


def test_only_the_counterpartys_messages_are_client_events(kind: Kind) -> None:
    assert set(CLIENT_EVENTS) == {"start", "complete"}
    assert kind.engine_events == frozenset(kind.event_names) - set(CLIENT_EVENTS)
    for state in ("started", "suspended", "requested", "initial", "terminating"):
        for event in kind.allowed_events(state):
            if event in CLIENT_EVENTS:
                kind.refuse_engine_event(state, event)  # allowed: nothing raised
                continue
            with pytest.raises(TransitionNotAllowed) as caught:
                kind.refuse_engine_event(state, event)
            assert "desiredState" in str(caught.value)
            assert set(caught.value.allowed) <= set(CLIENT_EVENTS)


def test_steps_own_their_data_and_the_assigned_plane_answers(kind: Kind) -> None:
    assert kind.step_data == frozenset(STEP_DATA)
    assert {"signals", "callback", "source", "destination", "ended", "failure"} <= kind.step_data
    assert kind.answered_by is not None
    assert kind.answered_by(consumer()) == "dp1"
    assert kind.answered_by(provider()) == "dp2"
    assert kind.answered_by(Subject("initial", {})) == "", "a transfer that names no plane takes no one's callback"


def test_the_spec(kind: Kind) -> None:
    spec = kind.validate_spec({"asset": "a-1", "type": "consumer"})
    assert spec["dataplane"] == "dp1", "the first configured data plane by default"
    assert spec["resources"] == []
    full = kind.validate_spec(
        {
            "asset": "a-1",
            "type": "provider",
            "dataplane": "dp2",
            "source": {"type": "s3", "bucket": "in"},
            "destination": {"type": "s3", "bucket": "out"},
            "resources": [{"id": "bucket", "type": "memory"}],
        }
    )
    assert full["resources"] == [{"id": "bucket", "type": "memory", "spec": {}}]
    with pytest.raises(InvalidSpec) as caught:
        kind.validate_spec({"asset": "a-1", "type": "consumer", "dataplane": "dp9"})
    assert "'dp9' is not a data plane here (known data planes: dp1, dp2)" in str(caught.value)
    for bad in (
        {"asset": "a-1"},  # type is required
        {"asset": "a-1", "type": "both"},
        {"asset": "a-1", "type": "consumer", "role": "consumer"},  # extra fields are refused
        {"asset": "a-1", "type": "consumer", "resources": [{"id": "x", "type": "m"}, {"id": "x", "type": "m"}]},
    ):
        with pytest.raises(InvalidSpec):
            kind.validate_spec(bad)


def test_desired_states_lead_where_the_seed_says(kind: Kind) -> None:
    assert next_hop(kind, "started", "suspended") == "suspend"
    assert next_hop(kind, "started", "terminated") == "terminate"
    assert next_hop(kind, "started", "completed") == "complete"
    assert next_hop(kind, "suspended", "started") == "resume"
    assert next_hop(kind, "suspended", "terminated") == "terminate"
    assert next_hop(kind, "requested", "terminated") == "terminate"
    assert next_hop(kind, "requested", "started") == "start"


def test_a_kind_needs_data_planes_and_steps_need_a_callback() -> None:
    with pytest.raises(InvalidArgument):
        transfer_v2_kind(dataplanes=[], request_deadline=DEADLINE)
    with pytest.raises(InvalidArgument):
        transfer_v2_kind(dataplanes=[""], request_deadline=DEADLINE)
    one = transfer_v2_kind(dataplanes="dp1", request_deadline=DEADLINE)
    assert one.validate_spec({"asset": "a", "type": "consumer"})["dataplane"] == "dp1"
    with pytest.raises(InvalidArgument):
        transfer_v2_steps({}, callback_url="", kind=one)
    with pytest.raises(InvalidArgument):
        transfer_v2_steps({}, callback_url="http://cp/v1/callbacks", kind=one, max_round_trips=0)
    steps = transfer_v2_steps({}, callback_url="http://cp/v1/callbacks", kind=one)
    assert {state for _, state in steps.due()} == {
        "initial",
        "requesting",
        "starting",
        "started",
        "suspending",
        "completing",
        "terminating",
    }
    assert steps.get("transfer", "started", version=2) is not None, "started's rest-state step"
    assert steps.get("transfer", "initial", version=1) is None


def test_version_1_keeps_its_graph_and_marks_its_provisioning_deprecated() -> None:
    assert transfer_v1 is transfer
    deprecated = {s.name for s in transfer.states if s.deprecated}
    assert deprecated == {
        "provisioning",
        "provisioning_requested",
        "provisioned",
        "deprovisioning",
        "deprovisioning_requested",
        "deprovisioned",
        "deprovisioning_failed",
    }
    assert all(s["deprecated"] == (s["name"] in deprecated) for s in transfer.describe()["states"])
    again = transfer_kind()
    assert again.version == 1
    assert [(s.name, s.code, s.role) for s in again.states] == [(s.name, s.code, s.role) for s in transfer.states]
    assert len(transfer_steps()) == 12


def test_both_versions_can_be_loaded_side_by_side(kind: Kind) -> None:
    both = transfer_steps() | transfer_v2_steps({}, callback_url="http://cp/v1/callbacks", kind=kind)
    assert {(k.name, k.version) for k in both.all_kinds} == {("transfer", 1), ("transfer", 2)}
    assert both.get("transfer", "initial", version=1) is not None
    assert both.get("transfer", "initial", version=2) is not None, "each version runs its own step there"
