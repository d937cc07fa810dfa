"""Run one flow step in the test's own thread and apply its outcome, for tests that drive a kind by hand.

The engine runs flow steps for claimed resources (:func:`tenure.engine.flows.flow_step`); tests of a
kind's flows that want to stop between steps, replay a stale snapshot or crash a flow mid-run use
this instead, on the same :func:`~tenure.engine.flows.execute_flow`, writing the outcome as the
engine writes a snapshot it does not hold a claim on (``fire_settling``: a compare-and-swap on the
snapshot's version that may set the kind's step-owned data, which a client's ``fire`` may not).
"""

from __future__ import annotations

from dataclasses import dataclass

from tenure.engine.flows import FlowStep, execute_flow, flow_error
from tenure.errors import FlowFailed
from tenure.flow import FlowOutcome, RunState
from tenure.store import Resource
from tenure.store.protocol import EngineStore

__all__ = ["StepResult", "run_step"]


@dataclass(frozen=True, slots=True)
class StepResult:
    resource: Resource
    outcome: FlowOutcome


def run_step(store: EngineStore, resource: Resource, step: FlowStep, *, actor: str | None = None) -> StepResult:
    """Run (or resume) the step's flow for ``resource`` and apply its outcome as one event."""
    outcome, data = execute_flow(store, store.kind(resource.kind), resource, step)
    detail = {"flow": step.flow.name, "flow_run": outcome.run_id, "flow_state": outcome.state.value}
    if outcome.state is RunState.SUCCESS:
        moved = store.fire_settling(resource, step.on_success, (), result="", data=data, actor=actor, detail=detail)
    elif outcome.state in (RunState.REVERTED, RunState.RESOLVED):
        moved = store.fire_settling(
            resource, step.on_failure, (), result="", error=flow_error(outcome), actor=actor, detail=detail
        )
    else:
        raise FlowFailed(
            step.flow.name, outcome.run_id, outcome.state.value, {k: str(v) for k, v in outcome.failures.items()}
        )
    return StepResult(moved, outcome)
