"""``GET /v1/resources?data=KEY:TEXT``: listing by what a resource's data says (how a lifecycle ended, say)."""

from __future__ import annotations

from tenure.store.protocol import EngineStore
from tests.support.problems import assert_problem
from tests.support.service_support import Live


def test_resources_are_listed_by_the_text_a_data_key_holds(live: Live, service_store: EngineStore) -> None:
    failed = service_store.create("image", {"name": "a"}, data={"ended": "failed"})
    service_store.create("image", {"name": "b"}, data={"ended": "completed"})
    page = live.reader.get("/v1/resources", params={"kind": "image", "data": "ended:failed"})
    assert page.status_code == 200, page.text
    assert [r["id"] for r in page.json()["items"]] == [failed.id]


def test_a_data_filter_without_a_colon_or_with_a_bad_key_is_refused_naming_the_form(live: Live) -> None:
    no_colon = live.reader.get("/v1/resources", params={"data": "ended"})
    assert_problem(no_colon, 422, "invalid-argument")
    assert "must be KEY:TEXT, such as ended:failed" in no_colon.text
    bad_key = live.reader.get("/v1/resources", params={"data": "a.b:failed"})
    assert_problem(bad_key, 422, "invalid-argument")
    assert "must name a KEY of 1 to 64 letters, digits or underscores" in bad_key.text
