"""Steps: the code a kind's work states run, registered per (kind, state).

>>> from datetime import timedelta
>>> from tenure.machine import Event, Kind, Role, State
>>> job = Kind("job", initial="todo",
...     states=[State("todo", 1, Role.WORK, on_failure="give_up"), State("done", 2, Role.FINAL),
...             State("failed", 3, Role.FINAL)],
...     events=[Event("finish", "todo", "done"), Event("give_up", "todo", "failed")])
>>> steps = Steps()
>>> @steps.on(job, "todo")
... def do_it(resource, ctx):
...     return Advance("finish", {"answer": 42})
>>> steps.due()
[('job', 'todo')]
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tenure.engine.outcome import Advance, Outcome
from tenure.errors import InvalidSteps
from tenure.machine import Kind, Role
from tenure.store.claims import Claim
from tenure.store.inbox import token_hash
from tenure.store.model import Resource
from tenure.store.protocol import StepStore

__all__ = ["Step", "StepContext", "Steps"]


class StepContext:
    """What a running step may know and use besides the resource."""

    __slots__ = ("_stay", "_token", "attempt", "claim", "kind", "lost", "now", "store", "worker")

    def __init__(
        self,
        *,
        worker: str,
        claim: Claim,
        attempt: int,
        store: StepStore,
        kind: Kind,
        now: Callable[[], datetime],
    ) -> None:
        #: The name of the worker running the step.
        self.worker = worker
        self.claim = claim
        #: 1 for the first run of the step in this state, 2 for the first retry, ...
        self.attempt = attempt
        #: What the step may do with the store: read, record facts, answer its own wait.
        self.store = store
        #: The resource's kind.
        self.kind = kind
        self.now = now
        #: Set when the worker could not renew the claim: the step's outcome will be refused.
        self.lost = threading.Event()
        self._token: str | None = None
        self._stay: int | None = None

    @property
    def token(self) -> str:
        """A fresh secret for this attempt: hand it to an external party that will call back.

        The first read opens a provisional wait under the token, so that a callback arriving
        before the step has even returned its :class:`~tenure.engine.outcome.Wait` is recorded, not
        refused; it is applied once the resource is in the wait state.
        """
        if self._token is None:
            token = secrets.token_urlsafe(24)
            self.store.open_wait(self.claim.resource, token_hash(token))
            self._token = token
        return self._token

    @property
    def token_issued(self) -> bool:
        return self._token is not None

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt of the step in this stay in the state (and after a crash)."""
        if self._stay is None:
            self._stay = self.store.stay_version(self.claim.resource)
        return f"{self.claim.resource.id}@{self._stay}"


class Step(Protocol):
    """A work state's code: look at the resource, do the work, say what happens next."""

    def __call__(self, resource: Resource, ctx: StepContext, /) -> Outcome: ...


@dataclass(frozen=True, slots=True)
class Registered:
    kind: Kind
    state: str
    step: Step
    #: Exception types treated as retryable / fatal (fatal wins when both match).
    retry_on: tuple[type[BaseException], ...]
    fatal_on: tuple[type[BaseException], ...]

    @property
    def name(self) -> str:
        return getattr(self.step, "__name__", type(self.step).__name__)


