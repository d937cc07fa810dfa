"""The web dashboard's pages through a real server: resources (filters by kind, state, role and search
text, counts, paging, what stands out), one resource (diagram with its path and counts, the journal a
page at a time, waits, parties, flows), kinds (counts on the diagrams), and the static assets.

Auth is on (the module's service) and each test signs in with the reader's token, as a browser would.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest

from tenure import Event, Kind, Role, State, open_store
from tenure.flow.records import FlowRunRow, FlowTaskRow
from tenure.service.dashboard.diagram import short_count
from tenure.service.dashboard.pages import JOURNAL_PAGE, MAX_READS, PATH_READ
from tests.kinds_for_tests import JOB_WAIT
from tests.store_support import FakeClock
from tests.support.live_server import READER
from tests.support.service_support import KINDS, Live, Waiting

pytestmark = pytest.mark.timeout(60)


def signed_in(live: Live, token: str = READER) -> httpx.Client:
    """A client holding a dashboard session (the cookie the sign-in form set)."""
    http = live.client()
    r = http.post("/ui/login", data={"token": token, "next": "/ui/resources"})
    assert r.status_code == 303, r.text
    return http


def rows(html: str) -> dict[str, str]:
    """The resources table's rows by resource id: each row's markup."""
    found = re.findall(r'(<tr data-resource-id="([^"]+)".*?</tr>)', html, re.DOTALL)
    return {rid: row for row, rid in found}


def test_the_root_leads_a_browser_to_the_resources_page(live: Live) -> None:
    for path in ("/", "/ui", "/ui/"):
        r = live.anonymous.get(path, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert r.status_code == 307, path
        assert r.headers["location"] == "/ui/resources"
    # an API client asking for / still learns that the API is under /v1
    api = live.reader.get("/")
    assert api.status_code == 404
    assert api.headers["content-type"].startswith("application/problem+json")


def test_the_resources_page_shows_each_resource_with_its_role_and_what_went_wrong(live: Live) -> None:
    store = live.store
    queued = store.create("image", {"name": "a"})
    saving = store.fire(store.create("image", {"name": "b"}).id, "upload")
    killed = store.fire(store.fire(store.create("image", {"name": "c"}).id, "upload").id, "kill", error="disk full")
    job = store.create("job", {})
    http = signed_in(live)

    r = http.get("/ui/resources")

    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    shown = rows(r.text)
    assert list(shown) == [queued.id, saving.id, killed.id, job.id]  # oldest first
    assert f'href="/ui/resources/{queued.id}"' in shown[queued.id]
    assert "state role-rest" in shown[queued.id]
    assert "state role-work" in shown[saving.id]
    assert 'class="failing"' in shown[killed.id]
    assert "state role-rest failing" in shown[killed.id]
    assert "disk full" in shown[killed.id]
    assert 'class="failing"' not in shown[saving.id]
    # counts per state, for every kind when none is chosen
    assert re.search(r'data-state="queued"[^>]*>queued <b>1</b>', r.text)
    assert re.search(r'data-state="killed"[^>]*>killed <b>1</b>', r.text)
    # the live script's stream starts where the page was read
    assert re.search(r'data-watch="/ui/watch\?after=[0-9a-f]{32}"', r.text)


def test_filters_by_kind_state_and_data(live: Live) -> None:
    store = live.store
    a = store.create("image", {"name": "a"})
    b = store.fire(store.create("image", {"name": "b"}).id, "upload", data={"ended": "failed"})
    c = store.fire(store.create("image", {"name": "c"}).id, "upload", data={"ended": "fine"})
    job = store.create("job", {})
    http = signed_in(live)

    assert list(rows(http.get("/ui/resources", params={"kind": "image"}).text)) == [a.id, b.id, c.id]
    assert list(rows(http.get("/ui/resources", params={"kind": "job"}).text)) == [job.id]
    by_state = http.get("/ui/resources", params={"kind": "image", "state": "saving"})
    assert list(rows(by_state.text)) == [b.id, c.id]
    assert '<option value="saving" selected>' in by_state.text
    by_data = http.get("/ui/resources", params={"data": "ended:failed"})
    assert list(rows(by_data.text)) == [b.id]
    assert 'value="ended:failed"' in by_data.text
    # counts are those of the chosen kind
    only_jobs = http.get("/ui/resources", params={"kind": "job"}).text
    assert 'data-state="queued"' not in only_jobs
    bad = http.get("/ui/resources", params={"data": "no-colon"})
    assert bad.status_code == 422
    assert "KEY:TEXT" in bad.text


def test_the_resources_page_comes_a_keyset_page_at_a_time(live: Live) -> None:
    made = [live.store.create("image", {"name": f"n{i}"}).id for i in range(5)]
    http = signed_in(live)
    seen: list[str] = []
    url: str | None = "/ui/resources?kind=image&limit=2"
    pages = 0
    while url is not None:
        r = http.get(url)
        assert r.status_code == 200, r.text
        seen += list(rows(r.text))
        found = re.search(r'<a href="([^"]+)" rel="next">', r.text)
        url = found.group(1).replace("&amp;", "&") if found else None
        pages += 1
    assert seen == made
    assert pages == 3


def test_the_resource_page_draws_its_path_and_lists_its_journal(live: Live) -> None:
    store = live.store
    r = store.create("image", {"name": "disk", "size_bytes": 3}, actor="writer")
    store.fire(r.id, "upload", actor="writer")
    store.fire(r.id, "activate", actor="uploader", detail={"checksum": "abc"})
    store.use(r.id, "urn:party:1", ttl=timedelta(hours=1), client="writer", admin=True)
    http = signed_in(live)

    page = http.get(f"/ui/resources/{r.id}")

    assert page.status_code == 200, page.text
    text = page.text
    assert "<svg" in text
    assert '<g class="state current visited" data-state="active"' in text
    assert '<g class="state visited" data-state="queued"' in text
    assert '<g class="state" data-state="killed"' in text
    assert '<path class="edge taken" data-source="queued" data-target="saving"' in text
    assert '<path class="edge" data-source="saving" data-target="killed"' in text
    journal = re.findall(r'<tr data-version="(\d+)"><td class="num">\d+</td><td>([^<]+)</td>', text)
    assert [(int(v), e) for v, e in journal][:3] == [(1, "@create"), (2, "upload"), (3, "activate")]
    assert "uploader" in text
    assert "checksum" in text
    assert "urn:party:1" in text
    assert "&#34;size_bytes&#34;: 3" in text  # the spec, as escaped JSON
    assert f'data-watch="/ui/watch?resource={r.id}&amp;after=' in text


def test_the_resource_page_shows_waits_without_the_token_and_flow_checkpoints(
    live: Live, make_waiting: Callable[..., Waiting]
) -> None:
    waiting = make_waiting(("left", "right"))
    rid = waiting.resource.id
    live.store.create_flow_run(
        FlowRunRow(id="run-1", flow="copy", version=1, fingerprint="f", state="failed", resource_id=rid, inputs={})
    )
    live.store.save_flow(
        "run-1", [FlowTaskRow("fetch", "done", 1, 1, result={"bytes": 3}), FlowTaskRow("write", "failed", 2, 2,
        failure={"error": "quota"})],
    )  # fmt: skip
    http = signed_in(live)

    text = http.get(f"/ui/resources/{rid}").text

    assert '<g class="state current visited" data-state="awaiting"' in text
    assert re.search(r'<span class="key">left</span>', text)
    assert re.search(r'<span class="key">right</span>', text)
    assert waiting.token not in text
    assert "run-1" in text
    assert "copy" in text
    assert "&#34;quota&#34;" in text
    assert '<tr class="failing"><td>write</td>' in text


def test_an_unknown_resource_is_a_readable_404(live: Live) -> None:
    http = signed_in(live)
    for rid in ("nobody", "bad id with spaces"):
        r = http.get(f"/ui/resources/{rid}")
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("text/html")
        assert 'role="alert"' in r.text


def test_the_kinds_page_draws_every_kind_with_its_counts(live: Live) -> None:
    store = live.store
    store.create("image", {"name": "a"})
    store.create("image", {"name": "b"})
    http = signed_in(live)

    r = http.get("/ui/kinds")

    assert r.status_code == 200, r.text
    for name in sorted(store.kinds):
        assert f'id="kind-{name}"' in r.text
    assert r.text.count("<svg") == sum(len(store.kind_versions(n)) for n in store.kinds)
    assert '<g class="state occupied" data-state="queued"' in r.text
    assert re.search(r'<tr data-state="queued"><td><a [^>]+>queued</a></td><td>rest</td><td class="num">2</td>', r.text)


def test_the_assets_are_served_from_the_package(live: Live) -> None:
    html = signed_in(live).get("/ui/resources").text
    for name, media in (("dashboard.css", "text/css"), ("dashboard.js", "text/javascript")):
        url = re.search(rf'"(/ui/static/{name}\?v=[0-9a-f]+)"', html)
        assert url is not None, name
        r = live.anonymous.get(url.group(1))
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(media)
        again = live.anonymous.get(url.group(1), headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
    assert live.anonymous.get("/ui/static/../app.py").status_code == 404
    assert live.anonymous.get("/ui/static/nothing.js").status_code == 404


# --- filters by role and search text -----------------------------------------------------------


#: A kind with a work state named as ``image``'s rest state: the role filter must tell them apart.
relay = Kind(
    "relay",
    initial="queued",
    states=[State("queued", 1, Role.WORK), State("sent", 2, Role.FINAL)],
    events=[Event("send", "queued", "sent")],
)


@pytest.fixture
def with_relay(start_live: Callable[..., Live], module_db: str) -> Iterator[Live]:
    """A service over the module's database whose store also loads ``relay``."""
    store = open_store(module_db, (*KINDS, relay), check_schema=False)
    try:
        yield start_live(store=store)
    finally:
        store.close()


