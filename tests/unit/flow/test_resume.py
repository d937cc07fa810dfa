"""Resuming runs from their checkpoints after the process running them died.

A kill is simulated with :class:`~tests.unit.flow.flow_support.Crash`, a ``BaseException`` the engine does not catch:
raised by a task (or by the checkpoint store) it stops the run exactly there, leaving only what had
been committed. A fresh engine, with a freshly built flow, then resumes the run from the same store.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from tenure.errors import FlowChanged, FlowRunNotFound
from tenure.flow import (
    Failure,
    Flow,
    FlowEngine,
    FunctionTask,
    MemoryCheckpoints,
    Reschedule,
    Retry,
    RunRecord,
    RunState,
    TaskContext,
    TaskRecord,
    TaskState,
    linear,
    unordered,
)
from tests.unit.flow.flow_support import Crash, Fault, Log, Reloading, probe


@pytest.fixture
def checkpoints() -> MemoryCheckpoints:
    """Checkpoints as a restarted process reads them back: failures come without their exceptions."""
    return Reloading()


def chain(log: Log, *, crash_b: Fault | None = None, fail_c: bool = False, crash_b_revert: Fault | None = None) -> Flow:
    return linear(
        "chain",
        probe("a", log, requires=("size",), provides="x", context=True),
        probe(
            "b", log, requires=("x",), provides="y", fails=crash_b or False, revert_fails=crash_b_revert, context=True
        ),
        probe("c", log, requires=("y",), provides="z", fails=fail_c, context=True),
        probe("notify", log, requires=("x",), on_failure_only=True, context=True),
    )


def crash_fault() -> Fault:
    return Fault(times=1, error=lambda: Crash("killed"))


def contexts(log: Log, name: str) -> list[TaskContext]:
    return [c["context"] for c in log.calls.get(("execute", name), [])]


def stored(checkpoints: MemoryCheckpoints, run_id: str) -> RunRecord:
    record = checkpoints.load_run(run_id)
    assert record is not None
    return record


def test_a_killed_run_leaves_what_was_committed(log: Log, checkpoints: MemoryCheckpoints) -> None:
    with pytest.raises(Crash):
        FlowEngine(chain(log, crash_b=crash_fault()), checkpoints=checkpoints).run({"size": 1}, run_id="r")
    record = stored(checkpoints, "r")
    assert record.state is RunState.RUNNING
    assert {n: (t.state, t.attempt) for n, t in record.tasks.items()} == {
        "a": (TaskState.SUCCESS, 1),
        "b": (TaskState.RUNNING, 1),
    }
    assert record.tasks["a"].result == {"x": "a.x"}


def test_resume_skips_finished_tasks_and_runs_the_interrupted_one_again(
    log: Log, checkpoints: MemoryCheckpoints
) -> None:
    crash = crash_fault()
    with pytest.raises(Crash):
        FlowEngine(chain(log, crash_b=crash), checkpoints=checkpoints).run({"size": 1}, run_id="r")
    (first,) = contexts(log, "b")
    assert (first.attempt, first.resumed) == (1, False)

    after = Log()
    outcome = FlowEngine(chain(after, crash_b=crash), checkpoints=checkpoints).resume("r")
    assert outcome.state is RunState.SUCCESS
    assert outcome.values == {"size": 1, "x": "a.x", "y": "b.y", "z": "c.z"}
    assert after.names("execute") == ["b", "c"]
    (again,) = contexts(after, "b")
    assert (again.attempt, again.resumed) == (2, True)
    assert again.idempotency_key == first.idempotency_key
    assert again.flow_id == "r"
    (c,) = contexts(after, "c")
    assert (c.attempt, c.resumed) == (1, False)
    assert after.args("execute", "b")["x"] == "a.x"
    record = stored(checkpoints, "r")
    assert record.state is RunState.SUCCESS
    assert (record.tasks["b"].state, record.tasks["b"].attempt) == (TaskState.SUCCESS, 2)


def test_a_task_killed_twice_runs_a_third_time(log: Log, checkpoints: MemoryCheckpoints) -> None:
    crash = Fault(times=2, error=lambda: Crash("killed"))
    with pytest.raises(Crash):
        FlowEngine(chain(log, crash_b=crash), checkpoints=checkpoints).run({"size": 1}, run_id="r")
    with pytest.raises(Crash):
        FlowEngine(chain(log, crash_b=crash), checkpoints=checkpoints).resume("r")
    outcome = FlowEngine(chain(log, crash_b=crash), checkpoints=checkpoints).resume("r")
    assert outcome.ok
    assert [(c.attempt, c.resumed) for c in contexts(log, "b")] == [(1, False), (2, True), (3, True)]
    assert log.count("execute", "a") == 1


def test_a_run_killed_while_reverting_goes_on_reverting(log: Log, checkpoints: MemoryCheckpoints) -> None:
    crash = crash_fault()
    with pytest.raises(Crash):
        FlowEngine(chain(log, fail_c=True, crash_b_revert=crash), checkpoints=checkpoints).run({"size": 1}, run_id="r")
    assert log.names("revert") == ["c", "b"]
    record = stored(checkpoints, "r")
    assert record.state is RunState.REVERTING
    assert record.failure is not None
    assert record.failure.message == "fault"
    assert {n: t.state for n, t in record.tasks.items()} == {
        "a": TaskState.SUCCESS,
        "b": TaskState.SUCCESS,
        "c": TaskState.REVERTED,
    }

    after = Log()
    outcome = FlowEngine(chain(after, fail_c=True, crash_b_revert=crash), checkpoints=checkpoints).resume("r")
    assert outcome.state is RunState.REVERTED
    assert after.names("execute") == ["notify"]
    assert after.names("revert") == ["b", "a"]
    assert set(outcome.failures) == {"c"}
    # The revert after the restart gets the same arguments as before it.
    assert after.args("revert", "b")["x"] == "a.x"
    assert after.args("revert", "b")["result"] == "b.y"
    assert after.args("execute", "notify")["x"] == "a.x"
    assert set(after.args("execute", "notify")) == {"x", "context"}


def test_a_run_killed_in_a_failure_only_task_runs_it_again(log: Log, checkpoints: MemoryCheckpoints) -> None:
    crash = crash_fault()

    def build(log: Log) -> Flow:
        return linear(
            "f",
            probe("a", log, fails=True),
            probe("notify", log, on_failure_only=True, fails=crash, context=True),
            probe("notify2", log, on_failure_only=True),
        )

    with pytest.raises(Crash):
        FlowEngine(build(log), checkpoints=checkpoints).run(run_id="r")
    after = Log()
    outcome = FlowEngine(build(after), checkpoints=checkpoints).resume("r")
    assert outcome.state is RunState.REVERTED
    assert after.names("revert") == []
    assert after.names("execute") == ["notify", "notify2"]
    (context,) = contexts(after, "notify")
    assert (context.attempt, context.resumed) == (2, True)


def test_resuming_a_finished_run_reports_it_and_runs_nothing(log: Log, checkpoints: MemoryCheckpoints) -> None:
    engine = FlowEngine(chain(log), checkpoints=checkpoints)
    ok = engine.run({"size": 1})
    fault = Fault()
    failing = FlowEngine(chain(log, fail_c=True, crash_b_revert=fault), checkpoints=checkpoints)
    reverted = FlowEngine(chain(log, fail_c=True), checkpoints=checkpoints).run({"size": 1})
    revert_failed = failing.run({"size": 1})
    assert revert_failed.state is RunState.REVERT_FAILED
    log.clear()

    assert FlowEngine(chain(log), checkpoints=checkpoints).resume(ok.run_id) == ok
    again = FlowEngine(chain(log, fail_c=True), checkpoints=checkpoints).resume(reverted.run_id)
    assert (again.state, set(again.failures)) == (RunState.REVERTED, {"c"})
    # A revert_failed run waits for an operator: resume does not try the revert again.
    stuck = FlowEngine(chain(log, fail_c=True, crash_b_revert=fault), checkpoints=checkpoints).resume(
        revert_failed.run_id
    )
    assert (stuck.state, set(stuck.failures)) == (RunState.REVERT_FAILED, {"c", "b.revert"})
    assert fault.fired == 1
    assert log.entries == []


def test_resume_refuses_a_changed_flow(log: Log, checkpoints: MemoryCheckpoints) -> None:
    with pytest.raises(Crash):
        FlowEngine(chain(log, crash_b=crash_fault()), checkpoints=checkpoints).run({"size": 1}, run_id="r")
    original = FlowEngine(chain(log), checkpoints=checkpoints)

    changed = linear("chain", *chain(log).items, probe("extra", log))
    with pytest.raises(FlowChanged) as err:
        FlowEngine(changed, checkpoints=checkpoints).resume("r")
    assert err.value.run_id == "r"
    assert err.value.stored == f"chain v1 ({original.plan.fingerprint})"
    assert err.value.current.startswith("chain v1 (")
    assert err.value.current != err.value.stored
    assert "bump the flow's version" in str(err.value)

    bumped = linear("chain", *chain(log).items, version=2)
    with pytest.raises(FlowChanged, match=r"chain v2"):
        FlowEngine(bumped, checkpoints=checkpoints).resume("r")
    renamed = linear("other", *chain(log).items)
    with pytest.raises(FlowChanged, match="other v1"):
        FlowEngine(renamed, checkpoints=checkpoints).resume("r")
    assert log.names("execute") == ["a", "b"]
    assert stored(checkpoints, "r").state is RunState.RUNNING

    assert original.resume("r").ok


def test_resume_of_an_unknown_run(log: Log) -> None:
    with pytest.raises(FlowRunNotFound, match="no flow run with id 'ghost'") as caught:
        FlowEngine(chain(log)).resume("ghost")
    assert caught.value.run_id == "ghost"
    assert log.entries == []


# --- retries and reschedules survive a restart --------------------------------------------------


def placing(log: Log, crash: Fault) -> Flow:
    def create(host: str, context: TaskContext) -> str:
        log.add("execute", "create", {"host": host, "context": context})
        if host == "h1":
            raise ValueError("h1 is full")
        crash.maybe_raise()
        return f"vol@{host}"

    def undo(host: str, result: Any, failure: Failure | None) -> None:
        log.add("revert", "create", {"host": host})

    return linear(
        "f",
        probe("first", log, provides="x"),
        linear(
            "place",
            FunctionTask(create, provides="volume", revert=undo),
            retry=Retry(times=3, reschedule=Reschedule("host", ["h2", "h3"])),
        ),
    )


def test_a_rescheduled_round_killed_midway_resumes_with_the_new_value(
    log: Log, checkpoints: MemoryCheckpoints, sleeps: list[float]
) -> None:
    crash = crash_fault()
    with pytest.raises(Crash):
        FlowEngine(placing(log, crash), checkpoints=checkpoints, sleep=sleeps.append).run({"host": "h1"}, run_id="r")
    record = stored(checkpoints, "r")
    assert (record.overrides, record.retries) == ({"host": "h2"}, {"place": 1})

    after = Log()
    outcome = FlowEngine(placing(after, crash), checkpoints=checkpoints, sleep=sleeps.append).resume("r")
    assert outcome.ok
    assert outcome.values["host"] == "h2"
    assert outcome.values["volume"] == "vol@h2"
    assert after.names("execute") == ["create"]
    assert after.args("execute", "create")["host"] == "h2"
    context = after.args("execute", "create")["context"]
    assert (context.attempt, context.resumed) == (2, True)
    assert context.idempotency_key == log.args("execute", "create")["context"].idempotency_key
    assert len(sleeps) == 1


def test_a_run_killed_while_waiting_to_retry_resumes_with_the_next_round(
    log: Log, checkpoints: MemoryCheckpoints
) -> None:
    never = Fault(active=False)
    killed_sleep: list[float] = []

    def sleep(delay: float) -> None:
        killed_sleep.append(delay)
        raise Crash("killed while sleeping")

    with pytest.raises(Crash):
        FlowEngine(placing(log, never), checkpoints=checkpoints, sleep=sleep).run({"host": "h1"}, run_id="r")
    assert len(killed_sleep) == 1
    after = Log()
    outcome = FlowEngine(placing(after, never), checkpoints=checkpoints, sleep=sleep).resume("r")
    assert outcome.ok
    assert outcome.values["host"] == "h2"
    assert [c["host"] for c in after.calls[("execute", "create")]] == ["h2"]
    assert len(killed_sleep) == 1


# --- a kill just after a task's failure was committed -----------------------------------------


class KillAfterFailureOf(Reloading):
    """Checkpoints that kill the process just after committing ``task``'s failure (once)."""

    def __init__(self, task: str) -> None:
        super().__init__()
        self.task = task
        self.killed = False

    def save(self, run_id: str, tasks: Sequence[TaskRecord], run: RunRecord | None = None) -> None:
        super().save(run_id, tasks, run)
        if not self.killed and any(t.task == self.task and t.state is TaskState.FAILURE for t in tasks):
            self.killed = True
            raise Crash(f"killed after {self.task} failed")


