"""Webhook deliveries: a real receiver on 127.0.0.1, real stores on both databases, no mocks.

Time that matters (backoffs, leases) is the store's fake clock, moved by the tests; the deliverer's
own loop is exercised with the real clock and ``wait_until``, never by asserting how long anything took.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from tenure import Kind
from tenure.engine.deliveries import Deliverer, delivery_id
from tenure.engine.signing import verify_signature
from tenure.kinds.image import image
from tenure.store.feed import Change
from tenure.store.protocol import EngineStore
from tenure.store.subscriptions import Subscription
from tests.kinds_for_tests import job
from tests.store_support import FakeClock
from tests.support.webhooks import Receiver, settle, subscriptions_of, wait_until

KINDS: tuple[Kind, ...] = (image, job)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(open_engine_store: Callable[..., EngineStore], clock: FakeClock) -> EngineStore:
    return open_engine_store(KINDS, clock=clock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def make_deliverer(store: EngineStore) -> Iterator[Callable[..., Deliverer]]:
    made: list[Deliverer] = []

    def make(on: EngineStore | None = None, **options: object) -> Deliverer:
        d = Deliverer(on or store, rand=lambda: 1.0, **options)  # type: ignore[arg-type]
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop(timeout=5)


def _lifecycle(store: EngineStore, name: str = "img") -> str:
    r = store.create("image", {"name": name})
    store.fire(store.fire(r, "upload"), "activate")
    return r.id


def _expected(store: EngineStore, sub: Subscription) -> list[Change]:
    """Every change after the subscription's start that its filter lets through, in feed order."""
    settle(store)
    out: list[Change] = []
    after = sub.position
    while True:
        page = store.changes(after, limit=1000)
        out += [c for c in page.entries if sub.matches(c)]
        if not page.entries:
            return out
        after = page.position


def _ids(sub: Subscription, changes: list[Change]) -> list[str]:
    return [delivery_id(sub, c) for c in changes]


# --- what is sent ---------------------------------------------------------------------------------


def test_changes_are_delivered_in_feed_order_signed_and_with_a_stable_delivery_id(
    store: EngineStore, receiver: Receiver, make_deliverer: Callable[..., Deliverer], clock: FakeClock
) -> None:
    sub = subscriptions_of(store).create(receiver.url, kind="image", created_by="watcher")
    first, second = _lifecycle(store, "a"), _lifecycle(store, "b")
    store.fire(first, "deactivate", actor="ops")
    want = _expected(store, sub)
    assert len(want) == 7

    deliverer = make_deliverer()
    assert deliverer.run_until_idle() == 7

    got = receiver.accepted
    assert [r.delivery for r in got] == _ids(sub, want)
    for received, change in zip(got, want, strict=True):
        assert received.headers["tenure-subscription"] == sub.id
        assert received.headers["content-type"] == "application/json"
        assert received.headers["tenure-timestamp"] == str(int(clock.now.timestamp()))
        assert verify_signature(sub.secret, received.body, received.headers["tenure-signature"], now=clock.now)
        assert not verify_signature(
            "another-secret-0123", received.body, received.headers["tenure-signature"], now=clock.now
        )
        assert received.json == {
            "deliveryId": delivery_id(sub, change),
            "subscriptionId": sub.id,
            "position": change.position,
            "resourceId": change.resource_id,
            "kind": "image",
            "version": change.version,
            "event": change.event,
            "fromState": change.from_state,
            "toState": change.to_state,
            "actor": change.actor,
            "at": change.at.isoformat(),
            "detail": dict(change.detail),
        }
    assert {r.json["resourceId"] for r in got} == {first, second}
    assert got[-1].json["actor"] == "ops"
    after = subscriptions_of(store).get(sub.id)
    assert (after.position, after.delivered, after.last_delivered_at) == (want[-1].position, 7, clock.now)
    assert deliverer.tick() == 0  # nothing left: nothing is sent twice


def test_a_resource_filter_delivers_that_resource_only(
    store: EngineStore, receiver: Receiver, make_deliverer: Callable[..., Deliverer]
) -> None:
    watched = store.create("image", {"name": "watched"})
    settle(store)  # the subscription starts after the creation
    subscriptions_of(store).create(receiver.url, resource_id=watched.id)
    _lifecycle(store, "other")
    store.fire(store.fire(watched, "upload"), "kill")
    settle(store)
    make_deliverer().run_until_idle()
    assert [(r.json["resourceId"], r.json["event"]) for r in receiver.accepted] == [
        (watched.id, "upload"),
        (watched.id, "kill"),
    ]