def notes(html: str) -> list[str]:
    return re.findall(r'<p class="message note" role="status" id="note">(.*?)</p>', html, re.DOTALL)


def test_filters_by_role_take_the_states_of_that_role(live: Live) -> None:
    store = live.store
    queued = store.create("image", {"name": "a"})
    saving = store.fire(store.create("image", {"name": "b"}).id, "upload")
    killed = store.fire(store.fire(store.create("image", {"name": "c"}).id, "upload").id, "kill")
    deleted = store.fire(store.create("image", {"name": "d"}).id, "delete")
    pending = store.create("job", {})
    http = signed_in(live)

    work = http.get("/ui/resources", params={"role": "work"})
    assert work.status_code == 200, work.text
    assert list(rows(work.text)) == [saving.id, pending.id]
    assert '<option value="work" selected>' in work.text
    assert list(rows(http.get("/ui/resources", params={"role": "rest", "kind": "image"}).text)) == [
        queued.id,
        killed.id,
    ]
    assert list(rows(http.get("/ui/resources", params={"role": "final"}).text)) == [deleted.id]
    # a state and a role together: the state, if it has that role
    both = http.get("/ui/resources", params={"role": "rest", "state": "killed"})
    assert list(rows(both.text)) == [killed.id]
    mismatch = http.get("/ui/resources", params={"role": "work", "state": "killed", "kind": "image"})
    assert mismatch.status_code == 200
    assert rows(mismatch.text) == {}
    assert notes(mismatch.text) == ["State &#39;killed&#39; is not a work state in kind image."]
    none = http.get("/ui/resources", params={"role": "rest", "kind": "ticket"})
    assert notes(none.text) == ["No state of kind ticket is a rest state."]
    bad = http.get("/ui/resources", params={"role": "busy"})
    assert bad.status_code == 422
    assert "the role must be one of work, wait, rest, final; got &#39;busy&#39;" in bad.text


