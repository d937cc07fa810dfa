"""Compiling flows: dependency order from patterns and data, and every problem refused before running."""

from __future__ import annotations

import pytest

from tenure.errors import InvalidFlow
from tenure.flow import (
    Flow,
    FlowEngine,
    FunctionTask,
    Plan,
    Reschedule,
    Retry,
    compile_flow,
    graph,
    linear,
    unordered,
)
from tests.unit.flow.flow_support import Log, probe


def deps(plan: Plan, name: str) -> set[str]:
    """Names of the tasks ``name`` waits for directly."""
    by_index = {n.index: n.task.name for n in plan.nodes}
    return {by_index[d] for d in plan.node(name).deps}


def order(plan: Plan) -> list[str]:
    return [n.task.name for n in plan.nodes]


def assert_respects_deps(plan: Plan) -> None:
    position = {n.index: i for i, n in enumerate(plan.nodes)}
    for n in plan.nodes:
        assert all(position[d] < position[n.index] for d in n.deps), n.task.name


def problems_of(flow: Flow, inputs: set[str] | None = None) -> tuple[str, ...]:
    with pytest.raises(InvalidFlow) as err:
        compile_flow(flow, inputs)
    assert err.value.flow == flow.name
    return err.value.problems


# --- order ------------------------------------------------------------------------------------


def test_linear_runs_in_declaration_order(log: Log) -> None:
    plan = compile_flow(linear("l", probe("a", log), probe("b", log), probe("c", log)))
    assert order(plan) == ["a", "b", "c"]
    assert deps(plan, "a") == set()
    assert deps(plan, "b") == {"a"}
    assert deps(plan, "c") == {"b"}


def test_unordered_items_wait_for_nothing(log: Log) -> None:
    plan = compile_flow(unordered("u", probe("a", log), probe("b", log), probe("c", log)))
    assert sorted(order(plan)) == ["a", "b", "c"]
    assert all(not n.deps for n in plan.nodes)


def test_graph_order_follows_data_not_declaration(log: Log) -> None:
    flow = graph(
        "g",
        probe("commit", log, requires=("volume", "reservation")),
        probe("create", log, requires=("reservation",), provides="volume"),
        probe("reserve", log, requires=("size",), provides="reservation"),
        probe("unrelated", log),
    )
    plan = compile_flow(flow)
    assert_respects_deps(plan)
    assert deps(plan, "reserve") == set()
    assert deps(plan, "create") == {"reserve"}
    assert deps(plan, "commit") == {"create", "reserve"}
    assert deps(plan, "unrelated") == set()
    assert order(plan).index("reserve") < order(plan).index("create") < order(plan).index("commit")
    assert plan.requires == {"size"}
    assert plan.provides == {"reservation", "volume"}


def test_graph_follows_explicit_links(log: Log) -> None:
    flow = graph("g", probe("b", log), probe("a", log), probe("c", log), links=[("a", "b"), ("b", "c")])
    plan = compile_flow(flow)
    assert order(plan) == ["a", "b", "c"]
    assert deps(plan, "b") == {"a"}
    assert deps(plan, "c") == {"b"}


def test_graph_links_through_items_without_tasks_still_order(log: Log) -> None:
    flow = graph(
        "g",
        probe("last", log),
        probe("notify", log, on_failure_only=True),
        linear("empty"),
        probe("first", log),
        links=[("first", "empty"), ("empty", "notify"), ("notify", "last")],
    )
    plan = compile_flow(flow)
    assert order(plan) == ["first", "last"]
    assert deps(plan, "last") == {"first"}


def test_graph_follows_rebound_inputs(log: Log) -> None:
    def use(x: str) -> None:
        pass

    flow = graph("g", FunctionTask(use, name="user", rebind={"x": "made"}), probe("maker", log, provides="made"))
    assert order(compile_flow(flow)) == ["maker", "user"]


