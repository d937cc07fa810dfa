"""Properties of running flows, checked on random nestings of no-op tasks with random failure points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tenure.flow import Flow, FlowEngine, MemoryCheckpoints, Retry, RunState, TaskState, linear, unordered
from tests.unit.flow.flow_support import Fault, Log, probe

# Derandomized: the same examples on every run, so a failure here is never a fluke of the seed.
SETTINGS = settings(
    max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)

#: A flow's shape: "task", or (pattern, [children]).
Shape = Any


def shapes(patterns: tuple[str, ...]) -> st.SearchStrategy[Shape]:
    return st.recursive(
        st.just("task"),
        lambda children: st.tuples(st.sampled_from(patterns), st.lists(children, min_size=1, max_size=4)),
        max_leaves=12,
    )


@dataclass
class Built:
    flow: Flow
    tasks: list[str]
    failing: set[str]
    log: Log


def build(shape: Shape, failing_at: set[int], notify: bool) -> Built:
    log = Log()
    tasks: list[str] = []
    flows = 0

    def make(s: Shape) -> Any:
        nonlocal flows
        if s == "task":
            name = f"t{len(tasks)}"
            tasks.append(name)
            return probe(name, log, provides=f"out_{name}", fails=len(tasks) - 1 in failing_at)
        pattern, children = s
        flows += 1
        name = f"f{flows}"
        items = [make(c) for c in children]
        return (linear if pattern == "linear" else unordered)(name, *items)

    root = make(shape if shape != "task" else ("linear", ["task"]))
    if notify:
        root = linear("top", root, probe("notify", log, on_failure_only=True))
    failing = {t for i, t in enumerate(tasks) if i in failing_at}
    return Built(root, tasks, failing, log)


@st.composite
def flows(draw: st.DrawFn, patterns: tuple[str, ...] = ("linear", "unordered")) -> Built:
    shape = draw(shapes(patterns))
    leaves = _count_leaves(shape)
    failing = draw(st.one_of(st.just(set()), st.sets(st.integers(0, max(leaves - 1, 0)), min_size=1, max_size=3)))
    return build(shape, failing, draw(st.booleans()))


def _count_leaves(shape: Shape) -> int:
    return 1 if shape == "task" else sum(_count_leaves(c) for c in shape[1])


def run(built: Built, workers: int = 4) -> tuple[Any, MemoryCheckpoints, FlowEngine]:
    checkpoints = MemoryCheckpoints()
    engine = FlowEngine(built.flow, checkpoints=checkpoints, max_workers=workers)
    try:
        outcome = engine.run()
    finally:
        engine.close()
    return outcome, checkpoints, engine


@SETTINGS
@given(built=flows(), workers=st.integers(1, 4))
def test_any_flow_succeeds_iff_no_task_failed_and_reverts_what_ran(built: Built, workers: int) -> None:
    outcome, checkpoints, engine = run(built, workers)
    log = built.log
    executed = log.names("execute")
    assert outcome.ok == (not built.failing)
    assert len(executed) == len(set(executed)), "no task runs twice without a retry controller"
    record = checkpoints.load_run(outcome.run_id)
    assert record is not None
    assert record.state is outcome.state

    # Nothing starts before what it depends on is done.
    position = {entry: i for i, entry in enumerate(log.entries)}
    by_index = {n.index: n.task.name for n in engine.plan.nodes}
    for node in engine.plan.nodes:
        name = node.task.name
        if ("execute", name) in position:
            for dep in node.deps:
                assert position[("done", by_index[dep])] < position[("execute", name)], (by_index[dep], name)

    if outcome.ok:
        assert sorted(executed) == sorted(built.tasks)
        assert log.names("revert") == []
        assert "notify" not in executed
        assert outcome.failures == {}
        assert outcome.values == {f"out_{t}": f"{t}.out_{t}" for t in built.tasks}
        return

    assert outcome.state is RunState.REVERTED
    ran = [t for t in executed if t != "notify"]
    reverted = log.names("revert")
    # Every task that ran is reverted exactly once, latest completion first.
    assert sorted(reverted) == sorted(ran)
    assert len(reverted) == len(set(reverted))
    assert reverted == sorted(ran, key=lambda t: record.tasks[t].seq, reverse=True)
    # ... so a task is reverted before everything it depended on.
    for node in engine.plan.nodes:
        name = node.task.name
        if name in ran:
            for dep in node.deps:
                assert reverted.index(name) < reverted.index(by_index[dep])
    assert set(outcome.failures) <= built.failing
    assert outcome.failures
    assert all(record.tasks[t].state is TaskState.REVERTED for t in ran)
    if "notify" in executed:
        assert log.entries[-2:] == [("execute", "notify"), ("done", "notify")]
        assert position[("execute", "notify")] > max(position[("revert", t)] for t in ran)


@SETTINGS
@given(built=flows(patterns=("linear",)))
def test_no_task_runs_after_the_failing_one_in_a_chain(built: Built) -> None:
    outcome, _, _ = run(built)
    log = built.log
    executed = [t for t in log.names("execute") if t != "notify"]
    first_failing = next((i for i, t in enumerate(built.tasks) if t in built.failing), None)
    if first_failing is None:
        assert outcome.ok
        assert executed == built.tasks
        return
    assert executed == built.tasks[: first_failing + 1]
    assert log.names("revert") == executed[::-1]
    assert set(outcome.failures) == {built.tasks[first_failing]}


@dataclass(frozen=True)
class RetryCase:
    """Task counts before the subflow, in it before and after its flaky task, and after it."""

    before: int
    inside_before: int
    inside_after: int
    after: int
    times: int
    flaky: int


RETRY_CASES = st.builds(
    RetryCase,
    before=st.integers(0, 3),
    inside_before=st.integers(0, 3),
    inside_after=st.integers(0, 3),
    after=st.integers(0, 3),
    times=st.integers(0, 4),
    flaky=st.integers(0, 6),
)


@SETTINGS
@given(case=RETRY_CASES)
def test_a_retried_subflow_runs_once_per_round_and_nothing_else_repeats(case: RetryCase) -> None:
    before, inside_before, inside_after, after = case.before, case.inside_before, case.inside_after, case.after
    times, flaky = case.times, case.flaky
    log = Log()
    fault = Fault(times=flaky)

    def tasks(prefix: str, n: int) -> list[Any]:
        return [probe(f"{prefix}{i}", log) for i in range(n)]

    flow = linear(
        "outer",
        *tasks("b", before),
        linear(
            "inner",
            *tasks("ib", inside_before),
            probe("flaky", log, fails=fault),
            *tasks("ia", inside_after),
            retry=Retry(times=times),
        ),
        *tasks("a", after),
    )
    sleeps: list[float] = []
    outcome = FlowEngine(flow, sleep=sleeps.append).run()
    rounds = min(flaky, times) + 1
    assert outcome.ok == (flaky <= times)
    assert len(sleeps) == min(flaky, times)
    for i in range(before):
        assert log.count("execute", f"b{i}") == 1
        assert log.count("revert", f"b{i}") == (0 if outcome.ok else 1)
    for i in range(inside_before):
        assert log.count("execute", f"ib{i}") == rounds
        assert log.count("revert", f"ib{i}") == rounds - 1 + (0 if outcome.ok else 1)
    assert log.count("execute", "flaky") == rounds
    for i in range(inside_after):
        assert log.count("execute", f"ia{i}") == (1 if outcome.ok else 0)
    for i in range(after):
        assert log.count("execute", f"a{i}") == (1 if outcome.ok else 0)