def test_a_kind_and_states_filter_delivers_only_entries_entering_those_states(
    store: EngineStore, receiver: Receiver, make_deliverer: Callable[..., Deliverer]
) -> None:
    subs = subscriptions_of(store)
    two_states = subs.create(receiver.url, kind="image", states=["active", "deleted"])
    one_state = subs.create(receiver.url, kind="image", states=["deleted"])
    store.create("job")  # another kind: never delivered to either
    rid = _lifecycle(store)
    store.fire(rid, "delete")
    settle(store)
    head = store.latest_position()
    make_deliverer().run_until_idle()

    by_sub: dict[str, list[str]] = {}
    for r in receiver.accepted:
        by_sub.setdefault(r.json["subscriptionId"], []).append(r.json["toState"])
    assert by_sub == {two_states.id: ["active", "deleted"], one_state.id: ["deleted"]}
    # What the filter left out is passed over: both cursors are at the head.
    assert subs.get(two_states.id).position == subs.get(one_state.id).position == head


def test_a_deleted_subscription_is_sent_nothing_more(
    store: EngineStore, receiver: Receiver, make_deliverer: Callable[..., Deliverer]
) -> None:
    subs = subscriptions_of(store)
    sub = subs.create(receiver.url, kind="image")
    subs.delete(sub.id)
    _lifecycle(store)
    settle(store)
    assert make_deliverer().run_until_idle() == 0
    assert receiver.requests == []


# --- failures and retries -------------------------------------------------------------------------


def test_a_receiver_that_is_down_for_a_while_gets_every_change_once_and_in_order_when_back(
    store: EngineStore, receiver: Receiver, make_deliverer: Callable[..., Deliverer], clock: FakeClock
) -> None:
    subs = subscriptions_of(store)
    sub = subs.create(receiver.url, kind="image")
    deliverer = make_deliverer(timeout=2.0)
    rid = _lifecycle(store, "before")
    settle(store)
    deliverer.run_until_idle()
    assert len(receiver.accepted) == 3

    receiver.down()
    # The subscriber being down holds nothing back: the resource goes on to its end meanwhile.
    store.fire(rid, "delete")
    for n in range(3):
        settle(store)
        assert deliverer.tick() == 1  # one attempt at the next change, refused
        failing = subs.get(sub.id)
        assert failing.attempts == n + 1
        assert failing.last_error is not None
        assert "ConnectError" in failing.last_error
        assert failing.next_attempt_at == clock.now + timedelta(seconds=2**n)  # rand 1.0: the full delay
        assert deliverer.tick() == 0  # backing off: not due before next_attempt_at
        _lifecycle(store, f"while-down-{n}")
        clock.advance(timedelta(seconds=2**n))

    receiver.up()
    settle(store)
    deliverer.run_until_idle()
    want = _expected(store, sub)
    assert len(want) == 3 + 1 + 9
    got = [r.delivery for r in receiver.accepted]
    assert got == _ids(sub, want)  # all of them, in order, none twice
    back = subs.get(sub.id)
    assert (back.attempts, back.last_error, back.next_attempt_at, back.position) == (0, None, None, want[-1].position)


@pytest.mark.parametrize(("status", "said"), [(500, "answered 500"), (302, "redirect"), (404, "answered 404")])
def test_a_refusing_receiver_is_retried_with_capped_backoff_and_the_same_delivery_id(
    *,
    store: EngineStore,
    receiver: Receiver,
    make_deliverer: Callable[..., Deliverer],
    clock: FakeClock,
    status: int,
    said: str,
) -> None:
    subs = subscriptions_of(store)
    sub = subs.create(receiver.url, kind="job")
    store.create("job")
    settle(store)
    deliverer = make_deliverer()
    receiver.fail_next(*[status] * 12)
    delays = []
    for _ in range(12):
        assert deliverer.tick() == 1
        failing = subs.get(sub.id)
        assert failing.last_error is not None
        assert said in failing.last_error
        assert failing.next_attempt_at is not None
        delays.append((failing.next_attempt_at - clock.now).total_seconds())
        clock.advance(failing.next_attempt_at - clock.now)
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]  # doubling, capped at 5 minutes
    assert deliverer.tick() == 1  # and then it answers 200
    assert len({r.delivery for r in receiver.requests}) == 1
    assert [r.status for r in receiver.requests] == [status] * 12 + [200]
    done = subs.get(sub.id)
    assert (done.attempts, done.delivered, done.last_error) == (0, 1, None)


