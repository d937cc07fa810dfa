"""Retry controllers: how often, on what, for which subflow, how long to wait, and rescheduling."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from tenure.flow import (
    Failure,
    FlowEngine,
    FunctionTask,
    MemoryCheckpoints,
    Reschedule,
    Retry,
    RunState,
    TaskContext,
    TaskState,
    linear,
    unordered,
)
from tests.unit.flow.flow_support import Boom, Fault, Log, probe


def engine_for(flow: Any, sleeps: list[float], checkpoints: MemoryCheckpoints | None = None) -> FlowEngine:
    return FlowEngine(flow, sleep=sleeps.append, checkpoints=checkpoints)


def test_retry_n_times_then_give_up_reverting_everything(log: Log, sleeps: list[float]) -> None:
    checkpoints = MemoryCheckpoints()
    flow = linear(
        "f",
        probe("a", log, provides="x"),
        probe("b", log, requires=("x",), fails=True),
        probe("notify", log, on_failure_only=True),
        retry=Retry(times=2),
    )
    outcome = engine_for(flow, sleeps, checkpoints).run()
    assert outcome.state is RunState.REVERTED
    assert log.names("execute") == ["a", "b", "a", "b", "a", "b", "notify"]
    assert log.names("revert") == ["b", "a"] * 3
    assert list(outcome.failures) == ["b"]
    assert sleeps == [0.0, 0.0]
    record = checkpoints.load_run(outcome.run_id)
    assert record is not None
    assert record.retries == {"f": 2}


def test_a_retry_that_succeeds(log: Log, sleeps: list[float]) -> None:
    flow = linear(
        "f",
        probe("a", log, provides="x"),
        probe("b", log, requires=("x",), provides="y", fails=Fault(times=2)),
        probe("notify", log, on_failure_only=True),
        retry=Retry(times=3),
    )
    outcome = engine_for(flow, sleeps).run()
    assert outcome.ok
    assert outcome.failures == {}
    assert outcome.values == {"x": "a.x", "y": "b.y"}
    assert log.names("execute") == ["a", "b"] * 3
    assert log.names("revert") == ["b", "a"] * 2
    assert len(sleeps) == 2


def test_zero_retries_is_no_retry(log: Log, sleeps: list[float]) -> None:
    flow = linear("f", probe("a", log, fails=True), retry=Retry(times=0))
    assert engine_for(flow, sleeps).run().state is RunState.REVERTED
    assert log.count("execute", "a") == 1
    assert sleeps == []


def test_only_the_given_exception_types_are_retried(log: Log, sleeps: list[float]) -> None:
    other = Fault(error=lambda: TypeError("wrong type"))
    flow = linear("f", probe("a", log), probe("b", log, fails=other), retry=Retry(times=5, on=(Boom, KeyError)))
    outcome = engine_for(flow, sleeps).run()
    assert outcome.state is RunState.REVERTED
    assert outcome.failures["b"].matches(TypeError)
    assert log.names("execute") == ["a", "b"]
    assert sleeps == []

    log.clear()
    flow = linear("g", probe("a", log), probe("b", log, fails=Fault(times=1)), retry=Retry(times=5, on=(Boom,)))
    assert engine_for(flow, sleeps).run().ok
    assert log.names("execute") == ["a", "b", "a", "b"]


def test_subclasses_of_the_given_types_are_retried(log: Log, sleeps: list[float]) -> None:
    flow = linear("f", probe("a", log, fails=Fault(times=1)), retry=Retry(times=1, on=(Exception,)))
    assert engine_for(flow, sleeps).run().ok


def test_a_retry_is_scoped_to_its_subflow(log: Log, sleeps: list[float]) -> None:
    flow = linear(
        "outer",
        probe("before", log, provides="x"),
        linear(
            "inner",
            probe("b1", log, requires=("x",), provides="y"),
            probe("b2", log, requires=("y",), fails=Fault(times=2)),
            retry=Retry(times=2),
        ),
        probe("after", log),
    )
    outcome = engine_for(flow, sleeps).run()
    assert outcome.ok
    assert log.names("execute") == ["before", "b1", "b2", "b1", "b2", "b1", "b2", "after"]
    assert log.names("revert") == ["b2", "b1", "b2", "b1"]


def test_the_innermost_controller_that_applies_handles_the_failure(log: Log, sleeps: list[float]) -> None:
    fault = Fault(times=1, error=lambda: KeyError("k"))
    flow = linear(
        "outer",
        probe("a", log),
        linear("inner", probe("b", log), probe("c", log, fails=fault), retry=Retry(times=3, on=(ValueError,))),
        retry=Retry(times=1, on=(KeyError,)),
    )
    outcome = engine_for(flow, sleeps).run()
    assert outcome.ok
    # The inner controller does not handle KeyError; the outer one re-runs everything.
    assert log.names("execute") == ["a", "b", "c", "a", "b", "c"]
    assert log.names("revert") == ["c", "b", "a"]


def test_an_exhausted_inner_retry_hands_the_failure_to_the_outer_one(log: Log, sleeps: list[float]) -> None:
    checkpoints = MemoryCheckpoints()
    flow = linear(
        "outer",
        probe("a", log),
        linear("inner", probe("b", log, fails=True), retry=Retry(times=1)),
        retry=Retry(times=1),
    )
    outcome = engine_for(flow, sleeps, checkpoints).run()
    assert outcome.state is RunState.REVERTED
    # inner round 1 -> inner retry -> outer retry -> (the inner budget is per run, already used) -> give up
    assert log.names("execute") == ["a", "b", "b", "a", "b"]
    assert log.names("revert") == ["b", "b", "a", "b", "a"]
    record = checkpoints.load_run(outcome.run_id)
    assert record is not None
    assert record.retries == {"inner": 1, "outer": 1}


def test_a_retry_of_an_unordered_subflow_reverts_its_completed_branches(log: Log, sleeps: list[float]) -> None:
    flow = linear(
        "f",
        probe("a", log),
        unordered("u", probe("b", log), probe("c", log, fails=Fault(times=1)), retry=Retry(times=1)),
    )
    engine = engine_for(flow, sleeps)
    try:
        outcome = engine.run()
    finally:
        engine.close()
    assert outcome.ok
    assert sorted(log.names("revert")) == ["b", "c"]
    assert log.count("execute", "a") == 1
    assert log.count("execute", "b") == 2


def test_failure_only_tasks_wait_for_the_final_outcome(log: Log, sleeps: list[float]) -> None:
    flow = linear(
        "f",
        probe("a", log, fails=True),
        probe("notify", log, on_failure_only=True, requires=("flow_failures",)),
        retry=Retry(times=2),
    )
    outcome = engine_for(flow, sleeps).run()
    assert log.names("execute") == ["a", "a", "a", "notify"]
    assert set(log.args("execute", "notify")["flow_failures"]) == {"a"}
    assert outcome.state is RunState.REVERTED


def test_a_failed_revert_stops_the_retries(log: Log, sleeps: list[float]) -> None:
    # What the failed round did is not undone: another round would only pile up more of it.
    fault = Fault()
    flow = linear(
        "f",
        probe("reserve", log, provides="r", revert_fails=fault),
        probe("create", log, requires=("r",), fails=Fault(times=1)),
        retry=Retry(times=3),
    )
    checkpoints = MemoryCheckpoints()
    outcome = engine_for(flow, sleeps, checkpoints).run()
    assert outcome.state is RunState.REVERT_FAILED
    assert set(outcome.failures) == {"create", "reserve.revert"}
    assert log.names("execute") == ["reserve", "create"]
    assert log.names("revert") == ["create", "reserve"]
    assert fault.fired == 1
    assert sleeps == []
    record = checkpoints.load_run(outcome.run_id)
    assert record is not None
    assert record.tasks["reserve"].state is TaskState.REVERT_FAILURE
    assert record.retries == {}


# --- backoff ------------------------------------------------------------------------------------


def test_backoff_delays_grow_exponentially_with_jitter_and_a_cap(log: Log, sleeps: list[float]) -> None:
    retry = Retry(times=6, delay=0.5, max_delay=3.0, jitter=0.25)
    outcome = engine_for(linear("f", probe("a", log, fails=True), retry=retry), sleeps).run()
    assert outcome.state is RunState.REVERTED
    bases = [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert len(sleeps) == len(bases)
    for delay, base in zip(sleeps, bases, strict=True):
        assert base <= delay <= base * 1.25
    assert log.count("execute", "a") == 7


def test_backoff_is_computed_from_the_retry_number() -> None:
    retry = Retry(delay=1.0, max_delay=10.0, jitter=0.5)
    rng = random.Random(7)
    delays = [retry.backoff(n, rng) for n in range(1, 7)]
    for n, delay in enumerate(delays, start=1):
        base = min(10.0, 2 ** (n - 1))
        assert base <= delay <= base * 1.5
    assert retry.backoff(1, random.Random(7)) == delays[0]  # the randomness can be injected
    assert Retry(delay=1.0, jitter=0.0).backoff(3) == 4.0
    assert Retry(delay=0.0).backoff(5) == 0.0
    assert Retry(delay=1.0, max_delay=2.0, jitter=0.0).backoff(50) == 2.0


# --- reschedule ---------------------------------------------------------------------------------


def host_task(log: Log, good: str | None) -> FunctionTask:
    def create(host: str, size: int, context: TaskContext) -> str:
        log.add("execute", "create", {"host": host, "round": context.idempotency_key})
        if host != good:
            raise Boom(f"no room on {host}")
        return f"vol@{host}"

    def undo(host: str, result: Any, failure: Failure | None) -> None:
        log.add("revert", "create", {"host": host, "failure": failure})

    return FunctionTask(create, provides="volume", revert=undo)


def test_reschedule_tries_the_listed_values_in_order(log: Log, sleeps: list[float]) -> None:
    checkpoints = MemoryCheckpoints()
    flow = linear(
        "f",
        probe("pick", log, provides="zone"),
        linear("place", host_task(log, "h3"), retry=Retry(times=5, reschedule=Reschedule("host", ["h2", "h3", "h4"]))),
    )
    outcome = engine_for(flow, sleeps, checkpoints).run({"host": "h1", "size": 1})
    assert outcome.ok
    assert [c["host"] for c in log.calls[("execute", "create")]] == ["h1", "h2", "h3"]
    # Each revert is told the value its round used.
    assert [c["host"] for c in log.calls[("revert", "create")]] == ["h1", "h2"]
    assert outcome.values["host"] == "h3"
    assert outcome.values["volume"] == "vol@h3"
    assert log.count("execute", "pick") == 1
    record = checkpoints.load_run(outcome.run_id)
    assert record is not None
    assert record.overrides == {"host": "h3"}
    assert record.inputs == {"host": "h1", "size": 1}
    assert record.retries == {"place": 2}


def test_an_exhausted_reschedule_list_gives_up(log: Log, sleeps: list[float]) -> None:
    flow = linear("f", host_task(log, None), retry=Retry(times=10, reschedule=Reschedule("host", ["h2", "h3"])))
    outcome = engine_for(flow, sleeps).run({"host": "h1", "size": 1})
    assert outcome.state is RunState.REVERTED
    assert [c["host"] for c in log.calls[("execute", "create")]] == ["h1", "h2", "h3"]
    assert outcome.failures["create"].message == "no room on h3"
    assert len(sleeps) == 2


def test_times_limits_a_reschedule_list(log: Log, sleeps: list[float]) -> None:
    flow = linear("f", host_task(log, None), retry=Retry(times=1, reschedule=Reschedule("host", ["h2", "h3"])))
    assert engine_for(flow, sleeps).run({"host": "h1", "size": 1}).state is RunState.REVERTED
    assert [c["host"] for c in log.calls[("execute", "create")]] == ["h1", "h2"]


def test_reschedule_from_a_function(log: Log, sleeps: list[float]) -> None:
    asked: list[tuple[int, str]] = []

    def next_host(retry: int, failure: Failure, values: Mapping[str, Any]) -> str | None:
        asked.append((retry, failure.message))
        assert values["size"] == 1, "the function sees the run's values"
        return f"h{retry + 1}" if retry < 3 else None

    flow = linear("f", host_task(log, "h3"), retry=Retry(times=5, reschedule=Reschedule("host", next_host)))
    outcome = engine_for(flow, sleeps).run({"host": "h1", "size": 1})
    assert outcome.ok
    assert outcome.values["host"] == "h3"
    assert asked == [(1, "no room on h1"), (2, "no room on h2")]

    log.clear()
    asked.clear()
    nowhere = linear("g", host_task(log, "h9"), retry=Retry(times=5, reschedule=Reschedule("host", next_host)))
    outcome = engine_for(nowhere, sleeps).run({"host": "h1", "size": 1})
    assert outcome.state is RunState.REVERTED
    assert [c["host"] for c in log.calls[("execute", "create")]] == ["h1", "h2", "h3"]
    assert asked == [(1, "no room on h1"), (2, "no room on h2"), (3, "no room on h3")]


def test_reschedule_only_on_the_given_exception_types(log: Log, sleeps: list[float]) -> None:
    flow = linear(
        "f", host_task(log, "h2"), retry=Retry(times=5, on=(KeyError,), reschedule=Reschedule("host", ["h2"]))
    )
    assert engine_for(flow, sleeps).run({"host": "h1", "size": 1}).state is RunState.REVERTED
    assert log.count("execute", "create") == 1


def test_reschedule_next_value() -> None:
    failure = Failure("E", "m")
    listed = Reschedule("p", ["a", None])
    assert listed.next_value(1, failure, {}) == (True, "a")
    assert listed.next_value(2, failure, {}) == (True, None)
    assert listed.next_value(3, failure, {}) == (False, None)
    computed = Reschedule("p", lambda n, f, v: n * v["step"] if n < 2 else None)
    assert computed.next_value(1, failure, {"step": 10}) == (True, 10)
    assert computed.next_value(2, failure, {"step": 10}) == (False, None)


# --- idempotency keys -----------------------------------------------------------------------------


def test_idempotency_keys_differ_between_rounds_of_the_subflow_only(sleeps: list[float]) -> None:
    keys: dict[str, list[str]] = {"outside": [], "inside": [], "inside2": []}
    fault = Fault(times=2)

    def outside(context: TaskContext) -> None:
        keys["outside"].append(context.idempotency_key)

    def inside(context: TaskContext) -> None:
        keys["inside"].append(context.idempotency_key)

    def inside2(context: TaskContext) -> None:
        keys["inside2"].append(context.idempotency_key)
        fault.maybe_raise()

    flow = linear(
        "f",
        FunctionTask(outside),
        linear("sub", FunctionTask(inside), FunctionTask(inside2), retry=Retry(times=2)),
    )
    assert engine_for(flow, sleeps).run().ok
    assert len(keys["outside"]) == 1
    assert len(keys["inside"]) == len(set(keys["inside"])) == 3
    assert len(keys["inside2"]) == len(set(keys["inside2"])) == 3
    # Distinct per task within one round, too.
    assert not set(keys["inside"]) & set(keys["inside2"])
