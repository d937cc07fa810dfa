"""Webhook signatures: what a delivery carries so that its receiver can trust it, and how to check it.

Every delivery is signed as webhook senders commonly do (Stripe, Svix): the header
``Tenure-Signature: t=<unix seconds>,v1=<hex>`` holds the time of sending and the HMAC-SHA256, keyed
with the subscription's secret, of ``f"{t}.{body}"`` (the timestamp, a dot, and the exact body
bytes). Signing the timestamp with the body lets a receiver refuse an old delivery replayed by
someone who captured it: :func:`verify_signature` accepts only signatures made within ``tolerance``
of its own clock. A receiver de-duplicates by the ``Tenure-Delivery`` header (the same for every
attempt at one change), since a change may arrive more than once.

>>> body = b'{"deliveryId":"s1:r1:2"}'
>>> header = sign("a-secret-of-16-chars+", body, timestamp=1_700_000_000)
>>> header[:15]
't=1700000000,v1'
>>> verify_signature("a-secret-of-16-chars+", body, header, now=1_700_000_030)
True
>>> verify_signature("another-secret-16-chars", body, header, now=1_700_000_030)
False
>>> verify_signature("a-secret-of-16-chars+", body + b" ", header, now=1_700_000_030)
False
>>> verify_signature("a-secret-of-16-chars+", body, header, now=1_700_000_000 + 3600)  # too old
False
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "sign", "verify_signature"]

#: The header carrying ``t=<unix seconds>,v1=<hex HMAC-SHA256>``.
SIGNATURE_HEADER = "Tenure-Signature"
#: The header carrying the time of sending alone (unix seconds), for logs; the signature has it too.
TIMESTAMP_HEADER = "Tenure-Timestamp"
#: How far a signature's time may be from the receiver's clock, by default (seconds).
DEFAULT_TOLERANCE = 300.0


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp: int) -> str:
    """The ``Tenure-Signature`` value of ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_signature(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    now: datetime | float,
    tolerance: timedelta | float = DEFAULT_TOLERANCE,
) -> bool:
    """Whether ``header`` (a ``Tenure-Signature`` value) signs ``body`` with ``secret``, made near ``now``.

    ``now`` is the receiver's clock (a datetime, or unix seconds) and ``tolerance`` how far from it
    the signature's time may be. Several ``v1=`` values (one per secret while a secret is rotated)
    are accepted; any one that matches will do. Comparison is in constant time.
    """
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    at = now.timestamp() if isinstance(now, datetime) else float(now)
    slack = tolerance.total_seconds() if isinstance(tolerance, timedelta) else float(tolerance)
    if abs(at - timestamp) > slack:
        return False
    expected = _mac(secret, timestamp, body)
    # Every candidate is compared, so that the time taken says nothing about which one matched.
    return sum(hmac.compare_digest(expected, c) for c in candidates) > 0
