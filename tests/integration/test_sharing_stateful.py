"""A hypothesis state machine plays parties, clients, an admin and the engine's sweep against a plain model.

One resource of the ``share`` kind (teardown ``ready -> tearing``, torn down at ``gone``) is used by
several parties registered by several clients. The machine registers, renews and releases uses (as
the owner, as another client, as an admin), moves the store's clock past some expiries, runs the
engine's ``expire_uses``, wishes and un-wishes the teardown, forces it, fires the teardown event
directly, and finishes the teardown. The model predicts every outcome and every journal entry.

The rule under test: the teardown event fires if and only if teardown was wished and no live use is
left, or an admin forced it, or a client fired it while no use was live; and it fires in the very
write that removed the last use or found it expired. An expired use is not removed by time alone:
only a write on the resource (any use change, a desired state, or the engine's sweep) removes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tenure import (
    InUse,
    InvalidArgument,
    JournalEntry,
    NotSharable,
    Resource,
    TeardownStarted,
    TenureError,
    TransitionNotAllowed,
    UseNotYours,
    open_store,
)
from tenure.store import Use
from tenure.store.assembly import DatabaseStore
from tests.kinds_for_tests import share
from tests.store_support import FakeClock, all_journal

pytestmark = pytest.mark.timeout(300)

SOAK = os.environ.get("TENURE_SOAK", "").strip() == "1"

COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}
SQLITE_SETTINGS = settings(max_examples=100, stateful_step_count=50, **COMMON)
POSTGRES_SETTINGS = settings(max_examples=30, stateful_step_count=50, **COMMON)
SOAK_SETTINGS = settings(max_examples=1500, stateful_step_count=80, **COMMON)

PARTIES = tuple(f"tag:example.com,2026:party-{n}" for n in range(4))
CLIENTS = ("c0", "c1", "c2")
TTLS = (timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=5))
STEPS = (timedelta(seconds=30), timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=3))
USABLE = ("ready", "paused")


@dataclass
class Model:
    """What the store should hold for the one resource of an example."""

    version: int
    generation: int
    observed: int
    sharable: bool
    state: str = "ready"
    desired: str | None = None
    uses: dict[str, Use] = field(default_factory=dict)
    #: The generation whose teardown an admin forced.
    forced: int | None = None
    #: Why the teardown event fired ("wish", "force", "fire"), None while it has not.
    torn: str | None = None
    #: The time of the last write: the row's uses were judged live or expired then.
    written_at: datetime | None = None

    @property
    def pending(self) -> bool:
        return self.desired is not None and self.desired != self.state and self.generation > self.observed

    @property
    def wished(self) -> bool:
        return self.pending and self.desired not in USABLE


def attempt(call: Callable[[], Resource]) -> Resource | TenureError:
    """What the store answers: the resource written (or left as it was), or the refusal."""
    try:
        return call()
    except TenureError as refused:
        return refused


class SharingMachine(RuleBasedStateMachine):
    #: Bound per test to a migrated store and its clock; one database serves every example of a run.
    store: ClassVar[DatabaseStore]
    clock: ClassVar[FakeClock]

    def __init__(self) -> None:
        super().__init__()
        self.rid = ""
        self.model = Model(0, 0, 0, True)
        #: The journal entries this example expects, by version (event, uses detail or None).
        self.expected: dict[int, tuple[str, dict[str, str] | None]] = {}
        #: Every expiry each party had, by the version that set it (to judge "expired" entries).
        self.expiries: dict[int, dict[str, datetime]] = {}

    # --- helpers ---------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.clock.now

    def _written(self, event: str, uses: dict[str, str] | None) -> None:
        m = self.model
        m.version += 1
        m.written_at = self.now
        self.expected[m.version] = (event, uses)
        self.expiries[m.version] = {p: u.expires_at for p, u in m.uses.items()}

    def _drop_expired(self) -> dict[str, str]:
        """The model's plan_uses: every use that is not live now goes with the write."""
        gone = {p: "expired" for p, u in self.model.uses.items() if u.expires_at <= self.now}
        for p in gone:
            del self.model.uses[p]
        return gone

    def _settle_use_write(self, changes: dict[str, str], *, default_event: str) -> None:
        """A use-changing write: it fires the teardown when it leaves a wish with no live use."""
        m = self.model
        if m.wished and m.state in USABLE and not m.uses:
            m.state, m.torn = "tearing", "wish"
            self._written("teardown", changes or None)
        elif changes or default_event == "@desired":
            self._written(default_event, changes or None)

    # --- the resource ----------------------------------------------------------------------------

    @initialize(sharable=st.booleans())
    def create(self, sharable: bool) -> None:
        r = self.store.create("share", sharable=sharable, actor="creator")
        self.rid = r.id
        self.model = Model(r.version, r.generation, r.observed_generation, sharable, written_at=self.now)
        self.expected = {1: ("@create", None)}
        self.expiries = {1: {}}

    @precondition(lambda self: self.model.torn is not None)
    @rule(sharable=st.booleans())
    def next_resource(self, sharable: bool) -> None:
        """Once torn down, the example goes on with a new resource (so one example sees many lifecycles)."""
        self.create(sharable)

    # --- uses ------------------------------------------------------------------------------------

    def _live(self) -> dict[str, Use]:
        return {p: u for p, u in self.model.uses.items() if u.expires_at > self.now}

    @rule(
        party=st.sampled_from(PARTIES),
        client=st.sampled_from(CLIENTS),
        ttl=st.one_of(st.none(), st.sampled_from(TTLS)),
        admin=st.booleans(),
    )
    def register(self, party: str, client: str, ttl: timedelta | None, admin: bool) -> None:
        m = self.model
        live = self._live()
        held = live.get(party)
        others = sorted(set(live) - {party})
        if m.state not in USABLE:
            refusal: type[TenureError] | None = TeardownStarted
        elif held is not None and held.client != client and not admin:
            refusal = UseNotYours
        elif held is None and not m.sharable and others:
            refusal = NotSharable
        else:
            refusal = None
        outcome = attempt(lambda: self.store.use(self.rid, party, ttl=ttl, client=client, admin=admin))
        if refusal is not None:
            self._refused(outcome, refusal)
            if isinstance(outcome, UseNotYours):
                assert (outcome.owner, outcome.client) == (held.client if held else None, client)
            if isinstance(outcome, NotSharable):
                assert (outcome.party, outcome.refused) in [(o, party) for o in others]
            return
        changes = self._drop_expired()
        expires = self.now + (ttl if ttl is not None else self.store.use_policy.ttl(None))
        if held is None:
            m.uses[party] = Use(client, self.now, expires)
            changes[party] = "registered"
        else:
            m.uses[party] = Use(held.client, held.registered_at, expires)
            changes[party] = "renewed"
        self._settle_use_write(changes, default_event="@use")
        self._wrote(outcome)

    @rule(party=st.sampled_from(PARTIES), client=st.sampled_from(CLIENTS), admin=st.booleans())
    def release(self, party: str, client: str, admin: bool) -> None:
        m = self.model
        held = self._live().get(party)
        outcome = attempt(lambda: self.store.release_use(self.rid, party, client=client, admin=admin))
        if held is not None and held.client != client and not admin:
            self._refused(outcome, UseNotYours)
            return
        changes = self._drop_expired()
        if m.uses.pop(party, None) is not None:
            changes[party] = "released"
        self._settle_use_write(changes, default_event="@use")
        self._wrote(outcome)

    # --- time and the engine ---------------------------------------------------------------------

    @rule(step=st.sampled_from(STEPS))
    def advance(self, step: timedelta) -> None:
        self.clock.advance(step)

    @rule()
    def expire(self) -> None:
        m = self.model
        written = [r for r in self.store.expire_uses(actor="engine", limit=1000) if r.id == self.rid]
        changes = self._drop_expired()
        if changes:
            self._settle_use_write(changes, default_event="@expired")
        assert [r.version for r in written] == ([m.version] if changes else []), "the sweep and the model disagree"

    # --- the teardown ----------------------------------------------------------------------------

    @rule(client=st.sampled_from(CLIENTS))
    def wish_teardown(self, client: str) -> None:
        m = self.model
        outcome = attempt(lambda: self.store.set_desired_state(self.rid, "gone", client=client))
        if m.desired == "gone" and (m.pending or m.state == "gone"):
            self._wrote(outcome)  # asked again for what is asked: nothing written
            return
        m.desired, m.generation = "gone", m.generation + 1
        if m.state == "gone":
            m.observed = m.generation
        changes = self._drop_expired()
        if m.wished:
            for party, use in list(m.uses.items()):
                if use.client == client:
                    del m.uses[party]
                    changes[party] = "released"
        self._settle_use_write(changes, default_event="@desired")
        self._wrote(outcome)

    @rule(client=st.sampled_from(CLIENTS))
    def clear_wish(self, client: str) -> None:
        m = self.model
        outcome = attempt(lambda: self.store.set_desired_state(self.rid, None, client=client))
        if m.desired is not None:
            m.desired, m.generation = None, m.generation + 1
            m.observed = m.generation
            self._settle_use_write(self._drop_expired(), default_event="@desired")
        self._wrote(outcome)

    @rule()
    def force(self) -> None:
        m = self.model
        outcome = attempt(lambda: self.store.force_teardown(self.rid, actor="admin", reason="test"))
        if m.state == "gone":
            self._refused(outcome, InvalidArgument)
            return
        parties = {p: u.to_json() for p, u in m.uses.items()}
        if not m.pending or m.desired != "gone":
            m.desired, m.generation = "gone", m.generation + 1
        m.forced = m.generation
        m.uses.clear()
        if m.state in USABLE:
            m.state, m.torn = "tearing", "force"
            self._written("teardown", None)
        else:
            self._written("@force", None)
        self._wrote(outcome)
        entry = all_journal(self.store, self.rid)[-1]
        assert (entry.actor, entry.detail["forced"], entry.detail["parties"]) == ("admin", True, parties)

    @rule(client=st.sampled_from(CLIENTS))
    def fire_teardown(self, client: str) -> None:
        m = self.model
        live = sorted(self._live())
        outcome = attempt(lambda: self.store.fire(self.rid, "teardown", actor=client))
        if m.state not in USABLE:
            self._refused(outcome, TransitionNotAllowed)
            return
        if live:
            self._refused(outcome, InUse)
            assert isinstance(outcome, InUse)
            assert list(outcome.parties) == live, "refused for other parties than the live ones"
            return
        changes = dict.fromkeys(m.uses, "expired")
        m.uses.clear()
        m.state, m.torn = "tearing", "fire"
        self._written("teardown", changes or None)
        self._wrote(outcome)

    @rule()
    def finish(self) -> None:
        m = self.model
        outcome = attempt(lambda: self.store.fire(self.rid, "finish", actor="engine"))
        if m.state != "tearing":
            self._refused(outcome, TransitionNotAllowed)
            return
        if m.desired == "gone" or m.pending:
            m.observed = m.generation
        m.state = "gone"
        self._written("finish", None)
        self._wrote(outcome)

    def _refused(self, outcome: Resource | TenureError, refusal: type[TenureError]) -> None:
        assert isinstance(outcome, refusal), f"expected {refusal.__name__}, got {outcome!r}"
        assert self.store.get(self.rid).version == self.model.version, "a refused change wrote something"

    def _wrote(self, outcome: Resource | TenureError) -> None:
        assert isinstance(outcome, Resource), f"refused: {outcome!r}"
        assert outcome.version == self.model.version, "the store wrote other than the model"

    # --- invariants ------------------------------------------------------------------------------

    @invariant()
    def the_row_is_the_model(self) -> None:
        if not self.rid:
            return
        m = self.model
        r = self.store.get(self.rid)
        assert (
            r.state,
            r.version,
            r.desired_state,
            r.generation,
            r.observed_generation,
            r.forced_generation,
            r.sharable,
        ) == (m.state, m.version, m.desired, m.generation, m.observed, m.forced, m.sharable)
        assert dict(r.in_use_by) == m.uses

    @invariant()
    def torn_down_iff_wished_and_unused_or_forced(self) -> None:
        if not self.rid:
            return
        m = self.model
        r = self.store.get(self.rid)
        torn = r.state not in USABLE
        assert torn == (m.torn is not None)
        if not torn and m.wished:
            # Never left in use when it should go: at the last write some use was live.
            assert m.written_at is not None
            assert any(u.expires_at > m.written_at for u in r.in_use_by.values()), (
                f"teardown wished and no live use at the last write, yet {r.state}"
            )

    @invariant()
    def the_journal_is_the_history_of_the_row(self) -> None:
        if not self.rid:
            return
        entries = all_journal(self.store, self.rid)
        row = self.store.get(self.rid)
        assert [e.version for e in entries] == list(range(1, row.version + 1)), "one entry per version"
        got = {e.version: (e.event, e.detail.get("uses")) for e in entries}
        assert got == self.expected
        parties = check_journal(entries, self.expiries)
        assert parties == set(row.in_use_by), "replaying the journal's uses does not give the row's"
        assert entries[-1].to_state == row.state

    def teardown(self) -> None:
        # Leave nothing for the next example's sweep.
        if self.rid and self.store.get(self.rid).in_use_by:
            self.store.change_uses(self.rid, release=PARTIES, admin=True)


