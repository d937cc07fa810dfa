"""Flows as steps: a kind's work state runs a flow, and the flow's end moves the resource on.

The run of a step is keyed by the resource and the version it started from, so running the step
again for the same resource version (after a crash, say) resumes the same flow run instead of
starting a second one. The flow's outputs land in the resource's ``data``; success fires the step's
success event, failure (after the flow reverted) fires its failure event with the error recorded. A
flow whose revert failed leaves the resource where it is and raises :class:`~tenure.errors.FlowFailed`
until an operator retries the revert or marks the run resolved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tenure.errors import FlowFailed, TenureError
from tenure.flow.checkpoint import RunState
from tenure.flow.durable import StoreCheckpoints
from tenure.flow.engine import FlowEngine, FlowOutcome
from tenure.flow.patterns import Flow
from tenure.store.core import StoreCore
from tenure.store.model import Resource

__all__ = ["FlowStep", "StepResult", "execute_flow", "flow_error", "run_step", "step_run_id"]


def _spec_as_inputs(resource: Resource) -> dict[str, Any]:
    return {**resource.spec, "resource_id": resource.id}


@dataclass(frozen=True, slots=True)
class FlowStep:
    """Run ``flow`` in a work state; fire ``on_success`` or ``on_failure`` when it ends.

    ``inputs`` builds the flow's inputs from the resource (default: its spec plus ``resource_id``);
    ``outputs`` lists the flow values copied into the resource's data (default: every value the
    flow's tasks provide).
    """

    flow: Flow
    on_success: str
    on_failure: str
    inputs: Callable[[Resource], Mapping[str, Any]] = _spec_as_inputs
    outputs: tuple[str, ...] | None = None
    engine_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StepResult:
    resource: Resource
    outcome: FlowOutcome


def step_run_id(store: StoreCore, resource: Resource) -> str:
    """The flow run a step of ``resource`` in its current state belongs to.

    Keyed by the version the resource entered its state at, so every attempt of one stay (retries,
    takeovers after a crash) resumes one run, and a later stay in the same state starts a new one.
    """
    return f"{resource.id}@{store.stay_version(resource)}"


def execute_flow(store: StoreCore, resource: Resource, step: FlowStep) -> tuple[FlowOutcome, dict[str, Any]]:
    """Run, resume, or retry the revert of, the step's flow run; returns its outcome and its outputs.

    Nothing is fired: the caller decides what the outcome means for the resource.
    """
    kind = store.kind(resource.kind)
    for event in (step.on_success, step.on_failure):
        if not kind.allows(resource.state, event):
            kind.transition(resource.state, event, resource, resource_id=resource.id)
    engine = FlowEngine(step.flow, checkpoints=StoreCheckpoints(store), **dict(step.engine_options))
    try:
        run_id = step_run_id(store, resource)
        stored = engine.checkpoints.load_run(run_id)
        if stored is None:
            outcome = engine.run(step.inputs(resource), run_id=run_id, resource_id=resource.id)
        elif stored.state is RunState.REVERT_FAILED:
            outcome = engine.retry_revert(run_id)
        else:
            outcome = engine.resume(run_id)
    finally:
        engine.close()
    provided = engine.plan.provides if step.outputs is None else frozenset(step.outputs)
    return outcome, {k: v for k, v in outcome.values.items() if k in provided}


def flow_error(outcome: FlowOutcome) -> str:
    """One line naming each failed task and why."""
    return "; ".join(f"{task}: {failure}" for task, failure in outcome.failures.items()) or "flow failed"


def run_step(store: StoreCore, resource: Resource, step: FlowStep, *, actor: str | None = None) -> StepResult:
    """Run (or resume) the step's flow for ``resource`` and apply its outcome as one event."""
    outcome, data = execute_flow(store, resource, step)
    detail = {"flow": step.flow.name, "flow_run": outcome.run_id, "flow_state": outcome.state.value}
    if outcome.state is RunState.SUCCESS:
        moved = store.fire(resource, step.on_success, data=data, actor=actor, detail=detail)
    elif outcome.state is RunState.REVERT_FAILED:
        # Not moved on: the resource stays in its work state, visibly blocked, until an operator
        # retries the revert or marks the run resolved.
        raise FlowFailed(
            step.flow.name, outcome.run_id, outcome.state.value, {k: str(v) for k, v in outcome.failures.items()}
        )
    elif outcome.state in (RunState.REVERTED, RunState.RESOLVED):
        moved = store.fire(resource, step.on_failure, error=flow_error(outcome), actor=actor, detail=detail)
    else:
        raise TenureError(f"flow run {outcome.run_id} stopped in state {outcome.state.value}")
    return StepResult(moved, outcome)