def test_the_role_filter_goes_by_each_resource_s_own_kind(with_relay: Live) -> None:
    """``queued`` is a rest state of ``image`` and a work state of ``relay``: each row is judged by its kind."""
    store = with_relay.store
    made = [store.create("image" if i % 2 == 0 else "relay", {"name": f"n{i}"} if i % 2 == 0 else {}) for i in range(7)]
    images = [r.id for r in made if r.kind == "image"]
    relays = [r.id for r in made if r.kind == "relay"]
    http = signed_in(with_relay)

    assert list(rows(http.get("/ui/resources", params={"role": "work"}).text)) == relays
    # pages of two still hold two rows where the store's pages hold relays in between
    seen: list[str] = []
    url: str | None = "/ui/resources?role=rest&limit=2"
    while url is not None:
        page = http.get(url)
        assert page.status_code == 200, page.text
        found = list(rows(page.text))
        assert len(found) <= 2
        seen += found
        link = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        url = link.group(1).replace("&amp;", "&") if link else None
    assert seen == images


def test_a_role_page_that_reads_only_other_roles_says_so_and_goes_on(with_relay: Live) -> None:
    """The store reads the states of the role; rows whose own kind gives that state another role are dropped.
    When a page's bounded reads find only those, the page says so and its next link goes on after them."""
    store = with_relay.store
    images = [store.create("image", {"name": f"n{i}"}).id for i in range(MAX_READS + 1)]  # queued: rest
    relay_row = store.create("relay", {}).id  # queued: work
    http = signed_in(with_relay)

    first = http.get("/ui/resources", params={"role": "work", "limit": 1})

    assert first.status_code == 200, first.text
    assert rows(first.text) == {}
    assert notes(first.text) == [
        "None of the resources read for this page is in a work state of its own kind version (their state has "
        "another role there); the next page goes on after them."
    ]
    link = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert link is not None
    assert f"after={images[MAX_READS - 1]}" in link.group(1)
    second = http.get(link.group(1).replace("&amp;", "&"))
    assert list(rows(second.text)) == [relay_row]


