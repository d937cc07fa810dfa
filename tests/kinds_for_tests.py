"""Kinds used only by the tests, next to the built-in ``image`` kind.

``job`` starts in a *work* state (so creation schedules it), has a *wait* state with a deadline and a
guarded event, which the ``image`` kind does not have. ``share`` declares sharing: parties use it
while it is ``ready`` (or ``paused``), and its ``teardown`` waits for the last one. ``order`` comes
in two versions: version 2 dropped a state (deprecated in version 1), added a rest state whose
leaving takes a step, and keeps ``ship`` for the engine alone.
"""

from __future__ import annotations

from datetime import timedelta

from tenure.machine import ANY, Backoff, Event, Kind, Role, Sharing, State, Subject

__all__ = ["JOB_WAIT", "approved", "job", "order_v1", "order_v2", "share", "ticket_kind"]

#: The deadline of the job kind's wait state.
JOB_WAIT = timedelta(minutes=10)


def approved(subject: Subject) -> bool:
    """Guard: the job may finish only once somebody approved it in its data."""
    return subject.data.get("approved") is True


job = Kind(
    "job",
    initial="pending",
    states=[
        State("pending", 1, Role.WORK),
        State("waiting", 2, Role.WAIT, deadline=JOB_WAIT, on_deadline="expire"),
        State("held", 3, Role.REST),
        State("done", 8, Role.FINAL),
        State("expired", 9, Role.FINAL),
    ],
    events=[
        Event("request", "pending", "waiting"),
        Event("callback", "waiting", "held"),
        Event("retry", "held", "pending"),
        Event("finish", "held", "done", guard=approved),
        Event("expire", "waiting", "expired"),
        Event("cancel", ANY, "expired"),
    ],
)


#: A resource several parties use: ``teardown`` fires only when none of them still uses it.
share = Kind(
    "share",
    initial="ready",
    states=[
        State("ready", 1, Role.REST),
        State("paused", 2, Role.REST),
        State("tearing", 3, Role.WORK),
        State("gone", 9, Role.FINAL),
    ],
    events=[
        Event("pause", "ready", "paused"),
        Event("resume", "paused", "ready"),
        Event("teardown", ["ready", "paused"], "tearing"),
        Event("finish", "tearing", "gone"),
    ],
    sharing=Sharing(teardown="teardown", torn_down="gone", usable=["ready", "paused"]),
)


def ticket_kind(name: str = "ticket", *, wait_for: timedelta = timedelta(minutes=10)) -> Kind:
    """A work state that asks and a wait state (deadline ``wait_for``) that its answers decide."""
    return Kind(
        name,
        initial="todo",
        states=[
            State("todo", 1, Role.WORK, on_failure="fail"),
            State("awaiting", 2, Role.WAIT, deadline=wait_for, on_deadline="expire"),
            State("done", 10, Role.FINAL),
            State("failed", 11, Role.FINAL),
            State("expired", 12, Role.FINAL),
            State("cancelled", 13, Role.FINAL),
        ],
        events=[
            Event("ask", "todo", "awaiting"),
            Event("answered", "awaiting", "done"),
            Event("refused", "awaiting", "failed"),
            Event("again", "awaiting", "todo"),
            Event("expire", "awaiting", "expired"),
            Event("fail", "todo", "failed"),
            Event("cancel", ["todo", "awaiting"], "cancelled"),
        ],
    )


_QUICK = Backoff(max_attempts=2, base=timedelta(0), cap=timedelta(0), jitter=0)

#: Version 1: an order is packed by the warehouse itself.
order_v1 = Kind(
    "order",
    version=1,
    initial="new",
    states=[
        State("new", 100, Role.WORK, on_failure="cancel", retry=_QUICK),
        State("packing", 200, Role.WORK, on_failure="cancel", retry=_QUICK, deprecated=True),
        State("shipped", 300, Role.FINAL),
        State("cancelled", 900, Role.FINAL),
    ],
    events=[
        Event("pack", "new", "packing"),
        Event("ship", "packing", "shipped"),
        Event("cancel", ["new", "packing"], "cancelled"),
    ],
)

#: Version 2: packing moved to a partner; an order rests until a client asks for it to ship, and
#: leaving the rest state takes work (a rest-state step).
order_v2 = Kind(
    "order",
    version=2,
    initial="new",
    engine_events=["ship"],
    states=[
        State("new", 100, Role.WORK, on_failure="cancel", retry=_QUICK),
        State("placed", 250, Role.REST, retry=_QUICK),
        State("shipped", 300, Role.FINAL),
        State("cancelled", 900, Role.FINAL),
    ],
    events=[
        Event("place", "new", "placed"),
        Event("ship", "placed", "shipped"),
        Event("cancel", ["new", "placed"], "cancelled"),
    ],
)
