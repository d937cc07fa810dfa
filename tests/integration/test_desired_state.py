"""Desired state in the store, on both stores: validation, the compare-and-swap, and how transitions observe it.

Setting a desired state bumps the version and the generation and journals ``@desired``; a transition
into the desired state (or into a final state short of it) makes ``observed_generation`` catch up, and
one that comes to rest short of it makes the resource due for the engine.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tenure import ClaimLost, Conflict, InvalidArgument, Resource, ResourceNotFound, UnknownState
from tenure.kinds.image import image
from tenure.store.desired import DESIRED_EVENT, desire_pending
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock, all_journal

pytestmark = pytest.mark.timeout(120)

LEASE = timedelta(seconds=30)


@pytest.fixture
def store_url(reused_store_url: str) -> str:
    """Overrides the root conftest's: one database per module, emptied before each test."""
    return reused_store_url


def _active(store: EngineStore, name: str = "img") -> Resource:
    r = store.create("image", {"name": name})
    return store.fire(store.fire(r, "upload"), "activate")


def _unchanged(store: EngineStore, before: Resource) -> None:
    assert store.get(before.id) == before
    assert all_journal(store, before.id)[-1].version == before.version


# --- setting it ------------------------------------------------------------------------------------


def test_setting_a_desired_state_is_a_journaled_compare_and_swap(store: EngineStore, clock: FakeClock) -> None:
    r = _active(store)
    clock.advance()

    after = store.set_desired_state(r, "deleted", actor="alice")

    assert (after.state, after.version, after.desired_state) == ("active", r.version + 1, "deleted")
    assert (after.generation, after.observed_generation) == (r.generation + 1, r.observed_generation)
    assert after.next_attempt_at == clock.now  # resting short of it: due for the engine at once
    assert (after.entered_at, after.updated_at) == (r.entered_at, clock.now)
    assert desire_pending(after)
    assert store.get(r.id) == after
    entry = all_journal(store, r.id)[-1]
    assert (entry.version, entry.event, entry.from_state, entry.to_state, entry.actor) == (
        after.version,
        DESIRED_EVENT,
        "active",
        "active",
        "alice",
    )
    assert entry.detail == {"desired_state": "deleted", "generation": after.generation}


def test_desiring_the_current_state_is_observed_at_once(store: EngineStore) -> None:
    r = _active(store)
    after = store.set_desired_state(r, "active")
    assert (after.desired_state, after.generation, after.observed_generation) == ("active", 2, 2)
    assert after.next_attempt_at is None
    assert not desire_pending(after)


def test_clearing_the_desired_state_is_observed_at_once_and_no_longer_due(store: EngineStore) -> None:
    r = store.set_desired_state(_active(store), "deleted")
    cleared = store.set_desired_state(r, None)
    assert (cleared.desired_state, cleared.generation, cleared.observed_generation) == (None, 3, 3)
    assert cleared.next_attempt_at is None
    assert all_journal(store, r.id)[-1].detail == {"desired_state": None, "generation": 3}


def test_a_state_the_kind_does_not_have_is_refused_listing_its_states(store: EngineStore) -> None:
    r = _active(store)
    with pytest.raises(UnknownState) as caught:
        store.set_desired_state(r, "gone")
    assert (caught.value.kind, caught.value.state) == ("image", "gone")
    assert caught.value.known == tuple(s.name for s in image.states)
    _unchanged(store, r)


def test_an_unreachable_desired_state_is_refused_naming_what_is_reachable(store: EngineStore) -> None:
    r = _active(store)
    with pytest.raises(InvalidArgument) as caught:
        store.set_desired_state(r.id, "queued")
    assert (caught.value.field, caught.value.got) == ("desired_state", "queued")
    assert caught.value.constraint == (
        "must be reachable from state 'active' (reachable: active, deactivated, pending_delete, deleted)"
    )
    _unchanged(store, r)


def test_a_final_resource_can_only_desire_where_it_is(store: EngineStore) -> None:
    r = store.fire(_active(store), "delete")
    with pytest.raises(InvalidArgument):
        store.set_desired_state(r, "active")
    after = store.set_desired_state(r, "deleted")
    assert after.observed_generation == after.generation


