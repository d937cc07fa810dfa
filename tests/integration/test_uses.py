"""Uses on both stores: registering, renewing, releasing and expiring uses, sharing, and teardown after the last one.

A party's use is part of the resource (``in_use_by``) and changes only through its compare-and-swap:
every change bumps the version, is journaled (``@use``, ``@expired``, ``@force``, ``@desired``, or the
teardown event itself when the write frees a waiting teardown), and keeps the ``interests`` index in
step. On a kind that declares sharing the teardown event fires if and only if teardown was wished and
no live use remains, or an admin forced it, and it fires in the very write that removed the last use
or found it expired.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from tenure import (
    Conflict,
    InUse,
    InvalidArgument,
    JournalEntry,
    NotSharable,
    Resource,
    ResourceNotFound,
    TeardownStarted,
    UseNotYours,
    open_store,
)
from tenure.engine import Worker
from tenure.kinds import builtin_kinds, builtin_steps, builtin_tables
from tenure.kinds.deployment import deployment
from tenure.kinds.image import image
from tenure.store import Use, UsePolicy
from tenure.store.assembly import DatabaseStore
from tenure.store.sharing import KEEP
from tests.kinds_for_tests import job, share
from tests.store_support import FakeClock, all_journal

pytestmark = pytest.mark.timeout(120)

ALICE = "tag:example.com,2024:alice"
BOB = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
CAROL = "https://carol.example/clients/1"
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
KINDS = (image, job, share, deployment)


@pytest.fixture
def store_url(reused_store_url: str) -> str:
    """Overrides the root conftest's: one database per module, emptied before each test."""
    return reused_store_url


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[DatabaseStore]:
    """A migrated store of each dialect that also knows the sharing kinds (``share``, ``deployment``)."""
    s = open_store(store_url, KINDS, clock=clock, check_schema=False)
    try:
        s.migrate()
        yield s
    finally:
        s.close()


# --- helpers -------------------------------------------------------------------------------------


def new_share(store: DatabaseStore, *, sharable: bool | None = None) -> Resource:
    return store.create("share", sharable=sharable, actor="creator")


def deployed(store: DatabaseStore) -> Resource:
    """A deployment resting in ``deployed`` (its deploy step stood in for by a plain fire)."""
    r = store.create("deployment", {"name": "web", "image": "nginx:1"})
    return store.fire(r, "deployed", actor="deployer")


def last_write(store: DatabaseStore, before: Resource) -> JournalEntry:
    """The one journal entry written since ``before``, at its version plus one, which the row is at now."""
    after = store.get(before.id)
    new = all_journal(store, before.id)[before.version :]
    assert [e.version for e in new] == [before.version + 1], f"expected exactly one write, got {new}"
    assert after.version == before.version + 1
    assert (new[0].from_state, new[0].to_state) == (before.state, after.state)
    return new[0]


def nothing_written(store: DatabaseStore, before: Resource) -> None:
    assert store.get(before.id) == before
    assert len(all_journal(store, before.id)) == before.version


def index_rows(store: DatabaseStore, resource_id: str) -> dict[str, Use]:
    """The ``interests`` index rows of one resource, read straight from the table."""
    db = store.database
    mark = "?" if type(store).__name__.startswith("SQLite") else "%s"
    with db.reading() as conn:
        rows = conn.execute(
            f"SELECT party, client, registered_at, expires_at FROM interests WHERE resource_id = {mark}",
            (resource_id,),
        ).fetchall()
    out: dict[str, Use] = {}
    for party, client, registered, expires in rows:
        registered_at, expires_at = db.time_out(registered), db.time_out(expires)
        assert registered_at is not None
        assert expires_at is not None
        out[str(party)] = Use(client, registered_at, expires_at)
    return out


def assert_index_follows(store: DatabaseStore, resource_id: str) -> None:
    assert index_rows(store, resource_id) == dict(store.get(resource_id).in_use_by)


def calls(*attempts: Callable[[], object]) -> tuple[Callable[[], object], ...]:
    """Several ways of asking for the same thing (each must be refused alike)."""
    return attempts


def listed(store: DatabaseStore, party: str, **filters: Any) -> list[str]:
    return [r.id for r in store.list(party=party, limit=1000, **filters).items]


# --- registering and renewing --------------------------------------------------------------------


def test_using_records_the_party_its_client_and_expiry_in_one_journaled_write(
    store: DatabaseStore, clock: FakeClock
) -> None:
    r = new_share(store)
    after = store.use(r.id, ALICE, ttl=HOUR, client="c1")
    assert after.version == r.version + 1
    assert dict(after.in_use_by) == {ALICE: Use("c1", clock.now, clock.now + HOUR)}
    assert after.live_uses(clock.now) == {ALICE: Use("c1", clock.now, clock.now + HOUR)}
    assert after.to_json()["in_use_by"] == {
        ALICE: {"client": "c1", "registered_at": clock.now.isoformat(), "expires_at": (clock.now + HOUR).isoformat()}
    }
    assert store.get(r.id) == after
    entry = last_write(store, r)
    assert (entry.event, entry.actor, entry.at) == ("@use", "c1", clock.now)
    assert entry.detail == {"uses": {ALICE: "registered"}}
    assert_index_follows(store, r.id)


