"""Running flows that succeed: values flow between tasks, outputs are reported and checkpointed."""

from __future__ import annotations

from typing import Any

import pytest

from tenure.errors import TenureError
from tenure.flow import (
    FlowEngine,
    FunctionTask,
    MemoryCheckpoints,
    RunState,
    TaskState,
    graph,
    linear,
    task,
    unordered,
)
from tests.unit.flow.flow_support import Log, probe


def test_values_flow_between_tasks_and_outputs_land_in_the_outcome() -> None:
    @task(provides="reservation")
    def reserve(project: str, size: int) -> str:
        return f"{project}/{size}"

    @task(provides=("volume_id", "status"))
    def create(reservation: str) -> dict[str, str]:
        return {"volume_id": f"vol-{reservation}", "status": "creating"}

    @task(provides="committed")
    def commit(reservation: str, volume_id: str) -> bool:
        return volume_id.endswith(reservation)

    outcome = FlowEngine(linear("create_volume", reserve, create, commit)).run({"project": "p", "size": 2})
    assert outcome.ok
    assert outcome.state is RunState.SUCCESS
    assert outcome.failures == {}
    assert outcome.values == {
        "project": "p",
        "size": 2,
        "reservation": "p/2",
        "volume_id": "vol-p/2",
        "status": "creating",
        "committed": True,
    }
    assert outcome.raise_for_failure() is outcome


def test_tasks_get_exactly_their_inputs(log: Log) -> None:
    flow = linear(
        "f",
        probe("a", log, requires=("x",), provides=("p", "q")),
        probe("b", log, requires=("q", "y")),
    )
    FlowEngine(flow).run({"x": 1, "y": 2, "unused": 3})
    assert log.args("execute", "a") == {"x": 1}
    assert log.args("execute", "b") == {"q": "a.q", "y": 2}


def test_rebind_inject_and_optional_inputs_at_run_time() -> None:
    @task(provides="size")
    def pick() -> int:
        return 7

    def create(gigabytes: int, kind: str, zone: str = "default") -> str:
        return f"{gigabytes}:{kind}:{zone}"

    flow = linear(
        "f",
        pick,
        FunctionTask(create, name="with_zone", provides="a", rebind={"gigabytes": "size"}, inject={"kind": "raw"}),
        FunctionTask(
            create,
            name="no_zone",
            provides="b",
            rebind={"gigabytes": "size", "zone": "missing"},
            inject={"kind": "ssd"},
        ),
    )
    outcome = FlowEngine(flow).run({"zone": "z1"})
    assert outcome.values["a"] == "7:raw:z1"
    assert outcome.values["b"] == "7:ssd:default"


def test_a_later_task_may_replace_a_value(log: Log) -> None:
    flow = linear(
        "f",
        probe("a", log, provides="x"),
        probe("b", log, requires=("x",), provides="x"),
        probe("c", log, requires=("x",)),
    )
    outcome = FlowEngine(flow).run()
    assert log.args("execute", "c") == {"x": "b.x"}
    assert outcome.values["x"] == "b.x"


def test_linear_tasks_run_one_after_another(log: Log) -> None:
    FlowEngine(linear("f", *(probe(n, log) for n in "abcde"))).run()
    assert log.entries == [(what, n) for n in "abcde" for what in ("execute", "done")]


def test_graph_tasks_run_after_what_they_need(log: Log) -> None:
    flow = graph(
        "g",
        probe("commit", log, requires=("volume", "reservation")),
        probe("create", log, requires=("reservation",), provides="volume"),
        probe("reserve", log, provides="reservation"),
    )
    engine = FlowEngine(flow)
    try:
        outcome = engine.run()
    finally:
        engine.close()
    assert outcome.ok
    assert log.names("execute") == ["reserve", "create", "commit"]


def test_every_task_of_a_nested_flow_runs_once_and_in_order(log: Log) -> None:
    flow = linear(
        "outer",
        probe("a", log),
        unordered("u", probe("b", log), linear("l", probe("c1", log), probe("c2", log))),
        probe("d", log),
    )
    engine = FlowEngine(flow)
    try:
        assert engine.run().ok
    finally:
        engine.close()
    done = log.names("done")
    assert sorted(done) == ["a", "b", "c1", "c2", "d"]
    assert done[0] == "a"
    assert done[-1] == "d"
    assert done.index("c1") < done.index("c2")


def test_failure_only_tasks_do_not_run_when_the_flow_succeeds(log: Log) -> None:
    flow = linear("f", probe("a", log), probe("notify", log, on_failure_only=True), probe("b", log))
    checkpoints = MemoryCheckpoints()
    outcome = FlowEngine(flow, checkpoints=checkpoints).run()
    assert outcome.ok
    assert log.names("execute") == ["a", "b"]
    record = checkpoints.load_run(outcome.run_id)
    assert record is not None
    assert "notify" not in record.tasks


def test_a_successful_run_is_checkpointed(log: Log) -> None:
    flow = linear("f", probe("a", log, requires=("x",), provides="y"), probe("b", log, requires=("y",)))
    checkpoints = MemoryCheckpoints()
    engine = FlowEngine(flow, checkpoints=checkpoints)
    outcome = engine.run({"x": 1}, run_id="run-1", resource_id="res-9")
    assert outcome.run_id == "run-1"
    record = checkpoints.load_run("run-1")
    assert record is not None
    assert (record.flow, record.version, record.fingerprint) == ("f", 1, engine.plan.fingerprint)
    assert record.state is RunState.SUCCESS
    assert record.state.finished
    assert record.inputs == {"x": 1}
    assert record.resource_id == "res-9"
    assert record.failure is None
    a, b = record.tasks["a"], record.tasks["b"]
    assert (a.state, a.attempt, a.seq, a.result) == (TaskState.SUCCESS, 1, 1, {"y": "a.y"})
    assert (b.state, b.attempt, b.seq, b.result) == (TaskState.SUCCESS, 1, 2, {})


def test_each_run_gets_its_own_id_and_the_same_engine_runs_many_times(log: Log) -> None:
    engine = FlowEngine(linear("f", probe("a", log, requires=("x",), provides="y")))
    first = engine.run({"x": 1})
    second = engine.run({"x": 2})
    assert first.run_id != second.run_id
    assert len(first.run_id) == 32
    assert log.count("execute", "a") == 2
    assert [c["x"] for c in log.calls[("execute", "a")]] == [1, 2]


def test_a_run_id_cannot_be_used_twice(log: Log) -> None:
    engine = FlowEngine(linear("f", probe("a", log)))
    engine.run(run_id="same")
    with pytest.raises(TenureError, match="same"):
        engine.run(run_id="same")
    assert log.count("execute", "a") == 1


def test_inputs_are_copied_not_shared() -> None:
    inputs: dict[str, Any] = {"x": 1}

    @task(provides="y")
    def f(x: int) -> int:
        return x

    outcome = FlowEngine(linear("f", f)).run(inputs)
    inputs["x"] = 2
    assert outcome.values["x"] == 1
    assert inputs == {"x": 2}


def test_run_states_that_are_finished() -> None:
    assert {s for s in RunState if s.finished} == {RunState.SUCCESS, RunState.REVERTED, RunState.RESOLVED}