def test_a_failure_committed_before_the_kill_is_not_run_again(log: Log) -> None:
    checkpoints = KillAfterFailureOf("c")
    with pytest.raises(Crash):
        FlowEngine(chain(log, fail_c=True), checkpoints=checkpoints).run({"size": 1}, run_id="r")
    record = stored(checkpoints, "r")
    assert (record.state, record.tasks["c"].state) == (RunState.RUNNING, TaskState.FAILURE)

    after = Log()
    outcome = FlowEngine(chain(after, fail_c=True), checkpoints=checkpoints).resume("r")
    assert outcome.state is RunState.REVERTED
    assert after.names("execute") == ["notify"]
    assert after.names("revert") == ["c", "b", "a"]
    assert set(outcome.failures) == {"c"}
    assert after.args("revert", "c")["failure"].message == "fault"


def test_a_failure_committed_before_the_kill_is_retried_by_its_controller(log: Log) -> None:
    def build(log: Log, fault: Fault) -> Flow:
        return linear(
            "f",
            probe("first", log, provides="x"),
            linear(
                "sub",
                probe("a", log, requires=("x",), provides="y"),
                probe("b", log, requires=("y",), fails=fault, context=True),
                retry=Retry(times=1),
            ),
        )

    fault = Fault(times=1)
    checkpoints = KillAfterFailureOf("b")
    with pytest.raises(Crash):
        FlowEngine(build(log, fault), checkpoints=checkpoints).run(run_id="r")
    after = Log()
    outcome = FlowEngine(build(after, fault), checkpoints=checkpoints).resume("r")
    assert outcome.ok
    assert after.names("revert") == ["b", "a"]
    assert after.names("execute") == ["a", "b"]
    (before_kill,) = contexts(log, "b")
    (retried,) = contexts(after, "b")
    assert (retried.attempt, retried.resumed) == (1, False)
    assert retried.idempotency_key != before_kill.idempotency_key
    assert stored(checkpoints, "r").retries == {"sub": 1}


