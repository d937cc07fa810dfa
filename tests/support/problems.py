"""Checking the service's problem documents (RFC 9457) in tests."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["PROBLEM_TYPE", "assert_problem"]

PROBLEM_TYPE = "urn:tenure:problem:"


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """Check that ``response`` is a problem document of ``status`` and type ``slug``; return it."""
    assert response.status_code == status, f"{response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_TYPE + slug, body
    assert body["status"] == status, body
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert "Traceback" not in response.text
    if status == 503:
        assert int(response.headers["retry-after"]) > 0
    return body