def test_the_default_ttl_applies_and_one_beyond_the_maximum_is_refused(
    store: DatabaseStore, store_url: str, clock: FakeClock
) -> None:
    assert store.use_policy == UsePolicy()
    r = new_share(store)
    assert store.use(r.id, ALICE).in_use_by[ALICE].expires_at == clock.now + UsePolicy().default_ttl
    strict = open_store(store_url, KINDS, clock=clock, check_schema=False, uses=UsePolicy(timedelta(minutes=10), HOUR))
    try:
        assert strict.use_policy == UsePolicy(timedelta(minutes=10), HOUR)
        assert strict.use(r.id, BOB).in_use_by[BOB].expires_at == clock.now + timedelta(minutes=10)
        assert strict.use(r.id, CAROL, ttl=HOUR).in_use_by[CAROL].expires_at == clock.now + HOUR
        before = strict.get(r.id)
        for ttl in (HOUR + timedelta(seconds=1), timedelta(0), timedelta(seconds=-1), timedelta(milliseconds=999)):
            with pytest.raises(InvalidArgument) as caught:
                strict.use(r.id, "tag:x,2024:d", ttl=ttl)
            assert caught.value.field == "ttl_seconds"
            with pytest.raises(InvalidArgument):
                strict.change_uses(r.id, register={"tag:x,2024:d": ttl})
        nothing_written(strict, before)
    finally:
        strict.close()


def test_a_default_ttl_above_the_maximum_is_cut_to_the_maximum() -> None:
    assert UsePolicy(default_ttl=2 * HOUR, max_ttl=HOUR).ttl(None) == HOUR


def test_renewing_extends_from_now_and_keeps_when_it_began(store: DatabaseStore, clock: FakeClock) -> None:
    r = new_share(store)
    first = store.use(r.id, ALICE, ttl=HOUR, client="c1").in_use_by[ALICE]
    clock.advance(timedelta(minutes=50))
    before = store.get(r.id)
    renewed = store.use(r.id, ALICE, ttl=timedelta(minutes=30), client="c1")
    assert renewed.in_use_by[ALICE] == Use("c1", first.registered_at, clock.now + timedelta(minutes=30))
    entry = last_write(store, before)
    assert (entry.event, entry.detail) == ("@use", {"uses": {ALICE: "renewed"}})
    assert_index_follows(store, r.id)
    clock.advance(timedelta(minutes=29))
    assert ALICE in store.get(r.id).live_uses(clock.now)


def test_a_client_stays_longer_than_the_maximum_by_renewing(
    store: DatabaseStore, store_url: str, clock: FakeClock
) -> None:
    short = open_store(store_url, KINDS, clock=clock, check_schema=False, uses=UsePolicy(MINUTE, 2 * MINUTE))
    try:
        r = new_share(short)
        began = clock.now
        for _ in range(10):
            short.use(r.id, ALICE, ttl=2 * MINUTE, client="c1")
            clock.advance(MINUTE)
        use = short.get(r.id).in_use_by[ALICE]
        assert clock.now - began == 10 * MINUTE
        assert (use.registered_at, use.expires_at) == (began, clock.now + MINUTE)
        assert short.get(r.id).live_uses(clock.now) == {ALICE: use}
    finally:
        short.close()


def test_an_expired_use_no_longer_counts_and_registering_again_starts_anew(
    store: DatabaseStore, clock: FakeClock
) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, ttl=HOUR, client="c1")
    bob = store.use(r.id, BOB, ttl=2 * HOUR, client="c2").in_use_by[BOB]
    clock.advance(HOUR)
    current = store.get(r.id)
    assert set(current.in_use_by) == {ALICE, BOB}, "an expired use stays in the row until a write removes it"
    assert current.live_uses(clock.now) == {BOB: bob}, "alice's use expired exactly now"
    assert listed(store, ALICE) == []
    assert listed(store, BOB) == [r.id]
    # Another client may take the party over once its use expired: it is a new use.
    again = store.use(r.id, ALICE, ttl=HOUR, client="c3")
    assert again.in_use_by[ALICE] == Use("c3", clock.now, clock.now + HOUR)
    assert last_write(store, current).detail == {"uses": {ALICE: "registered"}}
    assert dict(again.in_use_by) == {ALICE: again.in_use_by[ALICE], BOB: bob}
    assert listed(store, ALICE) == [r.id]
    assert_index_follows(store, r.id)


def test_registering_several_and_releasing_in_one_change_is_one_write(store: DatabaseStore, clock: FakeClock) -> None:
    r = new_share(store)
    store.use(r.id, CAROL, client="c1")
    before = store.get(r.id)
    after = store.change_uses(r.id, register={ALICE: HOUR, BOB: None}, release=[CAROL], client="c1", actor="ops")
    assert set(after.in_use_by) == {ALICE, BOB}
    entry = last_write(store, before)
    assert (entry.event, entry.actor) == ("@use", "ops")
    assert entry.detail == {"uses": {CAROL: "released", ALICE: "registered", BOB: "registered"}}
    assert_index_follows(store, r.id)


def test_a_change_that_changes_nothing_writes_nothing(store: DatabaseStore) -> None:
    r = new_share(store)
    assert store.change_uses(r.id, client="c1") == r
    assert store.release_use(r.id, ALICE, client="c1") == r
    nothing_written(store, r)


# --- releasing -----------------------------------------------------------------------------------


