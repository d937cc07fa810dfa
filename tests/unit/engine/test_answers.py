"""One reading of another party's HTTP answers for every caller: what is retried, and what an error may quote."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from tenure.engine.answers import (
    Verdict,
    excerpt,
    origin,
    problem_detail,
    public_url,
    quoted,
    retry_after,
    scrub,
    verdict,
)

SECRET = "s3cr3t-token-0123456789"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.SUCCESS),
        (202, Verdict.SUCCESS),
        (204, Verdict.SUCCESS),
        (408, Verdict.RETRY),
        (425, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (599, Verdict.RETRY),
        (101, Verdict.REFUSED),
        (302, Verdict.REFUSED),
        (400, Verdict.REFUSED),
        (401, Verdict.REFUSED),
        (403, Verdict.REFUSED),
        (404, Verdict.REFUSED),
        (409, Verdict.REFUSED),
        (422, Verdict.REFUSED),
    ],
)
def test_the_verdict_of_each_status(status: int, expected: Verdict) -> None:
    assert verdict(status) is expected


def test_every_caller_retries_the_same_statuses() -> None:
    """engine.http, engine.signaling and engine.notify decide with verdict alone: none has a list of its own."""
    from tenure.engine import http, notify, signaling

    for module in (http, notify, signaling):
        assert module.verdict is verdict
        assert not [name for name in vars(module) if "RETRY_STATUS" in name.upper()], module.__name__


def test_a_secret_is_scrubbed_before_the_text_is_cut() -> None:
    text = f"bad token {SECRET} given"
    cut = excerpt(text, [SECRET], limit=12)
    assert cut == "bad token <t..."
    assert SECRET[:4] not in excerpt(text, [SECRET], limit=14)
    assert scrub(text, [None, "", SECRET]) == "bad token <token> given"
    assert excerpt("one\n  two\tthree", [], limit=100) == "one two three"


def test_a_problem_documents_detail_is_quoted_else_the_body() -> None:
    doc = httpx.Response(409, json={"title": "refused", "detail": f"token {SECRET} superseded"})
    assert problem_detail(doc, [SECRET], limit=100) == "token <token> superseded"
    titled = httpx.Response(409, json={"title": "refused", "detail": " "})
    assert problem_detail(titled, [], limit=100) == "refused"
    plain = httpx.Response(502, text=f"<html>{SECRET}</html>")
    assert problem_detail(plain, [SECRET], limit=100) == "<html><token></html>"
    assert problem_detail(httpx.Response(500), [], limit=100) == ""
    assert quoted("") == ""
    assert quoted("busy") == ": busy"


def test_retry_after_in_seconds_is_read_and_capped() -> None:
    cap = timedelta(minutes=10)
    assert retry_after(httpx.Response(503, headers={"Retry-After": "1"}), cap=cap) == timedelta(seconds=1)
    assert retry_after(httpx.Response(503, headers={"Retry-After": "99999"}), cap=cap) == cap
    assert retry_after(httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), cap=cap) is None
    assert retry_after(httpx.Response(503), cap=cap) is None


def test_urls_in_messages_carry_no_credentials() -> None:
    assert public_url("http://user:pass@127.0.0.1:9/p?key=sesame#x") == "http://127.0.0.1:9/p"
    assert public_url("not a url at all \x00") == "<invalid URL>"
    assert origin("https://user:pass@cp.example:8443/v1/callbacks?t=1") == "https://cp.example:8443"
    assert origin("http://[::1", unknown="the callback URL") == "the callback URL"