# --- the order of reverts after a kill ------------------------------------------------------------


class KillAfterFailureWatched(KillAfterFailureOf):
    """:class:`KillAfterFailureOf` that also sets ``committed[(task, state)]`` once such a record is saved."""

    def __init__(self, task: str, watch: Sequence[tuple[str, TaskState]]) -> None:
        super().__init__(task)
        self.committed = {key: threading.Event() for key in watch}

    def save(self, run_id: str, tasks: Sequence[TaskRecord], run: RunRecord | None = None) -> None:
        try:
            super().save(run_id, tasks, run)
        finally:
            for t in tasks:
                if (t.task, t.state) in self.committed:
                    self.committed[(t.task, t.state)].set()


def test_after_a_kill_a_task_still_running_is_reverted_first_then_the_rest_latest_first(log: Log) -> None:
    """a, then b, c and d side by side: c succeeds, then b fails, while d still runs when the process
    dies. The resumed run reverts d first (it began after everything it depends on had finished, and
    its outcome is lost), then the others in the reverse of the order they finished (b, c, a), which
    is not the reverse of the order they are declared in (d, c, b, a)."""
    checkpoints = KillAfterFailureWatched("b", [("c", TaskState.SUCCESS)])
    release_d = threading.Event()

    def build(log: Log) -> Flow:
        return linear(
            "f",
            probe("a", log, provides="x"),
            unordered(
                "side-by-side",
                # b fails only once c's success is committed: c finishes first, b second.
                probe(
                    "b",
                    log,
                    requires=("x",),
                    fails=True,
                    during=lambda: checkpoints.committed[("c", TaskState.SUCCESS)].wait(10),
                ),
                probe("c", log, requires=("x",), provides="y"),
                probe("d", log, requires=("x",), during=lambda: release_d.wait(10)),
            ),
        )

    first = FlowEngine(build(log), checkpoints=checkpoints, max_workers=3)
    try:
        with pytest.raises(Crash):
            first.run(run_id="r")
    finally:
        release_d.set()  # the killed process's d never finishes; this one's thread may end now
        first.close()
    record = stored(checkpoints, "r")
    assert record.state is RunState.RUNNING
    assert {name: (t.state, t.seq) for name, t in record.tasks.items()} == {
        "a": (TaskState.SUCCESS, 1),
        "c": (TaskState.SUCCESS, 2),
        "b": (TaskState.FAILURE, 3),
        "d": (TaskState.RUNNING, 0),
    }

    after = Log()
    second = FlowEngine(build(after), checkpoints=checkpoints, max_workers=3)
    try:
        outcome = second.resume("r")
    finally:
        second.close()

    assert outcome.state is RunState.REVERTED
    assert set(outcome.failures) == {"b"}
    assert after.names("execute") == [], "nothing runs forward again: b's failure was committed"
    assert after.names("revert") == ["d", "b", "c", "a"]


