"""The ``dataflow`` kind's declaration: it validates, keeps Eclipse EDC's codes, and guards its signals."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tenure import InvalidSpec, Role, TransitionNotAllowed
from tenure.engine import signaling as contract
from tenure.engine.planes import ControlPlaneRef, Signaling
from tenure.kinds import builtin_kinds, builtin_steps
from tenure.kinds.dataflow import (
    ENGINE_EVENTS,
    SIGNAL_EVENTS,
    SIGNALS,
    STEP_DATA,
    TRANSFER_ID_PATTERN,
    DataflowSpec,
    addresses,
    dataflow,
    dataflow_for,
    dataflow_kind,
    holding,
    operation_marker,
)
from tenure.kinds.dataflow import kind as declaration
from tenure.service import signaling
from tenure.service.models import CallbackIn

#: Eclipse EDC's DataFlowStates codes where EDC has the state; tenure's own (new codes) where it does not.
CODES = {
    "provisioning": 25,
    "provision_requested": 40,
    "provision_notifying": 45,
    "provisioned": 50,
    "provision_failed": 60,
    "received": 100,
    "started": 150,
    "completed": 200,
    "suspended": 225,
    "terminated": 250,
    "failed": 300,
    "deprovisioning": 500,
    "deprovision_requested": 550,
    "deprovision_notifying": 575,
    "deprovisioned": 600,
    "deprovision_failed": 700,
}


def test_the_kind_validates_with_any_deadline() -> None:
    for deadline in (timedelta(seconds=1), timedelta(minutes=10)):
        kind = dataflow_kind(request_deadline=deadline)
        assert kind.name == "dataflow"
        assert {s.deadline for s in kind.states if s.role is Role.WAIT} == {deadline}


def test_the_codes_are_edcs_and_nothing_is_deprecated() -> None:
    assert {s.name: s.code for s in dataflow.states} == CODES
    assert not [s.name for s in dataflow.states if s.deprecated]
    assert dataflow.initial.name == "received"
    assert [s.name for s in dataflow.states if s.role is Role.FINAL] == ["terminated"]


def test_every_wait_state_asks_the_provisioners_again_at_its_deadline() -> None:
    waits = {s.name: s for s in dataflow.states if s.role is Role.WAIT}
    assert set(waits) == {"provision_requested", "deprovision_requested"}
    assert dataflow.target("provision_requested", "provision_timed_out") == "provisioning"
    assert dataflow.target("deprovision_requested", "deprovision_timed_out") == "deprovisioning"
    assert {s.on_deadline for s in waits.values()} == {"provision_timed_out", "deprovision_timed_out"}
    assert {s.deadline for s in waits.values()} == {Signaling().request_deadline}


def test_only_complete_is_a_clients_event_and_the_signaling_api_fires_only_the_kinds_events() -> None:
    assert set(dataflow.event_names) - set(ENGINE_EVENTS) == {"complete"}
    assert set(SIGNAL_EVENTS) <= set(dataflow.event_names)
    with pytest.raises(TransitionNotAllowed, match="only the engine fires it"):
        dataflow.refuse_engine_event("received", "start")
    assert set(STEP_DATA) == dataflow.step_data


def test_the_signaling_api_reads_the_kinds_own_declarations() -> None:
    """One definition of each: the service takes the groups and what is held from the kind object, and the
    wire's names from the contract module the kind re-exports (the service may not import a kind)."""
    assert isinstance(dataflow, signaling.FlowKind)
    assert dataflow.signal_events == frozenset(SIGNAL_EVENTS)
    assert dataflow.provisioning_states == frozenset(declaration.PROVISIONING_STATES)
    assert dataflow.reporting_states == frozenset(declaration.REPORTING_STATES)
    assert not hasattr(signaling, "EVENTS")
    assert not [name for name in vars(signaling) if name.startswith(("_UNDER_WAY", "_ENDED", "_PROVISIONING", "_ID"))]
    assert signaling.SIGNALS is SIGNALS is contract.SIGNALS
    assert TRANSFER_ID_PATTERN is contract.TRANSFER_ID_PATTERN
    assert signaling.SignalIn.model_fields["transfer_id"].metadata[0].pattern == (TRANSFER_ID_PATTERN)
    assert DataflowSpec.model_fields["transfer_id"].metadata[0].pattern == TRANSFER_ID_PATTERN
    # What a flow holds: the guards' rule, the API's rule.
    flow = Flow("started", spec(resources=[{"id": "r", "type": "memory"}]), {"provision": {"r": {"status": "done"}}})
    assert dataflow.holding(flow) == holding(flow) == ["r"]
    assert dataflow.wanted(flow) == ["r"]


