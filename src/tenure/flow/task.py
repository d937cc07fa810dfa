"""Tasks: units of work that consume named inputs, provide named outputs, and know how to revert.

A task's inputs are the parameters of its ``execute`` method (or function), bound by name to values
in the flow: flow inputs and outputs of earlier tasks. ``rebind`` maps a parameter to a differently
named value; ``inject`` supplies a constant. A parameter named ``context`` is not an input: it
receives the :class:`TaskContext` (attempt number, idempotency key, whether the run resumed).

>>> class Reserve(Task):
...     provides = ("reservation",)
...     def execute(self, size: int) -> str:
...         return f"r-{size}"
...     def revert(self, size: int, *, result: object, failure: Failure | None, **_: object) -> None:
...         pass
>>> t = Reserve()
>>> t.name, t.requires, t.provides
('Reserve', ('size',), ('reservation',))
>>> t.outputs("r-10")
{'reservation': 'r-10'}
"""

from __future__ import annotations

import abc
import inspect
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tenure.errors import InvalidFlow
from tenure.rules import printable

__all__ = ["Failure", "FunctionTask", "Task", "TaskContext", "task"]

CONTEXT_PARAMETER = "context"
#: The value a failure-only task (and every revert) receives: the flow's failures by task name.
FLOW_FAILURES = "flow_failures"


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a running task may know about its own run."""

    flow_id: str
    task: str
    #: 1 on the first try; a task that was running when its process died runs again with attempt 2.
    attempt: int
    #: Stable for one task of one flow run: send it to external systems so that a re-run is harmless.
    idempotency_key: str
    #: True when this attempt follows one whose outcome was lost (crash, kill).
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class Failure:
    """A captured exception: its type, message and traceback, and the exception while in process."""

    exc_type: str
    message: str
    traceback: str = ""
    exception: BaseException | None = field(default=None, compare=False, repr=False)
    #: Qualified names of the exception's classes, its own first, so that matching by type also
    #: works on a failure read back from a checkpoint (after a restart) and sees base classes.
    lineage: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def capture(cls, exc: BaseException) -> Failure:
        kind = type(exc)
        return cls(
            exc_type=_qualified(kind),
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            exception=exc,
            lineage=tuple(_qualified(k) for k in kind.__mro__ if k is not object),
        )

    def matches(self, *types: type[BaseException]) -> bool:
        """Whether the failure is one of ``types`` (by class when in process, else by qualified name)."""
        if self.exception is not None:
            return isinstance(self.exception, types)
        names = self.lineage or (self.exc_type,)
        return any(_qualified(t) in names for t in types)

    def to_json(self) -> dict[str, str]:
        return {
            "exc_type": self.exc_type,
            "message": printable(self.message),
            "traceback": printable(self.traceback),
            "lineage": ",".join(self.lineage),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Failure:
        lineage = tuple(name for name in str(data.get("lineage") or "").split(",") if name)
        return cls(str(data["exc_type"]), str(data["message"]), str(data.get("traceback", "")), lineage=lineage)

    def __str__(self) -> str:
        return f"{self.exc_type.rsplit('.', 1)[-1]}: {self.message}"


def _qualified(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _parameters(fn: Callable[..., Any]) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """(required inputs, optional inputs, wants context) of ``fn``."""
    params = list(inspect.signature(fn).parameters.values())
    required: list[str] = []
    optional: list[str] = []
    wants_context = False
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name == CONTEXT_PARAMETER:
            wants_context = True
        elif p.default is p.empty:
            required.append(p.name)
        else:
            optional.append(p.name)
    return tuple(required), tuple(optional), wants_context


class Task(abc.ABC):
    """Base class of tasks: override :meth:`execute` and, if it has effects to undo, :meth:`revert`.

    ``execute`` returns the task's outputs: a mapping with exactly the names in ``provides``, or a
    bare value when the task provides one name (or ``None`` when it provides nothing).
    ``revert`` receives the same inputs as ``execute`` plus, as keywords, ``result`` (what this
    task returned, or None if it failed), ``failure`` (its own :class:`Failure`, if it was the one
    that failed) and ``flow_failures`` (every failure of the flow, by task name).
    """

    provides: ClassVar[Sequence[str]] = ()
    #: Only runs when the flow has failed, after the revert (e.g. "change status and notify"). It may
    #: take ``flow_failures`` and any value produced during the run, also by tasks reverted since.
    on_failure_only: bool = False

    def __init__(
        self,
        name: str | None = None,
        *,
        provides: Sequence[str] | str | None = None,
        rebind: Mapping[str, str] | None = None,
        inject: Mapping[str, Any] | None = None,
        on_failure_only: bool | None = None,
    ) -> None:
        self.name = name or type(self).__name__
        if on_failure_only is not None:
            self.on_failure_only = on_failure_only
        if provides is not None:
            self._provides: tuple[str, ...] = (provides,) if isinstance(provides, str) else tuple(provides)
        else:
            self._provides = tuple(type(self).provides)
        self.rebind: dict[str, str] = dict(rebind or {})
        self.inject: dict[str, Any] = dict(inject or {})
        required, optional, wants_context = self._signature()
        unknown = [a for a in (*self.rebind, *self.inject) if a not in required and a not in optional]
        if unknown:
            raise InvalidFlow(
                self.name, [f"task {self.name!r} has no parameter {a!r} to rebind or inject" for a in unknown]
            )
        self.arguments: tuple[str, ...] = required
        self.optional_arguments: tuple[str, ...] = optional
        self.wants_context = wants_context

    def _signature(self) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
        return _parameters(self.execute)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # --- the declared interface ----------------------------------------------------------------

    @property
    def requires(self) -> tuple[str, ...]:
        """The flow values this task needs (after rebinding; injected arguments excluded)."""
        return tuple(self.rebind.get(a, a) for a in self.arguments if a not in self.inject)

    @property
    def optional(self) -> tuple[str, ...]:
        """Flow values this task uses when present."""
        return tuple(self.rebind.get(a, a) for a in self.optional_arguments if a not in self.inject)

    @property
    def provides_names(self) -> tuple[str, ...]:
        return self._provides

    def bind(self, values: Mapping[str, Any], context: TaskContext | None) -> dict[str, Any]:
        """The keyword arguments of one call, taken from the flow's ``values``."""
        kwargs: dict[str, Any] = {}
        for arg in self.arguments:
            kwargs[arg] = self.inject[arg] if arg in self.inject else values[self.rebind.get(arg, arg)]
        for arg in self.optional_arguments:
            if arg in self.inject:
                kwargs[arg] = self.inject[arg]
            elif (source := self.rebind.get(arg, arg)) in values:
                kwargs[arg] = values[source]
        if self.wants_context:
            kwargs[CONTEXT_PARAMETER] = context
        return kwargs

    def outputs(self, returned: Any) -> dict[str, Any]:
        """Check what ``execute`` returned against ``provides`` and name it."""
        names = self._provides
        if not names:
            if returned is not None and not (isinstance(returned, Mapping) and not returned):
                raise InvalidFlow(self.name, [f"task {self.name!r} provides nothing but returned {returned!r}"])
            return {}
        if len(names) == 1 and not (isinstance(returned, Mapping) and set(returned) == set(names)):
            return {names[0]: returned}
        if not isinstance(returned, Mapping) or set(returned) != set(names):
            got = sorted(returned) if isinstance(returned, Mapping) else type(returned).__name__
            raise InvalidFlow(
                self.name, [f"task {self.name!r} must return a mapping with keys {sorted(names)}, got {got}"]
            )
        return dict(returned)

    # --- what subclasses implement -------------------------------------------------------------

    @abc.abstractmethod
    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Do the work; return the outputs named in ``provides``."""

    def revert(self, *args: Any, **kwargs: Any) -> None:  # noqa: B027
        """Undo what :meth:`execute` did (default: nothing to undo).

        Declare only the parameters you need: the engine passes each of the task's inputs, and
        ``result``, ``failure``, ``flow_failures`` and ``context``, only where the signature names them
        (or takes ``**kwargs``).
        """


class FunctionTask(Task):
    """A task made from plain functions (sync or async)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        provides: Sequence[str] | str | None = None,
        revert: Callable[..., Any] | None = None,
        rebind: Mapping[str, str] | None = None,
        inject: Mapping[str, Any] | None = None,
        on_failure_only: bool = False,
    ) -> None:
        self._fn = fn
        self._revert_fn = revert
        super().__init__(
            name or fn.__name__, provides=provides or (), rebind=rebind, inject=inject, on_failure_only=on_failure_only
        )

    def _signature(self) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
        return _parameters(self._fn)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def revert(self, *args: Any, **kwargs: Any) -> None:
        if self._revert_fn is None:
            return None
        return self._revert_fn(*args, **accepted_by(self._revert_fn, kwargs))  # type: ignore[no-any-return]


def accepted_by(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``kwargs`` that ``fn`` can take (all of it if ``fn`` has ``**kwargs``)."""
    parameters = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in parameters}


def task(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    provides: Sequence[str] | str | None = None,
    revert: Callable[..., Any] | None = None,
    on_failure_only: bool = False,
) -> Any:
    """Make a :class:`FunctionTask` from a function; usable bare or with arguments.

    >>> @task(provides="doubled")
    ... def double(n: int) -> int:
    ...     return n * 2
    >>> double.requires, double.provides_names
    (('n',), ('doubled',))
    """

    def wrap(f: Callable[..., Any]) -> FunctionTask:
        return FunctionTask(f, name=name, provides=provides, revert=revert, on_failure_only=on_failure_only)

    return wrap(fn) if fn is not None else wrap