def check_journal(entries: list[JournalEntry], expiries: dict[int, dict[str, datetime]]) -> set[str]:
    """Replay a resource's journal: states chain, the parties follow the ``uses`` details (and a force
    drops them all), an entry that says "expired" was right, and the teardown event fired only with
    no party left, or forced. Returns the parties the journal says use the resource at the end."""
    parties: set[str] = set()
    state: str | None = None
    last_expiry: dict[str, datetime] = {}
    for e in entries:
        assert e.from_state == state, f"v{e.version}: from {e.from_state}, replay is at {state}"
        if not e.event.startswith("@"):
            assert share.target(state or "", e.event) == e.to_state
        else:
            assert e.to_state == (state or e.to_state)
        state = e.to_state
        for party, what in e.detail.get("uses", {}).items():
            if what in ("registered", "renewed"):
                parties.add(party)
                continue
            assert party in parties, f"v{e.version}: {party} {what} but the journal never had it"
            parties.discard(party)
            if what == "expired":
                assert last_expiry[party] <= e.at, f"v{e.version}: {party} removed as expired before it expired"
        if e.detail.get("forced"):
            assert set(e.detail["parties"]) == parties, f"v{e.version}: the force recorded other parties"
            parties.clear()
        if e.event == "teardown":
            assert not parties, f"v{e.version}: teardown fired while {sorted(parties)} still used it"
        last_expiry.update(expiries.get(e.version, {}))
    return parties


def run_machine(store: DatabaseStore, clock: FakeClock, machine_settings: settings) -> None:
    machine = type("BoundSharingMachine", (SharingMachine,), {"store": store, "clock": clock})
    run_state_machine_as_test(machine, settings=machine_settings)


@pytest.fixture
def sharing_store(store_url: str, clock: FakeClock) -> Iterator[DatabaseStore]:
    s = open_store(store_url, [share], clock=clock, check_schema=False)
    try:
        s.migrate()
        yield s
    finally:
        s.close()


def test_sharing_behaves_like_the_model(
    sharing_store: DatabaseStore, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    on_postgres = "postgres" in request.node.callspec.id
    run_machine(sharing_store, clock, POSTGRES_SETTINGS if on_postgres else SQLITE_SETTINGS)


@pytest.mark.soak
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not SOAK, reason="long soak test: set TENURE_SOAK=1 to run it")
def test_soak_sharing_behaves_like_the_model(sharing_store: DatabaseStore, clock: FakeClock) -> None:
    run_machine(sharing_store, clock, SOAK_SETTINGS)