def test_nested_flows_are_ordered_as_whole_items(log: Log) -> None:
    flow = linear(
        "outer",
        probe("a", log),
        unordered("middle", probe("b", log), linear("inner", probe("c1", log), probe("c2", log))),
        probe("d", log),
    )
    plan = compile_flow(flow)
    assert_respects_deps(plan)
    assert deps(plan, "b") == {"a"}
    assert deps(plan, "c1") == {"a"}
    assert deps(plan, "c2") == {"c1"}
    assert deps(plan, "d") == {"b", "c2"}
    names = {s.flow.name: {n.task.name for n in plan.nodes if n.index in s.nodes} for s in plan.scopes}
    assert set(names) == {"outer", "middle", "inner"}
    assert names["inner"] == {"c1", "c2"}
    assert names["middle"] == {"b", "c1", "c2"}
    assert names["outer"] == {"a", "b", "c1", "c2", "d"}
    assert [plan.scopes[s].flow.name for s in plan.node("c1").scopes] == ["outer", "middle", "inner"]


def test_a_nested_flow_in_a_graph_is_ordered_by_its_data_and_links(log: Log) -> None:
    flow = graph(
        "g",
        linear("uses", probe("u1", log, requires=("x",)), probe("u2", log)),
        probe("makes", log, provides="x"),
        probe("last", log),
        links=[("uses", "last")],
    )
    plan = compile_flow(flow)
    assert deps(plan, "u1") == {"makes"}
    assert deps(plan, "last") == {"u2"}
    assert_respects_deps(plan)


def test_failure_only_tasks_are_kept_apart_in_declaration_order(log: Log) -> None:
    flow = linear(
        "f",
        probe("a", log),
        probe("notify1", log, on_failure_only=True),
        probe("b", log),
        probe("notify2", log, on_failure_only=True),
    )
    plan = compile_flow(flow)
    assert order(plan) == ["a", "b"]
    assert deps(plan, "b") == {"a"}
    assert [n.task.name for n in plan.failure_nodes] == ["notify1", "notify2"]
    assert plan.node("notify2").task.on_failure_only


def test_plan_node_of_an_unknown_task_is_a_key_error(log: Log) -> None:
    with pytest.raises(KeyError):
        compile_flow(linear("f", probe("a", log))).node("nope")


def test_walk_lists_every_task_depth_first(log: Log) -> None:
    flow = linear("f", probe("a", log), unordered("u", probe("b", log), linear("l", probe("c", log))), probe("d", log))
    assert [t.name for t in flow.walk()] == ["a", "b", "c", "d"]


def test_an_empty_flow_compiles_and_runs() -> None:
    plan = compile_flow(linear("empty"))
    assert plan.nodes == ()
    assert FlowEngine(linear("empty")).run().ok


# --- inputs -----------------------------------------------------------------------------------


def test_plan_requires_lists_what_the_caller_must_pass(log: Log) -> None:
    def f(a: int, b: int, c: int = 0) -> None:
        pass

    flow = linear(
        "f",
        probe("make", log, requires=("size",), provides="made"),
        FunctionTask(f, name="rebound", rebind={"a": "made", "b": "other"}),
        FunctionTask(f, name="injected", inject={"a": 1}, rebind={"b": "made"}),
        probe("notify", log, requires=("owner",), on_failure_only=True),
    )
    plan = compile_flow(flow)
    assert plan.requires == {"size", "other", "owner"}
    assert plan.provides == {"made"}


def test_a_failure_only_task_may_ask_for_the_flow_failures(log: Log) -> None:
    flow = linear("f", probe("a", log), probe("notify", log, requires=("flow_failures", "who"), on_failure_only=True))
    assert compile_flow(flow).requires == {"who"}


def test_missing_input_names_the_task_the_argument_and_what_is_missing(log: Log) -> None:
    def f(size: int) -> None:
        pass

    flow = linear("f", probe("a", log, requires=("volume",)), FunctionTask(f, name="b", rebind={"size": "gigabytes"}))
    problems = problems_of(flow, inputs=set())
    assert problems == (
        "task 'a' needs 'volume' (argument 'volume') and nothing provides it; "
        "pass it as a flow input or add a task that provides it",
        "task 'b' needs 'gigabytes' (argument 'size') and nothing provides it; "
        "pass it as a flow input or add a task that provides it",
    )
    compile_flow(flow, inputs={"volume", "gigabytes"})