def test_releasing_removes_the_use_in_a_journaled_write_and_again_is_harmless(
    store: DatabaseStore, clock: FakeClock
) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, client="c1")
    store.use(r.id, BOB, client="c2")
    before = store.get(r.id)
    after = store.release_use(r.id, ALICE, client="c1")
    assert list(after.in_use_by) == [BOB]
    entry = last_write(store, before)
    assert (entry.event, entry.actor, entry.detail) == ("@use", "c1", {"uses": {ALICE: "released"}})
    assert store.release_use(r.id, ALICE, client="c1") == after  # nothing to release: nothing written
    nothing_written(store, after)
    assert listed(store, ALICE) == []
    assert_index_follows(store, r.id)


def test_releasing_after_the_use_expired_journals_it_as_expired(store: DatabaseStore, clock: FakeClock) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, ttl=MINUTE, client="c1")
    clock.advance(2 * MINUTE)
    before = store.get(r.id)
    after = store.release_use(r.id, ALICE, client="someone else")  # not theirs, but no longer anyone's
    assert dict(after.in_use_by) == {}
    assert last_write(store, before).detail == {"uses": {ALICE: "expired"}}
    assert index_rows(store, r.id) == {}


def test_only_the_registering_client_or_an_admin_may_renew_or_release(store: DatabaseStore, clock: FakeClock) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, ttl=HOUR, client="c1")
    before = store.get(r.id)
    for attempt in calls(
        lambda: store.use(r.id, ALICE, ttl=2 * HOUR, client="c2"),
        lambda: store.release_use(r.id, ALICE, client="c2"),
        lambda: store.use(r.id, ALICE),  # no client is not the client
        lambda: store.change_uses(r.id, register={BOB: None}, release=[ALICE], client="c2"),
    ):
        with pytest.raises(UseNotYours) as caught:
            attempt()
        assert (caught.value.resource_id, caught.value.party, caught.value.owner) == (r.id, ALICE, "c1")
        assert "c1" in str(caught.value)
    nothing_written(store, before)

    renewed = store.use(r.id, ALICE, ttl=2 * HOUR, client="admin-tool", admin=True)
    assert renewed.in_use_by[ALICE] == Use("c1", before.in_use_by[ALICE].registered_at, clock.now + 2 * HOUR)
    released = store.release_use(r.id, ALICE, client="admin-tool", admin=True)
    assert dict(released.in_use_by) == {}
    assert [e.detail for e in all_journal(store, r.id)[-2:]] == [
        {"uses": {ALICE: "renewed"}},
        {"uses": {ALICE: "released"}},
    ]


# --- what a party, a client and an actor may be ---------------------------------------------------


@pytest.mark.parametrize(
    "party",
    [
        "alice",
        "",
        "tag:",
        ":x",
        "tag:with space",
        "tag:tab\there",
        "1tag:x",
        "tag:" + "x" * 497,
        "tag:\x00",
        "tag:a\nb",
    ],
)
def test_a_party_must_be_a_uri_with_a_scheme(store: DatabaseStore, party: str) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, client="c1")
    before = store.get(r.id)
    for attempt in calls(
        lambda: store.use(r.id, party, client="c1"),
        lambda: store.release_use(r.id, party, client="c1"),
        lambda: store.change_uses(r.id, register={ALICE: None, party: None}, client="c1"),
        lambda: store.list(party=party),
    ):
        with pytest.raises(InvalidArgument) as caught:
            attempt()
        assert (caught.value.field, caught.value.got) == ("party", party)
        assert "URI with a scheme" in caught.value.constraint
    nothing_written(store, before)


@pytest.mark.parametrize("party", ["tag:" + "x" * 496, "urn:a", "x:y", "HTTP+s.1-a:%00é"])
def test_these_parties_are_accepted(store: DatabaseStore, party: str) -> None:
    r = new_share(store)
    assert party in store.use(r.id, party, client="c1").in_use_by
    assert listed(store, party) == [r.id]
    assert_index_follows(store, r.id)


def test_nul_in_a_client_or_actor_is_refused_before_anything_is_written(store: DatabaseStore) -> None:
    r = new_share(store)
    with pytest.raises(InvalidArgument) as caught:
        store.use(r.id, ALICE, client="c\x001")
    assert caught.value.field == "client"
    with pytest.raises(InvalidArgument) as caught:
        store.change_uses(r.id, register={ALICE: None}, client="c1", actor="a\x00")
    assert caught.value.field == "actor"
    with pytest.raises(InvalidArgument) as caught:
        store.force_teardown(r.id, actor="admin", reason="because\x00")
    assert caught.value.field == "reason"
    nothing_written(store, r)


@pytest.mark.parametrize("resource_id", ["nope", "no\x00pe"])
def test_an_unknown_resource_is_refused(store: DatabaseStore, resource_id: str) -> None:
    for attempt in calls(
        lambda: store.use(resource_id, ALICE, client="c1"),
        lambda: store.release_use(resource_id, ALICE, client="c1"),
        lambda: store.change_uses(resource_id, register={ALICE: None}),
        lambda: store.force_teardown(resource_id, actor="admin"),
    ):
        with pytest.raises(ResourceNotFound) as caught:
            attempt()
        assert caught.value.resource_id == resource_id


# --- sharable or not -----------------------------------------------------------------------------


