"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against ``tenure serve``.

A server subprocess on a free port of 127.0.0.1 (SQLite in a temporary directory, no engine workers so
that only the test moves resources, tokens for an admin, a writer and a reader). The tests sign in
with a token, load each page, filter (by kind, state, role and search text), open a resource, press an
event's button, retry a step backing off as an admin, watch a change made through the API arrive
without a reload, see a refused write explained, and check that a read-only session has no buttons
that write. Each page's screenshot is saved under ``docs/dashboard/``.

Without Chromium (``/usr/bin/chromium``, or ``TENURE_CHROMIUM``) or Playwright the tests skip, and
fail instead when ``TENURE_REQUIRE_BROWSER=1`` (as in CI). Playwright never downloads a browser here.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenure import open_store
from tenure.cli.planes import Plane, free_port
from tenure.kinds import builtin_kinds, builtin_tables

pytestmark = pytest.mark.timeout(180)

CHROMIUM = os.environ.get("TENURE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where the screenshots go (linked from the README).
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "dashboard"
#: How long the page may take to show a change (the script waits for a burst of changes to settle).
PATIENCE_MS = 10_000


def _missing() -> str | None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM}: install it with 'apt-get install -y chromium' (as .ci/run does)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed: pip install -e '.[dev]'"
    return None


@dataclass
class Served:
    url: str
    tokens: dict[str, str]
    #: The server's database, for what only the engine does (a failed attempt backing off).
    database: str

    def api(self, who: str = "admin") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[who]}"}, timeout=10)


@pytest.fixture(scope="module")
def served(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The server (after the browser, so that nothing starts when the tests skip)."""
    home = tmp_path_factory.mktemp("dashboard")
    tokens = {who: secrets.token_urlsafe(24) for who in ("admin", "writer", "reader")}
    scopes = {"admin": '"admin"', "writer": '"read", "write"', "reader": '"read"'}
    database = f"sqlite:///{home / 'tenure.db'}"
    config = [f'[service]\ndatabase = "{database}"\n']
    config += [f'[[tokens]]\nclient = "{who}"\ntoken = "{tokens[who]}"\nscopes = [{scopes[who]}]\n' for who in tokens]
    (home / "tenure.toml").write_text("\n".join(config))
    plane = Plane("dashboard", free_port(), home, tokens["admin"], workers=0).start()
    try:
        yield Served(plane.url, tokens, database)
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing is not None:
        if os.environ.get("TENURE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TENURE_REQUIRE_BROWSER=1 but the browser tests cannot run: {missing}", pytrace=False)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    """``new_page()``: a page in a fresh browser context (its own cookies), closed after the test."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(PATIENCE_MS)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def sign_in(page: Any, served: Served, who: str, path: str = "/ui/resources") -> None:
    page.goto(served.url + path)
    assert "/ui/login" in page.url
    page.fill("#token", served.tokens[who])
    page.click("form.login button[type=submit]")
    page.wait_for_url(f"**{path}")


def create(served: Served, kind: str, spec: dict[str, Any], *events: str, **more: Any) -> str:
    with served.api("writer") as api:
        made = api.post("/v1/resources", json={"kind": kind, "spec": spec, **more})
        assert made.status_code == 201, made.text
        rid: str = made.json()["id"]
        for event in events:
            fired = api.post(f"/v1/resources/{rid}/events", json={"event": event})
            assert fired.status_code == 200, fired.text
    return rid


def fire(served: Served, rid: str, event: str) -> None:
    with served.api("writer") as api:
        r = api.post(f"/v1/resources/{rid}/events", json={"event": event})
        assert r.status_code == 200, r.text


def back_off(served: Served, rid: str, kind: str, state: str) -> None:
    """Fail the step of ``rid`` once, as a worker would: its next attempt is an hour away."""
    store = open_store(served.database, builtin_kinds(), tables=builtin_tables())
    try:
        claims = store.claim("browser-test", [(kind, state)], limit=100, lease=timedelta(seconds=30))
        mine = [c for c in claims if c.resource.id == rid]
        for other in claims:
            if other.resource.id != rid:
                store.release(other)
        assert len(mine) == 1, claims
        later = store.now() + timedelta(hours=1)
        store.retry_later(mine[0], error="the registry answered 503", at=later, attempts=1, actor="browser-test")
    finally:
        store.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name))