def test_the_search_box_opens_an_id_or_filters_by_data_or_party(live: Live) -> None:
    store = live.store
    colon = store.create("image", {"name": "a"}, resource_id="img:7")
    failed = store.fire(store.create("image", {"name": "b"}).id, "upload", data={"ended": "failed"})
    used = store.create("image", {"name": "c"})
    store.use(used.id, "tag:example.org,2026:ci/42", ttl=timedelta(hours=1), client="writer", admin=True)
    store.use(used.id, "https://ci.example.org/jobs/7", ttl=timedelta(hours=1), client="writer", admin=True)
    http = signed_in(live)

    page = http.get("/ui/resources")
    assert 'name="q"' in page.text
    assert 'placeholder="id, key:text or tag:/urn: party"' in page.text
    assert "Search takes an exact resource id (opens it); KEY:TEXT" in page.text

    for rid in (failed.id, colon.id):  # an id with a colon is an id first
        opened = http.get("/ui/resources", params={"q": f" {rid} "})
        assert opened.status_code == 303
        assert opened.headers["location"] == f"/ui/resources/{quote(rid, safe='')}"
    by_data = http.get("/ui/resources", params={"q": "ended:failed"})
    assert list(rows(by_data.text)) == [failed.id]
    assert 'value="ended:failed"' in by_data.text
    for party in ("tag:example.org,2026:ci/42", "https://ci.example.org/jobs/7"):
        assert list(rows(http.get("/ui/resources", params={"q": party}).text)) == [used.id], party
    assert rows(http.get("/ui/resources", params={"q": "urn:example:nobody"}).text) == {}
    # combined with the other filters
    assert rows(http.get("/ui/resources", params={"q": "ended:failed", "state": "queued"}).text) == {}
    missing = http.get("/ui/resources", params={"q": "nobody"})
    assert missing.status_code == 200
    assert rows(missing.text) == {}
    assert notes(missing.text)[0].startswith("No resource has the id &#39;nobody&#39;. The search box takes")
    bad_key = http.get("/ui/resources", params={"q": "no key:x"})
    assert bad_key.status_code == 422
    assert "KEY of 1 to 64 letters, digits or underscores" in bad_key.text
    bad_party = http.get("/ui/resources", params={"q": "tag:with blanks"})
    assert bad_party.status_code == 422
    assert "must be a URI with a scheme" in bad_party.text