def test_a_resource_that_is_not_sharable_takes_one_live_party_at_a_time(store: DatabaseStore, clock: FakeClock) -> None:
    r = new_share(store, sharable=False)
    assert r.sharable is False
    store.use(r.id, ALICE, ttl=HOUR, client="c1")
    before = store.get(r.id)
    with pytest.raises(NotSharable) as caught:
        store.use(r.id, BOB, client="c2")
    assert (caught.value.resource_id, caught.value.party, caught.value.refused) == (r.id, ALICE, BOB)
    assert ALICE in str(caught.value)
    assert BOB in str(caught.value)
    with pytest.raises(NotSharable):
        store.use(r.id, BOB, client="c1")  # the same client with a second party: still a second party
    nothing_written(store, before)
    assert store.use(r.id, ALICE, ttl=2 * HOUR, client="c1").in_use_by[ALICE].expires_at == clock.now + 2 * HOUR

    store.release_use(r.id, ALICE, client="c1")
    store.use(r.id, BOB, ttl=HOUR, client="c2")
    clock.advance(HOUR)
    assert list(store.use(r.id, CAROL, ttl=HOUR, client="c3").in_use_by) == [CAROL]  # bob's use expired
    assert_index_follows(store, r.id)


def test_a_resource_that_is_not_sharable_refuses_two_parties_in_one_change(store: DatabaseStore) -> None:
    r = new_share(store, sharable=False)
    with pytest.raises(NotSharable):
        store.change_uses(r.id, register={ALICE: None, BOB: None}, client="c1")
    nothing_written(store, r)
    after = store.change_uses(r.id, register={BOB: None}, release=[], client="c1")
    # Releasing one party and registering another in the same change is a hand-over, not a second party.
    handed = store.change_uses(r.id, register={ALICE: None}, release=[BOB], client="c1")
    assert list(handed.in_use_by) == [ALICE]
    assert last_write(store, after).detail == {"uses": {BOB: "released", ALICE: "registered"}}


def test_a_sharable_resource_takes_many_parties(store: DatabaseStore) -> None:
    r = new_share(store)
    for n, party in enumerate((ALICE, BOB, CAROL)):
        store.use(r.id, party, client=f"c{n}")
    assert sorted(store.get(r.id).in_use_by) == sorted([ALICE, BOB, CAROL])
    assert store.get(r.id).version == 4


def test_the_provider_default_decides_when_a_create_does_not_say(
    store: DatabaseStore, store_url: str, clock: FakeClock
) -> None:
    assert new_share(store).sharable is True
    private = open_store(store_url, KINDS, clock=clock, check_schema=False, default_sharable=False)
    try:
        r = private.create("share")
        assert r.sharable is False
        assert private.get(r.id).to_json()["sharable"] is False
        assert private.create("share", sharable=True).sharable is True
    finally:
        private.close()


def test_two_parties_racing_for_a_resource_that_is_not_sharable_one_wins(
    store: DatabaseStore, store_url: str, clock: FakeClock
) -> None:
    rounds, racers = 8, 4
    stores = [open_store(store_url, KINDS, clock=clock, check_schema=False) for _ in range(racers)]
    try:
        ids = [stores[0].create("share", sharable=False).id for _ in range(rounds)]
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
                        stores[n].use(rid, party, client=f"c{n}")
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
            assert list(stores[0].get(rid).in_use_by) == winners
            assert [e.event for e in all_journal(stores[0], rid)] == ["@create", "@use"]
            assert_index_follows(stores[0], rid)
    finally:
        for s in stores:
            s.close()


# --- listing by party ----------------------------------------------------------------------------


