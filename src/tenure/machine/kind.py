"""A kind: the one declared state machine for one type of resource.

The kind is pure data plus pre-computed lookup tables; it knows nothing about storage. Deciding
whether an event is allowed is a single dictionary lookup.

>>> from tenure.machine import Event, Kind, Role, State
>>> lamp = Kind(
...     "lamp",
...     states=[State("off", 0), State("on", 1), State("broken", 9, Role.FINAL)],
...     events=[Event("switch_on", "off", "on"), Event("switch_off", "on", "off"),
...             Event("break", ["off", "on"], "broken")],
...     initial="off",
... )
>>> lamp.allows("off", "switch_on"), lamp.allows("off", "switch_off")
(True, False)
>>> lamp.target("on", "break")
'broken'
>>> lamp.allowed_events("on")
('switch_off', 'break')
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NoReturn

import pydantic

from tenure.errors import InvalidKind, InvalidSpec, TransitionNotAllowed, UnknownEvent, UnknownState
from tenure.machine.parts import Event, Role, State, Subject, Transition
from tenure.machine.sharing import Sharing, sharing_problems
from tenure.machine.validation import expand_sources, find_problems

__all__ = ["REDACTED", "Kind"]

#: What a secret data value is shown as (see ``Kind.secret_data``).
REDACTED = "<redacted>"


class Kind:
    """One declared state machine, validated when constructed (raises :class:`InvalidKind`).

    ``spec_model`` is an optional pydantic model that every resource's spec must satisfy.
    ``version`` is bumped by the author whenever the graph changes meaning. ``step_data`` names the
    keys of a resource's ``data`` that only the kind's steps write — what was provisioned, what a flow
    produced, what an external party answered: events fired from outside the engine (a client's event,
    a create) may not set them, so no client can make the engine believe something it did not do.
    ``sharing`` says how several parties use one resource and when it may be torn down
    (:class:`~tenure.machine.sharing.Sharing`). ``engine_events`` names the events only the engine
    fires (a step's outcome, a callback's roll-up, a deadline, the move towards a desired state): a
    client firing one is refused, so that no client skips the work the step would have done.
    ``answered_by`` says, from a resource, which client alone may answer its waits (the data plane a
    transfer was assigned, say): a callback from any other caller is refused even with a valid token.
    ``secret_data`` names keys of ``data`` that the engine needs and nobody else may read (a callback
    token a data plane holds, say): they are shown as :data:`REDACTED` wherever a resource is shown.
    """

    __slots__ = (
        "_by_code",
        "_edges",
        "_events",
        "_states",
        "answered_by",
        "description",
        "engine_events",
        "events",
        "initial",
        "name",
        "secret_data",
        "sharing",
        "spec_model",
        "states",
        "step_data",
        "version",
    )

    def __init__(
        self,
        name: str,
        *,
        states: Sequence[State],
        events: Sequence[Event],
        initial: str,
        spec_model: type[pydantic.BaseModel] | None = None,
        version: int = 1,
        description: str = "",
        step_data: Iterable[str] = (),
        sharing: Sharing | None = None,
        engine_events: Iterable[str] = (),
        answered_by: Callable[[Subject], str | None] | None = None,
        secret_data: Iterable[str] = (),
    ) -> None:
        self.name = name
        #: Events only the engine fires (see the class docstring).
        self.engine_events: frozenset[str] = frozenset(engine_events)
        #: Who alone may answer a resource's waits (see the class docstring); None: any token holder.
        self.answered_by = answered_by
        #: Keys of ``data`` shown as REDACTED outside the engine (see the class docstring).
        self.secret_data: frozenset[str] = frozenset(secret_data)
        #: Keys of ``data`` that only the kind's steps write (see the class docstring).
        self.step_data: frozenset[str] = frozenset(step_data)
        self.states: tuple[State, ...] = tuple(states)
        self.events: tuple[Event, ...] = tuple(events)
        self.spec_model = spec_model
        self.version = version
        self.description = description
        edges = self._compile_edges()
        problems = find_problems(name, self.states, self.events, initial, edges)
        if sharing is not None:
            problems += sharing_problems(sharing, self.states, self.events, edges)
        declared = {e.name for e in self.events}
        problems += [f"engine event {e!r} is not an event of the kind" for e in sorted(self.engine_events - declared)]
        #: How several parties share a resource of this kind (None: uses are recorded, nothing waits).
        self.sharing = sharing
        if problems:
            raise InvalidKind(name, problems)
        self._states: Mapping[str, State] = MappingProxyType({s.name: s for s in self.states})
        self._by_code: Mapping[int, State] = MappingProxyType({s.code: s for s in self.states})
        self._events: tuple[str, ...] = tuple(dict.fromkeys(e.name for e in self.events))
        transitions = self._transitions()
        # Plain dicts (private, never handed out) are the cheapest lookups Python has: the hot path
        # of every check and every fire goes through them.
        self._edges: dict[str, dict[str, Transition]] = {s.name: transitions.get(s.name, {}) for s in self.states}
        self.initial: State = self._states[initial]

    # --- compilation ---------------------------------------------------------------------------

    def _compile_edges(self) -> dict[str, dict[str, str]]:
        """state -> event -> target, best effort (validation reports what does not fit)."""
        edges: dict[str, dict[str, str]] = {}
        for e in self.events:
            for src in expand_sources(e, self.states):
                edges.setdefault(src, {}).setdefault(e.name, e.target)
        return edges

    def _transitions(self) -> dict[str, dict[str, Transition]]:
        out: dict[str, dict[str, Transition]] = {}
        for e in self.events:
            for src in expand_sources(e, self.states):
                out.setdefault(src, {}).setdefault(e.name, Transition(e.name, src, e.target, e.guard))
        return out

    # --- lookups -------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Kind({self.name!r}, states={len(self.states)}, events={len(self._events)})"

    @property
    def event_names(self) -> tuple[str, ...]:
        """Every event name, in declaration order."""
        return self._events

    def state(self, name: str) -> State:
        """The state called ``name`` (raises :class:`UnknownState`)."""
        try:
            return self._states[name]
        except KeyError:
            raise UnknownState(self.name, name, list(self._states)) from None

    def state_by_code(self, code: int) -> State:
        """The state whose stable code is ``code`` (raises :class:`UnknownState`)."""
        try:
            return self._by_code[code]
        except KeyError:
            raise UnknownState(self.name, str(code), [f"{s.code}" for s in self.states]) from None

    def has_state(self, name: str) -> bool:
        return name in self._states

    def has_event(self, name: str) -> bool:
        return name in self._events

    def allows(self, state: str, event: str) -> bool:
        """Whether the graph has an edge for ``event`` out of ``state`` (guards not evaluated)."""
        try:
            return event in self._edges[state]
        except KeyError:
            return False

    def target(self, state: str, event: str) -> str:
        """The state ``event`` leads to from ``state`` (raises if not allowed; guards not evaluated)."""
        try:
            return self._edges[state][event].target
        except KeyError:
            self._refuse(state, event)

    def allowed_events(self, state: str) -> tuple[str, ...]:
        """The events that leave ``state``, in declaration order."""
        return tuple(self._edges.get(state, ()))

    def transitions_from(self, state: str) -> Mapping[str, Transition]:
        """event -> transition for every edge out of ``state``."""
        return MappingProxyType(self._edges.get(state, {}))

    def sources(self, event: str) -> tuple[str, ...]:
        """Every state ``event`` may leave from."""
        if event not in self._events:
            raise UnknownEvent(self.name, event, self._events)
        return tuple(src for src, by_event in self._edges.items() if event in by_event)

    def transition(
        self, state: str, event: str, subject: Subject | None = None, *, resource_id: str | None = None
    ) -> Transition:
        """The edge ``event`` takes out of ``state``, with its guard evaluated against ``subject``.

        Raises :class:`TransitionNotAllowed` (naming the state, the event and the allowed events) when
        there is no such edge or its guard refuses, and :class:`UnknownState`/:class:`UnknownEvent`
        for names the kind does not declare.
        """
        try:
            t = self._edges[state][event]
        except KeyError:
            self._refuse(state, event, resource_id=resource_id)
        if t.guard is not None and not t.permits(subject):
            guard_name = getattr(t.guard, "__name__", "guard")
            self._refuse(state, event, resource_id=resource_id, reason=f"guard {guard_name} refused it")
        return t

    def _refuse(self, state: str, event: str, *, resource_id: str | None = None, reason: str | None = None) -> NoReturn:
        if state not in self._states:
            raise UnknownState(self.name, state, list(self._states))
        if event not in self._events:
            raise UnknownEvent(self.name, event, self._events)
        raise TransitionNotAllowed(
            kind=self.name,
            state=state,
            event=event,
            allowed=self.allowed_events(state),
            resource_id=resource_id,
            reason=reason,
        )

    def refuse_engine_event(self, state: str, event: str, *, resource_id: str | None = None) -> None:
        """Refuse ``event`` from outside the engine if only the engine fires it (TransitionNotAllowed)."""
        if event in self.engine_events:
            outside = tuple(e for e in self.allowed_events(state) if e not in self.engine_events)
            raise TransitionNotAllowed(
                kind=self.name,
                state=state,
                event=event,
                allowed=outside,
                resource_id=resource_id,
                reason="only the engine fires it (ask for the state you want with desiredState instead)",
            )

    def shown_data(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` as shown outside the engine: the values of the kind's secret keys replaced.

        >>> Kind("k", initial="a", states=[State("a", 1), State("b", 2, Role.FINAL)],
        ...      events=[Event("go", "a", "b")], secret_data=["token"]).shown_data({"token": "s3", "n": 1})
        {'token': '<redacted>', 'n': 1}
        """
        if not self.secret_data:
            return dict(data)
        return {key: REDACTED if key in self.secret_data else value for key, value in data.items()}

    def states_with_role(self, role: Role) -> tuple[State, ...]:
        return tuple(s for s in self.states if s.role is role)

    # --- specs ---------------------------------------------------------------------------------

    def validate_spec(self, spec: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check ``spec`` against the kind and return it as plain JSON-ready data.

        Raises :class:`InvalidSpec` naming each field and the constraint it broke.
        """
        raw: Any = {} if spec is None else spec
        if not isinstance(raw, Mapping):
            raise InvalidSpec(self.name, [("spec", f"must be a JSON object, got {type(raw).__name__}")])
        if self.spec_model is not None:
            try:
                model = self.spec_model.model_validate(dict(raw))
            except pydantic.ValidationError as exc:
                raise InvalidSpec(
                    self.name,
                    [(".".join(str(p) for p in err["loc"]) or "spec", err["msg"]) for err in exc.errors()],
                ) from None
            return model.model_dump(mode="json")
        try:
            # Round-trip so that what is stored is exactly what a reader will get back.
            out: dict[str, Any] = json.loads(json.dumps(dict(raw), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidSpec(self.name, [("spec", f"must be JSON-serialisable ({exc})")]) from None
        return out

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description of the kind (states, roles, codes, events)."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "initial": self.initial.name,
            "sharing": None if self.sharing is None else self.sharing.describe(),
            "states": [
                {
                    "name": s.name,
                    "code": s.code,
                    "role": s.role.value,
                    "deadline_seconds": s.deadline.total_seconds() if s.deadline else None,
                    "on_deadline": s.on_deadline,
                    "on_failure": s.on_failure,
                    "max_attempts": s.backoff.max_attempts if s.role is Role.WORK or s.on_failure is not None else None,
                    "events": list(self.allowed_events(s.name)),
                    "description": s.description,
                    "deprecated": s.deprecated,
                }
                for s in self.states
            ],
            "events": [
                {
                    "name": e.name,
                    "sources": list(expand_sources(e, self.states)),
                    "target": e.target,
                    "guarded": e.guard is not None,
                    "engine_only": e.name in self.engine_events,
                    "description": e.description,
                }
                for e in self.events
            ],
        }