class Steps:
    """The steps a worker can run, one per (kind, version of the kind, state).

    Most steps run in work states. A rest state may have a step as well, when leaving it takes work
    (telling a data plane to suspend, say): it runs only while a desired state asks the resource to
    leave, in place of the plain event the engine would otherwise fire towards it.
    """

    def __init__(self, entries: Iterable[Registered] = ()) -> None:
        self._by_key: dict[tuple[str, int, str], Registered] = {}
        for e in entries:
            self._put(e)

    def add(
        self,
        kind: Kind,
        state: str,
        step: Step,
        *,
        retry_on: Iterable[type[BaseException]] = (Exception,),
        fatal_on: Iterable[type[BaseException]] = (),
    ) -> None:
        """Run ``step`` for resources of ``kind`` (this version of it) in ``state``.

        ``state`` is a work state (with ``on_failure``, fired when the step fails for good), or a
        rest state whose leaving takes work (a failure there gives the wish up; the resource stays).

        Exceptions the step raises are retried when they match ``retry_on`` (everything, by default)
        and not ``fatal_on``; :class:`~tenure.engine.outcome.Fatal` is always fatal.
        """
        self._put(Registered(kind, state, step, tuple(retry_on), tuple(fatal_on)))

    def on(
        self,
        kind: Kind,
        state: str,
        *,
        retry_on: Iterable[type[BaseException]] = (Exception,),
        fatal_on: Iterable[type[BaseException]] = (),
    ) -> Callable[[Callable[[Resource, StepContext], Outcome]], Callable[[Resource, StepContext], Outcome]]:
        """Decorator form of :meth:`add`."""

        def register(fn: Callable[[Resource, StepContext], Outcome]) -> Callable[[Resource, StepContext], Outcome]:
            self.add(kind, state, fn, retry_on=retry_on, fatal_on=fatal_on)
            return fn

        return register

    def _put(self, entry: Registered) -> None:
        problems = _problems(entry)
        key = (entry.kind.name, entry.kind.version, entry.state)
        existing = self._by_key.get(key)
        if existing is not None and existing.step is not entry.step:
            problems.append(f"{_label(entry.kind)}/{entry.state} already runs step {existing.name}")
        if problems:
            raise InvalidSteps(problems)
        self._by_key[key] = entry

    def __or__(self, other: Steps) -> Steps:
        """Both sets of steps (refusing two different steps for one state)."""
        return Steps([*self._by_key.values(), *other._by_key.values()])

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, kind: str, state: str, *, version: int) -> Registered | None:
        """The step for resources of version ``version`` of ``kind`` in ``state`` (None: there is none)."""
        return self._by_key.get((kind, version, state))

    def of(self, resource: Resource) -> Registered | None:
        """The step for ``resource`` where it is now, on the version of its kind it lives on."""
        return self._by_key.get((resource.kind, resource.kind_version, resource.state))

    def due(self) -> list[tuple[str, str]]:
        """The (kind, state) pairs these steps cover, whatever the version."""
        return sorted({(name, state) for name, _, state in self._by_key})

    def due_by_version(self) -> list[tuple[str, str, int]]:
        """The (kind, state, version) triples these steps cover: what a worker may claim."""
        return sorted((name, state, version) for name, version, state in self._by_key)

    @property
    def all_kinds(self) -> tuple[Kind, ...]:
        """Every kind these steps serve, each version of each."""
        return tuple({id(e.kind): e.kind for e in self._by_key.values()}.values())


def _label(kind: Kind) -> str:
    return kind.name if kind.version == 1 else f"{kind.name}@{kind.version}"


def _problems(entry: Registered) -> list[str]:
    kind, name = entry.kind, entry.state
    if not kind.has_state(name):
        known = ", ".join(s.name for s in kind.states)
        return [f"kind {kind.name!r} has no state {name!r} (states: {known})"]
    state = kind.state(name)
    problems = []
    if state.role not in (Role.WORK, Role.REST):
        problems.append(f"{kind.name}/{name} is a {state.role.value} state; steps run only in work and rest states")
    elif state.role is Role.WORK and state.on_failure is None:
        problems.append(
            f"{kind.name}/{name} declares no on_failure event; a step needs one to fire when it fails for good"
        )
    if not callable(entry.step):
        problems.append(f"the step for {kind.name}/{name} is not callable: {entry.step!r}")
    return problems


def advance_to(event: str, **data: Any) -> Step:
    """A step that always fires ``event`` (with ``data``): for work states with nothing to do."""

    def step(resource: Resource, ctx: StepContext) -> Outcome:
        return Advance(event, data)

    step.__name__ = f"advance_to_{event}"
    return step
