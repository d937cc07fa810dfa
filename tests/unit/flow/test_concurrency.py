"""Independent branches run at the same time; a failure in one still reverts what the others did.

Overlap is proved with barriers: a barrier of two only opens when both tasks wait at it at once.
Every wait has a timeout, so a broken engine fails the test (BrokenBarrierError) instead of hanging it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

import pytest

from tenure.flow import FlowEngine, Retry, RunState, TaskRecord, TaskState, graph, linear, unordered
from tests.unit.flow.flow_support import Boom, Fault, Log, SpyCheckpoints, probe

TIMEOUT = 10.0


@pytest.fixture
def engines() -> Iterator[list[FlowEngine]]:
    """Engines a test made; their pools are shut down after it."""
    made: list[FlowEngine] = []
    yield made
    for engine in made:
        engine.close()


def waiter(event: threading.Event) -> Callable[[], None]:
    def wait() -> None:
        assert event.wait(TIMEOUT), "the event this task waits for never came"

    return wait


def when_saved(state: TaskState, task: str, event: threading.Event) -> Callable[[Sequence[TaskRecord]], None]:
    """An ``on_save`` for :class:`SpyCheckpoints` that sets ``event`` once ``task`` is saved in ``state``."""

    def on_save(records: Sequence[TaskRecord]) -> None:
        if any(r.task == task and r.state is state for r in records):
            event.set()

    return on_save


def test_unordered_branches_overlap(log: Log, engines: list[FlowEngine]) -> None:
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    flow = unordered("u", probe("a", log, during=barrier.wait), probe("b", log, during=barrier.wait))
    engines.append(engine := FlowEngine(flow))
    outcome = engine.run()
    assert outcome.ok, outcome.failures
    assert sorted(log.names("done")) == ["a", "b"]


def test_independent_graph_branches_overlap(log: Log, engines: list[FlowEngine]) -> None:
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    flow = graph(
        "g",
        probe("start", log, provides="s"),
        probe("left", log, requires=("s",), provides="l", during=barrier.wait),
        probe("right", log, requires=("s",), provides="r", during=barrier.wait),
        probe("join", log, requires=("l", "r")),
    )
    engines.append(engine := FlowEngine(flow))
    assert engine.run().ok
    names = log.names("done")
    assert names[0] == "start"
    assert names[-1] == "join"


def test_a_slow_branch_does_not_hold_up_the_next_step_of_another(log: Log, engines: list[FlowEngine]) -> None:
    # b waits at the barrier until c2 arrives: c2 can only start after c1 finished while b still runs.
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    flow = linear(
        "f",
        probe("a", log),
        unordered(
            "u",
            probe("b", log, during=barrier.wait),
            linear("l", probe("c1", log), probe("c2", log, during=barrier.wait)),
        ),
        probe("d", log),
    )
    engines.append(engine := FlowEngine(flow))
    assert engine.run().ok
    done = log.names("done")
    assert done[0] == "a"
    assert done[-1] == "d"
    assert done.index("c1") < done.index("c2")


def test_three_branches_overlap_on_three_workers(log: Log, engines: list[FlowEngine]) -> None:
    barrier = threading.Barrier(3, timeout=TIMEOUT)
    flow = unordered("u", *(probe(n, log, during=barrier.wait) for n in ("a", "b", "c")))
    engines.append(engine := FlowEngine(flow, max_workers=3))
    assert engine.run().ok


def test_one_worker_runs_branches_one_at_a_time(log: Log, engines: list[FlowEngine]) -> None:
    flow = unordered("u", *(probe(n, log) for n in "abcdef"))
    engines.append(engine := FlowEngine(flow, max_workers=1))
    assert engine.run().ok
    entries = log.entries
    # Never two executions in flight: each execute is directly followed by its own done.
    assert all(entries[i + 1] == ("done", entries[i][1]) for i in range(0, len(entries), 2))
    assert sorted(log.names("done")) == list("abcdef")


def test_a_failing_branch_reverts_the_completed_siblings(log: Log, engines: list[FlowEngine]) -> None:
    flow = linear(
        "f",
        probe("before", log, provides="x"),
        unordered(
            "u",
            probe("b1", log, requires=("x",), provides="y1"),
            probe("b2", log, requires=("x",), fails=True),
            probe("b3", log, requires=("x",), provides="y3"),
        ),
        probe("after", log),
    )
    engines.append(engine := FlowEngine(flow))
    outcome = engine.run()
    assert outcome.state is RunState.REVERTED
    assert list(outcome.failures) == ["b2"]
    assert "after" not in log.names("execute")
    reverts = log.names("revert")
    assert sorted(reverts) == ["b1", "b2", "b3", "before"]
    assert reverts[-1] == "before"
    assert log.args("revert", "b1")["result"] == "b1.y1"
    assert log.args("revert", "b3")["x"] == "before.x"


def test_after_a_failure_no_new_task_starts_but_running_ones_finish(log: Log, engines: list[FlowEngine]) -> None:
    b_failed = threading.Event()
    flow = unordered(
        "u",
        probe("b", log, fails=True),
        linear("l", probe("c1", log, provides="y", during=waiter(b_failed)), probe("c2", log, requires=("y",))),
    )
    checkpoints = SpyCheckpoints(when_saved(TaskState.FAILURE, "b", b_failed))
    engines.append(engine := FlowEngine(flow, checkpoints=checkpoints))
    outcome = engine.run()
    assert outcome.state is RunState.REVERTED
    # c1 was running when b's failure was recorded: it finished, and was reverted; c2 never started.
    assert log.names("done") == ["c1"]
    assert "c2" not in log.names("execute")
    assert sorted(log.names("revert")) == ["b", "c1"]
    record = checkpoints.load_run(outcome.run_id)
    assert record is not None
    assert "c2" not in record.tasks


def test_two_failing_branches_are_both_reported_and_reverted(log: Log, engines: list[FlowEngine]) -> None:
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    flow = unordered(
        "u", probe("a", log, fails=True, during=barrier.wait), probe("b", log, fails=True, during=barrier.wait)
    )
    engines.append(engine := FlowEngine(flow))
    outcome = engine.run()
    assert outcome.state is RunState.REVERTED
    assert set(outcome.failures) == {"a", "b"}
    assert sorted(log.names("revert")) == ["a", "b"]


def test_a_subflow_is_not_retried_when_a_task_outside_it_failed_too(log: Log, engines: list[FlowEngine]) -> None:
    # The inner failure is recorded first; the outer one happens while the round is still going on.
    inner_failed = threading.Event()
    flaky = Fault(times=1)
    flow = unordered(
        "outer",
        linear("inner", probe("a", log, fails=True), retry=Retry(times=3)),
        probe("b", log, fails=flaky, during=waiter(inner_failed)),
    )
    checkpoints = SpyCheckpoints(when_saved(TaskState.FAILURE, "a", inner_failed))
    sleeps: list[float] = []
    engines.append(engine := FlowEngine(flow, checkpoints=checkpoints, sleep=sleeps.append))
    outcome = engine.run()
    assert outcome.state is RunState.REVERTED
    assert set(outcome.failures) == {"a", "b"}
    # b has no retry controller: it must not be run again behind its back by the inner one.
    assert log.count("execute", "b") == 1
    assert log.count("execute", "a") == 1
    assert sleeps == []


def test_close_stops_the_pool_and_the_engine_still_works_after(log: Log) -> None:
    engine = FlowEngine(unordered("u", probe("a", log), probe("b", log)))
    assert engine.run().ok
    engine.close()
    engine.close()
    assert engine.run().ok
    engine.close()
    assert log.count("done", "a") == 2


def test_a_branch_error_is_a_failure_of_that_branch_only(log: Log, engines: list[FlowEngine]) -> None:
    def explode() -> None:
        raise Boom("in a worker thread")

    flow = unordered("u", probe("ok", log), probe("bad", log, during=explode))
    engines.append(engine := FlowEngine(flow))
    outcome = engine.run()
    assert outcome.failures["bad"].message == "in a worker thread"
    assert sorted(log.names("revert")) == ["bad", "ok"]
