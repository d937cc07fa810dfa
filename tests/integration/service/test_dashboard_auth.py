"""The dashboard's browser auth through a real server: sign in with a token, hold a session cookie
(HttpOnly, SameSite=Strict), be sent to the form without one; auth off opens directly; what pages
show is escaped; the live stream takes the session cookie. Guessing tokens is slowed down, on an
injected clock: repeated failed token checks from one address (the sign-in form, a bearer token on a
page or on the API, counted together; an IPv6 address by its /64) or from all addresses together are
refused for a while (429 with Retry-After), and ``tenure serve`` counts them by the connection's
address, whatever X-Forwarded-For says.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tenure.cli.planes import Plane, free_port
from tenure.service import ServiceConfig
from tenure.service.limiter import MAX_FAILED_SIGN_INS, SignInLimiter, address_key
from tests.integration.service.test_dashboard import rows, signed_in
from tests.support.live_server import ADMIN, CALLBACK, READER, all_scopes_config
from tests.support.problems import assert_problem
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


def test_behind_a_proxy_that_terminates_tls_the_public_url_is_this_site(start_live: Callable[..., Live]) -> None:
    """The server takes no forwarded headers, so a request through an https proxy says http: the page at the
    configured https ``public_url`` may still sign in, and its cookie is Secure."""
    live = start_live(all_scopes_config(public_url="https://tenure.example/"))
    public = live.client().post("/ui/login", data={"token": READER}, headers={"Origin": "https://tenure.example"})
    assert public.status_code == 303, public.text
    assert "Secure" in [part.strip() for part in public.headers["set-cookie"].split(";")]
    direct = live.client().post("/ui/login", data={"token": READER}, headers={"Origin": live.url})
    assert direct.status_code == 303, direct.text
    assert "Secure" not in [part.strip() for part in direct.headers["set-cookie"].split(";")]
    for elsewhere in ("https://evil.example", "http://tenure.example"):
        refused = live.client().post("/ui/login", data={"token": READER}, headers={"Origin": elsewhere})
        assert refused.status_code == 403, elsewhere


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

    # the search box (an id no resource has: the note repeats it), a role, and a state not of that role
    short = "<script>x</script>"  # a role takes at most 20 characters
    searched = http.get("/ui/resources", params={"q": hostile})
    bad_role = http.get("/ui/resources", params={"role": short})
    not_in_role = http.get("/ui/resources", params={"role": "work", "state": hostile, "kind": "image"})
    assert searched.status_code == 200, searched.text
    assert bad_role.status_code == 422, bad_role.text
    assert not_in_role.status_code == 200, not_in_role.text
    assert "No resource has the id &#39;&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&#39;." in searched.text
    assert 'value="&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"' in searched.text  # the box keeps it
    assert "got &#39;&lt;script&gt;x&lt;/script&gt;&#39;" in bad_role.text
    assert "State &#39;&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&#39; is not a work state" in not_in_role.text
    for page in (searched, bad_role, not_in_role):
        assert "<script>x" not in page.text
        assert "<script>alert" not in page.text


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


class SteppedClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limited(start_live: Callable[..., Live]) -> tuple[Live, SteppedClock]:
    """A service of its own whose limiter takes 3 failures per address and 5 in all in 300 s, on a stepped clock."""
    live = start_live()
    clock = SteppedClock()
    live.server.app.state.sign_ins = SignInLimiter(limit=3, window=300.0, clock=clock, overall=5)
    return live, clock


def test_repeated_failed_sign_ins_from_one_address_are_refused_for_a_while(
    limited: tuple[Live, SteppedClock],
) -> None:
    live, clock = limited
    http = live.client()

    for guess in range(3):
        assert http.post("/ui/login", data={"token": f"guess-{guess}-0123456789"}).status_code == 401
        clock.now += 10
    refused = http.post("/ui/login", data={"token": READER})  # even the right token: nothing is checked

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "270"  # until the first failure (30 s ago) is 300 s old
    assert refused.headers["content-type"].startswith("text/html")
    assert "set-cookie" not in refused.headers
    assert (
        "Too many failed token checks from this address (3 within 5 minutes): try again in 270 seconds. "
        "No token was checked."
    ) in refused.text
    assert 'name="token"' in refused.text  # the form is still there, to try later
    # another address is not slowed down by this one's failures
    elsewhere = live.client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    assert elsewhere.post("/ui/login", data={"token": READER}).status_code == 303
    # once the oldest failure is out of the window, one more try is allowed
    clock.now += 269
    assert http.post("/ui/login", data={"token": READER}).status_code == 429
    clock.now += 1
    assert http.post("/ui/login", data={"token": READER}).status_code == 303
    # a success does not wipe the record: two failures are still in the window, a third fills it again
    assert http.post("/ui/login", data={"token": "guess-3-0123456789"}).status_code == 401
    assert http.post("/ui/login", data={"token": READER}).status_code == 429


def test_the_same_wrong_token_again_is_no_new_guess(limited: tuple[Live, SteppedClock]) -> None:
    """A client retrying the one stale token it was given keeps hearing 401; it does not lock its address out."""
    live, _ = limited
    stale = live.client(headers={"Authorization": "Bearer stale-token-0123456789"})
    for _ in range(3 * 3):
        assert_problem(stale.get("/v1/kinds"), 401, "unauthorized")
        assert live.client().post("/ui/login", data={"token": "stale-token-0123456789"}).status_code == 401
    assert live.client().post("/ui/login", data={"token": ""}).status_code == 401  # an empty form guesses nothing
    assert live.client().post("/ui/login", data={"token": READER}).status_code == 303


def test_bearer_tokens_on_the_api_are_counted_and_refused_with_a_429_problem(
    limited: tuple[Live, SteppedClock],
) -> None:
    live, clock = limited
    for guess in range(3):
        with live.client(headers={"Authorization": f"Bearer guess-{guess}-0123456789"}) as http:
            assert_problem(http.get("/v1/kinds"), 401, "unauthorized")
        clock.now += 1

    refused = live.client(headers={"Authorization": f"Bearer {ADMIN}"}).get("/v1/kinds")  # nothing is checked

    problem = assert_problem(refused, 429, "too-many-failed-authentications")
    assert refused.headers["retry-after"] == "297"  # the first failure was 3 s ago
    assert problem["retryAfter"] == 297
    assert problem["detail"] == (
        "Too many failed token checks from this address (3 within 5 minutes): try again in 297 seconds. "
        "No token was checked."
    )
    # one limiter for every way a token is checked: the sign-in form and the pages refuse this address too
    assert live.client().post("/ui/login", data={"token": READER}).status_code == 429
    page = live.client(headers={"Authorization": f"Bearer {READER}"}).get("/ui/kinds")
    assert_problem(page, 429, "too-many-failed-authentications")
    # a request without a token guesses nothing and is told what is missing
    assert_problem(live.anonymous.get("/v1/kinds"), 401, "unauthorized")
    clock.now += 297
    assert live.client(headers={"Authorization": f"Bearer {ADMIN}"}).get("/v1/kinds").status_code == 200


def test_bearer_tokens_on_the_pages_are_counted_and_refused_with_a_429(limited: tuple[Live, SteppedClock]) -> None:
    live, _ = limited
    for guess in range(3):
        with live.client(headers={"Authorization": f"Bearer guess-{guess}-0123456789"}) as http:
            assert http.get("/ui/kinds").status_code == 303  # to the sign-in form, as without a token

    refused = live.client(headers={"Authorization": f"Bearer {READER}"}).get("/ui/resources")

    assert_problem(refused, 429, "too-many-failed-authentications")
    assert refused.headers["retry-after"] == "300"
    assert_problem(
        live.client(headers={"Authorization": f"Bearer {ADMIN}"}).get("/v1/kinds"),
        429,
        "too-many-failed-authentications",
    )
    # a signed-in browser shows no token: its session goes on
    elsewhere = live.client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    assert elsewhere.post("/ui/login", data={"token": READER}).status_code == 303
    assert elsewhere.get("/ui/resources").status_code == 200


def test_many_addresses_do_not_multiply_the_guesses(limited: tuple[Live, SteppedClock]) -> None:
    """Past 5 failures from all addresses together (each under its own 3), no token is checked for an address
    that has not signed in within the window; one that has keeps its own limit."""
    live, clock = limited

    def at(address: str, **kwargs: object) -> httpx.Client:
        return live.client(transport=httpx.HTTPTransport(local_address=address), **kwargs)  # type: ignore[arg-type]

    assert at("127.0.0.1").post("/ui/login", data={"token": READER}).status_code == 303  # at work already
    guesses = [("127.0.0.2", 0), ("127.0.0.2", 1), ("127.0.0.3", 2), ("127.0.0.3", 3), ("127.0.0.4", 4)]
    for address, guess in guesses:
        assert at(address).post("/ui/login", data={"token": f"guess-{guess}-0123456789"}).status_code == 401
        clock.now += 10

    fresh = at("127.0.0.5").post("/ui/login", data={"token": READER})
    assert fresh.status_code == 429
    assert fresh.headers["retry-after"] == "250"
    assert "from all addresses together (5 within 5 minutes): try again in 250 seconds" in fresh.text
    api = at("127.0.0.5", headers={"Authorization": f"Bearer {ADMIN}"}).get("/v1/kinds")
    assert_problem(api, 429, "too-many-failed-authentications")
    assert at("127.0.0.1", headers={"Authorization": f"Bearer {ADMIN}"}).get("/v1/kinds").status_code == 200
    clock.now += 250  # the oldest failure leaves the window
    assert at("127.0.0.5").post("/ui/login", data={"token": READER}).status_code == 303


def test_ipv6_addresses_count_by_their_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("not an address") == "not an address"
    clock = SteppedClock()
    limiter = SignInLimiter(limit=2, window=60.0, clock=clock)
    limiter.failed(address_key("2001:db8:1:2::a"), "guess-1")
    limiter.failed(address_key("2001:db8:1:2::b"), "guess-2")
    assert limiter.wait(address_key("2001:db8:1:2::c")) == 60.0  # the same /64
    assert limiter.wait(address_key("2001:db8:1:3::a")) == 0.0


def test_a_window_under_a_minute_is_said_in_seconds() -> None:
    clock = SteppedClock()
    limiter = SignInLimiter(limit=1, window=30.0, clock=clock)
    limiter.failed("10.0.0.1", "guess")
    clock.now += 29
    refusal = limiter.refusal("10.0.0.1")
    assert refusal is not None
    assert refusal.seconds == 1
    assert refusal.message == (
        "Too many failed token checks from this address (1 within 30 seconds): try again in 1 second. "
        "No token was checked."
    )


def test_the_limiter_forgets_the_least_recent_addresses_beyond_its_bound() -> None:
    clock = SteppedClock()
    limiter = SignInLimiter(limit=1, window=60.0, clock=clock, max_addresses=2)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        limiter.failed(address, f"guess-{address}")
    assert limiter.wait("10.0.0.1") == 0.0  # forgotten
    assert limiter.wait("10.0.0.2") == limiter.wait("10.0.0.3") == 60.0
    clock.now += 60
    assert limiter.wait("10.0.0.3") == 0.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """``tenure serve`` itself (auth on, a reader's token), as it runs uvicorn."""
    home: Path = tmp_path_factory.mktemp("forwarded")
    database = f"sqlite:///{home / 'tenure.db'}"
    admin = secrets.token_urlsafe(24)
    (home / "tenure.toml").write_text(
        f'[service]\ndatabase = "{database}"\n\n'
        f'[[tokens]]\nclient = "admin"\ntoken = "{admin}"\nscopes = ["admin"]\n\n'
        f'[[tokens]]\nclient = "reader"\ntoken = "{READER}"\nscopes = ["read"]\n'
    )
    plane = Plane("forwarded", free_port(), home, admin, workers=0).start()
    try:
        yield plane
    finally:
        plane.stop()


def test_tenure_serve_counts_the_connection_s_address_not_x_forwarded_for(served: Plane) -> None:
    """A client naming another address in X-Forwarded-For for each guess is still one address to the limiter."""
    with httpx.Client(base_url=served.url, timeout=10) as http:
        for guess in range(MAX_FAILED_SIGN_INS):
            spoofed = {"X-Forwarded-For": f"203.0.113.{guess + 1}", "X-Real-IP": f"203.0.113.{guess + 1}"}
            r = http.post("/ui/login", data={"token": f"guess-{guess}-0123456789"}, headers=spoofed)
            assert r.status_code == 401, r.text
        refused = http.post("/ui/login", data={"token": READER}, headers={"X-Forwarded-For": "198.51.100.9"})
        assert refused.status_code == 429, refused.text
        api = http.get("/v1/kinds", headers={"Authorization": f"Bearer {READER}", "X-Forwarded-For": "198.51.100.10"})
        assert_problem(api, 429, "too-many-failed-authentications")
