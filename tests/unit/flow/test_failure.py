"""Failing flows: revert in reverse, failure-only tasks, failed reverts and what an operator does about them."""

from __future__ import annotations

from typing import Any

import pytest

from tenure.errors import FlowFailed, FlowRunNotFound, TenureError
from tenure.flow import (
    Failure,
    FlowEngine,
    MemoryCheckpoints,
    RunState,
    Task,
    TaskContext,
    TaskState,
    linear,
    task,
)
from tests.unit.flow.flow_support import Boom, Fault, Log, probe


def chain(log: Log, *, c_fails: Fault | bool = True, b_revert: Fault | None = None, notify: bool = False) -> Any:
    """a -> b -> c -> d, data flowing along, c failing by default."""
    items = [
        probe("a", log, requires=("size",), provides="x"),
        probe("b", log, requires=("x",), provides=("y", "y2"), revert_fails=b_revert),
        probe("c", log, requires=("y",), provides="z", fails=c_fails),
        probe("d", log, requires=("z",)),
    ]
    if notify:
        items.append(probe("notify", log, requires=("size", "flow_failures"), on_failure_only=True))
    return linear("chain", *items)


def test_revert_goes_in_reverse_completion_order_and_includes_the_failed_task(log: Log) -> None:
    outcome = FlowEngine(chain(log)).run({"size": 1})
    assert outcome.state is RunState.REVERTED
    assert not outcome.ok
    assert log.names("execute") == ["a", "b", "c"]
    assert log.names("revert") == ["c", "b", "a"]
    assert list(outcome.failures) == ["c"]
    assert outcome.failures["c"].matches(Boom)
    assert outcome.failures["c"].message == "fault"


def reverted_with(log: Log, name: str) -> dict[str, Any]:
    """The arguments a revert got, less its context (checked to be the task's own)."""
    args = dict(log.args("revert", name))
    context = args.pop("context")
    assert isinstance(context, TaskContext)
    assert context.task == name
    return args


def test_revert_gets_its_inputs_its_result_the_flow_failures_and_its_context(log: Log) -> None:
    outcome = FlowEngine(chain(log)).run({"size": 1})
    boom = outcome.failures["c"]
    assert reverted_with(log, "c") == {"y": "b.y", "result": None, "failure": boom, "flow_failures": {"c": boom}}
    assert reverted_with(log, "b") == {
        "x": "a.x",
        "result": {"y": "b.y", "y2": "b.y2"},
        "failure": None,
        "flow_failures": {"c": boom},
    }
    assert reverted_with(log, "a") == {"size": 1, "result": "a.x", "failure": None, "flow_failures": {"c": boom}}


def test_revert_of_a_task_subclass_gets_the_same(log: Log) -> None:
    class Reserve(Task):
        provides = ("reservation",)

        def execute(self, size: int, context: Any) -> str:
            return f"r{size}"

        def revert(self, size: int, **kwargs: Any) -> None:
            log.add("revert", self.name, {"size": size, **kwargs})

    outcome = FlowEngine(linear("f", Reserve(), probe("fail", log, requires=("reservation",), fails=True))).run(
        {"size": 3}
    )
    args = reverted_with(log, "Reserve")
    assert args == {"size": 3, "result": "r3", "failure": None, "flow_failures": dict(outcome.failures)}


def test_no_task_runs_after_the_failing_one_in_a_chain(log: Log) -> None:
    checkpoints = MemoryCheckpoints()
    outcome = FlowEngine(chain(log), checkpoints=checkpoints).run({"size": 1})
    assert "d" not in log.names("execute")
    record = checkpoints.load_run(outcome.run_id)
    assert record is not None
    assert "d" not in record.tasks
    assert {n: t.state for n, t in record.tasks.items()} == dict.fromkeys("abc", TaskState.REVERTED)
    assert record.state is RunState.REVERTED
    assert record.failure == outcome.failures["c"]
    assert record.tasks["c"].failure == outcome.failures["c"]


def test_the_first_task_failing_reverts_only_itself(log: Log) -> None:
    outcome = FlowEngine(linear("f", probe("a", log, fails=True), probe("b", log))).run()
    assert outcome.state is RunState.REVERTED
    assert log.names("revert") == ["a"]


def test_reverted_outputs_leave_the_values_but_inputs_stay(log: Log) -> None:
    outcome = FlowEngine(chain(log)).run({"size": 1})
    assert outcome.values == {"size": 1}


def test_failure_only_tasks_run_after_the_revert_and_see_the_failures(log: Log) -> None:
    outcome = FlowEngine(chain(log, notify=True)).run({"size": 1})
    assert outcome.state is RunState.REVERTED
    assert log.names("revert") == ["c", "b", "a"]
    assert log.entries[-2:] == [("execute", "notify"), ("done", "notify")]
    assert log.args("execute", "notify") == {"size": 1, "flow_failures": {"c": outcome.failures["c"]}}
    assert "notify" not in log.names("revert")