def test_a_stale_snapshot_or_expected_version_conflicts_and_writes_nothing(store: EngineStore) -> None:
    r = _active(store)
    moved = store.fire(r, "deactivate")
    with pytest.raises(Conflict) as caught:
        store.set_desired_state(r, "deleted")
    assert (caught.value.expected_version, caught.value.actual_version, caught.value.actual_state) == (
        r.version,
        moved.version,
        "deactivated",
    )
    with pytest.raises(Conflict) as caught:
        store.set_desired_state(r.id, "deleted", expected_version=r.version)
    assert caught.value.actual_version == moved.version
    _unchanged(store, moved)
    # By id alone it applies to the resource as it is now.
    assert store.set_desired_state(r.id, "deleted").version == moved.version + 1


def test_a_stale_snapshot_refused_for_a_state_it_left_is_a_conflict(store: EngineStore) -> None:
    """Whatever the stale snapshot's state would allow, the resource moved on: say so."""
    r = _active(store)
    moved = store.fire(r.id, "delete")
    with pytest.raises(Conflict) as caught:
        store.set_desired_state(r, "queued")
    assert (caught.value.actual_version, caught.value.actual_state) == (moved.version, "deleted")


def test_unknown_resource(store: EngineStore) -> None:
    with pytest.raises(ResourceNotFound):
        store.set_desired_state("nope", "deleted")


def test_setting_it_and_a_client_event_on_one_snapshot_race_one_wins(store: EngineStore) -> None:
    # Both writers hold the same snapshot; each side writes first once, and the other is refused.
    r = _active(store)
    event_won = store.fire(r, "deactivate")
    with pytest.raises(Conflict) as lost:
        store.set_desired_state(r, "deleted")
    assert (lost.value.actual_version, lost.value.actual_state) == (event_won.version, "deactivated")
    _unchanged(store, event_won)
    assert event_won.desired_state is None

    r2 = _active(store, "two")
    desire_won = store.set_desired_state(r2, "deleted")
    with pytest.raises(Conflict) as lost:
        store.fire(r2, "deactivate")
    assert (lost.value.actual_version, lost.value.actual_state) == (desire_won.version, "active")
    _unchanged(store, desire_won)
    assert desire_won.desired_state == "deleted"


def test_a_work_state_keeps_its_schedule(store: EngineStore, clock: FakeClock) -> None:
    r = store.create("job")  # pending is a work state, due since creation
    due = r.next_attempt_at
    clock.advance(timedelta(minutes=1))
    after = store.set_desired_state(r, "held")
    assert after.next_attempt_at == due
    assert (after.state, after.generation, after.observed_generation) == ("pending", 2, 0)


def test_setting_it_leaves_a_claim_alone_and_the_claimed_write_is_then_refused(store: EngineStore) -> None:
    store.create("job")
    (claim,) = store.claim("w1", [("job", "pending")], lease=LEASE)
    after = store.set_desired_state(claim.resource.id, "held")
    assert (after.claim_token, after.claimed_by) == (claim.token, "w1")
    assert store.get(after.id).claim_token == claim.token
    with pytest.raises(ClaimLost):
        store.fire_claimed(claim, "request")


# --- transitions observe it ------------------------------------------------------------------------


def test_arriving_in_the_desired_state_observes_the_generation(store: EngineStore) -> None:
    r = store.set_desired_state(_active(store), "deactivated")
    after = store.fire(r, "deactivate")
    assert (after.generation, after.observed_generation, after.next_attempt_at) == (2, 2, None)
    assert store.get(r.id) == after


def test_coming_to_rest_short_of_it_makes_the_resource_due(store: EngineStore, clock: FakeClock) -> None:
    r = store.set_desired_state(store.create("image", {"name": "x"}), "deactivated")
    r = store.fire(r, "upload")  # saving: a work state
    clock.advance()
    r = store.fire(r, "activate")  # active: rests short of deactivated
    assert (r.next_attempt_at, r.observed_generation) == (clock.now, 0)
    assert store.get(r.id) == r


def test_a_final_state_short_of_it_observes_the_generation(store: EngineStore) -> None:
    r = store.set_desired_state(_active(store), "deactivated")
    after = store.fire(r, "delete")
    assert (after.state, after.observed_generation) == ("deleted", after.generation)
    assert store.get(r.id) == after