def test_list_by_party_finds_live_uses_and_pages(store: DatabaseStore, clock: FakeClock) -> None:
    used = [new_share(store).id for _ in range(5)]
    other = new_share(store)
    for rid in used:
        store.use(rid, ALICE, ttl=HOUR, client="c1")
    store.use(other.id, BOB, ttl=HOUR, client="c2")
    short = new_share(store)
    store.use(short.id, ALICE, ttl=MINUTE, client="c1")

    seen: list[str] = []
    after: str | None = None
    while True:
        page = store.list(party=ALICE, after=after, limit=2)
        seen += [r.id for r in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [*used, short.id]
    clock.advance(MINUTE)
    assert listed(store, ALICE) == used
    assert listed(store, BOB, kind="share") == [other.id]
    assert listed(store, BOB, kind="image") == []
    assert listed(store, CAROL) == []
    assert listed(store, ALICE, state="tearing") == []
    store.release_use(used[0], ALICE, client="c1")
    assert listed(store, ALICE) == used[1:]


def test_the_index_follows_every_kind_of_use_change(store: DatabaseStore, clock: FakeClock) -> None:
    a, b = new_share(store), new_share(store)
    store.use(a.id, ALICE, ttl=MINUTE, client="c1")
    store.use(a.id, BOB, ttl=HOUR, client="c2")
    store.use(b.id, ALICE, ttl=HOUR, client="c1")
    for rid in (a.id, b.id):
        assert_index_follows(store, rid)
    clock.advance(MINUTE)
    store.use(a.id, CAROL, client="c3")  # alice's expired use goes with this write
    assert set(index_rows(store, a.id)) == {BOB, CAROL}
    store.use(a.id, BOB, ttl=2 * HOUR, client="c2")  # renewal moves the index row's expiry
    assert index_rows(store, a.id)[BOB].expires_at == clock.now + 2 * HOUR
    store.force_teardown(a.id, actor="admin")
    assert index_rows(store, a.id) == {}
    assert_index_follows(store, b.id)
    assert listed(store, ALICE) == [b.id]


# --- a kind without sharing ----------------------------------------------------------------------


def test_a_kind_without_sharing_records_uses_and_nothing_waits_for_them(store: DatabaseStore) -> None:
    r = store.create("image", {"name": "x"})
    store.use(r.id, ALICE, client="c1")
    store.fire(r.id, "upload")
    assert list(store.get(r.id).in_use_by) == [ALICE]
    gone = store.fire(r.id, "delete")
    assert gone.state == "deleted"
    with pytest.raises(TeardownStarted) as caught:
        store.use(r.id, BOB, client="c2")  # nothing can be used in a final state
    assert caught.value.state == "deleted"
    assert "deleted" not in caught.value.usable
    with pytest.raises(InvalidArgument) as refused:
        store.force_teardown(r.id, actor="admin")
    assert refused.value.field == "force"


# --- the teardown wish ---------------------------------------------------------------------------


def test_a_teardown_wish_with_no_live_use_tears_down_in_the_same_write(store: DatabaseStore) -> None:
    r = new_share(store)
    after = store.set_desired_state(r.id, "gone", client="c1", actor="c1")
    assert (after.state, after.desired_state) == ("tearing", "gone")
    entry = last_write(store, r)
    assert (entry.event, entry.from_state, entry.to_state) == ("teardown", "ready", "tearing")
    assert entry.detail["desired_state"] == "gone"


def test_a_teardown_wish_waits_for_live_parties_and_is_not_due(store: DatabaseStore, clock: FakeClock) -> None:
    r = new_share(store)
    store.use(r.id, BOB, client="c2")
    before = store.get(r.id)
    waiting = store.set_desired_state(r.id, "gone", client="c1")
    assert (waiting.state, waiting.desired_state, waiting.next_attempt_at) == ("ready", "gone", None)
    assert waiting.generation > waiting.observed_generation
    entry = last_write(store, before)
    assert entry.event == "@desired"
    assert "uses" not in entry.detail  # nobody's use was released: c1 had none
    # Asking again for what is asked writes nothing.
    assert store.set_desired_state(r.id, "gone", client="c1") == waiting
    nothing_written(store, waiting)


def test_the_last_release_starts_teardown_in_the_same_write(store: DatabaseStore) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, client="c1")
    store.use(r.id, BOB, client="c2")
    store.set_desired_state(r.id, "gone", client="creator")
    before = store.release_use(r.id, ALICE, client="c1")
    assert before.state == "ready"
    after = store.release_use(r.id, BOB, client="c2")
    assert (after.state, dict(after.in_use_by)) == ("tearing", {})
    entry = last_write(store, before)
    assert (entry.event, entry.from_state, entry.to_state, entry.actor) == ("teardown", "ready", "tearing", "c2")
    assert entry.detail["uses"] == {BOB: "released"}
    assert index_rows(store, r.id) == {}


def test_a_teardown_wish_releases_only_the_callers_own_uses(store: DatabaseStore) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, client="c1")
    store.use(r.id, CAROL, client="c1")
    store.use(r.id, BOB, client="c2")
    before = store.get(r.id)
    after = store.set_desired_state(r.id, "gone", client="c1")
    assert (after.state, list(after.in_use_by)) == ("ready", [BOB])
    entry = last_write(store, before)
    assert entry.event == "@desired"
    assert entry.detail["uses"] == {ALICE: "released", CAROL: "released"}
    assert_index_follows(store, r.id)


def test_a_teardown_wish_by_the_last_user_tears_down_at_once(store: DatabaseStore) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, client="c1")
    before = store.get(r.id)
    after = store.change_uses(r.id, desired="gone", client="c1")
    assert after.state == "tearing"
    entry = last_write(store, before)
    assert (entry.event, entry.detail["uses"]) == ("teardown", {ALICE: "released"})


def test_a_teardown_wish_with_only_expired_uses_tears_down_at_once(store: DatabaseStore, clock: FakeClock) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, ttl=MINUTE, client="c1")
    clock.advance(MINUTE)
    before = store.get(r.id)
    assert store.set_desired_state(r.id, "gone", client="c2").state == "tearing"
    entry = last_write(store, before)
    assert (entry.event, entry.detail["uses"]) == ("teardown", {ALICE: "expired"})


def test_a_party_may_register_while_teardown_waits_and_teardown_waits_for_it_too(store: DatabaseStore) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, client="c1")
    store.set_desired_state(r.id, "gone", client="creator")
    store.use(r.id, BOB, client="c2")
    assert store.release_use(r.id, ALICE, client="c1").state == "ready"
    assert store.release_use(r.id, BOB, client="c2").state == "tearing"


def test_registration_is_refused_once_teardown_started(store: DatabaseStore) -> None:
    r = new_share(store)
    torn = store.set_desired_state(r.id, "gone", client="c1")
    with pytest.raises(TeardownStarted) as caught:
        store.use(r.id, ALICE, client="c1")
    assert (caught.value.resource_id, caught.value.state, set(caught.value.usable)) == (
        r.id,
        "tearing",
        {"ready", "paused"},
    )
    nothing_written(store, torn)
    # Releasing what is no longer there is still harmless.
    assert store.release_use(r.id, ALICE, client="c1") == torn


