"""Durable flows and quota ledgers on both stores: what the store must refuse, and races it must absorb."""

from __future__ import annotations

import threading

import pytest

from tenure import AlreadyExists
from tenure.flow import FlowEngine, RunState, TaskState, linear, task, unordered
from tenure.flow.durable import StoreCheckpoints
from tenure.store.protocol import EngineStore


@pytest.mark.parametrize("bad", ["a\x00b", {1, 2}], ids=["nul", "set"])
def test_a_result_the_store_cannot_keep_is_the_task_failure_not_a_stuck_run(store: EngineStore, bad: object) -> None:
    @task(provides="x")
    def produce() -> object:
        return bad

    engine = FlowEngine(linear("keep", produce), checkpoints=StoreCheckpoints(store))
    outcome = engine.run()
    assert outcome.state is RunState.REVERTED
    assert outcome.failures["produce"].matches(TypeError)
    assert "cannot be checkpointed" in outcome.failures["produce"].message
    loaded = StoreCheckpoints(store).load_run(outcome.run_id)
    assert loaded is not None
    assert loaded.tasks["produce"].state is TaskState.REVERTED


def test_a_failure_message_with_nul_is_stored(store: EngineStore) -> None:
    @task
    def fail() -> None:
        raise ValueError("bad\x00byte")

    outcome = FlowEngine(linear("nul", fail), checkpoints=StoreCheckpoints(store)).run()
    loaded = StoreCheckpoints(store).load_run(outcome.run_id)
    assert loaded is not None
    failure = loaded.tasks["fail"].failure
    assert failure is not None
    assert failure.message == "bad\\x00byte"


def test_a_run_id_is_taken_once(store: EngineStore) -> None:
    engine = FlowEngine(linear("once", task(lambda: None, name="noop")), checkpoints=StoreCheckpoints(store))
    engine.run(run_id="same")
    with pytest.raises(AlreadyExists) as caught:
        engine.run(run_id="same")
    assert (caught.value.what, caught.value.key) == ("flow run", "same")


def test_a_resource_id_is_taken_once(store: EngineStore) -> None:
    store.create("image", {"name": "a"}, resource_id="img-1")
    with pytest.raises(AlreadyExists) as caught:
        store.create("image", {"name": "b"}, resource_id="img-1")
    assert (caught.value.what, caught.value.key) == ("resource", "img-1")
    assert store.get("img-1").spec["name"] == "a"


def test_a_finished_sibling_is_committed_while_the_other_still_runs(store: EngineStore) -> None:
    checkpoints = StoreCheckpoints(store)
    release = threading.Event()
    seen: dict[str, str] = {}

    @task(provides="fast_done")
    def fast() -> bool:
        return True

    @task(provides="slow_done")
    def slow(context: object) -> bool:
        # By now the fast sibling has finished; its success must already be committed.
        for _ in range(200):
            loaded = checkpoints.load_run(run_id)
            if loaded is not None and loaded.tasks.get("fast") and loaded.tasks["fast"].state is TaskState.SUCCESS:
                seen["fast"] = "success"
                break
            release.wait(0.01)
        return True

    run_id = "siblings"
    outcome = FlowEngine(unordered("pair", fast, slow), checkpoints=checkpoints, max_workers=2).run(run_id=run_id)
    assert outcome.ok
    assert seen == {"fast": "success"}
