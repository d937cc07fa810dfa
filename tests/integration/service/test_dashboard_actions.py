"""The dashboard's buttons that write, through a real server: an event per allowed (client) event, and
for admins retry now (a step backing off) and force teardown (kinds that share); each form carries the
session's CSRF token, needs the API's scope, and is pinned to the version its page showed (a stale
page gets a readable 412, a write the state no longer allows a readable 409, never a stack trace).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from tenure import open_store
from tenure.kinds.deployment import deployment
from tenure.service.dashboard.sessions import COOKIE
from tenure.store.protocol import EngineStore
from tests.integration.service.test_dashboard import signed_in
from tests.support.live_server import ADMIN, READER, WRITER
from tests.support.service_support import KINDS, Live

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def module_store(module_db: str) -> Iterator[EngineStore]:
    """The service tests' store, with the ``deployment`` kind (it declares sharing) added."""
    s = open_store(module_db, (*KINDS, deployment), check_schema=False)
    try:
        s.migrate()
        yield s
    finally:
        s.close()


def forms(html: str) -> dict[str, dict[str, str]]:
    """The write forms of a page by their button's event (or "teardown", "retry"): each form's hidden fields."""
    found = {}
    for action, body in re.findall(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', html, re.DOTALL):
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', body))
        if action.endswith("/events"):
            found[fields["event"]] = {"action": action, **fields}
        elif action.endswith("/teardown"):
            found["teardown"] = {"action": action, **fields}
        elif action.endswith("/retry"):
            found["retry"] = {"action": action, **fields}
    return found


def csrf_of(live: Live, http: httpx.Client) -> str:
    """The CSRF token the server holds for this client's session (what its pages would carry)."""
    token = live.server.app.state.dashboard_sessions.csrf(http.cookies.get(COOKIE))
    assert token
    return str(token)


def post(
    http: httpx.Client, form: dict[str, str], headers: dict[str, str] | None = None, **changes: str | None
) -> httpx.Response:
    data = {k: v for k, v in {**form, **changes}.items() if k != "action" and v is not None}
    return http.post(form["action"], data=data, headers=headers)


def test_the_page_offers_the_events_the_state_allows_to_a_client(live: Live) -> None:
    r = live.store.create("image", {"name": "a"})
    http = signed_in(live, WRITER)

    page = http.get(f"/ui/resources/{r.id}")

    assert page.status_code == 200, page.text
    shown = forms(page.text)
    kind = live.store.kinds["image"]
    assert list(shown) == [e for e in kind.allowed_events("queued") if e not in kind.engine_events]
    upload = shown["upload"]
    assert upload["version"] == "1"
    assert upload["csrf"] == csrf_of(live, http)
    assert "teardown" not in shown  # image does not share, and a writer is no admin


def test_a_button_fires_its_event_as_the_session_s_client(live: Live) -> None:
    r = live.store.create("image", {"name": "a"})
    http = signed_in(live, WRITER)
    upload = forms(http.get(f"/ui/resources/{r.id}").text)["upload"]

    done = post(http, upload)

    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/ui/resources/{r.id}"
    after = live.store.get(r.id)
    assert (after.state, after.version) == ("saving", 2)
    assert live.store.journal(r.id)[-1].actor == "writer"
    # the page now offers what saving allows, pinned to version 2
    offered = forms(http.get(f"/ui/resources/{r.id}").text)
    assert "upload" not in offered
    assert offered["activate"]["version"] == "2"


def test_a_form_without_this_session_s_csrf_token_is_refused(live: Live) -> None:
    r = live.store.create("image", {"name": "a"})
    http = signed_in(live, WRITER)
    upload = forms(http.get(f"/ui/resources/{r.id}").text)["upload"]
    other = signed_in(live, WRITER)
    other_token = forms(other.get(f"/ui/resources/{r.id}").text)["upload"]["csrf"]
    assert other_token != upload["csrf"]  # a token per session

    for csrf in (None, "", "not-the-token", other_token):
        refused = post(http, upload, csrf=csrf)
        assert refused.status_code == 403, csrf
        assert "CSRF token" in refused.text
        assert "Traceback" not in refused.text
    # the right token, from another site's page
    assert post(http, upload, {"Origin": "https://evil.example"}).status_code == 403
    assert post(http, upload, {"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert live.store.get(r.id).version == 1


def test_a_read_only_session_sees_no_write_buttons_and_may_not_post(live: Live) -> None:
    r = live.store.create("image", {"name": "a"})
    http = signed_in(live, READER)

    page = http.get(f"/ui/resources/{r.id}")

    assert page.status_code == 200
    assert forms(page.text) == {}
    assert 'class="actions"' not in page.text
    # even with its own session's token, the post is refused for want of the write scope
    action = f"/ui/resources/{r.id}/events"
    refused = http.post(action, data={"csrf": csrf_of(live, http), "version": "1", "event": "upload"})
    assert refused.status_code == 403
    assert "may not fire events" in refused.text
    assert "the &#39;write&#39; scope" in refused.text
    assert live.store.get(r.id).version == 1
    # without a session at all, the form leads to the sign-in form
    nobody = live.client().post(action, data={"csrf": "x", "version": "1", "event": "upload"})
    assert nobody.status_code == 303
    assert nobody.headers["location"] == f"/ui/login?next=%2Fui%2Fresources%2F{r.id}"


def test_a_stale_page_gets_a_readable_412_and_the_current_page(live: Live) -> None:
    r = live.store.create("image", {"name": "a"})
    http = signed_in(live, WRITER)
    shown = forms(http.get(f"/ui/resources/{r.id}").text)
    live.store.fire(r.id, "upload", actor="someone-else")  # the resource moves on after the page was read

    stale = post(http, shown["delete"])

    assert stale.status_code == 412, stale.text
    assert stale.headers["content-type"].startswith("text/html")
    assert "Traceback" not in stale.text
    assert "has moved on to version 2, now in state &#39;saving&#39; since this page was read" in stale.text
    assert forms(stale.text)["activate"]["version"] == "2"  # the page is the current one
    assert live.store.get(r.id).state == "saving"


def test_an_event_the_state_does_not_allow_gets_a_readable_409(live: Live) -> None:
    r = live.store.create("image", {"name": "a"})
    http = signed_in(live, WRITER)
    upload = forms(http.get(f"/ui/resources/{r.id}").text)["upload"]

    refused = post(http, upload, event="activate")

    assert refused.status_code == 409, refused.text
    assert "Not done: &#39;activate&#39; is not allowed in state &#39;queued&#39;" in refused.text
    assert "Events allowed there: upload, stage" in refused.text
    assert "Traceback" not in refused.text
    unknown = post(http, upload, event="fly")
    assert unknown.status_code == 422
    assert "fly" in unknown.text


def test_an_admin_may_force_the_teardown_of_a_shared_resource(live: Live) -> None:
    rid = live.store.create("deployment", {"name": "web", "image": "nginx:1"}).id
    live.store.fire(rid, "deployed", actor="test-engine")
    writer = forms(signed_in(live, WRITER).get(f"/ui/resources/{rid}").text)
    assert "teardown" not in writer
    assert "undeploy" in writer
    admin = signed_in(live, ADMIN)
    teardown = forms(admin.get(f"/ui/resources/{rid}").text)["teardown"]

    done = post(admin, teardown, reason="the host is going away")

    assert done.status_code == 303, done.text
    after = live.store.get(rid)
    assert after.state == "undeploying"
    last = live.store.journal(rid)[-1]
    assert last.actor == "admin"
    assert "the host is going away" in str(last.detail)
    # a writer who posts it anyway is refused for want of the admin scope
    writer_http = signed_in(live, WRITER)
    refused = post(writer_http, {**teardown, "csrf": csrf_of(live, writer_http)})
    assert refused.status_code == 403
    assert "the &#39;admin&#39; scope" in refused.text


def test_with_auth_off_the_buttons_work_with_the_app_s_token(start_live: object) -> None:
    from tenure.service import ServiceConfig

    live = start_live(ServiceConfig(auth=False))  # type: ignore[operator]
    r = live.store.create("image", {"name": "a"})
    http = live.client()
    upload = forms(http.get(f"/ui/resources/{r.id}").text)["upload"]

    assert post(http, upload, csrf="wrong").status_code == 403
    assert post(http, upload).status_code == 303
    assert live.store.get(r.id).state == "saving"


def backing_off(live: Live) -> str:
    """A job whose first attempt failed, its next one scheduled an hour later."""
    rid = live.store.create("job", {}).id
    claims = live.store.claim("w1", [("job", "pending")], lease=timedelta(seconds=30))
    assert [c.resource.id for c in claims] == [rid]
    live.store.retry_later(claims[0], error="provider said 503", at=live.store.now() + timedelta(hours=1), attempts=1)
    return rid


def test_an_admin_may_retry_a_step_backing_off_now(live: Live) -> None:
    rid = backing_off(live)
    before = live.store.get(rid)
    assert "retry" not in forms(signed_in(live, WRITER).get(f"/ui/resources/{rid}").text)
    admin = signed_in(live, ADMIN)
    page = admin.get(f"/ui/resources/{rid}").text
    retry = forms(page)["retry"]
    assert retry["version"] == str(before.version)
    assert '<button type="submit" class="retry"' in page

    done = post(admin, retry)

    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/ui/resources/{rid}"
    after = live.store.get(rid)
    assert (after.state, after.version, after.attempts) == ("pending", before.version + 1, 1)
    assert after.next_attempt_at is not None
    assert after.next_attempt_at <= live.store.now()
    last = live.store.journal(rid)[-1]
    assert (last.event, last.actor) == ("@retry-now", "admin")
    # due now: the page offers it no more
    assert "retry" not in forms(admin.get(f"/ui/resources/{rid}").text)


def test_retry_now_is_offered_only_where_it_applies(live: Live) -> None:
    admin = signed_in(live, ADMIN)
    due = live.store.create("job", {})  # its first attempt is due at once
    resting = live.store.create("image", {"name": "a"})
    for rid in (due.id, resting.id):
        assert "retry" not in forms(admin.get(f"/ui/resources/{rid}").text)


def test_a_rest_state_backing_off_on_its_way_to_a_desired_state_offers_retry_now(live: Live) -> None:
    """The button follows the store's rule (one function): a rest state's step backing off is retried too."""
    admin = signed_in(live, ADMIN)
    rid = live.store.set_desired_state(live.store.create("image", {"name": "a"}).id, "deleted").id
    assert "retry" not in forms(admin.get(f"/ui/resources/{rid}").text)  # due at once: nothing to hurry
    claims = live.store.claim("w1", [("image", "queued")], lease=timedelta(seconds=30))
    assert [c.resource.id for c in claims] == [rid]
    assert "retry" not in forms(admin.get(f"/ui/resources/{rid}").text)  # a worker holds it
    before = live.store.retry_later(
        claims[0], error="data plane said 503", at=live.store.now() + timedelta(hours=1), attempts=1
    )

    retry = forms(admin.get(f"/ui/resources/{rid}").text)["retry"]
    done = post(admin, retry)

    assert done.status_code == 303, done.text
    after = live.store.get(rid)
    assert (after.state, after.desired_state, after.version) == ("queued", "deleted", before.version + 1)
    assert live.store.journal(rid)[-1].event == "@retry-now"


def test_a_refused_retry_now_is_explained(live: Live) -> None:
    rid = backing_off(live)
    admin = signed_in(live, ADMIN)
    retry = forms(admin.get(f"/ui/resources/{rid}").text)["retry"]
    live.store.retry_now(rid, actor="someone-else")  # another admin pressed first

    stale = post(admin, retry)
    assert stale.status_code == 412, stale.text
    assert "Not done: retry now was asked of version 2, but the resource has moved on to version 3" in stale.text

    again = post(admin, retry, version="3")  # the current version, but nothing backs off any more
    assert again.status_code == 409, again.text
    assert (
        "cannot be retried now: it is in state &#39;pending&#39; (role: work) and its next attempt is due" in again.text
    )
    assert "Traceback" not in again.text
    writer = signed_in(live, WRITER)
    refused = post(writer, {**retry, "csrf": csrf_of(live, writer)})
    assert refused.status_code == 403
    assert "may not retry a step now" in refused.text
    assert live.store.get(rid).version == 3