# --- a kill at every checkpoint ----------------------------------------------------------------


class KillAt(Reloading):
    """Checkpoints that kill the process at the ``at``-th save, before or after writing it."""

    def __init__(self, at: int, *, after: bool) -> None:
        super().__init__()
        self.at = at
        self.after = after
        self.saves = 0

    def save(self, run_id: str, tasks: Sequence[TaskRecord], run: RunRecord | None = None) -> None:
        self.saves += 1
        if self.saves == self.at and not self.after:
            raise Crash(f"killed before save {self.at}")
        super().save(run_id, tasks, run)
        if self.saves == self.at and self.after:
            raise Crash(f"killed after save {self.at}")


def kill_flow(log: Log, fails: bool) -> Flow:
    return linear(
        "k",
        probe("a", log, requires=("n",), provides="x"),
        unordered("u", probe("b1", log, requires=("x",), provides="y1"), probe("b2", log, provides="y2")),
        probe("c", log, requires=("y1", "y2"), provides="z", fails=fails),
        probe("notify", log, requires=("x",), on_failure_only=True),
    )


def saves_of_a_whole_run(fails: bool) -> int:
    counting = KillAt(0, after=False)
    engine = FlowEngine(kill_flow(Log(), fails), checkpoints=counting, max_workers=1)
    try:
        engine.run({"n": 1})
    finally:
        engine.close()
    return counting.saves


