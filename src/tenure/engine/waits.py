"""Ending waits: recorded callbacks and passed deadlines, turned into writes on the waiting resources.

A callback is recorded in the inbox when it arrives; the workers act on it later, here: the
answers of one wait are rolled up into the event they decide, fired only if the resource is still at
the version that opened the wait. Answers that come too late (the resource moved on), for a wait
that is gone, or for keys nobody awaits are settled with a note saying why. A wait whose deadline
passed fires its state's deadline event, unless answers already in the inbox decide it first.
"""

from __future__ import annotations

from collections.abc import Sequence

from tenure.engine.logs import about, log
from tenure.engine.rollup import roll_up
from tenure.engine.stats import WorkerStats
from tenure.errors import Conflict, ResourceNotFound, StoreUnavailable, TenureError, UnknownKind
from tenure.machine import Role
from tenure.store.inbox import CallbackRow
from tenure.store.model import Resource
from tenure.store.protocol import EngineStore

__all__ = ["WaitSettler"]


class WaitSettler:
    """Applies callbacks and deadlines for the resources of ``kinds``, writing as ``worker``."""

    def __init__(self, store: EngineStore, stats: WorkerStats, *, worker: str, kinds: Sequence[str]) -> None:
        self.store = store
        self.stats = stats
        self.worker = worker
        self.kinds = list(kinds)

    def apply_callbacks(self, *, limit: int) -> int:
        """Apply up to ``limit`` callbacks recorded but not yet acted on; returns how many were settled."""
        pending = self.store.unsettled(self.kinds, limit=limit)
        by_wait: dict[str, list[CallbackRow]] = {}
        for cb in pending:
            by_wait.setdefault(cb.token_hash, []).append(cb)
        return sum(self._settle(hashed, rows) for hashed, rows in by_wait.items())

    def _settle(self, hashed: str, rows: list[CallbackRow]) -> int:
        """Apply the unsettled callbacks ``rows`` of one wait; returns how many were settled."""
        seqs = [cb.seq for cb in rows]
        store = self.store
        wait = store.wait(hashed)
        resource = store.find(wait.resource_id) if wait else None
        if wait is None or resource is None:
            store.mark_settled(seqs, "dropped: the wait no longer exists")
            return len(seqs)
        if resource.version != wait.version:
            # Counted only where this call settled them: another worker may have applied them (and
            # so moved the resource on) in the meantime.
            superseded = store.mark_settled(
                seqs, f"superseded: the resource moved on to state {resource.state!r} at version {resource.version}"
            )
            self.stats.callbacks_superseded += superseded
            return len(seqs)
        if wait.provisional:
            return 0  # the step that handed out the token still runs: applied once it waits
        # When the unsettled rows answer every awaited key, they are all the answers there can be.
        complete = set(wait.keys) <= {cb.key for cb in rows}
        if not complete:
            # Read them all: answers recorded earlier count, and answers that arrived since the
            # batch was read are used (so settled) by this same decision.
            answers = store.callbacks(hashed)
            seqs = [cb.seq for cb in answers if cb.applied_at is None]
            if not seqs:
                return 0  # another worker settled them meanwhile
        else:
            answers = rows
        unawaited = [cb.seq for cb in answers if cb.seq in seqs and cb.key not in wait.keys]
        if unawaited:
            # Early answers (sent while the step ran) for keys the step did not end up waiting for.
            store.mark_settled(unawaited, f"ignored: not awaited (the wait awaits {', '.join(wait.keys)})")
            seqs = [seq for seq in seqs if seq not in unawaited]
            if not seqs:
                return len(unawaited)
        decision = roll_up(wait, answers, resource.data)
        if decision.event is None:
            store.mark_settled(seqs, f"recorded; still waiting for {', '.join(decision.missing)}")
            return len(seqs) + len(unawaited)
        try:
            store.fire_settling(
                resource,
                decision.event,
                seqs,
                result=f"applied: fired {decision.event}",
                data=decision.data,
                error=decision.error,
                actor=self.worker,
                detail={"callbacks": seqs},
            )
            self.stats.callbacks_applied += len(seqs)
        except Conflict:
            return 0  # the resource moved on meanwhile; the next pass settles these as superseded
        except UnknownKind:
            # The resource lives on a version of its kind this worker does not load (a rolling
            # upgrade): the answers are left for a worker that does, never refused for it.
            return 0
        except TenureError as exc:
            store.mark_settled(seqs, f"refused: {exc}")
        return len(seqs) + len(unawaited)

    def sweep_deadlines(self, *, limit: int) -> int:
        """Fire the deadline event of up to ``limit`` resources whose wait outlived its deadline.

        Answers already in the inbox win over the deadline: they are applied first, and the
        deadline fires only if they do not decide the wait (keeping what they said in the data).
        """
        fired = 0
        for r in self.store.expired_waits(self.kinds, limit=limit):
            try:
                fired += self._expire(r)
            except (Conflict, ResourceNotFound):
                continue  # answered, or swept by another worker, in the meantime
            except UnknownKind:
                continue  # a version of its kind this worker does not load: left to one that does
            except (StoreUnavailable, OSError):
                raise
            except Exception:
                # One resource must not hold up the deadlines of the others.
                self.stats.engine_errors += 1
                log.exception("worker %s: could not fire the deadline of %s", self.worker, r.id, extra=about(r))
        self.stats.deadlines_fired += fired
        return fired

    def _expire(self, r: Resource) -> int:
        state = self.store.kind_of(r).state(r.state)
        if state.role is not Role.WAIT or state.on_deadline is None:
            return 0
        data = None
        wait = self.store.current_wait(r.id, r.version)
        if wait is not None and not wait.provisional:
            answers = self.store.callbacks(wait.token_hash)
            unsettled = [cb for cb in answers if cb.applied_at is None]
            if unsettled and self._settle(wait.token_hash, unsettled):
                now = self.store.find(r.id)
                if now is None or now.version != r.version:
                    return 0  # the answers decided the wait
            if answers:
                # Partial answers are kept: a retry then asks again only for what is missing.
                data = roll_up(wait, answers, r.data).data
        deadline = r.deadline.isoformat() if r.deadline else "?"
        # An engine write on the snapshot (no callbacks to settle): it may keep what the wait's answers
        # said under the kind's step-owned keys, which a client's fire may not touch.
        self.store.fire_settling(
            r,
            state.on_deadline,
            (),
            result="",
            data=data,
            error=f"no answer in state {r.state!r} before its deadline ({deadline})",
            actor=self.worker,
            detail={"deadline": deadline},
        )
        return 1
