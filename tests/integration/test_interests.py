"""Interests on both stores: registering, renewing, expiring, deregistering, sharing, and listing by party."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from tenure import InvalidArgument, ResourceNotFound, open_store
from tenure.kinds.image import image
from tenure.store import Interest, NotSharable
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock, all_journal

pytestmark = pytest.mark.timeout(120)

ALICE = "tag:example.com,2024:alice"
BOB = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
CAROL = "https://carol.example/clients/1"
HOUR = timedelta(hours=1)


@pytest.fixture
def store_url(reused_store_url: str) -> str:
    """Overrides the root conftest's: one database per module, emptied before each test."""
    return reused_store_url


def test_registering_records_an_interest_until_its_expiry(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("image", {"name": "x"})
    interest = store.register_interest(r.id, ALICE, ttl=HOUR)
    assert interest == Interest(r.id, ALICE, clock.now, clock.now + HOUR)
    assert interest.to_json() == {
        "resource_id": r.id,
        "party": ALICE,
        "registered_at": clock.now.isoformat(),
        "expires_at": (clock.now + HOUR).isoformat(),
    }
    assert store.interests(r.id) == [interest]
    # Not a transition: no version, no journal entry.
    assert store.get(r.id) == r
    assert len(all_journal(store, r.id)) == 1


def test_the_ttl_is_capped_by_the_maximum(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("image", {"name": "x"})
    assert store.register_interest(r.id, ALICE, ttl=timedelta(days=30)).expires_at == clock.now + timedelta(days=1)
    capped = store.register_interest(r.id, BOB, ttl=HOUR, max_ttl=timedelta(minutes=5))
    assert capped.expires_at == clock.now + timedelta(minutes=5)


def test_registering_again_renews_and_keeps_when_it_began(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("image", {"name": "x"})
    first = store.register_interest(r.id, ALICE, ttl=HOUR)
    clock.advance(timedelta(minutes=50))
    renewed = store.register_interest(r.id, ALICE, ttl=HOUR)
    assert (renewed.registered_at, renewed.expires_at) == (first.registered_at, clock.now + HOUR)
    clock.advance(timedelta(minutes=59))
    assert store.interests(r.id) == [renewed]


def test_an_expired_interest_no_longer_counts_and_registering_again_starts_anew(
    store: EngineStore, clock: FakeClock
) -> None:
    r = store.create("image", {"name": "x"})
    store.register_interest(r.id, ALICE, ttl=HOUR)
    bob = store.register_interest(r.id, BOB, ttl=2 * HOUR)
    clock.advance(HOUR)
    assert store.interests(r.id) == [bob]  # alice's expired exactly now
    again = store.register_interest(r.id, ALICE, ttl=HOUR)
    assert again.registered_at == clock.now
    assert store.interests(r.id) == [bob, again]


def test_deregistering_says_whether_there_was_an_interest(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("image", {"name": "x"})
    store.register_interest(r.id, ALICE, ttl=HOUR)
    store.register_interest(r.id, BOB, ttl=timedelta(minutes=1))
    assert store.deregister_interest(r.id, ALICE) is True
    assert store.deregister_interest(r.id, ALICE) is False
    clock.advance(timedelta(minutes=2))
    assert store.deregister_interest(r.id, BOB) is False  # it had expired already
    assert store.deregister_interest("nope", BOB) is False
    assert store.interests(r.id) == []


@pytest.mark.parametrize(
    "party",
    ["alice", "", "tag:", ":x", "tag:with space", "tag:tab\there", "1tag:x", "tag:" + "x" * 497, "tag:\x00"],
)
def test_a_party_must_be_a_uri_with_a_scheme(store: EngineStore, party: str) -> None:
    r = store.create("image", {"name": "x"})
    with pytest.raises(InvalidArgument) as caught:
        store.register_interest(r.id, party, ttl=HOUR)
    assert (caught.value.field, caught.value.got) == ("party", party)
    assert "URI with a scheme" in caught.value.constraint
    with pytest.raises(InvalidArgument):
        store.list(party=party)
    assert store.interests(r.id) == []


def test_the_longest_party_is_accepted(store: EngineStore) -> None:
    r = store.create("image", {"name": "x"})
    party = "tag:" + "x" * 496
    assert store.register_interest(r.id, party, ttl=HOUR).party == party


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1)])
def test_ttls_must_be_positive(store: EngineStore, ttl: timedelta) -> None:
    r = store.create("image", {"name": "x"})
    with pytest.raises(InvalidArgument) as caught:
        store.register_interest(r.id, ALICE, ttl=ttl)
    assert caught.value.field == "ttl"
    with pytest.raises(InvalidArgument) as caught:
        store.register_interest(r.id, ALICE, ttl=HOUR, max_ttl=ttl)
    assert caught.value.field == "max_ttl"


@pytest.mark.parametrize("resource_id", ["nope", "no\x00pe"])
def test_an_unknown_resource_is_refused(store: EngineStore, resource_id: str) -> None:
    with pytest.raises(ResourceNotFound) as caught:
        store.register_interest(resource_id, ALICE, ttl=HOUR)
    assert caught.value.resource_id == resource_id
    assert store.interests(resource_id) == []
    assert store.deregister_interest(resource_id, ALICE) is False
    assert store.deregister_interest("nope", "tag:a\x00") is False


def test_a_resource_that_is_not_sharable_takes_one_party_at_a_time(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("image", {"name": "x"}, sharable=False)
    store.register_interest(r.id, ALICE, ttl=HOUR)
    with pytest.raises(NotSharable) as caught:
        store.register_interest(r.id, BOB, ttl=HOUR)
    assert (caught.value.resource_id, caught.value.party, caught.value.refused) == (r.id, ALICE, BOB)
    assert ALICE in str(caught.value)
    assert BOB in str(caught.value)
    assert store.register_interest(r.id, ALICE, ttl=2 * HOUR).expires_at == clock.now + 2 * HOUR  # renewing is fine
    assert [i.party for i in store.interests(r.id)] == [ALICE]

    store.deregister_interest(r.id, ALICE)
    store.register_interest(r.id, BOB, ttl=HOUR)
    clock.advance(HOUR)
    store.register_interest(r.id, CAROL, ttl=HOUR)  # bob's expired
    assert [i.party for i in store.interests(r.id)] == [CAROL]


def test_a_sharable_resource_takes_many_parties(store: EngineStore) -> None:
    r = store.create("image", {"name": "x"})
    for party in (ALICE, BOB, CAROL):
        store.register_interest(r.id, party, ttl=HOUR)
    assert sorted(i.party for i in store.interests(r.id)) == sorted([ALICE, BOB, CAROL])


def test_two_parties_racing_for_a_resource_that_is_not_sharable_one_wins(
    store: EngineStore, store_url: str, clock: FakeClock
) -> None:
    rounds, racers = 10, 4
    stores = [open_store(store_url, [image], clock=clock, check_schema=False) for _ in range(racers)]
    try:
        ids = [stores[0].create("image", {"name": f"r{i}"}, sharable=False).id for i in range(rounds)]
        wins: list[tuple[str, str]] = []
        refused: list[tuple[str, str]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        barrier = threading.Barrier(racers, timeout=30)

        def race(n: int) -> None:
            party = f"tag:example.com,2024:racer-{n}"
            try:
                for rid in ids:
                    barrier.wait()
                    try:
                        stores[n].register_interest(rid, party, ttl=HOUR)
                        outcome = wins
                    except NotSharable:
                        outcome = refused
                    with lock:
                        outcome.append((rid, party))
            except BaseException as exc:
                errors.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=race, args=(n,)) for n in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        for rid in ids:
            winners = [p for r, p in wins if r == rid]
            assert len(winners) == 1, (rid, winners)
            assert len([p for r, p in refused if r == rid]) == racers - 1
            assert [i.party for i in stores[0].interests(rid)] == winners
    finally:
        for s in stores:
            s.close()


def test_list_by_party_finds_unexpired_interests_and_pages(store: EngineStore, clock: FakeClock) -> None:
    used = [store.create("image", {"name": f"u{i}"}).id for i in range(5)]
    other = store.create("image", {"name": "other"})
    for rid in used:
        store.register_interest(rid, ALICE, ttl=HOUR)
    store.register_interest(other.id, BOB, ttl=HOUR)
    short = store.create("image", {"name": "short"})
    store.register_interest(short.id, ALICE, ttl=timedelta(minutes=1))

    seen: list[str] = []
    after: str | None = None
    while True:
        page = store.list(party=ALICE, after=after, limit=2)
        seen += [r.id for r in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [*used, short.id]
    clock.advance(timedelta(minutes=1))
    assert [r.id for r in store.list(party=ALICE, limit=100).items] == used
    assert [r.id for r in store.list(party=BOB, kind="image").items] == [other.id]
    assert store.list(party=CAROL).items == []
    assert store.list(party=ALICE, state="deleted", kind="image").items == []
