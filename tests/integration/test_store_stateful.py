"""A hypothesis state machine plays a client of the store against a plain-dict model of the image kind.

It creates images (with and without idempotency keys) and fires random events at them - allowed or
not, known or not, by snapshot, by id with a version, or by id alone, with current, stale or made-up
versions - and predicts every outcome from the model. After every step the store must agree with the
model: each resource's state, version and data, and how many journal rows were written.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as event_note
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tenure import (
    Conflict,
    IdempotencyKeyReused,
    Resource,
    ResourceNotFound,
    TenureError,
    TransitionNotAllowed,
    UnknownEvent,
)
from tenure.kinds.image import image
from tenure.store.protocol import EngineStore
from tests.store_support import all_journal, feed_all, replay

pytestmark = pytest.mark.timeout(180)

SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

EVENTS = (*image.event_names, "explode", "@create")
NAMES = ("alpine", "debian", "fedora")
KEYS = ("k1", "k2", "k3")
DATA = st.dictionaries(
    st.sampled_from(("a", "b", "c")),
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(alphabet="xyé✓'\"\\", max_size=3)),
    max_size=2,
)
STYLES = ("snapshot", "pinned", "id")


@dataclass
class Model:
    """What the store should hold for one resource."""

    state: str
    version: int
    data: dict[str, Any] = field(default_factory=dict)
    #: Every snapshot the store handed out, oldest first; the last one is current.
    snapshots: list[Resource] = field(default_factory=list)


class StoreMachine(RuleBasedStateMachine):
    #: Bound per test to a migrated store; one database serves every example of a run.
    store: ClassVar[EngineStore]
    #: Where the previous example left off, so each example sees only its own resources and rows.
    last_id: ClassVar[str | None] = None
    last_seq: ClassVar[int] = 0

    resources = Bundle("resources")

    def __init__(self) -> None:
        super().__init__()
        cls = type(self)
        while True:  # skip what earlier examples created
            page = self.store.list(after=cls.last_id, limit=1000)
            if page.items:
                cls.last_id = page.items[-1].id
            if page.next_after is None:
                break
        rows = feed_all(self.store, cls.last_seq)
        if rows:
            cls.last_seq = rows[-1].seq
        self.after_id = cls.last_id
        self.after_seq = cls.last_seq
        self.tag = secrets.token_hex(4)
        self.model: dict[str, Model] = {}
        self.keys: dict[str, tuple[str, str]] = {}  # idempotency key -> (resource id, name)
        self.rows = 0  # journal rows this example should have written

    # --- creating ----------------------------------------------------------------------------

    @initialize(target=resources, name=st.sampled_from(NAMES))
    def first(self, name: str) -> str:
        return self._create_new(name, None)

    @rule(target=resources, name=st.sampled_from(NAMES), key=st.one_of(st.none(), st.sampled_from(KEYS)))
    def create(self, name: str, key: str | None) -> Any:
        full_key = None if key is None else f"{self.tag}-{key}"
        if full_key is None or full_key not in self.keys:
            return self._create_new(name, full_key)
        rid, first_name = self.keys[full_key]
        if name == first_name:
            again = self.store.create("image", {"name": name}, idempotency_key=full_key)
            assert again == self.model[rid].snapshots[-1], "an idempotent replay returns the resource as it is"
            return rid
        with pytest.raises(IdempotencyKeyReused) as caught:
            self.store.create("image", {"name": name}, idempotency_key=full_key)
        assert (caught.value.key, caught.value.resource_id) == (full_key, rid)
        return multiple()

    def _create_new(self, name: str, key: str | None) -> str:
        r = self.store.create("image", {"name": name}, idempotency_key=key, actor="machine")
        assert (r.state, r.version, r.idempotency_key) == (image.initial.name, 1, key)
        self.model[r.id] = Model(r.state, 1, {}, [r])
        if key is not None:
            self.keys[key] = (r.id, name)
        self.rows += 1
        return r.id

    # --- firing ------------------------------------------------------------------------------

    @rule(
        rid=resources,
        choice=st.data(),
        style=st.sampled_from(STYLES),
        age=st.integers(-1, 3),
        data=st.one_of(st.none(), DATA),
    )
    def fire(self, rid: str, choice: st.DataObject, style: str, age: int, data: dict[str, Any] | None) -> None:
        """``age`` 0 fires at the current version, n > 0 at the n-th older one, -1 at one not reached yet.

        Half the time the event is one the model allows now (so resources get somewhere), else any.
        """
        allowed = image.allowed_events(self.model[rid].state)
        pick_allowed = bool(allowed) and choice.draw(st.booleans(), label="pick an allowed event")
        event = choice.draw(st.sampled_from(allowed if pick_allowed else EVENTS), label="event")
        m = self.model[rid]
        current = m.snapshots[-1]
        if age < 0:
            snap = dataclasses.replace(current, version=current.version + 1)
        else:
            snap = m.snapshots[max(0, len(m.snapshots) - 1 - age)]
        stale = style != "id" and snap.version != m.version

        outcome: Resource | TenureError
        try:
            outcome = self._fire(snap, event, style, data)
        except (Conflict, UnknownEvent, TransitionNotAllowed) as exc:
            outcome = exc
        event_note(f"{style} at {'a stale' if stale else 'the current'} version: {type(outcome).__name__}")

        if isinstance(outcome, UnknownEvent):
            # An unknown event is refused whatever the version; a stale pinned writer may hear about the
            # conflict first. Either way the request is wrong and nothing is written.
            assert not image.has_event(event)
            assert (outcome.kind, outcome.event, outcome.known) == ("image", event, image.event_names)
        elif isinstance(outcome, Conflict):
            assert stale, f"conflict without a stale version: {outcome}"
            assert (outcome.resource_id, outcome.expected_version, outcome.actual_version, outcome.actual_state) == (
                rid,
                snap.version,
                m.version,
                m.state,
            )
        elif isinstance(outcome, TransitionNotAllowed):
            assert not stale, f"a stale writer must hear about the conflict, got {outcome!r}"
            assert image.has_event(event)
            assert not image.allows(m.state, event)
            assert (outcome.resource_id, outcome.state, outcome.event, outcome.allowed) == (
                rid,
                m.state,
                event,
                image.allowed_events(m.state),
            )
        else:
            assert not stale, f"{style} fire at version {snap.version} won against version {m.version}"
            assert image.allows(m.state, event), f"{event!r} was accepted in {m.state!r}"
            after = outcome
            assert (after.id, after.state, after.version) == (rid, image.target(m.state, event), m.version + 1)
            m.state, m.version = after.state, after.version
            m.data = {**m.data, **(data or {})}
            assert after.data == m.data
            m.snapshots.append(after)
            self.rows += 1

    def _fire(self, snap: Resource, event: str, style: str, data: dict[str, Any] | None) -> Resource:
        if style == "snapshot":
            return self.store.fire(snap, event, data=data, actor=style)
        if style == "pinned":
            return self.store.fire(snap.id, event, expected_version=snap.version, data=data, actor=style)
        return self.store.fire(snap.id, event, data=data, actor=style)

    @rule(style=st.sampled_from(STYLES), event=st.sampled_from(EVENTS))
    def fire_at_nothing(self, style: str, event: str) -> None:
        missing = f"missing-{self.tag}"
        pinned = None if style == "id" else 1
        with pytest.raises(ResourceNotFound) as caught:
            self.store.fire(missing, event, expected_version=pinned)
        assert caught.value.resource_id == missing

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def look(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.model)))
        assert self.store.get(rid) == self.model[rid].snapshots[-1]
        assert [e.version for e in self.store.journal(rid)] == list(range(1, self.model[rid].version + 1))

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        page = self.store.list(kind="image", after=self.after_id, limit=1000)
        assert page.next_after is None
        got = {r.id: (r.state, r.version, dict(r.data)) for r in page.items}
        assert got == {rid: (m.state, m.version, m.data) for rid, m in self.model.items()}
        assert [r.id for r in page.items] == list(self.model), "list is in creation order"

    @invariant()
    def journal_has_one_row_per_write(self) -> None:
        assert len(feed_all(self.store, self.after_seq)) == self.rows

    def teardown(self) -> None:
        for rid, m in self.model.items():
            assert replay(image, all_journal(self.store, rid)) == (m.state, m.version)


def test_the_store_behaves_like_the_model(store: EngineStore) -> None:
    machine = type("BoundStoreMachine", (StoreMachine,), {"store": store})
    run_state_machine_as_test(machine, settings=SETTINGS)
