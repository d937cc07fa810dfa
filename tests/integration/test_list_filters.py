"""Listing by what a resource's data says, and by states of older versions of its kind, on both stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tenure import InvalidArgument, Kind, UnknownState
from tenure.store import open_store
from tenure.store.protocol import EngineStore
from tests.kinds_for_tests import order_v1, order_v2


def test_a_list_filters_on_the_text_a_top_level_data_key_holds(store: EngineStore) -> None:
    failed = store.create("job", data={"ended": "failed", "n": 1})
    store.create("job", data={"ended": "completed"})
    store.create("job", data={"nested": {"ended": "failed"}})
    store.create("job")
    page = store.list(kind="job", data=("ended", "failed"))
    assert [r.id for r in page.items] == [failed.id]
    assert [r.id for r in store.list(data=("ended", "failed")).items] == [failed.id], "without a kind too"
    assert store.list(data=("n", "1")).items == [], "text only: the number 1 is not the text '1'"
    assert store.list(data=("ended", "")).items == []


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("bad key", "x", "must name a KEY of 1 to 64 letters, digits or underscores"),
        ('ended"', "x", "must name a KEY"),
        ("$.ended", "x", "must name a KEY"),
        ("", "x", "must name a KEY"),
        ("ended", "x" * 201, "must give a TEXT of at most 200 characters"),
    ],
)
def test_a_data_filter_that_is_not_a_plain_key_and_short_text_is_refused(
    store: EngineStore, key: str, value: str, problem: str
) -> None:
    with pytest.raises(InvalidArgument, match=problem):
        store.list(data=(key, value))


def test_a_list_by_kind_takes_states_only_an_older_version_has(
    open_other: Callable[[list[Kind]], EngineStore],
) -> None:
    old = open_other([order_v1])
    packing = old.fire(old.create("order"), "pack")
    both = open_other([order_v1, order_v2])
    assert [r.id for r in both.list(kind="order", state="packing").items] == [packing.id]
    with pytest.raises(UnknownState):
        both.list(kind="order", state="nowhere")


@pytest.fixture
def open_other(store_url: str, store: EngineStore) -> Iterator[Callable[[list[Kind]], EngineStore]]:
    """More stores on the test's database (migrated by ``store``), with the kinds each one is given."""
    opened: list[EngineStore] = []

    def make(kinds: list[Kind]) -> EngineStore:
        s = open_store(store_url, kinds, check_schema=False)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()
