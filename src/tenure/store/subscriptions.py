"""Subscriptions: watchers who are not users, told of changes by webhook, at least once and in order.

A subscription is a callback URL, a filter (one resource, or one kind and optionally the states its
resources enter) and a secret that signs every delivery. It keeps its own *cursor*, a position in
the change feed (:mod:`tenure.store.feed`), and is created at the feed's head, so it hears of every
change made after it. A deliverer (:mod:`tenure.engine.deliveries`) claims it, reads the feed after
its cursor, POSTs the matching changes one by one in feed order, and moves the cursor past each one
only after the subscriber answered 2xx. A crash between sending and moving the cursor sends that
change again, with the same delivery id: at least once, never lost.

**The journal is the outbox.** Every change to a resource writes its journal row in the same
transaction as the change, so there is no separate outbox to keep in step and no change that commits
without its notification (or the other way round). The feed reads the journal in an order that is
resumable and never skips a row, on SQLite and PostgreSQL alike, which is exactly what a cursor needs.
Subscriptions never hold anything back: no write waits for a delivery, so a subscriber that is down
never delays a teardown; it hears of it when it comes back. The journal is never pruned today; if a
retention policy ever prunes journal rows, it must not prune past the slowest subscription's cursor
(``min(position)`` over this table), or that subscription would lose changes.

A subscription is held by one deliverer at a time through a lease (``claimed_by`` until
``claim_expires_at``), so that with several deliverers its changes still go out one at a time, in
order; every cursor move is fenced by the lease, and a lease that lapsed (a dead deliverer) is taken
over. A failed delivery records the error and the time to try again; the subscription is never dropped.
"""

from __future__ import annotations

import builtins
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from tenure.clock import Clock
from tenure.errors import InvalidArgument, SubscriptionNotFound
from tenure.machine import Kind
from tenure.rules import error_text
from tenure.store.database import Database
from tenure.store.feed import Change, ChangeFeed
from tenure.store.model import new_id
from tenure.store.sqlfile import load_queries

__all__ = ["MAX_URL", "Subscription", "Subscriptions"]

#: The longest callback URL; the shortest and longest secret a subscriber may choose.
MAX_URL, MIN_SECRET, MAX_SECRET = 2000, 16, 256
#: The most states one filter names, the longest kind or state name, and resource id (64, as resources').
MAX_STATES, MAX_NAME, MAX_RESOURCE_ID = 100, 100, 64
#: The most subscriptions one page lists.
MAX_PAGE = 1000

# Blanks and control characters: never part of a URL or a secret sent in a header.
_UNPRINTABLE = re.compile(r"[\s\x00-\x1f\x7f]")
#: Sorts before every subscription id.
_FIRST = ""


@dataclass(frozen=True, slots=True)
class Subscription:
    """One webhook subscription: where changes go, which ones, and how far delivery has got.

    ``position`` is the feed position delivered up to; ``attempts`` counts failed attempts at the
    next change since the last success, retried at ``next_attempt_at``. The ``secret`` signs the
    deliveries; it is kept out of ``repr`` and shown to people only when the subscription is created.
    """

    id: str
    url: str
    resource_id: str | None
    kind: str | None
    states: tuple[str, ...] | None
    created_by: str | None
    created_at: datetime
    position: str
    delivered: int
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    last_delivered_at: datetime | None
    claimed_by: str | None
    claim_expires_at: datetime | None
    secret: str = field(repr=False)

    def matches(self, change: Change) -> bool:
        """Whether the filter lets ``change`` through: its resource, or its kind (and entered state)."""
        if self.resource_id is not None:
            return change.resource_id == self.resource_id
        if change.kind != self.kind:
            return False
        return self.states is None or change.to_state in self.states


@cache
def _queries(dialect: str) -> Mapping[str, str]:
    return load_queries(f"subscriptions_{dialect}.sql")