def test_jitter_spreads_retries_between_half_and_all_of_the_delay(
    store: EngineStore, receiver: Receiver, clock: FakeClock
) -> None:
    subs = subscriptions_of(store)
    sub = subs.create(receiver.url, kind="job")
    store.create("job")
    settle(store)
    deliverer = Deliverer(store, rand=lambda: 0.0)  # type: ignore[arg-type]
    try:
        receiver.fail_next(500, 500)
        deliverer.tick()
        assert subs.get(sub.id).next_attempt_at == clock.now + timedelta(seconds=0.5)
    finally:
        deliverer.stop()


def test_a_deliverer_that_stalls_past_its_lease_is_taken_over_and_the_change_is_sent_again_with_its_id(
    store: EngineStore,
    receiver: Receiver,
    make_deliverer: Callable[..., Deliverer],
    clock: FakeClock,
    in_thread: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    subs = subscriptions_of(store)
    sub = subs.create(receiver.url, kind="job")
    store.create("job")
    settle(store)
    lease = timedelta(seconds=30)
    stalled, rescuer = make_deliverer(lease=lease, timeout=30.0), make_deliverer(lease=lease)
    gate = threading.Event()
    receiver.hold_next(gate)
    thread = in_thread(stalled.tick)
    wait_until(lambda: subs.get(sub.id).claimed_by == stalled.name, what="the first deliverer claimed it")
    assert rescuer.tick() == 0  # held by a live lease
    clock.advance(lease + timedelta(seconds=1))
    assert rescuer.tick() == 1  # the lease lapsed: taken over, and delivered
    gate.set()
    thread.join(10)
    ids = [r.delivery for r in receiver.accepted]
    assert len(ids) == 2
    assert len(set(ids)) == 1
    assert stalled.stats.claims_lost == 1  # its late cursor move was refused
    assert subs.get(sub.id).delivered == 1


# --- the loop -------------------------------------------------------------------------------------


def test_a_running_deliverer_wakes_when_the_journal_grows(
    open_engine_store: Callable[..., EngineStore], receiver: Receiver, make_deliverer: Callable[..., Deliverer]
) -> None:
    real_store = open_engine_store(KINDS)
    sub = subscriptions_of(real_store).create(receiver.url, kind="image")
    # On SQLite only the wake-up can deliver in time; PostgreSQL's feed may hold entries back behind
    # other tests' transactions after the notification came, and then the poll delivers them.
    poll = 60.0 if real_store.dialect == "sqlite" else 1.0
    deliverer = make_deliverer(real_store, poll_interval=poll).start()
    _lifecycle(real_store)
    wait_until(lambda: len(receiver.accepted) == 3, what="three deliveries")
    deliverer.stop()
    assert [r.delivery for r in receiver.accepted] == _ids(sub, _expected(real_store, sub))


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_two_deliverers_on_one_postgres_database_deliver_every_subscription_in_order_and_lose_nothing(
    open_engine_store: Callable[..., EngineStore],
    receiver: Receiver,
    make_deliverer: Callable[..., Deliverer],
) -> None:
    stores = [open_engine_store(KINDS) for _ in range(3)]
    writer = stores[0]
    subs = subscriptions_of(writer)
    watching = [subs.create(receiver.url, kind="image") for _ in range(6)]
    watching.append(subs.create(receiver.url, kind="image", states=["active"]))
    for s in stores[1:]:
        make_deliverer(s, concurrency=3, batch=7, per_claim=5, poll_interval=0.2).start()

    def write(n: int) -> None:
        for i in range(8):
            _lifecycle(writer, f"w{n}-{i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    want = {s.id: _ids(s, _expected(writer, s)) for s in watching}
    assert sum(len(v) for v in want.values()) == 6 * 72 + 24

    def got() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {s.id: [] for s in watching}
        for r in receiver.accepted:
            out[r.json["subscriptionId"]].append(r.delivery)
        return out

    wait_until(lambda: {k: list(dict.fromkeys(v)) for k, v in got().items()} == want, what="every change delivered")
    for sub_id, ids in got().items():
        # In order, whichever deliverer sent it; a repeat (none expected) would only ever be the id just sent.
        assert list(dict.fromkeys(ids)) == want[sub_id]
        assert all(a == b or want[sub_id].index(a) < want[sub_id].index(b) for a, b in itertools.pairwise(ids))