# --- counts on the diagrams, and what stands out -----------------------------------------------


def badge(html: str, state: str) -> str | None:
    """The count badge drawn in ``state``'s group of the first diagram that has one, as 'classes:count'."""
    found = re.search(
        rf'data-state="{state}"[^>]*>(?:(?!</g>).)*?<g class="(badge[^"]*)" data-count="(\d+)">', html, re.DOTALL
    )
    return None if found is None else f"{found.group(1)}:{found.group(2)}"


def test_the_diagrams_carry_a_count_per_state(live: Live) -> None:
    store = live.store
    first = store.create("image", {"name": "a"})
    store.create("image", {"name": "b"})
    store.fire(store.fire(store.create("image", {"name": "c"}).id, "upload").id, "kill")
    store.create("job", {})
    http = signed_in(live)

    kinds = http.get("/ui/kinds").text
    assert badge(kinds, "queued") == "badge:2"
    assert badge(kinds, "killed") == "badge failing:1"
    assert badge(kinds, "saving") is None
    assert badge(kinds, "pending") == "badge:1"
    assert "<title>2 resources in state queued</title>" in kinds

    resource = http.get(f"/ui/resources/{first.id}").text
    assert badge(resource, "queued") == "badge:2"  # the resources of its kind, not only itself
    assert badge(resource, "killed") == "badge failing:1"
    assert badge(resource, "pending") is None  # another kind's
    assert "each badge counts the image resources in that state now" in resource


def test_short_counts_fit_a_badge() -> None:
    counts = (1, 9999, 10_000, 340_512, 999_999, 2_000_000, 2_150_000, 9_999_999, 45_600_000, 999_999_999)
    shown = [short_count(n) for n in (*counts, 1_250_000_000, 12_000_000_000)]
    assert shown == ["1", "9999", "10k", "340k", "999k", "2M", "2.1M", "9.9M", "45M", "999M", "1.2G", "12G"]
    assert all(len(text) <= 4 for text in shown)


def test_the_stylesheet_leaves_the_badges_their_own_colours(live: Live) -> None:
    """The badge's fill is drawn in the SVG: no rule of the stylesheet overrides it (nor the current state's)."""
    html = signed_in(live).get("/ui/resources").text
    url = re.search(r'"(/ui/static/dashboard.css\?v=[0-9a-f]+)"', html)
    assert url is not None
    css = live.anonymous.get(url.group(1)).text
    assert "g.badge" not in css
    assert ".diagram g.state.current > text" in css  # the state's own texts only