@pytest.mark.parametrize("fails", [False, True], ids=["succeeding", "failing"])
@pytest.mark.parametrize("after", [False, True], ids=["before-save", "after-save"])
def test_a_kill_at_any_checkpoint_resumes_to_the_same_end(fails: bool, after: bool) -> None:
    total = saves_of_a_whole_run(fails)
    assert total >= 5
    for at in range(1, total + 1):
        checkpoints = KillAt(at, after=after)
        log = Log()
        first = FlowEngine(kill_flow(log, fails), checkpoints=checkpoints, max_workers=1)
        try:
            with pytest.raises(Crash):
                first.run({"n": 1}, run_id="r")
        finally:
            first.close()
        second = FlowEngine(kill_flow(log, fails), checkpoints=checkpoints, max_workers=1)
        try:
            outcome = second.resume("r")
        finally:
            second.close()
        where = f"killed {'after' if after else 'before'} save {at} of {total}"
        tasks = ("a", "b1", "b2", "c")
        if fails:
            assert outcome.state is RunState.REVERTED, where
            assert set(outcome.failures) == {"c"}, where
            # Every task that ran was reverted, at least once (a revert may be repeated after a kill).
            for name in tasks:
                assert (log.count("execute", name) > 0) == (log.count("revert", name) > 0), (where, name)
                assert log.count("revert", name) <= 2, (where, name)
            assert 1 <= log.count("done", "notify") <= 2, where
        else:
            assert outcome.state is RunState.SUCCESS, where
            assert outcome.values == {"n": 1, "x": "a.x", "y1": "b1.y1", "y2": "b2.y2", "z": "c.z"}, where
            assert log.names("revert") == [], where
        # At least once, and at most once more for the one interrupted transition.
        for name in tasks:
            assert 1 <= log.count("execute", name) <= 2, (where, name)
        assert sum(log.count("execute", name) for name in tasks) <= len(tasks) + 2, where
        assert stored(checkpoints, "r").state is outcome.state, where