class Subscriptions:
    """Webhook subscriptions over any database; ``kinds`` looks up a loaded kind by name (None: unknown)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        kinds: Callable[[str], Kind | None] = lambda _name: None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._kinds = kinds
        self._sql = _queries(db.dialect)
        # Only for the head position: this part never filters the feed by kind.
        self._feed = ChangeFeed(db, _no_kind_lookup)

    # --- what people do ------------------------------------------------------------------------

    def create(
        self,
        url: str,
        *,
        resource_id: str | None = None,
        kind: str | None = None,
        states: Sequence[str] | None = None,
        secret: str | None = None,
        created_by: str | None = None,
    ) -> Subscription:
        """Subscribe ``url`` to the changes of one resource, or of one kind (entering ``states``, if given).

        The subscription starts at the feed's head: it hears of every change committed after this
        call began. Without a ``secret`` one is made (``secrets.token_urlsafe(32)``); the answer carries
        it, and it is never shown again. Raises :class:`~tenure.errors.InvalidArgument` naming the
        field and what it must be.
        """
        url = check_url(url)
        resource_id, kind, chosen = self._check_filter(resource_id, kind, states)
        secret = _check_secret(secret)
        if created_by is not None and (not isinstance(created_by, str) or "\x00" in created_by):
            raise InvalidArgument("created_by", "must be text without NUL", created_by)
        db = self._db
        # The head first, then the row: a change committed in between is delivered, never missed.
        position = self._feed.latest_position()
        now = self._clock()
        sub = Subscription(
            id=new_id(),
            url=url,
            resource_id=resource_id,
            kind=kind,
            states=chosen,
            created_by=created_by,
            created_at=now,
            position=position,
            delivered=0,
            attempts=0,
            next_attempt_at=None,
            last_error=None,
            last_delivered_at=None,
            claimed_by=None,
            claim_expires_at=None,
            secret=secret,
        )
        params = {
            "id": sub.id,
            "url": url,
            "secret": secret,
            "resource_id": resource_id,
            "kind": kind,
            "states": None if chosen is None else db.json_in(list(chosen)),
            "created_by": created_by,
            "created_at": db.time_in(now),
            "position": position,
        }
        with db.transaction() as tx:
            tx.execute(self._sql["insert_subscription"], params)
        return sub

    def find(self, sub_id: str) -> Subscription | None:
        """The subscription, or None if there is none with this id."""
        if not isinstance(sub_id, str) or "\x00" in sub_id:
            return None
        with self._db.reading() as conn:
            row = conn.execute(self._sql["get_subscription"], {"id": sub_id}).fetchone()
        return None if row is None else self._out(row)

    def get(self, sub_id: str) -> Subscription:
        """The subscription (raises :class:`~tenure.errors.SubscriptionNotFound`)."""
        found = self.find(sub_id)
        if found is None:
            raise SubscriptionNotFound(str(sub_id)[:100])
        return found

    def list(
        self, *, created_by: str | None = None, every: bool = False, after: str | None = None, limit: int = 100
    ) -> builtins.list[Subscription]:
        """Subscriptions in creation order after the id ``after``: ``created_by``'s, or all with ``every``."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_PAGE}", limit)
        if not every and created_by is None:
            raise InvalidArgument("created_by", "must name the creator unless every subscription is asked for", None)
        params = {"every": every, "created_by": created_by, "after": after or _FIRST, "limit": limit}
        with self._db.reading() as conn:
            rows = conn.execute(self._sql["list_subscriptions"], params).fetchall()
        return [self._out(r) for r in rows]

    def delete(self, sub_id: str) -> None:
        """Remove the subscription: nothing more is sent (raises :class:`~tenure.errors.SubscriptionNotFound`)."""
        if not isinstance(sub_id, str) or "\x00" in sub_id:
            raise SubscriptionNotFound(str(sub_id)[:100])
        with self._db.transaction() as tx:
            gone = tx.execute(self._sql["delete_subscription"], {"id": sub_id}).fetchone()
        if gone is None:
            raise SubscriptionNotFound(sub_id[:100])

    # --- what deliverers do --------------------------------------------------------------------

    def claim_due(
        self, worker: str, *, limit: int = 10, lease: timedelta, head: str | None = None
    ) -> builtins.list[Subscription]:
        """Take up to ``limit`` subscriptions behind the feed's ``head`` for ``worker``, for ``lease``.

        Only subscriptions that are not held by another worker's live lease and not backing off
        are taken; each is then ``worker``'s alone until the lease lapses. ``head`` defaults to the
        feed's latest position.
        """
        if lease <= timedelta(0):
            raise InvalidArgument("lease", "must be a positive duration", lease)
        db = self._db
        now = self._clock()
        params = {
            "worker": worker,
            "head": head if head is not None else self._feed.latest_position(),
            "now": db.time_in(now),
            "expires": db.time_in(now + lease),
            "limit": limit,
        }
        with db.transaction() as tx:
            rows = tx.execute(self._sql["claim_subscriptions"], params).fetchall()
        return sorted((self._out(r) for r in rows), key=lambda s: s.id)

    def record_success(
        self,
        sub_id: str,
        new_position: str,
        *,
        worker: str,
        lease: timedelta,
        delivered: int = 1,
    ) -> bool:
        """Move the cursor to ``new_position`` after ``delivered`` changes were answered 2xx.

        Renews ``worker``'s lease, clears the failure streak. False (nothing written) when
        ``worker`` no longer holds the subscription (its lease was taken over, or it was deleted).
        """
        db = self._db
        now = self._clock()
        params = {
            "id": sub_id,
            "worker": worker,
            "position": new_position,
            "count": delivered,
            "delivered_at": db.time_in(now) if delivered else None,
            "expires": db.time_in(now + lease),
        }
        with db.transaction() as tx:
            return bool(tx.execute(self._sql["advance_subscription"], params).rowcount == 1)

    def record_failure(self, sub_id: str, error: str, next_attempt_at: datetime, *, worker: str) -> bool:
        """Count a failed attempt, keep ``error``, and let the subscription be claimed again at ``next_attempt_at``."""
        params = {
            "id": sub_id,
            "worker": worker,
            "error": error_text(error),
            "next_attempt_at": self._db.time_in(next_attempt_at),
        }
        with self._db.transaction() as tx:
            return bool(tx.execute(self._sql["fail_subscription"], params).rowcount == 1)

    def release(self, sub_id: str, *, worker: str) -> bool:
        """Give the subscription back (``worker`` is done with it for now)."""
        with self._db.transaction() as tx:
            return bool(tx.execute(self._sql["release_subscription"], {"id": sub_id, "worker": worker}).rowcount == 1)

    def next_due(self) -> datetime | None:
        """The next time to come at which a backing-off or leased subscription may be claimed (None: none)."""
        with self._db.reading() as conn:
            row = conn.execute(self._sql["next_subscription_due"], {"now": self._db.time_in(self._clock())}).fetchone()
        return None if row is None else self._db.time_out(row[0])

    # --- checks and rows -----------------------------------------------------------------------

    def _check_filter(
        self, resource_id: object, kind: object, states: object
    ) -> tuple[str | None, str | None, tuple[str, ...] | None]:
        if (resource_id is None) == (kind is None):
            raise InvalidArgument("filter", "must name either a resource or a kind (not both)", None)
        if resource_id is not None:
            if not _short_text(resource_id, MAX_RESOURCE_ID):
                raise InvalidArgument(
                    "resource_id", f"must be a resource id of 1 to {MAX_RESOURCE_ID} characters", resource_id
                )
            if states is not None:
                raise InvalidArgument(
                    "states", "filter the states of a kind; a resource's filter takes every change", states
                )
            return str(resource_id), None, None
        if not _short_text(kind, MAX_NAME):
            raise InvalidArgument("kind", f"must be a kind name of 1 to {MAX_NAME} characters", kind)
        name = str(kind)
        if states is None:
            return None, name, None
        if isinstance(states, str | bytes) or not isinstance(states, Sequence) or not 1 <= len(states) <= MAX_STATES:
            raise InvalidArgument("states", f"must be a list of 1 to {MAX_STATES} state names", states)
        if not all(_short_text(s, MAX_NAME) for s in states):
            raise InvalidArgument("states", f"must be state names of 1 to {MAX_NAME} characters", list(states))
        chosen = tuple(dict.fromkeys(states))
        known = self._kinds(name)
        if known is not None:
            unknown = [s for s in chosen if not known.has_state(s)]
            if unknown:
                names = ", ".join(s.name for s in known.states)
                raise InvalidArgument("states", f"must be states of kind {name!r} ({names})", unknown)
        return None, name, chosen

    def _out(self, row: Sequence[Any]) -> Subscription:
        db = self._db
        created = db.time_out(row[7])
        assert created is not None
        states = None if row[5] is None else tuple(db.json_out(row[5]))
        return Subscription(
            id=row[0],
            url=row[1],
            secret=row[2],
            resource_id=row[3],
            kind=row[4],
            states=states,
            created_by=row[6],
            created_at=created,
            position=row[8],
            delivered=int(row[9]),
            attempts=int(row[10]),
            next_attempt_at=db.time_out(row[11]),
            last_error=row[12],
            last_delivered_at=db.time_out(row[13]),
            claimed_by=row[14],
            claim_expires_at=db.time_out(row[15]),
        )