def test_an_input_provided_too_late_names_the_provider(log: Log) -> None:
    flow = linear("f", probe("use", log, requires=("x",)), probe("make", log, provides="x"))
    no_inputs: tuple[set[str] | None, ...] = (None, set())
    for inputs in no_inputs:
        (problem,) = problems_of(flow, inputs)
        assert problem.startswith("task 'use' needs 'x' (argument 'x') before it is provided: make provide(s) it")
        assert "do(es) not run before 'use'" in problem


def test_an_input_provided_by_an_unordered_sibling_is_too_late(log: Log) -> None:
    flow = unordered("u", probe("use", log, requires=("x",)), probe("make1", log, provides="x"))
    (problem,) = problems_of(flow)
    assert "make1 provide(s) it but do(es) not run before 'use'" in problem


def test_a_value_passed_by_the_caller_may_also_be_provided_later(log: Log) -> None:
    flow = linear("f", probe("use", log, requires=("x",)), probe("make", log, provides="x"))
    assert compile_flow(flow, inputs={"x"}).requires == {"x"}


def test_running_without_a_required_input_names_the_input_and_its_tasks(log: Log) -> None:
    flow = linear(
        "f",
        probe("a", log, requires=("size", "zone")),
        probe("b", log, requires=("size",)),
        probe("notify", log, requires=("owner",), on_failure_only=True),
    )
    engine = FlowEngine(flow)
    with pytest.raises(InvalidFlow) as err:
        engine.run({"zone": "z"})
    assert err.value.flow == "f"
    assert err.value.problems == (
        "input 'owner' is missing; task(s) notify need it",
        "input 'size' is missing; task(s) a, b need it",
    )
    assert log.entries == []
    assert engine.run({"zone": "z", "size": 1, "owner": "o"}).ok


# --- structural problems ----------------------------------------------------------------------


def test_a_cycle_names_its_members(log: Log) -> None:
    flow = graph(
        "g",
        probe("a", log, requires=("z",), provides="x"),
        probe("b", log, requires=("x",), provides="y"),
        probe("c", log, requires=("y",), provides="z"),
        probe("free", log),
    )
    (problem,) = problems_of(flow)
    assert problem.startswith("flow 'g' has a cycle: ")
    members = problem.removeprefix("flow 'g' has a cycle: ").split(" -> ")
    assert members[0] == members[-1]
    assert sorted(members[:-1]) == ["a", "b", "c"]


def test_a_cycle_through_links(log: Log) -> None:
    flow = graph("g", probe("a", log, provides="x"), probe("b", log, requires=("x",)), links=[("b", "a")])
    (problem,) = problems_of(flow)
    assert problem in ("flow 'g' has a cycle: a -> b -> a", "flow 'g' has a cycle: b -> a -> b")


def test_a_task_that_requires_what_it_provides_is_not_a_cycle_but_needs_the_value(log: Log) -> None:
    flow = graph("g", probe("inc", log, requires=("n",), provides="n"))
    assert compile_flow(flow).requires == {"n"}


def test_duplicate_task_names_are_refused(log: Log) -> None:
    flow = linear(
        "f",
        probe("a", log),
        unordered("u", probe("a", log), probe("b", log)),
        probe("b", log, on_failure_only=True),
    )
    problems = problems_of(flow)
    assert "task name 'a' is used 2 times; task names must be unique" in problems
    assert "task name 'b' is used 2 times; task names must be unique" in problems


def test_links_to_unknown_items_are_refused_naming_the_known_ones(log: Log) -> None:
    flow = graph("g", probe("a", log), probe("b", log), links=[("a", "nope"), ("ghost", "b")])
    assert problems_of(flow) == (
        "flow 'g' links unknown item(s) 'nope'; its items are 'a', 'b'",
        "flow 'g' links unknown item(s) 'ghost'; its items are 'a', 'b'",
    )


def test_a_link_cannot_reach_into_a_nested_flow(log: Log) -> None:
    flow = graph("g", probe("a", log), linear("inner", probe("b", log)), links=[("a", "b")])
    (problem,) = problems_of(flow)
    assert "'b'" in problem
    assert "its items are 'a', 'inner'" in problem


