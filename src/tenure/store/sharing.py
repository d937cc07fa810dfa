"""Sharing writes: registering, renewing and releasing uses, teardown wishes, expiry and force.

Each is planned here as one :class:`~tenure.store.write.Write` (the rules are in
:mod:`tenure.store.uses`) and committed through the one write path: it bumps the version, journals
what changed for whom, and updates the ``interests`` index rows in the same transaction. When a write
leaves a teardown wish with no live use, and the resource rests where the kind's teardown event
leaves from, that same write fires the teardown event: teardown starts in the transaction that
removed the last use or found it expired, never later and never with a live use.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from tenure.clock import Clock
from tenure.errors import Conflict, InvalidArgument, NotSharable, ResourceNotFound, TransitionNotAllowed, UseNotYours
from tenure.machine import Kind, Role
from tenure.machine.graph import next_hop
from tenure.rules import refuse_nul
from tenure.store.database import Database
from tenure.store.desired import DESIRED_EVENT, desire_pending
from tenure.store.model import Resource, Use
from tenure.store.uses import UsePolicy, check_party, held, refuse_registration, teardown_wished
from tenure.store.write import KindOf, Swap, Write, plan_desired, plan_fire

__all__ = ["EXPIRED_EVENT", "FORCE_EVENT", "KEEP", "USE_EVENT", "Keep", "Sharing", "plan_force", "plan_uses"]

#: The journal event of a write that changes only who uses a resource.
USE_EVENT = "@use"
#: The journal event of the engine removing uses that expired.
EXPIRED_EVENT = "@expired"
#: The journal event of a forced teardown that cannot fire the teardown event yet.
FORCE_EVENT = "@force"


class Keep:
    """The type of :data:`KEEP`."""

    def __repr__(self) -> str:
        return "KEEP"


#: Leave the desired state as it is.
KEEP: Final = Keep()


def plan_uses(
    kind: Kind,
    before: Resource,
    now: datetime,
    *,
    register: Mapping[str, timedelta] | None = None,
    release: Iterable[str] = (),
    client: str | None,
    admin: bool = False,
    desired: str | Keep | None = KEEP,
    actor: str | None,
    event: str = USE_EVENT,
) -> Write | None:
    """One write that registers/renews ``register`` (party -> ttl), releases ``release``, and may set
    the desired state; expired uses are removed with it. None when nothing would change.

    A use belongs to the client that registered it: another client may renew or release it only as
    an admin (:class:`~tenure.errors.UseNotYours`). A resource that is not sharable takes one live
    party (:class:`~tenure.errors.NotSharable`). A teardown wish releases the caller's own uses.
    """
    register = dict(register or {})
    released = [check_party(p) for p in release]
    for party in register:
        check_party(party)
    refuse_nul(client=client, actor=actor)
    if register:
        refuse_registration(kind, before)
    uses = dict(before.in_use_by)
    changes: dict[str, str] = {}
    for party, held_use in before.in_use_by.items():
        if not held_use.live(now):
            del uses[party]
            changes[party] = "expired"
    for party in released:
        gone = uses.get(party)
        if gone is None:
            continue  # not (or no longer) using it: releasing is idempotent
        _refuse_foreign(before, party, gone, client, admin)
        del uses[party]
        changes[party] = "released"
    for party, ttl in register.items():
        use = uses.get(party)
        if use is not None:
            _refuse_foreign(before, party, use, client, admin)
        elif not before.sharable:
            other = next((p for p in uses if p != party), None)
            if other is not None:
                raise NotSharable(resource_id=before.id, party=other, refused=party)
        owner = client if use is None else use.client
        uses[party] = Use(owner, now if use is None else use.registered_at, now + ttl)
        changes[party] = "registered" if use is None else "renewed"
    if isinstance(desired, Keep):
        after = dataclasses.replace(before, version=before.version + 1, updated_at=now)
        write_event, detail = event, {}
    else:
        planned = plan_desired(kind, before, desired, now, actor)
        after, write_event, detail = planned.after, DESIRED_EVENT, dict(planned.detail)
        if teardown_wished(kind, after):
            for party, use in list(uses.items()):
                if use.client == client and changes.get(party) not in ("registered", "renewed"):
                    del uses[party]
                    changes[party] = "released"
    if not changes and isinstance(desired, Keep):
        return None
    after = dataclasses.replace(after, in_use_by=uses)
    if changes:
        detail["uses"] = changes
    write = Write(
        before,
        after,
        write_event,
        actor,
        detail,
        keeps_claim=True,
        carries_waits=True,
        uses_changed=bool(changes),
        uses_kept=[(p, uses[p]) for p, what in changes.items() if what in ("registered", "renewed")],
        uses_dropped=[p for p, what in changes.items() if what not in ("registered", "renewed")],
    )
    return _start_teardown(kind, write, now) or _due(kind, write, now)


def plan_force(kind: Kind, before: Resource, now: datetime, *, actor: str | None, reason: str | None) -> Write:
    """Tear down now whoever still uses the resource: every use is dropped and recorded in the journal.

    The desired state becomes the torn-down state; the teardown event fires in this write when the
    resource rests where it leaves from, or as soon as it comes to rest there.
    """
    sharing = kind.sharing
    if sharing is None:
        raise InvalidArgument("force", f"needs a kind that declares its teardown; kind {kind.name!r} does not")
    refuse_nul(actor=actor, reason=reason)
    parties = {party: use.to_json() for party, use in before.in_use_by.items()}
    wanted = sharing.torn_down
    base = before
    if before.desired_state != wanted or before.generation <= before.observed_generation:
        if before.state == wanted or kind.state(before.state).role is Role.FINAL:
            raise InvalidArgument("force", f"has nothing to tear down: the resource is in state {before.state!r}")
        base = dataclasses.replace(plan_desired(kind, before, wanted, now, actor).after, version=before.version)
    after = dataclasses.replace(
        base, version=before.version + 1, updated_at=now, in_use_by={}, forced_generation=base.generation
    )
    detail: dict[str, Any] = {"forced": True, "desired_state": wanted, "parties": parties}
    if reason:
        detail["reason"] = reason
    write = Write(
        before,
        after,
        FORCE_EVENT,
        actor,
        detail,
        keeps_claim=True,
        carries_waits=True,
        uses_changed=bool(parties),
        uses_dropped=list(parties),
        forces=True,
    )
    return _start_teardown(kind, write, now) or _due(kind, write, now)


def _refuse_foreign(resource: Resource, party: str, use: Use, client: str | None, admin: bool) -> None:
    if use.client != client and not admin:
        raise UseNotYours(resource_id=resource.id, party=party, owner=use.client, client=client)


def _start_teardown(kind: Kind, write: Write, now: datetime) -> Write | None:
    """``write`` turned into the teardown event itself, when it leaves a teardown wish free to go."""
    after, sharing = write.after, kind.sharing
    if sharing is None or not teardown_wished(kind, after) or held(kind, after, now):
        return None
    if kind.state(after.state).role is not Role.REST or after.desired_state is None:
        return None
    if next_hop(kind, after.state, after.desired_state) != sharing.teardown:
        return None
    # Plan the teardown from the planned row, as if it were the stored one, and swap from the real one.
    at = dataclasses.replace(after, version=write.before.version, in_use_by={})
    detail = {**write.detail, "teardown": "no party uses the resource any more"}
    try:
        fired = plan_fire(kind, at, sharing.teardown, now, data=None, error=None, actor=write.actor, detail=detail)
    except TransitionNotAllowed:
        return None  # a guard says no: the reconcile will try, and explain when it gives up
    fired.before = write.before
    fired.forces = write.forces
    fired.uses_changed = write.uses_changed
    fired.uses_kept = write.uses_kept
    fired.uses_dropped = write.uses_dropped
    return fired


def _due(kind: Kind, write: Write, now: datetime) -> Write:
    """A resting resource with somewhere to go is due for the reconcile, unless parties hold it back."""
    after = write.after
    if kind.state(after.state).role is Role.REST and after.desired_state is not None:
        due = desire_pending(after) and not held(kind, after, now)
        write.after = dataclasses.replace(after, next_attempt_at=now if due else None)
    return write


class Sharing:
    """Registering, renewing, releasing, forcing and expiring uses, over any database."""

    def __init__(self, db: Database, swap: Swap, kind: KindOf, clock: Clock, policy: UsePolicy) -> None:
        self._db = db
        self._swap = swap
        self._kind = kind
        self._clock = clock
        self.policy = policy

    def change_uses(
        self,
        resource_id: str,
        *,
        register: Mapping[str, timedelta | None] | None = None,
        release: Iterable[str] = (),
        client: str | None = None,
        admin: bool = False,
        desired: str | Keep | None = KEEP,
        expected_version: int | None = None,
        actor: str | None = None,
    ) -> Resource:
        """Register or renew (party -> ttl, None for the default), release, and maybe set the desired
        state, in one write; without ``expected_version`` it is re-planned on the newest version until
        it wins, so parties changing their own uses at once never overwrite each other."""
        ttls = {party: self.policy.ttl(ttl) for party, ttl in (register or {}).items()}
        parties = list(release)

        def plan(snapshot: Resource) -> Write | None:
            return plan_uses(
                self._kind.of(snapshot),
                snapshot,
                self._clock(),
                register=ttls,
                release=parties,
                client=client,
                admin=admin,
                desired=desired,
                actor=actor if actor is not None else client,
            )

        return self._swap(resource_id, expected_version, plan)

    def force_teardown(
        self, resource_id: str, *, actor: str | None, reason: str | None = None, expected_version: int | None = None
    ) -> Resource:
        """Tear the resource down now, whoever uses it (an admin's decision, journaled with the parties)."""

        def plan(snapshot: Resource) -> Write:
            return plan_force(self._kind.of(snapshot), snapshot, self._clock(), actor=actor, reason=reason)

        return self._swap(resource_id, expected_version, plan)

    def expire_uses(self, kinds: Iterable[str], *, actor: str | None, limit: int = 100) -> builtins.list[Resource]:
        """Remove uses that expired from resources of ``kinds`` (the engine's sweep): one journaled write
        per resource, starting teardown where the last use of a teardown wish expired. Returns the
        resources written."""
        db = self._db
        names = db.array_in(list(kinds))
        with db.reading() as conn:
            rows = conn.execute(db.sql["expired_uses"], (db.time_in(self._clock()), names, limit)).fetchall()
        written = []
        for (resource_id,) in rows:

            def plan(snapshot: Resource) -> Write | None:
                return plan_uses(
                    self._kind.of(snapshot), snapshot, self._clock(), client=None, actor=actor, event=EXPIRED_EVENT
                )

            try:
                after = self._swap(resource_id, None, plan)
            except (Conflict, ResourceNotFound):
                continue  # a resource too hot to win on now is swept next round
            written.append(after)
        return written