def check_url(url: object) -> str:
    """``url`` if it is an absolute http(s) URL subscribers may be called at, else :class:`InvalidArgument`."""
    rule = (
        f"must be an absolute http:// or https:// URL with a host, without credentials or blanks, "
        f"at most {MAX_URL} characters"
    )
    if not isinstance(url, str) or not url or len(url) > MAX_URL or _UNPRINTABLE.search(url):
        raise InvalidArgument("url", rule, url[:200] if isinstance(url, str) else url)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 -- a port that is not a number raises here
    except ValueError:
        raise InvalidArgument("url", rule, url[:200]) from None
    # Credentials in the URL would be shown to everyone who may read the subscription: use the secret.
    if parts.scheme.lower() not in ("http", "https") or not host or "@" in parts.netloc:
        raise InvalidArgument("url", rule, url[:200])
    return url


def _check_secret(secret: object) -> str:
    if secret is None:
        return secrets.token_urlsafe(32)
    if (
        not isinstance(secret, str)
        or not MIN_SECRET <= len(secret) <= MAX_SECRET
        or not secret.isascii()
        or _UNPRINTABLE.search(secret)
    ):
        # The secret itself is never echoed back, not even a wrong one.
        got = f"{len(secret)} characters" if isinstance(secret, str) else type(secret).__name__
        raise InvalidArgument(
            "secret",
            f"must be {MIN_SECRET} to {MAX_SECRET} printable ASCII characters without blanks "
            "(or left out: one is made)",
            got,
        )
    return secret


def _short_text(value: object, limit: int) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= limit and "\x00" not in value


def _no_kind_lookup(name: str) -> Kind:
    raise AssertionError(f"subscriptions never filter the feed by kind ({name!r})")