def test_waits_near_their_deadline_and_failures_stand_out(start_live: Callable[..., Live], module_db: str) -> None:
    clock = FakeClock(datetime.now(UTC))
    store = open_store(module_db, KINDS, clock=clock, check_schema=False)
    try:
        live = start_live(store=store)
        assert timedelta(minutes=10) == JOB_WAIT
        overdue = store.fire(store.create("job", {}).id, "request")
        clock.advance(timedelta(minutes=6))
        near = store.fire(store.create("job", {}).id, "request")
        clock.advance(timedelta(minutes=6))
        far = store.fire(store.create("job", {}).id, "request")
        # now: overdue's deadline passed 2 minutes ago, near's is 4 minutes away, far's 10
        killed = store.fire(store.fire(store.create("image", {"name": "c"}).id, "upload").id, "kill")
        http = signed_in(live)

        page = http.get("/ui/resources")

        assert page.status_code == 200, page.text
        shown = rows(page.text)
        assert re.search(r'<tr data-resource-id="[^"]+" class="near overdue">', shown[overdue.id])
        assert ">overdue</b>" in shown[overdue.id]
        assert re.search(r'<tr data-resource-id="[^"]+" class="near">', shown[near.id])
        assert "overdue" not in shown[near.id]
        assert re.search(r'<tr data-resource-id="[^"]+" class="">', shown[far.id])
        assert 'class="failing"' in shown[killed.id]
        assert "a wait whose deadline is less than 5 minutes away, or past" in page.text
    finally:
        store.close()


# --- the journal, a page at a time ------------------------------------------------------------


def test_the_journal_comes_a_keyset_page_at_a_time(live: Live) -> None:
    """The journal, 50 entries a page by version: from the latest page back to version 1, each page linking
    to the older and newer ones, every entry shown once; a page before version 1 links back to the latest."""
    assert (JOURNAL_PAGE, PATH_READ) == (50, 500)
    store = live.store
    r = store.create("image", {"name": "busy"})
    for _ in range(559):  # each renewal is a write: versions 2 to 560
        r = store.use(r.id, "urn:example:renewer", ttl=timedelta(hours=1), client="writer", admin=True)
    assert r.version == 560
    http = signed_in(live)

    pages: list[list[int]] = []
    url: str | None = f"/ui/resources/{r.id}"
    while url is not None:
        page = http.get(url)
        assert page.status_code == 200, page.text
        versions = [int(v) for v in re.findall(r'<tr data-version="(\d+)">', page.text)]
        assert 0 < len(versions) <= JOURNAL_PAGE
        pages.append(versions)
        newer = re.search(r'<a href="([^"]+)" rel="next" class="newer">', page.text)
        assert (newer is None) == (len(pages) == 1), "every page but the newest links to a newer one"
        older = re.search(r'<a href="([^"]+)" rel="prev" class="older">', page.text)
        url = older.group(1).replace("&amp;", "&") if older else None

    assert [p[0] for p in pages] == [511, 461, 411, 361, 311, 261, 211, 161, 111, 61, 11, 1]
    assert [v for p in reversed(pages) for v in p] == list(range(1, 561))
    first = http.get(f"/ui/resources/{r.id}").text
    assert "versions 511 to 560 of 560" in first
    assert "as its latest 500 journal entries tell it" in first
    # going back up: the next versions, then the newest page itself
    newer = re.search(r'<a href="([^"]+)" rel="next" class="newer">', http.get(f"/ui/resources/{r.id}?before=61").text)
    assert newer is not None
    assert newer.group(1) == f"/ui/resources/{r.id}?before=111"
    newer = re.search(r'<a href="([^"]+)" rel="next" class="newer">', http.get(f"/ui/resources/{r.id}?before=511").text)
    assert newer is not None
    assert newer.group(1) == f"/ui/resources/{r.id}"
    assert http.get(f"/ui/resources/{r.id}", params={"before": 0}).status_code == 422
    # before version 1 there is nothing: the page says so and leads back to the latest entries
    empty = http.get(f"/ui/resources/{r.id}", params={"before": 1})
    assert empty.status_code == 200, empty.text
    assert re.findall(r'<tr data-version="(\d+)">', empty.text) == []
    assert 'id="journal-empty"' in empty.text
    assert 'class="older"' not in empty.text
    newer = re.search(r'<a href="([^"]+)" rel="next" class="newer">', empty.text)
    assert newer is not None
    assert newer.group(1) == f"/ui/resources/{r.id}"
