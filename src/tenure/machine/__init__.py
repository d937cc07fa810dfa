"""The pure state-machine layer: kinds, states, events and validation. No I/O (drawing is tenure.draw)."""

from __future__ import annotations

from tenure.machine.kind import Kind
from tenure.machine.parts import ANY, Backoff, Event, Guard, Role, State, Subject, Transition
from tenure.machine.sharing import Sharing

__all__ = ["ANY", "Backoff", "Event", "Guard", "Kind", "Role", "Sharing", "State", "Subject", "Transition"]
