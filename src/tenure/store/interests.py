"""Interests: the parties using a resource, each until an expiry on the store's clock.

A party is a URI the client controls (``tag:`` and ``urn:`` are preferred to URLs). Registering
again renews the interest; an interest lasts at most the provider's maximum per registration, so a
party that vanishes without deregistering stops counting once it expires. A resource that is not
``sharable`` takes one party at a time. Interests are not transitions of the resource: they neither
bump its version nor appear in its journal.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tenure.clock import Clock
from tenure.errors import InvalidArgument, NotSharable, ResourceNotFound
from tenure.rules import NUL as _NUL
from tenure.store.database import Database

__all__ = ["MAX_PARTY", "Interest", "Interests", "NotSharable", "check_party"]

#: The longest party URI accepted.
MAX_PARTY = 500

# A scheme (RFC 3986: a letter, then letters, digits, '+', '-', '.'), a colon, and no blanks or controls.
_PARTY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s\x00-\x1f\x7f]+")


def check_party(party: object) -> str:
    """``party`` if it is an acceptable party URI, else :class:`~tenure.errors.InvalidArgument`."""
    if not isinstance(party, str) or len(party) > MAX_PARTY or _PARTY.fullmatch(party) is None:
        raise InvalidArgument(
            "party",
            f"must be a URI with a scheme (e.g. tag:example.com,2024:client-1 or urn:uuid:...), "
            f"without blanks, at most {MAX_PARTY} characters",
            party,
        )
    return party


@dataclass(frozen=True, slots=True)
class Interest:
    """One party's interest in one resource, counted until ``expires_at``."""

    resource_id: str
    party: str
    registered_at: datetime
    expires_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "resource_id": self.resource_id,
            "party": self.party,
            "registered_at": self.registered_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


class Interests:
    """Interest registration, over any database."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def register_interest(
        self, resource_id: str, party: str, *, ttl: timedelta, max_ttl: timedelta = timedelta(days=1)
    ) -> Interest:
        """Register (or renew) ``party``'s interest in the resource, lasting ``ttl`` (at most ``max_ttl``).

        Registering again renews the interest from now. A resource that is not sharable refuses a
        second party with :class:`NotSharable` while the first one's interest lasts.
        """
        check_party(party)
        if _NUL in resource_id:
            raise ResourceNotFound(resource_id)  # no resource can have such an id
        for name, value in (("ttl", ttl), ("max_ttl", max_ttl)):
            if not isinstance(value, timedelta) or value <= timedelta(0):
                raise InvalidArgument(name, "must be a positive duration", value)
        db = self._db
        now = self._clock()
        expires = now + min(ttl, max_ttl)
        stamp = db.time_in(now)
        with db.transaction() as tx:
            # On PostgreSQL this locks the resource row: two parties racing for a resource that is not
            # sharable are decided one after the other.
            row = tx.execute(db.sql["interest_resource"], (resource_id,)).fetchone()
            if row is None:
                raise ResourceNotFound(resource_id)
            if not row[0]:
                other = tx.execute(db.sql["other_party"], (resource_id, party, stamp)).fetchone()
                if other is not None:
                    raise NotSharable(resource_id=resource_id, party=other[0], refused=party)
            saved = tx.execute(db.sql["upsert_interest"], (resource_id, party, stamp, db.time_in(expires))).fetchone()
        return self._interest_out((resource_id, party, saved[0], saved[1]))

    def deregister_interest(self, resource_id: str, party: str) -> bool:
        """Remove ``party``'s interest; whether it had one that had not expired yet."""
        if not isinstance(party, str):
            raise InvalidArgument("party", "must be a string", party)
        if _NUL in resource_id or _NUL in party:
            return False  # neither can be stored, so no such interest exists
        db = self._db
        with db.transaction() as tx:
            row = tx.execute(db.sql["delete_interest"], (resource_id, party)).fetchone()
        if row is None:
            return False
        expires = db.time_out(row[0])
        return expires is not None and expires > self._clock()

    def interests(self, resource_id: str) -> builtins.list[Interest]:
        """The unexpired interests in the resource, oldest registration first."""
        if _NUL in resource_id:
            return []
        db = self._db
        with db.reading() as conn:
            rows = conn.execute(db.sql["interests_of"], (resource_id, db.time_in(self._clock()))).fetchall()
        return [self._interest_out(r) for r in rows]

    def _interest_out(self, row: Sequence[Any]) -> Interest:
        registered, expires = self._db.time_out(row[2]), self._db.time_out(row[3])
        assert registered is not None
        assert expires is not None
        return Interest(row[0], row[1], registered, expires)