def test_clearing_the_wish_keeps_the_resource_when_the_last_party_leaves(store: DatabaseStore) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, client="c1")
    store.set_desired_state(r.id, "gone", client="creator")
    cleared = store.set_desired_state(r.id, None, client="creator")
    assert (cleared.desired_state, cleared.generation, cleared.observed_generation) == (None, 3, 3)
    assert list(cleared.in_use_by) == [ALICE]
    after = store.release_use(r.id, ALICE, client="c1")
    assert (after.state, last_write(store, cleared).event) == ("ready", "@use")


def test_a_desired_state_among_the_usable_ones_is_not_a_teardown_wish(store: DatabaseStore) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, client="c1")
    wish = store.change_uses(r.id, desired="paused", client="c1")
    assert (wish.state, wish.desired_state, list(wish.in_use_by)) == ("ready", "paused", [ALICE])
    assert wish.next_attempt_at is not None, "nothing holds a resource that should only pause"


def test_a_teardown_wish_on_a_paused_resource_tears_it_down_from_there(store: DatabaseStore) -> None:
    r = store.fire(new_share(store), "pause")
    store.use(r.id, ALICE, client="c1")
    store.set_desired_state(r.id, "gone", client="creator")
    before = store.get(r.id)
    store.release_use(r.id, ALICE, client="c1")
    entry = last_write(store, before)
    assert (entry.event, entry.from_state, entry.to_state) == ("teardown", "paused", "tearing")


# --- the teardown event fired directly -----------------------------------------------------------


def test_the_teardown_event_fired_while_a_use_is_live_is_refused_and_nothing_written(
    store: DatabaseStore, clock: FakeClock
) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, ttl=HOUR, client="c1")
    store.use(r.id, BOB, ttl=MINUTE, client="c2")
    before = store.get(r.id)
    for attempt in calls(
        lambda: store.fire(r.id, "teardown", actor="c3"),
        lambda: store.fire(before, "teardown", actor="c3"),
        lambda: store.fire(r.id, "teardown", expected_version=before.version),
    ):
        with pytest.raises(InUse) as caught:
            attempt()
        assert (caught.value.resource_id, caught.value.event, caught.value.parties) == (
            r.id,
            "teardown",
            tuple(sorted([ALICE, BOB])),
        )
    clock.advance(MINUTE)
    with pytest.raises(InUse) as caught:
        store.fire(r.id, "teardown")
    assert caught.value.parties == (ALICE,), "only live uses hold the teardown"
    nothing_written(store, before)
    assert_index_follows(store, r.id)


def test_the_teardown_event_fired_after_the_last_use_expired_takes_it_along(
    store: DatabaseStore, clock: FakeClock
) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, ttl=MINUTE, client="c1")
    clock.advance(MINUTE)
    before = store.get(r.id)
    after = store.fire(r.id, "teardown", actor="c1")
    assert (after.state, dict(after.in_use_by)) == ("tearing", {})
    assert last_write(store, before).detail == {"uses": {ALICE: "expired"}}
    assert index_rows(store, r.id) == {}


# --- expiry --------------------------------------------------------------------------------------


def test_expire_uses_removes_only_expired_uses_and_journals_them(store: DatabaseStore, clock: FakeClock) -> None:
    mixed, fresh, image_r = new_share(store), new_share(store), store.create("image", {"name": "i"})
    store.use(mixed.id, ALICE, ttl=MINUTE, client="c1")
    store.use(mixed.id, BOB, ttl=HOUR, client="c2")
    store.use(fresh.id, ALICE, ttl=HOUR, client="c1")
    store.use(image_r.id, CAROL, ttl=MINUTE, client="c3")
    clock.advance(MINUTE - timedelta(microseconds=1))
    assert store.expire_uses(actor="engine") == []
    clock.advance(timedelta(microseconds=1))
    befores = {rid: store.get(rid) for rid in (mixed.id, fresh.id, image_r.id)}
    written = store.expire_uses(actor="engine")
    assert sorted(r.id for r in written) == sorted([mixed.id, image_r.id])
    assert [r.state for r in written] == ["ready", "queued"] or [r.state for r in written] == ["queued", "ready"]
    assert list(store.get(mixed.id).in_use_by) == [BOB]
    assert dict(store.get(image_r.id).in_use_by) == {}
    for rid, party in ((mixed.id, ALICE), (image_r.id, CAROL)):
        entry = last_write(store, befores[rid])
        assert (entry.event, entry.actor, entry.at, entry.detail) == (
            "@expired",
            "engine",
            clock.now,
            {"uses": {party: "expired"}},
        )
        assert_index_follows(store, rid)
    nothing_written(store, befores[fresh.id])
    assert store.expire_uses(actor="engine") == [], "a second sweep finds nothing"


def test_expire_uses_can_be_limited_to_some_kinds_and_in_batches(store: DatabaseStore, clock: FakeClock) -> None:
    shares = [new_share(store) for _ in range(3)]
    img = store.create("image", {"name": "i"})
    for r in (*shares, img):
        store.use(r.id, ALICE, ttl=MINUTE, client="c1")
    clock.advance(MINUTE)
    assert [r.id for r in store.expire_uses(["image"], actor="engine")] == [img.id]
    first = store.expire_uses(actor="engine", limit=2)
    second = store.expire_uses(actor="engine", limit=2)
    assert len(first) == 2
    assert len(second) == 1
    assert sorted(r.id for r in first + second) == sorted(r.id for r in shares)


