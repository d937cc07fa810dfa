"""The engine and shared resources, on both stores: expiry sweeps, held teardowns, and steps that outlive use changes.

A worker removes uses that expired (journaled as ``@expired``), and when the last use of a waiting
teardown expires, that same write fires the teardown; a teardown wish never moves a resource while a
party's use is live; and a use registered, renewed or released while a step runs does not cost the
step its work.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tenure import TeardownStarted, Worker, open_store
from tenure.engine.deliveries import Deliverer
from tenure.engine.flows import flow_step
from tenure.engine.steps import Steps
from tenure.kinds.deployment import MemoryPlatform, deployment, deployment_steps
from tenure.store.protocol import EngineStore
from tenure.store.sharing import EXPIRED_EVENT
from tenure.store.uses import UsePolicy
from tests.store_support import FakeClock, all_journal
from tests.support.webhooks import Receiver, settle, subscriptions_of

pytestmark = pytest.mark.timeout(120)

SPEC = {"name": "web", "image": "nginx:1.27"}
CI = "tag:example.org,2026:ci/42"
QA = "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"
MINUTE = timedelta(minutes=1)


@pytest.fixture
def store_url(reused_store_url: str) -> str:
    """Overrides the root conftest's: one database per module, emptied before each test."""
    return reused_store_url


@pytest.fixture
def shared(store_url: str, clock: FakeClock) -> Iterator[EngineStore]:
    """A store that knows the deployment kind, with uses lasting 10 minutes unless asked otherwise."""
    s = open_store(
        store_url,
        [deployment],
        clock=clock,
        check_schema=False,
        uses=UsePolicy(default_ttl=10 * MINUTE, max_ttl=timedelta(hours=1)),
    )
    s.migrate()
    try:
        yield s
    finally:
        s.close()


def steps(platform: MemoryPlatform) -> Steps:
    made = Steps()
    for state, step in deployment_steps(platform).items():
        made.add(deployment, state, flow_step(step))
    return made


@pytest.fixture
def platform() -> MemoryPlatform:
    return MemoryPlatform()


@pytest.fixture
def worker(shared: EngineStore, platform: MemoryPlatform) -> Worker:
    return Worker(shared, steps(platform), name="engine")


def deployed(store: EngineStore, worker: Worker) -> str:
    r = store.create("deployment", SPEC)
    worker.run_until_idle()
    assert store.get(r.id).state == "deployed"
    return r.id


def events(store: EngineStore, resource_id: str) -> list[str]:
    return [e.event for e in all_journal(store, resource_id)]


def test_the_worker_removes_an_expired_use_and_journals_it(
    shared: EngineStore, worker: Worker, clock: FakeClock
) -> None:
    rid = deployed(shared, worker)
    shared.use(rid, CI, client="ci")
    shared.use(rid, QA, ttl=timedelta(hours=1), client="qa")
    clock.advance(11 * MINUTE)
    assert worker.run_until_idle() == 1
    r = shared.get(rid)
    assert list(r.in_use_by) == [QA]
    last = all_journal(shared, rid)[-1]
    assert (last.event, last.actor, dict(last.detail)) == (EXPIRED_EVENT, "engine", {"uses": {CI: "expired"}})
    assert shared.list(party=CI).items == []
    assert worker.run_until_idle() == 0  # nothing expired is left to sweep


def test_the_agenda_wakes_the_engine_when_the_first_use_expires(
    shared: EngineStore, worker: Worker, clock: FakeClock
) -> None:
    rid = deployed(shared, worker)
    shared.use(rid, CI, ttl=5 * MINUTE, client="ci")
    shared.use(rid, QA, ttl=7 * MINUTE, client="qa")
    agenda = shared.agenda([], sorted(shared.kinds))
    assert agenda.use_expiry == clock.now + 5 * MINUTE
    assert agenda.earliest == clock.now + 5 * MINUTE


def test_a_client_that_dies_without_releasing_lets_the_teardown_go_when_its_use_expires(
    shared: EngineStore, worker: Worker, clock: FakeClock, platform: MemoryPlatform
) -> None:
    rid = deployed(shared, worker)
    shared.use(rid, CI, client="ci")  # ... and the CI job is never heard from again
    shared.set_desired_state(rid, "undeployed", client="creator", actor="creator")
    worker.run_until_idle()
    assert shared.get(rid).state == "deployed"  # held for the CI job
    clock.advance(10 * MINUTE)
    worker.run_until_idle()
    r = shared.get(rid)
    assert (r.state, dict(r.in_use_by)) == ("undeployed", {})
    assert platform.running == {}
    assert platform.endpoints == {}
    # The sweep that found the last use expired fired the teardown itself: one write, not two.
    teardown = next(e for e in all_journal(shared, rid) if e.event == "undeploy")
    assert (teardown.from_state, teardown.to_state, teardown.actor) == ("deployed", "undeploying", "engine")
    assert teardown.detail["uses"] == {CI: "expired"}
    assert EXPIRED_EVENT not in events(shared, rid)


def test_a_teardown_wish_is_not_worked_on_while_a_party_uses_the_resource(shared: EngineStore, worker: Worker) -> None:
    rid = deployed(shared, worker)
    shared.use(rid, CI, client="ci")
    r = shared.set_desired_state(rid, "undeployed", client="creator")
    assert r.next_attempt_at is None  # not due: no worker claims it just to find it held
    assert worker.run_until_idle() == 0
    assert shared.get(rid).state == "deployed"
    shared.release_use(rid, CI, client="ci")
    worker.run_until_idle()
    assert shared.get(rid).state == "undeployed"