def test_a_reschedule_target_no_task_requires_is_refused(log: Log) -> None:
    inner = linear(
        "inner",
        probe("create", log, requires=("size",)),
        retry=Retry(reschedule=Reschedule("hots", ["h1"])),
    )
    flow = linear("outer", probe("pick", log, requires=("hots",)), inner)
    (problem,) = problems_of(flow)
    assert problem == "flow 'inner' reschedules 'hots' but no task in it requires 'hots'"


def test_a_reschedule_target_used_through_rebind_is_fine(log: Log) -> None:
    def create(host: str) -> None:
        pass

    flow = linear(
        "f", FunctionTask(create, rebind={"host": "target"}), retry=Retry(reschedule=Reschedule("target", ["h2"]))
    )
    assert compile_flow(flow).requires == {"target"}


def test_all_problems_are_reported_at_once(log: Log) -> None:
    flow = linear(
        "f",
        probe("a", log),
        probe("a", log),
        graph("g", probe("b", log), links=[("b", "c")]),
        linear("r", probe("d", log), retry=Retry(reschedule=Reschedule("host", ["h"]))),
    )
    problems = problems_of(flow)
    assert len(problems) == 3
    assert any("links unknown item(s) 'c'" in p for p in problems)
    assert any("task name 'a' is used 2 times" in p for p in problems)
    assert any("reschedules 'host'" in p for p in problems)
    message = str(InvalidFlow("f", problems))
    assert message.startswith("flow 'f' cannot run:\n  - ")
    assert message.count("\n  - ") == 3


def test_all_missing_inputs_are_reported_at_once(log: Log) -> None:
    flow = linear(
        "f",
        probe("a", log, requires=("p", "q")),
        probe("b", log, requires=("r",)),
        probe("late", log, requires=("x",)),
        probe("maker", log, provides="x"),
    )
    problems = problems_of(flow, inputs=set())
    assert len(problems) == 4
    assert [p.split("'")[1] for p in problems] == ["a", "a", "b", "late"]


# --- fingerprints -------------------------------------------------------------------------------


def build(log: Log, **changes: object) -> Flow:
    """One flow, with one thing changed by keyword."""
    a = probe(str(changes.get("name", "a")), log, requires=("x",), provides=str(changes.get("provides", "y")))
    b = probe("b", log, requires=("y",) if "provides" not in changes else ())
    items: list[object] = [a, b]
    if changes.get("extra"):
        items.append(probe("c", log))
    if changes.get("notify"):
        items.append(probe("n", log, on_failure_only=True))
    inner = unordered("inner", probe("d", log), probe("e", log, on_failure_only=bool(changes.get("fo"))))
    if changes.get("pattern"):
        inner = linear("inner", probe("d", log), probe("e", log))
    links = [("b", "inner")] if changes.get("link") else []
    return graph(
        str(changes.get("flow", "f")),
        *items,  # type: ignore[arg-type]
        inner,
        links=links,
        version=int(str(changes.get("version", 1))),
    )


def test_fingerprint_is_stable_for_the_same_structure(log: Log) -> None:
    assert compile_flow(build(log)).fingerprint == compile_flow(build(Log())).fingerprint
    assert len(compile_flow(build(log)).fingerprint) == 16


@pytest.mark.parametrize(
    "change",
    [
        {"name": "a2"},
        {"provides": "y2"},
        {"extra": True},
        {"notify": True},
        {"fo": True},
        {"pattern": True},
        {"link": True},
        {"version": 2},
        {"flow": "g"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_fingerprint_changes_when_the_structure_changes(log: Log, change: dict[str, object]) -> None:
    assert compile_flow(build(log, **change)).fingerprint != compile_flow(build(log)).fingerprint


def test_fingerprint_does_not_depend_on_the_description_or_the_task_code(log: Log) -> None:
    plain = compile_flow(linear("f", probe("a", log, requires=("x",))))
    described = Flow("f", (FunctionTask(lambda x: x + 1, name="a"),), description="another text")
    assert compile_flow(described).fingerprint == plain.fingerprint