def test_expire_uses_starts_teardown_when_the_last_use_of_a_waiting_teardown_expires(
    store: DatabaseStore, clock: FakeClock
) -> None:
    r = deployed(store)
    store.use(r.id, ALICE, ttl=MINUTE, client="c2")
    store.use(r.id, BOB, ttl=2 * MINUTE, client="c3")
    store.set_desired_state(r.id, "undeployed", client="c1")
    clock.advance(MINUTE)
    first = store.get(r.id)
    assert [x.state for x in store.expire_uses(actor="engine")] == ["deployed"]
    assert last_write(store, first).event == "@expired"
    clock.advance(MINUTE)
    before = store.get(r.id)
    (after,) = store.expire_uses(actor="engine")
    assert (after.id, after.state, dict(after.in_use_by)) == (r.id, "undeploying", {})
    entry = last_write(store, before)
    assert (entry.event, entry.from_state, entry.to_state, entry.actor) == (
        "undeploy",
        "deployed",
        "undeploying",
        "engine",
    )
    assert entry.detail["uses"] == {BOB: "expired"}
    assert index_rows(store, r.id) == {}
    assert after.next_attempt_at == clock.now, "the undeploy flow is due at once"


def test_a_client_that_dies_without_deregistering_is_torn_down_after_its_use_expires(
    store: DatabaseStore, clock: FakeClock
) -> None:
    # Client 1 deploys and asks for teardown; client 2 registers for ten minutes and is never heard of again.
    r = deployed(store)
    store.use(r.id, "tag:client2.example,2026:job-7", ttl=timedelta(minutes=10), client="client2")
    accepted = store.set_desired_state(r.id, "undeployed", client="client1")
    assert (accepted.state, accepted.desired_state) == ("deployed", "undeployed")
    for _ in range(9):
        clock.advance(MINUTE)
        assert store.expire_uses(actor="engine") == []
        assert store.get(r.id).state == "deployed"
    clock.advance(MINUTE)
    (torn,) = store.expire_uses(actor="engine")
    assert torn.state == "undeploying"
    events = [e.event for e in all_journal(store, r.id)]
    assert events == ["@create", "deployed", "@use", "@desired", "undeploy"]


def test_the_engine_tears_down_after_the_use_of_a_client_that_died_expires(store_url: str, clock: FakeClock) -> None:
    s = open_store(store_url, builtin_kinds(), tables=builtin_tables(), clock=clock, check_schema=False)
    try:
        s.migrate()
        worker = Worker(s, builtin_steps(s), name="engine")
        r = s.create("deployment", {"name": "web", "image": "nginx:1"}, actor="client1")
        worker.run_until_idle()
        assert s.get(r.id).state == "deployed"
        s.use(r.id, "tag:client2.example,2026:job-7", ttl=timedelta(minutes=10), client="client2")
        s.set_desired_state(r.id, "undeployed", client="client1")
        clock.advance(timedelta(minutes=10) - timedelta(microseconds=1))
        worker.run_until_idle()
        waiting = s.get(r.id)
        assert (waiting.state, waiting.version) == ("deployed", 4), "the engine leaves a held teardown alone"
        clock.advance(timedelta(microseconds=1))
        worker.run_until_idle()
        done = s.get(r.id)
        assert (done.state, dict(done.in_use_by)) == ("undeployed", {})
        entries = all_journal(s, r.id)
        assert [(e.event, e.to_state) for e in entries[3:]] == [
            ("@desired", "deployed"),
            ("undeploy", "undeploying"),
            ("undeployed", "undeployed"),
        ]
        assert entries[4].detail["uses"] == {"tag:client2.example,2026:job-7": "expired"}
    finally:
        s.close()


# --- force ---------------------------------------------------------------------------------------


def test_force_by_an_admin_tears_down_now_and_records_the_parties(store: DatabaseStore, clock: FakeClock) -> None:
    r = new_share(store)
    alice = store.use(r.id, ALICE, ttl=HOUR, client="c1").in_use_by[ALICE]
    store.use(r.id, BOB, ttl=MINUTE, client="c2")
    clock.advance(MINUTE)  # bob's use expired, nobody removed it yet
    before = store.get(r.id)
    bob = before.in_use_by[BOB]
    after = store.force_teardown(r.id, actor="admin", reason="maintenance")
    assert (after.state, after.desired_state, dict(after.in_use_by)) == ("tearing", "gone", {})
    entry = last_write(store, before)
    assert (entry.event, entry.from_state, entry.to_state, entry.actor) == ("teardown", "ready", "tearing", "admin")
    assert entry.detail["forced"] is True
    assert entry.detail["reason"] == "maintenance"
    assert entry.detail["parties"] == {ALICE: alice.to_json(), BOB: bob.to_json()}
    assert index_rows(store, r.id) == {}
    assert listed(store, ALICE) == []


def test_force_with_no_party_tears_down_too(store: DatabaseStore) -> None:
    r = new_share(store)
    after = store.force_teardown(r.id, actor="admin")
    assert after.state == "tearing"
    entry = last_write(store, r)
    assert (entry.event, entry.detail["parties"]) == ("teardown", {})
    assert "reason" not in entry.detail


def test_force_on_a_resource_already_being_torn_down_only_records_it(store: DatabaseStore) -> None:
    r = new_share(store)
    torn = store.set_desired_state(r.id, "gone", client="c1")
    after = store.force_teardown(r.id, actor="admin")
    assert after.state == "tearing"
    entry = last_write(store, torn)
    assert (entry.event, entry.detail["forced"]) == ("@force", True)


