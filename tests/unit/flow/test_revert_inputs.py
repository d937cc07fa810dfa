"""A revert gets the values its task was started with, whatever has been put under those names since."""

from __future__ import annotations

from typing import Any

from tenure.flow import FlowEngine, MemoryCheckpoints, Reschedule, Retry, RunState, linear, task


def test_a_task_outside_a_rescheduled_subflow_is_reverted_with_the_value_it_used() -> None:
    reverted: list[dict[str, Any]] = []

    def undo_book(host: str, result: Any) -> None:
        reverted.append({"host": host, "result": result})

    @task(provides="booking", revert=undo_book)
    def book(host: str) -> str:
        return f"booked {host}"

    @task(provides="placed")
    def place(host: str) -> str:
        raise RuntimeError(f"{host} is full")

    @task
    def never(placed: str) -> None:
        raise AssertionError("not reached")

    flow = linear(
        "f", book, linear("place", place, retry=Retry(times=2, reschedule=Reschedule("host", ["h2", "h3"]))), never
    )
    outcome = FlowEngine(flow).run({"host": "h1"})
    assert outcome.state is RunState.REVERTED
    # The reschedules moved "host" to h3, but book ran with h1 and is undone with h1.
    assert reverted == [{"host": "h1", "result": "booked h1"}]


def test_a_revert_gets_its_own_input_when_a_later_task_provides_the_same_name() -> None:
    reverted: list[Any] = []

    @task(provides="size", revert=lambda size: reverted.append(("grow", size)))
    def grow(size: int) -> int:
        return size * 2

    @task
    def fail(size: int) -> None:
        raise ValueError("no")

    checkpoints = MemoryCheckpoints()
    outcome = FlowEngine(linear("f", grow, fail), checkpoints=checkpoints).run({"size": 5})
    assert outcome.state is RunState.REVERTED
    assert reverted == [("grow", 5)]
    record = checkpoints.load_run(outcome.run_id)
    assert record is not None
    assert record.tasks["grow"].inputs == {"size": 5}
    assert record.tasks["fail"].inputs == {"size": 10}
