"""The flow layer: tasks that execute and revert, arranged in patterns, checkpointed and resumable."""

from __future__ import annotations

from tenure.flow.checkpoint import Checkpoints, MemoryCheckpoints, RunRecord, RunState, TaskRecord, TaskState
from tenure.flow.compiler import Plan, compile_flow
from tenure.flow.engine import FlowEngine, FlowOutcome
from tenure.flow.patterns import Flow, Pattern, Reschedule, Retry, graph, linear, unordered
from tenure.flow.task import Failure, FunctionTask, Task, TaskContext, task

__all__ = [
    "Checkpoints",
    "Failure",
    "Flow",
    "FlowEngine",
    "FlowOutcome",
    "FunctionTask",
    "MemoryCheckpoints",
    "Pattern",
    "Plan",
    "Reschedule",
    "Retry",
    "RunRecord",
    "RunState",
    "Task",
    "TaskContext",
    "TaskRecord",
    "TaskState",
    "compile_flow",
    "graph",
    "linear",
    "task",
    "unordered",
]
