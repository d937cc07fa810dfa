"""Flows as engine steps: a work state runs a flow of tasks, and the flow's end is the step's outcome."""

from __future__ import annotations

from tenure.engine.outcome import Advance, Fail, Outcome, RetryLater
from tenure.engine.steps import Step, StepContext
from tenure.flow.checkpoint import RunState
from tenure.flow.step import FlowStep, execute_flow, flow_error
from tenure.store.model import Resource

__all__ = ["flow_step"]


def flow_step(step: FlowStep) -> Step:
    """The engine step that runs ``step``'s flow for a resource.

    The flow run is keyed by the resource's stay in the state, so a worker that takes over after a
    crash resumes the run where the dead worker's checkpoints left it. Success advances with the
    flow's outputs; a reverted flow fails with the tasks' errors; a failed revert is retried (with
    the state's backoff) and, when the retries are spent, fails with the run named in the error.
    """

    def run(resource: Resource, ctx: StepContext) -> Outcome:
        outcome, outputs = execute_flow(ctx.store, resource, step)
        detail = {"flow": step.flow.name, "flow_run": outcome.run_id, "flow_state": outcome.state.value}
        if outcome.state is RunState.SUCCESS:
            return Advance(step.on_success, outputs, detail)
        if outcome.state is RunState.REVERT_FAILED:
            return RetryLater(f"flow run {outcome.run_id}: a revert failed: {flow_error(outcome)}")
        return Fail(flow_error(outcome), step.on_failure)

    run.__name__ = f"flow:{step.flow.name}"
    return run