def test_failure_only_tasks_see_what_reverted_tasks_had_produced(log: Log) -> None:
    # "change status & notify": it needs the volume id made by a task that has been reverted since.
    flow = linear(
        "f",
        probe("create", log, provides="volume_id"),
        probe("fail", log, requires=("volume_id",), fails=True),
        probe("notify", log, requires=("volume_id",), on_failure_only=True),
    )
    outcome = FlowEngine(flow).run()
    assert outcome.state is RunState.REVERTED
    assert log.args("execute", "notify") == {"volume_id": "create.volume_id"}
    assert "notify" not in outcome.failures


def test_a_failure_only_task_whose_input_never_appeared_is_reported_not_run(log: Log) -> None:
    flow = linear(
        "f",
        probe("fail", log, fails=True),
        probe("create", log, provides="volume_id"),
        probe("notify", log, requires=("volume_id",), on_failure_only=True),
        probe("notify2", log, on_failure_only=True),
    )
    outcome = FlowEngine(flow).run()
    assert outcome.state is RunState.REVERTED
    assert "notify" not in log.names("execute")
    assert "notify2" in log.names("execute")
    assert outcome.failures["notify"].message == "not run: input(s) volume_id never became available"


def test_a_failing_failure_only_task_is_reported_but_the_run_is_reverted(log: Log) -> None:
    flow = linear(
        "f",
        probe("a", log, fails=True),
        probe("notify1", log, on_failure_only=True, fails=True),
        probe("notify2", log, on_failure_only=True),
    )
    checkpoints = MemoryCheckpoints()
    outcome = FlowEngine(flow, checkpoints=checkpoints).run()
    assert outcome.state is RunState.REVERTED
    assert set(outcome.failures) == {"a", "notify1"}
    assert log.names("execute") == ["a", "notify1", "notify2"]
    record = checkpoints.load_run(outcome.run_id)
    assert record is not None
    assert record.tasks["notify1"].state is TaskState.FAILURE
    assert record.tasks["notify2"].state is TaskState.SUCCESS


def test_raise_for_failure_raises_flow_failed_with_facts(log: Log) -> None:
    outcome = FlowEngine(chain(log)).run({"size": 1}, run_id="r-1")
    with pytest.raises(FlowFailed) as err:
        outcome.raise_for_failure("chain")
    assert err.value.facts() == {
        "flow": "chain",
        "run_id": "r-1",
        "state": "reverted",
        "failures": {"c": "Boom: fault"},
    }
    assert str(err.value) == "flow 'chain' run r-1 ended reverted: c: Boom: fault"
    assert isinstance(err.value, TenureError)


def test_an_exception_that_is_not_an_error_class_of_ours_is_still_captured(log: Log) -> None:
    @task
    def explode() -> None:
        raise KeyError("k")

    outcome = FlowEngine(linear("f", probe("a", log), explode)).run()
    assert outcome.failures["explode"].exc_type == "builtins.KeyError"
    assert log.names("revert") == ["a"]


# --- failed reverts -----------------------------------------------------------------------------


def test_a_failed_revert_ends_revert_failed_and_the_others_are_still_reverted(log: Log) -> None:
    checkpoints = MemoryCheckpoints()
    outcome = FlowEngine(chain(log, b_revert=Fault(), notify=True), checkpoints=checkpoints).run({"size": 1})
    assert outcome.state is RunState.REVERT_FAILED
    assert not outcome.state.finished
    assert log.names("revert") == ["c", "b", "a"]
    assert set(outcome.failures) == {"c", "b.revert"}
    assert outcome.failures["b.revert"].matches(Boom)
    assert "notify" in log.names("execute")
    record = checkpoints.load_run(outcome.run_id)
    assert record is not None
    assert record.state is RunState.REVERT_FAILED
    states = {n: t.state for n, t in record.tasks.items()}
    assert states == {
        "a": TaskState.REVERTED,
        "b": TaskState.REVERT_FAILURE,
        "c": TaskState.REVERTED,
        "notify": TaskState.SUCCESS,
    }
    with pytest.raises(FlowFailed, match="revert_failed"):
        outcome.raise_for_failure("chain")