def test_sign_in_load_each_page_and_filter(served: Served, new_page: Any) -> None:
    from playwright.sync_api import expect

    create(served, "image", {"name": "base-os"}, "upload", "activate")
    create(served, "image", {"name": "nightly"}, "upload")
    broken = create(served, "image", {"name": "broken"}, "upload", "kill")
    create(served, "image", {"name": "fresh"})
    create(served, "volume", {"size_gb": 5, "project": "dash"})
    create(served, "deployment", {"name": "web", "image": "nginx:1"}, "deployed", sharable=True)
    page = new_page()

    page.goto(served.url + "/ui/resources")
    expect(page.locator("h1")).to_have_text("Sign in")
    shot(page, "login.png")
    page.fill("#token", "not-a-token")
    page.click("form.login button[type=submit]")
    expect(page.locator("p.message.error")).to_contain_text("That token is not valid")
    page.fill("#token", served.tokens["writer"])
    page.click("form.login button[type=submit]")
    page.wait_for_url("**/ui/resources")
    expect(page.locator("table.resources tbody tr[data-resource-id]")).to_have_count(6)
    expect(page.locator("#live-status")).to_have_text("live")
    shot(page, "resources.png")

    page.select_option("select[name=kind]", "image")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/ui/resources?kind=image**")
    expect(page.locator("h1")).to_have_text("Resources of kind image")
    expect(page.locator("table.resources tbody tr[data-resource-id]")).to_have_count(4)
    page.select_option("select[name=state]", "killed")
    page.click("form.filters button[type=submit]")
    rows = page.locator("table.resources tbody tr[data-resource-id]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_class("failing")

    page.goto(served.url + "/ui/resources")
    page.select_option("select[name=role]", "work")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/ui/resources?**role=work**")
    expect(page.locator("table.resources tbody tr[data-resource-id]")).to_have_count(2)  # saving, and the volume's
    page.fill("input[name=q]", broken)
    page.select_option("select[name=role]", "")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(f"**/ui/resources/{broken}")  # an exact id opens the resource
    expect(page.locator("h1 .state")).to_contain_text("killed")

    page.click("header.top nav >> text=Kinds")
    page.wait_for_url("**/ui/kinds")
    expect(page.locator("section.kind").first).to_be_visible()
    assert page.locator("svg g.state.occupied").count() >= 4
    expect(page.locator("#kind-image svg g.badge").first).to_be_visible()
    expect(page.locator("#kind-image svg g.state[data-state=killed] g.badge")).to_have_attribute("data-count", "1")
    page.locator("#kind-image").evaluate("section => section.scrollIntoView()")  # a kind with resources, counted
    shot(page, "kinds.png")


def test_open_a_resource_press_a_button_and_see_the_change(served: Served, new_page: Any) -> None:
    from playwright.sync_api import expect

    rid = create(served, "image", {"name": "press-me"})
    page = new_page()
    sign_in(page, served, "writer", "/ui/resources?kind=image")
    page.click(f"tr[data-resource-id='{rid}'] a")
    page.wait_for_url(f"**/ui/resources/{rid}")
    badge = page.locator("h1 .state")
    expect(badge).to_contain_text("queued")
    expect(page.locator("section.actions button.event")).to_have_text(["upload", "stage", "import", "delete"])

    page.click("button[data-event=upload]")

    expect(badge).to_contain_text("saving")
    expect(page.locator("table.journal tbody tr").last).to_contain_text("writer")
    expect(page.locator("button[data-event=activate]")).to_be_visible()
    page.click("button[data-event=activate]")
    expect(badge).to_contain_text("active")
    expect(page.locator(".diagram path.edge.taken")).to_have_count(2)
    shot(page, "resource.png")


def test_a_change_made_elsewhere_arrives_without_a_reload(served: Served, new_page: Any) -> None:
    from playwright.sync_api import expect

    rid = create(served, "image", {"name": "watched"})
    page = new_page()
    sign_in(page, served, "reader", f"/ui/resources/{rid}")
    expect(page.locator("#live-status")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")

    fire(served, rid, "upload")

    expect(page.locator("h1 .state")).to_contain_text("saving", timeout=PATIENCE_MS)
    expect(page.locator("#live-status")).to_contain_text("updated")
    assert page.evaluate("window.__notReloaded") is True
    # and on the resources page, a row's state changes in place
    page.goto(f"{served.url}/ui/resources?kind=image")
    expect(page.locator("#live-status")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")
    fire(served, rid, "activate")
    expect(page.locator(f"tr[data-resource-id='{rid}'] .state")).to_contain_text("active")
    assert page.evaluate("window.__notReloaded") is True


def test_a_refused_press_is_explained_on_the_page(served: Served, new_page: Any) -> None:
    from playwright.sync_api import expect

    rid = create(served, "image", {"name": "raced"})
    page = new_page()
    # No live stream on this page: it stays as it was read while the resource moves on.
    page.route("**/ui/watch**", lambda route: route.abort())
    sign_in(page, served, "writer", f"/ui/resources/{rid}")
    expect(page.locator("button[data-event=delete]")).to_be_visible()
    fire(served, rid, "upload")

    page.click("button[data-event=delete]")

    notice = page.locator("#notice")
    expect(notice).to_contain_text("has moved on to version 2, now in state 'saving' since this page was read")
    expect(page.locator("h1 .state")).to_contain_text("saving")  # the page shown is the current one
    expect(page).to_have_url(f"{served.url}/ui/resources/{rid}")  # a reload reads it again, posting nothing
    assert "Traceback" not in page.content()

    # An event the state does not allow (as a form kept from another state would send): 409, explained.
    page.eval_on_selector("button[data-event=activate]", "b => { b.form.elements.event.value = 'restore'; }")
    page.click("button[data-event=activate]")
    expect(notice).to_contain_text("'restore' is not allowed in state 'saving'. Events allowed there:")
    with served.api("reader") as api:
        assert api.get(f"/v1/resources/{rid}").json()["state"] == "saving"


def test_a_read_only_session_has_no_buttons_that_write(served: Served, new_page: Any) -> None:
    from playwright.sync_api import expect

    rid = create(served, "deployment", {"name": "ro", "image": "nginx:1"}, "deployed", sharable=True)
    reader = new_page()
    sign_in(reader, served, "reader", f"/ui/resources/{rid}")
    expect(reader.locator("h1 .state")).to_contain_text("deployed")
    expect(reader.locator("section.actions")).to_have_count(0)
    expect(reader.locator("form[action$='/events'], form[action$='/teardown']")).to_have_count(0)

    admin = new_page()
    admin.on("dialog", lambda dialog: dialog.accept())
    sign_in(admin, served, "admin", f"/ui/resources/{rid}")
    expect(admin.locator("button[data-event=undeploy]")).to_be_visible()
    admin.fill("input[name=reason]", "browser test")
    admin.click("button.danger")
    expect(admin.locator("h1 .state")).to_contain_text("undeploying")
    expect(reader.locator("h1 .state")).to_contain_text("undeploying")  # live, on the reader's page too


def test_an_admin_retries_a_step_backing_off_now(served: Served, new_page: Any) -> None:
    from playwright.sync_api import expect

    rid = create(served, "image", {"name": "flaky"}, "upload")
    back_off(served, rid, "image", "saving")
    writer = new_page()
    sign_in(writer, served, "writer", f"/ui/resources/{rid}")
    expect(writer.locator("button[data-event=activate]")).to_be_visible()
    expect(writer.locator("button.retry")).to_have_count(0)  # admins only

    admin = new_page()
    sign_in(admin, served, "admin", f"/ui/resources/{rid}")
    expect(admin.locator("dl.facts")).to_contain_text("the registry answered 503")
    admin.click("button.retry")

    expect(admin.locator("table.journal tbody tr").last).to_contain_text("@retry-now")
    expect(admin.locator("table.journal tbody tr").last).to_contain_text("admin")
    expect(admin.locator("button.retry")).to_have_count(0)  # due now: nothing left to retry
    with served.api("reader") as api:
        body = api.get(f"/v1/resources/{rid}").json()
    assert (body["state"], body["attempts"], body["error"]) == ("saving", 1, "the registry answered 503")
