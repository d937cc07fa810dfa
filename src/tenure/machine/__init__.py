"""The pure state-machine layer: kinds, states, events, validation and drawing. No I/O."""

from __future__ import annotations

from tenure.machine.kind import Kind
from tenure.machine.parts import ANY, Backoff, Event, Guard, Role, State, Subject, Transition

__all__ = ["ANY", "Backoff", "Event", "Guard", "Kind", "Role", "State", "Subject", "Transition"]
