"""Flows as engine steps: a work state runs a flow of tasks, and the flow's end is the step's outcome.

The run of a step is keyed by the resource and the version it entered its state at, so running the
step again in the same stay (a retry, a takeover after a crash) resumes the same flow run instead of
starting a second one. The flow's outputs land in the resource's ``data``; success fires the step's
success event, a reverted flow fires its failure event with the tasks' errors. A flow whose revert
failed leaves the resource where it is and is retried with the state's backoff.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenure.engine.outcome import Advance, Fail, Outcome, RetryLater
from tenure.engine.steps import Step, StepContext
from tenure.flow.checkpoint import RunState
from tenure.flow.durable import FlowRunStore, StoreCheckpoints
from tenure.flow.engine import FlowEngine, FlowOutcome
from tenure.flow.patterns import Flow
from tenure.machine import Kind
from tenure.store.model import Resource

__all__ = ["FlowStep", "FlowStepStore", "execute_flow", "flow_error", "flow_step", "step_run_id"]


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


class FlowStepStore(FlowRunStore, Protocol):
    """What running a flow as a step needs: flow-run checkpoints, and the resource's stay in its state."""

    def stay_version(self, resource: Resource) -> int: ...


def step_run_id(store: FlowStepStore, resource: Resource) -> str:
    """The flow run a step of ``resource`` in its current state belongs to.

    Keyed by the version the resource entered its state at, so every attempt of one stay (retries,
    takeovers after a crash) resumes one run, and a later stay in the same state starts a new one.
    """
    return f"{resource.id}@{store.stay_version(resource)}"


def execute_flow(
    store: FlowStepStore, kind: Kind, resource: Resource, step: FlowStep
) -> tuple[FlowOutcome, dict[str, Any]]:
    """Run, resume, or retry the revert of, the step's flow run; returns its outcome and its outputs.

    Nothing is fired: the caller decides what the outcome means for the resource.
    """
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


def flow_step(step: FlowStep) -> Step:
    """The engine step that runs ``step``'s flow for a resource.

    The flow run is keyed by the resource's stay in the state, so a worker that takes over after a
    crash resumes the run where the dead worker's checkpoints left it. Success advances with the
    flow's outputs; a reverted flow fails with the tasks' errors; a failed revert is retried (with
    the state's backoff) and, when the retries are spent, fails with the run named in the error.
    """

    def run(resource: Resource, ctx: StepContext) -> Outcome:
        outcome, outputs = execute_flow(ctx.store, ctx.kind, resource, step)
        detail = {"flow": step.flow.name, "flow_run": outcome.run_id, "flow_state": outcome.state.value}
        if outcome.state is RunState.SUCCESS:
            return Advance(step.on_success, outputs, detail)
        if outcome.state is RunState.REVERT_FAILED:
            return RetryLater(f"flow run {outcome.run_id}: a revert failed: {flow_error(outcome)}")
        return Fail(flow_error(outcome), step.on_failure)

    run.__name__ = f"flow:{step.flow.name}"
    return run
