"""The web dashboard's pages through a real server: resources (filters, counts, paging), one
resource (diagram with its path, journal, waits, parties, flows), kinds, and the static assets.

Auth is on (the module's service) and each test signs in with the reader's token, as a browser would.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest

from tenure.flow.records import FlowRunRow, FlowTaskRow
from tests.support.live_server import READER
from tests.support.service_support import Live, Waiting

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
