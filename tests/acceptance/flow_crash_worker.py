"""The process that ``test_flow_crashes.py`` kills: it runs (or resumes) one persisted flow run.

Usage::

    python -m tests.acceptance.flow_crash_worker URL RUN_ID LOG --launch N [--fail] [--kill-at POINT]

The flow is the api flow of seed 004 on a real store: ``validate`` the request, ``reserve`` quota
(the task's idempotency key is the reservation id; reverted by rolling it back), ``create_entry``
(an ``image`` resource, created idempotently; reverted by deleting it), ``commit_quota`` (reverted
by releasing the usage), ``cast`` (the entry starts saving; reverted by resetting it), ``finish``
(the entry becomes active, or the task fails when the run was started with ``--fail``), and
``notify``, which runs only when the flow failed.

Everything a task does to the outside world is written to the side-effect log ``LOG`` the moment it
happens, one line each, appended with one ``write(2)``, so a SIGKILL never loses a line that was
written:

``N started TASK attempt=A resumed=R`` / ``N executed TASK attempt=A resumed=R``
    an execute began / its effect is done (the task returns right after);
``N revert-started TASK`` / ``N reverted TASK``
    the same for a revert;
``N checkpoint LABEL,LABEL...``
    a checkpoint transaction committed (``task=state`` and ``run=state`` labels);
``N paused POINT``
    the worker stopped at the kill point it was given and waits to be killed;
``N outcome STATE KEYS``
    the run ended (KEYS: the names of its values, comma-separated).

Kill points (``--kill-at``): ``after:LABEL`` pauses right after the checkpoint transaction that
wrote ``LABEL`` committed (a task boundary); ``mid:TASK.execute.before`` / ``.after`` and
``mid:TASK.revert.before`` / ``.after`` pause in the middle of a task, before or after its effect.
The worker also logs ``N point POINT`` for every point it passes, so a run without a kill point
lists every place it could have been killed.

The test launches this module either in a cold interpreter (``python -m``, from the project's root)
or through a fork server that has it imported already (:func:`forked`); both run :func:`main` in a
process of their own that shares nothing with the test but the database and the log file.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from tenure import open_store
from tenure.flow import FlowEngine, FunctionTask, RunRecord, TaskContext, TaskRecord, linear
from tenure.flow.durable import StoreCheckpoints
from tenure.flow.patterns import Flow
from tenure.kinds.image import image
from tenure.kinds.volume import ReservationState, StoreQuotaLedger
from tenure.store.protocol import EngineStore

__all__ = [
    "FAILURE_TASKS",
    "FLOW_NAME",
    "RESOURCE",
    "SIZE",
    "TASKS",
    "Boom",
    "boundary_points",
    "forked",
    "main",
    "middle_points",
]

FLOW_NAME = "volume-api"
#: The forward tasks, in order.
TASKS = ("validate", "reserve", "create_entry", "commit_quota", "cast", "finish")
#: Tasks that run only when the flow failed.
FAILURE_TASKS = ("notify",)
#: The quota resource the flow reserves, and how much of it.
RESOURCE = "gigabytes"
SIZE = 10
#: Exit codes of :func:`main`.
EXIT_DONE = 0
EXIT_UNFINISHED = 3
EXIT_ERROR = 4


class Boom(Exception):
    """What ``finish`` raises in a run that was asked to fail."""


def boundary_points(fail: bool) -> list[str]:
    """Every checkpoint label a run writes: ``after:`` each of them is a task boundary to kill at.

    Labels that the engine writes in one transaction name the same boundary; listing every label
    keeps the list true whichever way the engine groups its writes.
    """
    points = ["after:run=created"]
    if not fail:
        for name in TASKS:
            points += [f"after:{name}=running", f"after:{name}=success"]
        return [*points, "after:run=success"]
    for name in TASKS[:-1]:
        points += [f"after:{name}=running", f"after:{name}=success"]
    points += [f"after:{TASKS[-1]}=running", f"after:{TASKS[-1]}=failure", "after:run=reverting"]
    points += [f"after:{name}=reverted" for name in reversed(TASKS)]
    points += [f"after:{name}={state}" for name in FAILURE_TASKS for state in ("running", "success")]
    return [*points, "after:run=reverted"]


def middle_points(fail: bool) -> list[str]:
    """The points inside tasks (before and after each one's effect) that a run passes, in order."""
    points: list[str] = []
    for name in TASKS:
        points.append(f"mid:{name}.execute.before")
        if not (fail and name == TASKS[-1]):  # the failing task raises before its effect
            points.append(f"mid:{name}.execute.after")
    if fail:
        for name in reversed(TASKS):
            points += [f"mid:{name}.revert.before", f"mid:{name}.revert.after"]
        for name in FAILURE_TASKS:
            points += [f"mid:{name}.execute.before", f"mid:{name}.execute.after"]
    return points


class SideEffects:
    """The durable log of one run (shared by all its launches) and this launch's kill point."""

    def __init__(self, path: str, launch: int, kill_at: str | None) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.launch = launch
        self.kill_at = kill_at

    def write(self, line: str) -> None:
        # One write(2) per line on an O_APPEND descriptor: a kill cannot leave half a line, and what
        # was written is in the kernel's hands, which a SIGKILL of this process does not touch. (Only
        # a crash of the machine could lose it, and that would need an fsync per line, which the
        # test does not simulate and could not afford.)
        os.write(self.fd, f"{self.launch} {line}\n".encode())

    def point(self, name: str) -> None:
        """A place where this worker may be killed: pause here (forever) if it is the chosen one."""
        self.write(f"point {name}")
        if name == self.kill_at:
            self.write(f"paused {name}")
            while True:  # the test sends SIGKILL now
                time.sleep(60)


class LoggedCheckpoints(StoreCheckpoints):
    """Store checkpoints that log every committed transaction and offer a kill point after it."""

    def __init__(self, store: EngineStore, effects: SideEffects) -> None:
        super().__init__(store)
        self.effects = effects

    def create_run(self, run: RunRecord) -> None:
        super().create_run(run)
        self._committed(["run=created"])

    def save(self, run_id: str, tasks: Sequence[TaskRecord], run: RunRecord | None = None) -> None:
        super().save(run_id, tasks, run)
        labels = [f"{t.task}={t.state.value}" for t in tasks]
        if run is not None:
            labels.append(f"run={run.state.value}")
        self._committed(labels)

    def _committed(self, labels: list[str]) -> None:
        self.effects.write(f"checkpoint {','.join(labels) or '-'}")
        for label in labels:
            self.effects.point(f"after:{label}")


class ApiFlow:
    """The tasks of the flow, bound to a store and a side-effect log."""

    def __init__(self, store: EngineStore, effects: SideEffects) -> None:
        self.store = store
        self.ledger = StoreQuotaLedger(self.store)
        self.effects = effects

    def flow(self) -> Flow:
        return linear(
            FLOW_NAME,
            self._task("validate", self.validate, "request", self.unvalidate),
            self._task("reserve", self.reserve, "reservation", self.rollback),
            self._task("create_entry", self.create_entry, "entry_id", self.delete_entry),
            self._task("commit_quota", self.commit_quota, "committed", self.release),
            self._task("cast", self.cast, "host", self.uncast),
            self._task("finish", self.finish, "status", self.unfinish),
            self._task("notify", self.notify, None, None, on_failure_only=True),
        )

    def _task(
        self,
        name: str,
        execute: Callable[..., Any],
        provides: str | None,
        revert: Callable[..., Any] | None,
        *,
        on_failure_only: bool = False,
    ) -> FunctionTask:
        effects = self.effects

        @functools.wraps(execute)  # the engine reads the inputs from the wrapped signature
        def logged_execute(**kwargs: Any) -> Any:
            context: TaskContext = kwargs["context"]
            attempt = f"attempt={context.attempt} resumed={context.resumed}"
            effects.write(f"started {name} {attempt}")
            effects.point(f"mid:{name}.execute.before")
            result = execute(**kwargs)
            effects.write(f"executed {name} {attempt}")
            effects.point(f"mid:{name}.execute.after")
            return result

        def logged_revert(**kwargs: Any) -> None:
            effects.write(f"revert-started {name}")
            effects.point(f"mid:{name}.revert.before")
            if revert is not None:
                revert(**kwargs)
            effects.write(f"reverted {name}")
            effects.point(f"mid:{name}.revert.after")

        return FunctionTask(
            logged_execute, name=name, provides=provides, revert=logged_revert, on_failure_only=on_failure_only
        )

    # --- the tasks ---------------------------------------------------------------------------------

    def validate(self, name: str, project: str, size: int, context: TaskContext) -> dict[str, Any]:
        if not name.strip() or int(size) <= 0:
            raise ValueError(f"bad request: name={name!r} size={size!r}")
        return {"name": name.strip(), "project": project, "size": int(size)}

    def unvalidate(self, **_: Any) -> None:
        """Nothing to undo."""

    def reserve(self, request: dict[str, Any], context: TaskContext) -> str:
        return self.ledger.reserve(context.idempotency_key, request["project"], RESOURCE, request["size"]).id

    def rollback(self, result: str | None, **_: Any) -> None:
        if result is None:
            return
        if self.ledger.reservation(result).state is ReservationState.RELEASED:
            # commit_quota's revert already gave the quota back (it reverts first).
            return
        self.ledger.rollback_reservation(result)

    def create_entry(self, request: dict[str, Any], context: TaskContext) -> str:
        entry = self.store.create(
            "image", {"name": request["name"]}, idempotency_key=context.idempotency_key, actor="flow"
        )
        return entry.id

    def delete_entry(self, result: str | None, **_: Any) -> None:
        if result is None:
            return
        entry = self.store.get(result)
        if entry.state != "deleted":
            self.store.fire(entry, "delete", actor="flow-revert")

    def commit_quota(self, reservation: str, context: TaskContext) -> bool:
        self.ledger.commit_reservation(reservation)
        return True

    def release(self, reservation: str, **_: Any) -> None:
        self.ledger.release_reservation(reservation)

    def cast(self, entry_id: str, context: TaskContext) -> str:
        entry = self.store.get(entry_id)
        if entry.state == "queued":
            self.store.fire(entry, "upload", actor="flow")
        return "host-1"

    def uncast(self, entry_id: str, **_: Any) -> None:
        entry = self.store.get(entry_id)
        if entry.state == "saving":
            self.store.fire(entry, "reset", actor="flow-revert")

    def finish(self, entry_id: str, fail: bool, context: TaskContext) -> str:
        if fail:
            raise Boom("finish was asked to fail")
        entry = self.store.get(entry_id)
        if entry.state == "saving":
            entry = self.store.fire(entry, "activate", actor="flow")
        return entry.state

    def unfinish(self, **_: Any) -> None:
        """It failed before doing anything (and never reverts after succeeding: it is last)."""

    def notify(self, name: str, context: TaskContext, flow_failures: Any = None) -> None:
        # The notification itself is the side-effect log line the wrapper writes.
        return None


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flow_crash_worker", description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("run_id")
    parser.add_argument("log")
    parser.add_argument("--launch", type=int, required=True)
    parser.add_argument("--fail", action="store_true", help="the run's finish task fails (new runs only)")
    parser.add_argument("--kill-at", default=None, help="the point to pause at, waiting to be killed")
    parser.add_argument("--project", default=None, help="the quota's project (default: the run id)")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    """Run or resume the run; 0 when it reached a final state."""
    args = parse(argv)
    effects = SideEffects(args.log, args.launch, args.kill_at)
    try:
        store = open_store(args.url, [image])
        try:
            engine = FlowEngine(ApiFlow(store, effects).flow(), checkpoints=LoggedCheckpoints(store, effects))
            try:
                if engine.checkpoints.load_run(args.run_id) is None:
                    inputs = {
                        "name": f"volume {args.run_id}",
                        "project": args.project or args.run_id,
                        "size": SIZE,
                        "fail": args.fail,
                    }
                    outcome = engine.run(inputs, run_id=args.run_id)
                else:
                    outcome = engine.resume(args.run_id)
            finally:
                engine.close()
        finally:
            store.close()
    except Exception as exc:
        with open(f"{args.log}.err", "a", encoding="utf-8") as err:
            err.write(f"--- launch {args.launch}\n{traceback.format_exc()}")
        effects.write(f"error {type(exc).__name__}")
        return EXIT_ERROR
    effects.write(f"outcome {outcome.state.value} {','.join(sorted(outcome.values)) or '-'}")
    if outcome.failures:
        effects.write(f"failures {json.dumps({k: str(v) for k, v in sorted(outcome.failures.items())})}")
    return EXIT_DONE if outcome.state.finished else EXIT_UNFINISHED


def forked(argv: Sequence[str]) -> None:
    """Entry point in a process forked by a fork server: :func:`main`'s result as the exit code."""
    code = main(argv)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
