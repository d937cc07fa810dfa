"""Uses: the rules of sharing a resource, each in one place, for every write that touches them.

A *party* is a URI the client controls (``tag:`` and ``urn:`` are preferred to URLs). A party
*uses* a resource until an expiry on the store's clock; registering again renews. The uses are part
of the resource (``in_use_by``) and change only through its compare-and-swap, so two parties changing
their own uses at once never overwrite each other, and every change is journaled.

For a kind that declares :class:`~tenure.machine.sharing.Sharing`:

- the kind's teardown event fires only while no use is live (:func:`refuse_in_use`), except when an
  admin forces it;
- a desired state outside the usable states (the torn-down state, say) is a *teardown wish*: it is
  accepted at once and *held* while a use is live (:func:`held`); the write that removes the last live
  use, or finds it expired, fires the teardown event itself;
- a party may register only in a usable state (:func:`refuse_registration`).

A kind without sharing records uses in any state that is not final, and nothing waits for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from tenure.errors import InUse, InvalidArgument, TeardownStarted
from tenure.machine import Kind, Role
from tenure.store.desired import desire_pending
from tenure.store.model import Resource

__all__ = [
    "MAX_PARTY",
    "UsePolicy",
    "check_party",
    "forced",
    "held",
    "refuse_in_use",
    "refuse_registration",
    "teardown_wished",
    "usable_states",
]

#: The longest party URI accepted.
MAX_PARTY = 500

# A scheme (RFC 3986: a letter, then letters, digits, '+', '-', '.'), a colon, and no blanks or controls.
_PARTY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s\x00-\x1f\x7f]+")


def check_party(party: object) -> str:
    """``party`` if it is an acceptable party URI, else :class:`~tenure.errors.InvalidArgument`.

    >>> check_party("tag:example.org,2026:ci/42")
    'tag:example.org,2026:ci/42'
    >>> check_party("ci 42")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tenure.errors.InvalidArgument: party must be a URI with a scheme ..., got 'ci 42'
    """
    if not isinstance(party, str) or len(party) > MAX_PARTY or _PARTY.fullmatch(party) is None:
        raise InvalidArgument(
            "party",
            f"must be a URI with a scheme (e.g. tag:example.com,2024:client-1 or urn:uuid:...), "
            f"without blanks, at most {MAX_PARTY} characters",
            party,
        )
    return party


@dataclass(frozen=True, slots=True)
class UsePolicy:
    """How long a use lasts: ``default_ttl`` when a party asks for none, never more than ``max_ttl``.

    A party that needs longer renews before its use expires; each renewal counts from then.

    >>> UsePolicy().ttl(None)
    datetime.timedelta(seconds=3600)
    >>> UsePolicy().ttl(timedelta(days=2))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tenure.errors.InvalidArgument: ttl_seconds must be at least 1 and at most 86400 seconds (renew ...), got 172800
    """

    default_ttl: timedelta = timedelta(hours=1)
    max_ttl: timedelta = timedelta(days=1)

    def ttl(self, asked: timedelta | None, *, field: str = "ttl_seconds") -> timedelta:
        """The time to live a registration gets (InvalidArgument, naming ``field``, outside 1 s to the maximum)."""
        if asked is None:
            return min(self.default_ttl, self.max_ttl)
        if not isinstance(asked, timedelta) or not timedelta(seconds=1) <= asked <= self.max_ttl:
            got = asked.total_seconds() if isinstance(asked, timedelta) else asked
            if isinstance(got, float) and got.is_integer():
                got = int(got)
            raise InvalidArgument(
                field,
                f"must be at least 1 and at most {int(self.max_ttl.total_seconds())} seconds "
                f"(renew before it expires to stay longer)",
                got,
            )
        return asked


def usable_states(kind: Kind) -> tuple[str, ...]:
    """The states in which a party may register a use of a resource of ``kind``."""
    if kind.sharing is not None:
        return tuple(s.name for s in kind.states if s.name in kind.sharing.usable)
    return tuple(s.name for s in kind.states if s.role is not Role.FINAL)


def forced(resource: Resource) -> bool:
    """Whether an admin forced the teardown the resource's pending desired state asks for."""
    return resource.forced_generation == resource.generation and desire_pending(resource)


def refuse_registration(kind: Kind, resource: Resource) -> None:
    """Refuse (:class:`~tenure.errors.TeardownStarted`) a use of a resource that can no longer be used:
    its state is not usable, or its teardown was forced (and waits only to come to rest)."""
    usable = usable_states(kind)
    if resource.state not in usable or forced(resource):
        raise TeardownStarted(resource_id=resource.id, state=resource.state, usable=usable)


def teardown_wished(kind: Kind, resource: Resource) -> bool:
    """Whether the resource's pending desired state lies beyond its kind's usable states."""
    sharing = kind.sharing
    return sharing is not None and desire_pending(resource) and resource.desired_state not in sharing.usable


def held(kind: Kind, resource: Resource, now: datetime) -> bool:
    """Whether a teardown wish waits for parties whose use is still live at ``now`` (a forced one never does)."""
    return (
        teardown_wished(kind, resource)
        and not forced(resource)
        and any(u.expires_at > now for u in resource.in_use_by.values())
    )


def refuse_in_use(kind: Kind, resource: Resource, event: str, now: datetime) -> None:
    """Refuse (:class:`~tenure.errors.InUse`) the kind's teardown event while a use is live."""
    sharing = kind.sharing
    if sharing is None or event != sharing.teardown:
        return
    live = [party for party, u in resource.in_use_by.items() if u.expires_at > now]
    if live:
        raise InUse(resource_id=resource.id, event=event, parties=sorted(live))
