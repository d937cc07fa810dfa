"""Running flows: forward in dependency order, reverting on failure, resuming from checkpoints.

One thread schedules; tasks whose dependencies are all met run inline when they are alone and on a
thread pool when several are ready at once. Each task transition is checkpointed before the next
task starts, so a run killed at any point resumes from what was committed: finished tasks are not
run again, a task that was running runs again (told so through its context: at-least-once), and a
run that was reverting goes on reverting.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

from tenure.errors import FlowActionNotAllowed, FlowChanged, FlowFailed, FlowRunNotFound, InvalidFlow
from tenure.flow.checkpoint import Checkpoints, MemoryCheckpoints, RunRecord, RunState, TaskRecord, TaskState
from tenure.flow.compiler import Node, Plan, Scope, compiled
from tenure.flow.patterns import Flow
from tenure.flow.task import CONTEXT_PARAMETER, FLOW_FAILURES, Failure, Task, TaskContext, accepted_by

__all__ = ["FlowEngine", "FlowOutcome"]


@dataclass(frozen=True, slots=True)
class FlowOutcome:
    run_id: str
    state: RunState
    #: The flow's inputs and every output of a task that succeeded.
    values: Mapping[str, Any]
    #: Failures by task name (the task that failed, reverts that failed, failure-only tasks that failed).
    failures: Mapping[str, Failure]

    @property
    def ok(self) -> bool:
        return self.state is RunState.SUCCESS

    def raise_for_failure(self, flow: str = "") -> FlowOutcome:
        """Raise :class:`~tenure.errors.FlowFailed` unless the run succeeded; returns self otherwise."""
        if not self.ok:
            raise FlowFailed(flow, self.run_id, self.state.value, {k: str(v) for k, v in self.failures.items()})
        return self


def _result_for_revert(task: Task, outputs: Any) -> Any:
    names = task.provides_names
    if not names or not isinstance(outputs, Mapping):
        return None if not names else outputs
    return outputs.get(names[0]) if len(names) == 1 else dict(outputs)


def _call(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    result = fn(**kwargs)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


class FlowEngine:
    """Runs one flow definition, as many times as asked, checkpointing into ``checkpoints``.

    >>> from tenure.flow import linear, task
    >>> @task(provides="total")
    ... def add(a: int, b: int) -> int:
    ...     return a + b
    >>> FlowEngine(linear("sum", add)).run({"a": 1, "b": 2}).values["total"]
    3
    """

    def __init__(
        self,
        flow: Flow,
        *,
        checkpoints: Checkpoints | None = None,
        max_workers: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.flow = flow
        self.plan: Plan = compiled(flow)
        self.checkpoints: Checkpoints = checkpoints if checkpoints is not None else MemoryCheckpoints()
        self.max_workers = max_workers
        self.sleep = sleep
        self._pool: ThreadPoolExecutor | None = None

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix=f"flow-{self.flow.name}")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # --- entry points --------------------------------------------------------------------------

    def run(
        self, inputs: Mapping[str, Any] | None = None, *, run_id: str | None = None, resource_id: str | None = None
    ) -> FlowOutcome:
        """Start a new run with ``inputs`` and carry it to its end."""
        given = dict(inputs or {})
        missing = sorted(self.plan.requires - given.keys())
        if missing:
            users = {
                m: sorted(n.task.name for n in (*self.plan.nodes, *self.plan.failure_nodes) if m in n.task.requires)
                for m in missing
            }
            raise InvalidFlow(
                self.flow.name,
                [f"input {m!r} is missing; task(s) {', '.join(users[m])} need it" for m in missing],
            )
        record = RunRecord(
            id=run_id or secrets.token_hex(16),
            flow=self.flow.name,
            version=self.flow.version,
            fingerprint=self.plan.fingerprint,
            state=RunState.RUNNING,
            inputs=given,
            resource_id=resource_id,
        )
        self.checkpoints.create_run(record)
        return _Run(self, record).carry_on()

    def resume(self, run_id: str) -> FlowOutcome:
        """Carry on a run from its checkpoints (a finished run just reports its outcome)."""
        record = self._load(run_id)
        return _Run(self, record, resumed=True).carry_on()

    def retry_revert(self, run_id: str) -> FlowOutcome:
        """Try again to revert a run whose revert failed."""
        record = self._load(run_id)
        if record.state is not RunState.REVERT_FAILED:
            raise FlowActionNotAllowed(
                run_id, state=record.state.value, action="retry its revert", required=RunState.REVERT_FAILED.value
            )
        record = replace(record, state=RunState.REVERTING)
        return _Run(self, record, resumed=True).carry_on()

    def mark_resolved(self, run_id: str) -> FlowOutcome:
        """Declare a failed revert handled by an operator."""
        record = self._load(run_id)
        if record.state is not RunState.REVERT_FAILED:
            raise FlowActionNotAllowed(
                run_id, state=record.state.value, action="be resolved", required=RunState.REVERT_FAILED.value
            )
        record = replace(record, state=RunState.RESOLVED)
        self.checkpoints.save(run_id, [], record)
        return _Run(self, record).outcome()

    def _load(self, run_id: str) -> RunRecord:
        record = self.checkpoints.load_run(run_id)
        if record is None:
            raise FlowRunNotFound(run_id)
        if (record.flow, record.version, record.fingerprint) != (
            self.flow.name,
            self.flow.version,
            self.plan.fingerprint,
        ):
            raise FlowChanged(
                run_id,
                stored=f"{record.flow} v{record.version} ({record.fingerprint})",
                current=f"{self.flow.name} v{self.flow.version} ({self.plan.fingerprint})",
            )
        return record


class _Run:
    """One run being carried forward or backward by the scheduling thread."""

    def __init__(self, engine: FlowEngine, record: RunRecord, *, resumed: bool = False) -> None:
        self.engine = engine
        self.plan = engine.plan
        self.record = record
        self.resumed = resumed
        self.tasks: dict[str, TaskRecord] = dict(record.tasks)
        self.seq = max((t.seq for t in self.tasks.values()), default=0)
        self.values: dict[str, Any] = {**record.inputs, **record.overrides}
        self.failures: dict[str, Failure] = {name: t.failure for name, t in self.tasks.items() if t.failure is not None}
        self.failures.update(
            (f"{name}.revert", t.revert_failure) for name, t in self.tasks.items() if t.revert_failure is not None
        )
        #: Tasks whose revert failed during this carry-on: not tried again until retry_revert.
        self.revert_failed: set[str] = set()
        self.retries: dict[str, int] = dict(record.retries)
        self.overrides: dict[str, Any] = dict(record.overrides)
        #: A subflow retry decided but not finished (its revert may have been cut short by a kill).
        self.pending_retry: dict[str, Any] | None = (
            dict(record.pending_retry) if record.pending_retry is not None else None
        )
        for node in self.plan.nodes:
            rec = self.tasks.get(node.task.name)
            if rec is not None and rec.state is TaskState.SUCCESS:
                self.values.update(rec.result or {})
        self.deferred: list[TaskRecord] = []

    # --- bookkeeping ---------------------------------------------------------------------------

    def _save(
        self, records: list[TaskRecord], run_state: RunState | None = None, failure: Failure | None = None
    ) -> None:
        for r in records:
            self.tasks[r.task] = r
        batch = [*self.deferred, *records]
        self.deferred = []
        run = None
        if run_state is not None:
            self.record = replace(
                self.record,
                state=run_state,
                overrides=dict(self.overrides),
                retries=dict(self.retries),
                pending_retry=None if self.pending_retry is None else dict(self.pending_retry),
                failure=failure if failure is not None else self.record.failure,
            )
            run = self.record
        if batch or run is not None:
            self.engine.checkpoints.save(self.record.id, batch, run)

    def _round(self, node: Node) -> int:
        return sum(self.retries.get(self.plan.scopes[s].flow.name, 0) for s in node.scopes)

    def _context(self, node: Node, attempt: int) -> TaskContext:
        return TaskContext(
            flow_id=self.record.id,
            task=node.task.name,
            attempt=attempt,
            idempotency_key=f"{self.record.id}/{node.task.name}/{self._round(node)}",
            resumed=attempt > 1,
        )

    def _known_values(self) -> dict[str, Any]:
        """The current values, plus what tasks reverted since had produced (their reverts and the
        failure-only tasks get the values those tasks saw, also when read back from checkpoints)."""
        produced: dict[str, Any] = {}
        for rec in sorted(self.tasks.values(), key=lambda r: r.seq):
            if isinstance(rec.result, Mapping):
                produced.update(rec.result)
        return {**produced, **self.values}

    def outcome(self) -> FlowOutcome:
        return FlowOutcome(self.record.id, self.record.state, dict(self.values), dict(self.failures))

    # --- the run -------------------------------------------------------------------------------

    def carry_on(self) -> FlowOutcome:
        state = self.record.state
        if state is RunState.RUNNING:
            failure = self._forward()
            if failure is None:
                self._save([], RunState.SUCCESS)
                return self.outcome()
            self._save([], RunState.REVERTING, failure)
            state = RunState.REVERTING
        if state is RunState.REVERTING:
            self._revert_everything()
        return self.outcome()

    def _forward(self) -> Failure | None:
        nodes = self.plan.nodes
        dependents: dict[int, list[Node]] = {n.index: [] for n in nodes}
        for n in nodes:
            for d in n.deps:
                dependents[d].append(n)
        if self.pending_retry is not None:
            scope = next(s for s in self.plan.scopes if s.flow.name == self.pending_retry["scope"])
            cause = self.record.failure or Failure("unknown", "a retried subflow failed before a restart")
            if not self._finish_retry(scope, cause):
                return cause
        while True:
            # A failure committed before a restart is finished work too: it is not run again, but
            # handled now as it would have been then (retry its subflow, or revert the run).
            failure = self._committed_failure() or self._forward_pass(nodes, dependents)
            if failure is None:
                return None
            node, fail = failure
            if not self._retry_scope(node, fail):
                return fail

    def _committed_failure(self) -> tuple[Node, Failure] | None:
        failed = [
            (rec.seq, n.index, n, rec.failure)
            for n in self.plan.nodes
            if (rec := self.tasks.get(n.task.name)) is not None
            and rec.state is TaskState.FAILURE
            and rec.failure is not None
        ]
        if not failed:
            return None
        _, _, node, failure = min(failed, key=lambda f: (f[0], f[1]))
        return node, failure

    def _forward_pass(self, nodes: tuple[Node, ...], dependents: dict[int, list[Node]]) -> tuple[Node, Failure] | None:
        done = {n.index for n in nodes if self._state(n) is TaskState.SUCCESS}
        remaining = {n.index: sum(d not in done for d in n.deps) for n in nodes if n.index not in done}
        ready = deque(n for n in nodes if n.index in remaining and remaining[n.index] == 0)
        running: dict[Future[tuple[bool, Any]], Node] = {}
        first_failure: tuple[Node, Failure] | None = None
        while ready or running:
            inline_next = first_failure is None and not running and len(ready) == 1
            if self.deferred and not inline_next:
                # A finished task's record rides with the next start only when that start comes
                # right away; with siblings still running it is committed now.
                self._save([])
            if first_failure is None and ready:
                if inline_next:
                    node = ready.popleft()
                    finished = [(node, self._run_inline(node))]
                else:
                    while ready:
                        node = ready.popleft()
                        running[self._submit(node)] = node
                    finished = []
            else:
                finished = []
            if running and not finished:
                complete, _ = wait(running, return_when=FIRST_COMPLETED)
                finished = [(running.pop(f), f.result()) for f in complete]
            if not finished and not running:
                break
            for node, (ok, value) in finished:
                if ok:
                    self._succeeded(node, value)
                    for dependent in dependents[node.index]:
                        remaining[dependent.index] -= 1
                        if remaining[dependent.index] == 0:
                            ready.append(dependent)
                else:
                    self._failed(node, value)
                    if first_failure is None:
                        first_failure = (node, value)
        # On success the last deferred records are written with the run's end (one commit fewer).
        return first_failure

    def _state(self, node: Node) -> TaskState:
        rec = self.tasks.get(node.task.name)
        return TaskState.PENDING if rec is None else rec.state

    def _start(self, node: Node) -> tuple[int, dict[str, Any]]:
        previous = self.tasks.get(node.task.name)
        attempt = (previous.attempt if previous and previous.state is TaskState.RUNNING else 0) + 1
        kwargs = node.task.bind(self.values, self._context(node, attempt))
        return attempt, kwargs

    def _running(self, node: Node, attempt: int, kwargs: Mapping[str, Any]) -> TaskRecord:
        # The flow values the task was given, so that its revert gets exactly those, whatever a
        # reschedule or a later task has put under the same names since.
        task = node.task
        given = {
            a: kwargs[a] for a in (*task.arguments, *task.optional_arguments) if a in kwargs and a not in task.inject
        }
        return TaskRecord(task.name, TaskState.RUNNING, attempt, inputs=given)

    def _run_inline(self, node: Node) -> tuple[bool, Any]:
        attempt, kwargs = self._start(node)
        self._save([self._running(node, attempt, kwargs)])
        return _execute(node.task, kwargs, self.engine.checkpoints.storable)

    def _submit(self, node: Node) -> Future[tuple[bool, Any]]:
        attempt, kwargs = self._start(node)
        self._save([self._running(node, attempt, kwargs)])
        return self.engine.pool().submit(_execute, node.task, kwargs, self.engine.checkpoints.storable)

    def _succeeded(self, node: Node, outputs: dict[str, Any]) -> None:
        self.seq += 1
        started = self.tasks[node.task.name]
        attempt = started.attempt
        self.values.update(outputs)
        record = TaskRecord(node.task.name, TaskState.SUCCESS, attempt, self.seq, outputs, inputs=started.inputs)
        self.tasks[node.task.name] = record
        # Written together with the next transition when that is an inline start or the run's end:
        # one transaction per task in a chain, and nothing runs in between (see _forward_pass).
        self.deferred.append(record)

    def _failed(self, node: Node, failure: Failure) -> None:
        self.seq += 1
        started = self.tasks[node.task.name]
        self.failures[node.task.name] = failure
        self._save(
            [
                TaskRecord(
                    node.task.name, TaskState.FAILURE, started.attempt, self.seq, None, failure, inputs=started.inputs
                )
            ]
        )

    # --- retries of subflows -------------------------------------------------------------------

    def _retry_scope(self, node: Node, failure: Failure) -> bool:
        for scope_index in reversed(node.scopes):
            scope = self.plan.scopes[scope_index]
            retry = scope.flow.retry
            if retry is None or not retry.applies_to(failure):
                continue
            if any(self._state(n) is TaskState.FAILURE and n.index not in scope.nodes for n in self.plan.nodes):
                # Another task outside this subflow failed too: retrying the subflow cannot mend that.
                continue
            used = self.retries.get(scope.flow.name, 0)
            if used >= retry.times:
                continue
            value: Any = None
            marker: dict[str, Any] = {"scope": scope.flow.name, "round": used + 1}
            if retry.reschedule is not None:
                found, value = retry.reschedule.next_value(used + 1, failure, self._known_values())
                if not found:
                    continue
                marker |= {"parameter": retry.reschedule.parameter, "value": value}
            # The decision is committed before the revert starts, so that a kill half-way through
            # the revert resumes into finishing this retry rather than into a half-reverted subflow.
            self.pending_retry = marker
            self._save([], RunState.RUNNING, failure)
            return self._finish_retry(scope, failure)
        return False

    def _finish_retry(self, scope: Scope, failure: Failure) -> bool:
        marker = self.pending_retry
        assert marker is not None
        if not self._revert(sorted(scope.nodes), failure):
            # What the failed round did is not undone: running it again could only add to it.
            self.pending_retry = None
            return False
        self.retries[scope.flow.name] = int(marker["round"])
        if "parameter" in marker:
            self.overrides[marker["parameter"]] = marker["value"]
            self.values[marker["parameter"]] = marker["value"]
        for i in scope.nodes:
            self.failures.pop(self._name(i), None)
        self.pending_retry = None
        self._save(
            [TaskRecord(self._name(i), TaskState.PENDING) for i in scope.nodes if self._name(i) in self.tasks],
            RunState.RUNNING,
        )
        retry = scope.flow.retry
        if retry is not None:
            self.engine.sleep(retry.backoff(int(marker["round"])))
        return True

    def _name(self, index: int) -> str:
        return self.plan.by_index[index].task.name

    # --- reverting -----------------------------------------------------------------------------

    def _revert(self, indices: list[int], cause: Failure) -> bool:
        """Revert the given nodes that ran, latest first; False if a revert failed."""
        by_index = self.plan.by_index
        ran = [
            (self.tasks[by_index[i].task.name], by_index[i])
            for i in indices
            if by_index[i].task.name in self.tasks
            and self.tasks[by_index[i].task.name].state
            in (TaskState.SUCCESS, TaskState.FAILURE, TaskState.RUNNING, TaskState.REVERT_FAILURE)
            and not by_index[i].task.on_failure_only
            and by_index[i].task.name not in self.revert_failed
        ]
        # Latest first; a task still marked running (its outcome lost in a crash) started after every
        # task it depends on finished, so it goes before all of them.
        ran.sort(key=lambda pair: (pair[0].state is TaskState.RUNNING, pair[0].seq), reverse=True)
        all_ok = True
        for rec, node in ran:
            task = node.task
            try:
                context = self._context(node, rec.attempt or 1)
                if rec.inputs is not None:
                    kwargs = {**rec.inputs, **task.inject}
                else:
                    kwargs = task.bind(self._known_values(), context)
                offered = {
                    **kwargs,
                    CONTEXT_PARAMETER: context,
                    "result": _result_for_revert(task, rec.result),
                    "failure": rec.failure,
                    FLOW_FAILURES: dict(self.failures) or {node.task.name: cause},
                }
                _call(task.revert, accepted_by(task.revert, offered))
            except Exception as exc:
                all_ok = False
                broken = Failure.capture(exc)
                self.failures[f"{task.name}.revert"] = broken
                self.revert_failed.add(task.name)
                self._save([replace(rec, state=TaskState.REVERT_FAILURE, revert_failure=broken)])
                continue
            for value in task.provides_names:
                if value not in self.record.inputs:
                    self.values.pop(value, None)
            self.failures.pop(f"{task.name}.revert", None)
            self._save([replace(rec, state=TaskState.REVERTED, revert_failure=None)])
        return all_ok

    def _revert_everything(self) -> None:
        cause = self.record.failure or next(iter(self.failures.values()), Failure("unknown", "unknown failure"))
        self._revert([n.index for n in self.plan.nodes], cause)
        ok = not self.revert_failed
        for node in self.plan.failure_nodes:
            rec = self.tasks.get(node.task.name)
            if rec is not None and rec.state in (TaskState.SUCCESS, TaskState.FAILURE):
                continue
            attempt, kwargs = self._start_failure_task(node)
            if kwargs is None:
                continue
            self._save([TaskRecord(node.task.name, TaskState.RUNNING, attempt)])
            done, value = _execute(node.task, kwargs, self.engine.checkpoints.storable)
            self.seq += 1
            if done:
                self._save([TaskRecord(node.task.name, TaskState.SUCCESS, attempt, self.seq, value)])
            else:
                self.failures[node.task.name] = value
                self._save([TaskRecord(node.task.name, TaskState.FAILURE, attempt, self.seq, None, value)])
        self._save([], RunState.REVERTED if ok else RunState.REVERT_FAILED)

    def _start_failure_task(self, node: Node) -> tuple[int, dict[str, Any] | None]:
        values = {**self._known_values(), FLOW_FAILURES: dict(self.failures)}
        missing = [v for v in node.task.requires if v not in values]
        if missing:
            self.failures[node.task.name] = Failure(
                "tenure.errors.InvalidFlow", f"not run: input(s) {', '.join(missing)} never became available"
            )
            return 0, None
        previous = self.tasks.get(node.task.name)
        attempt = (previous.attempt if previous else 0) + 1
        return attempt, node.task.bind(values, self._context(node, attempt))


def _execute(task: Task, kwargs: Mapping[str, Any], storable: Callable[[str, Any], None]) -> tuple[bool, Any]:
    """Run one task; (True, outputs) or (False, failure). Never raises for the task's own errors.

    Outputs the checkpoints cannot keep are the task's failure, not the run's crash.
    """
    try:
        outputs = task.outputs(_call(task.execute, kwargs))
        storable(f"the result of task {task.name!r}", outputs)
        return True, outputs
    except Exception as exc:
        return False, Failure.capture(exc)