def test_the_callback_token_limit_is_the_control_planes() -> None:
    limit = next(m.max_length for m in CallbackIn.model_fields["token"].metadata if hasattr(m, "max_length"))
    assert signaling.CALLBACK_TOKEN_MAX == limit == 500
    token = signaling.CallbackRef.model_fields["token"].metadata
    assert [m.max_length for m in token if hasattr(m, "max_length")] == [limit]


def test_a_failed_operation_can_run_again_and_only_ended_successes_are_told_again() -> None:
    assert dataflow.target("failed", "provision") == "provisioning"
    assert dataflow.target("deprovision_failed", "deprovision") == "deprovisioning"
    assert "renotify" not in dataflow.transitions_from("failed")
    assert "renotify" not in dataflow.transitions_from("deprovision_failed")
    assert dataflow.failed_states == {"provision": "failed", "deprovision": "deprovision_failed"}
    assert operation_marker(Flow("provisioning", spec(), {"op": {"signal": "prepare", "at": 4}})) == 4
    assert operation_marker(Flow("provisioning", spec(), {"op": {"signal": "prepare"}})) is None


def spec(**more: Any) -> dict[str, Any]:
    return {"transferId": "t-1", "type": "consumer", "asset": "a-1", "signal": "prepare", **more}


def test_the_spec_is_strict_and_names_the_known_provisioner_types() -> None:
    assert dataflow.validate_spec(spec())["resources"] == []
    with pytest.raises(InvalidSpec, match="colour"):
        dataflow.validate_spec(spec(colour="blue"))
    with pytest.raises(InvalidSpec, match=r"known types: memory, memory-async"):
        dataflow.validate_spec(spec(resources=[{"id": "r", "type": "tape"}]))
    with pytest.raises(InvalidSpec, match="unique"):
        dataflow.validate_spec(spec(resources=[{"id": "r", "type": "memory"}, {"id": "r", "type": "memory"}]))


class Flow:
    """What a guard sees of a flow."""

    def __init__(self, state: str, spec: dict[str, Any], data: dict[str, Any]) -> None:
        self.state, self.spec, self.data = state, spec, data


def permits(flow: Flow, event: str) -> bool:
    edge = dataflow.transitions_from(flow.state).get(event)
    return edge is not None and edge.permits(flow)


def test_the_sync_signals_are_guarded_so_nothing_skips_a_provisioning_or_leaks() -> None:
    wants = spec(resources=[{"id": "r", "type": "memory"}], source={"a": 1}, destination={"b": 2})
    fresh = Flow("received", wants, {})
    assert not permits(fresh, "start")
    assert not permits(fresh, "prepare")
    assert permits(fresh, "provision")
    made = {"provision": {"r": {"status": "done", "data": {"destination": {"b": 3}}}}}
    started = Flow("started", wants, made)
    assert holding(started) == ["r"]
    assert addresses(started) == {"source": {"a": 1}, "destination": {"b": 3}}
    assert not permits(started, "terminate")
    assert not permits(started, "suspend")
    gone = Flow("started", wants, {**made, "deprovision": {"r": {"status": "done"}}})
    assert holding(gone) == []
    assert permits(gone, "suspend")


def test_the_builtin_kind_and_steps_share_one_kind_object_per_deadline() -> None:
    configured = Signaling(
        dataplane_id="dp1", controlplane=ControlPlaneRef("http://127.0.0.1:8800"), request_deadline=timedelta(seconds=5)
    )
    assert dataflow_for() is dataflow
    assert dataflow_for(configured) is dataflow_for(configured)
    assert dataflow_for(configured) is not dataflow
    assert dataflow_for(configured) in builtin_kinds(configured)
    assert dataflow in builtin_kinds()
    steps = builtin_steps(None, configured)
    assert {k for k in steps.all_kinds if k.name == "dataflow"} == {dataflow_for(configured)}
    assert steps.get("dataflow", "provision_notifying", version=1) is not None
