"""Kinds evolve, on both stores: a resource lives its whole life on the version of its kind it was made under.

A store that loads two versions of a kind makes new resources under the newest, finishes the old
ones on their own graph and steps, refuses a client the events only the engine fires, and runs a
rest state's step only while a desired state asks to leave it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tenure import Event, Kind, Role, State, Steps, TransitionNotAllowed, UnknownKind, Worker
from tenure.engine import Advance, Outcome, Reconcile, Resource, StepContext
from tenure.errors import DuplicateKind, InvalidKind
from tenure.store.protocol import EngineStore
from tests.kinds_for_tests import order_v1, order_v2

pytestmark = pytest.mark.timeout(120)


def _steps(ran: list[str]) -> Steps:
    steps = Steps()

    def step(name: str, event: str) -> Callable[[Resource, StepContext], Advance]:
        def run(resource: Resource, ctx: StepContext) -> Advance:
            ran.append(f"v{ctx.kind.version}:{name}")
            return Advance(event)

        run.__name__ = name
        return run

    steps.add(order_v1, "new", step("pack", "pack"))
    steps.add(order_v1, "packing", step("packed", "ship"))
    steps.add(order_v2, "new", step("place", "place"))

    def hand_to_partner(resource: Resource, ctx: StepContext) -> Outcome:
        ran.append(f"v{ctx.kind.version}:hand_to_partner")
        # Only shipping takes the partner; any other wish goes the plain way.
        return Advance("ship") if resource.desired_state == "shipped" else Reconcile()

    steps.add(order_v2, "placed", hand_to_partner)
    return steps


def test_resources_finish_on_the_version_they_were_made_under(
    open_engine_store: Callable[..., EngineStore],
) -> None:
    old = open_engine_store([order_v1])
    before = old.create("order")
    assert before.kind_version == 1

    # The service is upgraded: both versions are loaded; the old resource keeps its version.
    store = open_engine_store([order_v1, order_v2])
    assert store.kind("order") is order_v2
    assert store.kind_of(store.get(before.id)) is order_v1
    assert store.kind_versions("order") == (order_v1, order_v2)
    after = store.create("order")
    assert after.kind_version == 2

    ran: list[str] = []
    Worker(store, _steps(ran), name="w").run_until_idle()
    assert store.get(before.id).state == "shipped"
    assert [e.to_state for e in store.journal(before.id)] == ["new", "packing", "shipped"]
    # The new order rests in a state version 1 does not have, until a client asks it to ship.
    assert store.get(after.id).state == "placed"
    assert sorted(ran) == ["v1:pack", "v1:packed", "v2:place"]


def test_a_version_that_is_not_loaded_is_named(open_engine_store: Callable[..., EngineStore]) -> None:
    newer = open_engine_store([order_v2])
    r = newer.create("order")
    older = open_engine_store([order_v1])
    with pytest.raises(UnknownKind) as caught:
        older.kind_of(older.get(r.id))
    assert caught.value.version == 2
    assert str(caught.value) == "version 2 of kind 'order' is not loaded; loaded versions: 1"


def test_two_different_kinds_under_one_name_and_version_are_refused(
    open_engine_store: Callable[..., EngineStore],
) -> None:
    store = open_engine_store([order_v1])
    impostor = Kind(
        "order", initial="a", states=[State("a", 1), State("b", 2, Role.FINAL)], events=[Event("go", "a", "b")]
    )
    with pytest.raises(DuplicateKind):
        store.register(impostor)
    store.register(order_v1)  # the same kind again is fine


def test_a_client_may_not_fire_an_event_only_the_engine_fires(open_engine_store: Callable[..., EngineStore]) -> None:
    store = open_engine_store([order_v2])
    r = store.create("order")
    r = store.fire(r, "place")
    with pytest.raises(TransitionNotAllowed) as caught:
        store.fire(r, "ship")
    assert caught.value.allowed == ("cancel",)
    assert "only the engine fires it" in str(caught.value)
    assert store.get(r.id).version == r.version, "nothing was written"


def test_a_rest_state_step_runs_only_while_a_desired_state_asks_to_leave(
    open_engine_store: Callable[..., EngineStore],
) -> None:
    store = open_engine_store([order_v2])
    ran: list[str] = []
    worker = Worker(store, _steps(ran), name="w")
    r = store.create("order")
    worker.run_until_idle()
    r = store.get(r.id)
    assert (r.state, ran) == ("placed", ["v2:place"])
    assert worker.run_until_idle() == 0, "at rest with no wish, nothing runs"

    store.set_desired_state(r, "shipped")
    worker.run_until_idle()
    r = store.get(r.id)
    assert r.state == "shipped"
    assert ran == ["v2:place", "v2:hand_to_partner"], "the rest state's step did the leaving, not a plain event"
    assert r.observed_generation == r.generation


def test_a_rest_state_step_leaves_a_wish_it_does_not_serve_to_the_plain_way(
    open_engine_store: Callable[..., EngineStore],
) -> None:
    store = open_engine_store([order_v2])
    ran: list[str] = []
    worker = Worker(store, _steps(ran), name="w")
    r = store.create("order")
    worker.run_until_idle()
    store.set_desired_state(store.get(r.id), "cancelled")
    worker.run_until_idle()
    r = store.get(r.id)
    assert r.state == "cancelled"
    assert ran == ["v2:place", "v2:hand_to_partner"], "the step was asked, and answered Reconcile"
    assert [e.event for e in store.journal(r.id)][-1] == "cancel"


def test_a_worker_that_lacks_a_version_of_a_kind_leaves_its_resources_to_workers_that_have_it(
    open_engine_store: Callable[..., EngineStore],
) -> None:
    # A rolling upgrade: an old worker knows version 1 only; the new code made an order under version 2,
    # which rests in "new" (a state both versions have, each with its own step).
    old_store = open_engine_store([order_v1])
    new_store = open_engine_store([order_v1, order_v2])
    made = new_store.create("order")
    ran: list[str] = []
    old_steps = Steps()
    old_steps.add(order_v1, "new", _steps(ran).get("order", "new", version=1).step)  # type: ignore[union-attr]
    old_worker = Worker(old_store, old_steps, name="old")
    assert old_worker.run_until_idle() == 0
    untouched = new_store.get(made.id)
    assert (untouched.state, untouched.version, untouched.claimed_by) == ("new", 1, None)
    assert ran == []

    Worker(new_store, _steps(ran), name="new").run_until_idle()
    assert new_store.get(made.id).state == "placed"
    assert ran == ["v2:place"]


def test_a_new_version_may_not_give_an_old_code_to_another_state(open_engine_store: Callable[..., EngineStore]) -> None:
    store = open_engine_store([order_v1])
    clash = Kind(
        "order",
        version=3,
        initial="new",
        states=[State("new", 100, Role.WORK, on_failure="cancel"), State("boxed", 200, Role.FINAL),
                State("cancelled", 900, Role.FINAL)],
        events=[Event("box", "new", "boxed"), Event("cancel", "new", "cancelled")],
    )  # fmt: skip
    with pytest.raises(InvalidKind) as caught:
        store.register(clash)
    assert "code 200 is 'packing' in version 1 and 'boxed' in version 3" in str(caught.value)
    assert store.kind("order") is order_v1, "nothing was registered"
