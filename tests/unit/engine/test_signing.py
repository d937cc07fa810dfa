"""Webhook signatures: what a receiver accepts, and what it refuses."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from tenure.engine.signing import sign, verify_signature

SECRET = "0123456789abcdef-secret"
BODY = b'{"deliveryId":"s:r:1","detail":{"note":"caf\xc3\xa9"}}'
T = 1_800_000_000


def test_the_signature_is_the_hmac_of_the_timestamp_a_dot_and_the_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, timestamp=T) == f"t={T},v1={expected}"


def test_a_receiver_accepts_its_signature_at_either_edge_of_the_tolerance() -> None:
    header = sign(SECRET, BODY, timestamp=T)
    assert verify_signature(SECRET, BODY, header, now=T + 300, tolerance=300)
    assert verify_signature(SECRET, BODY, header, now=T - 300, tolerance=timedelta(minutes=5))
    assert verify_signature(SECRET, BODY, header, now=datetime.fromtimestamp(T, UTC))
    assert not verify_signature(SECRET, BODY, header, now=T + 301, tolerance=300)


def test_any_of_several_signatures_will_do_while_a_secret_is_rotated() -> None:
    old = sign("the-old-secret-0123", BODY, timestamp=T).split(",")[1]
    header = f"{sign(SECRET, BODY, timestamp=T)},{old}"
    assert verify_signature(SECRET, BODY, header, now=T)
    assert verify_signature("the-old-secret-0123", BODY, header, now=T)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "v1=abc",
        f"t={T}",
        f"t=soon,v1={'0' * 64}",
        f"t={T},v1={'0' * 64}",
        f"t={T + 1}," + sign(SECRET, BODY, timestamp=T).split(",")[1],  # the time was changed
        f"t={'9' * 40}," + sign(SECRET, BODY, timestamp=T).split(",")[1],
    ],
)
def test_a_missing_malformed_or_forged_signature_is_refused(header: str | None) -> None:
    assert not verify_signature(SECRET, BODY, header, now=T)


def test_a_changed_body_or_another_secret_is_refused() -> None:
    header = sign(SECRET, BODY, timestamp=T)
    assert not verify_signature(SECRET, BODY.replace(b"1", b"2"), header, now=T)
    assert not verify_signature(SECRET + "x", BODY, header, now=T)