def test_a_deployment_still_deploying_when_teardown_is_wished_goes_once_deployed_and_unused(
    shared: EngineStore, worker: Worker
) -> None:
    r = shared.create("deployment", SPEC)
    shared.set_desired_state(r.id, "undeployed", client="creator")
    worker.run_until_idle()
    assert shared.get(r.id).state == "undeployed"
    assert events(shared, r.id) == ["@create", "@desired", "deployed", "undeploy", "undeployed"]


def test_an_undeploy_that_fails_reverts_and_leaves_the_deployment_running(
    shared: EngineStore, worker: Worker, platform: MemoryPlatform
) -> None:
    rid = deployed(shared, worker)
    platform.failing.add("unreserve")  # the last undeploy task fails: the first two are redone
    shared.set_desired_state(rid, "undeployed", client="creator")
    worker.run_until_idle()
    r = shared.get(rid)
    assert r.state == "deployed"
    assert platform.running
    assert platform.endpoints
    assert r.error is not None
    assert "came back to state 'deployed'" in r.error


def test_a_use_registered_while_a_step_runs_does_not_cost_the_step_its_work(
    shared: EngineStore, clock: FakeClock
) -> None:
    started, finish = threading.Event(), threading.Event()

    class SlowPlatform(MemoryPlatform):
        def start(self, deployment_id: str, image: str, replicas: int) -> list[str]:
            started.set()
            assert finish.wait(30)
            return super().start(deployment_id, image, replicas)

    platform = SlowPlatform()
    worker = Worker(shared, steps(platform), name="engine")
    r = shared.create("deployment", SPEC)
    (claim,) = shared.claim("engine", [("deployment", "deploying")], lease=MINUTE)
    runner = threading.Thread(target=worker.run_claim, args=(claim,))
    runner.start()
    try:
        assert started.wait(30)
        shared.use(r.id, CI, client="ci")  # bumps the version under the running step
        shared.use(r.id, QA, client="qa")
    finally:
        finish.set()
        runner.join(30)
    after = shared.get(r.id)
    assert after.state == "deployed"  # the step's write was planned again, not refused
    assert set(after.in_use_by) == {CI, QA}
    assert events(shared, r.id) == ["@create", "@use", "@use", "deployed"]
    assert worker.stats.claims_lost == 0


def test_a_desired_state_set_while_a_step_runs_still_refuses_its_write(shared: EngineStore, clock: FakeClock) -> None:
    """Only use changes are planned around: a new desired state is something the step did not decide on."""
    started, finish = threading.Event(), threading.Event()

    class SlowPlatform(MemoryPlatform):
        def start(self, deployment_id: str, image: str, replicas: int) -> list[str]:
            started.set()
            assert finish.wait(30)
            return super().start(deployment_id, image, replicas)

    worker = Worker(shared, steps(SlowPlatform()), name="engine")
    r = shared.create("deployment", SPEC)
    (claim,) = shared.claim("engine", [("deployment", "deploying")], lease=MINUTE)
    runner = threading.Thread(target=worker.run_claim, args=(claim,))
    runner.start()
    try:
        assert started.wait(30)
        shared.set_desired_state(r.id, "undeployed", client="creator")
    finally:
        finish.set()
        runner.join(30)
    assert shared.get(r.id).state == "deploying"
    assert worker.stats.claims_lost == 1


@pytest.mark.parametrize("renew_first", [True, False])
def test_a_renewal_racing_the_expiry_sweep_either_keeps_the_use_or_ends_it_never_both(
    shared: EngineStore, worker: Worker, clock: FakeClock, renew_first: bool
) -> None:
    rid = deployed(shared, worker)
    shared.use(rid, CI, client="ci")
    shared.set_desired_state(rid, "undeployed", client="creator")
    clock.advance(10 * MINUTE)
    if renew_first:
        shared.use(rid, CI, client="ci")
        worker.run_until_idle()
    else:
        worker.run_until_idle()
        with pytest.raises(TeardownStarted):  # the use had ended and teardown started: too late to renew
            shared.use(rid, CI, client="ci")
    worker.run_until_idle()
    r = shared.get(rid)
    if renew_first:
        assert (r.state, list(r.in_use_by)) == ("deployed", [CI])
    else:
        assert (r.state, dict(r.in_use_by)) == ("undeployed", {})


def test_force_and_expiry_reach_subscribers_and_no_subscriber_holds_a_teardown(
    shared: EngineStore, worker: Worker, clock: FakeClock
) -> None:
    rid = deployed(shared, worker)
    other = deployed(shared, worker)
    with Receiver() as receiver:
        sub = subscriptions_of(shared).create(receiver.url, kind="deployment", created_by="watcher")
        shared.use(rid, CI, client="ci")
        shared.force_teardown(rid, actor="ops", reason="maintenance")
        shared.use(other, QA, client="qa")
        clock.advance(10 * MINUTE)
        worker.run_until_idle()  # the expiry sweep; the undeploy flow of the forced one
        settle(shared)
        deliverer = Deliverer(shared, rand=lambda: 1.0)
        try:
            deliverer.run_until_idle()
        finally:
            deliverer.stop(timeout=5)
        told = [(r.json["resourceId"], r.json["event"], r.json["detail"]) for r in receiver.accepted]
    forced = [detail for resource, event, detail in told if resource == rid and event == "undeploy"]
    assert len(forced) == 1
    assert forced[0]["forced"] is True
    assert forced[0]["reason"] == "maintenance"
    assert list(forced[0]["parties"]) == [CI]
    assert (other, EXPIRED_EVENT, {"uses": {QA: "expired"}}) in told
    assert shared.get(rid).state == "undeployed"
    assert all(r.headers["tenure-subscription"] == sub.id for r in receiver.accepted)
