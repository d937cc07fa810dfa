"""Many clients using one deployment at once on PostgreSQL, each thread with its own store (own connections).

Clients register, renew and release their parties while the creator wishes the teardown (and, in the
second test, while the engine's clock runs past their expiries and its sweep removes them). Every
write a client was told succeeded is recorded with the version it got, then checked against the
journal and the row:

- never a teardown while a live party exists: replaying the journal's ``uses`` details, the write that
  fired ``undeploy`` left no party, and each party it removed as expired had expired by then;
- never left deployed when it should go: once no party is live and teardown is wished, it is torn down;
- nothing lost: every write reported as done is in the journal, and every party that registered and
  did not release is either still there or journaled as expired (or forced).
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from tenure import Conflict, JournalEntry, Resource, TeardownStarted, open_store
from tenure.kinds.deployment import deployment
from tenure.store.assembly import DatabaseStore
from tests.store_support import FakeClock, all_journal

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

CLIENTS = 8
PARTIES_PER_CLIENT = 3
ROUNDS = 6
OPS = 30


@dataclass
class Done:
    """A write a client was told succeeded: the version it got and what it did for which party."""

    version: int
    client: str
    party: str
    what: str  # "registered" (or renewed) or "released"
    expires_at: datetime | None = None


@dataclass
class ClientLog:
    client: str
    done: list[Done] = field(default_factory=list)
    #: The parties this client believes it still uses (registered and not released).
    holding: set[str] = field(default_factory=set)
    refused: int = 0
    error: str | None = None


def retrying(call: Callable[[], Resource]) -> Resource:
    """Blind writes re-plan on the newest version; a resource this hot may still say Conflict: try again."""
    for _ in range(200):
        try:
            return call()
        except Conflict:
            continue
    raise AssertionError("a use change never won")


@pytest.fixture
def stores(pg_url: str, clock: FakeClock) -> Iterator[list[DatabaseStore]]:
    """One migrated store for the checks, then one per client, the creator and the engine."""
    opened = [open_store(pg_url, [deployment], clock=clock, check_schema=False, pool_size=2)]
    opened[0].migrate()
    opened += [
        open_store(pg_url, [deployment], clock=clock, check_schema=False, pool_size=2) for _ in range(CLIENTS + 1)
    ]
    try:
        yield opened
    finally:
        for s in opened:
            s.close()


def deployed(store: DatabaseStore) -> Resource:
    r = store.create("deployment", {"name": "web", "image": "nginx:1"}, actor="creator")
    return store.fire(r, "deployed", actor="deployer")


def run(workers: list[Callable[[], None]]) -> None:
    failures: list[str] = []

    def guard(work: Callable[[], None]) -> Callable[[], None]:
        def run_one() -> None:
            try:
                work()
            except BaseException as exc:
                failures.append(repr(exc))

        return run_one

    threads = [threading.Thread(target=guard(w), name=f"sharing-{n}") for n, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    assert failures == []


def check_history(store: DatabaseStore, resource_id: str, logs: list[ClientLog]) -> list[JournalEntry]:
    """Replay the journal against what the clients were told; returns the journal."""
    entries = all_journal(store, resource_id)
    row = store.get(resource_id)
    assert [e.version for e in entries] == list(range(1, row.version + 1))
    done = {(d.version, d.party): d for log in logs for d in log.done}
    assert len(done) == sum(len(log.done) for log in logs), "two clients were told they won the same write"
    by_version = {e.version: e for e in entries}
    for (version, party), d in done.items():
        entry = by_version.get(version)
        assert entry is not None, f"lost update: {d} is not in the journal"
        assert entry.actor == d.client, f"v{version} was written by {entry.actor}, {d.client} was told it won"
        assert (entry.detail.get("uses") or {}).get(party) in (
            ("registered", "renewed") if d.what == "registered" else ("released",)
        ), f"v{version} does not record {d}"

    parties: dict[str, datetime | None] = {}  # party -> its expiry as far as the journal and the clients know
    state = None
    wished = False
    for e in entries:
        assert e.from_state == state or e.version == 1
        state = e.to_state
        if e.event == "@desired" or "desired_state" in e.detail:
            wished = e.detail.get("desired_state") == "undeployed"
        for party, what in (e.detail.get("uses") or {}).items():
            if what in ("registered", "renewed"):
                told = done.get((e.version, party))
                assert told is not None, f"v{e.version}: {party} {what}, but no client was told so"
                parties[party] = told.expires_at
                continue
            assert party in parties, f"v{e.version}: {party} {what}, but it was not there"
            expiry = parties.pop(party)
            if what == "expired":
                assert expiry is not None
                assert expiry <= e.at, f"v{e.version}: {party} removed as expired at {e.at}, it ran until {expiry}"
        if e.detail.get("forced"):
            parties.clear()
        if e.event == "undeploy":
            assert wished, f"v{e.version}: undeploy fired without a teardown wish"
            assert not parties, f"v{e.version}: undeploy fired while {sorted(parties)} still used it"
    assert set(parties) == set(row.in_use_by), "the journal's parties are not the row's"
    return entries


def check_nothing_lost(row: Resource, entries: list[JournalEntry], logs: list[ClientLog]) -> None:
    """Every party a client still holds is on the row, or the journal removed it as expired or forced."""
    removed = {
        party for e in entries for party, what in (e.detail.get("uses") or {}).items() if what in ("expired", "forced")
    }
    forced = {party for e in entries if e.detail.get("forced") for party in e.detail["parties"]}
    for log in logs:
        for party in log.holding:
            if party in row.in_use_by:
                assert row.in_use_by[party].client == log.client
            else:
                assert party in removed | forced, f"{log.client}'s {party} vanished without a journal entry"


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_clients_racing_a_teardown_wish_never_see_a_teardown_under_a_live_party(
    stores: list[DatabaseStore], clock: FakeClock, round_: int
) -> None:
    checker, creator, clients = stores[0], stores[1], stores[2:]
    r = deployed(checker)
    rng = random.Random(round_)
    logs = [ClientLog(f"c{n}") for n in range(CLIENTS)]
    # In even rounds half the clients stay to the end; the others release everything before they stop,
    # so in odd rounds the last release races the other clients' registrations.
    lingering = {log.client for log in logs[: CLIENTS // 2]} if round_ % 2 == 0 else set()
    # How often a client that uses the resource leaves; in odd rounds they come and go quickly, so that
    # the uses often drop to none while other clients are registering.
    leaving = 0.4 if round_ % 2 == 0 else 0.9
    barrier = threading.Barrier(CLIENTS + 1, timeout=60)

    def client(n: int, seed: int) -> None:
        store, log, choose = clients[n], logs[n], random.Random(seed)
        parties = [f"tag:example.com,2026:{log.client}/{k}" for k in range(PARTIES_PER_CLIENT)]

        def release(party: str) -> None:
            after = retrying(lambda: store.release_use(r.id, party, client=log.client))
            log.done.append(Done(after.version, log.client, party, "released"))
            log.holding.discard(party)

        def register(party: str) -> None:
            try:
                after = retrying(lambda: store.use(r.id, party, client=log.client))
            except TeardownStarted:
                log.refused += 1
                assert not log.holding, "teardown started while this client still held a party"
                return
            log.done.append(Done(after.version, log.client, party, "registered", after.in_use_by[party].expires_at))
            log.holding.add(party)

        barrier.wait()
        for _ in range(OPS):
            if log.holding and choose.random() < leaving:
                release(choose.choice(sorted(log.holding)))
            else:
                register(choose.choice(parties))
        if log.client not in lingering:
            for party in sorted(log.holding):
                release(party)

    def wish() -> None:
        barrier.wait()
        for _ in range(rng.randrange(3, 40)):
            creator.get(r.id)  # let the clients get going for a while
        retrying(lambda: creator.set_desired_state(r.id, "undeployed", client="creator", actor="creator"))

    seeds = [rng.randrange(1 << 30) for _ in range(CLIENTS)]
    run([*(functools.partial(client, n, seeds[n]) for n in range(CLIENTS)), wish])

    entries = check_history(checker, r.id, logs)
    row = checker.get(r.id)
    check_nothing_lost(row, entries, logs)
    live = row.live_uses(clock.now)
    if row.state == "deployed":
        assert live, "no party is left and teardown is wished, yet it is still deployed"
        assert {p for log in logs for p in log.holding} == set(live)
        # The lingering clients leave one by one: the last one's release starts the teardown.
        holders = [(log.client, p) for log in logs for p in sorted(log.holding)]
        for n, (who, party) in enumerate(holders):
            after = checker.release_use(r.id, party, client=who)
            assert after.state == ("undeploying" if n == len(holders) - 1 else "deployed")
    else:
        assert row.state == "undeploying"
        assert not live
        assert all(not log.holding for log in logs)
    last = all_journal(checker, r.id)[-1]
    assert (last.event, last.from_state, last.to_state) == ("undeploy", "deployed", "undeploying")
    for log in logs:
        for k in range(PARTIES_PER_CLIENT):
            assert checker.list(party=f"tag:example.com,2026:{log.client}/{k}").items == []


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_expiry_racing_renewals_never_tears_down_a_renewed_party(
    stores: list[DatabaseStore], clock: FakeClock, round_: int
) -> None:
    checker, engine, clients = stores[0], stores[1], stores[2:]
    ttl = timedelta(seconds=60)
    r = deployed(checker)
    rng = random.Random(1000 + round_)
    logs = [ClientLog(f"c{n}") for n in range(CLIENTS)]
    for log in logs:  # every client uses it before the creator asks for the teardown
        party = f"urn:example:{log.client}"
        after = clients[0].use(r.id, party, ttl=ttl, client=log.client)
        log.done.append(Done(after.version, log.client, party, "registered", after.in_use_by[party].expires_at))
        log.holding.add(party)
    assert checker.set_desired_state(r.id, "undeployed", client="creator").state == "deployed"
    # Some clients die after a while: they stop renewing and never release.
    lifetimes = [rng.randrange(3, OPS) for _ in range(CLIENTS)]
    stop = threading.Event()
    barrier = threading.Barrier(CLIENTS + 1, timeout=60)

    def client(n: int) -> None:
        store, log = clients[n], logs[n]
        party = f"urn:example:{log.client}"

        def renew() -> Resource:
            after = retrying(lambda: store.use(r.id, party, ttl=ttl, client=log.client))
            log.done.append(Done(after.version, log.client, party, "registered", after.in_use_by[party].expires_at))
            log.holding.add(party)
            return after

        barrier.wait()
        for _ in range(lifetimes[n]):
            try:
                renew()
            except TeardownStarted:
                log.refused += 1
                break

    def ticker() -> None:
        barrier.wait()
        tick = random.Random(round_)
        while not stop.is_set():
            clock.advance(timedelta(seconds=tick.randrange(2, 20)))
            engine.expire_uses(actor="engine")

    ticking = threading.Thread(target=ticker, name="ticker")
    ticking.start()
    try:
        run([functools.partial(client, n) for n in range(CLIENTS)])
    finally:
        stop.set()
        ticking.join(timeout=60)
    assert not ticking.is_alive()

    # Every client has stopped renewing: once their uses run out, the sweep tears the deployment down.
    clock.advance(ttl)
    for _ in range(CLIENTS + 1):
        if not engine.expire_uses(actor="engine"):
            break
    row = checker.get(r.id)
    assert (row.state, dict(row.in_use_by)) == ("undeploying", {}), "left deployed when it should go"
    entries = check_history(checker, r.id, logs)
    check_nothing_lost(row, entries, logs)
    (teardown,) = [e for e in entries if e.event == "undeploy"]
    assert teardown.actor == "engine", "only the sweep can find the last use expired here"
    assert all(e.version < teardown.version for e in entries if e.event == "@use"), "a use after teardown"
    expired = sum(1 for e in entries for what in (e.detail.get("uses") or {}).values() if what == "expired")
    assert expired >= 1
