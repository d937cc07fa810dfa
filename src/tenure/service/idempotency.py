"""Idempotency keys per client: the same ``Idempotency-Key`` from two clients makes two resources.

The store keeps one unique key per resource; the service stores a client's key in the client's
namespace (``client:key``) and shows it back as the client sent it. Client names never hold a
``:`` (the configuration refuses them), so the first colon ends the namespace. Every key written
through the service or the CLI has one (the CLI on a database is the client ``cli``); a key the
store's own callers wrote without one is shown as it is unless it holds a colon, and no client's
request replays it.

The store takes keys of up to 255 characters, the namespace included: a client's keys may be as
long as 255 less its name and a colon, and a longer one is refused naming that client's limit.
"""

from __future__ import annotations

from tenure.service.problems import INVALID_REQUEST, ProblemError

__all__ = ["scoped", "scoped_key", "shown_key"]


def scoped_key(client: str, key: str) -> str:
    """``key`` in ``client``'s namespace, as stored.

    >>> scoped_key("ci-bot", "order:42")
    'ci-bot:order:42'
    """
    return f"{client}:{key}"


def shown_key(stored: str | None) -> str | None:
    """A stored key as its client sent it (without the client's namespace).

    >>> shown_key("ci-bot:order:42"), shown_key("legacy-key"), shown_key(None)
    ('order:42', 'legacy-key', None)
    """
    if stored is None or ":" not in stored:
        return stored
    return stored.partition(":")[2]


def scoped(client: str, key: str | None, stored_limit: int) -> str | None:
    """``key`` in ``client``'s namespace, or a 422 problem when the two do not fit ``stored_limit``."""
    if key is None:
        return None
    limit = stored_limit - len(client) - 1
    if len(key) > limit:
        constraint = (
            f"String should have at most {limit} characters for client {client!r} ({stored_limit} less the "
            "client's name and a colon: keys are kept per client)"
        )
        problems = [{"field": "header.Idempotency-Key", "constraint": constraint}]
        raise ProblemError(INVALID_REQUEST, f"header.Idempotency-Key: {constraint}", {"errors": problems})
    return scoped_key(client, key)
