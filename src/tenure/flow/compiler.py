"""Compiling a flow into a plan: one graph of task nodes, checked before anything runs.

Compilation resolves the patterns into dependencies between tasks, finds the values the caller
must supply, and refuses — all problems at once, in one :class:`~tenure.errors.InvalidFlow` —
duplicate task names, cycles (naming their members), inputs nothing can provide in time (naming the
task, the argument and what could provide it), and reschedule targets no task uses.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tenure.errors import InvalidFlow
from tenure.flow.patterns import Flow, Pattern
from tenure.flow.task import FLOW_FAILURES, Task

__all__ = ["Node", "Plan", "Scope", "compile_flow", "compiled"]


@dataclass(slots=True)
class Node:
    index: int
    task: Task
    #: Enclosing flows, innermost last (indices into ``Plan.scopes``).
    scopes: tuple[int, ...]
    deps: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Scope:
    index: int
    flow: Flow
    parent: int | None
    nodes: frozenset[int]


@dataclass(frozen=True, slots=True)
class Plan:
    flow: Flow
    #: Task nodes in an order that respects every dependency.
    nodes: tuple[Node, ...]
    #: Tasks that run only when the flow fails, after its revert, in declaration order.
    failure_nodes: tuple[Node, ...]
    scopes: tuple[Scope, ...]
    #: Values the caller must supply when running the flow.
    requires: frozenset[str]
    #: Values the flow's tasks provide.
    provides: frozenset[str]
    #: Changes whenever the flow's structure changes; stored runs remember it.
    fingerprint: str
    #: Every node (failure-only ones included) by its index.
    by_index: Mapping[int, Node]

    def node(self, name: str) -> Node:
        for n in self.by_index.values():
            if n.task.name == name:
                return n
        raise KeyError(name)


@dataclass(slots=True)
class _Part:
    sources: list[int]
    sinks: list[int]
    requires: set[str]
    provides: set[str]


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.failure_nodes: list[Node] = []
        self.scopes: list[Scope] = []
        self.problems: list[str] = []
        self.by_index: dict[int, Node] = {}

    def build(self, item: Task | Flow, chain: tuple[int, ...], parent: int | None) -> _Part:
        if isinstance(item, Task):
            node = Node(len(self.nodes) + len(self.failure_nodes), item, chain)
            if item.on_failure_only:
                self.failure_nodes.append(node)
                return _Part([], [], set(), set())
            self.nodes.append(node)
            self.by_index[node.index] = node
            return _Part([node.index], [node.index], set(item.requires), set(item.provides_names))
        scope_index = len(self.scopes)
        self.scopes.append(Scope(scope_index, item, parent, frozenset()))
        before = len(self.nodes) + len(self.failure_nodes)
        parts = [self.build(child, (*chain, scope_index), scope_index) for child in item.items]
        if item.pattern is Pattern.LINEAR:
            part = self._linear(parts)
        elif item.pattern is Pattern.UNORDERED:
            part = _Part(
                [s for p in parts for s in p.sources],
                [s for p in parts for s in p.sinks],
                set().union(*(p.requires for p in parts)),
                set().union(*(p.provides for p in parts)),
            )
        else:
            part = self._graph(item, parts)
        inside = frozenset(n.index for n in (*self.nodes, *self.failure_nodes) if n.index >= before)
        self.scopes[scope_index] = Scope(scope_index, item, parent, inside)
        return part

    def _link(self, before: _Part, after: _Part) -> None:
        for source in after.sources:
            deps = self.by_index[source].deps
            deps.extend(s for s in before.sinks if s not in deps)

    def _linear(self, parts: list[_Part]) -> _Part:
        real = [p for p in parts if p.sources]
        for earlier, later in itertools.pairwise(real):
            self._link(earlier, later)
        return _Part(
            real[0].sources if real else [],
            real[-1].sinks if real else [],
            set().union(*(p.requires for p in parts)),
            set().union(*(p.provides for p in parts)),
        )

    def _graph(self, flow: Flow, parts: list[_Part]) -> _Part:
        names = [c.name for c in flow.items]
        edges: set[tuple[int, int]] = set()
        for a, pa in enumerate(parts):
            for b, pb in enumerate(parts):
                if a != b and pa.provides & pb.requires:
                    edges.add((a, b))
        for first, then in flow.links:
            missing = [n for n in (first, then) if n not in names]
            if missing:
                self.problems.append(
                    f"flow {flow.name!r} links unknown item(s) {', '.join(map(repr, missing))}; "
                    f"its items are {', '.join(map(repr, names))}"
                )
                continue
            edges.add((names.index(first), names.index(then)))
        cycle = _find_cycle(len(parts), edges)
        if cycle:
            self.problems.append(f"flow {flow.name!r} has a cycle: {' -> '.join(names[i] for i in cycle)}")
            return _Part([], [], set(), set())
        # An item without tasks to run (an empty flow, a failure-only task) still orders its neighbours.
        for empty in (i for i, p in enumerate(parts) if not p.sources):
            into = {a for a, b in edges if b == empty}
            out = {b for a, b in edges if a == empty}
            edges |= {(a, b) for a in into for b in out if a != b}
        for a, b in edges:
            if parts[a].sinks and parts[b].sources:
                self._link(parts[a], parts[b])
        has_in = {b for _, b in edges}
        has_out = {a for a, _ in edges}
        return _Part(
            [s for i, p in enumerate(parts) if i not in has_in for s in p.sources],
            [s for i, p in enumerate(parts) if i not in has_out for s in p.sinks],
            set().union(*(p.requires for p in parts)),
            set().union(*(p.provides for p in parts)),
        )


def _find_cycle(count: int, edges: set[tuple[int, int]]) -> list[int]:
    """One cycle among ``count`` items (as a closed path), or [] if there is none."""
    succ: dict[int, list[int]] = {i: [] for i in range(count)}
    for a, b in edges:
        succ[a].append(b)
    color = dict.fromkeys(range(count), 0)
    stack: list[int] = []

    def visit(i: int) -> list[int]:
        color[i] = 1
        stack.append(i)
        for j in succ[i]:
            if color[j] == 1:
                return [*stack[stack.index(j) :], j]
            if color[j] == 0 and (found := visit(j)):
                return found
        stack.pop()
        color[i] = 2
        return []

    for i in range(count):
        if color[i] == 0 and (found := visit(i)):
            return found
    return []


def _topological(nodes: list[Node]) -> list[Node]:
    by_index = {n.index: n for n in nodes}
    waiting = {n.index: len(n.deps) for n in nodes}
    dependents: dict[int, list[int]] = {n.index: [] for n in nodes}
    for n in nodes:
        for d in n.deps:
            dependents[d].append(n.index)
    ready = deque(n.index for n in nodes if not n.deps)
    order: list[Node] = []
    while ready:
        i = ready.popleft()
        order.append(by_index[i])
        for j in dependents[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    return order


def _is_ancestor(candidates: set[int], node: Node, by_index: dict[int, Node]) -> bool:
    """Whether any of ``candidates`` runs before ``node`` (walks back along the dependencies)."""
    seen: set[int] = set()
    queue = deque(node.deps)
    while queue:
        i = queue.popleft()
        if i in candidates:
            return True
        if i not in seen:
            seen.add(i)
            queue.extend(by_index[i].deps)
    return False


def _fingerprint(item: Task | Flow) -> str:
    def shape(x: Task | Flow) -> str:
        if isinstance(x, Task):
            return f"T({x.name}|{','.join(x.requires)}|{','.join(x.provides_names)}|{int(x.on_failure_only)})"
        inner = ";".join(shape(c) for c in x.items)
        return f"F({x.name}|{x.pattern.value}|v{x.version}|{x.links}|{inner})"

    return hashlib.sha256(shape(item).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=256)
def compiled(flow: Flow) -> Plan:
    """:func:`compile_flow` of ``flow``, once per flow object (flows are immutable once declared)."""
    return compile_flow(flow)


def compile_flow(flow: Flow, inputs: Iterable[str] | None = None) -> Plan:
    """Check ``flow`` and turn it into a :class:`Plan`.

    With ``inputs`` (the names the caller will supply), also refuse a flow whose tasks need a value
    that neither the inputs nor an earlier task provide.
    """
    builder = _Builder()
    builder.build(flow, (), None)
    problems = builder.problems
    all_tasks = [*builder.nodes, *builder.failure_nodes]
    seen: dict[str, int] = {}
    for n in all_tasks:
        seen[n.task.name] = seen.get(n.task.name, 0) + 1
    problems += [
        f"task name {name!r} is used {count} times; task names must be unique"
        for name, count in seen.items()
        if count > 1
    ]
    flow_names: dict[str, int] = {}
    for scope in builder.scopes:
        flow_names[scope.flow.name] = flow_names.get(scope.flow.name, 0) + 1
    # Retry counts and resumed retries are kept by flow name.
    problems += [
        f"flow name {name!r} is used {count} times; flow names must be unique within a flow"
        for name, count in flow_names.items()
        if count > 1
    ]
    providers: dict[str, set[int]] = {}
    for n in builder.nodes:
        for value in n.task.provides_names:
            providers.setdefault(value, set()).add(n.index)
    order = _topological(builder.nodes)
    if not problems and len(order) != len(builder.nodes):
        problems.append(f"flow {flow.name!r} has a cycle between its tasks")
    given = set(inputs or ())
    needed_from_caller: set[str] = set()
    by_index = {n.index: n for n in builder.nodes}
    if not problems:
        for n in builder.nodes:
            for arg, bound in zip(n.task.arguments, _bound(n.task), strict=True):
                if bound is None:
                    continue
                value = bound
                sources = providers.get(value, set()) - {n.index}
                if sources and _is_ancestor(sources, n, by_index):
                    continue
                if value in given or (inputs is None and not sources):
                    needed_from_caller.add(value)
                    continue
                if sources:
                    names = ", ".join(sorted(by_index[i].task.name for i in sources))
                    problems.append(
                        f"task {n.task.name!r} needs {value!r} (argument {arg!r}) before it is provided: "
                        f"{names} provide(s) it but do(es) not run before {n.task.name!r}; order them or link them"
                    )
                else:
                    problems.append(
                        f"task {n.task.name!r} needs {value!r} (argument {arg!r}) and nothing provides it; "
                        "pass it as a flow input or add a task that provides it"
                    )
        for n in builder.failure_nodes:
            # The engine gives failure-only tasks the flow's failures; the caller does not pass them.
            needed_from_caller.update(v for v in n.task.requires if v not in providers and v != FLOW_FAILURES)
    for scope in builder.scopes:
        retry = scope.flow.retry
        if retry is not None and retry.reschedule is not None:
            param = retry.reschedule.parameter
            users = [by_index[i].task.name for i in scope.nodes if i in by_index and param in by_index[i].task.requires]
            if not users:
                problems.append(f"flow {scope.flow.name!r} reschedules {param!r} but no task in it requires {param!r}")
    if problems:
        raise InvalidFlow(flow.name, problems)
    return Plan(
        flow=flow,
        nodes=tuple(order),
        failure_nodes=tuple(builder.failure_nodes),
        scopes=tuple(builder.scopes),
        requires=frozenset(needed_from_caller),
        provides=frozenset(providers),
        fingerprint=_fingerprint(flow),
        by_index=MappingProxyType({n.index: n for n in all_tasks}),
    )


def _bound(task: Task) -> list[str | None]:
    """For each required argument, the flow value it reads (None when injected)."""
    return [None if a in task.inject else task.rebind.get(a, a) for a in task.arguments]