def test_fenced_writes_observe_it_too(store: EngineStore, clock: FakeClock) -> None:
    r = store.set_desired_state(store.create("image", {"name": "x"}), "deactivated")
    store.fire(r, "upload")
    (claim,) = store.claim("w1", [("image", "saving")], lease=LEASE)
    clock.advance()
    rested = store.fire_claimed(claim, "activate")
    assert (rested.next_attempt_at, rested.observed_generation) == (clock.now, 0)
    assert store.get(r.id) == rested
    (claim,) = store.claim("w1", [("image", "active")], lease=LEASE)
    arrived = store.fire_claimed(claim, "deactivate")
    assert (arrived.observed_generation, arrived.next_attempt_at) == (arrived.generation, None)
    assert store.get(r.id) == arrived


def test_a_fire_without_a_pending_desire_changes_nothing_about_it(store: EngineStore) -> None:
    r = _active(store)
    after = store.fire(r, "deactivate")
    assert (after.desired_state, after.generation, after.observed_generation, after.next_attempt_at) == (
        None,
        1,
        0,
        None,
    )


# --- listing by it ---------------------------------------------------------------------------------


def test_list_filters_by_desired_state_and_pages(store: EngineStore) -> None:
    doomed = [store.set_desired_state(_active(store, f"d{i}"), "deleted").id for i in range(5)]
    store.set_desired_state(_active(store, "kept"), "deactivated")
    _active(store, "plain")

    seen: list[str] = []
    after: str | None = None
    while True:
        page = store.list(desired_state="deleted", after=after, limit=2)
        seen += [r.id for r in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == doomed
    assert [r.spec["name"] for r in store.list(kind="image", desired_state="deactivated").items] == ["kept"]
    assert store.list(kind="image", state="deleted", desired_state="deleted").items == []
    with pytest.raises(UnknownState):
        store.list(kind="image", desired_state="gone")
    for field in ("desired_state", "after"):
        with pytest.raises(InvalidArgument) as caught:
            store.list(**{field: "a\x00b"})  # type: ignore[arg-type]
        assert caught.value.field == field


# --- engine bookkeeping ----------------------------------------------------------------------------


def test_release_idle_clears_the_schedule_only_at_the_claimed_version(store: EngineStore, clock: FakeClock) -> None:
    r = store.set_desired_state(_active(store), "deleted")
    (claim,) = store.claim("w1", [("image", "active")], lease=LEASE)
    assert store.release_idle(claim)
    idle = store.get(r.id)
    assert (idle.claim_token, idle.next_attempt_at, idle.version) == (None, None, r.version)

    store.set_desired_state(idle, "deactivated")
    (claim,) = store.claim("w1", [("image", "active")], lease=LEASE)
    moved = store.set_desired_state(claim.resource.id, "deleted")
    assert store.release_idle(claim)  # released, but still due: the version moved on
    after = store.get(r.id)
    assert (after.claim_token, after.next_attempt_at, after.version) == (None, clock.now, moved.version)


def test_give_up_desired_is_fenced_and_journaled(store: EngineStore) -> None:
    r = store.set_desired_state(_active(store), "deleted")
    (claim,) = store.claim("w1", [("image", "active")], lease=LEASE)
    after = store.give_up_desired(claim, error="no way", actor="w1")
    assert (after.state, after.version, after.observed_generation, after.error) == (
        "active",
        r.version + 1,
        r.generation,
        "no way",
    )
    assert (after.next_attempt_at, after.claim_token) == (None, None)
    assert store.get(r.id) == after
    entry = all_journal(store, r.id)[-1]
    assert (entry.event, entry.from_state, entry.to_state) == ("@desired-failed", "active", "active")
    assert entry.detail == {"desired_state": "deleted", "generation": r.generation, "error": "no way"}
    with pytest.raises(ClaimLost):
        store.give_up_desired(claim, error="again")


def test_reconcile_hops_are_read_from_the_journal_by_generation(store: EngineStore) -> None:
    r = store.set_desired_state(store.create("image", {"name": "x"}), "deactivated")
    r = store.fire(r, "upload", detail={"reconcile": r.generation, "desired_state": "deactivated"})
    r = store.fire(r, "activate")
    r = store.fire(r, "deactivate", detail={"reconcile": r.generation})
    assert store.reconcile_hops(r.id, r.generation) == ["queued", "active"]
    assert store.reconcile_hops(r.id, r.generation + 1) == []
