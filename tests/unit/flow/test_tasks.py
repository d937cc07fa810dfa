"""Tasks on their own: declared interface, binding, outputs, and calling them directly with mock inputs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tenure.errors import InvalidFlow, TenureError
from tenure.flow import (
    Failure,
    FlowEngine,
    FunctionTask,
    MemoryCheckpoints,
    RunState,
    Task,
    TaskContext,
    TaskState,
    linear,
    task,
    unordered,
)
from tests.unit.flow.flow_support import Log, probe

# --- tasks of the seed's "create volume" kind, used directly ----------------------------------


class ReserveQuota(Task):
    """Reserves quota; its revert releases exactly what it reserved."""

    provides = ("reservation",)

    def __init__(self, ledger: dict[str, int], **kwargs: Any) -> None:
        self.ledger = ledger
        super().__init__(**kwargs)

    def execute(self, project: str, size: int, zone: str = "nova", context: TaskContext | None = None) -> str:
        self.ledger[project] = self.ledger.get(project, 0) + size
        return f"{project}:{size}:{zone}"

    def revert(
        self, project: str, size: int, *, result: Any, failure: Failure | None, zone: str = "nova", **_: Any
    ) -> None:
        if result is not None:
            self.ledger[project] -= size


def test_requires_and_optional_are_read_from_the_execute_signature() -> None:
    t = ReserveQuota({})
    assert t.name == "ReserveQuota"
    assert t.requires == ("project", "size")
    assert t.optional == ("zone",)
    assert t.provides_names == ("reservation",)
    assert t.wants_context is True


def test_context_is_not_an_input() -> None:
    @task
    def f(a: int, context: TaskContext) -> None:
        pass

    assert f.requires == ("a",)
    assert f.optional == ()
    assert f.wants_context is True


def test_variadic_parameters_are_not_inputs() -> None:
    @task
    def f(a: int, *rest: int, **more: int) -> None:
        pass

    assert f.requires == ("a",)
    assert f.wants_context is False


def test_a_task_can_be_executed_and_reverted_directly_with_mock_inputs() -> None:
    ledger: dict[str, int] = {}
    t = ReserveQuota(ledger)
    context = TaskContext(flow_id="f", task=t.name, attempt=1, idempotency_key="k")
    result = t.execute(project="p", size=3, context=context)
    assert result == "p:3:nova"
    assert ledger == {"p": 3}
    assert t.outputs(result) == {"reservation": "p:3:nova"}
    t.revert(project="p", size=3, result=result, failure=None, flow_failures={})
    assert ledger == {"p": 0}


def test_revert_after_its_own_failure_undoes_nothing_when_called_directly() -> None:
    ledger = {"p": 5}
    t = ReserveQuota(ledger)
    t.revert(project="p", size=3, result=None, failure=Failure("builtins.ValueError", "no"), flow_failures={})
    assert ledger == {"p": 5}


def test_bind_takes_inputs_from_values_and_passes_the_context() -> None:
    t = ReserveQuota({})
    context = TaskContext(flow_id="f", task=t.name, attempt=1, idempotency_key="k")
    assert t.bind({"project": "p", "size": 1, "other": 0}, context) == {
        "project": "p",
        "size": 1,
        "context": context,
    }
    assert t.bind({"project": "p", "size": 1, "zone": "z"}, None)["zone"] == "z"


def test_a_function_task_can_be_called_directly() -> None:
    undone: list[tuple[int, Any]] = []

    def undo(n: int, result: Any) -> None:
        undone.append((n, result))

    @task(provides="doubled", revert=undo)
    def double(n: int) -> int:
        return n * 2

    assert double.execute(n=4) == 8
    double.revert(n=4, result=8, failure=None, flow_failures={})
    assert undone == [(4, 8)]


# --- names, provides ---------------------------------------------------------------------------


def test_explicit_name_overrides_the_class_name() -> None:
    assert ReserveQuota({}, name="reserve").name == "reserve"
    assert repr(ReserveQuota({}, name="reserve")) == "<ReserveQuota 'reserve'>"


@pytest.mark.parametrize(
    ("provides", "expected"),
    [(None, ("reservation",)), ("one", ("one",)), (("a", "b"), ("a", "b")), (["a"], ("a",)), ((), ())],
)
def test_provides_one_or_many_names(provides: Any, expected: tuple[str, ...]) -> None:
    assert ReserveQuota({}, provides=provides).provides_names == expected


# --- rebind and inject --------------------------------------------------------------------------


def test_rebind_reads_a_parameter_from_a_differently_named_value() -> None:
    t = ReserveQuota({}, rebind={"project": "tenant", "zone": "az"})
    assert t.requires == ("tenant", "size")
    assert t.optional == ("az",)
    kwargs = t.bind({"tenant": "p", "size": 1, "az": "z2", "project": "ignored"}, None)
    assert kwargs == {"project": "p", "size": 1, "zone": "z2", "context": None}


def test_inject_supplies_a_constant_that_is_no_longer_an_input() -> None:
    t = ReserveQuota({}, inject={"size": 10, "zone": "z9"})
    assert t.requires == ("project",)
    assert t.optional == ()
    assert t.bind({"project": "p", "size": 1, "zone": "ignored"}, None) == {
        "project": "p",
        "size": 10,
        "zone": "z9",
        "context": None,
    }


def test_rebind_and_inject_of_unknown_parameters_are_refused_naming_them() -> None:
    with pytest.raises(InvalidFlow) as err:
        ReserveQuota({}, name="reserve", rebind={"sise": "size"}, inject={"colour": "red"})
    assert err.value.flow == "reserve"
    assert len(err.value.problems) == 2
    assert "'sise'" in err.value.problems[0]
    assert "'colour'" in err.value.problems[1]
    assert all("'reserve'" in p for p in err.value.problems)


def test_context_cannot_be_rebound() -> None:
    with pytest.raises(InvalidFlow, match="'context'"):
        ReserveQuota({}, rebind={"context": "ctx"})


def test_function_task_rebind_and_inject() -> None:
    def f(a: int, b: int) -> int:
        return a + b

    t = FunctionTask(f, provides="s", rebind={"a": "x"}, inject={"b": 5})
    assert (t.name, t.requires) == ("f", ("x",))
    with pytest.raises(InvalidFlow, match="'c'"):
        FunctionTask(f, inject={"c": 1})


# --- outputs ------------------------------------------------------------------------------------


def test_outputs_of_a_task_that_provides_nothing() -> None:
    t = FunctionTask(lambda: None, name="nothing")
    assert t.outputs(None) == {}
    assert t.outputs({}) == {}
    with pytest.raises(InvalidFlow, match="provides nothing but returned 3"):
        t.outputs(3)


def test_outputs_of_a_task_that_provides_one_name() -> None:
    t = FunctionTask(lambda: None, name="one", provides="x")
    assert t.outputs(3) == {"x": 3}
    assert t.outputs(None) == {"x": None}
    assert t.outputs({"x": 1}) == {"x": 1}
    # A mapping that is not exactly {name: ...} is the value itself.
    assert t.outputs({"y": 1}) == {"x": {"y": 1}}


@pytest.mark.parametrize("returned", [3, None, {"a": 1}, {"a": 1, "b": 2, "c": 3}, ["a", "b"]])
def test_outputs_of_a_task_that_provides_many_names_must_be_a_mapping_of_exactly_them(returned: Any) -> None:
    t = FunctionTask(lambda: None, name="many", provides=("a", "b"))
    with pytest.raises(InvalidFlow, match=r"'many' must return a mapping with keys \['a', 'b'\]"):
        t.outputs(returned)
    assert t.outputs({"b": 2, "a": 1}) == {"a": 1, "b": 2}


def test_a_return_value_that_does_not_match_provides_fails_the_task_at_run_time(log: Log) -> None:
    def undo_first(result: Any) -> None:
        log.add("revert", "first", {"result": result})

    def undo_bad(result: Any, failure: Failure | None) -> None:
        log.add("revert", "bad", {"result": result, "failure": failure})

    first = FunctionTask(lambda: 1, name="first", provides="one", revert=undo_first)
    bad = FunctionTask(lambda: 2, name="bad", provides=("a", "b"), revert=undo_bad)
    cp = MemoryCheckpoints()
    outcome = FlowEngine(linear("f", first, bad), checkpoints=cp).run()
    assert outcome.state is RunState.REVERTED
    assert outcome.failures["bad"].matches(InvalidFlow)
    assert "must return a mapping" in outcome.failures["bad"].message
    assert log.names("revert") == ["bad", "first"]
    assert log.args("revert", "bad")["failure"] == outcome.failures["bad"]
    assert log.args("revert", "first") == {"result": 1}
    record = cp.load_run(outcome.run_id)
    assert record is not None
    assert record.tasks["bad"].state is TaskState.REVERTED


# --- function tasks and the decorator ----------------------------------------------------------


def test_function_task_revert_gets_result_and_failure_when_it_asks_for_them() -> None:
    got: dict[str, Any] = {}

    def undo(x: int, result: Any, failure: Failure | None) -> None:
        got.update(x=x, result=result, failure=failure)

    t = FunctionTask(lambda x: x, name="t", provides="y", revert=undo)
    t.revert(x=1, result=1, failure=None, flow_failures={"other": Failure("E", "m")})
    assert got == {"x": 1, "result": 1, "failure": None}


def test_function_task_revert_with_var_keyword_gets_everything() -> None:
    got: dict[str, Any] = {}

    def undo(**kwargs: Any) -> None:
        got.update(kwargs)

    t = FunctionTask(lambda x: x, name="t", revert=undo)
    boom = Failure("E", "m")
    t.revert(x=1, result=None, failure=boom, flow_failures={"t": boom})
    assert got == {"x": 1, "result": None, "failure": boom, "flow_failures": {"t": boom}}


def test_function_task_without_revert_reverts_nothing() -> None:
    calls: list[dict[str, Any]] = []

    def make(**kwargs: Any) -> str:
        calls.append(kwargs)
        return "made"

    t = FunctionTask(make, name="t", provides="x")
    assert t.revert(result="made", failure=None) is None
    assert calls == [], "reverting a task without a revert calls nothing, least of all its execute"

    # In a run that fails after it: it ran once, and its revert is recorded without anything being called.
    checkpoints = MemoryCheckpoints()
    log = Log()
    engine = FlowEngine(linear("f", t, probe("after", log, requires=("x",), fails=True)), checkpoints=checkpoints)
    outcome = engine.run(run_id="r")
    assert outcome.state is RunState.REVERTED
    assert calls == [{}]
    assert log.names("revert") == ["after"]
    record = checkpoints.load_run("r")
    assert record is not None
    assert record.tasks["t"].state is TaskState.REVERTED


def test_task_decorator_bare() -> None:
    @task
    def reserve(size: int, zone: str = "z") -> None:
        pass

    assert isinstance(reserve, FunctionTask)
    assert reserve.name == "reserve"
    assert reserve.requires == ("size",)
    assert reserve.optional == ("zone",)
    assert reserve.provides_names == ()
    assert reserve.on_failure_only is False


def test_task_decorator_with_arguments() -> None:
    def undo(result: Any) -> None:
        pass

    @task(name="notify-failure", provides=("a", "b"), revert=undo, on_failure_only=True)
    def notify(flow_failures: dict[str, Failure]) -> dict[str, int]:
        return {"a": 1, "b": 2}

    assert notify.name == "notify-failure"
    assert notify.provides_names == ("a", "b")
    assert notify.on_failure_only is True
    assert notify.requires == ("flow_failures",)


def test_task_constructor_can_make_a_task_failure_only() -> None:
    assert ReserveQuota({}, on_failure_only=True).on_failure_only is True
    assert ReserveQuota({}).on_failure_only is False


def test_a_task_subclass_without_execute_cannot_be_instantiated() -> None:
    class NoExecute(Task):
        def revert(self, *args: Any, result: Any, failure: Failure | None, **kwargs: Any) -> None:
            pass

    with pytest.raises(TypeError, match="execute"):
        NoExecute()  # type: ignore[abstract]


# --- async tasks ----------------------------------------------------------------------------------


def test_async_functions_execute_and_revert(log: Log) -> None:
    async def fetch(n: int) -> int:
        await asyncio.sleep(0)
        log.add("execute", "fetch", {"n": n})
        return n + 1

    async def undo_fetch(n: int, result: Any) -> None:
        await asyncio.sleep(0)
        log.add("revert", "fetch", {"n": n, "result": result})

    async def fail(fetched: int) -> None:
        await asyncio.sleep(0)
        raise ValueError(f"no {fetched}")

    ok = FlowEngine(linear("ok", FunctionTask(fetch, provides="fetched"))).run({"n": 1})
    assert ok.values["fetched"] == 2

    flow = linear("bad", FunctionTask(fetch, provides="fetched", revert=undo_fetch), FunctionTask(fail))
    outcome = FlowEngine(flow).run({"n": 1})
    assert outcome.state is RunState.REVERTED
    assert outcome.failures["fail"].message == "no 2"
    assert log.args("revert", "fetch") == {"n": 1, "result": 2}


def test_async_task_subclass(log: Log) -> None:
    class Fetch(Task):
        provides = ("page",)

        async def execute(self, url: str, context: TaskContext) -> str:
            await asyncio.sleep(0)
            return f"{url}#{context.attempt}"

        async def revert(self, url: str, *, result: Any, failure: Failure | None, **_: Any) -> None:
            log.add("revert", "Fetch", {"result": result})

    assert Fetch().requires == ("url",)
    outcome = FlowEngine(linear("f", Fetch())).run({"url": "u"})
    assert outcome.values["page"] == "u#1"


def test_async_tasks_run_in_parallel_branches_too() -> None:
    async def a() -> int:
        await asyncio.sleep(0)
        return 1

    async def b() -> int:
        await asyncio.sleep(0)
        return 2

    engine = FlowEngine(unordered("u", FunctionTask(a, provides="a"), FunctionTask(b, provides="b")))
    try:
        assert engine.run().values == {"a": 1, "b": 2}
    finally:
        engine.close()


# --- the context a running task gets ---------------------------------------------------------


def test_a_running_task_gets_its_context() -> None:
    seen: list[TaskContext] = []

    @task
    def first(context: TaskContext) -> None:
        seen.append(context)

    @task
    def second(context: TaskContext) -> None:
        seen.append(context)

    outcome = FlowEngine(linear("f", first, second)).run(run_id="run-1")
    assert outcome.ok
    assert [(c.flow_id, c.task, c.attempt, c.resumed) for c in seen] == [
        ("run-1", "first", 1, False),
        ("run-1", "second", 1, False),
    ]
    assert seen[0].idempotency_key != seen[1].idempotency_key
    assert all("run-1" in c.idempotency_key for c in seen)


def test_idempotency_keys_differ_between_runs() -> None:
    keys: list[str] = []

    @task
    def first(context: TaskContext) -> None:
        keys.append(context.idempotency_key)

    engine = FlowEngine(linear("f", first))
    engine.run()
    engine.run()
    assert len(set(keys)) == 2


# --- failures -----------------------------------------------------------------------------------


def test_failure_capture_and_matching() -> None:
    try:
        raise KeyError("gone")
    except KeyError as exc:
        failure = Failure.capture(exc)
    assert failure.exc_type == "builtins.KeyError"
    assert failure.message == "'gone'"
    assert "raise KeyError" in failure.traceback
    assert failure.matches(KeyError)
    assert failure.matches(LookupError)
    assert not failure.matches(ValueError)
    assert str(failure) == "KeyError: 'gone'"


def test_a_failure_read_back_from_json_still_matches_by_type_and_base_types() -> None:
    original = Failure.capture(InvalidFlow("f", ["p"]))
    copy = Failure.from_json(original.to_json())
    assert copy == original
    assert copy.exception is None
    assert copy.matches(InvalidFlow)
    assert copy.matches(Exception)
    assert copy.matches(ValueError, TenureError)
    assert not copy.matches(ValueError)
    assert not copy.matches(KeyboardInterrupt)
    assert set(original.to_json()) == {"exc_type", "message", "traceback", "lineage"}
    assert all(isinstance(v, str) for v in original.to_json().values())


def test_a_failure_stored_without_its_lineage_matches_its_exact_type_only() -> None:
    old = Failure.from_json({"exc_type": "tenure.errors.InvalidFlow", "message": "m"})
    assert old.matches(InvalidFlow)
    assert not old.matches(Exception)
    assert old.traceback == ""
