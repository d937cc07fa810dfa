"""The kind the API benchmark drives: two rest states and one event each way, so events cycle forever.

``tenure serve --kinds bench_kinds`` loads it (with this folder on ``PYTHONPATH``). No state has
engine work, so nothing but the client moves a resource, and no spec is asked for.
"""

from __future__ import annotations

from tenure.machine import Event, Kind, State

__all__ = ["NEXT", "toggle"]

toggle = Kind(
    "toggle",
    description="A switch for benchmarks: off <-> on.",
    initial="off",
    states=[State("off", 1), State("on", 2)],
    events=[Event("turn_on", "off", "on"), Event("turn_off", "on", "off")],
)

#: state -> (the event that leaves it, the state it leads to)
NEXT = {"off": ("turn_on", "on"), "on": ("turn_off", "off")}
