"""The dashboard's browser auth through a real server: sign in with a token, hold a session cookie
(HttpOnly, SameSite=Strict), be sent to the form without one; auth off opens directly; what pages
show is escaped; the live stream takes the session cookie.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tenure.service import ServiceConfig
from tests.integration.service.test_dashboard import rows, signed_in
from tests.support.live_server import CALLBACK, READER
from tests.support.service_support import Live
from tests.support.sse import SseReader

pytestmark = pytest.mark.timeout(60)

PAGES = ("/ui/resources?kind=image", "/ui/kinds", "/ui/resources/some-id")


def test_a_page_without_a_session_leads_to_the_sign_in_form(live: Live) -> None:
    for path in PAGES:
        r = live.anonymous.get(path)
        assert r.status_code == 303, path
        target = urlsplit(r.headers["location"])
        assert target.path == "/ui/login"
        assert parse_qs(target.query)["next"] == [path]
    form = live.anonymous.get("/ui/login?next=/ui/kinds")
    assert form.status_code == 200
    assert 'name="token" type="password"' in form.text
    assert 'name="next" value="/ui/kinds"' in form.text


def test_signing_in_with_a_good_token_sets_a_strict_http_only_session_cookie(live: Live) -> None:
    rid = live.store.create("image", {"name": "a"}).id
    http = live.client()

    r = http.post("/ui/login", data={"token": READER, "next": "/ui/kinds"})

    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/kinds"
    cookie = r.headers["set-cookie"]
    attributes = [part.strip() for part in cookie.split(";")]
    name, _, value = attributes[0].partition("=")
    assert name == "tenure_session"
    assert len(value) >= 40
    assert READER not in cookie
    assert "HttpOnly" in attributes
    assert "SameSite=Strict" in attributes
    assert "Path=/ui" in attributes
    assert "Secure" not in attributes  # plain http here; https adds it
    page = http.get("/ui/resources")
    assert page.status_code == 200
    assert rid in rows(page.text)
    assert ">reader</span>" in page.text
    # signing out ends the session on the server, not only in this browser
    assert http.post("/ui/logout").status_code == 303
    replay = live.client(cookies={"tenure_session": value})
    assert replay.get("/ui/resources").status_code == 303


def test_a_bad_token_is_refused_with_a_clear_message(live: Live) -> None:
    for token in ("not-a-token-0123456789", ""):
        r = live.client().post("/ui/login", data={"token": token})
        assert r.status_code == 401
        assert "set-cookie" not in r.headers
        assert "That token is not valid" in r.text
    no_read = live.client().post("/ui/login", data={"token": CALLBACK})
    assert no_read.status_code == 403
    assert "may not read" in no_read.text
    assert "set-cookie" not in no_read.headers


def test_a_sign_in_posted_from_another_site_is_refused(live: Live) -> None:
    r = live.client().post("/ui/login", data={"token": READER}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert "set-cookie" not in r.headers


def test_after_signing_in_it_only_goes_back_to_the_dashboard(live: Live) -> None:
    for target in ("https://evil.example/", "//evil.example/ui/x", "/v1/resources", "/ui/login"):
        r = live.client().post("/ui/login", data={"token": READER, "next": target})
        assert r.headers["location"] == "/ui/resources", target


def test_with_auth_off_the_pages_open_directly(start_live: object) -> None:
    live = start_live(ServiceConfig(auth=False))  # type: ignore[operator]
    rid = live.store.create("image", {"name": "a"}).id
    for path in ("/ui/resources", "/ui/kinds", f"/ui/resources/{rid}"):
        r = live.anonymous.get(path)
        assert r.status_code == 200, path
        assert "Sign out" not in r.text
    assert live.anonymous.get("/ui/login").status_code == 303


def test_a_bearer_token_opens_the_pages_too(live: Live) -> None:
    assert live.reader.get("/ui/kinds").status_code == 200
    assert live.callbacker.get("/ui/kinds").status_code == 303  # no read scope


def test_what_the_pages_show_is_escaped(live: Live) -> None:
    hostile = '<script>alert("x")</script>'
    store = live.store
    r = store.create("image", {"name": hostile})
    store.fire(r.id, "upload", data={"note": hostile}, detail={"why": hostile})
    store.fire(r.id, "kill", error=f"<img src=x onerror=alert(1)>{hostile}")
    http = signed_in(live)

    pages = [
        http.get(f"/ui/resources/{r.id}"),
        http.get("/ui/resources"),
        http.get("/ui/resources", params={"data": 'x:"><script>alert(1)</script>'}),
        http.get("/ui/resources", params={"kind": hostile}),
    ]

    for page in pages:
        assert page.status_code in (200, 422), page.text
        assert "<script>alert" not in page.text
        assert "<img src=x" not in page.text
        assert "&lt;script&gt;alert" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[1].text


def test_the_live_stream_takes_the_session_cookie(live: Live) -> None:
    http = signed_in(live)
    timeout = httpx.Timeout(10.0, read=10.0)
    with http.stream("GET", "/ui/watch", params={"kind": "image"}, timeout=timeout) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        made = live.store.create("image", {"name": "a"})
        change = SseReader(stream).next()
    assert change.event == "change"
    assert (change.json()["resourceId"], change.json()["event"]) == (made.id, "@create")
    refused = live.anonymous.get("/ui/watch")
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")
