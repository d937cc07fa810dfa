"""Helpers of the flow-layer unit tests: a thread-safe log, probe tasks, faults that can be fixed.

A *probe* is a :class:`~tenure.flow.FunctionTask` with whatever inputs and outputs a test asks for.
It logs every execute and revert (with the arguments it received) and fails when told to, so a test
can read back exactly what the engine did, in which order.
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tenure.flow import Failure, FunctionTask, MemoryCheckpoints, RunRecord, TaskRecord

__all__ = ["Boom", "Crash", "Fault", "Log", "Reloading", "SpyCheckpoints", "probe", "signature_of"]


class Boom(Exception):
    """The failure probes raise by default."""


class Crash(BaseException):
    """Stands in for a kill: not an Exception, so the engine lets it through and stops mid-run."""


@dataclass
class Fault:
    """A fault that stays until a test fixes it (``fault.active = False``); counts how often it fired."""

    active: bool = True
    #: Fire only this many times (None: until fixed).
    times: int | None = None
    error: Callable[[], BaseException] = lambda: Boom("fault")
    fired: int = 0

    def maybe_raise(self) -> None:
        if self.active and (self.times is None or self.fired < self.times):
            self.fired += 1
            raise self.error()


@dataclass
class Log:
    """What tasks did, in the order they did it (safe to use from the engine's worker threads)."""

    entries: list[tuple[str, str]] = field(default_factory=list)
    #: Arguments of every call, by (what, task name), in call order.
    calls: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, what: str, name: str, arguments: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            self.entries.append((what, name))
            self.calls.setdefault((what, name), []).append(dict(arguments or {}))

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
            self.calls.clear()

    def names(self, what: str) -> list[str]:
        """Task names of the entries of one kind (``execute``, ``revert``, ...), in order."""
        with self._lock:
            return [name for w, name in self.entries if w == what]

    def count(self, what: str, name: str) -> int:
        return self.names(what).count(name)

    def args(self, what: str, name: str, call: int = -1) -> dict[str, Any]:
        """The arguments of one call (the last one by default)."""
        with self._lock:
            return self.calls[(what, name)][call]


def signature_of(*names: str, var_keyword: bool = False) -> inspect.Signature:
    params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
    if var_keyword:
        params.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


def probe(
    name: str,
    log: Log,
    *,
    requires: Sequence[str] = (),
    provides: Sequence[str] | str = (),
    fails: Fault | bool = False,
    revert_fails: Fault | None = None,
    on_failure_only: bool = False,
    during: Callable[[], object] | None = None,
    context: bool = False,
) -> FunctionTask:
    """A task requiring ``requires`` and providing ``provides`` (each output is ``"<task>.<value>"``).

    ``fails``: True always fails with :class:`Boom`, a :class:`Fault` fails while it is active.
    ``during``: called inside execute, before it fails or returns (barriers, events, crashes).
    ``context``: also take the :class:`~tenure.flow.TaskContext` (logged with the arguments).
    """
    outputs = (provides,) if isinstance(provides, str) else tuple(provides)
    fault = Fault() if fails is True else (fails or None)

    def execute(**kwargs: Any) -> Any:
        log.add("execute", name, kwargs)
        if during is not None:
            during()
        if fault is not None:
            try:
                fault.maybe_raise()
            except BaseException:
                log.add("failed", name, kwargs)
                raise
        log.add("done", name, kwargs)
        produced = {p: f"{name}.{p}" for p in outputs}
        return produced[outputs[0]] if len(outputs) == 1 else (produced or None)

    def revert(**kwargs: Any) -> None:
        log.add("revert", name, kwargs)
        if revert_fails is not None:
            revert_fails.maybe_raise()

    execute.__signature__ = signature_of(*requires, *(["context"] if context else []))  # type: ignore[attr-defined]
    revert.__signature__ = signature_of(var_keyword=True)  # type: ignore[attr-defined]
    execute.__name__ = name
    return FunctionTask(execute, name=name, provides=outputs, revert=revert, on_failure_only=on_failure_only)


class SpyCheckpoints(MemoryCheckpoints):
    """Memory checkpoints that call ``on_save`` with every batch of task records, after saving it."""

    def __init__(self, on_save: Callable[[Sequence[TaskRecord]], None]) -> None:
        super().__init__()
        self.on_save = on_save

    def save(self, run_id: str, tasks: Sequence[TaskRecord], run: RunRecord | None = None) -> None:
        super().save(run_id, tasks, run)
        self.on_save(tasks)


def _reloaded(failure: Failure | None) -> Failure | None:
    return None if failure is None else Failure.from_json(failure.to_json())


class Reloading(MemoryCheckpoints):
    """Memory checkpoints that hand back what a store would after a restart: copies, and failures
    read back from JSON (no exception objects), as a fresh process resuming the run would see them."""

    def load_run(self, run_id: str) -> RunRecord | None:
        run = super().load_run(run_id)
        if run is None:
            return None
        tasks = {
            name: replace(
                t,
                result=copy.deepcopy(t.result),
                failure=_reloaded(t.failure),
                revert_failure=_reloaded(t.revert_failure),
            )
            for name, t in run.tasks.items()
        }
        return replace(
            run,
            inputs=copy.deepcopy(dict(run.inputs)),
            overrides=copy.deepcopy(dict(run.overrides)),
            failure=_reloaded(run.failure),
            tasks=tasks,
        )