def test_force_on_a_torn_down_resource_or_a_kind_without_sharing_is_refused(store: DatabaseStore) -> None:
    gone = store.fire(store.set_desired_state(new_share(store).id, "gone"), "finish")
    assert gone.state == "gone"
    img = store.create("image", {"name": "x"})
    for rid in (gone.id, img.id):
        before = store.get(rid)
        with pytest.raises(InvalidArgument) as caught:
            store.force_teardown(rid, actor="admin")
        assert caught.value.field == "force"
        nothing_written(store, before)


def test_force_with_a_stale_version_conflicts_and_writes_nothing(store: DatabaseStore) -> None:
    r = new_share(store)
    moved = store.use(r.id, ALICE, client="c1")
    with pytest.raises(Conflict) as caught:
        store.force_teardown(r.id, actor="admin", expected_version=r.version)
    assert (caught.value.expected_version, caught.value.actual_version) == (r.version, moved.version)
    nothing_written(store, moved)


def test_a_forced_teardown_of_a_deployment_still_deploying_fires_when_it_gets_there(store: DatabaseStore) -> None:
    r = store.create("deployment", {"name": "web", "image": "nginx:1"})
    used = store.use(r.id, ALICE, client="c1")
    forced = store.force_teardown(r.id, actor="admin")
    assert (forced.state, forced.desired_state, dict(forced.in_use_by)) == ("deploying", "undeployed", {})
    entry = last_write(store, used)
    assert (entry.event, entry.detail["forced"], list(entry.detail["parties"])) == ("@force", True, [ALICE])
    arrived = store.fire(forced, "deployed")
    assert arrived.next_attempt_at is not None, "resting short of its forced teardown, it is due for the reconcile"
    assert store.fire(arrived, "undeploy").state == "undeploying"


def test_a_party_may_not_register_after_a_force_and_nothing_holds_the_forced_teardown(
    store: DatabaseStore,
) -> None:
    r = store.create("deployment", {"name": "web", "image": "nginx:1"})
    forced = store.force_teardown(r.id, actor="admin")
    assert forced.forced_generation == forced.generation
    with pytest.raises(TeardownStarted) as caught:
        store.use(r.id, ALICE, client="c1")
    assert caught.value.state == "deploying"
    nothing_written(store, forced)
    arrived = store.fire(r.id, "deployed")
    assert arrived.next_attempt_at == arrived.updated_at, "the forced teardown is due as soon as it comes to rest"


def test_a_new_wish_after_a_force_is_an_ordinary_wish_again(store: DatabaseStore) -> None:
    r = store.create("deployment", {"name": "web", "image": "nginx:1"})
    store.force_teardown(r.id, actor="admin")
    store.set_desired_state(r.id, None, client="c1")
    store.set_desired_state(r.id, "undeployed", client="c1")
    store.use(r.id, ALICE, client="c2")
    arrived = store.fire(r.id, "deployed")
    assert (arrived.next_attempt_at, list(arrived.in_use_by)) == (None, [ALICE]), "alice holds an unforced wish"


# --- what a fire returns ---------------------------------------------------------------------------


def test_a_fire_returns_the_uses_the_row_keeps(store: DatabaseStore) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, client="c1")
    paused = store.fire(r.id, "pause")
    assert paused == store.get(r.id)


def test_a_teardown_wish_pinned_to_the_snapshot_a_fire_returned_waits_for_the_live_party(
    store: DatabaseStore,
) -> None:
    r = new_share(store)
    store.use(r.id, ALICE, client="c2")
    paused = store.fire(r.id, "pause")
    after = store.set_desired_state(paused, "gone", client="c1")
    assert after.state == "paused", "torn down while alice still uses it"
    assert list(store.get(r.id).in_use_by) == [ALICE]


# --- compare-and-swap ----------------------------------------------------------------------------


def test_a_use_change_pinned_to_a_stale_version_conflicts(store: DatabaseStore) -> None:
    r = new_share(store)
    moved = store.use(r.id, ALICE, client="c1")
    for attempt in calls(
        lambda: store.use(r.id, BOB, client="c2", expected_version=r.version),
        lambda: store.release_use(r.id, ALICE, client="c1", expected_version=r.version),
        lambda: store.change_uses(r.id, desired="gone", expected_version=r.version),
    ):
        with pytest.raises(Conflict):
            attempt()
    nothing_written(store, moved)
    assert store.use(r.id, BOB, client="c2", expected_version=moved.version).version == moved.version + 1


def test_keep_leaves_the_desired_state_alone(store: DatabaseStore) -> None:
    r = new_share(store)
    wished = store.set_desired_state(r.id, "paused")
    after = store.change_uses(r.id, register={ALICE: None}, client="c1", desired=KEEP)
    assert (after.desired_state, after.generation, after.observed_generation) == (
        "paused",
        wished.generation,
        wished.observed_generation,
    )
    assert last_write(store, wished).event == "@use"


def test_uses_survive_reopening_the_store(store: DatabaseStore, store_url: str, clock: FakeClock) -> None:
    r = new_share(store)
    use = store.use(r.id, ALICE, ttl=HOUR, client="c1").in_use_by[ALICE]
    again = open_store(store_url, KINDS, clock=clock, check_schema=False)
    try:
        assert dict(again.get(r.id).in_use_by) == {ALICE: use}
        assert listed(again, ALICE) == [r.id]
    finally:
        again.close()