def test_retry_revert_after_the_cause_is_fixed(log: Log) -> None:
    fault = Fault()
    checkpoints = MemoryCheckpoints()
    engine = FlowEngine(chain(log, b_revert=fault, notify=True), checkpoints=checkpoints)
    failed = engine.run({"size": 1})
    assert failed.state is RunState.REVERT_FAILED

    # Still broken: still revert_failed, and only the broken revert is tried again.
    again = FlowEngine(chain(Log(), b_revert=fault, notify=True), checkpoints=checkpoints).retry_revert(failed.run_id)
    assert again.state is RunState.REVERT_FAILED
    assert fault.fired == 2

    fault.active = False
    log.clear()
    outcome = engine.retry_revert(failed.run_id)
    assert outcome.state is RunState.REVERTED
    assert log.names("revert") == ["b"]
    assert log.names("execute") == []  # the failure-only task had run already
    # The retried revert gets the same inputs as the first one, and is not told that it failed.
    args = log.args("revert", "b")
    assert args["x"] == "a.x"
    assert args["result"] == {"y": "b.y", "y2": "b.y2"}
    assert args["failure"] is None
    assert set(args["flow_failures"]) == {"c", "b.revert"}
    assert args["flow_failures"]["c"] == failed.failures["c"]
    assert set(outcome.failures) == {"c"}
    record = checkpoints.load_run(failed.run_id)
    assert record is not None
    assert record.state is RunState.REVERTED
    assert record.tasks["b"].state is TaskState.REVERTED


def test_retry_revert_of_the_failed_task_itself_passes_its_own_failure(log: Log) -> None:
    fault = Fault()
    flow = linear("f", probe("a", log, provides="x"), probe("b", log, requires=("x",), fails=True, revert_fails=fault))
    engine = FlowEngine(flow)
    failed = engine.run()
    assert failed.state is RunState.REVERT_FAILED
    assert set(failed.failures) == {"b", "b.revert"}
    fault.active = False
    outcome = engine.retry_revert(failed.run_id)
    assert outcome.state is RunState.REVERTED
    assert log.args("revert", "b")["failure"] == failed.failures["b"]
    assert log.args("revert", "b")["failure"].matches(Boom)
    assert set(outcome.failures) == {"b"}


def test_mark_resolved(log: Log) -> None:
    checkpoints = MemoryCheckpoints()
    engine = FlowEngine(chain(log, b_revert=Fault()), checkpoints=checkpoints)
    failed = engine.run({"size": 1})
    log.clear()
    outcome = engine.mark_resolved(failed.run_id)
    assert outcome.state is RunState.RESOLVED
    assert outcome.state.finished
    assert log.entries == []
    assert set(outcome.failures) == {"c", "b.revert"}
    record = checkpoints.load_run(failed.run_id)
    assert record is not None
    assert record.state is RunState.RESOLVED
    # A resolved run is finished: resuming it only reports it.
    assert engine.resume(failed.run_id).state is RunState.RESOLVED
    assert log.entries == []


@pytest.mark.parametrize("operation", ["retry_revert", "mark_resolved"])
def test_retry_revert_and_mark_resolved_refuse_runs_whose_revert_did_not_fail(log: Log, operation: str) -> None:
    engine = FlowEngine(chain(log, c_fails=Fault(times=1)))
    reverted = engine.run({"size": 1})
    succeeded = engine.run({"size": 1})
    assert (reverted.state, succeeded.state) == (RunState.REVERTED, RunState.SUCCESS)
    for outcome in (reverted, succeeded):
        with pytest.raises(TenureError) as err:
            getattr(engine, operation)(outcome.run_id)
        assert outcome.run_id in str(err.value)
        assert f"is {outcome.state.value}; only a revert_failed run" in str(err.value)
    with pytest.raises(FlowRunNotFound, match="no flow run with id 'nope'") as caught:
        getattr(engine, operation)("nope")
    assert caught.value.run_id == "nope"


def test_retry_revert_refuses_a_resolved_run(log: Log) -> None:
    engine = FlowEngine(chain(log, b_revert=Fault()))
    failed = engine.run({"size": 1})
    engine.mark_resolved(failed.run_id)
    with pytest.raises(TenureError, match="is resolved"):
        engine.retry_revert(failed.run_id)
    with pytest.raises(TenureError, match="is resolved"):
        engine.mark_resolved(failed.run_id)


def test_a_revert_is_given_only_the_arguments_it_declares() -> None:
    seen: list[dict[str, Any]] = []

    class Narrow(Task):
        provides = ("x",)

        def execute(self) -> int:
            return 1

        def revert(self, *, result: Any, failure: Failure | None) -> None:  # type: ignore[override]
            """Takes neither **kwargs nor flow_failures nor context."""
            seen.append({"result": result, "failure": failure})

    outcome = FlowEngine(linear("f", Narrow(), probe("b", Log(), requires=("x",), fails=True))).run()
    assert outcome.state is RunState.REVERTED
    assert seen == [{"result": 1, "failure": None}]
