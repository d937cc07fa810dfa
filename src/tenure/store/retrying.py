"""Retry now: an operator makes the next attempt of a step that backs off after a failure due at once.

A failed attempt the engine will try again is scheduled in the row (``next_attempt_at``, see
:func:`~tenure.store.write.plan_retry`); when whatever failed has been fixed, waiting out the backoff
helps nobody. :meth:`Retrying.retry_now` plans the change with
:func:`~tenure.store.write.plan_retry_now` (a version bump and an ``@retry-now`` journal entry naming
the schedule it replaced) and commits it through the store's read, plan and swap
(:meth:`~tenure.store.resources.Resources.swap`), as every client write is: pinned to a version it is a
compare-and-swap, unpinned it reads again and replans after losing a race, until it wins, is refused
or finds the resource too hot to win on (:class:`~tenure.errors.Conflict`).
"""

from __future__ import annotations

from tenure.clock import Clock
from tenure.store.model import Resource
from tenure.store.write import KindOf, Swap, Write, plan_retry_now

__all__ = ["Retrying"]


class Retrying:
    """The operator's retry now, over any database."""

    def __init__(self, swap: Swap, kind: KindOf, clock: Clock) -> None:
        self._swap = swap
        self._kind = kind
        self._clock = clock

    def retry_now(self, resource_id: str, *, expected_version: int | None = None, actor: str | None = None) -> Resource:
        """Make the resource's next attempt due now; returns the resource at its new version.

        Raises :class:`~tenure.errors.RetryNotAllowed` unless the resource's step backs off (see
        :func:`~tenure.store.write.retry_now_refusal`), :class:`~tenure.errors.Conflict` when it is not
        at ``expected_version`` (or, unpinned, stays too hot to win on), and
        :class:`~tenure.errors.ResourceNotFound`. Nothing is written on any error.
        """

        def plan(snapshot: Resource) -> Write:
            return plan_retry_now(self._kind.of(snapshot), snapshot, self._clock(), actor=actor)

        return self._swap(resource_id, expected_version, plan)
