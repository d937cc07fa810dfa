"""Webhook subscriptions in the store, on both databases: what is accepted, where the cursor starts, leases.

Deliveries themselves (HTTP, signatures, retries) are pinned in ``tests/integration/engine/test_deliveries.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from tenure import InvalidArgument, SubscriptionNotFound, open_store
from tenure.store.feed import BEGINNING
from tenure.store.protocol import EngineStore
from tenure.store.subscriptions import MAX_URL, Subscriptions
from tests.conftest import KINDS
from tests.store_support import FakeClock
from tests.support.webhooks import settle, subscriptions_of

LEASE = timedelta(seconds=30)
URL = "http://127.0.0.1:9/hook"


@dataclass
class Opened:
    store: EngineStore
    subs: Subscriptions


@pytest.fixture
def opened(store_url: str, clock: FakeClock) -> Iterator[Opened]:
    s = open_store(store_url, KINDS, clock=clock, check_schema=False)
    try:
        s.migrate()
        yield Opened(s, subscriptions_of(s))
    finally:
        s.close()


# --- creating ---------------------------------------------------------------------------------------


def test_a_subscription_is_kept_with_its_filter_creator_and_a_made_secret(opened: Opened, clock: FakeClock) -> None:
    r = opened.store.create("image", {"name": "x"})
    by_resource = opened.subs.create(URL, resource_id=r.id, created_by="ci-bot")
    by_kind = opened.subs.create("https://example.com/h?x=1", kind="image", states=["active", "deleted"])

    assert len(by_resource.secret) >= 40  # token_urlsafe(32)
    assert by_resource.secret != by_kind.secret
    got = opened.subs.get(by_resource.id)
    assert got == by_resource
    assert (got.url, got.resource_id, got.kind, got.states, got.created_by) == (URL, r.id, None, None, "ci-bot")
    assert got.created_at == clock.now
    assert (got.attempts, got.delivered, got.next_attempt_at, got.last_error) == (0, 0, None, None)
    again = opened.subs.get(by_kind.id)
    assert (again.kind, again.states, again.resource_id) == ("image", ("active", "deleted"), None)
    assert "secret" not in repr(again)
    assert again.secret not in repr(again)


def test_a_chosen_secret_is_kept_as_given(opened: Opened) -> None:
    sub = opened.subs.create(URL, kind="job", secret="0123456789abcdef")
    assert opened.subs.get(sub.id).secret == "0123456789abcdef"


def test_the_cursor_starts_at_the_head_of_the_feed(opened: Opened) -> None:
    empty = opened.subs.create(URL, kind="image")
    assert empty.position == BEGINNING == opened.store.latest_position()
    r = opened.store.create("image", {"name": "before"})
    opened.store.fire(r.id, "upload")
    settle(opened.store)
    sub = opened.subs.create(URL, kind="image")
    assert sub.position == opened.store.latest_position() > empty.position
    assert opened.store.changes(sub.position).entries == []
    opened.store.fire(r.id, "activate")
    settle(opened.store)
    assert [c.event for c in opened.store.changes(sub.position).entries] == ["activate"]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "scheme"),
        ("example.com/hook", "not absolute"),
        ("http:///nohost", "no host"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://example.com/a b", "blank"),
        ("http://example.com:port/", "port"),
        ("http://example.com/" + "x" * MAX_URL, "too long"),
        ("", "empty"),
    ],
)
def test_a_url_that_is_not_an_absolute_http_url_is_refused_naming_the_field(opened: Opened, url: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        opened.subs.create(url, kind="image")
    assert info.value.field == "url"
    assert "http://" in info.value.constraint
    assert str(MAX_URL) in info.value.constraint


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({}, "filter"),
        ({"resource_id": "r1", "kind": "image"}, "filter"),
        ({"kind": "image", "states": ["flying"]}, "states"),
        ({"kind": "image", "states": []}, "states"),
        ({"kind": "image", "states": "active"}, "states"),
        ({"resource_id": "r1", "states": ["active"]}, "states"),
        ({"resource_id": ""}, "resource_id"),
        ({"kind": ""}, "kind"),
        ({"kind": "image", "secret": "short"}, "secret"),
        ({"kind": "image", "secret": "sixteen chars with blanks"}, "secret"),
    ],
)
def test_a_filter_or_secret_outside_the_rules_is_refused_naming_the_field(
    opened: Opened, filters: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        opened.subs.create(URL, **filters)
    assert info.value.field == field
    assert info.value.constraint
    assert opened.subs.list(every=True) == []


def test_a_wrong_secret_is_never_echoed_in_the_error(opened: Opened) -> None:
    with pytest.raises(InvalidArgument) as info:
        opened.subs.create(URL, kind="image", secret="tiny-secret")
    assert "tiny-secret" not in str(info.value)


def test_states_of_a_kind_this_store_does_not_know_are_taken_as_given(opened: Opened) -> None:
    sub = opened.subs.create(URL, kind="elsewhere", states=["up", "down", "up"])
    assert sub.states == ("up", "down")


# --- reading and deleting -----------------------------------------------------------------------------


def test_list_gives_a_creators_subscriptions_or_all_in_creation_order(opened: Opened) -> None:
    a1 = opened.subs.create(URL, kind="image", created_by="a")
    b1 = opened.subs.create(URL, kind="image", created_by="b")
    a2 = opened.subs.create(URL, kind="job", created_by="a")
    assert [s.id for s in opened.subs.list(created_by="a")] == [a1.id, a2.id]
    assert [s.id for s in opened.subs.list(every=True)] == [a1.id, b1.id, a2.id]
    assert [s.id for s in opened.subs.list(every=True, after=a1.id, limit=1)] == [b1.id]
    with pytest.raises(InvalidArgument):
        opened.subs.list()


def test_a_deleted_subscription_is_gone_and_an_unknown_id_is_not_found(opened: Opened) -> None:
    sub = opened.subs.create(URL, kind="image")
    opened.subs.delete(sub.id)
    assert opened.subs.find(sub.id) is None
    with pytest.raises(SubscriptionNotFound) as info:
        opened.subs.get(sub.id)
    assert info.value.subscription_id == sub.id
    with pytest.raises(SubscriptionNotFound):
        opened.subs.delete(sub.id)
    with pytest.raises(SubscriptionNotFound):
        opened.subs.get("nul\x00id")


# --- claims -----------------------------------------------------------------------------------------


def test_only_subscriptions_behind_the_head_are_claimed(opened: Opened) -> None:
    sub = opened.subs.create(URL, kind="image")
    assert opened.subs.claim_due("w1", lease=LEASE) == []
    opened.store.create("image", {"name": "x"})
    settle(opened.store)
    claimed = opened.subs.claim_due("w1", lease=LEASE)
    assert [s.id for s in claimed] == [sub.id]
    assert claimed[0].claimed_by == "w1"


def test_a_claimed_subscription_is_no_one_elses_until_its_lease_lapses(opened: Opened, clock: FakeClock) -> None:
    sub = opened.subs.create(URL, kind="image")
    opened.store.create("image", {"name": "x"})
    settle(opened.store)
    assert [s.id for s in opened.subs.claim_due("w1", lease=LEASE)] == [sub.id]
    assert opened.subs.claim_due("w2", lease=LEASE) == []
    clock.advance(LEASE + timedelta(seconds=1))
    assert [s.id for s in opened.subs.claim_due("w2", lease=LEASE)] == [sub.id]
    # The first holder's late cursor move is refused: w2 holds it now.
    head = opened.store.latest_position()
    assert not opened.subs.record_success(sub.id, head, worker="w1", lease=LEASE)
    assert opened.subs.record_success(sub.id, head, worker="w2", lease=LEASE)
    got = opened.subs.get(sub.id)
    assert (got.position, got.delivered, got.last_delivered_at) == (head, 1, clock.now)


def test_the_cursor_never_moves_back(opened: Opened) -> None:
    sub = opened.subs.create(URL, kind="image")
    opened.store.create("image", {"name": "x"})
    settle(opened.store)
    opened.subs.claim_due("w", lease=LEASE)
    head = opened.store.latest_position()
    assert opened.subs.record_success(sub.id, head, worker="w", lease=LEASE)
    assert not opened.subs.record_success(sub.id, sub.position, worker="w", lease=LEASE)
    assert opened.subs.get(sub.id).position == head


def test_a_failure_hands_the_claim_back_and_waits_until_the_next_attempt(opened: Opened, clock: FakeClock) -> None:
    sub = opened.subs.create(URL, kind="image")
    opened.store.create("image", {"name": "x"})
    settle(opened.store)
    opened.subs.claim_due("w1", lease=LEASE)
    retry_at = clock.now + timedelta(seconds=4)
    assert opened.subs.record_failure(sub.id, "answered 500", retry_at, worker="w1")
    got = opened.subs.get(sub.id)
    assert (got.attempts, got.last_error, got.next_attempt_at, got.claimed_by) == (1, "answered 500", retry_at, None)
    assert opened.subs.next_due() == retry_at
    assert opened.subs.claim_due("w2", lease=LEASE) == []
    clock.advance(timedelta(seconds=4))
    assert [s.attempts for s in opened.subs.claim_due("w2", lease=LEASE)] == [1]
    assert opened.subs.record_success(sub.id, opened.store.latest_position(), worker="w2", lease=LEASE)
    done = opened.subs.get(sub.id)
    assert (done.attempts, done.last_error, done.next_attempt_at) == (0, None, None)


def test_concurrent_claimers_never_hold_one_subscription_at_once(opened: Opened, store_url: str) -> None:
    subs = [opened.subs.create(URL, kind="image") for _ in range(20)]
    opened.store.create("image", {"name": "x"})
    settle(opened.store)
    others = [open_store(store_url, KINDS, check_schema=False) for _ in range(3)]
    taken: dict[str, list[str]] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(len(others))

    def claim(name: str, store: Any) -> None:
        mine = subscriptions_of(store)
        barrier.wait(10)
        for _ in range(10):
            for s in mine.claim_due(name, limit=3, lease=timedelta(minutes=5)):
                with lock:
                    taken.setdefault(s.id, []).append(name)

    try:
        threads = [threading.Thread(target=claim, args=(f"w{i}", s)) for i, s in enumerate(others)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        for s in others:
            s.close()
    assert sorted(taken) == sorted(s.id for s in subs)
    assert all(len(holders) == 1 for holders in taken.values()), taken


def test_next_due_names_only_times_still_to_come(opened: Opened, clock: FakeClock) -> None:
    opened.subs.create(URL, kind="image")
    assert opened.subs.next_due() is None
    opened.store.create("image", {"name": "x"})
    settle(opened.store)
    opened.subs.claim_due("w1", lease=LEASE)
    assert opened.subs.next_due() == clock.now + LEASE
    # A holder that died leaves its lease behind; once lapsed it is no reason to wake up early.
    clock.advance(LEASE + timedelta(seconds=1))
    assert opened.subs.next_due() is None
